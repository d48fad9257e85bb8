/**
 * The shared pacing scripts on a real Redis, with an injected clock: the AWS write window that
 * counts a write from its reservation until its answer (plus the window), and the one-round-trip
 * admission of provider requests (shared 429 gate, announced budget, documented rate).
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimiter, REQUEST_POLL_MS } from "../../src/rotation/pacing.ts";
import { RekeyState } from "../../src/rotation/state.ts";
import { connect, deleteKeys, testPrefix } from "../helpers/redis.ts";

describe("pacing", () => {
  let redis: Redis;
  let prefix: string;
  let limiter: RateLimiter;
  let state: RekeyState;

  beforeAll(() => {
    redis = connect();
    prefix = testPrefix("pacing");
    state = new RekeyState(redis, prefix);
    limiter = new RateLimiter(redis, state.keys);
  });

  afterAll(async () => {
    await deleteKeys(redis, prefix);
    redis.disconnect();
  });

  it("AWS writes: at most `limit` per window, counted until answered plus the window", async () => {
    const rate = { limit: 5, windowMs: 1_000 };
    const t0 = 1_000_000;
    const held: string[][] = [];
    for (let i = 0; i < 5; i++) {
      const r = await limiter.reserveHeld("aws-a", 1, rate, t0, 60_000);
      expect("held" in r).toBe(true);
      if ("held" in r) held.push(r.held);
    }
    // The sixth must wait while the first five are in flight, however much time passes.
    const sixth = await limiter.reserveHeld("aws-a", 1, rate, t0 + 5_000, 60_000);
    expect("waitMs" in sixth && sixth.waitMs > 0).toBe(true);
    // Answered at t0 + 5 s: they count until t0 + 6 s, then the window is free again.
    for (const h of held) await limiter.settle("aws-a", h, t0 + 5_000);
    const during = await limiter.reserveHeld("aws-a", 1, rate, t0 + 5_500, 60_000);
    expect("waitMs" in during).toBe(true);
    const after = await limiter.reserveHeld("aws-a", 1, rate, t0 + 6_001, 60_000);
    expect("held" in after).toBe(true);
  });

  it("AWS writes: a write that is never answered stays counted for its hold time only", async () => {
    const rate = { limit: 1, windowMs: 1_000 };
    const t0 = 2_000_000;
    expect("held" in (await limiter.reserveHeld("aws-b", 1, rate, t0, 10_000))).toBe(true);
    expect("waitMs" in (await limiter.reserveHeld("aws-b", 1, rate, t0 + 9_000, 10_000))).toBe(true);
    expect("held" in (await limiter.reserveHeld("aws-b", 1, rate, t0 + 11_001, 10_000))).toBe(true);
  });

  it("admit: a closed gate stops everyone until it reopens", async () => {
    const now = Date.now();
    await state.gates.close("prov-a", now + 5_000);
    expect(await limiter.admit("prov-a", "prov-a:key1", undefined, now)).toBe(now + 5_000);
    expect(await limiter.admit("prov-a", "prov-a:key1", undefined, now + 5_001)).toBe(0);
    // Another scope is not affected.
    expect(await limiter.admit("prov-b", "prov-b:key1", undefined, now)).toBe(0);
  });

  it("admit: an announced budget is shared and, at zero, waits for its reset", async () => {
    const now = 3_000_000;
    await limiter.observe("prov-c:key", 2, now + 10_000, now);
    expect(await limiter.admit("prov-c", "prov-c:key", undefined, now)).toBe(0);
    expect(await limiter.admit("prov-c", "prov-c:key", undefined, now + 1)).toBe(0);
    expect(await limiter.admit("prov-c", "prov-c:key", undefined, now + 2)).toBe(now + 10_000);
    // A later answer from the same window claiming more left is not believed (answers cross).
    await limiter.observe("prov-c:key", 30, now + 10_000, now + 3);
    expect(await limiter.admit("prov-c", "prov-c:key", undefined, now + 4)).toBe(now + 10_000);
    // The next window starts fresh.
    expect(await limiter.admit("prov-c", "prov-c:key", undefined, now + 10_001)).toBe(0);
  });

  it("admit: with the limit announced and two windows seen, the next window is counted from its first request", async () => {
    const now = 4_000_000;
    // Two one-second windows seen one after the other, limit 3 announced.
    await limiter.observe("prov-q:key", 2, now + 1_000, now, 3);
    await limiter.observe("prov-q:key", 1, now + 2_000, now + 1_100, 3);
    // The second window is used up; its successor starts at now + 2 000 with the full limit only.
    expect(await limiter.admit("prov-q", "prov-q:key", undefined, now + 1_200)).toBe(0);
    expect(await limiter.admit("prov-q", "prov-q:key", undefined, now + 1_300)).toBe(now + 2_000);
    const next = [2_001, 2_002, 2_003, 2_004].map((t) => now + t);
    const answers = [];
    for (const t of next) answers.push(await limiter.admit("prov-q", "prov-q:key", undefined, t));
    expect(answers).toEqual([0, 0, 0, now + 3_000]);
    // Without an announced limit nothing is assumed: the window after the last one seen is open.
    await limiter.observe("prov-r:key", 0, now + 1_000, now);
    await limiter.observe("prov-r:key", 0, now + 2_000, now + 1_100);
    expect(await limiter.admit("prov-r", "prov-r:key", undefined, now + 2_001)).toBe(0);
    expect(await limiter.admit("prov-r", "prov-r:key", undefined, now + 2_002)).toBe(0);
  });

  it("admit: a documented rate without headers is a sliding window per key, counted from each answer", async () => {
    const rate = { limit: 3, windowMs: 60_000 };
    const now = 4_000_000;
    const held: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await limiter.admitRequest("snyk", "snyk:k1", rate, now + i);
      expect(r.until).toBe(0);
      held.push(r.held!);
    }
    // The three are still in flight: ask again shortly, whatever the window says.
    expect(await limiter.admit("snyk", "snyk:k1", rate, now + 10)).toBe(now + 10 + REQUEST_POLL_MS);
    // Answered late (a slow request still counts where the provider counted it): the first one
    // leaves the window a window after its answer, not after it was let through.
    for (const [k, h] of held.entries()) await limiter.settleRequest("snyk:k1", h, now + 5_000 + k);
    const wait = await limiter.admit("snyk", "snyk:k1", rate, now + 6_000);
    expect(wait).toBeGreaterThanOrEqual(now + 65_000);
    expect(wait).toBeLessThan(now + 65_010);
    expect(await limiter.admit("snyk", "snyk:k1", rate, now + 65_002)).toBe(0);
    // Another key has its own window.
    expect(await limiter.admit("snyk", "snyk:k2", rate, now + 10)).toBe(0);
  });
});
