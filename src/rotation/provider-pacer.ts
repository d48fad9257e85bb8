/**
 * The provider side of pacing: the ProviderPacer every provider request of a piece of work goes
 * through (attached to its abort signal, providers/http.ts), reading what providers announce in
 * their rate-limit headers, and what a worker process knows to be open without asking Redis.
 * The Redis side — the shared gates, windows and budgets — is pacing.ts.
 */
import { RateLimitedError } from "../errors.ts";
import type { PacedRequest, RequestPacer } from "../providers/http.ts";
import { CLOCK_SKEW_MS, MAX_INLINE_WAIT_MS, type Rate } from "./pacing.ts";
import type { PaceLimiter } from "./ports.ts";

/** rekeyAdmit's answer when nothing constrained the request (see ProviderPacer, OPEN_ADMIT_MS). */
export const ADMIT_OPEN = -1;

/**
 * After an ADMIT_OPEN answer, the worker process sends its next requests under the same budget
 * for this long without asking Redis again (a rotation's requests come in bursts of a few within
 * milliseconds, and concurrent rotations of one account share its budgets: OpenAdmits). Its own
 * answers still count: a low announced budget or a 429 ends the grace at once. What another
 * worker process learns in the meantime reaches this one at most this late, a few requests of
 * its concurrent rotations: well inside the margin RECORD_BUDGET_BELOW leaves for requests in
 * flight.
 */
export const OPEN_ADMIT_MS = 50;

/**
 * What a worker process knows to be open without asking Redis (OPEN_ADMIT_MS), shared by every
 * run's ProviderPacer: budgets by name, and gates by scope (an ADMIT_OPEN answer saw the gate open).
 */
export class OpenAdmits {
  private readonly names = new Map<string, number>();
  private readonly scopes = new Map<string, number>();

  isOpen(name: string, now: number): boolean {
    return (this.names.get(name) ?? 0) > now;
  }

  scopeOpen(scope: string, now: number): boolean {
    return (this.scopes.get(scope) ?? 0) > now;
  }

  open(scope: string, name: string, now: number): void {
    // Entries live OPEN_ADMIT_MS: the expired ones go once there are many (one per credential used).
    if (this.names.size > 1_000) for (const [k, until] of this.names) if (until <= now) this.names.delete(k);
    this.names.set(name, now + OPEN_ADMIT_MS);
    this.scopes.set(scope, now + OPEN_ADMIT_MS);
  }

  /** A budget ran low: ask Redis again before its next request. */
  close(name: string): void {
    this.names.delete(name);
  }

  /** A 429 in `scope`: nothing of it counts as open any more. */
  closeScope(scope: string): void {
    this.scopes.delete(scope);
    for (const k of this.names.keys()) if (k.startsWith(`${scope}:`)) this.names.delete(k);
  }
}

/**
 * Announced budgets are recorded once this few calls are left in a window: above it, the requests
 * in flight at once for one credential (one per rotation using it, at most a worker's concurrency
 * per worker) rarely exhaust the window, and recording every answer would cost a Redis round trip
 * per request for nothing. Where they do (several workers at full concurrency on one account), the
 * provider's 429 closes the gate and the rotations park until its reset, without using an attempt.
 */
export const RECORD_BUDGET_BELOW = 50;

/** (remaining, reset, limit) headers, by provider family; the limit where the family names one. */
const HEADER_FAMILIES: readonly [remaining: string, reset: string, limit?: string][] = [
  ["x-ratelimit-route-remaining", "x-ratelimit-reset"],
  ["x-ratelimit-global-remaining", "x-ratelimit-reset"],
  ["x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-limit"],
  ["burst-ratelimit-remaining", "burst-ratelimit-reset", "burst-ratelimit-limit"],
  ["ratelimit-remaining", "ratelimit-reset", "ratelimit-limit"],
];

/**
 * What an answer's headers say is left, and when the window resets (epoch ms). The most
 * restrictive family wins. A reset is read as epoch ms (LaunchDarkly), epoch seconds (QStash) or
 * seconds from now (the IETF RateLimit draft), by its size.
 */
