/**
 * issuing (API providers). Overlap: issue the new credential beside the old one, verify it while
 * its value is in memory, then ONE store write straight to AWSCURRENT (AWSPREVIOUS follows the old
 * version by itself) — the write is the promotion. Reset (cut-over): reset, write AWSCURRENT at
 * once, verify after (promoting). A run that may follow an earlier one of this job reads the store
 * first (I4): a version under the rotation's id means the value was issued, verified and written.
 */
import { fingerprint as keyedFingerprint } from "../../consumers/fingerprint.ts";
import { CancelledError, errorMessage, PermanentError, RateLimitedError, SecretQuotaError, TransientError, UnansweredError } from "../../errors.ts";
import type { IssuedCredential } from "../../providers/types.ts";
import { AWSPREVIOUS, type StoredVersion } from "../../stores/types.ts";
import { hedge } from "../cutover.ts";
import { engineDefaults } from "../defaults.ts";
import type { Data, Run, StepFn, StepOutcome } from "../run.ts";
import { issueUndo, leakReplaces, record, storedAs } from "../undo.ts";
import { promoted } from "./promoting.ts";

export const issuing: StepFn = async (run) => {
  const d = run.data;
  // I4: the store is the truth. A version under this rotation's token means an earlier run
  // already issued and stored the value; do not issue again. Only the job's first activation
  // (nothing of it ran before, nothing runs beside it) knows without reading.
  // A rotation queued again by reconcile always reads: its value was written by the run Redis forgot.
  if (!run.firstActivation || d.issueStarted || d.reason === "reconcile") {
    const stored = await run.readVersion(d.rotationId);
    if (stored) return afterStored(run, stored);
  }

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
    // the narrower clean-up is needed only where the sweep cannot run. Neither is needed where the
    // last rotation left nothing but the current credential and this job never ran before
    // (Run.startedClean).
    if (run.startedClean) {
      // nothing to remove
    } else if (run.provider.cleanupOrphans && !(run.provider.sweep && d.oldCredentialId)) {
      const removed = await run.providerCall(() => run.provider.cleanupOrphans!(run.ctx(), undefined));
      if (removed.length) await run.auditStep("issuing", "cleanup", `removed ${removed.length} credential(s) an interrupted run of this rotation had issued: ${removed.join(", ")}`);
    }
    if (run.provider.sweep && d.oldCredentialId && !run.startedClean) {
      // Leftovers of earlier rotations of this policy (a request that landed after its run was
      // aborted). Only with the current credential's id known, so it can never be taken. The
      // AWSPREVIOUS version's credential stays too: live, its rotation was forgotten by Redis
      // before it could wait for the consumers (I2); this rotation's last sweep, after they
      // confirmed its own new value, removes it.
      const keepOld = d.oldCredentialId;
      const stages = await run.deps.store.stages(run.ref, run.signal);
      const keepRotations = Object.entries(stages).filter(([id, s]) => s.includes(AWSPREVIOUS) && id !== d.rotationId).map(([id]) => id);
      const swept = await run.providerCall(() => run.provider.sweep!(run.ctx(), [keepOld], { keepRotations }));
      // What it kept is removed by the last sweep, which a rotation without leftovers skips otherwise.
      if (keepRotations.length) run.data = { ...run.data, keptPrevious: true };
      if (swept.length) await run.auditStep("issuing", "cleanup", `removed ${swept.length} leftover credential(s) of earlier rotations: ${swept.join(", ")}`);
    }
    // The value start read is the old version's; a run that starts here reads it again.
    const old = d.oldVersionId ? (run.currentValue !== undefined ? { value: run.currentValue } : await run.readVersion(d.oldVersionId)) : undefined;
    // What the issue and the store write after it undo (undo.ts), recorded before either is sent:
    // both may land without an answer. Written to the job before the call (a reset's with its marker).
    const replace = leakReplaces(run);
    // Where a credential whose value was lost cannot be found again (Run.lostIsUnfindable), the job says a
    // create is on its way before it is sent: a worker that dies before the store write leaves
    // the mark, and a failure before the value is stored then alerts (Run.fail).
    const unfindable = !replace && run.lostIsUnfindable && !d.issueUnanswered;
    if (unfindable) run.data = { ...run.data, issueUnanswered: true };
    if ((record(run, issueUndo(run, replace)) || unfindable) && run.caps.issue !== "reset") await run.job.updateData(run.data);
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
    if (replace) {
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
  run.data = { ...run.data, newCredentialId: issued.credentialId, newMeta: issued.meta, oldRevokedByReplace: replaced || run.data.oldRevokedByReplace, issueUnanswered: undefined };
  // A replace (a leak's compromise mode) killed the old value already: like a cut-over, its value
  // is written first — it is the only live credential (I1) — and verified after (promoting).
  const writeFirst = run.cutover || replaced;
  // One write straight to AWSCURRENT only where a credential whose value was lost can still be
  // found at the provider: it lists them (sweep), or its value can be read again (recoverIssued:
  // QStash's signing keys, whose issue hands back the live pair instead of rolling twice).
  // Elsewhere (Snyk's client secrets cannot be listed) the value goes to AWSPENDING first and is
  // verified there (verifying): a crash or a failed undo after the issue then never leaves a live
  // credential only memory knew (I1).
  const oneWrite = run.deps.store.putCurrent !== undefined && (run.provider.sweep !== undefined || run.provider.recoverIssued !== undefined);
  if (!writeFirst && oneWrite) {
    // Verified while the value is only in memory: a value that fails is never written (I6).
    await verifyOrUndo(run, issued);
    // The one write to AWSCURRENT is the point of no return: a `rekey cancel` that came first
    // ends the rotation here instead (storeIssued gives the point back where nothing landed).
    await commitOrUndo(run, issued);
  }
  await storeIssued(run, issued, writeFirst || oneWrite);
  storedAs(run, issued.credentialId, issued.meta);
  run.issuedValue = issued.value;
  run.deps.crashAt?.("after-store");
  const message = `new credential${issued.credentialId ? ` ${issued.credentialId}` : ""} issued`;
  if (writeFirst || !run.wroteCurrent) {
    // A cut-over or a replace is verified once current (promoting); a version that could not be
    // written straight to AWSCURRENT is promoted by promoting (verified already); a pending
    // version (not oneWrite) is verified first.
    const next: Data = { ...run.data, step: writeFirst || oneWrite ? "promoting" : "verifying" };
    const m = run.deps.state.transaction();
    await indexNew(run, issued.value, issued.credentialId, m);
    await run.deps.audit.record(
      { rotationId: d.rotationId, policyId: d.policyId, step: "issuing", outcome: "ok", actor: "worker", message: `${message} and stored as version ${d.rotationId} (${run.wroteCurrent ? "AWSCURRENT: the old value died at the reset" : "AWSPENDING"})` },
      m,
    );
    await run.deps.state.commit(m);
    return { data: next };
  }
  run.deps.crashAt?.("after-promote");
  return promoted(run, run.now, issued.value, `${message}, verified by the ${run.policy.provider.kind} identity check, and written as version ${d.rotationId}: AWSCURRENT${d.oldVersionId ? `; ${d.oldVersionId} is AWSPREVIOUS` : ""}`, "issuing");
};

/**
 * Verify a freshly issued overlap credential. One that fails is revoked again at once (its value
 * is only in memory); the error goes on to the queue (retried, or the failure path).
 */
async function verifyOrUndo<Tx>(run: Run<Tx>, issued: IssuedCredential): Promise<void> {
  try {
    await run.providerCall(() => run.provider.verify(run.calls.freshCtx(), issued.value, { credentialId: issued.credentialId, meta: issued.meta }));
  } catch (err) {
    await undo(run, issued, `the new credential failed its check (${errorMessage(err)}); it was revoked again and the old one stays current`);
    throw err;
  }
}

/** Run.commit before the overlap's one write; cancelled, the new credential is revoked (its value is only in memory). */
async function commitOrUndo<Tx>(run: Run<Tx>, issued: IssuedCredential): Promise<void> {
  try {
    await run.commit("promotion", { storeWriteNext: true });
  } catch (err) {
    if (!(err instanceof CancelledError)) throw err;
    await undo(run, issued, `${err.message}; the new credential was revoked before it was written and the old one stays current`);
    throw new CancelledError(`${err.message} (new credential${issued.credentialId ? ` ${issued.credentialId}` : ""} revoked, never written)`);
  }
}

/**
 * Revoke a new overlap credential that will not be written (its value is only in memory); a revoke
 * that fails is left to the clean-up that finds it by the rotation id (cleanupOrphans, the sweeps).
 */
async function undo<Tx>(run: Run<Tx>, issued: IssuedCredential, why: string): Promise<void> {
  if (run.caps.issue !== "overlap" || !run.provider.revoke || run.signal.aborted) return;
  try {
    await run.providerCall(() => run.provider.revoke!(run.ctx(), { value: issued.value, credentialId: issued.credentialId, meta: issued.meta }));
    await run.auditStep("issuing", "compensated", why);
  } catch (undoErr) {
    run.deps.log.warn({ rotationId: run.data.rotationId, policyId: run.policy.id, err: errorMessage(undoErr) }, "revoking a new credential that was not written failed; the clean-up finds it by the rotation id");
  }
}

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
async function storeIssued<Tx>(run: Run<Tx>, issued: IssuedCredential, toCurrent: boolean): Promise<void> {
  let lastErr: unknown;
  if (run.cutover) {
    try {
      const { store } = run.deps;
      // A try is hedged from when it has its AWS write slot (armOnSent), not while it waits for one.
      const budget = { now: run.deps.now, signal: run.signal, budgetMs: engineDefaults.cutoverRetryBudgetMs, armOnSent: true };
      // Straight to AWSCURRENT where the store can (one write); promoting skips what is done.
      // Hedged: the write is idempotent under the rotation's token, and a write that hangs (or
      // waits out the SDK's throttling back-off) would hold every consumer's outage.
      if (store.putCurrent && toCurrent) run.wroteCurrent = (await hedge((signal, sent) => run.storeWrite(() => store.putCurrent!(run.ref, run.data.rotationId, issued.value, signal), 1, sent), budget)).current;
      else await hedge((signal, sent) => run.storeWrite(() => store.putPending(run.ref, run.data.rotationId, issued.value, signal), 1, sent), budget);
      return;
    } catch (err) {
      lastErr = err;
    }
  }
  const { store } = run.deps;
  for (let i = 0; i < (run.cutover ? 0 : engineDefaults.storeWriteRetries); i++) {
    try {
      // Overlap, one write: the value is verified, so the write makes it current (PutSecretValue
      // with VersionStages [AWSCURRENT] and the rotation id as ClientRequestToken: a retry is a
      // no-op). Otherwise AWSPENDING, verified and promoted by the next steps.
      if (store.putCurrent && toCurrent) run.wroteCurrent = (await run.storeWrite(() => store.putCurrent!(run.ref, run.data.rotationId, issued.value, run.signal))).current;
      else await run.storeWrite(() => store.putPending(run.ref, run.data.rotationId, issued.value, run.signal));
      return;
    } catch (err) {
      lastErr = err;
      if (err instanceof PermanentError || err instanceof SecretQuotaError || run.signal.aborted) break;
      const wait = err instanceof RateLimitedError ? Math.min(5_000, Math.max(100, err.retryAt - run.now)) : 250 * 2 ** i;
      await run.sleep(wait);
    }
  }
  if (!run.cutover && !(lastErr instanceof RateLimitedError) && !run.signal.aborted) {
    // A write whose answer was lost may have landed: read it back by its version id before
    // undoing anything — revoking a credential that is current would break every consumer. An
    // unreadable store decides nothing: the next run reads it (it is not a first activation).
    let landed: StoredVersion | undefined;
    try {
      landed = await run.readVersion(run.data.rotationId);
    } catch (err) {
      throw new TransientError(`the store write's answer was lost (${errorMessage(lastErr)}) and the store cannot be read back (${errorMessage(err)}); the next attempt reads it`);
    }
    if (landed?.value === issued.value) {
      run.wroteCurrent = landed.stages.includes("AWSCURRENT");
      await run.auditStep("issuing", "recovered", `the store write's answer was lost (${errorMessage(lastErr)}), but version ${run.data.rotationId} holds the new value`);
      return;
    }
  }
  // Nothing of this rotation landed: it is back before its point of no return and may still be
  // cancelled (commitOrUndo).
  if (!run.cutover && !run.signal.aborted && store.putCurrent && toCurrent && !run.data.oldRevokedByReplace) await run.deps.state.cancels.uncommit(run.data.rotationId);
  const why = errorMessage(lastErr);
  // After a replace the new credential is the only live one: never revoked here (it would leave none).
  if (run.caps.issue === "overlap" && run.provider.revoke && !run.data.oldRevokedByReplace) {
    await run.providerCall(() => run.provider.revoke!(run.ctx(), { value: issued.value, credentialId: issued.credentialId, meta: issued.meta }));
    await run.auditStep("issuing", "compensated", `store write failed (${why}); the new credential was revoked again and the old one stays current`);
    // The secret's own quota: the job parks until it may write again (no attempt used), alone.
    if (lastErr instanceof PermanentError || lastErr instanceof SecretQuotaError) throw lastErr;
    throw new TransientError(`could not store the new credential: ${why}`);
  }
  // A value the provider shows again (a reset's token, a roll's pair) is read back by the next attempt.
  if (run.provider.recoverIssued) throw new TransientError(`could not store the new credential (it will be read back from the provider): ${why}`);
  // After a replace the value dies with this run and the credential lives on: only another replace removes it.
  const remedy = run.data.oldRevokedByReplace ? `; the new credential is live with its value lost: run the leak rotation again (\`rekey leak --policy ${run.policy.id}\`), whose replace drops every credential once more` : "";
  throw new PermanentError(`the new credential could not be stored and cannot be read back (${why}); the old credential may already be dead${remedy}`);
}

/** Record the new credential's id and keyed fingerprint (the leaked-value index). */
export async function indexNew<Tx>(run: Run<Tx>, value: string, credentialId: string | undefined, pipe?: Tx): Promise<void> {
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
  // Which credential the stored version holds: the record says so once it was written with the
  // version; else the provider, asked about the stored value. Not the job data: it may still name
  // a credential an earlier attempt issued and lost before a later attempt issued again (trusted,
  // the final sweep would keep that one and remove the current one — found by the seeded
  // schedules). A human step's value has no provider identity to ask for.
  let credentialId = (await run.deps.state.records.get(d.rotationId))?.newCredentialId;
  if (!credentialId && run.caps.issue === "human") credentialId = d.newCredentialId;
  if (!credentialId && run.caps.issue !== "human") {
    const handle = await run.providerCall(() => run.provider.identify(run.ctx(), stored.value));
    credentialId = handle.credentialId;
  }
  run.data = { ...d, newCredentialId: credentialId };
  storedAs(run, credentialId, d.newMeta);
  // Written straight to AWSCURRENT — by an earlier run of issuing, or by a human's submission —
  // which only a verified value is: what is left is the record.
  if (!run.cutover && !d.oldRevokedByReplace && stored.stages.includes("AWSCURRENT")) return promoted(run, d.promotedAt ?? run.now, stored.value, `version ${d.rotationId} is AWSCURRENT${d.step === "awaiting-human" ? " (written by the submission, verified first)" : " (written by an earlier run, verified first)"}`, d.step);
  await indexNew(run, stored.value, credentialId);
  return { data: { ...run.data, step: run.cutover ? "promoting" : "verifying" } };
}
