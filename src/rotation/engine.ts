/**
 * The rotation protocol: one BullMQ job per rotation, a step cursor in its data, and steps that
 * each read the outside truth (store version stages, the provider) before acting, so a step re-run
 * after a crash or a lost lock changes nothing the first run already did.
 *
 *   start -> issuing | awaiting-human -> verifying -> promoting -> awaiting-confirmation
 *         -> revoking -> done
 *   failure before promotion: the new credential is cleaned up; the old one stays current (I6)
 *   failure after promotion: needs-attention, the old credential kept alive, retried later
 *
 * The engine decides; providers and the store act. Invariants are enforced where marked (I1–I6).
 */
import { DelayedError, type Job, UnrecoverableError } from "bullmq";
import type { ChainableCommander } from "ioredis";
import { createHash } from "node:crypto";
import type { Audit, AuditEntry } from "../audit/audit.ts";
import { fingerprint as keyedFingerprint } from "../consumers/fingerprint.ts";
import { AttentionError, errorMessage, PermanentError, RateLimitedError, RekeyError, TransientError, UnansweredError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { RotationObserver } from "../observe/metrics.ts";
import type { NotificationInput } from "../notify/outbox.ts";
import type { CredentialRef, Policy, ProviderConfig } from "../policy/schema.ts";
import { paceRequests } from "../providers/http.ts";
import type { Capabilities, CredentialHandle, IssuedCredential, Provider, ProviderContext, ProviderRegistry } from "../providers/types.ts";
import type { SecretRef, SecretStore, StoredVersion } from "../stores/types.ts";
import { formatDuration } from "../util/duration.ts";
import { hedge, retryFast } from "./cutover.ts";
import { engineDefaults } from "./defaults.ts";
import { RotationJobData, type Step } from "./job.ts";
import { AWS_WRITE_HOLD_MS, AWS_WRITE_POLL_MS, CLOCK_SKEW_MS, OPEN_ADMIT_MS, ProviderPacer, type ProviderRates, RateLimiter, rateOf } from "./pacing.ts";
import { execOrThrow, leakHandOffDue, type RekeyState, type RotationRecord, TERMINAL } from "./state.ts";

/** What a step reports to the notification outbox (which adds provider, secret and time). */
export type EngineEvent = NotificationInput;

export interface PolicySource {
  get(policyId: string): Policy | undefined;
}

/** Points where fault-injection tests kill the worker (see workers/rotation-worker.ts). */
export type CrashPoint = "after-issue" | "after-store" | "after-promote";

export interface EngineDeps {
  state: RekeyState;
  audit: Audit;
  store: SecretStore;
  providers: ProviderRegistry;
  policies: PolicySource;
  resolve(ref: CredentialRef): Promise<string>;
  notify(policy: Policy, event: EngineEvent): Promise<void>;
  /** Wake a delayed job (another rotation taken over by a leak). */
  wake(jobId: string): Promise<void>;
  /**
   * Queue a leak rotation of the policy for rotation `endedRotationId`, which a leak joined and
   * which ended without finishing the leak's work (state.ts, leakHandOffDue). Idempotent per
   * ended rotation; resolves to the new rotation's id.
   */
  requeueLeak(policyId: string, endedRotationId: string): Promise<string>;
  now(): number;
  log: Logger;
  /** REKEY_FINGERPRINT_KEY: fingerprints for confirmations and the leaked-value index. */
  fingerprintKey?: string;
  fetch?: typeof fetch;
  /**
   * How long a provider may still carry out a create that went unanswered here; leftovers are
   * swept again after it. Default: 4 × the request budget, at most engineDefaults.resetSettleMs.
   */
  lostRequestSettleMs?: number;
  /** AWS write pacing (per region, shared by all workers through Redis); default 50/s. */
  awsWritesPerSecond?: number;
  /** Per-kind overrides of the documented provider limits paced proactively (pacing.ts); null turns one off. */
  providerRates?: ProviderRates;
  crashAt?: (point: CrashPoint) => void;
  sleep?: (ms: number) => Promise<void>;
  /** Step durations and failures for the metrics (src/observe/metrics.ts). */
  observer?: RotationObserver;
}

interface StepOutcome {
  data: RotationJobData;
  /** Park the job (no worker slot held) until this epoch ms. */
  waitUntil?: number;
}

/** Failure-path marker kept in job data so an interrupted cleanup resumes as cleanup. */
type Data = RotationJobData & { failing?: string; failingAttention?: boolean };

export function refOf(policy: Policy): SecretRef {
  return { secretId: policy.target.secretId, region: policy.target.region, jsonKey: policy.target.jsonKey };
}

/** Rate-limit scope of a provider: kind, host and management credential (limits are per key). */
export function providerScope(config: ProviderConfig): string {
  const host = "baseUrl" in config && config.baseUrl ? new URL(config.baseUrl).host : "crewUrl" in config ? new URL(config.crewUrl).host : "default";
  const mgmt = "management" in config ? createHash("sha256").update(JSON.stringify(config.management)).digest("hex").slice(0, 12) : "none";
  return `${config.kind}:${host}:${mgmt}`;
}

export function storeScope(ref: SecretRef): string {
  return `aws:${ref.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "default"}`;
}

export class RotationEngine {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly deps: EngineDeps) {
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** The BullMQ processor. */
  readonly process = async (job: Job, token?: string, signal?: AbortSignal): Promise<{ status: string }> => {
    const parsed = RotationJobData.safeParse(job.data);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new UnrecoverableError(`rotation job ${job.id}: invalid job data at ${first?.path.join(".") || "(root)"}: ${first?.message}`);
    }
    let data: Data = { ...parsed.data, failing: (job.data as Data).failing, failingAttention: (job.data as Data).failingAttention };
    const abort = signal ?? new AbortController().signal;
    const policy = this.deps.policies.get(data.policyId);
    if (!policy) return this.policyMissing(job, data, token);

    const run = new Run(this.deps, policy, data, job, abort, this.sleep);
    try {
      if (data.failing) return await run.fail(data.failing, token, { attention: data.failingAttention });
      // The cursor the job holds: a step that hands it back unchanged needs no write.
      let saved = data;
      while (data.step !== "done") {
        abort.throwIfAborted();
        const step = data.step;
        const began = performance.now();
        const out = await run.step(step);
        this.deps.observer?.stepDone(policy.id, policy.provider.kind, step, (performance.now() - began) / 1_000);
        data = out.data;
        run.data = data;
        // Start, verifying and the decision to revoke only read the outside truth (until
        // promotion, start finds the same current version and credential again; confirmations,
        // the leak flag and the clock only move one way): re-running one after a crash changes
        // nothing, so its outcome need not be written before the next step, which writes it
        // (one Redis round trip per rotation less, each).
        // "done" is not written either: the rotation's record ended in the same step (Run.end), and
        // a run that finds its record ended does nothing more (awaitingConfirmation, revoking).
        const rereadable = step === "start" || step === "verifying" || (step === "awaiting-confirmation" && data.step === "revoking") || data.step === "done";
        if ((!rereadable || out.waitUntil !== undefined) && data !== saved) {
          await job.updateData(data);
          saved = data;
        }
        if (out.waitUntil !== undefined) {
          await run.flushAudit();
          return await parkJob(this.deps, job, data, out.waitUntil, token);
        }
      }
      return { status: "completed" };
    } catch (err) {
      data = run.data;
      // What the run did before the error is audited whatever happens next (unless Redis is what failed).
      await run.flushAudit().catch(() => undefined);
      // DelayedError: parked. UnrecoverableError: the failure path already ran and ended the job.
      if (err instanceof DelayedError || err instanceof UnrecoverableError) throw err;
      if (abort.aborted) {
        // Lock lost or shutting down: another worker owns the job now. Save nothing more.
        throw err;
      }
      if (err instanceof RateLimitedError) {
        const until = err.retryAt + Math.floor(Math.random() * engineDefaults.rateLimitJitterMs);
        await this.deps.audit.record({ rotationId: data.rotationId, policyId: data.policyId, step: data.step, outcome: "rate-limited", actor: "worker", message: err.message });
        await job.updateData(data);
        return await parkJob(this.deps, job, data, until, token);
      }
      this.deps.observer?.stepFailed(policy.id, policy.provider.kind, data.step);
      const attempts = job.opts.attempts ?? 1;
      const lastAttempt = job.attemptsMade + 1 >= attempts;
      if (data.failing) {
        // The clean-up itself failed (the provider or the store is down): retry it with backoff.
        // When the attempts run out, say so loudly: a new credential may still be live.
        if (!lastAttempt) {
          await job.updateData(data);
          throw err;
        }
        const message = `${data.policyId}: clean-up after "${data.failing}" failed too: ${errorMessage(err)}; new credential ${data.newCredentialId ?? "(unknown id)"} may still be live — revoke it by hand`;
        await run.end("needs-attention", message, { step: data.step, outcome: "needs-attention" }, "rotation.needs-attention");
        throw new UnrecoverableError(message);
      }
      const permanent = err instanceof PermanentError || !(err instanceof RekeyError || isNetworkish(err));
      if ((permanent || lastAttempt) && run.resetInFlight()) return await run.holdForRecovery(errorMessage(err), token);
      if (permanent || lastAttempt) return await run.fail(errorMessage(err), token, { attention: err instanceof AttentionError, transient: !permanent });
      this.deps.log.warn({ rotationId: data.rotationId, policyId: data.policyId, step: data.step, err: errorMessage(err), attempt: job.attemptsMade + 1 }, "rotation step failed; will retry");
      await job.updateData(data);
      throw err;
    }
  };

  private async policyMissing(job: Job, data: Data, token: string | undefined): Promise<{ status: string }> {
    const message = `policy ${data.policyId} is no longer loaded; restore the policy file to let rotation ${data.rotationId} continue`;
    if (data.step === "start") {
      await this.deps.state.endRecord(data, "skipped", message, this.deps.now(), engineDefaults.recordTtlSec);
      await this.deps.audit.record({ rotationId: data.rotationId, policyId: data.policyId, step: "start", outcome: "skipped", actor: "worker", message });
      return { status: "skipped" };
    }
    await this.deps.state.updateRecord(data.rotationId, { status: "needs-attention", message, policyId: data.policyId });
    return parkJob(this.deps, job, data, this.deps.now() + engineDefaults.attentionRetryMs, token);
  }
}

