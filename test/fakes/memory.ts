/**
 * rekey's own state and the rotation job, in memory (ports.ts), for the step-table unit tests:
 * the same meaning as RekeyState's Redis scripts and BullMQ's Job, no Redis and no queue. Every
 * call goes through World.call, so a test can crash the process around any state write.
 */
import { type AuditEntry, parseRow } from "../../src/audit/audit.ts";
import type {
  AuditLog,
  CancelPort,
  ConsumerPort,
  FingerprintPort,
  GatePort,
  LockPort,
  PaceLimiter,
  RecordPort,
  RotationJob,
  RotationState,
  WakePort,
} from "../../src/rotation/ports.ts";
import type { CancelRequest, CommitPoint } from "../../src/rotation/state/cancels.ts";
import type { Confirmation } from "../../src/rotation/state/confirmations.ts";
import { type AuditAppend, type CurrentFacts, parseFacts, type RotationRecord, type RotationStatus } from "../../src/rotation/state/records.ts";
import type { World } from "./memory-world.ts";

/** A transaction: writes applied together at commit, each answering in order. */
export interface MemoryTx {
  ops: (() => unknown)[];
}

/** No shared budgets in memory: every request and write is let through at once. */
export const openLimiter: PaceLimiter = {
  admitRequest: async () => ({ until: -1 }),
  settleRequest: async () => undefined,
  reserveHeld: async () => ({ held: [] }),
  settle: async () => undefined,
  observe: async () => undefined,
};

function patchInto(target: Record<string, unknown>, patch: object): void {
  for (const [k, v] of Object.entries(patch)) if (v !== undefined) target[k] = v;
}

/** What Redis would hold, as tests read it directly (no fault plan, no copies). */
export class MemoryDb {
  readonly records = new Map<string, RotationRecord>();
  readonly locks = new Map<string, string>();
  readonly active = new Set<string>();
  readonly confirmations = new Map<string, Map<string, Confirmation>>();
  readonly probed = new Map<string, Map<string, number>>();
  readonly wake = new Set<string>();
  readonly fingerprints = new Map<string, { policyId: string; versionId: string }>();
  readonly gates = new Map<string, number>();
  readonly policies = new Map<string, Record<string, string>>();

  /** Patch a record at once (a hash: created by its first field). */
  patch(rotationId: string, patch: Partial<RotationRecord>): RotationRecord {
    const r = this.records.get(rotationId) ?? ({} as RotationRecord);
    patchInto(r as unknown as Record<string, unknown>, patch);
    this.records.set(rotationId, r);
    return r;
  }

  patchPolicy(policyId: string, fields: Record<string, string>): void {
    this.policies.set(policyId, { ...this.policies.get(policyId), ...fields });
  }

  /** A record as HGETALL reads it: undefined where there is none. */
  recordCopy(rotationId: string): RotationRecord | undefined {
    const r = this.records.get(rotationId);
    return r?.rotationId ? { ...r } : undefined;
  }
}

/** Every call through the world's fault plan (`state.<concern>.<op>`); writes at once or queued on a transaction. */
class Access {
  constructor(
    readonly world: World,
    readonly db: MemoryDb,
    private readonly concern: string,
  ) {}

  call<T>(op: string, act: () => T): Promise<T> {
    return this.world.call(`state.${this.concern}.${op}`, act);
  }

  write(op: string, act: () => unknown, pipe?: MemoryTx): Promise<void> {
    if (pipe) {
      pipe.ops.push(act);
      return Promise.resolve();
    }
    return this.call(op, () => void act());
  }
}

class MemoryLocks implements LockPort {
  constructor(private readonly a: Access) {}

  async begin(rec: RotationRecord): Promise<string> {
    return (await this.claim(rec)).holder;
  }

  claim(rec: RotationRecord): Promise<{ holder: string; facts?: CurrentFacts }> {
    const { db } = this.a;
    return this.a.call("begin", () => {
      // A record without its id (fields a forgotten worker patched in after a wipe) is replaced.
      if (db.records.get(rec.rotationId)?.rotationId === undefined) {
        db.records.set(rec.rotationId, { ...rec });
        db.active.add(rec.rotationId);
      }
      const holder = db.locks.get(rec.policyId);
      if (holder !== undefined) return { holder };
      db.locks.set(rec.policyId, rec.rotationId);
      const p = db.policies.get(rec.policyId) ?? {};
      return { holder: rec.rotationId, facts: parseFacts(p.currentVersionId, p.currentCredentialId, p.currentMeta, p.cleanAfter) };
    });
  }

  takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean> {
    const { db } = this.a;
    return this.a.call("takeOver", () => {
      if (db.locks.get(policyId) !== staleRotationId) return false;
      db.locks.set(policyId, rotationId);
      return true;
    });
  }

  mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up"> {
    const { db } = this.a;
    return this.a.call("mergeLeak", () => {
      if (db.locks.get(policyId) !== holder || db.records.get(holder)?.endedAt !== undefined) return "no";
      const r = db.patch(holder, { leak: true });
      if (leakedVersionId === holder || (!leakedVersionId && r.promotedAt !== undefined)) {
        r.leakFollowUp = true;
        return "follow-up";
      }
      return "joined";
    });
  }
}

class MemoryRecords implements RecordPort<MemoryTx> {
  constructor(
    private readonly a: Access,
    private readonly audit?: MemoryAudit,
  ) {}

  put(rec: RotationRecord, opts: { claimsPolicy?: boolean } = {}): Promise<void> {
    const { db } = this.a;
    return this.a.call("put", () => {
      db.patch(rec.rotationId, rec);
      if (rec.status === "skipped") return;
      db.active.add(rec.rotationId);
      if (opts.claimsPolicy !== false) db.patchPolicy(rec.policyId, { lastRotationId: rec.rotationId, lastStatus: rec.status, lastStartedAt: String(rec.startedAt), cleanAfter: "" });
    });
  }

  update(rotationId: string, patch: Partial<RotationRecord>, pipe?: MemoryTx): Promise<void> {
    const { db } = this.a;
    const act = () => {
      db.patch(rotationId, { ...patch, updatedAt: patch.updatedAt ?? this.a.world.clock.t });
      if (patch.status && patch.policyId) db.patchPolicy(patch.policyId, { lastStatus: patch.status });
      if (patch.promotedAt !== undefined && patch.policyId) db.patchPolicy(patch.policyId, { lastPromotedAt: String(patch.promotedAt) });
    };
    return this.a.write("update", act, pipe);
  }

  claimPolicy(m: MemoryTx, rec: Pick<RotationRecord, "rotationId" | "policyId" | "startedAt">): void {
    m.ops.push(() => this.a.db.patchPolicy(rec.policyId, { lastRotationId: rec.rotationId, lastStatus: "running", lastStartedAt: String(rec.startedAt), cleanAfter: "" }));
  }

  readBeforePromotion(m: MemoryTx, rotationId: string): void {
    m.ops.push(() => {
      const r = this.a.db.records.get(rotationId);
      const str = (v: unknown) => (v === undefined ? null : typeof v === "string" ? v : JSON.stringify(v));
      return [r?.leak ? "true" : null, str(r?.endedAt), str(r?.promotedAt), str(r?.status), str(r?.newFingerprint)];
    });
  }

  markLeakRetry(m: MemoryTx, rotationId: string, leakRotationId: string): void {
    m.ops.push(() => this.a.db.patch(rotationId, { leakRetry: leakRotationId }));
  }

  end(
    rec: Pick<RotationRecord, "rotationId" | "policyId">,
    status: RotationStatus,
    message: string | undefined,
    now: number,
    _ttlSec: number,
    opts: { release?: boolean; policy?: Record<string, string>; audit?: AuditAppend[] } = {},
  ): Promise<number> {
    const { db } = this.a;
    const act = (): number => {
      const r = db.patch(rec.rotationId, { status, message, updatedAt: now, endedAt: now });
      db.active.delete(rec.rotationId);
      if (status !== "skipped" && db.policies.get(rec.policyId)?.lastRotationId === rec.rotationId) {
        db.patchPolicy(rec.policyId, { ...opts.policy, lastStatus: status, lastEndedAt: String(now), ...(status === "completed" ? { lastCompletedAt: String(now) } : {}) });
      }
      if (opts.release && db.locks.get(rec.policyId) === rec.rotationId) db.locks.delete(rec.policyId);
      // The entries that record the end land with it (MemoryAudit.appendArgs: no streams, the fields).
      for (const a of opts.audit ?? []) this.audit?.rows.push(rowOf(a.fields));
      return (r.leak ? 1 : 0) + (r.leakFollowUp ? 2 : 0);
    };
    return this.a.call("end", act);
  }

