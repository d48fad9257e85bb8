/**
 * Proactive pacing shared by every worker through Redis, so a mass rotation (a leak over hundreds
 * of policies) stays inside each provider's rate limits and the AWS write quota instead of
 * discovering them by 429s:
 *
 * - held sliding windows: each request counts from the moment it is let through until its
 *   answer, then for the window, so neither network delay nor a busy worker needs a margin and
 *   the limit can be used in full. For limits that are documented but not announced in headers
 *   (Snyk's 1,620 requests/min per key: admitRequest, settleRequest) and for the AWS Secrets
 *   Manager write quota (50/s per region: reserveHeld, settle);
 * - header budgets: where a provider announces what is left in its window (LaunchDarkly
 *   `X-Ratelimit-*-Remaining` + `X-Ratelimit-Reset`, QStash `Burst-RateLimit-*`), each request
 *   reserves one of the remaining calls before it is sent, and a budget at zero closes the door
 *   until the window resets — before the provider has to answer 429. Concurrent workers share the
 *   budget, so requests in flight at the moment the window runs out do not all earn a 429.
 *
 * The reactive gate (a 429 closes the provider's scope for everyone, RekeyState.closeGate) stays
 * as the backstop. Budgets are keyed by the provider scope and a salted, truncated hash of the
 * credential a request uses (limits are per key); the hash names a bucket and cannot give the
 * credential back. Nothing here ever sees a value. The provider side (ProviderPacer, the
 * rate-limit headers) is provider-pacer.ts.
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import type { RedisKeys } from "./keys.ts";
import type { ProviderKind } from "../policy/schema.ts";
import { defineScripts } from "../util/redis-scripts.ts";
import type { PaceLimiter } from "./ports.ts";

export interface Rate {
  /** Requests allowed in any window of `windowMs`. */
  limit: number;
  windowMs: number;
}

/**
 * Documented limits of providers that send no rate-limit headers, per credential. Providers that
 * announce their budget in headers (LaunchDarkly, QStash) are paced by those instead (undefined).
 * Keyed by kind, so a new provider kind fails to compile until it is decided here.
 */
export const DEFAULT_PROVIDER_RATES: { readonly [K in ProviderKind]: Rate | undefined } = {
  launchdarkly: undefined,
  // Snyk: 1,620 requests per minute per API key, no headers; a 429 lasts until the minute passes.
  "snyk-service-account": { limit: 1_620, windowMs: 60_000 },
  "snyk-user-token": { limit: 1_620, windowMs: 60_000 },
  "snyk-pat": { limit: 1_620, windowMs: 60_000 },
  "qstash-token": undefined,
  "qstash-signing-keys": undefined,
  // CrewAI crews are called once per human step; no documented limit.
  "crewai-crew": undefined,
};

export type ProviderRates = Partial<Record<ProviderKind, Rate | null>>;

export function rateOf(kind: ProviderKind, overrides: ProviderRates | undefined): Rate | undefined {
  const o = overrides?.[kind];
  if (o === null) return undefined;
  return o ?? DEFAULT_PROVIDER_RATES[kind];
}

/**
 * How long a provider request that was let through stays counted when its answer never comes
 * back (the worker died): longer than any request's timeout. Answered requests are settled to
 * the moment of their answer (ProviderPacer.after).
 */
export const REQUEST_HOLD_MS = 60_000;
/** How soon to ask again when a window is full of requests still in flight (they settle sooner). */
export const REQUEST_POLL_MS = 100;

/**
 * Windows (AWS writes in engine storeWrite, documented provider limits in ProviderPacer) count
 * each entry from its reservation until the answer and then for the window, so network delay
 * needs no margin. What is left is the clock skew between worker hosts, which compare their own
 * clocks through Redis: hosts kept by NTP agree within a few ms.
 */
export const CLOCK_SKEW_MS = 25;
/** How long an unanswered write stays counted (a worker that died mid-call never settles it). */
export const AWS_WRITE_HOLD_MS = 60_000;
/** Longest sleep between two reservation attempts: an entry in flight settles earlier than its hold. */
export const AWS_WRITE_POLL_MS = 100;

/** Waits up to this long in-process; longer waits park the job (no worker slot held). */
export const MAX_INLINE_WAIT_MS = 2_000;

