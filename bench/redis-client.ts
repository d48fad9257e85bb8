/**
 * CPU per command of the Redis client, the way rekey's worker uses it: several commands in flight
 * at once on one connection, scripts with many arguments, replies that are hashes. Prints this
 * process's CPU (user + system) per command for each kind, in two rounds.
 *
 *   tsx bench/redis-client.ts --redis <url> [--ioredis <path to another ioredis's built/index.js>]
 *     [--in-flight 8] [--commands 40000]
 *
 * Why rekey runs on ioredis 5.11 and not 6 (docs/benchmarks.md, "Why ioredis 5.11"): run it once
 * with the installed ioredis and once with `--ioredis` pointing at another release, installed
 * apart (`npm install --prefix /tmp/io6 ioredis@6`, then
 * `--ioredis /tmp/io6/node_modules/ioredis/built/index.js`), against the same Redis.
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const { values } = parseArgs({
  options: {
    redis: { type: "string" },
    ioredis: { type: "string" },
    "in-flight": { type: "string", default: "8" },
    commands: { type: "string", default: "40000" },
  },
});
if (!values.redis) throw new Error("usage: redis-client.ts --redis <url> [--ioredis <path>] [--in-flight 8] [--commands 40000]");
const inFlight = Number(values["in-flight"]);
const commands = Number(values.commands);

/** What this benchmark uses of either ioredis release, with the two scripts it defines. */
interface Client {
  get(key: string): Promise<unknown>;
  hset(key: string, fields: Record<string, string>): Promise<unknown>;
  hgetall(key: string): Promise<Record<string, string>>;
  del(key: string): Promise<unknown>;
  defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void;
  disconnect(): void;
  benchArgs(...keysAndArgs: string[]): Promise<unknown>;
  benchHash(key: string): Promise<unknown>;
}
type Ctor = new (url: string) => Client;

const mod = (values.ioredis ? await import(pathToFileURL(resolve(values.ioredis)).href) : await import("ioredis")) as { default: Ctor; Redis?: Ctor };
const Redis = mod.Redis ?? mod.default;
const r = new Redis(values.redis);
const version = values.ioredis ?? "installed";
const key = `rekey-bench-client-${process.pid}`;
r.defineCommand("benchArgs", { numberOfKeys: 4, lua: "return 1" });
r.defineCommand("benchHash", { numberOfKeys: 1, lua: "return redis.call('HGETALL', KEYS[1])" });
await r.hset(key, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`field${i}`, `value-${i}-0123456789abcdef`])));
const keys = Array.from({ length: 4 }, (_, i) => `${key}:${i}:0dbb6216-22df-40bd-8374-bf8194e642db`);
const args = Array.from({ length: 76 }, (_, i) => `field${i}-${"x".repeat(10)}`);

/** CPU µs per command, `inFlight` at a time, after a warm-up. */
async function measure(send: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < commands / 10; i++) await send();
  const before = process.cpuUsage();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let i = 0; i < commands / inFlight; i++) await send();
    }),
  );
  const used = process.cpuUsage(before);
  return (used.user + used.system) / commands;
}

const kinds: [string, () => Promise<unknown>][] = [
  ["GET", () => r.get(key + ":none")],
  ["EVALSHA, 80 arguments", () => r.benchArgs(...keys, ...args)],
  ["HGETALL, 20 fields", () => r.hgetall(key)],
  ["EVALSHA returning 20 fields", () => r.benchHash(key)],
];
console.log(`ioredis: ${version}; ${inFlight} in flight; ${commands} commands per figure; CPU µs per command`);
for (let round = 1; round <= 2; round++) {
  const line: string[] = [];
  for (const [name, send] of kinds) line.push(`${name} ${(await measure(send)).toFixed(1)}`);
  console.log(`round ${round}: ${line.join(" | ")}`);
}
await r.del(key);
r.disconnect();
