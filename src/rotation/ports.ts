/**
 * What the rotation steps (steps/, run.ts, processor.ts) need from the job and from rekey's own
 * state, as interfaces: BullMQ's Job and the Redis classes (RekeyState, Audit, RateLimiter)
 * satisfy them as they are, and the unit tests run the step table on in-memory ones
 * (test/fakes/memory.ts) — no Redis, no queue.
 *
 * `Tx` is a transaction: writes queued on it (the methods that take a `pipe`) are carried out
 * together, all or none, by `commit`, which answers with each queued write's reply in order.
 * In Redis it is a MULTI.
 */
import type { AuditEntry } from "../audit/audit.ts";
import type { Rate } from "./pacing.ts";
import type { Confirmation, RotationRecord, RotationStatus } from "./state.ts";

/** The queue's job as a rotation sees it (BullMQ's Job). */
export interface RotationJob {
  readonly id?: string;
  readonly data: unknown;
  readonly opts: { attempts?: number };
  /** Attempts used so far (not counting the one running). */
  readonly attemptsMade: number;
  updateData(data: unknown): Promise<void>;
  /** Park until `timestamp` (epoch ms) without using an attempt; the caller then throws DelayedError. */
  moveToDelayed(timestamp: number, token?: string): Promise<void>;
  /** A parked job runs at once. */
  promote(): Promise<void>;
}

/** The shared rate budgets (pacing.ts RateLimiter). */
export interface PaceLimiter {
  admitRequest(scope: string, name: string, rate: Rate | undefined, now: number): Promise<{ until: number; held?: string }>;
  settleRequest(name: string, held: string, at: number): Promise<void>;
  reserveHeld(name: string, n: number, rate: Rate, now: number, holdMs: number): Promise<{ held: string[] } | { waitMs: number }>;
  settle(name: string, held: string[], at: number): Promise<void>;
  observe(name: string, remaining: number, resetAt: number, now: number): Promise<void>;
}

/** The audit trail as the steps write it (audit.ts Audit). */
export interface AuditLog<Tx> {
  record(entry: AuditEntry & { at?: number }, pipe?: Tx): Promise<void>;
}

/** rekey's state as the steps use it (state.ts RekeyState): locks, records, confirmations, fingerprints, gates. */
export interface RotationState<Tx> {
  /** A new transaction (see the module comment). */
  multi(): Tx;
  /** Carry out a transaction; rejects when any write in it failed. */
  commit(tx: Tx): Promise<unknown[]>;
  /** The shared rate budgets (provider pacing, store writes). */
  rateLimiter(): PaceLimiter;

  // I3: the policy's in-flight lock
  begin(rec: RotationRecord): Promise<string>;
  takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean>;
  mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up">;

  // records
  putRecord(rec: RotationRecord, opts?: { claimsPolicy?: boolean }): Promise<void>;
  updateRecord(rotationId: string, patch: Partial<RotationRecord>, pipe?: Tx): Promise<void>;
  endRecord(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    ttlSec: number,
    opts?: { release?: boolean; pipe?: Tx },
  ): Promise<void>;
  /** A rotation that queued the leak rotation it owed names it (leakRetry). */
  noteLeakRetry(rotationId: string, next: string, pipe: Tx): void;
  /** The policy's summary for `rekey status` (last rotation, promotion time). */
  patchPolicy(policyId: string, fields: Record<string, string>, pipe: Tx): void;
  getRecord(rotationId: string): Promise<RotationRecord | undefined>;
  leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }>;

  // confirmations and the wake flag
  confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }>;
  confirm(rotationId: string, c: Confirmation): Promise<boolean>;
  markProbed(rotationId: string, consumerIds: string[], at: number, ttlSec: number): Promise<void>;
  raiseWakeFlag(rotationId: string): Promise<void>;
  takeWakeFlag(rotationId: string): Promise<boolean>;

  // fingerprint index and rate-limit gates
  indexFingerprint(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: Tx): Promise<void>;
  closeGate(scope: string, until: number): Promise<void>;
  gate(scope: string): Promise<number>;
}
