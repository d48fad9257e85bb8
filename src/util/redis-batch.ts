/**
 * A write that must land together — a step's record patch, its audit entries, an index entry —
 * as one Lua script instead of MULTI … EXEC: isolated from other clients as a transaction is (a
 * script runs alone), one round trip, and two commands fewer for Redis to serve per transaction.
 * Only the commands rekey's writers put into a transaction are offered, each on one key, so every
 * key the script touches is declared (a Cluster keeps them in the install's slot).
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { defineScripts } from "./redis-scripts.ts";

/** The commands a rekey transaction holds (RedisBatch, or an ioredis MULTI in its place). */
export interface RedisTx {
  hset(key: string, fields: Record<string, string>): unknown;
  hmget(key: string, ...fields: string[]): unknown;
  xadd(key: string, ...args: (string | number)[]): unknown;
  set(key: string, value: string, ex: "EX", seconds: number): unknown;
}

// Each command in turn, on its own key; the replies in order (a runtime error stops the script).
// KEYS: one per command. ARGV: per command, its name, n, then its n further arguments.
const BATCH_LUA = `
local out = {}
local i = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[i + 1])
  out[k] = redis.call(ARGV[i], KEYS[k], unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
return out
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyBatch(numberOfKeys: number, ...keysAndArgs: string[]): Result<unknown[], Context>;
  }
}

/**
 * Define the batch script on a connection: once, when the connection's users are set up — not
 * at a first transaction, where an auto-pipeline of the same tick would not know the command.
 */
export function defineBatch(redis: RedisClient): void {
  defineScripts(redis, { rekeyBatch: { lua: BATCH_LUA } });
}

export class RedisBatch implements RedisTx {
  private readonly keys: string[] = [];
  private readonly args: string[] = [];

  /** `redis`: a connection defineBatch was called on. */
  constructor(private readonly redis: RedisClient) {}

  private add(name: string, key: string, rest: (string | number)[]): this {
    this.keys.push(key);
    this.args.push(name, String(rest.length), ...rest.map(String));
    return this;
  }

  hset(key: string, fields: Record<string, string>): this {
    const flat = Object.entries(fields).flat();
    return flat.length ? this.add("HSET", key, flat) : this;
  }

  hmget(key: string, ...fields: string[]): this {
    return this.add("HMGET", key, fields);
  }

  xadd(key: string, ...args: (string | number)[]): this {
    return this.add("XADD", key, args);
  }

  set(key: string, value: string, ex: "EX", seconds: number): this {
    return this.add("SET", key, [value, ex, seconds]);
  }

  /** How many commands it holds. */
  get length(): number {
    return this.keys.length;
  }

  /** Run the commands; their replies in order. Rejects where Redis refused one (those before it stay written). */
  async exec(): Promise<unknown[]> {
    if (!this.keys.length) return [];
    return this.redis.rekeyBatch(this.keys.length, ...this.keys, ...this.args);
  }
}
