/**
 * rekey's own state in Redis, besides the queue: the per-policy in-flight lock (I3), rotation
 * records for `rekey status`, consumer confirmations, the fingerprint index for leaked values, and
 * rate-limit gates shared by every worker. Keys hold ids and keyed fingerprints, never values.
 */
import type { ChainableCommander, Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { defineScripts } from "../util/redis-scripts.ts";

export type RotationStatus =
  | "running"
  | "awaiting-human"
  | "awaiting-confirmation"
  | "needs-attention"
  | "completed"
  | "failed"
  | "skipped";

export const TERMINAL: ReadonlySet<RotationStatus> = new Set(["completed", "failed", "skipped"]);

export interface RotationRecord {
  rotationId: string;
  policyId: string;
  reason: string;
  actor: string;
  status: RotationStatus;
  step: string;
  jobId: string;
  startedAt: number;
  updatedAt: number;
  message?: string;
  oldVersionId?: string;
  newCredentialId?: string;
  /** Keyed fingerprint of the new value (consumers may confirm with it). */
  newFingerprint?: string;
  promotedAt?: number;
  /** A leak took this rotation over: revoke the old credential at once. */
  leak?: boolean;
  member?: string;
  successor?: string;
  /** A leak request that found this policy's rotation in flight: the rotation it merged into. */
  mergedInto?: string;
  /** A leak joined this rotation while its new value may have been the leaked one: a leak rotation follows it. */
  leakFollowUp?: boolean;
  /** The leak rotation queued in this one's place or after it (see leakHandOffDue). */
  leakRetry?: string;
  /** Set when the rotation ended. */
  endedAt?: number;
  /** While a human step waits: when it times out (epoch ms); submit links die with it. */
  humanDeadline?: number;
}

/**
 * Facts a completed rotation leaves on its policy's summary for the next one. The version and its
 * credential stay true while that version is current (the next rotation checks it against the
 * store). `cleanAfter` names the rotation after whose end no other credential of the policy was
 * live; the next rotation's claim clears it, so it never outlives a rotation that may have left
 * something behind.
 */
export interface CurrentFacts {
  versionId?: string;
  credentialId?: string;
  meta?: Record<string, string>;
  cleanAfter?: string;
}

export interface Confirmation {
  consumerId: string;
  at: number;
  via: "push" | "probe" | "usage";
  versionId?: string;
}

/** A consumer's report that it could not take a rotation's new version (POST /v1/consumer-failures). */
export interface ConsumerFailure {
  consumerId: string;
  /** fetch, write, reload, health, handler or confirm. */
  stage: string;
  /** What the consumer said (control characters removed, at most 500 characters). */
  message: string;
  at: number;
  versionId?: string;
}

/** How long a rotation's consumer-failure reports are kept (its record is kept as long or less). */
const FAILURES_TTL_SEC = 30 * 86_400;

const TAKEOVER_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end`;

// A rotation's first write: its record unless it exists (a resumed job keeps its record), then
// the policy's in-flight lock. Returns the lock's holder (the rotation itself when it took it).
// KEYS: record, active set, lock. ARGV: startedAt, rotationId, record field/value pairs.
const BEGIN_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX') then return ARGV[2] end
return redis.call('GET', KEYS[3])
`;

// A rotation's end: the record's final fields and retention, out of the active set, the policy's
// summary (only while this rotation is the policy's latest), and the lock (only while it holds it).
// KEYS: record, its confirmations, active set, policy summary, lock.
// ARGV: rotationId, ttl (s), claim '1'|'0', release '1'|'0', n, n record items, policy items.
const END_LUA = `
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == '1' and #ARGV > 5 + n and redis.call('HGET', KEYS[4], 'lastRotationId') == ARGV[1] then
  redis.call('HSET', KEYS[4], unpack(ARGV, 6 + n))
end
if ARGV[4] == '1' and redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end
local flags = 0
if redis.call('HGET', KEYS[1], 'leak') == 'true' then flags = 1 end
if redis.call('HGET', KEYS[1], 'leakFollowUp') == 'true' then flags = flags + 2 end
return flags
`;

// A leak request joins the rotation holding the policy, only while it still holds it and has not
// ended (END_LUA above sets endedAt and frees the lock in one step, and reports the flags): a
// leak is never merged into a rotation that can no longer act on it. The holder's new value may
// be the leaked one — it is (the leaked version is the holder's), or may be (which version leaked
// is unknown, and the new value was already promoted, so consumers had it): then the holder also
// owes a follow-up leak rotation once it ends (leakFollowUp). Returns 0 (not joined), 1, or 2
// (joined, follow-up owed).
// KEYS: lock, holder's record. ARGV: holder, leaked version id or ''.
const MERGE_LEAK_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HEXISTS', KEYS[2], 'endedAt') == 1 then return 0 end
redis.call('HSET', KEYS[2], 'leak', 'true')
if ARGV[2] == ARGV[1] or (ARGV[2] == '' and redis.call('HEXISTS', KEYS[2], 'promotedAt') == 1) then
  redis.call('HSET', KEYS[2], 'leakFollowUp', 'true')
  return 2
end
return 1
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyTakeOver(lock: string, stale: string, rotationId: string): Result<number, Context>;
    rekeyBegin(record: string, active: string, lock: string, ...args: string[]): Result<string, Context>;
    rekeyEnd(record: string, confirmed: string, active: string, policy: string, lock: string, ...args: string[]): Result<number, Context>;
    rekeyMergeLeak(lock: string, record: string, holder: string, leakedVersionId: string): Result<number, Context>;
  }
}

