/**
 * Rotation records (`rekey status`, the dashboard, reports) and the policy summaries they keep:
 * the only writer of both. Records hold ids, steps and messages, never a value.
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineBatch, RedisBatch, type RedisTx } from "../../util/redis-batch.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import type { RedisKeys } from "../keys.ts";
import { z } from "zod";
import { UndoEntry } from "../job.ts";
import type { CommitPoint } from "./cancels.ts";

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
  /** `rekey cancel` (state/cancels.ts): when it was asked for, by whom (the audit actor) and why. */
  cancelRequestedAt?: number;
  cancelledBy?: string;
  cancelReason?: string;
  /** When the rotation passed its point of no return (state/cancels.ts), and which: it can no longer be cancelled. */
  committedAt?: number;
  commitPoint?: CommitPoint;
  /**
   * The undo log (undo.ts) as the start step wrote it with its move to issuing, before anything
   * was issued: the failure path of a job whose data holds none takes it from here.
   */
  undo?: UndoEntry[];
  /**
   * The wake channel of the worker process lingering on this rotation (state/signals.ts
   * WakeFlags): written with the promotion by a run that listens, taken down when it parks.
   */
  listener?: string;
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

// A rotation's end: the record's final fields and retention, out of the active set, the policy's
// summary (only while this rotation is the policy's latest), and the lock (only while it holds it);
// then the audit entries that record it, appended in the same step.
// KEYS: record, its confirmations, active set, policy summary, lock, then each entry's streams.
// ARGV: rotationId, ttl (s), claim '1'|'0', release '1'|'0', n, n record items, m, m policy
// items, e, then per entry: s, s stream length bounds, f, f fields.
const END_LUA = `
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local i = 6 + n
local m = tonumber(ARGV[i])
if ARGV[3] == '1' and m > 0 and redis.call('HGET', KEYS[4], 'lastRotationId') == ARGV[1] then
  redis.call('HSET', KEYS[4], unpack(ARGV, i + 1, i + m))
end
i = i + m + 1
if ARGV[4] == '1' and redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end
local leak = redis.call('HMGET', KEYS[1], 'leak', 'leakFollowUp')
local flags = 0
if leak[1] == 'true' then flags = 1 end
if leak[2] == 'true' then flags = flags + 2 end
local k = 6
for _ = 1, tonumber(ARGV[i]) do
  local s = tonumber(ARGV[i + 1])
  local f = tonumber(ARGV[i + s + 2])
  for j = 1, s do
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[i + 1 + j], '*', unpack(ARGV, i + s + 3, i + s + 2 + f))
    k = k + 1
  end
  i = i + s + 2 + f
end
return flags
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyEnd(numberOfKeys: number, ...keysAndArgs: string[]): Result<number, Context>;
  }
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

/** An audit entry as Audit.appendArgs gives it: its streams with their length bounds, and its fields. */
export interface AuditAppend {
  streams: { key: string; maxLen: string }[];
  fields: string[];
}

export class RotationRecords {
  /** Transactions that claimed a policy (claimPolicy): their summary already says `running`. */
  private readonly claimed = new WeakSet<RedisTx>();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    // The number of keys varies with the audit entries written with the end: given per call.
    defineScripts(redis, { rekeyEnd: { lua: END_LUA } });
    defineBatch(redis);
  }

  /**
   * Write a rotation record. It speaks for its policy (`rekey status`: last rotation) only once
   * it holds the policy's lock: `claimsPolicy: false` for a record written before the lock is
   * taken, and a skipped request never does.
   */
  async put(rec: RotationRecord, opts: { claimsPolicy?: boolean } = {}): Promise<void> {
    const m = this.redis.multi().hset(this.keys.rotation(rec.rotationId), toHash(rec));
    if (rec.status !== "skipped") m.zadd(this.keys.active(), rec.startedAt, rec.rotationId);
    if (rec.status !== "skipped" && opts.claimsPolicy !== false) m.hset(this.keys.policy(rec.policyId), policyClaim(rec));
    await m.exec();
  }

  /** Patch a record; with `pipe`, the commands join that transaction (the caller runs it). */
  async update(rotationId: string, patch: Partial<RotationRecord>, pipe?: RedisTx): Promise<void> {
    const fields = toHash({ ...patch, updatedAt: patch.updatedAt ?? Date.now() }, rotationId);
    const m = pipe ?? new RedisBatch(this.redis);
    m.hset(this.keys.rotation(rotationId), fields);
    // A claim in the same transaction already wrote `running` (the start step): not twice.
    const claimedRunning = patch.status === "running" && pipe !== undefined && this.claimed.has(pipe);
    // The credential's age (status, metrics) counts from the promotion that made it current.
    const summary: Record<string, string> = {};
    if (patch.status && !claimedRunning) summary.lastStatus = patch.status;
    if (patch.promotedAt !== undefined) summary.lastPromotedAt = String(patch.promotedAt);
    if (patch.policyId && Object.keys(summary).length) m.hset(this.keys.policy(patch.policyId), summary);
    if (!pipe) await (m as RedisBatch).exec();
  }

  /**
   * Into transaction `m`, ahead of the promotion's writes: a read of what the record held just
   * before them, answered among the transaction's replies as [leak, endedAt, promotedAt, status,
   * newFingerprint] (HMGET; null where unset).
   */
  readBeforePromotion(m: RedisTx, rotationId: string): void {
    m.hmget(this.keys.rotation(rotationId), "leak", "endedAt", "promotedAt", "status", "newFingerprint");
  }

  /**
   * A rotation that took its policy's lock now speaks for the policy (`rekey status`: last
   * rotation, running since), into transaction `m`.
   */
  claimPolicy(m: RedisTx, rec: Pick<RotationRecord, "rotationId" | "policyId" | "startedAt">): void {
    m.hset(this.keys.policy(rec.policyId), policyClaim({ ...rec, status: "running" }));
    this.claimed.add(m);
  }

  /** The leak rotation queued in an ended rotation's place or after it (leakHandOffDue); into `m`. */
  markLeakRetry(m: RedisTx, rotationId: string, leakRotationId: string): void {
    m.hset(this.keys.rotation(rotationId), { leakRetry: leakRotationId });
  }

  /**
   * Mark a rotation ended: out of the active set, record kept for `ttlSec`; with `release`, the
   * policy's lock too (when this rotation holds it). One script. It answers the leak flags as they
   * were when the rotation ended (mergeLeak cannot join it later): 1 taken over by a leak, 2 a
   * follow-up owed.
   * `policy`: more fields for the policy's summary, written with it (a completed rotation's
   * CurrentFacts: currentVersionId, currentCredentialId, currentMeta, cleanAfter). `audit`: the
   * entries that record the end (Audit.appendArgs), appended by the same script.
   */
  async end(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    ttlSec: number,
    opts: { release?: boolean; policy?: Record<string, string>; audit?: AuditAppend[] } = {},
  ): Promise<number> {
    const policyFields: Record<string, string> = { ...opts.policy, lastStatus: status, lastEndedAt: String(now) };
    if (status === "completed") policyFields.lastCompletedAt = String(now);
    const fields = Object.entries(toHash({ status, message, updatedAt: now, endedAt: now })).flat();
    const policy = Object.entries(policyFields).flat();
    const audit = opts.audit ?? [];
    const keys = [
      this.keys.rotation(rec.rotationId),
      this.keys.confirmations(rec.rotationId),
      this.keys.active(),
      this.keys.policy(rec.policyId),
      this.keys.inflight(rec.policyId),
      ...audit.flatMap((a) => a.streams.map((st) => st.key)),
    ];
    const args = [
      rec.rotationId,
      String(ttlSec),
      // Only the policy's latest rotation speaks for the policy (a skipped duplicate does not).
      status === "skipped" ? "0" : "1",
      opts.release ? "1" : "0",
      String(fields.length),
      ...fields,
      String(policy.length),
      ...policy,
      String(audit.length),
      ...audit.flatMap((a) => [String(a.streams.length), ...a.streams.map((st) => st.maxLen), String(a.fields.length), ...a.fields]),
    ];
    return this.redis.rekeyEnd(keys.length, ...keys, ...args);
  }

  async get(rotationId: string): Promise<RotationRecord | undefined> {
    return parseRecord(await this.redis.hgetall(this.keys.rotation(rotationId)));
  }

  async active(): Promise<RotationRecord[]> {
    const ids = await this.redis.zrange(this.keys.active(), 0, "-1");
    const recs = await Promise.all(ids.map((id) => this.get(id)));
    return recs.filter((r): r is RotationRecord => r !== undefined);
  }

  async policySummary(policyId: string): Promise<Record<string, string>> {
    return this.redis.hgetall(this.keys.policy(policyId));
  }

  /**
   * What the policy's last completed rotation left (CurrentFacts, written by its end): the version
   * it made current, that version's credential, and whether nothing else of the policy was live.
   */
  async currentFacts(policyId: string): Promise<CurrentFacts> {
    const [versionId, credentialId, meta, cleanAfter] = await this.redis.hmget(this.keys.policy(policyId), "currentVersionId", "currentCredentialId", "currentMeta", "cleanAfter");
    return parseFacts(versionId, credentialId, meta, cleanAfter);
  }

  /**
   * Whether a leak took the rotation over (the record's `leak` flag) and whether the rotation
   * already ended (its record has `endedAt`), without reading the whole record.
   */
  async leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }> {
    const [leak, endedAt] = await this.redis.hmget(this.keys.rotation(rotationId), "leak", "endedAt");
    return { leak: leak === "true", ended: endedAt !== null };
  }
}

/** CurrentFacts from the policy summary's fields currentVersionId, currentCredentialId, currentMeta, cleanAfter. */
export function parseFacts(versionId?: string | null, credentialId?: string | null, meta?: string | null, cleanAfter?: string | null): CurrentFacts {
  const facts: CurrentFacts = {};
  if (versionId && credentialId) {
    facts.versionId = versionId;
    facts.credentialId = credentialId;
    if (meta) facts.meta = JSON.parse(meta) as Record<string, string>;
  }
  if (cleanAfter) facts.cleanAfter = cleanAfter;
  return facts;
}

/** A claim of the policy's summary; it clears `cleanAfter` (CurrentFacts): the claimant may leave something behind. */
function policyClaim(rec: Pick<RotationRecord, "rotationId" | "status" | "startedAt">): Record<string, string> {
  return { lastRotationId: rec.rotationId, lastStatus: rec.status, lastStartedAt: String(rec.startedAt), cleanAfter: "" };
}

/** A record as stored: every field a string (JSON for numbers and flags). */
export function toHash(rec: Partial<RotationRecord>, rotationId = rec.rotationId): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(rec)) {
    if (v === undefined) continue;
    out[k] = k === "undo" ? formatUndo(v as UndoEntry[], rotationId) : typeof v === "string" ? v : JSON.stringify(v);
  }
  return out;
}

/**
 * The record's undo log, short: `cleanup-orphans discard-pending revoke-stored`, a version id
 * after a colon only where it is not the rotation's own (JSON where an entry holds more). A hash
 * value over 64 bytes would turn every record from Redis's compact encoding into a hash table
 * (about 900 bytes more per rotation, kept 30 days).
 */
function formatUndo(log: UndoEntry[], rotationId: string | undefined): string {
  if (log.some((e) => Object.keys(e).some((k) => k !== "undo" && k !== "versionId"))) return JSON.stringify(log);
  return log.map((e) => ("versionId" in e && e.versionId !== rotationId ? `${e.undo}:${e.versionId}` : e.undo)).join(" ");
}

const NUMERIC = new Set(["startedAt", "updatedAt", "promotedAt", "endedAt", "humanDeadline", "cancelRequestedAt", "committedAt"]);
const BOOLEAN = new Set(["leak", "leakFollowUp"]);

/** The record's undo log (JSON, ids only); left out where it does not parse as one. */
// Built once: a zod schema made per call costs more than the parse.
const UndoLog = z.array(UndoEntry);

function parseUndo(v: string, rotationId: string): UndoEntry[] | undefined {
  let raw: unknown;
  try {
    raw = v.startsWith("[") ? JSON.parse(v) : v.split(" ").filter(Boolean).map((e) => {
      const [undo, versionId] = e.split(":");
      return undo === "cleanup-orphans" ? { undo } : { undo, versionId: versionId ?? rotationId };
    });
  } catch {
    return undefined;
  }
  const parsed = UndoLog.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** A record read back (HGETALL); undefined where there is none. */
export function parseRecord(h: Record<string, string>): RotationRecord | undefined {
  if (!h.rotationId) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) {
    if (NUMERIC.has(k)) out[k] = Number(v);
    else if (BOOLEAN.has(k)) out[k] = v === "true";
    else if (k === "undo") out[k] = parseUndo(v, h.rotationId);
    else out[k] = v;
  }
  return out as unknown as RotationRecord;
}
