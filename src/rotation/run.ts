/**
 * One execution of one rotation job: what every step shares — the policy's provider and store,
 * audit batching, transitions, store writes behind the AWS pacing, paced provider calls — and the
 * failure path. The steps themselves are in steps/; the processor (processor.ts) runs them.
 */
import { DelayedError, UnrecoverableError } from "bullmq";
import type { AuditEntry } from "../audit/audit.ts";
import { CancelledError, errorMessage, PermanentError, RateLimitedError, TransientError } from "../errors.ts";
import type { Policy, ProviderConfig } from "../policy/schema.ts";
import type { Capabilities, Provider, ProviderContext } from "../providers/types.ts";
import type { SecretRef, StoredVersion } from "../stores/types.ts";
import { formatDuration } from "../util/duration.ts";
import { retryFast } from "./cutover.ts";
import { engineDefaults } from "./defaults.ts";
import type { EngineDeps, EngineEvent } from "./engine.ts";
import type { PolicyCalls } from "./gateway.ts";
import type { RotationJobData, UndoEntry } from "./job.ts";
import type { RotationJob, WakeListener } from "./ports.ts";
import type { Confirmation } from "./state/confirmations.ts";
import { cancelledMessage, type CommitPoint } from "./state/cancels.ts";
import { leakHandOffDue, type RotationRecord } from "./state/records.ts";
import { describeUndo, legacyUndo, runUndo } from "./undo.ts";

export interface StepOutcome {
  data: Data;
  /** Park the job (no worker slot held) until this epoch ms. */
  waitUntil?: number;
}

/** A step of the protocol (steps/index.ts): reads the outside truth, acts, hands back the next cursor. */
export type StepFn = <Tx>(run: Run<Tx>) => Promise<StepOutcome>;

/** The job's data as a run holds it (the failure path's marker included: job.ts, `failing`). */
export type Data = RotationJobData;

/**
 * Park the job until `until` without holding a worker slot (and without using an attempt).
 * Confirmations wake it early: they set a wake flag and promote the delayed job.
 */
export async function parkJob<Tx>(deps: EngineDeps<Tx>, job: RotationJob, data: Data, until: number, token: string | undefined): Promise<never> {
  await job.moveToDelayed(Math.max(until, deps.now() + 1), token);
  // A confirmation may have arrived while this run was deciding to wait: it set the wake flag but
  // could not promote a job that was still active. Promote now so it is not missed until the next
  // re-check. The flag is consumed here; where a step reads what it waits for, it clears the flag
  // before that read (confirmationState), so a flag already answered never wakes the job again.
  if (await deps.state.wake.take(data.rotationId)) await job.promote().catch(() => undefined);
  throw new DelayedError();
}

/** One execution of one rotation job: the policy, the provider, the store, and the steps. */
export class Run<Tx> {
  /** This run's calls to the provider and the store (gateway.ts). */
  readonly calls: PolicyCalls;
  readonly provider: Provider;
  /** The policy's provider config, as the provider runs it for this rotation's reason. */
  readonly config: ProviderConfig;
  readonly caps: Capabilities;
  readonly ref: SecretRef;
  /** The record's leak flag as last read in this run. */
  leakSeen: boolean | undefined;
  /** The value this run issued and stored (a cut-over verifies it after promotion without re-reading it). */
  issuedValue: string | undefined;
  /** This run's cut-over write made the new version AWSCURRENT already. */
  wroteCurrent = false;
  /** The value that was AWSCURRENT when this run's start read it (issue copies from it; never re-read). */
  currentValue: string | undefined;
  /**
   * Start found the policy as its last rotation left it — no other credential of the policy live,
   * the same version current — in this job's first activation: issuing need not sweep first.
   */
  startedClean = false;
  /**
   * The subscription to this rotation's wake this run opened at its start (processor.ts), where
   * it may linger for its confirmations; undefined once stopped.
   */
  listenerReady: Promise<WakeListener | undefined> | undefined;
  /**
   * What awaitingConfirmation would read (the record's fields it uses, the confirmations), known
   * without reading: set by the promotion where this run heard every wake since (promoted()), and
   * kept true by the confirmations it hears (processor.ts); undefined: read them.
   */
  known: { rec: Partial<Pick<RotationRecord, "leak" | "status" | "message" | "newFingerprint">>; confirmed: Map<string, Confirmation> } | undefined;
  /** The undo log as this run wrote it to the record (start), so the job need not hold it yet. */
  undoOnRecord: UndoEntry[] | undefined;
  /** Audit entries waiting for this run's next write (deferAudit). */
  private pendingAudit: (AuditEntry & { at: number })[] = [];