/**
 * Park the job until `until` without holding a worker slot (and without using an attempt).
 * Confirmations wake it early: they set a wake flag and promote the delayed job.
 */
async function parkJob(deps: EngineDeps, job: Job, data: Data, until: number, token: string | undefined): Promise<never> {
  await job.moveToDelayed(Math.max(until, deps.now() + 1), token);
  // A confirmation may have arrived while this run was deciding to wait: it set the wake flag but
  // could not promote a job that was still active. Promote now so it is not missed until the next
  // re-check. The flag is consumed here; where a step reads what it waits for, it clears the flag
  // before that read (confirmationState), so a flag already answered never wakes the job again.
  if (await deps.state.takeWakeFlag(data.rotationId)) await job.promote().catch(() => undefined);
  throw new DelayedError();
}

function waitingMessage(consumers: string[]): string {
  return `waiting for ${consumers.join(", ")}`;
}

function isNetworkish(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return typeof code === "string" && /^(ECONN|ETIMEDOUT|EPIPE|EAI_AGAIN|UND_ERR)/.test(code);
}

/** One execution of one rotation job: the policy, the provider, the store, and the steps. */
class Run {
  readonly provider: Provider;
  /** The policy's provider config, as the provider runs it for this rotation's reason. */
  readonly config: ProviderConfig;
  readonly caps: Capabilities;
  readonly ref: SecretRef;
  readonly pScope: string;
  readonly sScope: string;
  readonly limiter: RateLimiter;
  /** Until when the store's throttle gate counts as open for this run (storeWrite). */
  private storeGateOpenUntil = 0;
  /** The record's leak flag as last read in this run. */
  leakSeen: boolean | undefined;
  /** The value this run issued and stored (a cut-over verifies it after promotion without re-reading it). */
  private issuedValue: string | undefined;
  /** This run's cut-over write made the new version AWSCURRENT already. */
  private wroteCurrent = false;
  /** Audit entries waiting for this run's next write (deferAudit). */
  private pendingAudit: (AuditEntry & { at: number })[] = [];

