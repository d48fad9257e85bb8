/**
 * start: take the policy's lock (I3) — or, where another rotation holds it, yield: a leak joins
 * the holder, anything else is skipped — then read the current version and its credential.
 */
import { CancelledError, TransientError } from "../../errors.ts";
import type { CredentialHandle } from "../../providers/types.ts";
import { engineDefaults } from "../defaults.ts";
import type { Data, Run, StepFn, StepOutcome } from "../run.ts";
import { issueUndo, leakReplaces, withEntries } from "../undo.ts";
import { type CurrentFacts, type RotationRecord, TERMINAL } from "../state/records.ts";

export const start: StepFn = async (run) => {
  const d = run.data;
  const { state } = run.deps;
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
    jobId: String(run.job.id),
    startedAt: d.startedAt,
    updatedAt: run.now,
    leak: d.reason === "leak" ? true : undefined,
    member: d.member,
    successor: d.successor,
  };
  // A leak that finds the holder ending as it tries to join it asks for the lock again: the
  // holder has released it by then (its end and the release are one step).
  let facts: CurrentFacts | undefined;
  for (let attempt = 0; ; attempt++) {
    const claim = await state.locks.claim(record);
    let holder = claim.holder;
    facts = claim.facts;
    if (holder !== d.rotationId) {
      const other = await state.records.get(holder);
      const stale = !other || TERMINAL.has(other.status);
      if (stale && (await state.locks.takeOver(d.policyId, holder, d.rotationId))) holder = d.rotationId;
    }
    if (holder === d.rotationId) break;
    if (d.reason !== "leak") return yieldTo(run, holder);
    const joined = await state.locks.mergeLeak(d.policyId, holder, d.leakedVersionId);
    if (joined !== "no") return yieldTo(run, holder, joined === "follow-up");
    if (attempt >= 5) throw new TransientError(`${d.policyId}: rotation ${holder} holds the policy but is ending; the leak rotation will try again`);
  }

  // A lock taken over from a stale holder came without the facts: read them now.
  const [current, known] = await Promise.all([run.deps.store.getCurrent(run.ref, run.signal), facts ?? state.records.currentFacts(d.policyId)]);
  facts = known;
  if (d.reason === "reconcile" && current?.versionId !== d.rotationId) {
    // Queued again to finish version d.rotationId, which another rotation has replaced since:
    // that one revokes what is left (its last sweep). Promoting this one again would go back.
    const message = `skipped: version ${d.rotationId} is no longer AWSCURRENT (${current?.versionId ?? "no value"} is); nothing is left to finish`;
    await state.records.end(d, "skipped", message, run.now, engineDefaults.recordTtlSec, { release: true });
    await run.auditStep("start", "skipped", message, d.actor);
    return { data: { ...d, step: "done" } };
  }
  // A rotation queued again by reconcile is past its point of no return from the start: its value
  // is current, consumers may run on it. A `rekey cancel` is refused from here on; one that came
  // first ends it with nothing undone (the failure path would revoke the current credential).
  if (d.reason === "reconcile") {
    try {
      await run.commit("promotion");
    } catch (err) {
      if (!(err instanceof CancelledError)) throw err;
      const message = `${err.message}; nothing was undone: version ${d.rotationId} stays current and the previous credential live; rotate the policy once every consumer runs on it`;
      await state.records.end(d, "failed", message, run.now, engineDefaults.recordTtlSec, { release: true });
      await run.auditStep("start", "failed", message, d.actor);
      return { data: { ...d, step: "done" } };
    }
  }
  let oldVersionId = d.oldVersionId;
  let oldHandle: CredentialHandle = {};
  if (current && current.versionId !== d.rotationId) {
    oldVersionId = current.versionId;
    run.currentValue = current.value;
    // The version the last completed rotation made current is still current: its credential is
    // known (CurrentFacts), no identity call needed.
    oldHandle = facts.versionId === current.versionId ? { credentialId: facts.credentialId, meta: facts.meta } : await run.providerCall(() => run.provider.identify(run.ctx(), current.value));
    // A leak sweeps whatever it can; elsewhere nothing but the current credential was live after
    // the last rotation, and nothing of this job can have run before (Run.firstActivation).
    run.startedClean = d.reason !== "leak" && facts.cleanAfter !== undefined && facts.versionId === current.versionId && run.firstActivation;
  } else if (current && !d.oldVersionId) {
    // An earlier run of this rotation wrote its version to AWSCURRENT and stopped before the
    // cursor was saved: the version it replaced is on the record (written before the issue), and
    // its credential is found from its value.
    oldVersionId = (await state.records.get(d.rotationId))?.oldVersionId;
    const old = oldVersionId ? await run.readVersion(oldVersionId) : undefined;
    if (old) oldHandle = await run.providerCall(() => run.provider.identify(run.ctx(), old.value)).catch(() => ({}));
  }
  const next: Data = {
    ...d,
    step: run.caps.issue === "human" ? "awaiting-human" : "issuing",
    oldVersionId,
    oldCredentialId: oldHandle.credentialId ?? d.oldCredentialId,
    oldMeta: oldHandle.meta ?? d.oldMeta,
  };
  // What issuing undoes (undo.ts) is on the record with the move to it, before anything is sent:
  // issuing need not write the job first. (A human step records its own before it asks.)
  if (next.step === "issuing") next.undo = withEntries(d.undo, issueUndo(run, leakReplaces(run)));
  // Holding the lock, this rotation now speaks for the policy (claimed with the transition).
  const began =
    d.reason === "reconcile"
      ? `queued again by reconcile: version ${d.rotationId} is current and the previous credential (version ${d.oldVersionId ?? "unknown"}) was never revoked; it is revoked once every consumer confirms ${d.rotationId}`
      : `${d.reason} rotation started by ${d.actor}${next.oldVersionId ? `; replacing version ${next.oldVersionId}` : "; the secret holds no value yet"}`;
  await run.transition({ step: next.step, oldVersionId: next.oldVersionId, status: "running", undo: next.undo }, "start", "ok", began, d.actor);
  run.undoOnRecord = next.undo;
  await run.event("rotation.started", `${d.reason} rotation of ${run.policy.id} started`, { versionId: d.rotationId });
  return { data: next };
};

