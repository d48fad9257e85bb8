/**
 * Ways a rotation is asked for (scheduler, `rekey rotate`, leak, offboarding) and the operator
 * actions on a running one (a consumer's confirmation, a human's submitted value). Used by the
 * API, the CLI and the scheduler alike, so every path is audited the same way.
 */
import { randomUUID } from "node:crypto";
import type { Queue } from "bullmq";
import type { Audit } from "../audit/audit.ts";
import { equalConstantTime, fingerprint, tokenMatches } from "../consumers/fingerprint.ts";
import { errorMessage, RateLimitedError, RekeyError, VerificationError } from "../errors.ts";
import type { NotificationInput } from "../notify/outbox.ts";
import type { Policy } from "../policy/schema.ts";
import type { SecretStore } from "../stores/types.ts";
import { type CancelOptions, type CancelResult, cancelRotation } from "./cancel.ts";
import { PRIORITY, RESUME_PRIORITY } from "./defaults.ts";
import type { PolicySource } from "./engine.ts";
import type { PolicyCalls, ProviderGateway } from "./gateway.ts";
import { type Reason, type RotationJobData } from "./job.ts";
import { leakJobId, manualJobId, scheduledJobId } from "./job-ids.ts";
import type { RekeyState } from "./state.ts";
import type { ConsumerReports } from "./state/confirmations.ts";
import type { RotationRecord } from "./state/records.ts";
import { cancelledMessage } from "./state/cancels.ts";

/** A refusal the API turns into a 4xx with this status. Never carries a value. */
export class RequestError extends RekeyError {
  override name = "RequestError";
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 422,
    message: string,
  ) {
    super(message);
  }
}

export interface RequestDeps {
  queue: Pick<Queue, "add" | "getJob" | "getJobs">;
  state: RekeyState;
  audit: Audit;
  policies: PolicySource & { all(): Policy[] };
  now(): number;
  /** Needed for human submissions. */
  store?: SecretStore;
  /** Needed for human submissions: the value is checked and stored through it, paced like the workers' calls. */
  gateway?: Pick<ProviderGateway, "open">;
  fingerprintKey?: string;
  /** Sends a notification to the policy's targets (consumer failures are alerted). */
  notify?(policy: Policy, event: NotificationInput): Promise<void>;
}

/** What a confirmation is checked against (Rotations.confirmationTarget). */
export interface ConfirmationTarget {
  policyId: string;
  /** The rotation in flight, or the leak rotation that ended without waiting; none: nothing waits. */
  rotationId?: string;
  rec?: RotationRecord;
}

export interface Enqueued {
  policyId: string;
  rotationId: string;
  jobId: string;
  /** false when a job with this id already existed (a replica or a re-run got there first). */
  added: boolean;
}

export class Rotations {
  constructor(private readonly deps: RequestDeps) {}

  private policy(policyId: string): Policy {
    const p = this.deps.policies.get(policyId);
    if (!p) throw new RequestError(404, `unknown policy "${policyId}"`);
    return p;
  }

  async enqueue(opts: { policyId: string; reason: Reason; actor: string; jobId?: string; slot?: number; member?: string; successor?: string; leakedVersionId?: string }): Promise<Enqueued> {
    this.policy(opts.policyId);
    const rotationId = randomUUID();
    const jobId =
      opts.jobId ??
      (opts.reason === "scheduled" && opts.slot !== undefined
        ? scheduledJobId(opts.policyId, opts.slot)
        : opts.reason === "leak"
          ? leakJobId(opts.policyId, rotationId)
          : manualJobId(opts.policyId, rotationId));
    const data: RotationJobData = {
      v: 1,
      rotationId,
      policyId: opts.policyId,
      reason: opts.reason,
      actor: opts.actor,
      slot: opts.slot,
      member: opts.member,
      successor: opts.successor,
      leakedVersionId: opts.leakedVersionId,
      step: "start",
      startedAt: this.deps.now(),
      undo: [],
    };
    // A job id made of this request's fresh rotation id cannot exist yet: only a given or a
    // scheduled slot's id is looked up.
    const existing = opts.jobId || opts.reason === "scheduled" ? await this.deps.queue.getJob(jobId) : undefined;
    if (existing) {
      const d = existing.data as RotationJobData;
      return { policyId: opts.policyId, rotationId: d.rotationId, jobId, added: false };
    }
    const job = await this.deps.queue.add("rotate", data, { jobId, priority: PRIORITY[opts.reason] });
    // BullMQ ignores an add whose id exists: the job returned then carries the first one's data.
    const added = (job.data as RotationJobData).rotationId === rotationId;
    if (added) {
      await this.deps.audit.record({ rotationId, policyId: opts.policyId, step: `${opts.reason}.requested`, outcome: "ok", actor: opts.actor, message: opts.slot ? `slot ${new Date(opts.slot).toISOString()}` : undefined });
    }
    return { policyId: opts.policyId, rotationId: (job.data as RotationJobData).rotationId, jobId, added };
  }