/** Run a transaction or pipeline; fail on the first command that failed in it (EXEC alone does not). Returns the replies. */
export async function execOrThrow(m: ChainableCommander): Promise<unknown[]> {
  const results = await m.exec();
  if (results === null) throw new Error("redis transaction aborted");
  for (const [err] of results) if (err) throw err;
  return results.map(([, reply]) => reply);
}

function parseConfirmations(h: Record<string, string>): Map<string, Confirmation> {
  return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as Confirmation]));
}

/**
 * An ended rotation that a leak joined and that did not finish the leak's work: it ended before
 * its new value was promoted (the leaked credential is still current), or its own new value may be
 * the leaked one. A leak rotation must then be queued for the policy; `leakRetry` names it once it is.
 */
export function leakHandOffDue(rec: Pick<RotationRecord, "endedAt" | "leak" | "leakFollowUp" | "leakRetry" | "status" | "promotedAt" | "reason">): boolean {
  if (rec.endedAt === undefined || !rec.leak || rec.leakRetry) return false;
  return rec.leakFollowUp === true || (rec.status !== "completed" && rec.promotedAt === undefined && rec.reason !== "leak");
}

export class RekeyState {
  constructor(
    readonly redis: RedisClient,
    readonly prefix: string,
  ) {
    defineScripts(redis, {
      rekeyTakeOver: { numberOfKeys: 1, lua: TAKEOVER_LUA },
      rekeyBegin: { numberOfKeys: 3, lua: BEGIN_LUA },
      rekeyEnd: { numberOfKeys: 5, lua: END_LUA },
      rekeyMergeLeak: { numberOfKeys: 2, lua: MERGE_LEAK_LUA },
    });
  }

  key(...parts: string[]): string {
    return [this.prefix, ...parts].join(":");
  }

  // ---- I3: at most one rotation in flight per policy -------------------------------------

  /** Replace a stale holder (its rotation ended without releasing) atomically. */
  async takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean> {
    return (await this.redis.rekeyTakeOver(this.key("inflight", policyId), staleRotationId, rotationId)) === 1;
  }