  constructor(
    readonly deps: EngineDeps<Tx>,
    readonly policy: Policy,
    public data: Data,
    readonly job: RotationJob,
    readonly signal: AbortSignal,
    readonly sleep: (ms: number) => Promise<void>,
  ) {
    this.calls = deps.gateway.open(policy, { rotationId: data.rotationId, reason: data.reason, successor: data.successor, signal });
    ({ provider: this.provider, config: this.config, caps: this.caps, ref: this.ref } = this.calls);
  }

  get now(): number {
    return this.deps.now();
  }

  /**
   * When a create of this rotation that got no answer (issueLostAt) can no longer land at the
   * provider: the last sweep or clean-up waits until then. In the past where none was lost.
   */
  lostCreateSettledAt(d: Data): number {
    return (d.issueLostAt ?? 0) + (this.deps.lostRequestSettleMs ?? engineDefaults.resetSettleMs);
  }

  /**
   * An overlap provider where a credential whose value was lost cannot be found again: it neither
   * lists them (sweep) nor shows a value again (recoverIssued). Snyk's client secrets.
   */
  get lostIsUnfindable(): boolean {
    return this.caps.issue === "overlap" && !this.provider.sweep && !this.provider.recoverIssued;
  }

  /** A reset that kills the old value: from the reset on, store, promote at once, then verify. */
  get cutover(): boolean {
    return this.caps.issue === "reset" && !this.caps.oldSurvivesIssue;
  }

  /** A call on the cut-over path, retried in the worker with sub-second back-offs (cutover.ts). */
  fast<T>(fn: () => Promise<T>, budgetMs: number = engineDefaults.cutoverRetryBudgetMs): Promise<T> {
    return retryFast(fn, { now: this.deps.now, sleep: this.sleep, signal: this.signal, budgetMs });
  }

  ctx(): ProviderContext {
    return this.calls.ctx();
  }


  async auditStep(step: string, outcome: string, message?: string, actor = "worker"): Promise<void> {
    const entry = { rotationId: this.data.rotationId, policyId: this.data.policyId, step, outcome, actor, message };
    if (!this.pendingAudit.length) return this.deps.audit.record(entry);
    const m = this.deps.state.transaction();
    this.auditInto(m, entry);
    await this.deps.state.commit(m);
  }

  /**
   * The outcome of a step that only read the outside truth (verifying, the decision to revoke),
   * written with this run's next write to Redis: one round trip less. Lost with a crash before
   * that write, it is written again by the step's re-run, which the crash causes.
   */
  deferAudit(step: string, outcome: string, message: string): void {
    this.pendingAudit.push({ rotationId: this.data.rotationId, policyId: this.data.policyId, step, outcome, actor: "worker", message, at: this.now });
  }

  /** Deferred entries first, then `entry`, into transaction `m`. */
  auditInto(m: Tx, entry?: AuditEntry): void {
    for (const e of this.pendingAudit.splice(0)) void this.deps.audit.record(e, m);
    if (entry) void this.deps.audit.record(entry, m);
  }

  /** Write what deferAudit holds (before parking, and on the way out after an error). */
  async flushAudit(): Promise<void> {
    if (!this.pendingAudit.length) return;
    const m = this.deps.state.transaction();
    this.auditInto(m);
    await this.deps.state.commit(m);
  }

  /**
   * Whether this is the job's first activation, none of which stalled or failed: then no earlier
   * or concurrent run of it can have issued or written anything (BullMQ counts every activation,
   * every stall it detects and every failed attempt on the job).
   */
  get firstActivation(): boolean {
    // A job object without the counters (not one BullMQ activated) is never taken for a first run.
    return (this.job.attemptsStarted ?? 2) <= 1 && !this.job.stalledCounter && !this.job.attemptsMade;
  }

  /** No activation of this job stalled or failed (a lost lock is detected as a stall). */
  get neverInterrupted(): boolean {
    return !this.job.stalledCounter && !this.job.attemptsMade;
  }