  /**
   * True when `bearer` is the token whose sha256 the policy holds for this push consumer. Reads
   * nothing but the loaded policies: an unknown policy or consumer is simply not authenticated.
   */
  authenticateConsumer(policyId: string, consumerId: string, bearer: string | undefined): boolean {
    const consumer = this.deps.policies.get(policyId)?.consumers.find((c) => c.id === consumerId);
    return Boolean(bearer && consumer?.confirm === "push" && tokenMatches(bearer, consumer.tokenHash));
  }

  /**
   * A consumer says it runs on the new version: push confirmation (POST /v1/confirmations). The
   * consumer is authenticated by `bearer` (its policy token), or was by the API (`consumer`: a
   * named consumer token for exactly this policy and consumer). Refusals write nothing: the API
   * counts them and sums an authenticated consumer's refusals into the audit once a minute.
   * `actor`: who the audit names (default `consumer:<id>`; a named token's `token:<name>`).
   */
  async confirm(opts: { policyId: string; consumerId: string; bearer?: string; consumer?: { policyId: string; consumerId: string }; actor?: string; versionId?: string; fingerprint?: string; target?: ConfirmationTarget }): Promise<{ rotationId: string; alreadyConfirmed: boolean; waitingFor: string[] }> {
    const { state, audit } = this.deps;
    const refuse = (status: RequestError["status"], message: string): never => {
      throw new RequestError(status, message);
    };
    const { policy, consumer } = this.consumerOf(opts);
    if (!opts.versionId && !opts.fingerprint) return refuse(400, "name the version you loaded: versionId or fingerprint");
    if (opts.target && opts.target.policyId !== policy.id) throw new Error(`a confirmation of ${policy.id} was given the rotation of ${opts.target.policyId} to check`);
    const { rotationId, rec } = opts.target ?? (await this.confirmationTarget(policy.id, opts.versionId));
    const nothingWaits = () => refuse(409, `no rotation of ${policy.id} is waiting for confirmations`);
    if (!rotationId || !rec) return nothingWaits();
    if (opts.fingerprint && !opts.versionId && rec.newFingerprint === undefined) {
      return refuse(409, `rotation ${rotationId} has no fingerprint to compare (rekey runs without REKEY_FINGERPRINT_KEY, or the new value is not stored yet); confirm with versionId`);
    }
    const byVersion = opts.versionId !== undefined && opts.versionId === rotationId;
    const byFingerprint = opts.fingerprint !== undefined && rec.newFingerprint !== undefined && equalConstantTime(opts.fingerprint, rec.newFingerprint);
    if (!byVersion && !byFingerprint) {
      return refuse(409, opts.versionId ? `version ${opts.versionId} is not the version rotation ${rotationId} is waiting for` : `the fingerprint does not match the new value of rotation ${rotationId}`);
    }
    if (!rec.promotedAt && rec.status !== "awaiting-confirmation") return refuse(409, `rotation ${rotationId} has not promoted its new version yet`);
    // The confirmation, its audit entry and the wake flag: one write to Redis.
    const entry = audit.appendArgs({ rotationId, policyId: policy.id, step: "confirmation", outcome: "ok", actor: opts.actor ?? `consumer:${consumer.id}`, message: `confirmed version ${rotationId} (${byVersion ? "version id" : "fingerprint"})` });
    const { added, heard, confirmed, gone } = await state.consumers.confirmPush(rotationId, { consumerId: consumer.id, at: this.deps.now(), via: "push", versionId: rotationId }, entry);
    // Its record went between the reads and the write (a Redis that lost its data): nothing waits.
    if (gone) return nothingWaits();
    if (added) {
      // Heard: the job is lingering (active) and re-reads its confirmations now; nothing to promote.
      if (!heard) await this.promoteParked(rec.jobId);
    }
    const waitingFor = policy.consumers.filter((c) => c.required && !confirmed.has(c.id)).map((c) => c.id);
    return { rotationId, alreadyConfirmed: !added, waitingFor };
  }