  constructor(
    readonly deps: EngineDeps,
    readonly policy: Policy,
    public data: Data,
    readonly job: Job,
    readonly signal: AbortSignal,
    readonly sleep: (ms: number) => Promise<void>,
  ) {
    this.provider = deps.providers[policy.provider.kind] as Provider;
    this.config = this.provider.rotationConfig?.(policy.provider as never, data.reason) ?? policy.provider;
    this.caps = this.provider.capabilities(this.config as never);
    this.ref = refOf(policy);
    this.pScope = providerScope(policy.provider);
    this.sScope = storeScope(this.ref);
    this.limiter = new RateLimiter(deps.state.redis, (...parts) => deps.state.key(...parts));
    // Every HTTP request a provider makes with this run's signal (ctx().signal) is paced against
    // the shared budgets (pacing.ts), so a mass rotation waits before a limit instead of
    // collecting 429s from requests already in flight.
    paceRequests(
      signal,
      new ProviderPacer({ limiter: this.limiter, scope: this.pScope, rate: rateOf(policy.provider.kind, deps.providerRates), now: deps.now, sleep, signal }),
    );
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

  /** A reset that kills the old value: from the reset on, store, promote at once, then verify. */
  get cutover(): boolean {
    return this.caps.issue === "reset" && !this.caps.oldSurvivesIssue;
  }

  /** A call on the cut-over path, retried in the worker with sub-second back-offs (cutover.ts). */
  fast<T>(fn: () => Promise<T>, budgetMs: number = engineDefaults.cutoverRetryBudgetMs): Promise<T> {
    return retryFast(fn, { now: this.deps.now, sleep: this.sleep, signal: this.signal, budgetMs });
  }

  ctx(): ProviderContext {
    return {
      config: this.config,
      policyId: this.policy.id,
      rotationId: this.data.rotationId,
      signal: this.signal,
      resolve: this.deps.resolve,
      now: this.deps.now,
      reason: this.data.reason,
      successor: this.data.successor,
    };
  }

  async auditStep(step: string, outcome: string, message?: string, actor = "worker"): Promise<void> {
    const m = this.deps.state.redis.multi();
    this.auditInto(m, { rotationId: this.data.rotationId, policyId: this.data.policyId, step, outcome, actor, message });
    await execOrThrow(m);
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
  auditInto(m: ChainableCommander, entry?: AuditEntry): void {
    for (const e of this.pendingAudit.splice(0)) void this.deps.audit.record(e, m);
    if (entry) void this.deps.audit.record(entry, m);
  }

  /** Write what deferAudit holds (before parking, and on the way out after an error). */
  async flushAudit(): Promise<void> {
    if (!this.pendingAudit.length) return;
    const m = this.deps.state.redis.multi();
    this.auditInto(m);
    await execOrThrow(m);
  }

  /** A step transition: the record patch and its audit entry in one Redis transaction. */
  async transition(patch: Partial<RotationRecord>, step: string, outcome: string, message?: string, actor = "worker"): Promise<void> {
    const m = this.deps.state.redis.multi();
    if (step === "start" && outcome === "ok") {
      m.hset(this.deps.state.key("policy", this.policy.id), { lastRotationId: this.data.rotationId, lastStatus: "running", lastStartedAt: String(this.data.startedAt) });
    }
    // The credential's age (status, metrics) counts from the promotion that made it current.
    if (patch.promotedAt !== undefined) m.hset(this.deps.state.key("policy", this.policy.id), { lastPromotedAt: String(patch.promotedAt) });
    await this.deps.state.updateRecord(this.data.rotationId, { ...patch, policyId: this.policy.id }, m);
    this.auditInto(m, { rotationId: this.data.rotationId, policyId: this.data.policyId, step, outcome, actor, message });
    await execOrThrow(m);
  }

  async event(type: EngineEvent["type"], message: string, extra: Partial<EngineEvent> = {}): Promise<void> {
    try {
      await this.deps.notify(this.policy, { type, rotationId: this.data.rotationId, policyId: this.policy.id, reason: this.data.reason, message, ...extra });
    } catch (err) {
      // Notifications go through their own durable queue; failing to enqueue one must not undo a step.
      this.deps.log.error({ rotationId: this.data.rotationId, err: errorMessage(err) }, "could not enqueue notification");
    }
  }

  /** A provider call (paced: see the constructor); a 429 closes the gate for every worker. */
  async providerCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RateLimitedError) {
        await this.deps.state.closeGate(this.pScope, err.retryAt);
        throw new RateLimitedError(this.pScope, err.retryAt, err.message);
      }
      throw err;
    }
  }

  /**
   * A store call behind the AWS write pacing and the shared throttle gate. `writes` is how many
   * quota-counted requests the call makes (promote: move AWSCURRENT, then drop AWSPENDING).
   */
  async storeWrite<T>(fn: () => Promise<T>, writes = 1): Promise<T> {
    const perSec = this.deps.awsWritesPerSecond ?? engineDefaults.awsWritesPerSecond;
    const limiter = this.limiter;
    // A sliding window (AWS counts any second, not calendar seconds) in which each write counts
    // from its reservation until its answer, then for the window: it reached AWS in between, so
    // network delay needs no margin (pacing.ts reserveHeld); only worker clock skew does.
    const rate = { limit: perSec, windowMs: 1_000 + CLOCK_SKEW_MS };
    let held: string[] = [];
    for (;;) {
      // The shared throttle gate, read again at most every OPEN_ADMIT_MS within a run (a
      // rotation's two writes come milliseconds apart); this run's own throttling resets it.
      if (this.storeGateOpenUntil <= this.now) {
        const until = await this.deps.state.gate(this.sScope);
        if (until > this.now) {
          if (until - this.now > 2_000) throw new RateLimitedError(this.sScope, until);
          await this.sleep(until - this.now);
          continue;
        }
        this.storeGateOpenUntil = this.now + OPEN_ADMIT_MS;
      }
      if (!Number.isFinite(perSec)) break;
      const r = await limiter.reserveHeld(this.sScope, writes, rate, this.now, AWS_WRITE_HOLD_MS);
      if ("held" in r) {
        held = r.held;
        break;
      }
      // Longer than the window: the slot is held by a write still in flight, which settles sooner.
      await this.sleep(r.waitMs > rate.windowMs + 1 ? AWS_WRITE_POLL_MS : r.waitMs);
    }
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RateLimitedError) {
        this.storeGateOpenUntil = 0;
        await this.deps.state.closeGate(this.sScope, err.retryAt);
      }
      throw err;
    } finally {
      await limiter.settle(this.sScope, held, this.now).catch(() => undefined);
    }
  }

  async readVersion(versionId: string): Promise<StoredVersion | undefined> {
    return this.deps.store.getVersion(this.ref, versionId, this.signal);
  }

  async step(step: Step): Promise<StepOutcome> {
    switch (step) {
      case "start":
        return this.start();
      case "issuing":
        return this.issuing();
      case "awaiting-human":
        return this.awaitingHuman();
      case "verifying":
        return this.verifying();
      case "promoting":
        return this.promoting();
      case "awaiting-confirmation":
        return this.awaitingConfirmation();
      case "revoking":
        return this.revoking();
      case "done":
        return { data: this.data };
    }
  }

  // ---- start ---------------------------------------------------------------------------------

  async start(): Promise<StepOutcome> {
    const d = this.data;
    const { state } = this.deps;
    // I3: at most one rotation in flight per policy. The record is written before the lock is
    // taken, so a holder without a record is one whose record expired long after it ended — never
    // one that took the lock a moment ago and has not written its record yet (taking that over
    // put two rotations of one policy in flight; found by the fault matrix).
    const record: RotationRecord = {
      rotationId: d.rotationId,
      policyId: d.policyId,
      reason: d.reason,
      actor: d.actor,
      status: "running",
      step: "start",
      jobId: String(this.job.id),
      startedAt: d.startedAt,
      updatedAt: this.now,
      leak: d.reason === "leak" ? true : undefined,
      member: d.member,
      successor: d.successor,
    };
    // A leak that finds the holder ending as it tries to join it asks for the lock again: the
    // holder has released it by then (its end and the release are one step).
    for (let attempt = 0; ; attempt++) {
      let holder = await state.begin(record);
      if (holder !== d.rotationId) {
        const other = await state.getRecord(holder);
        const stale = !other || TERMINAL.has(other.status);
        if (stale && (await state.takeOver(d.policyId, holder, d.rotationId))) holder = d.rotationId;
      }
      if (holder === d.rotationId) break;
      if (d.reason !== "leak") return this.yieldTo(holder);
      const joined = await state.mergeLeak(d.policyId, holder, d.leakedVersionId);
      if (joined !== "no") return this.yieldTo(holder, joined === "follow-up");
      if (attempt >= 5) throw new TransientError(`${d.policyId}: rotation ${holder} holds the policy but is ending; the leak rotation will try again`);
    }

    const current = await this.deps.store.getCurrent(this.ref, this.signal);
    let oldHandle: CredentialHandle = {};
    if (current && current.versionId !== d.rotationId) {
      oldHandle = await this.providerCall(() => this.provider.identify(this.ctx(), current.value));
    }
    const next: Data = {
      ...d,
      step: this.caps.issue === "human" ? "awaiting-human" : "issuing",
      oldVersionId: current && current.versionId !== d.rotationId ? current.versionId : d.oldVersionId,
      oldCredentialId: oldHandle.credentialId ?? d.oldCredentialId,
      oldMeta: oldHandle.meta ?? d.oldMeta,
    };
    // Holding the lock, this rotation now speaks for the policy (claimed with the transition).
    await this.transition({ step: next.step, oldVersionId: next.oldVersionId, status: "running" }, "start", "ok", `${d.reason} rotation started by ${d.actor}${next.oldVersionId ? `; replacing version ${next.oldVersionId}` : "; the secret holds no value yet"}`, d.actor);
    await this.event("rotation.started", `${d.reason} rotation of ${this.policy.id} started`, { versionId: d.rotationId });
    return { data: next };
  }

  /** Another rotation holds the policy: a leak takes it over, anything else is skipped. */
  async yieldTo(holder: string, followUp = false): Promise<StepOutcome> {
    const d = this.data;
    const { state } = this.deps;
    let message: string;
    if (d.reason === "leak") {
      // start() has set the holder's leak flag (mergeLeak).
      const other = await state.getRecord(holder);
      // The wake flag covers a holder that is running right now (not delayed, so it cannot be
      // promoted): it sees the flag when it parks and resumes at once instead of after a re-check.
      await state.raiseWakeFlag(holder);
      if (other?.jobId) await this.deps.wake(other.jobId);
      message = `leak response merged into in-flight rotation ${holder}: its old credential is revoked as soon as its new one is promoted${
        followUp ? "; its new value may be the leaked one (already current), so a leak rotation of its own follows it" : ""
      }`;
      await this.deps.audit.record({ rotationId: holder, policyId: d.policyId, step: "leak.takeover", outcome: "ok", actor: d.actor, message: `taken over by leak request ${d.rotationId}` });
    } else {
      message = `skipped: rotation ${holder} of this policy is still in flight`;
    }
    await state.putRecord({
      rotationId: d.rotationId,
      policyId: d.policyId,
      reason: d.reason,
      actor: d.actor,
      status: "skipped",
      step: "start",
      jobId: String(this.job.id),
      startedAt: d.startedAt,
      updatedAt: this.now,
      message,
      // Leak reports follow the rotation that does the work.
      mergedInto: d.reason === "leak" ? holder : undefined,
    });
    await state.endRecord(d, "skipped", message, this.now, engineDefaults.recordTtlSec);
    await this.auditStep("start", "skipped", message, d.actor);
    return { data: { ...d, step: "done" } };
  }

  // ---- issuing (API providers) ---------------------------------------------------------------

  async issuing(): Promise<StepOutcome> {
    const d = this.data;
    // I4: the store is the truth. A version under this rotation's token means an earlier run
    // already issued and stored the value; do not issue again.
    const stored = await this.readVersion(d.rotationId);
    if (stored) return this.afterStored(stored);

    if (!this.provider.issue) throw new PermanentError(`provider ${this.policy.provider.kind} cannot issue credentials by API`);
    let issued: IssuedCredential | undefined;
    let replaced = false;
    if (this.caps.issue === "reset" && d.issueStarted && this.provider.recoverIssued) {
      // A reset already ran and its value was lost with the worker: read it back, never reset twice.
      const recovered = await this.providerCall(() => this.provider.recoverIssued!(this.ctx()));
      const old = d.oldVersionId ? await this.readVersion(d.oldVersionId) : undefined;
      if (recovered && recovered.value !== old?.value) issued = recovered;
      else if (this.now - (d.issueStartedAt ?? 0) < (this.deps.lostRequestSettleMs ?? engineDefaults.resetSettleMs)) {
        // The live value is still the old one. Either the reset never reached the provider (a
        // worker died before sending it) or it did and is still being carried out (a timed-out
        // request the provider executes later). Resetting again now could be overtaken by that
        // late reset, which would kill the value this rotation stores (found by the fault
        // matrix): read again later, and reset again only once the first could not still land.
        await this.auditStep("issuing", "waiting", "the provider still shows the old value after a reset was sent; reading it again before resetting anew");
        return { data: d, waitUntil: this.now + engineDefaults.cleanupRetryMs };
      }
    }
    if (!issued) {
      // The sweep below removes this rotation's orphans too (they carry the policy's marker), so
      // the narrower clean-up is needed only where the sweep cannot run.
      if (this.provider.cleanupOrphans && !(this.provider.sweep && d.oldCredentialId)) {
        const removed = await this.providerCall(() => this.provider.cleanupOrphans!(this.ctx(), undefined));
        if (removed.length) await this.auditStep("issuing", "cleanup", `removed ${removed.length} credential(s) an interrupted run of this rotation had issued: ${removed.join(", ")}`);
      }
      if (this.provider.sweep && d.oldCredentialId) {
        // Leftovers of earlier rotations of this policy (a request that landed after its run was
        // aborted). Only with the current credential's id known, so it can never be taken.
        const keepOld = d.oldCredentialId;
        const swept = await this.providerCall(() => this.provider.sweep!(this.ctx(), [keepOld]));
        if (swept.length) await this.auditStep("issuing", "cleanup", `removed ${swept.length} leftover credential(s) of earlier rotations: ${swept.join(", ")}`);
      }
      const old = d.oldVersionId ? await this.readVersion(d.oldVersionId) : undefined;
      if (this.caps.issue === "reset") {
        if (!d.issueStarted && !this.caps.oldSurvivesIssue) {
          // A cut-over by API: consumers hear of it before the reset, so a failure they see next
          // is explained; the new version is announced as soon as it is current.
          await this.event("rotation.cutover-pending", `${this.policy.id}: the credential is being reset; the old value stops working at once — reload ${this.policy.target.secretId} when told the new version is current`, {
            consumers: this.policy.consumers.map((c) => c.id),
          });
        }
        // Persist before the reset: from here on the old value may be dead (needs-attention on failure).
        this.data = { ...this.data, issueStarted: true, issueStartedAt: this.now };
        await this.job.updateData(this.data);
      }
      const ctx = this.ctx();
      if (d.reason === "leak" && this.caps.leakReplace && this.provider.replaceAll) {
        issued = await this.providerCall(() => this.provider.replaceAll!(ctx));
        replaced = true;
      } else {
        const oldArg = old ? { value: old.value, credentialId: d.oldCredentialId, meta: d.oldMeta } : undefined;
        try {
          issued = await this.providerCall(() => this.provider.issue!(ctx, oldArg));
        } catch (err) {
          // No answer, so perhaps carried out later: remembered (the job data is saved on the way
          // out) so the last sweep waits until such a late create can no longer land. A provider
          // that answered (even with a 5xx) was done with the request: the sweeps see its effect.
          if (this.caps.issue === "overlap" && err instanceof UnansweredError) this.data = { ...this.data, issueLostAt: this.now };
          // A cut-over whose reset got no clear answer may have killed the old value: read the
          // new one back now, not after the queue's back-off (consumers fail meanwhile). Unanswered,
          // it may still land later: read again until the budget runs out.
          // A 429 is a refusal: nothing was reset, so the next attempt may reset without waiting.
          if (err instanceof RateLimitedError) this.data = { ...this.data, issueStarted: undefined, issueStartedAt: undefined };
          if (!this.cutover || !this.provider.recoverIssued || err instanceof PermanentError || err instanceof RateLimitedError) throw err;
          issued = await this.readBackReset(old?.value, err, err instanceof UnansweredError ? engineDefaults.cutoverRetryBudgetMs : 0);
        }
      }
    }
    this.deps.crashAt?.("after-issue");
    await this.storeIssued(issued);
    this.issuedValue = issued.value;
    this.deps.crashAt?.("after-store");
    // A cut-over goes from the store write straight to promotion: the old value is dead, so
    // holding the new one back protects nothing; it is verified once current.
    const next: Data = { ...this.data, newCredentialId: issued.credentialId, newMeta: issued.meta, oldRevokedByReplace: replaced || this.data.oldRevokedByReplace, step: this.cutover ? "promoting" : "verifying" };
    const m = this.deps.state.redis.multi();
    await this.indexNew(issued.value, issued.credentialId, m);
    await this.deps.audit.record(
      { rotationId: d.rotationId, policyId: d.policyId, step: "issuing", outcome: "ok", actor: "worker", message: `new credential${issued.credentialId ? ` ${issued.credentialId}` : ""} issued and stored as version ${d.rotationId} (${this.wroteCurrent ? "AWSCURRENT: the old value died at the reset" : "AWSPENDING"})` },
      m,
    );
    await m.exec();
    return { data: next };
  }

  /**
   * The value a cut-over's reset produced, read back after the reset call failed; the reset's own
   * error where the provider still shows the old value when the budget runs out.
   */
  async readBackReset(oldValue: string | undefined, resetErr: unknown, budgetMs: number): Promise<IssuedCredential> {
    try {
      // Hedged reads: a read that hangs does not delay the next one (a late reset shows up then).
      return await hedge(async () => {
        const recovered = await this.providerCall(() => this.provider.recoverIssued!(this.ctx()));
        if (recovered && recovered.value !== oldValue) return recovered;
        throw new TransientError("the provider still shows the old value");
      }, { now: this.deps.now, signal: this.signal, budgetMs });
    } catch (err) {
      if (err instanceof PermanentError) throw err;
      throw resetErr;
    }
  }

  /**
   * I1: the value exists only in memory until this write succeeds, so it is retried in-process.
   * If it cannot be stored: an overlap credential is revoked again (nothing live is lost); a reset
   * credential whose value can be read back is left for the next attempt; otherwise the rotation
   * needs attention, because the old value is already dead.
   */
  async storeIssued(issued: IssuedCredential): Promise<void> {
    let lastErr: unknown;
    if (this.cutover) {
      try {
        const { store } = this.deps;
        const budget = { now: this.deps.now, signal: this.signal, budgetMs: engineDefaults.cutoverRetryBudgetMs };
        // Straight to AWSCURRENT where the store can (one write); promoting skips what is done.
        // Hedged: the write is idempotent under the rotation's token, and a write that hangs (or
        // waits out the SDK's throttling back-off) would hold every consumer's outage.
        if (store.putCurrent) this.wroteCurrent = (await hedge((signal) => this.storeWrite(() => store.putCurrent!(this.ref, this.data.rotationId, issued.value, signal)), budget)).current;
        else await hedge((signal) => this.storeWrite(() => store.putPending(this.ref, this.data.rotationId, issued.value, signal)), budget);
        return;
      } catch (err) {
        lastErr = err;
      }
    }
    for (let i = 0; i < (this.cutover ? 0 : engineDefaults.storeWriteRetries); i++) {
      try {
        await this.storeWrite(() => this.deps.store.putPending(this.ref, this.data.rotationId, issued.value, this.signal));
        return;
      } catch (err) {
        lastErr = err;
        if (err instanceof PermanentError || this.signal.aborted) break;
        const wait = err instanceof RateLimitedError ? Math.min(5_000, Math.max(100, err.retryAt - this.now)) : 250 * 2 ** i;
        await this.sleep(wait);
      }
    }
    const why = errorMessage(lastErr);
    if (this.caps.issue === "overlap" && this.provider.revoke) {
      await this.providerCall(() => this.provider.revoke!(this.ctx(), { value: issued.value, credentialId: issued.credentialId, meta: issued.meta }));
      await this.auditStep("issuing", "compensated", `store write failed (${why}); the new credential was revoked again and the old one stays current`);
      if (lastErr instanceof PermanentError) throw lastErr;
      throw new TransientError(`could not store the new credential: ${why}`);
    }
    if (this.caps.issue === "reset" && this.provider.recoverIssued) throw new TransientError(`could not store the new credential (it will be read back from the provider): ${why}`);
    throw new PermanentError(`the new credential could not be stored and cannot be read back (${why}); the old credential may already be dead`);
  }

  /** Record the new credential's id and keyed fingerprint (the leaked-value index). */
  async indexNew(value: string, credentialId: string | undefined, pipe?: ChainableCommander): Promise<void> {
    const key = this.deps.fingerprintKey;
    const patch: Record<string, string> = {};
    if (credentialId) patch.newCredentialId = credentialId;
    const m = pipe ?? this.deps.state.redis.multi();
    if (key) {
      const fp = keyedFingerprint(key, value);
      patch.newFingerprint = fp;
      await this.deps.state.indexFingerprint(fp, { policyId: this.policy.id, versionId: this.data.rotationId }, m);
    }
    await this.deps.state.updateRecord(this.data.rotationId, { ...patch, policyId: this.policy.id }, m);
    if (!pipe) await m.exec();
  }

  async afterStored(stored: StoredVersion): Promise<StepOutcome> {
    const d = this.data;
    let credentialId = d.newCredentialId;
    if (!credentialId) {
      const rec = await this.deps.state.getRecord(d.rotationId);
      credentialId = rec?.newCredentialId;
    }
    if (!credentialId && this.caps.issue !== "human") {
      const handle = await this.providerCall(() => this.provider.identify(this.ctx(), stored.value));
      credentialId = handle.credentialId;
    }
    await this.indexNew(stored.value, credentialId);
    return { data: { ...d, newCredentialId: credentialId, step: this.cutover ? "promoting" : "verifying" } };
  }

  // ---- awaiting-human ------------------------------------------------------------------------

  async awaitingHuman(): Promise<StepOutcome> {
    const d = this.data;
    const stored = await this.readVersion(d.rotationId);
    if (stored) return this.afterStored(stored);
    const now = this.now;
    // Per policy (`human:`), so an owner in another time zone can be given longer.
    const timeoutMs = this.policy.human?.timeout ?? engineDefaults.humanTimeoutMs;
    const remindMs = this.policy.human?.remindEvery ?? engineDefaults.humanReminderMs;
    const how = () => this.provider.instructions?.(this.policy.provider as never, { policyId: this.policy.id, rotationId: d.rotationId, successor: d.successor });
    if (!d.humanRequestedAt) {
      const steps = how();
      // The deadline is on the record for the submit links, which die with it.
      await this.deps.state.updateRecord(d.rotationId, { status: "awaiting-human", step: "awaiting-human", policyId: this.policy.id, humanDeadline: now + timeoutMs });
      if (!this.caps.oldSurvivesIssue) {
        // Consumers hear about a cut-over before the human acts: the old value dies at the reset.
        const consumers = this.policy.consumers.map((c) => c.id);
        await this.event(
          "rotation.cutover-pending",
          `${this.policy.id}: ${this.policy.owner} is asked to reset the credential; the old value stops working at once — reload ${this.policy.target.secretId} when told the new version is current`,
          { consumers },
        );
      }
      await this.event("human.action-required", `${this.policy.owner}: a new credential is needed for ${this.policy.id}; submit it within ${formatDuration(timeoutMs)} (rekey submit ${d.rotationId})`, {
        instructions: steps?.text,
        link: steps?.link,
      });
      await this.auditStep("awaiting-human", "requested", `instructions sent to ${this.policy.owner}`);
      const next = { ...d, humanRequestedAt: now, lastReminderAt: now };
      return { data: next, waitUntil: now + Math.min(remindMs, timeoutMs) };
    }
    const deadline = d.humanRequestedAt + timeoutMs;
    if (now >= deadline) {
      // The rotation ends (needs-attention, see fail) and frees the policy for the next one, rather
      // than hold it for a person who may never come back.
      throw new PermanentError(`no new value was submitted within ${formatDuration(timeoutMs)}; if the credential was already reset, start a new rotation and submit that value`);
    }
    let last = d.lastReminderAt ?? d.humanRequestedAt;
    let data: Data = d;
    if (now - last >= remindMs) {
      const steps = how();
      await this.event("human.reminder", `${this.policy.owner}: rekey is still waiting for a new credential for ${this.policy.id}; submit it before ${new Date(deadline).toISOString()} (rekey submit ${d.rotationId})`, {
        instructions: steps?.text,
        link: steps?.link,
      });
      await this.auditStep("awaiting-human", "reminded", `reminder sent to ${this.policy.owner}`);
      last = now;
      data = { ...d, lastReminderAt: now };
    }
    // Parked (no worker slot held) until the next reminder or the deadline; a submission wakes it.
    return { data, waitUntil: Math.min(last + remindMs, deadline) };
  }

  // ---- verifying -----------------------------------------------------------------------------

  async verifying(): Promise<StepOutcome> {
    const d = this.data;
    const stored = await this.readVersion(d.rotationId);
    if (!stored) {
      // The pending version is gone (discarded by hand?): go back and issue again.
      return { data: { ...d, step: this.caps.issue === "human" ? "awaiting-human" : "issuing", humanRequestedAt: undefined } };
    }
    await this.providerCall(() => this.provider.verify(this.ctx(), stored.value, { credentialId: d.newCredentialId, meta: d.newMeta }));
    this.deferAudit("verifying", "ok", `new credential passed the ${this.policy.provider.kind} identity check`);
    return { data: { ...d, step: "promoting" } };
  }

  // ---- promoting -----------------------------------------------------------------------------

  async promoting(): Promise<StepOutcome> {
    const d = this.data;
    const promote = async () => {
      try {
        await this.storeWrite(() => this.deps.store.promote(this.ref, d.rotationId, this.signal), 2);
      } catch (err) {
        // An error after AWS moved the label (the answer was dropped) is not a failed promotion:
        // the labels say what happened. Undoing a promotion that happened would revoke the value
        // consumers are loading (found by the fault matrix).
        if (err instanceof RateLimitedError || this.signal.aborted) throw err;
        const stages = await this.deps.store.stages(this.ref, this.signal).catch(() => undefined);
        if (!stages?.[d.rotationId]?.includes("AWSCURRENT")) throw err;
        await this.auditStep("promoting", "recovered", `the promotion's answer was lost (${errorMessage(err)}), but version ${d.rotationId} is AWSCURRENT`);
      }
    };
    if (!this.wroteCurrent) await (this.cutover ? this.fast(promote) : promote());
    const promotedAt = d.promotedAt ?? this.now;
    this.deps.crashAt?.("after-promote");
    if (this.cutover) {
      // Verified once current (see issuing); a failure from here on is after promotion.
      this.data = { ...d, promotedAt };
      const value = this.issuedValue ?? (await this.readVersion(d.rotationId))?.value;
      if (value === undefined) throw new PermanentError(`version ${d.rotationId} is AWSCURRENT but holds no value`);
      await this.fast(() => this.providerCall(() => this.provider.verify(this.ctx(), value, { credentialId: d.newCredentialId, meta: d.newMeta })));
      this.deferAudit("verifying", "ok", `new credential passed the ${this.policy.provider.kind} identity check (after promotion: the old value died at the reset)`);
    }
    const leak = d.reason === "leak" || (await this.deps.state.leakAndEnded(d.rotationId)).leak;
    this.leakSeen = leak;
    const required = this.policy.consumers.filter((c) => c.required).map((c) => c.id);
    await this.transition(
      // The message awaitingConfirmation shows while nobody has confirmed yet, so its first look
      // finds the record as it would write it.
      { status: leak ? "running" : "awaiting-confirmation", step: leak ? "revoking" : "awaiting-confirmation", promotedAt, message: !leak && required.length ? waitingMessage(required) : undefined },
      "promoting",
      "ok",
      `version ${d.rotationId} is AWSCURRENT${d.oldVersionId ? `; ${d.oldVersionId} is AWSPREVIOUS` : ""}`,
    );
    if (leak) {
      await this.event("rotation.leak", `${this.policy.id}: the credential leaked and was rotated; load version ${d.rotationId} of ${this.policy.target.secretId} now — the old credential is being revoked`, { versionId: d.rotationId, consumers: required });
    } else {
      await this.event("rotation.awaiting-confirmation", `${this.policy.id}: version ${d.rotationId} of ${this.policy.target.secretId} is current; load it and confirm`, { versionId: d.rotationId, consumers: required });
    }
    return { data: { ...d, promotedAt, step: leak ? "revoking" : "awaiting-confirmation" } };
  }

  // ---- awaiting-confirmation -----------------------------------------------------------------

  async awaitingConfirmation(): Promise<StepOutcome> {
    const d = this.data;
    const now = this.now;
    const { rec, confirmed } = await this.deps.state.confirmationState(d.rotationId);
    // Ended already: a run that stopped between the end and the job's completion, or a leak whose
    // probe consumers are still watched (watchProbes).
    if (rec?.endedAt !== undefined) {
      await this.handOffLeakIfDue(rec);
      return (await this.watchProbes(rec, confirmed)) ?? { data: { ...d, step: "done" } };
    }
    this.leakSeen = rec?.leak === true;
    if (rec?.leak) {
      await this.auditStep("awaiting-confirmation", "leak", "a leak took this rotation over: revoking the old credential now");
      // Consumers were asked to load the new version at their pace; now it is urgent.
      const required = this.policy.consumers.filter((c) => c.required).map((c) => c.id);
      await this.event("rotation.leak", `${this.policy.id}: the credential leaked; load version ${d.rotationId} of ${this.policy.target.secretId} now — the old credential is being revoked without waiting for confirmations`, { versionId: d.rotationId, consumers: required });
      return { data: { ...d, step: "revoking" } };
    }
    const promotedAt = d.promotedAt ?? now;
    let nextCheck = now + engineDefaults.confirmationRecheckMs;
    const probed: string[] = [];
    for (const c of this.policy.consumers) {
      if (confirmed.has(c.id)) continue;
      if (c.confirm === "probe") {
        nextCheck = Math.min(nextCheck, now + c.interval);
        probed.push(c.id);
        if (await this.pollProbe(c, rec?.newFingerprint)) confirmed.set(c.id, { consumerId: c.id, at: now, via: "probe" });
      } else if (c.confirm === "usage" && this.provider.lastUsed && d.oldCredentialId) {
        const last = await this.providerCall(() => this.provider.lastUsed!(this.ctx(), { credentialId: d.oldCredentialId, meta: d.oldMeta }));
        const quietSince = Math.max(promotedAt, last ?? 0);
        if (now - quietSince >= c.quietFor) {
          await this.deps.state.confirm(d.rotationId, { consumerId: c.id, at: now, via: "usage" });
          await this.auditStep("confirmation", "ok", `the old credential has not been used since ${new Date(quietSince).toISOString()} (usage)`, `consumer:${c.id}`);
          confirmed.set(c.id, { consumerId: c.id, at: now, via: "usage" });
        } else {
          nextCheck = Math.min(nextCheck, quietSince + c.quietFor);
        }
      }
    }
    await this.deps.state.markProbed(d.rotationId, probed, now, engineDefaults.recordTtlSec);
    const waiting = this.policy.consumers.filter((c) => c.required && !confirmed.has(c.id)).map((c) => c.id);
    // I2: the old credential is revoked only once every required consumer confirmed…
    if (waiting.length === 0) {
      this.deferAudit("awaiting-confirmation", "ok", "every required consumer confirmed");
      return { data: { ...d, step: "revoking" } };
    }
    const deadline = promotedAt + this.policy.confirmation.timeout;
    if (now >= deadline) {
      // …or after the timeout where the policy says so.
      if (this.policy.confirmation.onTimeout === "revoke") {
        await this.auditStep("awaiting-confirmation", "timeout", `no confirmation from ${waiting.join(", ")}; the policy says onTimeout: revoke`);
        return { data: { ...d, step: "revoking" } };
      }
      if (!d.attentionSince) {
        const message = `${this.policy.id}: ${waiting.join(", ")} did not confirm version ${d.rotationId} within the timeout; the old credential stays alive (onTimeout: keep-old)`;
        await this.transition({ status: "needs-attention", message }, "awaiting-confirmation", "needs-attention", message);
        await this.event("rotation.needs-attention", message, { versionId: d.rotationId, consumers: waiting });
      }
      // Still watching: a consumer that catches up (a probe, a quiet old credential, a push that
      // wakes the job) ends the rotation then, not at the next attention re-check.
      return { data: { ...d, attentionSince: d.attentionSince ?? now }, waitUntil: Math.min(nextCheck, now + engineDefaults.attentionRetryMs) };
    }
    const status = d.attentionSince ? "needs-attention" : "awaiting-confirmation";
    const message = waitingMessage(waiting);
    if (rec?.status !== status || rec.message !== message) await this.deps.state.updateRecord(d.rotationId, { status, message, policyId: this.policy.id });
    return { data: d, waitUntil: Math.min(nextCheck, deadline) };
  }

  /** Poll one probe consumer; a consumer that reports the new version is confirmed (and audited once). */
  async pollProbe(c: { id: string; url: string }, fp: string | undefined): Promise<boolean> {
    const d = this.data;
    if (!(await this.probe(c.url, d.rotationId, fp))) return false;
    if (await this.deps.state.confirm(d.rotationId, { consumerId: c.id, at: this.now, via: "probe", versionId: d.rotationId })) {
      await this.auditStep("confirmation", "ok", `consumer ${c.id} reports version ${d.rotationId} (probe)`, `consumer:${c.id}`);
    }
    return true;
  }

  /**
   * A leak ends without waiting for its consumers (the old credential is revoked at once), but
   * its probe consumers are still polled until they confirm or the confirmation timeout passes,
   * so `rekey leak --incident` says who runs on the new value. The job stays parked meanwhile;
   * the rotation's record, lock and outcome are final already.
   */
  async watchProbes(rec: RotationRecord, confirmed: Map<string, unknown>): Promise<StepOutcome | undefined> {
    const d = this.data;
    if (!(rec.leak || d.reason === "leak") || rec.status !== "completed" || !rec.promotedAt) return undefined;
    const now = this.now;
    const deadline = rec.promotedAt + this.policy.confirmation.timeout;
    const pending = this.policy.consumers.filter((c) => c.confirm === "probe" && !confirmed.has(c.id));
    if (now >= deadline || pending.length === 0) return undefined;
    let next = deadline;
    const polled: string[] = [];
    for (const c of pending) {
      if (c.confirm !== "probe") continue;
      polled.push(c.id);
      if (!(await this.pollProbe(c, rec.newFingerprint))) next = Math.min(next, now + c.interval);
      else confirmed.set(c.id, true);
    }
    await this.deps.state.markProbed(d.rotationId, polled, now, engineDefaults.recordTtlSec);
    if (pending.every((c) => confirmed.has(c.id))) return undefined;
    return { data: d, waitUntil: next };
  }

  async probe(url: string, versionId: string, fp: string | undefined): Promise<boolean> {
    try {
      const res = await (this.deps.fetch ?? fetch)(url, { signal: AbortSignal.any([this.signal, AbortSignal.timeout(5_000)]), headers: { accept: "application/json" } });
      if (!res.ok) return false;
      const text = (await res.text()).trim();
      let reported: { versionId?: unknown; fingerprint?: unknown } = {};
      try {
        reported = JSON.parse(text) as typeof reported;
      } catch {
        reported = { versionId: text, fingerprint: text };
      }
      return reported.versionId === versionId || (fp !== undefined && reported.fingerprint === fp);
    } catch {
      return false;
    }
  }

  // ---- revoking ------------------------------------------------------------------------------

  async revoking(): Promise<StepOutcome> {
    const d = this.data;
    // The flag only words the outcome here; read in this run already, it is not read again. A
    // run that starts here reads it, and stops if the rotation already ended (its job was
    // interrupted between the end and its completion): nothing is revoked or swept twice.
    let leakSeen = this.leakSeen;
    if (leakSeen === undefined) {
      const seen = await this.deps.state.leakAndEnded(d.rotationId);
      if (seen.ended) {
        await this.handOffLeakIfDue();
        return { data: { ...d, step: "done" } };
      }
      leakSeen = seen.leak;
    }
    const leak = d.reason === "leak" || leakSeen;
    let what = "nothing to revoke (the old credential died when the new one was issued)";
    if (this.caps.revoke === "next-roll") what = "the old pair ages out on the next roll, which this confirmation now allows";
    if (d.oldRevokedByReplace) what = "the old credential was revoked by the compromise-mode replace";
    else if (this.caps.revoke === "api" && this.provider.revoke && d.oldVersionId) {
      if (!d.oldRevoked) {
        const old = await this.readVersion(d.oldVersionId);
        if (!old && !d.oldCredentialId) throw new PermanentError(`the old version ${d.oldVersionId} is no longer in the store and its credential id is unknown; revoke it by hand`);
        await this.providerCall(() => this.provider.revoke!(this.ctx(), { value: old?.value ?? "", credentialId: d.oldCredentialId, meta: d.oldMeta }));
      }
      what = `old credential${d.oldCredentialId ? ` ${d.oldCredentialId}` : ""} revoked${leak ? " (leak: without waiting for consumers)" : ""}`;
    }
    // A create of this rotation that went unanswered may still land at the provider after the
    // sweep below (found by the fault matrix: a delayed create landed after completion, a live
    // token in no version). The old credential is revoked at once all the same; the sweep and the
    // end wait until such a create could no longer land.
    const settledAt = this.lostCreateSettledAt(d);
    if (this.provider.sweep && d.newCredentialId && settledAt > this.now) {
      const text = `${what}; a create of this rotation went unanswered, so leftovers are swept at ${new Date(settledAt).toISOString()}, once it can no longer land`;
      await this.transition({ status: "running", step: "revoking", message: text }, "revoking", "waiting", text);
      return { data: { ...d, oldRevoked: true }, waitUntil: settledAt };
    }
    if (this.provider.sweep && d.newCredentialId) {
      // A create of this rotation that was aborted in flight may have landed after the retry's
      // clean-up: the new credential is the only one of this policy that stays.
      const keepNew = d.newCredentialId;
      const swept = await this.providerCall(() => this.provider.sweep!(this.ctx(), [keepNew]));
      if (swept.length) what += `; removed ${swept.length} leftover credential(s): ${swept.join(", ")}`;
    }
    await this.end("completed", what, { step: "revoking", outcome: "ok" }, "rotation.completed", `${this.policy.id}: rotation completed; ${what}`);
    // A leak's probe consumers are still watched after the end (watchProbes).
    const watch = leak && this.policy.consumers.some((c) => c.confirm === "probe");
    return { data: { ...d, step: watch ? "awaiting-confirmation" : "done" } };
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
  async end(status: "completed" | "failed" | "needs-attention", text: string, audit: { step: string; outcome: string }, event: EngineEvent["type"], eventText = text): Promise<void> {
    const d = this.data;
    // Record, lock and audit in one transaction: a crash cannot leave the policy locked by an
    // ended rotation, or an ended rotation without its audit entry.
    const m = this.deps.state.redis.multi();
    await this.deps.state.endRecord(d, status, text, this.now, engineDefaults.recordTtlSec, { release: true, pipe: m });
    this.auditInto(m, { rotationId: d.rotationId, policyId: d.policyId, step: audit.step, outcome: audit.outcome, actor: "worker", message: text });
    const [flags] = (await execOrThrow(m)) as [number];
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
    const r = rec ?? (await this.deps.state.getRecord(this.data.rotationId));
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
    const m = this.deps.state.redis.multi();
    m.hset(this.deps.state.key("rot", d.rotationId), { leakRetry: next });
    this.auditInto(m, { rotationId: d.rotationId, policyId: d.policyId, step: "leak.requeued", outcome: "ok", actor: "worker", message: text });
    await execOrThrow(m);
    return text;
  }

  async fail(message: string, token: string | undefined, opts: { attention?: boolean; transient?: boolean } = {}): Promise<{ status: string }> {
    let d: Data = { ...this.data, failing: message, failingAttention: opts.attention || undefined };
    this.data = d;
    await this.job.updateData(d);
    if (!d.promotedAt && d.step === "promoting") {
      // The store is the truth: a promotion whose answer was lost (dropped after AWS moved the
      // label) is a promotion. Cleaning up now would revoke the credential consumers are loading
      // (found by the fault matrix). Unreadable labels: decide later, never guess.
      const stages = await this.deps.store.stages(this.ref, this.signal).catch(() => undefined);
      if (stages === undefined) return parkJob(this.deps, this.job, d, this.now + engineDefaults.cleanupRetryMs, token);
      if (stages[d.rotationId]?.includes("AWSCURRENT")) {
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
    // A create of this rotation that went unanswered may still land: clean up once it no longer
    // can, or the clean-up below could miss it (the job data says `failing`: it resumes here).
    const settledAt = this.lostCreateSettledAt(d);
    if (this.provider.cleanupOrphans && this.caps.issue === "overlap" && settledAt > this.now) {
      await this.auditStep(d.step, "waiting", `failing: ${message}; a create of this rotation went unanswered, so the clean-up runs at ${new Date(settledAt).toISOString()}, once it can no longer land`);
      return parkJob(this.deps, this.job, d, settledAt, token);
    }
    // I6: before promotion the old credential stays current. Clean up what this rotation made.
    const cleanup: string[] = [];
    try {
      const pending = await this.readVersion(d.rotationId);
      if (pending && this.caps.issue !== "reset" && this.caps.revoke === "api" && this.provider.revoke && !d.oldRevokedByReplace) {
        await this.providerCall(() => this.provider.revoke!(this.ctx(), { value: pending.value, credentialId: d.newCredentialId, meta: d.newMeta }));
        cleanup.push(`new credential${d.newCredentialId ? ` ${d.newCredentialId}` : ""} revoked`);
      }
      if (this.provider.cleanupOrphans && this.caps.issue === "overlap" && !d.oldRevokedByReplace && d.step !== "start") {
        // A create whose answer was lost (dropped after the provider acted) left a credential no
        // version holds: before promotion nothing this rotation issued may stay live (I1).
        const removed = await this.providerCall(() => this.provider.cleanupOrphans!(this.ctx(), undefined));
        if (removed.length) cleanup.push(`removed ${removed.join(", ")} (issued by this rotation, never stored)`);
      }
      if (pending || d.step !== "start") {
        await this.storeWrite(() => this.deps.store.discardPending(this.ref, d.rotationId, this.signal));
        if (pending) cleanup.push("pending version discarded");
      }
    } catch (err) {
      if (this.signal.aborted || err instanceof PermanentError) throw err;
      // A transient failure of the cleanup (often on the job's last attempt) is retried later
      // without using an attempt: thrown, it ended the job with the record still running and the
      // policy locked, with no alert (found by the fault matrix). `failing` in the job data makes
      // the next run resume here.
      const retryAt = err instanceof RateLimitedError ? err.retryAt : this.now + engineDefaults.cleanupRetryMs;
      this.deps.log.warn({ rotationId: d.rotationId, policyId: d.policyId, err: errorMessage(err) }, "cleanup after a failed rotation failed; retrying");
      return parkJob(this.deps, this.job, d, Math.max(retryAt, this.now + 1_000), token);
    }
    const oldMayBeDead = (this.caps.issue === "reset" && d.issueStarted) || d.oldRevokedByReplace || (!this.caps.oldSurvivesIssue && this.caps.issue === "human" && d.humanRequestedAt !== undefined);
    // A human step that ended unanswered needs a person even where the old credential still works.
    const status = oldMayBeDead || opts.attention || d.step === "awaiting-human" ? "needs-attention" : "failed";
    const text = `${this.policy.id}: rotation failed at ${d.step}: ${message}${cleanup.length ? ` (${cleanup.join("; ")})` : ""}; ${
      oldMayBeDead ? "the old credential may already be dead — check consumers and rotate again" : "the old credential is still current and working"
    }`;
    await this.end(status, text, { step: d.step, outcome: "failed" }, status === "failed" ? "rotation.failed" : "rotation.needs-attention");
    throw new UnrecoverableError(text);
  }
}
