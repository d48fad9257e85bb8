/**
 * promoting: make the new version AWSCURRENT where the one write of issuing could not (a cut-over
 * written before the store could write AWSCURRENT, a version an older run staged as AWSPENDING);
 * a cut-over is verified now. Then wait for the consumers' confirmations — or, on a leak, go
 * straight on to revoking.
 */
import { errorMessage, PermanentError, RateLimitedError } from "../../errors.ts";
import { fingerprint as keyedFingerprint } from "../../consumers/fingerprint.ts";
import type { Run, StepFn, StepOutcome } from "../run.ts";
import { waitingMessage } from "./awaiting-confirmation.ts";

export const promoting: StepFn = async (run) => {
  const d = run.data;
  const promote = async () => {
    try {
      await run.storeWrite(() => run.deps.store.promote(run.ref, d.rotationId, run.signal), 2);
    } catch (err) {
      // An error after AWS moved the label (the answer was dropped) is not a failed promotion:
      // the labels say what happened. Undoing a promotion that happened would revoke the value
      // consumers are loading (found by the fault matrix).
      if (err instanceof RateLimitedError || run.signal.aborted) {
        // Throttled: nothing moved, so the rotation may still be cancelled while it waits to retry
        // (a cut-over by API stays committed: its reset was sent).
        if (err instanceof RateLimitedError && !(run.caps.issue === "reset" && d.issueStarted)) await run.deps.state.cancels.uncommit(d.rotationId);
        throw err;
      }
      const stages = await run.deps.store.stages(run.ref, run.signal).catch(() => undefined);
      if (!stages?.[d.rotationId]?.includes("AWSCURRENT")) throw err;
      await run.auditStep("promoting", "recovered", `the promotion's answer was lost (${errorMessage(err)}), but version ${d.rotationId} is AWSCURRENT`);
    }
  };
  // The point of no return: a `rekey cancel` that came first ends the rotation here instead.
  if (d.promotedAt === undefined && !run.wroteCurrent) await run.commit("promotion", { storeWriteNext: true });
  if (!run.wroteCurrent) await (run.cutover ? run.fast(promote) : promote());
  const promotedAt = d.promotedAt ?? run.now;
  run.deps.crashAt?.("after-promote");
  // Written before it was checked (a cut-over, a leak's replace): checked now that it is current.
  if (run.cutover || d.oldRevokedByReplace) {
    // Verified once current (see issuing); a failure from here on is after promotion.
    run.data = { ...d, promotedAt };
    const value = run.issuedValue ?? (await run.readVersion(d.rotationId))?.value;
    if (value === undefined) throw new PermanentError(`version ${d.rotationId} is AWSCURRENT but holds no value`);
    await run.fast(() => run.providerCall(() => run.provider.verify(run.ctx(), value, { credentialId: d.newCredentialId, meta: d.newMeta })));
    run.deferAudit("verifying", "ok", `new credential passed the ${run.policy.provider.kind} identity check (after promotion: the old value died at the ${run.cutover ? "reset" : "replace"})`);
  }
  return promoted(run, promotedAt, undefined, `version ${d.rotationId} is AWSCURRENT${d.oldVersionId ? `; ${d.oldVersionId} is AWSPREVIOUS` : ""}`);
};

/**
 * The new version is AWSCURRENT (promoting, or the one write of issuing): record it — with the new
 * credential's id and keyed fingerprint where `value` is given (the leaked-value index) — and its
 * audit entry in one transaction, then tell the consumers; on a leak, go straight on to revoking.
 */
export async function promoted<Tx>(run: Run<Tx>, promotedAt: number, value: string | undefined, message: string, auditStep = "promoting"): Promise<StepOutcome> {
  const d = run.data;
  run.data = { ...d, promotedAt };
  const leak = d.reason === "leak";
  const required = run.policy.consumers.filter((c) => c.required).map((c) => c.id);
  const key = run.deps.fingerprintKey;
  const fp = key && value !== undefined ? keyedFingerprint(key, value) : undefined;
  const waiting = !leak && required.length ? waitingMessage(required) : undefined;
  // Listening for the rotation's wakes from before the promotion is on the record (processor.ts),
  // which names this process's channel (`listener`): then every confirmation — none is taken
  // before it — and every leak that joins after comes to this run.
  const listener = run.listenerReady ? await run.listenerReady : undefined;
  // A leak that joined this rotation before (its record's flag) is read with the transition.
  const [before] = (await run.transition(
    // The message awaitingConfirmation shows while nobody has confirmed yet, so its first look
    // finds the record as it would write it.
    {
      status: leak ? "running" : "awaiting-confirmation",
      step: leak ? "revoking" : "awaiting-confirmation",
      promotedAt,
      message: waiting,
      newCredentialId: value !== undefined ? d.newCredentialId : undefined,
      newFingerprint: fp,
      listener: listener?.id,
    },
    auditStep,
    "ok",
    message,
    "worker",
    async (m) => {
      run.deps.state.records.readBeforePromotion(m, d.rotationId);
      if (fp) await run.deps.state.fingerprints.index(fp, { policyId: run.policy.id, versionId: d.rotationId }, m);
    },
  )) as [(string | null)[]];
  const [joinedFlag, endedAt, promotedBefore, statusBefore, fpBefore] = before ?? [];
  const joined = joinedFlag === "true";
  run.leakSeen = leak || joined;
  // What awaitingConfirmation would read now: the record as just written and no confirmation,
  // where this is the rotation's first promotion (an earlier one may have been confirmed since).
  const first = promotedBefore == null && endedAt == null && statusBefore !== "awaiting-confirmation";
  run.known = !leak && listener !== undefined && first ? { rec: { leak: joined, status: "awaiting-confirmation", message: waiting, newFingerprint: fp ?? fpBefore ?? undefined }, confirmed: new Map() } : undefined;
  if (leak) {
    await run.event("rotation.leak", `${run.policy.id}: the credential leaked and was rotated; load version ${d.rotationId} of ${run.policy.target.secretId} now — the old credential is being revoked`, { versionId: d.rotationId, consumers: required });
  } else {
    await run.event("rotation.awaiting-confirmation", `${run.policy.id}: version ${d.rotationId} of ${run.policy.target.secretId} is current; load it and confirm`, { versionId: d.rotationId, consumers: required });
  }
  return { data: { ...d, promotedAt, step: leak ? "revoking" : "awaiting-confirmation" } };
}
