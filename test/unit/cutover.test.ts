import { describe, expect, it } from "vitest";
import { PermanentError, RateLimitedError, TransientError } from "../../src/errors.ts";
import { fastBackoff, hedge, retryFast } from "../../src/rotation/cutover.ts";

const never = new AbortController().signal;

describe("cut-over retries", () => {
  it("back off in well under a second", () => {
    for (let i = 0; i < 20; i++) expect(fastBackoff(i)).toBeLessThanOrEqual(400);
    expect(fastBackoff(0, 50, 400, () => 0)).toBe(25);
  });

  it("retryFast: retries transient errors, stops at a permanent one, waits out a rate limit exactly", async () => {
    let t = 0;
    const slept: number[] = [];
    const opts = { now: () => t, sleep: async (ms: number) => void (slept.push(ms), (t += ms)), signal: never, budgetMs: 5_000 };
    let calls = 0;
    const v = await retryFast(async () => {
      calls++;
      if (calls === 1) throw new TransientError("500");
      if (calls === 2) throw new RateLimitedError("x", t + 700);
      return "ok";
    }, opts);
    expect(v).toBe("ok");
    expect(slept[1]).toBe(700);
    await expect(retryFast(async () => { throw new PermanentError("no"); }, opts)).rejects.toThrow("no");
    t = 0;
    await expect(retryFast(async () => { throw new TransientError("down"); }, { ...opts, budgetMs: 1_000 })).rejects.toThrow("down");
    expect(t).toBeLessThanOrEqual(1_000);
  });

  it("hedge: a try that hangs gets a second one beside it; the first answer wins and the rest are aborted", async () => {
    const aborted: boolean[] = [];
    let n = 0;
    const t0 = Date.now();
    const v = await hedge(
      (signal) =>
        new Promise<string>((resolve) => {
          const i = n++;
          signal.addEventListener("abort", () => (aborted[i] = true));
          if (i === 1) setTimeout(() => resolve("second"), 10);
        }),
      { now: Date.now, signal: never, budgetMs: 5_000, hedgeAfterMs: 50 },
    );
    expect(v).toBe("second");
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(aborted[0]).toBe(true);
  });

  it("hedge with armOnSent: a try waiting for its turn (an AWS write slot) gets no second try beside it until it sends", async () => {
    const starts: number[] = [];
    const t0 = Date.now();
    const v = await hedge(
      (signal, sent) =>
        new Promise<string>((resolve) => {
          const i = starts.push(Date.now() - t0) - 1;
          if (i === 0) {
            // Waits 200 ms for its slot (four hedge intervals), sends, then hangs.
            setTimeout(sent, 200);
            signal.addEventListener("abort", () => resolve("aborted"));
          } else {
            sent();
            setTimeout(() => resolve("second"), 5);
          }
        }),
      { now: Date.now, signal: never, budgetMs: 5_000, hedgeAfterMs: 50, armOnSent: true },
    );
    expect(v).toBe("second");
    // One second try, started a hedge interval after the first one sent, not while it waited.
    expect(starts).toHaveLength(2);
    expect(starts[1]).toBeGreaterThanOrEqual(245);
  });

  it("hedge: starts nothing new before a rate limit's reset, and gives up with the last error after its budget", async () => {
    const starts: number[] = [];
    const t0 = Date.now();
    await expect(
      hedge(
        async () => {
          starts.push(Date.now() - t0);
          if (starts.length === 1) throw new RateLimitedError("x", t0 + 300);
          throw new TransientError("still failing");
        },
        { now: Date.now, signal: never, budgetMs: 600, hedgeAfterMs: 50 },
      ),
    ).rejects.toThrow("still failing");
    expect(starts[1]).toBeGreaterThanOrEqual(295);
    await expect(hedge(async () => { throw new PermanentError("refused"); }, { now: Date.now, signal: never, budgetMs: 600 })).rejects.toThrow("refused");
  });
});