  get(rotationId: string): Promise<RotationRecord | undefined> {
    return this.a.call("get", () => this.a.db.recordCopy(rotationId));
  }

  currentFacts(policyId: string): Promise<CurrentFacts> {
    return this.a.call("currentFacts", () => {
      const p = this.a.db.policies.get(policyId) ?? {};
      return parseFacts(p.currentVersionId, p.currentCredentialId, p.currentMeta, p.cleanAfter);
    });
  }

  leakAndEnded(rotationId: string): Promise<{ leak: boolean; ended: boolean }> {
    return this.a.call("leakAndEnded", () => {
      const r = this.a.db.records.get(rotationId);
      return { leak: r?.leak === true, ended: r?.endedAt !== undefined };
    });
  }
}

type CancelVerdict = "missing" | "ended" | "committed" | "ok";

function cancelInto(db: MemoryDb, rotationId: string, actor: string, reason: string, now: number): CancelVerdict {
  const r = db.records.get(rotationId);
  if (!r) return "missing";
  if (r.endedAt !== undefined) return "ended";
  if (r.promotedAt !== undefined || r.committedAt !== undefined) return "committed";
  if (r.cancelRequestedAt === undefined) db.patch(rotationId, { cancelRequestedAt: now, cancelledBy: actor, cancelReason: reason });
  return "ok";
}

/** `rekey cancel` and the point of no return, as state/cancels.ts's scripts decide them. */
class MemoryCancels implements CancelPort {
  constructor(private readonly a: Access) {}

  request(rotationId: string, actor: string, reason: string, now: number): Promise<CancelVerdict> {
    return this.a.call("request", () => cancelInto(this.a.db, rotationId, actor, reason, now));
  }

  async commit(rotationId: string, now: number, point: CommitPoint): Promise<CancelRequest | undefined> {
    return (await this.pass(rotationId, now, point)).cancel;
  }

  commitBeforeWrite(rotationId: string, now: number, point: CommitPoint, storeScope: string): Promise<{ cancel?: CancelRequest; gateUntil: number }> {
    return this.pass(rotationId, now, point, storeScope);
  }

  private pass(rotationId: string, now: number, point: CommitPoint, storeScope?: string): Promise<{ cancel?: CancelRequest; gateUntil: number }> {
    const { db } = this.a;
    return this.a.call("commit", () => {
      const r = db.records.get(rotationId);
      if (r?.cancelRequestedAt !== undefined) return { cancel: { by: r.cancelledBy ?? "unknown", reason: r.cancelReason || undefined }, gateUntil: 0 };
      if (r?.committedAt === undefined) db.patch(rotationId, { committedAt: now, commitPoint: point });
      return { gateUntil: storeScope === undefined ? 0 : (db.gates.get(storeScope) ?? 0) };
    });
  }

  uncommit(rotationId: string): Promise<void> {
    const { db } = this.a;
    return this.a.call("uncommit", () => {
      const r = db.records.get(rotationId);
      if (!r) return;
      delete r.committedAt;
      delete r.commitPoint;
      if (Object.keys(r).length === 0) db.records.delete(rotationId);
    });
  }

  requested(rotationId: string): Promise<CancelRequest | undefined> {
    return this.a.call("requested", () => {
      const r = this.a.db.records.get(rotationId);
      return r?.cancelledBy ? { by: r.cancelledBy, reason: r.cancelReason || undefined } : undefined;
    });
  }
}

class MemoryConsumers implements ConsumerPort {
  constructor(private readonly a: Access) {}

  confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }> {
    const { db } = this.a;
    return this.a.call("confirmationState", () => {
      db.wake.delete(rotationId);
      return { rec: db.recordCopy(rotationId), confirmed: new Map(db.confirmations.get(rotationId)) };
    });
  }

  confirm(rotationId: string, c: Confirmation): Promise<boolean> {
    return this.a.call("confirm", () => confirmInto(this.a.db, rotationId, c));
  }

  markProbed(rotationId: string, consumerIds: string[], at: number): Promise<void> {
    const { db } = this.a;
    return this.a.call("markProbed", () => {
      const m = db.probed.get(rotationId) ?? new Map<string, number>();
      for (const c of consumerIds) m.set(c, at);
      db.probed.set(rotationId, m);
    });
  }
}

