/**
 * promoting: make the new version AWSCURRENT (a cut-over verifies it now), then wait for the
 * consumers' confirmations — or, on a leak, go straight on to revoking.
 */
import { errorMessage, PermanentError, RateLimitedError } from "../../errors.ts";
import type { StepFn } from "../run.ts";
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
  if (d.promotedAt === undefined && !run.wroteCurrent) await run.commit("promotion");
  if (!run.wroteCurrent) await (run.cutover ? run.fast(promote) : promote());
  const promotedAt = d.promotedAt ?? run.now;
  run.deps.crashAt?.("after-promote");
  if (run.cutover) {
    // Verified once current (see issuing); a failure from here on is after promotion.
    run.data = { ...d, promotedAt };
    const value = run.issuedValue ?? (await run.readVersion(d.rotationId))?.value;
    if (value === undefined) throw new PermanentError(`version ${d.rotationId} is AWSCURRENT but holds no value`);
    await run.fast(() => run.providerCall(() => run.provider.verify(run.ctx(), value, { credentialId: d.newCredentialId, meta: d.newMeta })));
    run.deferAudit("verifying", "ok", `new credential passed the ${run.policy.provider.kind} identity check (after promotion: the old value died at the reset)`);
  }
  const leak = d.reason === "leak" || (await run.deps.state.records.leakAndEnded(d.rotationId)).leak;
  run.leakSeen = leak;
  const required = run.policy.consumers.filter((c) => c.required).map((c) => c.id);
  await run.transition(
    // The message awaitingConfirmation shows while nobody has confirmed yet, so its first look
    // finds the record as it would write it.
    { status: leak ? "running" : "awaiting-confirmation", step: leak ? "revoking" : "awaiting-confirmation", promotedAt, message: !leak && required.length ? waitingMessage(required) : undefined },
    "promoting",
    "ok",
    `version ${d.rotationId} is AWSCURRENT${d.oldVersionId ? `; ${d.oldVersionId} is AWSPREVIOUS` : ""}`,
  );
  if (leak) {
    await run.event("rotation.leak", `${run.policy.id}: the credential leaked and was rotated; load version ${d.rotationId} of ${run.policy.target.secretId} now — the old credential is being revoked`, { versionId: d.rotationId, consumers: required });
  } else {
    await run.event("rotation.awaiting-confirmation", `${run.policy.id}: version ${d.rotationId} of ${run.policy.target.secretId} is current; load it and confirm`, { versionId: d.rotationId, consumers: required });
  }
  return { data: { ...d, promotedAt, step: leak ? "revoking" : "awaiting-confirmation" } };
};
