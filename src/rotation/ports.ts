/**
 * What the rotation steps (steps/, run.ts, processor.ts, the gateway) need from the job and from
 * rekey's own state, as interfaces: BullMQ's Job and the Redis classes (RekeyState and its
 * concerns under state/, Audit, RateLimiter) satisfy them as they are, and the unit tests run the
 * step table on in-memory ones (test/fakes/memory.ts) — no Redis, no queue.
 *
 * `Tx` is a transaction: writes queued on it (the methods that take a `pipe` or `m`) are carried
 * out together, all or none, by `commit`, which answers with each queued write's reply in order.
 * In Redis it is a MULTI.
 */
import type { AuditEntry } from "../audit/audit.ts";
import type { Rate } from "./pacing.ts";
import type { CancelRequest, CommitPoint } from "./state/cancels.ts";
import type { Confirmation } from "./state/confirmations.ts";
import type { AuditAppend, CurrentFacts, RotationRecord, RotationStatus } from "./state/records.ts";

/** The queue's job as a rotation sees it (BullMQ's Job). */
export interface RotationJob {
  readonly id?: string;
  readonly data: unknown;
  readonly opts: { attempts?: number };
  /** Attempts used so far (not counting the one running). */
  readonly attemptsMade: number;
  /** Activations so far, the running one included (absent: not a job the queue activated). */
  readonly attemptsStarted?: number;
  /** Stalls the queue detected (a worker that died or lost its lock mid-step). */
  readonly stalledCounter?: number;
  updateData(data: unknown): Promise<void>;
  /** Park until `timestamp` (epoch ms) without using an attempt; the caller then throws DelayedError. */
  moveToDelayed(timestamp: number, token?: string): Promise<void>;
  /** A parked job runs at once. */
  promote(): Promise<void>;
  /** BullMQ priority (lower is sooner); a delayed job is queued with it when its wait ends. */
  readonly priority?: number;
  changePriority?(opts: { priority: number }): Promise<void>;
}

/** The shared rate budgets (pacing.ts RateLimiter). */
export interface PaceLimiter {
  admitRequest(scope: string, name: string, rate: Rate | undefined, now: number): Promise<{ until: number; held?: string }>;
  settleRequest(name: string, held: string, at: number): Promise<void>;
  reserveHeld(name: string, n: number, rate: Rate, now: number, holdMs: number): Promise<{ held: string[] } | { waitMs: number }>;
  settle(name: string, held: string[], at: number): Promise<void>;
  observe(name: string, remaining: number, resetAt: number, now: number, limit?: number): Promise<void>;
}

/** The audit trail as the steps write it (audit.ts Audit). */
export interface AuditLog<Tx> {
  record(entry: AuditEntry & { at?: number }, pipe?: Tx): Promise<void>;
  /** The streams and fields of an entry, for a script that appends it with its write (RecordPort.end's `audit`). */
  appendArgs(entry: AuditEntry & { at?: number }): AuditAppend;
}

/** I3: the policy's in-flight lock (state/locks.ts PolicyLocks). */
export interface LockPort {
  begin(rec: RotationRecord): Promise<string>;
  /** begin(), with the policy's CurrentFacts read under the lock where this rotation took it. */
  claim(rec: RotationRecord): Promise<{ holder: string; facts?: CurrentFacts }>;
  takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean>;
  mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up">;
}

/** Rotation records and policy summaries (state/records.ts RotationRecords). */
export interface RecordPort<Tx> {
  put(rec: RotationRecord, opts?: { claimsPolicy?: boolean }): Promise<void>;
  update(rotationId: string, patch: Partial<RotationRecord>, pipe?: Tx): Promise<void>;
  claimPolicy(m: Tx, rec: Pick<RotationRecord, "rotationId" | "policyId" | "startedAt">): void;
  /** Into `m`: a read of the record, answered [leak, endedAt, promotedAt, status, newFingerprint] among its replies (null where unset). */
  readBeforePromotion(m: Tx, rotationId: string): void;
  markLeakRetry(m: Tx, rotationId: string, leakRotationId: string): void;
  end(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    ttlSec: number,
    opts?: { release?: boolean; policy?: Record<string, string>; audit?: AuditAppend[] },
  ): Promise<number>;
  get(rotationId: string): Promise<RotationRecord | undefined>;
  currentFacts(policyId: string): Promise<CurrentFacts>;
  leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }>;
}

/** `rekey cancel` against the point of no return (state/cancels.ts CancelRequests). */
export interface CancelPort {
  request(rotationId: string, actor: string, reason: string, now: number): Promise<"missing" | "ended" | "committed" | "ok">;
  commit(rotationId: string, now: number, point: CommitPoint): Promise<CancelRequest | undefined>;
  /** commit(), with the store's throttle gate (GatePort.until of `storeScope`) read alongside. */
  commitBeforeWrite(rotationId: string, now: number, point: CommitPoint, storeScope: string): Promise<{ cancel?: CancelRequest; gateUntil: number }>;
  uncommit(rotationId: string): Promise<void>;
  requested(rotationId: string): Promise<CancelRequest | undefined>;
}

/** What consumers report (state/confirmations.ts ConsumerReports). */
export interface ConsumerPort {
  confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }>;
  confirm(rotationId: string, c: Confirmation): Promise<boolean>;
  markProbed(rotationId: string, consumerIds: string[], at: number, ttlSec: number): Promise<void>;
}

/** The leaked-value index (state/fingerprints.ts FingerprintIndex). */
export interface FingerprintPort<Tx> {
  index(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: Tx): Promise<void>;
}

/** The wake flag (state/signals.ts WakeFlags). */
export interface WakePort {
  /** Raise the flag; true when a worker lingering on the rotation heard it (listen). */
  raise(rotationId: string): Promise<boolean>;
  take(rotationId: string): Promise<boolean>;
  /** Hear raises of one rotation's flag while its job lingers before parking (processor.ts). */
  listen?(rotationId: string): Promise<WakeListener | undefined>;
}

/** A subscription to one rotation's wake flag (WakePort.listen). */
export interface WakeListener {
  /** The process channel the wakes come to: written on the record (`listener`) with the promotion. */
  readonly id: string;
  /** Resolves true once a raise is heard and not taken (at once if one is), false after `ms` or on abort. */
  wait(ms: number, signal: AbortSignal): Promise<boolean>;
  /** The messages heard since the last take, in order (state/signals.ts WAKE_LOOK, WAKE_CONFIRMED). */
  take(): string[];
  /** Stop listening; true when a raise was heard and not taken (one that comes later is handled as unheard). */
  close(): Promise<boolean>;
}

/** The rate-limit gates every worker obeys (state/signals.ts RateGates). */
export interface GatePort {
  close(scope: string, until: number): Promise<void>;
  until(scope: string): Promise<number>;
}

/** rekey's state as the steps use it (state.ts RekeyState), by concern. */
export interface RotationState<Tx> {
  /** A new transaction (see the module comment). */
  transaction(): Tx;
  /** Carry out a transaction; rejects when any write in it failed. */
  commit(tx: Tx): Promise<unknown[]>;
  readonly locks: LockPort;
  readonly records: RecordPort<Tx>;
  readonly cancels: CancelPort;
  readonly consumers: ConsumerPort;
  readonly fingerprints: FingerprintPort<Tx>;
  readonly wake: WakePort;
  readonly gates: GatePort;
}
