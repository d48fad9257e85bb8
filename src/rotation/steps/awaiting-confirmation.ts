/**
 * awaiting-confirmation: the old credential is revoked only once every required consumer
 * confirmed (I2), or at the timeout where the policy says so; probes and usage are polled here.
 */
import { engineDefaults } from "../defaults.ts";
import type { Run, StepFn, StepOutcome } from "../run.ts";
import type { RotationRecord } from "../state/records.ts";

export function waitingMessage(consumers: string[]): string {
  return `waiting for ${consumers.join(", ")}`;
}

export const awaitingConfirmation: StepFn = async (run) => {
  const d = run.data;
  const now = run.now;
  // Known where this run promoted the version and has heard every wake since (Run.known): not ended.
  let seen: NonNullable<typeof run.known> | undefined = run.known;
  if (!seen) {
    const read = await run.deps.state.consumers.confirmationState(d.rotationId);
    // Ended already: a run that stopped between the end and the job's completion, or a leak whose
    // probe consumers are still watched (watchProbes).
    if (read.rec?.endedAt !== undefined) {
      await run.handOffLeakIfDue(read.rec);
      return (await watchProbes(run, read.rec, read.confirmed)) ?? { data: { ...d, step: "done" } };
    }
    seen = { rec: read.rec ?? {}, confirmed: read.confirmed };
  }
  const { rec, confirmed } = seen;
  run.leakSeen = rec?.leak === true;
  if (rec?.leak) {
    await run.auditStep("awaiting-confirmation", "leak", "a leak took this rotation over: revoking the old credential now");
    // Consumers were asked to load the new version at their pace; now it is urgent.
    const required = run.policy.consumers.filter((c) => c.required).map((c) => c.id);
    await run.event("rotation.leak", `${run.policy.id}: the credential leaked; load version ${d.rotationId} of ${run.policy.target.secretId} now — the old credential is being revoked without waiting for confirmations`, { versionId: d.rotationId, consumers: required });
    return { data: { ...d, step: "revoking" } };
  }
  const promotedAt = d.promotedAt ?? now;
  let nextCheck = now + engineDefaults.confirmationRecheckMs;
  // The poll time is written before the polls, so a reader never sees a probe's confirmation
  // beside the time of the poll before it.
  const probed = run.policy.consumers.filter((c) => c.confirm === "probe" && !confirmed.has(c.id)).map((c) => c.id);
  await run.deps.state.consumers.markProbed(d.rotationId, probed, now, engineDefaults.recordTtlSec);
  for (const c of run.policy.consumers) {
    if (confirmed.has(c.id)) continue;
    if (c.confirm === "probe") {
      nextCheck = Math.min(nextCheck, now + c.interval);
      if (await pollProbe(run, c, rec?.newFingerprint)) confirmed.set(c.id, { consumerId: c.id, at: now, via: "probe" });
    } else if (c.confirm === "usage" && run.provider.lastUsed && d.oldCredentialId) {
      const last = await run.providerCall(() => run.provider.lastUsed!(run.ctx(), { credentialId: d.oldCredentialId, meta: d.oldMeta }));
      const quietSince = Math.max(promotedAt, last ?? 0);
      if (now - quietSince >= c.quietFor) {
        await run.deps.state.consumers.confirm(d.rotationId, { consumerId: c.id, at: now, via: "usage" });
        await run.auditStep("confirmation", "ok", `the old credential has not been used since ${new Date(quietSince).toISOString()} (usage)`, `consumer:${c.id}`);
        confirmed.set(c.id, { consumerId: c.id, at: now, via: "usage" });
      } else {
        nextCheck = Math.min(nextCheck, quietSince + c.quietFor);
      }
    }
  }
  const waiting = run.policy.consumers.filter((c) => c.required && !confirmed.has(c.id)).map((c) => c.id);
  // I2: the old credential is revoked only once every required consumer confirmed…
  if (waiting.length === 0) {
    run.deferAudit("awaiting-confirmation", "ok", "every required consumer confirmed");
    return { data: { ...d, step: "revoking" } };
  }
  const deadline = promotedAt + run.policy.confirmation.timeout;
  if (now >= deadline) {
    // …or after the timeout where the policy says so.
    if (run.policy.confirmation.onTimeout === "revoke") {
      await run.auditStep("awaiting-confirmation", "timeout", `no confirmation from ${waiting.join(", ")}; the policy says onTimeout: revoke`);
      return { data: { ...d, step: "revoking" } };
    }
    if (!d.attentionSince) {
      const message = `${run.policy.id}: ${waiting.join(", ")} did not confirm version ${d.rotationId} within the timeout; the old credential stays alive (onTimeout: keep-old)`;
      await run.transition({ status: "needs-attention", message }, "awaiting-confirmation", "needs-attention", message);
      await run.event("rotation.needs-attention", message, { versionId: d.rotationId, consumers: waiting });
    }
    // Still watching: a consumer that catches up (a probe, a quiet old credential, a push that
    // wakes the job) ends the rotation then, not at the next attention re-check.
    return { data: { ...d, attentionSince: d.attentionSince ?? now }, waitUntil: Math.min(nextCheck, now + engineDefaults.attentionRetryMs) };
  }
  const status = d.attentionSince ? "needs-attention" : "awaiting-confirmation";
  const message = waitingMessage(waiting);
  if (rec?.status !== status || rec.message !== message) {
    await run.deps.state.records.update(d.rotationId, { status, message, policyId: run.policy.id });
    if (run.known) run.known.rec = { ...run.known.rec, status, message };
  }
  return { data: d, waitUntil: Math.min(nextCheck, deadline) };
};