// Sliding log counted until each request is answered (AWS writes): an entry is reserved with the
// score now + hold (in flight: it stays in the window while the call runs, up to `hold`) and
// settled to the time its answer came back. Returns -seq when `n` slots were taken (members
// seq-n .. seq-1), else the ms until enough entries leave the window.
const RESERVE_HELD_LUA = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local hold = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count + n <= limit then
  local seq = redis.call('INCRBY', KEYS[2], n)
  for i = 1, n do redis.call('ZADD', KEYS[1], now + hold, tostring(seq - i)) end
  redis.call('PEXPIRE', KEYS[1], window + hold)
  redis.call('PEXPIRE', KEYS[2], window + hold)
  return -seq
end
local idx = count + n - limit - 1
local e = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
return math.max(1, tonumber(e[2]) + window - now + 1)
`;

// Settle held entries to the time their answer came back (never later than they were held).
const SETTLE_LUA = `
local at = tonumber(ARGV[1])
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) > at then redis.call('ZADD', KEYS[1], 'XX', at, ARGV[i]) end
end
return 0
`;

// Header budget: { reset, remaining, limit, period }. A newer window replaces an older one;
// within one window only a lower count is believed (answers arrive out of order; reservations
// already counted). Where the provider announces its limit, the gap between two windows seen one
// after the other is kept as the window's length (the shortest seen), so the next window can be
// counted from its first request on (ADMIT_LUA) instead of being open until an answer tells.
const OBSERVE_LUA = `
local reset = tonumber(ARGV[1])
local remaining = tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'reset') or '0')
if reset > cur then
  redis.call('HSET', KEYS[1], 'reset', ARGV[1], 'remaining', ARGV[2])
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[1], 'limit', ARGV[4])
    local gap = reset - cur
    local period = tonumber(redis.call('HGET', KEYS[1], 'period') or '0')
    if cur > 0 and gap <= 60000 and (period == 0 or gap < period) then redis.call('HSET', KEYS[1], 'period', gap) end
  end
elseif reset == cur then
  local r = tonumber(redis.call('HGET', KEYS[1], 'remaining') or ARGV[2])
  if remaining < r then redis.call('HSET', KEYS[1], 'remaining', ARGV[2]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
`;

// Everything a request checks before it is sent, in one round trip: the shared 429 gate, the
// header-announced budget, and (where the provider documents a limit but sends no headers) the
// sliding window. The window counts each request from the moment it is let through until its
// answer (held: scored `now + hold`, settled to the answer's time), then for the window, so a
// request delayed on its way (a busy worker, the network) still counts where the provider counts
// it: the window needs no margin for latency. Returns {0, held} to go (held: the entry to settle,
// or ''), {-1, ''} (ADMIT_OPEN) to go where nothing constrained the request (no gate, no announced
// budget, no window), or {epoch ms to wait for, ''}.
// KEYS: gate, budget, sliding, sliding-seq. ARGV: now, window (0 = none), limit, hold, poll.
const ADMIT_LUA = `
local now = tonumber(ARGV[1])
local gate = tonumber(redis.call('GET', KEYS[1]) or '0')
if gate > now then return {gate, ''} end
local reset = tonumber(redis.call('HGET', KEYS[2], 'reset') or '0')
if reset > 0 and reset <= now then
  -- The window ended. With its limit and length known, the next one is counted from its first
  -- request: otherwise every worker's requests go unreserved until an answer announces it, and
  -- a burst at each window's start earns 429s.
  local period = tonumber(redis.call('HGET', KEYS[2], 'period') or '0')
  local limit = tonumber(redis.call('HGET', KEYS[2], 'limit') or '0')
  if period > 0 and limit > 0 and now < reset + 10 * period then
    reset = reset + period * (math.floor((now - reset) / period) + 1)
    redis.call('HSET', KEYS[2], 'reset', reset, 'remaining', limit)
  end
end
local takeBudget = false
if reset > now then
  local remaining = tonumber(redis.call('HGET', KEYS[2], 'remaining') or '1')
  if remaining <= 0 then return {reset, ''} end
  takeBudget = true
end
local window = tonumber(ARGV[2])
local held = ''
if window > 0 then
  local limit = tonumber(ARGV[3])
  local hold = tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[3])
  if count + 1 > limit then
    local e = redis.call('ZRANGE', KEYS[3], count - limit, count - limit, 'WITHSCORES')
    local at = tonumber(e[2])
    -- Still in flight: it leaves the window a window after its answer; look again shortly.
    if at > now then return {now + tonumber(ARGV[5]), ''} end
    return {now + math.max(1, at + window - now + 1), ''}
  end
  local seq = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[3], now + hold, tostring(seq))
  redis.call('PEXPIRE', KEYS[3], window + hold)
  redis.call('PEXPIRE', KEYS[4], window + hold)
  held = tostring(seq)