  /**
   * The rotation a confirmation of `policyId` is checked against, and its record: the one in
   * flight, or the leak rotation that ended without waiting. Reads only, in one round trip when
   * `versionId` names the rotation in flight (ConsumerReports.waitingRotation); the API reads it
   * beside the rate-limit counters and hands it to confirm() as `target`. `reads`: where that
   * first read goes (the API's pipelined connection, so it leaves with the counts in one write).
   */
  async confirmationTarget(policyId: string, versionId?: string, reads: ConsumerReports = this.deps.state.consumers): Promise<ConfirmationTarget> {
    const waiting = await reads.waitingRotation(policyId, versionId);
    if (waiting.rotationId) return { policyId, ...waiting };
    const leak = await this.lastLeakRotation(policyId);
    return { policyId, rotationId: leak, rec: leak ? await this.deps.state.records.get(leak) : undefined };
  }

  /**
   * Who is calling, for the consumer endpoints: the policy's push consumer whose token the bearer
   * matches, or the one the API vouches for (`consumer`: a named consumer token for exactly this
   * policy and consumer). One answer whether the policy or consumer exists or not (ids are not for
   * outsiders to probe), and a refusal writes nothing: the API counts it.
   */
  private consumerOf(opts: { policyId: string; consumerId: string; bearer?: string; consumer?: { policyId: string; consumerId: string } }): { policy: Policy; consumer: Extract<Policy["consumers"][number], { confirm: "push" }> } {
    const vouched = opts.consumer?.policyId === opts.policyId && opts.consumer.consumerId === opts.consumerId;
    if (!vouched && !this.authenticateConsumer(opts.policyId, opts.consumerId, opts.bearer)) throw new RequestError(401, "unauthenticated: bad or missing bearer token for this consumer");
    const policy = this.deps.policies.get(opts.policyId);
    if (!policy) throw new RequestError(404, `unknown policy "${opts.policyId}"`);
    const consumer = policy.consumers.find((c) => c.id === opts.consumerId);
    if (!consumer || consumer.confirm !== "push") throw new RequestError(403, `policy ${policy.id} has no push consumer "${opts.consumerId}"`);
    return { policy, consumer };
  }

  /**
   * A consumer could not take the new version (its reload command or health check failed, its
   * change handler threw): POST /v1/consumer-failures. Nothing about the rotation changes — it
   * keeps waiting and the old credential stays alive — but the failure is audited, shown by
   * `rekey status` on the rotation it concerns, and sent to the policy's notify targets.
   */
  async reportFailure(opts: { policyId: string; consumerId: string; bearer?: string; consumer?: { policyId: string; consumerId: string }; actor?: string; versionId?: string; stage: string; message: string }): Promise<{ rotationId?: string; recorded: boolean }> {
    const { policy, consumer } = this.consumerOf(opts);
    // eslint-disable-next-line no-control-regex -- a consumer's text must not steer a terminal
    const message = opts.message.replace(/[\u0000-\u001f\u007f-\u009f]+/g, " ").trim().slice(0, 500) || "(no message)";
    const now = this.deps.now();
    // The rotation the report is about: the one in flight (or the leak rotation that ended
    // without waiting), when the consumer names no version or names its version.
    const rotationId = (await this.deps.state.locks.inFlight(policy.id)) ?? (await this.lastLeakRotation(policy.id));
    const concerns = rotationId !== undefined && (opts.versionId === undefined || opts.versionId === rotationId);
    if (concerns) await this.deps.state.consumers.recordFailure(rotationId, { consumerId: consumer.id, stage: opts.stage, message, at: now, versionId: opts.versionId });
    const text = `consumer ${consumer.id} failed to load ${opts.versionId ? `version ${opts.versionId}` : "the current version"} (${opts.stage}): ${message}`;
    await this.deps.audit.record({ rotationId: concerns ? rotationId : undefined, policyId: policy.id, step: "consumer-failure", outcome: "failed", actor: opts.actor ?? `consumer:${consumer.id}`, message: text });
    const reason = concerns ? (await this.deps.state.records.get(rotationId))?.reason : undefined;
    try {
      await this.deps.notify?.(policy, {
        type: "rotation.consumer-failed",
        rotationId: concerns ? rotationId : (opts.versionId ?? "none"),
        policyId: policy.id,
        // The rotation's own reason; a report outside any rotation says so.
        reason: reason ?? "no-rotation",
        message: `${policy.id}: ${text}; the old credential stays alive until it confirms`,
        versionId: opts.versionId,
        consumers: [consumer.id],
        stage: opts.stage,
      });
    } catch {
      // The report is recorded and audited; a notification queue that is down does not undo it.
    }
    return { rotationId: concerns ? rotationId : undefined, recorded: concerns };
  }