  /**
   * A step transition: the record patch and its audit entry in one Redis transaction (`also`
   * adds more commands to it, first — a start's claim of the policy aside — so a read it adds
   * answers first among the replies, which are returned).
   */
  async transition(patch: Partial<RotationRecord>, step: string, outcome: string, message?: string, actor = "worker", also?: (m: Tx) => Promise<void>): Promise<unknown[]> {
    const m = this.deps.state.transaction();
    if (step === "start" && outcome === "ok") {
      // The claim: from here on the policy's last rotation may leave something behind (CurrentFacts).
      this.deps.state.records.claimPolicy(m, { rotationId: this.data.rotationId, policyId: this.policy.id, startedAt: this.data.startedAt });
    }
    await also?.(m);
    await this.deps.state.records.update(this.data.rotationId, { ...patch, policyId: this.policy.id }, m);
    this.auditInto(m, { rotationId: this.data.rotationId, policyId: this.data.policyId, step, outcome, actor, message });
    return this.deps.state.commit(m);
  }

  async event(type: EngineEvent["type"], message: string, extra: Partial<EngineEvent> = {}): Promise<void> {
    try {
      await this.deps.notify(this.policy, { type, rotationId: this.data.rotationId, policyId: this.policy.id, reason: this.data.reason, message, ...extra });
    } catch (err) {
      // Notifications go through their own durable queue; failing to enqueue one must not undo a step.
      this.deps.log.error({ rotationId: this.data.rotationId, err: errorMessage(err) }, "could not enqueue notification");
    }
  }

  /** A provider call, paced; a 429 closes the gate for every worker (gateway.ts). */
  providerCall<T>(fn: () => Promise<T>): Promise<T> {
    return this.calls.call(fn);
  }

  /** A store call behind the AWS write pacing and the shared throttle gate (gateway.ts). */
  storeWrite<T>(fn: () => Promise<T>, writes = 1, reserved?: () => void): Promise<T> {
    return this.calls.storeWrite(fn, writes, reserved);
  }

  async readVersion(versionId: string): Promise<StoredVersion | undefined> {
    return this.deps.store.getVersion(this.ref, versionId, this.signal);
  }

  // ---- failure path --------------------------------------------------------------------------

  /**
   * A reset provider was asked for a new value and the value can be read back: the old credential
   * may be dead already, so giving up would leave the only live credential outside the store (I1)
   * and every consumer broken. Keep retrying the step (recoverIssued reads the value back), with
   * one needs-attention alert, until the value is stored.
   */
  resetInFlight(): boolean {
    const d = this.data;
    return !d.promotedAt && !d.failing && this.caps.issue === "reset" && d.issueStarted === true && this.provider.recoverIssued !== undefined;
  }

  async holdForRecovery(message: string, token: string | undefined): Promise<never> {
    const d = this.data;
    const retryMs = engineDefaults.cleanupRetryMs;
    const text = `${this.policy.id}: ${d.step} failed after the provider was asked for a new value: ${message}; the old credential may already be dead, so rekey keeps reading the new value back and retries every ${Math.round(retryMs / 1_000)} s until it is stored`;
    return this.attentionAndRetry(d, text, retryMs, token);
  }

  /**
   * Flag the rotation needs-attention (alert and audit once per rotation), keep it, and retry
   * the step after `retryMs` without holding a worker slot.
   */
  async attentionAndRetry(d: Data, text: string, retryMs: number, token: string | undefined): Promise<never> {
    if (!d.attentionSince) {
      await this.transition({ status: "needs-attention", message: text }, d.step, "needs-attention", text);
      await this.event("rotation.needs-attention", text, { versionId: d.rotationId });
    }
    const held: Data = { ...d, failing: undefined, attentionSince: d.attentionSince ?? this.now };
    this.data = held;
    await this.job.updateData(held);
    return parkJob(this.deps, this.job, held, this.now + retryMs, token);
  }

  /** End the rotation: record, lock, audit and notification, in that order. */
  async end(status: "completed" | "failed" | "needs-attention", text: string, audit: { step: string; outcome: string }, event: EngineEvent["type"], eventText = text, policy?: Record<string, string>): Promise<void> {
    const d = this.data;
    // Record, lock and audit in one script: a crash cannot leave the policy locked by an ended
    // rotation, or an ended rotation without its audit entry (those deferred until this write first).
    const entry = { rotationId: d.rotationId, policyId: d.policyId, step: audit.step, outcome: audit.outcome, actor: "worker", message: text };
    const entries = [...this.pendingAudit.splice(0), entry].map((e) => this.deps.audit.appendArgs(e));
    const flags = await this.deps.state.records.end(d, status, text, this.now, engineDefaults.recordTtlSec, { release: true, policy, audit: entries });
    // A leak joined this rotation and its work is not done (leakHandOffDue): the leak gets a
    // rotation of its own. Queued after the lock's release (before, it could find this rotation
    // still holding the policy and join it again). A crash before this: the failure path runs
    // again (the job data says `failing`), and a replayed completed rotation finds its record
    // ended (handOffLeakIfDue); either queues it then.
    const record = { endedAt: this.now, leak: (flags & 1) === 1, leakFollowUp: (flags & 2) === 2, status, promotedAt: d.promotedAt, reason: d.reason };
    if (leakHandOffDue(record)) eventText = `${eventText}; a leak joined this rotation: ${await this.requeueLeak()}`;
    await this.event(event, eventText, { versionId: d.rotationId });
  }

