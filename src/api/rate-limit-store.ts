/**
 * The API's rate-limit counters in Redis, as a @fastify/rate-limit store: the plugin's fixed
 * window (a counter per key, its TTL the window, set by the window's first count), shared by
 * every API replica. Beside the plugin's counts, which the request waits for, it takes counts
 * nobody waits for (`defer`): a request refused for a credential that cannot authenticate is
 * counted against its address, so that a right guess from an address over its limit still meets
 * the 429, but nothing waits for the answer. Those are summed per key in memory and sent together
 * every `flushMs`, in one round trip: a flood of forged credentials costs one Redis command per
 * address and flush instead of one per request. A key's next waited-for count takes its
 * pending ones with it, so the answer counts every request this replica has seen.
 */
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from "@fastify/rate-limit";
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { defineScripts } from "../util/redis-scripts.ts";
import { withTimeout } from "../util/timeout.ts";

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyRateLimitCount(key: string, n: number, windowMs: number): Result<[number, number], Context>;
  }
}

// Adds ARGV[1] requests to the window's count; the window starts (its TTL set) with its first
// count, as the plugin's own store does. A counter without a TTL (none should exist) gets one,
// so no key outlives its window by more than one. Returns {count, ms left in the window}.
const COUNT_LUA = `
local n = tonumber(ARGV[1])
local current = redis.call('INCRBY', KEYS[1], n)
if current == n then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {current, tonumber(ARGV[2])}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {current, ttl}
`;

/** How long counts nobody waits for are held before they are sent, in ms. */
export const DEFERRED_FLUSH_MS = 25;

export class RateLimitCounters {
  /** Full key → requests not yet counted in Redis, and the window they count in. */
  private pending = new Map<string, { n: number; windowMs: number }>();
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;

  constructor(
    private readonly redis: RedisClient,
    /** Prefix of every counter key (`<prefix>:ratelimit:`). */
    private readonly nameSpace: string,
    private readonly flushMs = DEFERRED_FLUSH_MS,
  ) {
    defineScripts(redis, { rekeyRateLimitCount: { numberOfKeys: 1, lua: COUNT_LUA } });
  }

  /**
   * The class @fastify/rate-limit's `store` option takes. Every limiter made from it (the plugin's
   * `createRateLimit`) shares these counters: the keys (an address, `id:…` for an identity) do
   * not collide. Only the plain fixed window is kept: neither `continueExceeding` nor
   * `exponentialBackoff`.
   */
  store(): FastifyRateLimitStoreCtor {
    const count = (key: string, windowMs: number) => this.count(key, windowMs);
    class Store implements FastifyRateLimitStore {
      constructor(options: { continueExceeding?: boolean; exponentialBackoff?: boolean } = {}) {
        if (options.continueExceeding || options.exponentialBackoff) throw new Error("RateLimitCounters keeps a fixed window only: no continueExceeding or exponentialBackoff");
      }
      incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, timeWindow: number): void {
        count(key, timeWindow).then(
          (r) => callback(null, r),
          (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
        );
      }
      child(): FastifyRateLimitStore {
        return this;
      }
    }
    return Store as unknown as FastifyRateLimitStoreCtor;
  }

  /** Counts one request against `key` (with this replica's pending ones): the count and the ms left in the window. */
  async count(key: string, windowMs: number): Promise<{ current: number; ttl: number }> {
    const full = this.nameSpace + key;
    const held = this.pending.get(full);
    this.pending.delete(full);
    const [current, ttl] = await this.redis.rekeyRateLimitCount(full, 1 + (held?.n ?? 0), windowMs);
    return { current, ttl };
  }

  /** Counts one request against `key` without waiting: sent with the others within `flushMs`. */
  defer(key: string, windowMs: number): void {
    const full = this.nameSpace + key;
    const held = this.pending.get(full);
    if (held) held.n++;
    else this.pending.set(full, { n: 1, windowMs });
    this.timer ??= setTimeout(() => void this.flush(), this.flushMs).unref();
  }

  /**
   * Sends the pending counts now, in one round trip. A Redis that errors or is not connected loses
   * them (as the plugin's skipOnError does with a count it cannot take): they would otherwise wait
   * in the client's offline queue, growing with the flood.
   */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.pending.size) return this.flushing;
    const batch = this.pending;
    this.pending = new Map();
    if (this.redis.status !== "ready") return;
    const pipe = this.redis.pipeline();
    for (const [key, { n, windowMs }] of batch) pipe.rekeyRateLimitCount(key, n, windowMs);
    const sent = pipe.exec().then(
      () => undefined,
      () => undefined,
    );
    this.flushing = sent;
    await sent;
  }

  /** Sends what is pending (the API is closing), waiting at most `waitMs` for Redis. */
  async close(waitMs = 1_000): Promise<void> {
    await withTimeout(this.flush(), waitMs, "rate-limit counts not sent").catch(() => undefined);
  }
}