  /**
   * A leak rotation revokes the old credential without waiting, then ends: consumers still confirm
   * afterwards, and the leak report shows who has and who has not loaded the new value.
   */
  private async lastLeakRotation(policyId: string): Promise<string | undefined> {
    const last = (await this.deps.state.records.policySummary(policyId)).lastRotationId;
    let rec = last ? await this.deps.state.records.get(last) : undefined;
    if (rec?.mergedInto) rec = await this.deps.state.records.get(rec.mergedInto);
    return rec?.leak && rec.status === "completed" ? rec.rotationId : undefined;
  }

  /** `rekey cancel`: see cancel.ts. */
  async cancel(opts: CancelOptions): Promise<CancelResult> {
    return cancelRotation(this.deps, (rotationId, jobId) => this.wake(rotationId, jobId), opts);
  }

  /** Wake a parked rotation now (a confirmation, a submission or a cancel arrived). */
  async wake(rotationId: string, jobId: string): Promise<void> {
    if (!(await this.deps.state.wake.raise(rotationId))) await this.promoteParked(jobId);
  }

  /**
   * A wake that reached a worker process after its run stopped listening (WakeFlags.unheard): its
   * sender counted it as heard and promoted nothing, so promote the parked job now, as the sender
   * does when nobody hears a wake. The flag is up already.
   */
  async wakeUnheard(rotationId: string): Promise<void> {
    const rec = await this.deps.state.records.get(rotationId);
    if (rec?.jobId) await this.promoteParked(rec.jobId);
  }

  /** Queue a parked (delayed) rotation job now, ahead of rotations not started yet. */
  private async promoteParked(jobId: string): Promise<void> {
    const job = await this.deps.queue.getJob(jobId);
    if (!job) return;
    // The priority a delayed job holds is the one promote() queues it with. Both calls are
    // refused harmlessly when the job is not delayed (it is running, and sees the wake flag).
    if (job.priority > RESUME_PRIORITY) await job.changePriority({ priority: RESUME_PRIORITY }).catch(() => undefined);
    await job.promote().catch(() => undefined);
  }

