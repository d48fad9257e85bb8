/**
 * rekey's own state in Redis, besides the queue: the per-policy in-flight lock (I3), rotation
 * records for `rekey status`, consumer confirmations, the fingerprint index for leaked values, and
 * rate-limit gates shared by every worker. Keys hold ids and keyed fingerprints, never values.
 */
import type { ChainableCommander, Redis } from "ioredis";

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
  /** Set when the rotation ended. */
  endedAt?: number;
}

export interface Confirmation {
  consumerId: string;
  at: number;
  via: "push" | "probe" | "usage";
  versionId?: string;
}

const RELEASE_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
const TAKEOVER_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end`;

export class RekeyState {
  constructor(
    readonly redis: Redis,
    readonly prefix: string,
  ) {}

  key(...parts: string[]): string {
    return [this.prefix, ...parts].join(":");
  }

  // ---- I3: at most one rotation in flight per policy -------------------------------------

  /** Take the policy's in-flight lock for `rotationId`. Returns the holder (itself when acquired). */
  async acquire(policyId: string, rotationId: string): Promise<string> {
    const k = this.key("inflight", policyId);
    const ok = await this.redis.set(k, rotationId, "NX");
    if (ok === "OK") return rotationId;
    return (await this.redis.get(k)) ?? (await this.acquire(policyId, rotationId));
  }

  /** Replace a stale holder (its rotation ended without releasing) atomically. */
  async takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean> {
    return (await this.redis.eval(TAKEOVER_LUA, 1, this.key("inflight", policyId), staleRotationId, rotationId)) === 1;
  }

  async release(policyId: string, rotationId: string): Promise<void> {
    await this.redis.eval(RELEASE_LUA, 1, this.key("inflight", policyId), rotationId);
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

  /**
   * Write a new rotation's record unless it exists (a resumed job keeps its record), without
   * claiming the policy: one round trip. Returns false when the record was already there.
   */
  async putRecordIfAbsent(rec: RotationRecord): Promise<boolean> {
    const k = this.key("rot", rec.rotationId);
    const flat = Object.entries(toHash(rec)).flat();
    const created = await this.redis.eval(PUT_IF_ABSENT_LUA, 2, k, this.key("active"), String(rec.startedAt), rec.rotationId, ...flat);
    return created === 1;
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

  /** Mark a rotation ended: out of the active set, record kept for `ttlSec`. */
  async endRecord(rec: Pick<RotationRecord, "rotationId" | "policyId">, status: RotationStatus, message: string | undefined, now: number, ttlSec: number): Promise<void> {
    const k = this.key("rot", rec.rotationId);
    const policyFields: Record<string, string> = { lastStatus: status, lastEndedAt: String(now) };
    if (status === "completed") policyFields.lastCompletedAt = String(now);
    const m = this.redis
      .multi()
      .hset(k, toHash({ status, message, updatedAt: now, endedAt: now }))
      .expire(k, ttlSec)
      .expire(this.key("rot", rec.rotationId, "confirmed"), ttlSec)
      .zrem(this.key("active"), rec.rotationId);
    // Only the policy's latest rotation speaks for the policy (a skipped duplicate does not).
    const latest = await this.redis.hget(this.key("policy", rec.policyId), "lastRotationId");
    if (latest === rec.rotationId && status !== "skipped") m.hset(this.key("policy", rec.policyId), policyFields);
    await m.exec();
  }

  async getRecord(rotationId: string): Promise<RotationRecord | undefined> {
    const h = await this.redis.hgetall(this.key("rot", rotationId));
    return h.rotationId ? fromHash(h) : undefined;
  }

  async activeRotations(): Promise<RotationRecord[]> {
    const ids = await this.redis.zrange(this.key("active"), 0, -1);
    const recs = await Promise.all(ids.map((id) => this.getRecord(id)));
    return recs.filter((r): r is RotationRecord => r !== undefined);
  }

  async policySummary(policyId: string): Promise<Record<string, string>> {
    return this.redis.hgetall(this.key("policy", policyId));
  }

  // ---- confirmations -----------------------------------------------------------------------

  async confirm(rotationId: string, c: Confirmation): Promise<boolean> {
    const added = await this.redis.hsetnx(this.key("rot", rotationId, "confirmed"), c.consumerId, JSON.stringify(c));
    return added === 1;
  }

  async confirmations(rotationId: string): Promise<Map<string, Confirmation>> {
    const h = await this.redis.hgetall(this.key("rot", rotationId, "confirmed"));
    return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as Confirmation]));
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

const PUT_IF_ABSENT_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
`;

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

const NUMERIC = new Set(["startedAt", "updatedAt", "promotedAt", "endedAt"]);

function fromHash(h: Record<string, string>): RotationRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) {
    if (NUMERIC.has(k)) out[k] = Number(v);
    else if (k === "leak") out[k] = v === "true";
    else out[k] = v;
  }
  return out as unknown as RotationRecord;
}