  /** A run that finds its rotation ended: queue what the end owed a leak, if a crash lost it. */
  async handOffLeakIfDue(rec?: RotationRecord): Promise<void> {
    const r = rec ?? (await this.deps.state.records.get(this.data.rotationId));
    if (r && leakHandOffDue(r)) await this.requeueLeak();
  }

  /** Queue the leak rotation that replaces or follows this one; returns what it did, in words. */
  private async requeueLeak(): Promise<string> {
    const d = this.data;
    let next: string;
    try {
      next = await this.deps.requeueLeak(d.policyId, d.rotationId);
    } catch (err) {
      // Retried: the job runs again, finds its rotation ended, and queues it then.
      throw new TransientError(`${d.policyId}: queueing the leak rotation owed by rotation ${d.rotationId} failed: ${errorMessage(err)}`);
    }
    const text = `leak rotation ${next} queued`;
    const m = this.deps.state.transaction();
    this.deps.state.records.markLeakRetry(m, d.rotationId, next);
    this.auditInto(m, { rotationId: d.rotationId, policyId: d.policyId, step: "leak.requeued", outcome: "ok", actor: "worker", message: text });
    await this.deps.state.commit(m);
    return text;
  }

  /**
   * The point of no return (a promotion, a cut-over's reset): throws CancelledError when
   * `rekey cancel` came first, so the failure path cleans up instead. `storeWriteNext`: a store
   * write follows at once (its throttle gate is read with the commit).
   */
  async commit(point: CommitPoint, opts: { storeWriteNext?: boolean } = {}): Promise<void> {
    const { rotationId } = this.data;
    // A store write follows: its throttle gate is read in the same round trip.
    const { cancel, gateUntil } = opts.storeWriteNext
      ? await this.deps.state.cancels.commitBeforeWrite(rotationId, this.now, point, this.calls.sScope)
      : { cancel: await this.deps.state.cancels.commit(rotationId, this.now, point), gateUntil: undefined };
    if (cancel) throw new CancelledError(cancelledMessage(cancel));
    if (gateUntil !== undefined) this.calls.storeGateRead(gateUntil);
  }