/** Poll one probe consumer; a consumer that reports the new version is confirmed (and audited once). */
async function pollProbe<Tx>(run: Run<Tx>, c: { id: string; url: string }, fp: string | undefined): Promise<boolean> {
  const d = run.data;
  if (!(await probe(run, c.url, d.rotationId, fp))) return false;
  if (await run.deps.state.consumers.confirm(d.rotationId, { consumerId: c.id, at: run.now, via: "probe", versionId: d.rotationId })) {
    await run.auditStep("confirmation", "ok", `consumer ${c.id} reports version ${d.rotationId} (probe)`, `consumer:${c.id}`);
  }
  return true;
}

/**
 * A leak ends without waiting for its consumers (the old credential is revoked at once), but
 * its probe consumers are still polled until they confirm or the confirmation timeout passes,
 * so `rekey leak --incident` says who runs on the new value. The job stays parked meanwhile;
 * the rotation's record, lock and outcome are final already.
 */
async function watchProbes<Tx>(run: Run<Tx>, rec: RotationRecord, confirmed: Map<string, unknown>): Promise<StepOutcome | undefined> {
  const d = run.data;
  if (!(rec.leak || d.reason === "leak") || rec.status !== "completed" || !rec.promotedAt) return undefined;
  const now = run.now;
  const deadline = rec.promotedAt + run.policy.confirmation.timeout;
  const pending = run.policy.consumers.filter((c) => c.confirm === "probe" && !confirmed.has(c.id));
  if (now >= deadline || pending.length === 0) return undefined;
  let next = deadline;
  await run.deps.state.consumers.markProbed(d.rotationId, pending.map((c) => c.id), now, engineDefaults.recordTtlSec);
  for (const c of pending) {
    if (c.confirm !== "probe") continue;
    if (!(await pollProbe(run, c, rec.newFingerprint))) next = Math.min(next, now + c.interval);
    else confirmed.set(c.id, true);
  }
  if (pending.every((c) => confirmed.has(c.id))) return undefined;
  return { data: d, waitUntil: next };
}

async function probe<Tx>(run: Run<Tx>, url: string, versionId: string, fp: string | undefined): Promise<boolean> {
  try {
    const res = await (run.deps.fetch ?? fetch)(url, { signal: AbortSignal.any([run.signal, AbortSignal.timeout(5_000)]), headers: { accept: "application/json" } });
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