  /**
   * A human submits the new value of a human-step rotation. It is verified before it is stored;
   * a wrong value is refused with the reason and the rotation keeps waiting.
   */
  async submit(opts: { rotationId: string; value: string; actor: string }): Promise<{ policyId: string; versionId: string }> {
    const { state, audit, store, gateway } = this.deps;
    if (!store || !gateway) throw new Error("submit needs the store and the provider gateway");
    const rec = await state.records.get(opts.rotationId);
    if (!rec) throw new RequestError(404, `unknown rotation ${opts.rotationId}`);
    const policy = this.policy(rec.policyId);
    if (rec.status !== "awaiting-human") throw new RequestError(409, `rotation ${opts.rotationId} is not waiting for a value (status: ${rec.status})`);
    const value = opts.value.trim();
    if (!value) throw new RequestError(400, "the submitted value is empty");
    // The old value still passes the provider's check until the owner resets it (and forever where
    // the old one survives issue): storing it would end the rotation with nothing rotated.
    const calls = gateway.open(policy, { rotationId: opts.rotationId, reason: rec.reason as Reason, successor: rec.successor, timeoutMs: 30_000 });
    const current = await store.getCurrent(calls.ref);
    if (current && equalConstantTime(current.value, value)) {
      const why = `that is the current value of ${policy.target.secretId} (version ${current.versionId}), not a new one: follow the instructions to get a new credential and submit that; the rotation keeps waiting`;
      await audit.record({ rotationId: rec.rotationId, policyId: policy.id, step: "submit", outcome: "refused", actor: opts.actor, message: why });
      throw new RequestError(422, why);
    }
    const { provider } = calls;
    try {
      await calls.call(() => provider.verify(calls.ctx(), value, {}));
    } catch (err) {
      const why = errorMessage(err);
      await audit.record({ rotationId: rec.rotationId, policyId: policy.id, step: "submit", outcome: "refused", actor: opts.actor, message: why });
      if (err instanceof VerificationError || (err as { status?: number }).status === 401) throw new RequestError(422, `the submitted value did not pass the ${policy.provider.kind} check: ${why}; the rotation keeps waiting`);
      throw err;
    }
    const handle = await calls.call(() => provider.identify(calls.ctx(), value)).catch(() => ({ credentialId: undefined }));
    // The human step may have timed out while the value was checked: that rotation is over.
    const ended = () => new RequestError(409, `rotation ${opts.rotationId} ended while the value was being checked (its human step timed out); start a new rotation and submit the value there`);
    if ((await state.records.get(opts.rotationId))?.endedAt !== undefined) throw ended();
    const written = await this.writeSubmitted(store, calls, opts.rotationId, value, opts.actor);
    if ((await state.records.get(opts.rotationId))?.endedAt !== undefined) {
      if (!written.current) {
        await calls.storeWrite(() => store.discardPending(calls.ref, opts.rotationId));
        throw ended();
      }
      throw new RequestError(
        409,
        `rotation ${opts.rotationId} ended while the value was being written (its human step timed out); the value is current all the same (version ${opts.rotationId}): tell the consumers of ${policy.target.secretId} to load it`,
      );
    }
    const patch: Record<string, string> = {};
    if (handle.credentialId) patch.newCredentialId = handle.credentialId;
    if (this.deps.fingerprintKey) {
      const fp = fingerprint(this.deps.fingerprintKey, value);
      patch.newFingerprint = fp;
      await state.fingerprints.index(fp, { policyId: policy.id, versionId: opts.rotationId });
    }
    await state.records.update(opts.rotationId, { ...patch, status: "running", step: written.current ? "promoting" : "verifying", policyId: policy.id });
    await audit.record({ rotationId: rec.rotationId, policyId: policy.id, step: "submit", outcome: "ok", actor: opts.actor, message: `new value verified and written as version ${opts.rotationId} (${written.current ? "AWSCURRENT" : "AWSPENDING"})` });
    await this.wake(rec.rotationId, rec.jobId);
    return { policyId: policy.id, versionId: opts.rotationId };
  }

  /**
   * A verified submission's one write: straight to AWSCURRENT where the store can (AWSPREVIOUS
   * follows the old version; the rotation's id as its ClientRequestToken), which is the rotation's
   * point of no return — a `rekey cancel` that came first wins, and a write that surely did not
   * land (refused, or not there when read back) gives the point back. The rotation records the
   * promotion when it wakes.
   */
  private async writeSubmitted(store: SecretStore, calls: PolicyCalls, rotationId: string, value: string, actor: string): Promise<{ current: boolean }> {
    const { state, audit } = this.deps;
    const putCurrent = store.putCurrent?.bind(store);
    if (!putCurrent) {
      await calls.storeWrite(() => store.putPending(calls.ref, rotationId, value));
      return { current: false };
    }
    const cancel = await state.cancels.commit(rotationId, this.deps.now(), "promotion");
    if (cancel) {
      const why = `rotation ${rotationId} was ${cancelledMessage(cancel)} before the value was written: nothing was stored, the old credential stays current; if the credential was already reset, start a new rotation and submit the value there`;
      await audit.record({ rotationId, policyId: calls.policy.id, step: "submit", outcome: "refused", actor, message: why });
      throw new RequestError(409, why);
    }
    try {
      return await calls.storeWrite(() => putCurrent(calls.ref, rotationId, value));
    } catch (err) {
      const landed = err instanceof RateLimitedError ? undefined : await store.getVersion(calls.ref, rotationId).catch(() => null);
      // Unreadable (null): whether it landed is unknown, so the point of no return stays passed.
      if (landed === undefined) await state.cancels.uncommit(rotationId);
      else if (landed && equalConstantTime(landed.value, value)) return { current: landed.stages.includes("AWSCURRENT") };
      throw err;
    }
  }
}