  /** `cancelled`: by `rekey cancel`; a human step cancelled is not one that timed out. */
  async fail(message: string, token: string | undefined, opts: { attention?: boolean; transient?: boolean; cancelled?: boolean } = {}): Promise<{ status: string }> {
    // A job still at start (its outcome is not written to the job) may have issued: the start step
    // wrote issuing's undo log to the record. A job queued by an older rekey holds no log: derived
    // once. Either is written with the marker.
    const held = this.data.undo;
    const fromRecord = held === undefined || (this.data.step === "start" && !this.data.failing && held.length === 0);
    const undo = fromRecord ? await legacyUndo(this, this.data) : held;
    let d: Data = { ...this.data, undo, failing: message, failingAttention: opts.attention || undefined, failingCancelled: opts.cancelled || undefined };
    this.data = d;
    await this.job.updateData(d);
    let mine: StoredVersion | undefined;
    if (!d.promotedAt) {
      // The store is the truth: a write whose answer was lost (or a promotion, for a version an
      // older run staged as AWSPENDING) may have made this rotation's version AWSCURRENT. Cleaning
      // up then would revoke the credential consumers are loading (found by the fault matrix).
      // Unreadable: decide later, never guess.
      try {
        mine = await this.readVersion(d.rotationId);
      } catch (err) {
        if (this.signal.aborted) throw err;
        // A store that keeps refusing (the secret deleted, the role may no longer read it) is
        // said once, as needs-attention, and the step is tried again: never a silent wait.
        if (err instanceof PermanentError) {
          return this.attentionAndRetry(d, `${this.policy.id}: ${d.step} failed (${message}), and whether version ${d.rotationId} was written cannot be read (${errorMessage(err)}); nothing is undone until the store answers — the step is retried every ${formatDuration(engineDefaults.cleanupRetryMs)}`, engineDefaults.cleanupRetryMs, token);
        }
        return parkJob(this.deps, this.job, d, this.now + engineDefaults.cleanupRetryMs, token);
      }
      if (mine?.stages.includes("AWSCURRENT")) {
        d = { ...d, promotedAt: this.now };
        this.data = d;
        await this.job.updateData(d);
      }
    }
    if (d.promotedAt) {
      // After promotion nothing is undone: the new value is current and the old one stays alive.
      // A provider that keeps failing transiently is retried soon (nothing is undone, and the old
      // credential should not outlive the rotation by long); a permanent error waits for a person.
      const retryMs = opts.transient ? engineDefaults.transientAttentionRetryMs : engineDefaults.attentionRetryMs;
      const text = `${this.policy.id}: ${d.step} failed after promotion: ${message}; ${this.cutover ? "the new value is current (the old one died at the reset)" : "the old credential is kept alive"} and the step is retried every ${formatDuration(retryMs)}`;
      return this.attentionAndRetry(d, text, retryMs, token);
    }
    // A create of this rotation that went unanswered may still land: the orphan clean-up runs once
    // it no longer can, or it could miss it (the job data says `failing`: it resumes here).
    const settledAt = this.lostCreateSettledAt(d);
    if (undo.some((e) => e.undo === "cleanup-orphans") && settledAt > this.now) {
      await this.auditStep(d.step, "waiting", `failing: ${message}; a create of this rotation went unanswered, so the clean-up runs at ${new Date(settledAt).toISOString()}, once it can no longer land`);
      return parkJob(this.deps, this.job, d, settledAt, token);
    }
    // I6: before promotion the old credential stays current. Undo what this rotation recorded.
    const cleanup: string[] = [];
    try {
      await runUndo(this, mine, cleanup);
    } catch (err) {
      if (this.signal.aborted || err instanceof PermanentError) throw err;
      // A transient failure of the cleanup (often on the job's last attempt) is retried later
      // without using an attempt: thrown, it ended the job with the record still running and the
      // policy locked, with no alert (found by the fault matrix). `failing` in the job data makes
      // the next run resume here, with what the log still holds.
      const retryAt = err instanceof RateLimitedError ? err.retryAt : this.now + engineDefaults.cleanupRetryMs;
      const at = Math.max(retryAt, this.now + 1_000);
      this.deps.log.warn({ rotationId: d.rotationId, policyId: d.policyId, err: errorMessage(err) }, "cleanup after a failed rotation failed; retrying");
      // What this run undid is said here: the run that finishes the clean-up lists only its own.
      if (cleanup.length) await this.auditStep(d.step, "cleanup", `failing: ${message}; ${cleanup.join("; ")}; the clean-up stopped (${errorMessage(err)}) with ${describeUndo(this.data.undo)} left, retried at ${new Date(at).toISOString()}`);
      return parkJob(this.deps, this.job, this.data, at, token);
    }
    d = this.data;
    const oldMayBeDead = (this.caps.issue === "reset" && d.issueStarted) || d.oldRevokedByReplace || (!this.caps.oldSurvivesIssue && this.caps.issue === "human" && d.humanRequestedAt !== undefined);
    // A human step that ended unanswered needs a person even where the old credential still works.
    // A create whose value never reached the store (unanswered, or its worker died before the
    // write) may have landed, and where such a credential cannot be found (no sweep: Snyk's client
    // secrets) no clean-up removed it: said, with the remedy.
    const unfindable = !mine && (d.issueUnanswered === true || d.issueLostAt !== undefined) && this.lostIsUnfindable;
    const status = oldMayBeDead || unfindable || opts.attention || (d.step === "awaiting-human" && !opts.cancelled) ? "needs-attention" : "failed";
    const text = `${this.policy.id}: rotation failed at ${d.step}: ${message}${cleanup.length ? ` (${cleanup.join("; ")})` : ""}; ${
      oldMayBeDead ? "the old credential may already be dead — check consumers and rotate again" : "the old credential is still current and working"
    }${unfindable ? `; a create of this rotation got no answer rekey kept (lost, or its worker died) and may have left a live credential whose value rekey never received, which it cannot list or delete: run a leak rotation (\`rekey leak --policy ${this.policy.id}\`) to replace every one` : ""}`;
    await this.end(status, text, { step: d.step, outcome: "failed" }, status === "failed" ? "rotation.failed" : "rotation.needs-attention");
    throw new UnrecoverableError(text);
  }
}
