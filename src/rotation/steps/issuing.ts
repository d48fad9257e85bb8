/**
 * issuing (API providers): issue (or reset) the new credential, store it (I1), index its
 * fingerprint. A run that finds the value stored already (I4) picks up from there (afterStored).
 */
import { fingerprint as keyedFingerprint } from "../../consumers/fingerprint.ts";
import { errorMessage, PermanentError, RateLimitedError, TransientError, UnansweredError } from "../../errors.ts";
import type { IssuedCredential } from "../../providers/types.ts";
import { AWSPREVIOUS, type StoredVersion } from "../../stores/types.ts";
import { hedge } from "../cutover.ts";
import { engineDefaults } from "../defaults.ts";
import type { Data, Run, StepFn, StepOutcome } from "../run.ts";

export const issuing: StepFn = async (run) => {
  const d = run.data;
  // I4: the store is the truth. A version under this rotation's token means an earlier run
  // already issued and stored the value; do not issue again.
  const stored = await run.readVersion(d.rotationId);
  if (stored) return afterStored(run, stored);

  if (!run.provider.issue) throw new PermanentError(`provider ${run.policy.provider.kind} cannot issue credentials by API`);
  let issued: IssuedCredential | undefined;
  let replaced = false;
  if (run.caps.issue === "reset" && d.issueStarted && run.provider.recoverIssued) {
    // A reset already ran and its value was lost with the worker: read it back, never reset twice.
    const recovered = await run.providerCall(() => run.provider.recoverIssued!(run.ctx()));
    const old = d.oldVersionId ? await run.readVersion(d.oldVersionId) : undefined;
    if (recovered && recovered.value !== old?.value) issued = recovered;
    else if (run.now - (d.issueStartedAt ?? 0) < (run.deps.lostRequestSettleMs ?? engineDefaults.resetSettleMs)) {
      // The live value is still the old one. Either the reset never reached the provider (a
      // worker died before sending it) or it did and is still being carried out (a timed-out
      // request the provider executes later). Resetting again now could be overtaken by that
      // late reset, which would kill the value this rotation stores (found by the fault
      // matrix): read again later, and reset again only once the first could not still land.
      await run.auditStep("issuing", "waiting", "the provider still shows the old value after a reset was sent; reading it again before resetting anew");
      return { data: d, waitUntil: run.now + engineDefaults.cleanupRetryMs };
    }
  }
  if (!issued) {
    // The sweep below removes this rotation's orphans too (they carry the policy's marker), so
    // the narrower clean-up is needed only where the sweep cannot run.
    if (run.provider.cleanupOrphans && !(run.provider.sweep && d.oldCredentialId)) {
      const removed = await run.providerCall(() => run.provider.cleanupOrphans!(run.ctx(), undefined));
      if (removed.length) await run.auditStep("issuing", "cleanup", `removed ${removed.length} credential(s) an interrupted run of this rotation had issued: ${removed.join(", ")}`);
    }
    if (run.provider.sweep && d.oldCredentialId) {
      // Leftovers of earlier rotations of this policy (a request that landed after its run was
      // aborted). Only with the current credential's id known, so it can never be taken. The
      // AWSPREVIOUS version's credential stays too: live, its rotation was forgotten by Redis
      // before it could wait for the consumers (I2); this rotation's last sweep, after they
      // confirmed its own new value, removes it.
      const keepOld = d.oldCredentialId;
      const stages = await run.deps.store.stages(run.ref, run.signal);
      const keepRotations = Object.entries(stages).filter(([id, s]) => s.includes(AWSPREVIOUS) && id !== d.rotationId).map(([id]) => id);
      const swept = await run.providerCall(() => run.provider.sweep!(run.ctx(), [keepOld], { keepRotations }));
      if (swept.length) await run.auditStep("issuing", "cleanup", `removed ${swept.length} leftover credential(s) of earlier rotations: ${swept.join(", ")}`);
    }
    const old = d.oldVersionId ? await run.readVersion(d.oldVersionId) : undefined;
    if (run.caps.issue === "reset") {
      if (!d.issueStarted && !run.caps.oldSurvivesIssue) {
        // A cut-over by API: consumers hear of it before the reset, so a failure they see next
        // is explained; the new version is announced as soon as it is current.
        await run.event("rotation.cutover-pending", `${run.policy.id}: the credential is being reset; the old value stops working at once — reload ${run.policy.target.secretId} when told the new version is current`, {
          consumers: run.policy.consumers.map((c) => c.id),
        });
      }
      // The reset is the point of no return (a `rekey cancel` that came first ends it here).
      // Persist before the reset: from here on the old value may be dead (needs-attention on failure).
      if (!d.issueStarted) await run.commit("reset");
      run.data = { ...run.data, issueStarted: true, issueStartedAt: run.now };
      await run.job.updateData(run.data);
    }
    const ctx = run.ctx();
    if (d.reason === "leak" && run.caps.leakReplace && run.provider.replaceAll) {
      issued = await run.providerCall(() => run.provider.replaceAll!(ctx));
      replaced = true;
    } else {
      const oldArg = old ? { value: old.value, credentialId: d.oldCredentialId, meta: d.oldMeta } : undefined;
      try {
        issued = await run.providerCall(() => run.provider.issue!(ctx, oldArg));
      } catch (err) {
        // No answer, so perhaps carried out later: remembered (the job data is saved on the way
        // out) so the last sweep waits until such a late create can no longer land. A provider
        // that answered (even with a 5xx) was done with the request: the sweeps see its effect.
        if (run.caps.issue === "overlap" && err instanceof UnansweredError) run.data = { ...run.data, issueLostAt: run.now };
        // A cut-over whose reset got no clear answer may have killed the old value: read the
        // new one back now, not after the queue's back-off (consumers fail meanwhile). Unanswered,
        // it may still land later: read again until the budget runs out.
        // A 429 is a refusal: nothing was reset, so the next attempt may reset without waiting.
        if (err instanceof RateLimitedError) run.data = { ...run.data, issueStarted: undefined, issueStartedAt: undefined };
        if (!run.cutover || !run.provider.recoverIssued || err instanceof PermanentError || err instanceof RateLimitedError) throw err;
        issued = await readBackReset(run, old?.value, err, err instanceof UnansweredError ? engineDefaults.cutoverRetryBudgetMs : 0);
      }
    }
  }
  run.deps.crashAt?.("after-issue");
  await storeIssued(run, issued);
  run.issuedValue = issued.value;
  run.deps.crashAt?.("after-store");
  // A cut-over goes from the store write straight to promotion: the old value is dead, so
  // holding the new one back protects nothing; it is verified once current.
  const next: Data = { ...run.data, newCredentialId: issued.credentialId, newMeta: issued.meta, oldRevokedByReplace: replaced || run.data.oldRevokedByReplace, step: run.cutover ? "promoting" : "verifying" };
  const m = run.deps.state.transaction();
  await indexNew(run, issued.value, issued.credentialId, m);
  await run.deps.audit.record(
    { rotationId: d.rotationId, policyId: d.policyId, step: "issuing", outcome: "ok", actor: "worker", message: `new credential${issued.credentialId ? ` ${issued.credentialId}` : ""} issued and stored as version ${d.rotationId} (${run.wroteCurrent ? "AWSCURRENT: the old value died at the reset" : "AWSPENDING"})` },
    m,
  );
  await run.deps.state.commit(m);
  return { data: next };
};