end
if takeBudget then redis.call('HINCRBY', KEYS[2], 'remaining', -1) return {0, held} end
if window > 0 then return {0, held} end
return {-1, ''}
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyAdmit(gate: string, budget: string, sliding: string, slidingSeq: string, now: string, windowMs: string, limit: string, holdMs: string, pollMs: string): Result<[number, string], Context>;
    rekeyReserveHeld(log: string, seq: string, now: string, windowMs: string, limit: string, n: string, holdMs: string): Result<number, Context>;
    rekeySettle(log: string, at: string, ...held: string[]): Result<number, Context>;
    rekeyObserve(budget: string, resetAt: string, remaining: string, ttlMs: string, limit: string): Result<number, Context>;
  }
}

/** The Redis side of pacing. */
export class RateLimiter implements PaceLimiter {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, {
      rekeyAdmit: { numberOfKeys: 4, lua: ADMIT_LUA },
      rekeyReserveHeld: { numberOfKeys: 2, lua: RESERVE_HELD_LUA },
      rekeySettle: { numberOfKeys: 1, lua: SETTLE_LUA },
      rekeyObserve: { numberOfKeys: 1, lua: OBSERVE_LUA },
    });
  }

  /**
   * Admit one request of `name` under `scope`'s gate: 0 to go, else the epoch ms to wait for.
   * `rate` adds the sliding window of a documented limit.
   */
  async admit(scope: string, name: string, rate: Rate | undefined, now: number): Promise<number> {
    return Math.max(0, (await this.admitRequest(scope, name, rate, now)).until);
  }

  /**
   * As admit(); `until` is ADMIT_OPEN (< 0) when nothing at all constrained the request (no gate,
   * no budget, no window), and `held` names the window entry to settle when its answer comes.
   */
  async admitRequest(scope: string, name: string, rate: Rate | undefined, now: number): Promise<{ until: number; held?: string }> {
    const [until, held] = await this.redis.rekeyAdmit(
      this.keys.gate(scope),
      this.keys.paceBudget(name),
      this.keys.paceSliding(name),
      this.keys.sequence(this.keys.paceSliding(name)),
      String(now),
      String(rate?.windowMs ?? 0),
      String(rate?.limit ?? 0),
      String(REQUEST_HOLD_MS),
      String(REQUEST_POLL_MS),
    );
    return { until: Number(until), held: held || undefined };
  }

  /** Date a request's window entry (admitRequest `held`) to `at`, the moment its answer came. */
  async settleRequest(name: string, held: string, at: number): Promise<void> {
    await this.redis.rekeySettle(this.keys.paceSliding(name), String(at), held);
  }

  /**
   * Reserve `n` requests in a sliding window counted from when each one was answered, not sent:
   * the entries stay in the window while the call runs (up to `holdMs`, in case the caller dies),
   * and settle() then dates them to the answer. A request reaches the service between the two,
   * so the window needs no margin for network delay, however the delays spread. Returns the
   * entries to settle, or the ms to wait before asking again (an upper bound: an entry still in
   * flight counts until it is settled).
   */
  async reserveHeld(name: string, n: number, rate: Rate, now: number, holdMs: number): Promise<{ held: string[] } | { waitMs: number }> {
    const take = Math.min(n, rate.limit);
    const k = this.keys.paceHeld(name);
    const r = Number(await this.redis.rekeyReserveHeld(k, this.keys.sequence(k), String(now), String(rate.windowMs), String(rate.limit), String(take), String(holdMs)));
    if (r > 0) return { waitMs: r };
    const seq = -r;
    return { held: Array.from({ length: take }, (_, i) => String(seq - 1 - i)) };
  }

  /** Date held entries to `at`, the moment their call was answered (reserveHeld). */
  async settle(name: string, held: string[], at: number): Promise<void> {
    if (!held.length) return;
    await this.redis.rekeySettle(this.keys.paceHeld(name), String(at), ...held);
  }

  /** Record what a provider's answer says is left in its window. */
  async observe(name: string, remaining: number, resetAt: number, now: number, limit?: number): Promise<void> {
    const ttl = Math.max(1_000, resetAt - now + 60_000);
    await this.redis.rekeyObserve(this.keys.paceBudget(name), String(resetAt), String(Math.max(0, Math.floor(remaining))), String(ttl), limit === undefined ? "" : String(Math.floor(limit)));
  }
}
