/**
 * The BullMQ processor of rotation jobs: parse the job data, run the steps of the table
 * (steps/index.ts) from the job's cursor, and turn an error into a park (rate limit), a retry
 * (transient, attempts left) or the failure path (Run.fail).
 */
import { DelayedError, UnrecoverableError } from "bullmq";
import { AttentionError, CancelledError, errorMessage, PermanentError, RateLimitedError, RekeyError } from "../errors.ts";
import { engineDefaults, LEAK_RESUME_PRIORITY, PRIORITY } from "./defaults.ts";
import type { EngineDeps } from "./engine.ts";
import { RotationJobData } from "./job.ts";
import type { RotationJob, WakeListener } from "./ports.ts";
import { type Data, parkJob, Run } from "./run.ts";
import { cancelledMessage } from "./state/cancels.ts";
import { WAKE_CONFIRMED } from "./state/signals.ts";
import { steps } from "./steps/index.ts";
import { describeUndo } from "./undo.ts";

/**
 * Lingering: a job that reaches awaiting-confirmation keeps running for up to `ms`, listening on
 * its rotation's wake channel, before it parks; a confirmation heard meanwhile re-runs the step at
 * once (no park, no promote, no second activation). The worker runs one more job meanwhile
 * (`begin`), so a lingering job holds no slot another rotation could use.
 */
export interface Linger {
  ms: number;
  /** Room for one more lingering job (false: park at once); `end` gives it back. */
  begin(): boolean;
  end(): void;
}

