/**
 * rekey's own state and the rotation job, in memory (ports.ts), for the step-table unit tests:
 * the same meaning as RekeyState's Redis scripts and BullMQ's Job, no Redis and no queue. Every
 * call goes through World.call, so a test can crash the process around any state write.
 */
import type { AuditEntry } from "../../src/audit/audit.ts";
import type { AuditLog, PaceLimiter, RotationJob, RotationState } from "../../src/rotation/ports.ts";
import type { Confirmation, RotationRecord, RotationStatus } from "../../src/rotation/state.ts";
import type { World } from "./memory-world.ts";

/** A transaction: writes applied together at commit, each answering in order. */
export interface MemoryTx {
  ops: (() => unknown)[];
}

/** No shared budgets in memory: every request and write is let through at once. */
const openLimiter: PaceLimiter = {
  admitRequest: async () => ({ until: -1 }),
  settleRequest: async () => undefined,
  reserveHeld: async () => ({ held: [] }),
  settle: async () => undefined,
  observe: async () => undefined,
};

function patchInto(target: Record<string, unknown>, patch: object): void {
  for (const [k, v] of Object.entries(patch)) if (v !== undefined) target[k] = v;
}

export class MemoryState implements RotationState<MemoryTx> {
  readonly records = new Map<string, RotationRecord>();
  readonly locks = new Map<string, string>();
  readonly active = new Set<string>();
  readonly confirmations = new Map<string, Map<string, Confirmation>>();
  readonly probed = new Map<string, Map<string, number>>();
  readonly wake = new Set<string>();
  readonly fingerprints = new Map<string, { policyId: string; versionId: string }>();
  readonly gates = new Map<string, number>();
  readonly policies = new Map<string, Record<string, string>>();

  constructor(private readonly world: World) {}

  private call<T>(op: string, act: () => T): Promise<T> {
    return this.world.call(`state.${op}`, act);
  }

  /** A write: at once, or queued on `pipe`. */
  private write(op: string, act: () => unknown, pipe?: MemoryTx): Promise<void> {
    if (pipe) {
      pipe.ops.push(act);
      return Promise.resolve();
    }
    return this.call(op, () => void act());
  }

  multi(): MemoryTx {
    return { ops: [] };
  }

  commit(tx: MemoryTx): Promise<unknown[]> {
    return this.call("commit", () => tx.ops.map((op) => op()));
  }

  rateLimiter(): PaceLimiter {
    return openLimiter;
  }

  begin(rec: RotationRecord): Promise<string> {
    return this.call("begin", () => {
      if (!this.records.has(rec.rotationId)) {
        this.records.set(rec.rotationId, { ...rec });
        this.active.add(rec.rotationId);
      }
      const holder = this.locks.get(rec.policyId);
      if (holder !== undefined) return holder;
      this.locks.set(rec.policyId, rec.rotationId);
      return rec.rotationId;
    });
  }

  takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean> {
    return this.call("takeOver", () => {
      if (this.locks.get(policyId) !== staleRotationId) return false;
      this.locks.set(policyId, rotationId);
      return true;
    });
  }

  mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up"> {
    return this.call("mergeLeak", () => {
      const rec = this.records.get(holder);
      if (this.locks.get(policyId) !== holder || rec?.endedAt !== undefined) return "no";
      const r = rec ?? ({ rotationId: holder } as RotationRecord);
      this.records.set(holder, r);
      r.leak = true;
      if (leakedVersionId === holder || (!leakedVersionId && r.promotedAt !== undefined)) {
        r.leakFollowUp = true;
        return "follow-up";
      }
      return "joined";
    });
  }

  putRecord(rec: RotationRecord, opts: { claimsPolicy?: boolean } = {}): Promise<void> {
    return this.call("putRecord", () => {
      this.patch(rec.rotationId, rec);
      if (rec.status === "skipped") return;
      this.active.add(rec.rotationId);
      if (opts.claimsPolicy !== false) this.patchPolicyNow(rec.policyId, { lastRotationId: rec.rotationId, lastStatus: rec.status, lastStartedAt: String(rec.startedAt) });
    });
  }

  updateRecord(rotationId: string, patch: Partial<RotationRecord>, pipe?: MemoryTx): Promise<void> {
    return this.write(
      "updateRecord",
      () => {
        this.patch(rotationId, { ...patch, updatedAt: patch.updatedAt ?? this.world.clock.t });
        if (patch.status && patch.policyId) this.patchPolicyNow(patch.policyId, { lastStatus: patch.status });
      },
      pipe,
    );
  }

  endRecord(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    _ttlSec: number,
    opts: { release?: boolean; pipe?: MemoryTx } = {},
  ): Promise<void> {
    const act = (): number => {
      const r = this.patch(rec.rotationId, { status, message, updatedAt: now, endedAt: now });
      this.active.delete(rec.rotationId);
      if (status !== "skipped" && this.policies.get(rec.policyId)?.lastRotationId === rec.rotationId) {
        this.patchPolicyNow(rec.policyId, { lastStatus: status, lastEndedAt: String(now), ...(status === "completed" ? { lastCompletedAt: String(now) } : {}) });
      }
      if (opts.release && this.locks.get(rec.policyId) === rec.rotationId) this.locks.delete(rec.policyId);
      return (r.leak ? 1 : 0) + (r.leakFollowUp ? 2 : 0);
    };
    if (opts.pipe) {
      opts.pipe.ops.push(act);
      return Promise.resolve();
    }
    return this.call("endRecord", () => void act());
  }

  noteLeakRetry(rotationId: string, next: string, pipe: MemoryTx): void {
    pipe.ops.push(() => this.patch(rotationId, { leakRetry: next }));
  }

  patchPolicy(policyId: string, fields: Record<string, string>, pipe: MemoryTx): void {
    pipe.ops.push(() => this.patchPolicyNow(policyId, fields));
  }

  getRecord(rotationId: string): Promise<RotationRecord | undefined> {
    return this.call("getRecord", () => this.recordCopy(rotationId));
  }

  leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }> {
    return this.call("leakAndEnded", () => {
      const r = this.records.get(rotationId);
      return { leak: r?.leak === true, ended: r?.endedAt !== undefined };
    });
  }

  confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }> {
    return this.call("confirmationState", () => {
      this.wake.delete(rotationId);
      return { rec: this.recordCopy(rotationId), confirmed: new Map(this.confirmations.get(rotationId)) };
    });
  }

  confirm(rotationId: string, c: Confirmation): Promise<boolean> {
    return this.call("confirm", () => this.confirmNow(rotationId, c));
  }

  /** What POST /v1/confirmations does (not through the fault plan: the API is another process). */
  confirmNow(rotationId: string, c: Confirmation): boolean {
    const m = this.confirmations.get(rotationId) ?? new Map<string, Confirmation>();
    this.confirmations.set(rotationId, m);
    if (m.has(c.consumerId)) return false;
    m.set(c.consumerId, { ...c });
    return true;
  }

  markProbed(rotationId: string, consumerIds: string[], at: number): Promise<void> {
    return this.call("markProbed", () => {
      const m = this.probed.get(rotationId) ?? new Map<string, number>();
      for (const c of consumerIds) m.set(c, at);
      this.probed.set(rotationId, m);
    });
  }

  raiseWakeFlag(rotationId: string): Promise<void> {
    return this.call("raiseWakeFlag", () => void this.wake.add(rotationId));
  }

  takeWakeFlag(rotationId: string): Promise<boolean> {
    return this.call("takeWakeFlag", () => this.wake.delete(rotationId));
  }

  indexFingerprint(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: MemoryTx): Promise<void> {
    return this.write("indexFingerprint", () => this.fingerprints.set(fingerprint, { ...entry }), pipe);
  }

  closeGate(scope: string, until: number): Promise<void> {
    return this.call("closeGate", () => void this.gates.set(scope, Math.max(until, this.gates.get(scope) ?? 0)));
  }

  gate(scope: string): Promise<number> {
    return this.call("gate", () => this.gates.get(scope) ?? 0);
  }

  /** Patch a record at once (another process: the API), not through the fault plan. */
  patch(rotationId: string, patch: Partial<RotationRecord>): RotationRecord {
    const r = this.records.get(rotationId) ?? ({} as RotationRecord);
    patchInto(r as unknown as Record<string, unknown>, patch);
    this.records.set(rotationId, r);
    return r;
  }

  private patchPolicyNow(policyId: string, fields: Record<string, string>): void {
    this.policies.set(policyId, { ...this.policies.get(policyId), ...fields });
  }

  private recordCopy(rotationId: string): RotationRecord | undefined {
    const r = this.records.get(rotationId);
    return r?.rotationId ? { ...r } : undefined;
  }
}

export interface AuditRow extends AuditEntry {
  at: number;
}

export class MemoryAudit implements AuditLog<MemoryTx> {
  readonly rows: AuditRow[] = [];

  constructor(private readonly world: World) {}

  record(entry: AuditEntry & { at?: number }, pipe?: MemoryTx): Promise<void> {
    const act = () => void this.rows.push({ ...entry, at: entry.at ?? this.world.clock.t });
    if (pipe) {
      pipe.ops.push(act);
      return Promise.resolve();
    }
    return this.world.call("audit.record", act);
  }
}

export type JobState = "waiting" | "active" | "delayed" | "completed" | "failed";

/** A rotation job as BullMQ keeps it: data changes only through updateData. */
export class MemoryJob implements RotationJob {
  attemptsMade = 0;
  state: JobState = "waiting";
  /** When it may run next (waiting: now; delayed: moveToDelayed's time; retried: after the backoff). */
  readyAt: number;
  /** Every payload the job ever held (I5: none may hold a value). */
  readonly history: string[] = [];
  readonly opts = { attempts: 8 };

  constructor(
    private readonly world: World,
    readonly id: string,
    public data: unknown,
  ) {
    this.readyAt = world.clock.t;
    this.history.push(JSON.stringify(data));
  }

  async updateData(data: unknown): Promise<void> {
    this.world.alive();
    const json = JSON.stringify(data);
    this.history.push(json);
    this.data = JSON.parse(json) as unknown;
  }

  async moveToDelayed(timestamp: number): Promise<void> {
    this.world.alive();
    this.state = "delayed";
    this.readyAt = timestamp;
  }

  async promote(): Promise<void> {
    this.world.alive();
    if (this.state === "delayed") this.readyAt = this.world.clock.t;
  }
}
