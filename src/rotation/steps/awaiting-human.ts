/**
 * awaiting-human: ask the policy's owner for a new value, remind them, and give up at the
 * deadline; a submitted value (stored under the rotation's id) moves the rotation on.
 */
import { PermanentError } from "../../errors.ts";
import { formatDuration } from "../../util/duration.ts";
import { engineDefaults } from "../defaults.ts";
import type { Data, StepFn } from "../run.ts";
import { humanUndo, intend } from "../undo.ts";
import { afterStored } from "./issuing.ts";

export const awaitingHuman: StepFn = async (run) => {
  const d = run.data;
  const stored = await run.readVersion(d.rotationId);
  if (stored) return afterStored(run, stored);
  const now = run.now;
  // Per policy (`human:`), so an owner in another time zone can be given longer.
  const timeoutMs = run.policy.human?.timeout ?? engineDefaults.humanTimeoutMs;
  const remindMs = run.policy.human?.remindEvery ?? engineDefaults.humanReminderMs;
  const how = () => run.provider.instructions?.(run.policy.provider as never, { policyId: run.policy.id, rotationId: d.rotationId, successor: d.successor });
  if (!d.humanRequestedAt) {
    // A submission may be written under the rotation's version from the request on: its undo is
    // recorded and written to the job first (undo.ts).
    await intend(run, humanUndo(run));
    const steps = how();
    // The deadline is on the record for the submit links, which die with it.
    await run.deps.state.records.update(d.rotationId, { status: "awaiting-human", step: "awaiting-human", policyId: run.policy.id, humanDeadline: now + timeoutMs });
    if (!run.caps.oldSurvivesIssue) {
      // Consumers hear about a cut-over before the human acts: the old value dies at the reset.
      const consumers = run.policy.consumers.map((c) => c.id);
      await run.event(
        "rotation.cutover-pending",
        `${run.policy.id}: ${run.policy.owner} is asked to reset the credential; the old value stops working at once — reload ${run.policy.target.secretId} when told the new version is current`,
        { consumers },
      );
    }
    await run.event("human.action-required", `${run.policy.owner}: a new credential is needed for ${run.policy.id}; submit it within ${formatDuration(timeoutMs)} (rekey submit ${d.rotationId})`, {
      instructions: steps?.text,
      link: steps?.link,
    });
    await run.auditStep("awaiting-human", "requested", `instructions sent to ${run.policy.owner}`);
    const next = { ...run.data, humanRequestedAt: now, lastReminderAt: now };
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
    await run.event("human.reminder", `${run.policy.owner}: rekey is still waiting for a new credential for ${run.policy.id}; submit it before ${new Date(deadline).toISOString()} (rekey submit ${d.rotationId})`, {
      instructions: steps?.text,
      link: steps?.link,
    });
    await run.auditStep("awaiting-human", "reminded", `reminder sent to ${run.policy.owner}`);
    last = now;
    data = { ...d, lastReminderAt: now };
  }
  // Parked (no worker slot held) until the next reminder or the deadline; a submission wakes it.
  return { data, waitUntil: Math.min(last + remindMs, deadline) };
};
