/** revoking: revoke the old credential, sweep leftovers of this policy, and end the rotation. */
import { PermanentError } from "../../errors.ts";
import type { StepFn } from "../run.ts";

export const revoking: StepFn = async (run) => {
  const d = run.data;
  // The flag only words the outcome here; read in this run already, it is not read again. A
  // run that starts here reads it, and stops if the rotation already ended (its job was
  // interrupted between the end and its completion): nothing is revoked or swept twice.
  let leakSeen = run.leakSeen;
  if (leakSeen === undefined) {
    const seen = await run.deps.state.records.leakAndEnded(d.rotationId);
    if (seen.ended) {
      await run.handOffLeakIfDue();
      return { data: { ...d, step: "done" } };
    }
    leakSeen = seen.leak;
  }
  const leak = d.reason === "leak" || leakSeen;
  let what = "nothing to revoke (the old credential died when the new one was issued)";
  if (run.caps.revoke === "next-roll") what = "the old pair ages out on the next roll, which this confirmation now allows";
  if (d.oldRevokedByReplace) what = "the old credential was revoked by the compromise-mode replace";
  else if (run.caps.revoke === "api" && run.provider.revoke && d.oldVersionId) {
    // Where a credential whose value was lost cannot be found again (no sweep: Snyk's client
    // secrets cannot be listed), an unanswered create of this rotation must not land after the
    // old credential is gone (found by the fault matrix: a delayed create landed beside the new
    // secret once the old one was deleted, and the rotation completed, a live secret in no
    // version and no alert). Until it can no longer land the old one stays; landing beside the
    // old and the new one it is refused (at most two), landing earlier it made issuing refused.
    const settledAt = run.lostCreateSettledAt(d);
    if (!d.oldRevoked && run.lostIsUnfindable && d.issueLostAt !== undefined && settledAt > run.now) {
      const text = `a create of this rotation went unanswered, so the old credential is revoked at ${new Date(settledAt).toISOString()}, once that create can no longer land beside the new one`;
      await run.transition({ status: "running", step: "revoking", message: text }, "revoking", "waiting", text);
      return { data: d, waitUntil: settledAt };
    }
    if (!d.oldRevoked) {
      // A provider that revokes by id needs no value: the old version is not read.
      const old = run.provider.revokesById && d.oldCredentialId ? undefined : await run.readVersion(d.oldVersionId);
      if (!old && !d.oldCredentialId) throw new PermanentError(`the old version ${d.oldVersionId} is no longer in the store and its credential id is unknown; revoke it by hand`);
      await run.providerCall(() => run.provider.revoke!(run.ctx(), { value: old?.value ?? "", credentialId: d.oldCredentialId, meta: d.oldMeta }));
    }
    what = `old credential${d.oldCredentialId ? ` ${d.oldCredentialId}` : ""} revoked${leak ? " (leak: without waiting for consumers)" : ""}`;
  }
  // A create of this rotation that went unanswered may still land at the provider after the
  // sweep below (found by the fault matrix: a delayed create landed after completion, a live
  // token in no version). The old credential is revoked at once all the same; the sweep and the
  // end wait until such a create could no longer land.
  const settledAt = run.lostCreateSettledAt(d);
  if (run.provider.sweep && d.newCredentialId && settledAt > run.now) {
    const text = `${what}; a create of this rotation went unanswered, so leftovers are swept at ${new Date(settledAt).toISOString()}, once it can no longer land`;
    await run.transition({ status: "running", step: "revoking", message: text }, "revoking", "waiting", text);
    return { data: { ...d, oldRevoked: true }, waitUntil: settledAt };
  }
  // A create of this rotation that was aborted in flight may have landed after the retry's
  // clean-up: the new credential is the only one of this policy that stays. A rotation whose job
  // never stalled or failed issued once and got its answer (no lost create): nothing of it can
  // land late, and issuing swept what earlier rotations left (a leak's issuing always sweeps).
  // Issuing's sweep kept the AWSPREVIOUS credential, or a rotation queued again by reconcile (it
  // cannot vouch for what the run Redis forgot left): the sweep runs, so the next rotation may
  // trust `cleanAfter` and skip its own.
  const mayHaveLeftovers = !run.neverInterrupted || d.issueLostAt !== undefined || d.keptPrevious === true || d.reason === "reconcile";
  if (run.provider.sweep && d.newCredentialId && mayHaveLeftovers) {
    const keepNew = d.newCredentialId;
    const swept = await run.providerCall(() => run.provider.sweep!(run.ctx(), [keepNew]));
    if (swept.length) what += `; removed ${swept.length} leftover credential(s): ${swept.join(", ")}`;
  }
  // What the next rotation may take from this one (CurrentFacts): the version it made current,
  // that version's credential, and that nothing else of the policy is live.
  const facts: Record<string, string> = { cleanAfter: d.rotationId };
  if (d.newCredentialId) Object.assign(facts, { currentVersionId: d.rotationId, currentCredentialId: d.newCredentialId, currentMeta: JSON.stringify(d.newMeta ?? {}) });
  await run.end("completed", what, { step: "revoking", outcome: "ok" }, "rotation.completed", `${run.policy.id}: rotation completed; ${what}`, facts);
  // A leak's probe consumers are still watched after the end (watchProbes).
  const watch = leak && run.policy.consumers.some((c) => c.confirm === "probe");
  return { data: { ...d, step: watch ? "awaiting-confirmation" : "done" } };
};