/** Another rotation holds the policy: a leak takes it over, anything else is skipped. */
async function yieldTo<Tx>(run: Run<Tx>, holder: string, followUp = false): Promise<StepOutcome> {
  const d = run.data;
  const { state } = run.deps;
  let message: string;
  if (d.reason === "leak") {
    // start() has set the holder's leak flag (mergeLeak).
    const other = await state.records.get(holder);
    // The wake flag covers a holder that is running right now (not delayed, so it cannot be
    // promoted): it sees the flag when it parks and resumes at once instead of after a re-check.
    await state.wake.raise(holder);
    if (other?.jobId) await run.deps.wake(other.jobId);
    message = `leak response merged into in-flight rotation ${holder}: its old credential is revoked as soon as its new one is promoted${
      followUp ? "; its new value may be the leaked one (already current), so a leak rotation of its own follows it" : ""
    }`;
    await run.deps.audit.record({ rotationId: holder, policyId: d.policyId, step: "leak.takeover", outcome: "ok", actor: d.actor, message: `taken over by leak request ${d.rotationId}` });
  } else {
    message = `skipped: rotation ${holder} of this policy is still in flight`;
  }
  await state.records.put({
    rotationId: d.rotationId,
    policyId: d.policyId,
    reason: d.reason,
    actor: d.actor,
    status: "skipped",
    step: "start",
    jobId: String(run.job.id),
    startedAt: d.startedAt,
    updatedAt: run.now,
    message,
    // Leak reports follow the rotation that does the work.
    mergedInto: d.reason === "leak" ? holder : undefined,
  });
  await state.records.end(d, "skipped", message, run.now, engineDefaults.recordTtlSec);
  await run.auditStep("start", "skipped", message, d.actor);
  return { data: { ...d, step: "done" } };
}