/**
 * The value a cut-over's reset produced, read back after the reset call failed; the reset's own
 * error where the provider still shows the old value when the budget runs out.
 */
async function readBackReset<Tx>(run: Run<Tx>, oldValue: string | undefined, resetErr: unknown, budgetMs: number): Promise<IssuedCredential> {
  try {
    // Hedged reads: a read that hangs does not delay the next one (a late reset shows up then).
    return await hedge(async () => {
      const recovered = await run.providerCall(() => run.provider.recoverIssued!(run.ctx()));
      if (recovered && recovered.value !== oldValue) return recovered;
      throw new TransientError("the provider still shows the old value");
    }, { now: run.deps.now, signal: run.signal, budgetMs });
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
async function storeIssued<Tx>(run: Run<Tx>, issued: IssuedCredential): Promise<void> {
  let lastErr: unknown;
  if (run.cutover) {
    try {
      const { store } = run.deps;
      const budget = { now: run.deps.now, signal: run.signal, budgetMs: engineDefaults.cutoverRetryBudgetMs };
      // Straight to AWSCURRENT where the store can (one write); promoting skips what is done.
      // Hedged: the write is idempotent under the rotation's token, and a write that hangs (or
      // waits out the SDK's throttling back-off) would hold every consumer's outage.
      if (store.putCurrent) run.wroteCurrent = (await hedge((signal) => run.storeWrite(() => store.putCurrent!(run.ref, run.data.rotationId, issued.value, signal)), budget)).current;
      else await hedge((signal) => run.storeWrite(() => store.putPending(run.ref, run.data.rotationId, issued.value, signal)), budget);
      return;
    } catch (err) {
      lastErr = err;
    }
  }
  for (let i = 0; i < (run.cutover ? 0 : engineDefaults.storeWriteRetries); i++) {
    try {
      await run.storeWrite(() => run.deps.store.putPending(run.ref, run.data.rotationId, issued.value, run.signal));
      return;
    } catch (err) {
      lastErr = err;
      if (err instanceof PermanentError || run.signal.aborted) break;
      const wait = err instanceof RateLimitedError ? Math.min(5_000, Math.max(100, err.retryAt - run.now)) : 250 * 2 ** i;
      await run.sleep(wait);
    }
  }
  const why = errorMessage(lastErr);
  if (run.caps.issue === "overlap" && run.provider.revoke) {
    await run.providerCall(() => run.provider.revoke!(run.ctx(), { value: issued.value, credentialId: issued.credentialId, meta: issued.meta }));
    await run.auditStep("issuing", "compensated", `store write failed (${why}); the new credential was revoked again and the old one stays current`);
    if (lastErr instanceof PermanentError) throw lastErr;
    throw new TransientError(`could not store the new credential: ${why}`);
  }
  if (run.caps.issue === "reset" && run.provider.recoverIssued) throw new TransientError(`could not store the new credential (it will be read back from the provider): ${why}`);
  throw new PermanentError(`the new credential could not be stored and cannot be read back (${why}); the old credential may already be dead`);
}

/** Record the new credential's id and keyed fingerprint (the leaked-value index). */
async function indexNew<Tx>(run: Run<Tx>, value: string, credentialId: string | undefined, pipe?: Tx): Promise<void> {
  const key = run.deps.fingerprintKey;
  const patch: Record<string, string> = {};
  if (credentialId) patch.newCredentialId = credentialId;
  const m = pipe ?? run.deps.state.transaction();
  if (key) {
    const fp = keyedFingerprint(key, value);
    patch.newFingerprint = fp;
    await run.deps.state.fingerprints.index(fp, { policyId: run.policy.id, versionId: run.data.rotationId }, m);
  }
  await run.deps.state.records.update(run.data.rotationId, { ...patch, policyId: run.policy.id }, m);
  if (!pipe) await run.deps.state.commit(m);
}

export async function afterStored<Tx>(run: Run<Tx>, stored: StoredVersion): Promise<StepOutcome> {
  const d = run.data;
  let credentialId = d.newCredentialId;
  if (!credentialId) {
    const rec = await run.deps.state.records.get(d.rotationId);
    credentialId = rec?.newCredentialId;
  }
  if (!credentialId && run.caps.issue !== "human") {
    const handle = await run.providerCall(() => run.provider.identify(run.ctx(), stored.value));
    credentialId = handle.credentialId;
  }
  await indexNew(run, stored.value, credentialId);
  return { data: { ...d, newCredentialId: credentialId, step: run.cutover ? "promoting" : "verifying" } };
}
