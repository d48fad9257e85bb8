/**
 * The API's rate-limit counters (src/api/rate-limit-store.ts) on a real, private Redis: the
 * plugin's fixed window shared by replicas, and counts nobody waits for sent together — one
 * command per key and flush however many requests were counted.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFERRED_FLUSH_MS, RateLimitCounters } from "../../src/api/rate-limit-store.ts";
import { connect } from "../helpers/redis.ts";
import { startRedisServer } from "../helpers/redis-server.ts";
import { until } from "../helpers/stack.ts";

const NS = "rl-test:ratelimit:";

/** EVAL and EVALSHA calls Redis has served since the last reset. */
async function scriptCalls(redis: Redis): Promise<number> {
  const stats = await redis.info("commandstats");
  return [...stats.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

describe("RateLimitCounters", () => {
  let server: Awaited<ReturnType<typeof startRedisServer>>;
  let a: Redis;
  let b: Redis;
  let probe: Redis;

  beforeAll(async () => {
    server = await startRedisServer();
    [a, b, probe] = [connect(server.url), connect(server.url), connect(server.url)];
  });

  afterAll(async () => {
    for (const c of [a, b, probe]) c?.disconnect();
    await server?.stop();
  });

  it("keeps the plugin's fixed window: the first count starts it, every replica adds to it, it ends with its TTL", async () => {
    const [one, two] = [new RateLimitCounters(a, NS), new RateLimitCounters(b, NS)];
    const first = await one.count("10.0.0.1", 400);
    expect(first).toEqual({ current: 1, ttl: 400 });
    const second = await two.count("10.0.0.1", 400);
    expect(second.current).toBe(2);
    expect(second.ttl).toBeGreaterThan(0);
    expect(second.ttl).toBeLessThanOrEqual(400);
    expect(await probe.pttl(`${NS}10.0.0.1`)).toBeGreaterThan(0);
    await until("the window's end", async () => (await probe.exists(`${NS}10.0.0.1`)) === 0, 2_000, 20);
    expect(await one.count("10.0.0.1", 400)).toEqual({ current: 1, ttl: 400 });
    // A counter left without a TTL gets one: no key outlives its window by more than one.
    await probe.set(`${NS}10.0.0.2`, "7");
    expect(await one.count("10.0.0.2", 400)).toEqual({ current: 8, ttl: 400 });
    expect(await probe.pttl(`${NS}10.0.0.2`)).toBeGreaterThan(0);
  });

  it("sends counts nobody waits for together: one command per key and flush, however many requests", async () => {
    const counters = new RateLimitCounters(a, NS);
    await counters.count("warm-up", 60_000);
    await probe.config("RESETSTAT");
    for (let i = 0; i < 1_000; i++) counters.defer(`10.1.0.${i % 4}`, 60_000);
    await until("the deferred counts", async () => (await probe.get(`${NS}10.1.0.3`)) === "250", 40 * DEFERRED_FLUSH_MS, 5);
    for (let k = 0; k < 4; k++) {
      expect(await probe.get(`${NS}10.1.0.${k}`)).toBe("250");
      expect(await probe.pttl(`${NS}10.1.0.${k}`)).toBeGreaterThan(59_000);
    }
    expect(await scriptCalls(probe)).toBe(4);
  });

  it("a key's next waited-for count takes this replica's pending ones with it; closing sends the rest", async () => {
    const counters = new RateLimitCounters(a, NS, 60_000);
    for (let i = 0; i < 5; i++) counters.defer("10.2.0.1", 60_000);
    counters.defer("10.2.0.2", 60_000);
    expect((await counters.count("10.2.0.1", 60_000)).current).toBe(6);
    expect(await probe.get(`${NS}10.2.0.2`)).toBeNull();
    await counters.close();
    expect(await probe.get(`${NS}10.2.0.2`)).toBe("1");
    expect(await probe.get(`${NS}10.2.0.1`)).toBe("6");
  });

  it("drops the counts nobody waits for while Redis is not connected, and closes without waiting for it", async () => {
    const gone = connect(server.url);
    await until("connected", () => gone.status === "ready");
    const counters = new RateLimitCounters(gone, NS, 60_000);
    gone.disconnect(true);
    await until("disconnected", () => gone.status !== "ready");
    for (let i = 0; i < 100; i++) counters.defer("10.4.0.1", 60_000);
    const started = Date.now();
    await counters.close(200);
    expect(Date.now() - started).toBeLessThan(1_000);
    // Nothing waits in the client's offline queue to be sent once it is back.
    await until("reconnected", () => gone.status === "ready", 5_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(await probe.get(`${NS}10.4.0.1`)).toBeNull();
    gone.disconnect();
  });

  it("is a @fastify/rate-limit store of the fixed window only", async () => {
    const Store = new RateLimitCounters(a, NS).store();
    const store = new Store({});
    const r = await new Promise<{ current: number; ttl: number } | undefined>((resolve, reject) => store.incr("10.3.0.1", (err, res) => (err ? reject(err) : resolve(res)), 60_000, 10));
    expect(r).toEqual({ current: 1, ttl: 60_000 });
    expect(store.child({} as never)).toBe(store);
    expect(() => new Store({ continueExceeding: true })).toThrow(/fixed window only/);
    expect(() => new Store({ exponentialBackoff: true })).toThrow(/fixed window only/);
  });
});