  /**
   * Mark the rotation holding the policy as taken over by a leak (MERGE_LEAK_LUA). "no" when it
   * no longer holds the policy or has ended: the leak must then take the policy itself.
   * "follow-up": the holder's new value may be the leaked one, so a leak rotation follows it.
   */
  async mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up"> {
    const r = await this.redis.rekeyMergeLeak(this.key("inflight", policyId), this.key("rot", holder), holder, leakedVersionId ?? "");
    return r === 0 ? "no" : r === 2 ? "follow-up" : "joined";
  }

  /**
   * A rotation's start, in one round trip: its record unless it exists (written before the lock
   * is taken, and without claiming the policy), then the policy's lock. Returns the lock's holder
   * (`rec.rotationId` when this rotation took it).
   */
  async begin(rec: RotationRecord): Promise<string> {
    const flat = Object.entries(toHash(rec)).flat();
    return this.redis.rekeyBegin(this.key("rot", rec.rotationId), this.key("active"), this.key("inflight", rec.policyId), String(rec.startedAt), rec.rotationId, ...flat);
  }

  async inFlight(policyId: string): Promise<string | undefined> {
    return (await this.redis.get(this.key("inflight", policyId))) ?? undefined;
  }

  // ---- rotation records --------------------------------------------------------------------

  /**
   * Write a rotation record. It speaks for its policy (`rekey status`: last rotation) only once
   * it holds the policy's lock: `claimsPolicy: false` for a record written before the lock is
   * taken, and a skipped request never does.
   */
  async putRecord(rec: RotationRecord, opts: { claimsPolicy?: boolean } = {}): Promise<void> {
    const k = this.key("rot", rec.rotationId);
    const m = this.redis.multi().hset(k, toHash(rec));
    if (rec.status !== "skipped") m.zadd(this.key("active"), rec.startedAt, rec.rotationId);
    if (rec.status !== "skipped" && opts.claimsPolicy !== false) m.hset(this.key("policy", rec.policyId), policyClaim(rec));
    await m.exec();
  }


  /** Patch a record; with `pipe`, the commands join that transaction (the caller runs it). */
  async updateRecord(rotationId: string, patch: Partial<RotationRecord>, pipe?: ChainableCommander): Promise<void> {
    const k = this.key("rot", rotationId);
    const fields = toHash({ ...patch, updatedAt: patch.updatedAt ?? Date.now() });
    const m = pipe ?? this.redis.multi();
    m.hset(k, fields);
    if (patch.status && patch.policyId) m.hset(this.key("policy", patch.policyId), { lastStatus: patch.status });
    if (!pipe) await m.exec();
  }

  /**
   * Mark a rotation ended: out of the active set, record kept for `ttlSec`; with `release`, the
   * policy's lock too (when this rotation holds it). One script; with `pipe`, it joins that
   * transaction (the caller runs it). Its reply holds the leak flags as they were when the
   * rotation ended (mergeLeak cannot join it later): 1 taken over by a leak, 2 a follow-up owed.
   */
  async endRecord(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    ttlSec: number,
    opts: { release?: boolean; pipe?: ChainableCommander; policy?: Record<string, string> } = {},
  ): Promise<void> {
    const policyFields: Record<string, string> = { ...opts.policy, lastStatus: status, lastEndedAt: String(now) };
    if (status === "completed") policyFields.lastCompletedAt = String(now);
    const fields = Object.entries(toHash({ status, message, updatedAt: now, endedAt: now })).flat();
    const m = opts.pipe ?? this.redis.multi();
    // Only the policy's latest rotation speaks for the policy (a skipped duplicate does not).
    m.rekeyEnd(
      this.key("rot", rec.rotationId),
      this.key("rot", rec.rotationId, "confirmed"),
      this.key("active"),
      this.key("policy", rec.policyId),
      this.key("inflight", rec.policyId),
      rec.rotationId,
      String(ttlSec),
      status === "skipped" ? "0" : "1",
      opts.release ? "1" : "0",
      String(fields.length),
      ...fields,
      ...Object.entries(policyFields).flat(),
    );
    if (!opts.pipe) await execOrThrow(m);
  }

  async getRecord(rotationId: string): Promise<RotationRecord | undefined> {
    const h = await this.redis.hgetall(this.key("rot", rotationId));
    return h.rotationId ? fromHash(h) : undefined;
  }

  async activeRotations(): Promise<RotationRecord[]> {
    const ids = await this.redis.zrange(this.key("active"), 0, "-1");
    const recs = await Promise.all(ids.map((id) => this.getRecord(id)));
    return recs.filter((r): r is RotationRecord => r !== undefined);
  }

  async policySummary(policyId: string): Promise<Record<string, string>> {
    return this.redis.hgetall(this.key("policy", policyId));
  }

  /**
   * What the policy's last completed rotation left (CurrentFacts, written by its end): the version
   * it made current, that version's credential, and whether nothing else of the policy was live.
   */
  async currentFacts(policyId: string): Promise<CurrentFacts> {
    const [versionId, credentialId, meta, cleanAfter] = await this.redis.hmget(this.key("policy", policyId), "currentVersionId", "currentCredentialId", "currentMeta", "cleanAfter");
    const facts: CurrentFacts = {};
    if (versionId && credentialId) {
      facts.versionId = versionId;
      facts.credentialId = credentialId;
      if (meta) facts.meta = JSON.parse(meta) as Record<string, string>;
    }
    if (cleanAfter) facts.cleanAfter = cleanAfter;
    return facts;
  }

  /**
   * Whether a leak took the rotation over (the record's `leak` flag) and whether the rotation
   * already ended (its record has `endedAt`), without reading the whole record.
   */
  async leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }> {
    const [leak, endedAt] = await this.redis.hmget(this.key("rot", rotationId), "leak", "endedAt");
    return { leak: leak === "true", ended: endedAt !== null };
  }

  /**
   * What a rotation waiting for confirmations reads, in one round trip: its record and its
   * confirmations. The wake flag is cleared first, so a confirmation that lands after these reads
   * sets it again and wakes the job when it parks (parkJob).
   */
  async confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }> {
    const [, h, c] = (await execOrThrow(
      this.redis
        .pipeline()
        .del(this.key("wake", rotationId))
        .hgetall(this.key("rot", rotationId))
        .hgetall(this.key("rot", rotationId, "confirmed")),
    )) as [number, Record<string, string>, Record<string, string>];
    return { rec: h.rotationId ? fromHash(h) : undefined, confirmed: parseConfirmations(c) };
  }

  // ---- wake flag: a parked rotation has something new to look at -----------------------------

  /** Raise the flag; a rotation running right now sees it when it parks (parkJob) and resumes at once. */
  async raiseWakeFlag(rotationId: string): Promise<void> {
    await this.redis.set(this.key("wake", rotationId), "1", "EX", 3_600);
  }

  /** Take the flag down; true when it was up. */
  async takeWakeFlag(rotationId: string): Promise<boolean> {
    return (await this.redis.getdel(this.key("wake", rotationId))) !== null;
  }

  // ---- confirmations -----------------------------------------------------------------------

  async confirm(rotationId: string, c: Confirmation): Promise<boolean> {
    const added = await this.redis.hsetnx(this.key("rot", rotationId, "confirmed"), c.consumerId, JSON.stringify(c));
    return added === 1;
  }

  /** confirm(), and every confirmation the rotation now holds, in one round trip. */
  async confirmAndList(rotationId: string, c: Confirmation): Promise<{ added: boolean; confirmed: Map<string, Confirmation> }> {
    const k = this.key("rot", rotationId, "confirmed");
    const [added, h] = (await execOrThrow(this.redis.multi().hsetnx(k, c.consumerId, JSON.stringify(c)).hgetall(k))) as [number, Record<string, string>];
    return { added: added === 1, confirmed: parseConfirmations(h) };
  }

  async confirmations(rotationId: string): Promise<Map<string, Confirmation>> {
    return parseConfirmations(await this.redis.hgetall(this.key("rot", rotationId, "confirmed")));
  }

  /** When rekey last polled these probe consumers of a rotation (reports show it); kept as long as records. */
  async markProbed(rotationId: string, consumerIds: string[], at: number, ttlSec: number): Promise<void> {
    if (!consumerIds.length) return;
    const k = this.key("rot", rotationId, "probed");
    await execOrThrow(this.redis.multi().hset(k, Object.fromEntries(consumerIds.map((c) => [c, String(at)]))).expire(k, ttlSec));
  }

  /** Probe consumer id → when it was last polled (epoch ms). */
  async probedAt(rotationId: string): Promise<Map<string, number>> {
    const h = await this.redis.hgetall(this.key("rot", rotationId, "probed"));
    return new Map(Object.entries(h).map(([c, at]) => [c, Number(at)]));
  }

  // ---- consumer failures --------------------------------------------------------------------

  /** Keep a consumer's latest failure report for a rotation (one per consumer; a later one replaces it). */
  async recordConsumerFailure(rotationId: string, f: ConsumerFailure): Promise<void> {
    const k = this.key("rot", rotationId, "failures");
    await execOrThrow(this.redis.multi().hset(k, f.consumerId, JSON.stringify(f)).expire(k, FAILURES_TTL_SEC));
  }

  async consumerFailures(rotationId: string): Promise<Map<string, ConsumerFailure>> {
    const h = await this.redis.hgetall(this.key("rot", rotationId, "failures"));
    return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as ConsumerFailure]));
  }

  // ---- fingerprint index (leak by value) -----------------------------------------------------

  /**
   * Index a stored value's fingerprint for 400 days: longer than any sensible rotation schedule,
   * so a value that can still be live is found; bounded, so Redis does not grow with every
   * rotation forever. (Leak by value also compares against current values directly.)
   */
  async indexFingerprint(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: ChainableCommander): Promise<void> {
    const k = this.key("fp", fingerprint);
    const m = pipe ?? this.redis.multi();
    m.hset(k, entry).expire(k, 400 * 86_400);
    if (!pipe) await m.exec();
  }

  async lookupFingerprint(fingerprint: string): Promise<{ policyId: string; versionId: string } | undefined> {
    const h = await this.redis.hgetall(this.key("fp", fingerprint));
    return h.policyId && h.versionId ? { policyId: h.policyId, versionId: h.versionId } : undefined;
  }

  // ---- rate-limit gates (shared by every worker) ---------------------------------------------

  /** Close `scope` until `until` (epoch ms); an earlier gate never shortens a later one. */
  async closeGate(scope: string, until: number): Promise<void> {
    const k = this.key("gate", scope);
    const current = Number((await this.redis.get(k)) ?? 0);
    if (until > current) await this.redis.set(k, String(until), "PX", Math.max(1, until - Date.now() + 60_000));
  }

  /** Epoch ms until which `scope` is closed, or 0. */
  async gate(scope: string): Promise<number> {
    return Number((await this.redis.get(this.key("gate", scope))) ?? 0);
  }
}

function policyClaim(rec: Pick<RotationRecord, "rotationId" | "status" | "startedAt">): Record<string, string> {
  return { lastRotationId: rec.rotationId, lastStatus: rec.status, lastStartedAt: String(rec.startedAt) };
}

function toHash(rec: Partial<RotationRecord>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(rec)) {
    if (v === undefined) continue;
    out[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return out;
}

const NUMERIC = new Set(["startedAt", "updatedAt", "promotedAt", "endedAt", "humanDeadline"]);
const BOOLEAN = new Set(["leak", "leakFollowUp"]);

function fromHash(h: Record<string, string>): RotationRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) {
    if (NUMERIC.has(k)) out[k] = Number(v);
    else if (BOOLEAN.has(k)) out[k] = v === "true";
    else out[k] = v;
  }
  return out as unknown as RotationRecord;
}