function confirmInto(db: MemoryDb, rotationId: string, c: Confirmation): boolean {
  const m = db.confirmations.get(rotationId) ?? new Map<string, Confirmation>();
  db.confirmations.set(rotationId, m);
  if (m.has(c.consumerId)) return false;
  m.set(c.consumerId, { ...c });
  return true;
}

export class MemoryState implements RotationState<MemoryTx> {
  readonly db = new MemoryDb();
  readonly locks: LockPort;
  readonly records: RecordPort<MemoryTx>;
  readonly cancels: CancelPort;
  readonly consumers: ConsumerPort;
  readonly fingerprints: FingerprintPort<MemoryTx>;
  readonly wake: WakePort;
  readonly gates: GatePort;
  /** `audit`: where a rotation's end appends the entries it carries (RecordPort.end). */
  constructor(
    private readonly world: World,
    audit?: MemoryAudit,
  ) {
    const at = (concern: string) => new Access(world, this.db, concern);
    const { db } = this;
    this.locks = new MemoryLocks(at("locks"));
    this.records = new MemoryRecords(at("records"), audit);
    this.cancels = new MemoryCancels(at("cancels"));
    this.consumers = new MemoryConsumers(at("consumers"));
    const fp = at("fingerprints");
    this.fingerprints = { index: (f, entry, pipe) => fp.write("index", () => db.fingerprints.set(f, { ...entry }), pipe) };
    const wake = at("wake");
    this.wake = {
      raise: (id) => wake.call("raise", () => (db.wake.add(id), false)),
      take: (id) => wake.call("take", () => db.wake.delete(id)),
    };
    const gates = at("gates");
    this.gates = {
      close: (scope, until) => gates.call("close", () => void db.gates.set(scope, Math.max(until, db.gates.get(scope) ?? 0))),
      until: (scope) => gates.call("until", () => db.gates.get(scope) ?? 0),
    };
  }

  transaction(): MemoryTx {
    return { ops: [] };
  }

  commit(tx: MemoryTx): Promise<unknown[]> {
    return this.world.call("state.commit", () => tx.ops.map((op) => op()));
  }

  /** What POST /v1/confirmations does (not through the fault plan: the API is another process). */
  confirmNow(rotationId: string, c: Confirmation): boolean {
    return confirmInto(this.db, rotationId, c);
  }

  /** What `rekey cancel` asks of a started rotation (another process: not through the fault plan). */
  cancelNow(rotationId: string, actor: string, reason: string): CancelVerdict {
    return cancelInto(this.db, rotationId, actor, reason, this.world.clock.t);
  }

  /** Patch a record at once (another process: the API), not through the fault plan. */
  patch(rotationId: string, patch: Partial<RotationRecord>): RotationRecord {
    return this.db.patch(rotationId, patch);
  }
}

export interface AuditRow extends AuditEntry {
  at: number;
}

/** An audit row from an entry's fields (MemoryAudit.appendArgs), read as Audit reads a stream entry. */
function rowOf(fields: string[]): AuditRow {
  const { id: _id, ...row } = parseRow(["", fields]);
  return row;
}

export class MemoryAudit implements AuditLog<MemoryTx> {
  readonly rows: AuditRow[] = [];

  constructor(private readonly world: World) {}

  /** An entry as RecordPort.end's `audit` carries it: no streams here, its fields as Audit writes them. */
  appendArgs(entry: AuditEntry & { at?: number }): AuditAppend {
    const fields = ["at", String(entry.at ?? this.world.clock.t), "step", entry.step, "outcome", entry.outcome, "actor", entry.actor];
    if (entry.rotationId) fields.push("rotationId", entry.rotationId);
    if (entry.policyId) fields.push("policyId", entry.policyId);
    if (entry.message) fields.push("message", entry.message);
    return { streams: [], fields };
  }

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
  /** Activations so far, the running one included (BullMQ counts every move to active). */
  attemptsStarted = 0;
  /** Stalls detected (the worker died mid-step). */
  stalledCounter = 0;
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