/** The BullMQ processor of one rotation job (RotationEngine.process). */
export async function processRotation<Tx>(deps: EngineDeps<Tx>, sleep: (ms: number) => Promise<void>, job: RotationJob, token?: string, signal?: AbortSignal, linger?: Linger): Promise<{ status: string }> {
  const parsed = RotationJobData.safeParse(job.data);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new UnrecoverableError(`rotation job ${job.id}: invalid job data at ${first?.path.join(".") || "(root)"}: ${first?.message}`);
  }
  let data: Data = parsed.data;
  const abort = signal ?? new AbortController().signal;
  const policy = deps.policies.get(data.policyId);
  if (!policy) return policyMissing(deps, job, data, token);

  const run = new Run(deps, policy, data, job, abort, sleep);
  // Only a run that reaches awaiting-confirmation from an earlier step lingers, for a policy with
  // push consumers: one woken or re-checked there finds what it waits for, or waits long; after
  // revoking, a leak's rotation only watches its probes (watchProbes).
  const mayLinger =
    linger !== undefined && linger.ms > 0 && deps.state.wake.listen !== undefined && data.step !== "awaiting-confirmation" && policy.consumers.some((c) => c.confirm === "push");
  let before: string = data.step;
  let listener: WakeListener | undefined;
  let lingerUntil = 0;
  let lingerAsked = false;
  let lingerHeld = false;
  if (mayLinger) {
    // Listening from the run's start, so every wake after the promotion's record write (which names
    // this process's wake channel) is heard: the first look at the confirmations then needs no read
    // (Run.known, promoted()).
    run.listenerReady = deps.state.wake.listen!(data.rotationId).catch(() => undefined);
  }
  // What the run heard: confirmations extend what it knows; anything else (a leak joined, a
  // cancel) sends the step back to reading.
  const absorb = (l = listener) => {
    const heard = l?.take() ?? [];
    for (const m of heard) {
      if (m.startsWith(WAKE_CONFIRMED) && run.known) {
        const consumerId = m.slice(WAKE_CONFIRMED.length);
        if (!run.known.confirmed.has(consumerId)) run.known.confirmed.set(consumerId, { consumerId, at: deps.now(), via: "push" });
      } else run.known = undefined;
    }
  };
  // Once per run: a stopped subscription is not taken up again (a later wake finds the flag).
  let stopped: Promise<boolean> | undefined;
  const stopListening = (): Promise<boolean> =>
    (stopped ??= (async () => {
      const l = listener ?? (await run.listenerReady);
      listener = undefined;
      run.listenerReady = undefined;
      try {
        if (!l) return false;
        const heard = await l.close().catch(() => false);
        absorb(l);
        return heard;
      } finally {
        if (lingerHeld) linger?.end();
        lingerHeld = false;
      }
    })());
  try {
    if (data.failing) return await run.fail(data.failing, token, { attention: data.failingAttention, cancelled: data.failingCancelled });
    // `rekey cancel` of a job parked before its point of no return (woken by the cancel). A job at
    // "start" meets a cancel at that point instead (Run.commit): no read on a rotation's first run.
    if (data.step !== "start" && data.promotedAt === undefined) {
      const cancel = await deps.state.cancels.requested(data.rotationId);
      if (cancel) return await run.fail(cancelledMessage(cancel), token, { cancelled: true });
    }
    // The cursor the job holds: a step that hands it back unchanged needs no write.
    let saved = data;
    while (data.step !== "done") {
      abort.throwIfAborted();
      const step = data.step;
      if (step === "awaiting-confirmation" && before !== "revoking" && run.listenerReady && !lingerAsked) {
        lingerAsked = true;
        listener = await run.listenerReady;
        if (listener && linger?.begin()) {
          lingerHeld = true;
          lingerUntil = deps.now() + linger.ms;
        } else {
          // No room to linger: what was heard until the stop still counts; later wakes find the
          // flag when the job parks.
          await stopListening();
        }
      }
      absorb();
      const began = performance.now();
      const out = await steps[step](run);
      deps.observer?.stepDone(policy.id, policy.provider.kind, step, (performance.now() - began) / 1_000);
      data = out.data;
      run.data = data;
      before = step;
      if (listener && (data.step !== "awaiting-confirmation" || out.waitUntil === undefined)) void stopListening();
      if (listener && out.waitUntil !== undefined) {
        const wait = Math.min(lingerUntil, out.waitUntil) - deps.now();
        // What the run did so far is in the audit while it waits.
        await run.flushAudit();
        if (wait > 0 && (await listener.wait(wait, abort))) continue;
        abort.throwIfAborted();
        // A wake heard before the stop re-runs the step here; one that comes after it is handled
        // as unheard (the flag, which the park takes: WakeFlags).
        if (await stopListening()) continue;
      }
      // Start, verifying and the decision to revoke only read the outside truth (until
      // promotion, start finds the same current version and credential again; confirmations,
      // the leak flag and the clock only move one way): re-running one after a crash changes
      // nothing, so its outcome need not be written before the next step, which writes it
      // (one Redis round trip per rotation less, each).
      // "done" is not written either: the rotation's record ended in the same step (Run.end), and
      // a run that finds its record ended does nothing more (awaitingConfirmation, revoking).
      // Issuing that wrote AWSCURRENT is found so again by a re-run (start sees its version
      // current and the replaced one on the record; issuing reads the version back), and the park
      // that follows writes the cursor anyway.
      const rereadable =
        step === "start" || step === "verifying" || (step === "issuing" && data.promotedAt !== undefined) || (step === "awaiting-confirmation" && data.step === "revoking") || data.step === "done";
      // An undo entry a step recorded is never left to a re-run to record again: the failure path
      // of a run that never gets that far must find it (after promotion the log is never run).
      // The start step writes issuing's to the record (Run.undoOnRecord): kept there.
      const undoKept = data.promotedAt !== undefined || sameUndo(data, saved) || sameUndo(data, { undo: run.undoOnRecord });
      if ((!rereadable || !undoKept || out.waitUntil !== undefined) && data !== saved) {
        await job.updateData(data);
        saved = data;
      }
      if (out.waitUntil !== undefined) {
        await run.flushAudit();
        return await parkJob(deps, job, data, out.waitUntil, token);
      }
    }
    return { status: "completed" };
  } catch (err) {
    void stopListening();
    run.known = undefined;
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
      await deps.audit.record({ rotationId: data.rotationId, policyId: data.policyId, step: data.step, outcome: "rate-limited", actor: "worker", message: err.message });
      await job.updateData(data);
      // A leak waits out its limit ahead of the leak rotations not started yet (LEAK_RESUME_PRIORITY).
      if (data.reason === "leak" && job.changePriority && (job.priority ?? PRIORITY.leak) > LEAK_RESUME_PRIORITY) await job.changePriority({ priority: LEAK_RESUME_PRIORITY }).catch(() => undefined);
      return await parkJob(deps, job, data, until, token);
    }
    if (err instanceof CancelledError) return await run.fail(err.message, token, { cancelled: true });
    deps.observer?.stepFailed(policy.id, policy.provider.kind, data.step);
    const attempts = job.opts.attempts ?? 1;
    const lastAttempt = job.attemptsMade + 1 >= attempts;
    if (data.failing) {
      // The clean-up itself failed (the provider or the store is down): retry it with backoff.
      // When the attempts run out, say so loudly: a new credential may still be live.
      if (!lastAttempt) {
        await job.updateData(data);
        throw err;
      }
      const message = `${data.policyId}: clean-up after "${data.failing}" failed too: ${errorMessage(err)}; new credential ${data.newCredentialId ?? "(unknown id)"} may still be live — revoke it by hand (not undone: ${describeUndo(data.undo)})`;
      await run.end("needs-attention", message, { step: data.step, outcome: "needs-attention" }, "rotation.needs-attention");
      throw new UnrecoverableError(message);
    }
    const permanent = err instanceof PermanentError || !(err instanceof RekeyError || isNetworkish(err));
    if ((permanent || lastAttempt) && run.resetInFlight()) return await run.holdForRecovery(errorMessage(err), token);
    if (permanent || lastAttempt) return await run.fail(errorMessage(err), token, { attention: err instanceof AttentionError, transient: !permanent });
    deps.log.warn({ rotationId: data.rotationId, policyId: data.policyId, step: data.step, err: errorMessage(err), attempt: job.attemptsMade + 1 }, "rotation step failed; will retry");
    await job.updateData(data);
    throw err;
  } finally {
    // Whatever ended the run (a park, the end, the failure path): no subscription outlives it.
    if (mayLinger) void stopListening();
  }
}

async function policyMissing<Tx>(deps: EngineDeps<Tx>, job: RotationJob, data: Data, token: string | undefined): Promise<{ status: string }> {
  const message = `policy ${data.policyId} is no longer loaded; restore the policy file to let rotation ${data.rotationId} continue`;
  if (data.step === "start") {
    await deps.state.records.end(data, "skipped", message, deps.now(), engineDefaults.recordTtlSec);
    await deps.audit.record({ rotationId: data.rotationId, policyId: data.policyId, step: "start", outcome: "skipped", actor: "worker", message });
    return { status: "skipped" };
  }
  await deps.state.records.update(data.rotationId, { status: "needs-attention", message, policyId: data.policyId });
  return parkJob(deps, job, data, deps.now() + engineDefaults.attentionRetryMs, token);
}

function isNetworkish(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return typeof code === "string" && /^(ECONN|ETIMEDOUT|EPIPE|EAI_AGAIN|UND_ERR)/.test(code);
}

function sameUndo(a: Pick<Data, "undo">, b: Pick<Data, "undo">): boolean {
  return a.undo === b.undo || JSON.stringify(a.undo) === JSON.stringify(b.undo);
}