export function rateHint(headers: Headers, now: number): { remaining: number; resetAt: number; limit?: number } | undefined {
  let best: { remaining: number; resetAt: number; limit?: number } | undefined;
  for (const [rName, tName, lName] of HEADER_FAMILIES) {
    const r = headers.get(rName);
    const t = headers.get(tName);
    if (r === null || t === null || !/^\d+$/.test(r.trim()) || !/^\d+$/.test(t.trim())) continue;
    const remaining = Number(r);
    const n = Number(t);
    const resetAt = n > 1e12 ? n : n > 1e9 ? n * 1_000 : now + n * 1_000;
    if (resetAt <= now) continue;
    const l = lName ? headers.get(lName)?.trim() : undefined;
    const limit = l && /^\d+$/.test(l) ? Number(l) : undefined;
    if (!best || remaining < best.remaining || (remaining === best.remaining && resetAt > best.resetAt)) best = limit === undefined ? { remaining, resetAt } : { remaining, resetAt, limit };
  }
  return best;
}

export interface ProviderPacerOptions {
  limiter: PaceLimiter;
  /** The provider's rate-limit scope (providerScope): what a 429 closes. */
  scope: string;
  /** A documented per-credential limit, where the provider sends no headers. */
  rate?: Rate;
  now(): number;
  sleep(ms: number): Promise<void>;
  signal?: AbortSignal;
  maxInlineWaitMs?: number;
  /** What the worker process knows to be open (shared by its runs); one of its own by default. */
  open?: OpenAdmits;
}

/**
 * Paces every HTTP request of a provider call (attached to its abort signal with paceRequests):
 * before a request, the shared gate, the sliding window and the header budget must all allow it;
 * after the answer, its rate-limit headers update the budget. A short wait is slept; a long one
 * becomes a RateLimitedError, which parks the job until then without using an attempt.
 */
export class ProviderPacer implements RequestPacer {
  /** Budget name -> until when requests go without asking Redis (OPEN_ADMIT_MS); shared by the process where given. */
  private readonly open: OpenAdmits;
  /** The credentials this pacer let a request through for (the work's own, not one it just issued). */
  private readonly seen = new Set<string>();

  constructor(private readonly opts: ProviderPacerOptions) {
    this.open = opts.open ?? new OpenAdmits();
  }

  async before(req: PacedRequest): Promise<void> {
    const o = this.opts;
    const name = `${o.scope}:${req.credential}`;
    this.seen.add(req.credential);
    // Entries are compared against each worker's clock: only their skew needs a margin.
    const rate = o.rate ? { limit: o.rate.limit, windowMs: o.rate.windowMs + CLOCK_SKEW_MS } : undefined;
    for (;;) {
      o.signal?.throwIfAborted();
      const now = o.now();
      if (this.open.isOpen(name, now)) return;
      const { until, held } = await o.limiter.admitRequest(o.scope, name, rate, now);
      if (until === ADMIT_OPEN) this.open.open(o.scope, name, now);
      if (held) req.held = held;
      if (until <= now) return;
      if (until - now > (o.maxInlineWaitMs ?? MAX_INLINE_WAIT_MS)) {
        throw new RateLimitedError(o.scope, until, `${o.scope}: rekey's rate budget for this provider is used up until ${new Date(until).toISOString()}; waiting instead of sending requests that would be refused`);
      }
      await o.sleep(until - now);
    }
  }

  async after(req: PacedRequest, res?: { status: number; headers: Headers }): Promise<void> {
    const now = this.opts.now();
    const name = `${this.opts.scope}:${req.credential}`;
    if (req.held) {
      const held = req.held;
      req.held = undefined;
      await this.opts.limiter.settleRequest(name, held, now);
    }
    if (!res) return;
    if (res.status === 429) this.open.closeScope(this.opts.scope);
    const hint = rateHint(res.headers, now);
    if (hint && hint.remaining < RECORD_BUDGET_BELOW) {
      this.open.close(name);
      await this.opts.limiter.observe(name, hint.remaining, hint.resetAt, now, hint.limit);
    }
  }

  /**
   * The pacer of calls that use a credential the work issued a moment ago (the check of a new
   * value): no budget can be recorded for it yet — only its answers record one, and nothing else
   * holds it — so where the scope's gate was seen open within OPEN_ADMIT_MS and no window applies
   * (a documented rate counts every request), its requests go without asking Redis. A credential
   * this pacer let through before (the work's own) is paced as ever.
   */
  fresh(): RequestPacer {
    return {
      before: (req) => {
        if (!this.opts.rate && !this.seen.has(req.credential) && this.open.scopeOpen(this.opts.scope, this.opts.now())) return Promise.resolve();
        return this.before(req);
      },
      after: (req, res) => this.after(req, res),
    };
  }
}
