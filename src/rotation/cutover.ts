/**
 * The cut-over path: a reset provider whose reset kills the old value (QStash token, LaunchDarkly
 * `reset-with-expiry`). From the reset until the new value is AWSCURRENT every consumer fails, so
 * the steps on that path (read the reset's value back, store, promote, verify) are retried here,
 * in the worker, with back-offs well under a second, rather than by the queue (5 s, 10 s, …:
 * measured, 16 s and 70 s of 401s under injected 5xx). Rate limits are still honoured: a 429 or
 * a throttle whose reset falls within the budget is waited out to the millisecond it names.
 */
import { RateLimitedError, TransientError } from "../errors.ts";

export interface FastRetryOptions {
  now(): number;
  sleep(ms: number): Promise<void>;
  signal: AbortSignal;
  /** After this long (ms from the first try) the last error is thrown: the queue's retries take over. */
  budgetMs: number;
  /** First back-off in ms (default 50); doubles per try. */
  baseMs?: number;
  /** Longest back-off in ms (default 400). */
  capMs?: number;
}

/** Errors worth another try at once: an answer that says "later", or no answer at all. */
export function retriable(err: unknown): boolean {
  if (err instanceof RateLimitedError || err instanceof TransientError) return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && /^(ECONN|ETIMEDOUT|EPIPE|EAI_AGAIN|UND_ERR)/.test(code);
}

/** Back-off before try `attempt + 1`: base·2^attempt, capped, with jitter (half to full). */
export function fastBackoff(attempt: number, baseMs = 50, capMs = 400, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** `fn` until it succeeds, fails for good, or the budget runs out (then its last error). */
export async function retryFast<T>(fn: (attempt: number) => Promise<T>, o: FastRetryOptions): Promise<T> {
  const deadline = o.now() + o.budgetMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (o.signal.aborted || !retriable(err)) throw err;
      const wait = err instanceof RateLimitedError ? Math.max(0, err.retryAt - o.now()) : fastBackoff(attempt, o.baseMs, o.capMs);
      if (o.now() + wait > deadline) throw err;
      await o.sleep(wait);
    }
  }
}

export interface HedgeOptions {
  now(): number;
  signal: AbortSignal;
  /** After this long (ms) no new try starts; the last error is thrown once none is in flight. */
  budgetMs: number;
  /** A try still unanswered after this long (ms) gets a second one beside it (default 250). */
  hedgeAfterMs?: number;
  /** Tries in flight at once, at most (default 3). */
  maxInFlight?: number;
  /**
   * A try waits before it sends its request (for an AWS write slot: storeWrite): the hedge's
   * timer for it starts when it calls `sent` (fn's second argument), not when it starts. A try
   * still waiting for its turn is not slow, and a second try beside it would only wait too, and
   * take a write slot of its own: in a mass leak, every cut-over write that waited 250 ms for its
   * slot took two or three, and the writes that unlock revocations got fewer.
   */
  armOnSent?: boolean;
}

/**
 * `fn` with hedged tries: a try that has not answered after `hedgeAfterMs` gets another beside it
 * (a request that times out costs its full timeout otherwise), a try that fails soon is retried
 * after a sub-second back-off, and a rate limit stops every new try until the time it names. The
 * first success wins; the others are aborted through the signal each try gets. Only for calls that
 * are idempotent (a store write under a fixed token, a read).
 */
export function hedge<T>(fn: (signal: AbortSignal, sent: () => void) => Promise<T>, o: HedgeOptions): Promise<T> {
  const deadline = o.now() + o.budgetMs;
  const hedgeAfter = o.hedgeAfterMs ?? 250;
  const maxInFlight = o.maxInFlight ?? 3;
  return new Promise<T>((resolve, reject) => {
    const tries = new Set<AbortController>();
    let done = false;
    let failures = 0;
    let lastErr: unknown;
    let notBefore = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal.removeEventListener("abort", onAbort);
      for (const c of tries) c.abort();
      settle();
    };
    const onAbort = () => finish(() => reject(o.signal.reason));
    o.signal.addEventListener("abort", onAbort, { once: true });
    const schedule = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(launch, Math.max(0, ms));
    };
    const giveUpIfIdle = () => {
      if (tries.size === 0) finish(() => reject(lastErr));
    };
    function launch(): void {
      if (done) return;
      const now = o.now();
      if (now < notBefore) return schedule(notBefore - now);
      if (now > deadline) return giveUpIfIdle();
      if (tries.size >= maxInFlight) return schedule(hedgeAfter);
      const c = new AbortController();
      tries.add(c);
      // The next try is due `hedgeAfter` after this one sends (armOnSent), or starts.
      let armed = false;
      const arm = () => {
        if (armed || done || c.signal.aborted) return;
        armed = true;
        schedule(hedgeAfter);
      };
      fn(AbortSignal.any([o.signal, c.signal]), arm).then(
        (value) => finish(() => resolve(value)),
        (err: unknown) => {
          tries.delete(c);
          if (done) return;
          lastErr = err;
          if (o.signal.aborted || !retriable(err)) return finish(() => reject(err));
          const wait = err instanceof RateLimitedError ? Math.max(0, err.retryAt - o.now()) : fastBackoff(failures++);
          if (err instanceof RateLimitedError) notBefore = Math.max(notBefore, err.retryAt);
          if (o.now() + wait > deadline) return giveUpIfIdle();
          schedule(wait);
        },
      );
      if (!o.armOnSent) arm();
    }
    launch();
  });
}
