/**
 * Reconciliation: what Redis believes against the store and the providers, after Redis forgot
 * (a failover to a lagging replica, a wipe). The store's labels and the providers' credential
 * lists are the truth; Redis's records only say what rekey was doing.
 *
 * Per policy, in this order, and only what is safe without a consumer's word:
 * 1. A lock whose rotation's job is gone (lost with the writes after it) is a dead lock: the
 *    rotation ends — `failed` when its new value never became current (the old one still is, I6),
 *    `needs-attention` when it did (its old credential stays live: only consumers' confirmations
 *    may end it, I2) — and the lock is freed with the end, in one script.
 * 2. Credentials rekey issued for the policy (they carry its marker and a rotation id) that are
 *    neither the store's AWSCURRENT nor its AWSPREVIOUS are orphans: issued by a rotation Redis
 *    forgot, never current, used by no consumer. They are removed (the provider's sweep, keeping
 *    the current and the previous credential by id). Only for a policy idle in two passes
 *    `settleMs` apart with the same AWSCURRENT: a worker still running a forgotten job has lost
 *    its lock by then and stopped its calls, so no late write can make a swept credential current.
 * 3. A previous credential (AWSPREVIOUS) still live on an idle policy, where the provider revokes
 *    old credentials by API: the rotation that made AWSCURRENT current never revoked it. It is not
 *    revoked here (consumers may be on it, I2): that rotation is queued again under its own id,
 *    waits for the consumers to confirm the current version, and revokes the previous credential
 *    in its normal revoking step (recreate). Same settle rule as the orphans.
 * 4. AWSPENDING on a version no running rotation owns: its credential, never current, is revoked
 *    and the label dropped, as that rotation's failure path would have (abandonPending).
 * Nothing else is undone. Every repair is audited (`reconcile.*`).
 */
import type { Queue } from "bullmq";
import { z } from "zod";
import type { Audit } from "../audit/audit.ts";
import { errorMessage } from "../errors.ts";
import { HttpStatusError } from "../providers/http.ts";
import type { CredentialRef, Policy } from "../policy/schema.ts";
import type { Provider, ProviderContext, ProviderRegistry } from "../providers/types.ts";
import { engineDefaults, PRIORITY } from "../rotation/defaults.ts";
import { reconcileJobId } from "../rotation/job-ids.ts";
import type { RotationJobData } from "../rotation/job.ts";
import { refOf } from "../rotation/scope.ts";
import type { RekeyState } from "../rotation/state.ts";
import { TERMINAL } from "../rotation/state/records.ts";
import { AWSCURRENT, AWSPENDING, AWSPREVIOUS, type SecretStore } from "../stores/types.ts";

export interface ReconcileDeps {
  state: RekeyState;
  audit: Audit;
  store: SecretStore;
  providers: ProviderRegistry;
  queue: Pick<Queue, "getJob" | "add">;
  resolve(ref: CredentialRef): Promise<string>;
  now(): number;
}

export type FindingKind = "in-flight" | "dead-lock" | "orphans" | "pending" | "two-live" | "re-created" | "unsettled" | "whole" | "skipped" | "error";

export interface Finding {
  policyId: string;
  kind: FindingKind;
  message: string;
  /** The rotation a `re-created` finding queued again (its id is the current version's). */
  rotationId?: string;
  /** A repair was made (false in a dry run, or where nothing needed repairing). */
  repaired: boolean;
}

/** What one pass saw of a policy, to compare with the next pass (settle). */
export interface Observation {
  idle: boolean;
  currentVersionId?: string;
  at: number;
}

const ACTOR = "reconcile";
/** Policies a pass looks at at once. */
const PASS_CONCURRENCY = 8;
/** One provider or store request of a reconcile pass gives up after this. */
const REQUEST_BUDGET_MS = 15_000;

/**
 * Look at one policy, and (unless `dryRun`) repair what is safe. `previous`: what the last pass
 * saw of it; orphans are swept only when it was idle then too, with the same AWSCURRENT, at least
 * `settleMs` ago. Returns the findings and this pass's observation.
 */
export async function reconcilePolicy(
  deps: ReconcileDeps,
  policy: Policy,
  opts: { dryRun: boolean; settleMs: number; previous?: Observation },
): Promise<{ findings: Finding[]; observation: Observation }> {
  const findings: Finding[] = [];
  const now = deps.now();
  const say = (kind: FindingKind, message: string, repaired = false, rotationId?: string) => findings.push({ policyId: policy.id, kind, message, repaired, ...(rotationId ? { rotationId } : {}) });
  const busy = (): { findings: Finding[]; observation: Observation } => ({ findings, observation: { idle: false, at: now } });

  // ---- 1. the lock and the job behind it -----------------------------------------------------
  const holder = await deps.state.locks.inFlight(policy.id);
  if (holder) {
    const rec = await deps.state.records.get(holder);
    const job = rec ? await deps.queue.getJob(rec.jobId) : undefined;
    if (rec && !TERMINAL.has(rec.status) && job) {
      say("in-flight", `rotation ${holder} is in flight (${rec.status}, step ${rec.step}); its worker owns the policy`);
      return busy();
    }
    if (!rec || TERMINAL.has(rec.status)) {
      // A holder without a record, or ended: the next rotation takes the lock over by itself.
      say("in-flight", `the lock names rotation ${holder}, which ${rec ? "has ended" : "has no record"}; the next rotation takes it over`);
      return busy();
    }
    const current = await deps.store.getCurrent(refOf(policy), AbortSignal.timeout(REQUEST_BUDGET_MS));
    const promoted = current?.versionId === holder;
    const status = promoted ? "needs-attention" : "failed";
    const message = promoted
      ? `its job was lost (Redis forgot it) after its new value became current; the previous credential was not revoked: rotate the policy once every consumer runs on version ${holder}`
      : `its job was lost (Redis forgot it) before its new value became current; the old credential is still current`;
    if (!opts.dryRun) {
      await deps.state.records.end(rec, status, message, now, engineDefaults.recordTtlSec, { release: true });
      await deps.audit.record({ rotationId: holder, policyId: policy.id, step: "reconcile.dead-lock", outcome: status, actor: ACTOR, message });
    }
    say("dead-lock", `rotation ${holder} held the policy without a job: ${opts.dryRun ? "would end it" : "ended it"} ${status} (${message})`, !opts.dryRun);
    // Its credentials are swept once the policy has been idle for a settle period (next pass).
    return busy();
  }

  // ---- 2. orphans: issued by rekey, in neither AWSCURRENT nor AWSPREVIOUS --------------------
  const provider = deps.providers[policy.provider.kind] as Provider;
  const ref = refOf(policy);
  const signal = AbortSignal.timeout(REQUEST_BUDGET_MS);
  const current = await deps.store.getCurrent(ref, signal);
  const observation: Observation = { idle: true, currentVersionId: current?.versionId, at: now };
  const done = () => ({ findings, observation });
  if (!current) {
    say("skipped", "the secret holds no current value");
    return done();
  }
  const caps = provider.capabilities(policy.provider as never);
  const twoLiveApplies = caps.revoke === "api" && caps.oldSurvivesIssue && provider.isLive !== undefined;
  // A new credential separate from the old one, revoked by value where it was never promoted.
  const pendingApplies = caps.issue === "overlap" && provider.revoke !== undefined;
  if (!provider.sweep && !twoLiveApplies && !pendingApplies) {
    say("skipped", `${policy.provider.kind} credentials carry no marker rekey could find them by, and an old one is not revoked by API; nothing to sweep`);
    return done();
  }
  const prev = opts.previous;
  if (!prev || !prev.idle || prev.currentVersionId !== current.versionId || now - prev.at < opts.settleMs) {
    say("unsettled", `idle now; orphans are looked for once it has stayed idle on version ${current.versionId} for ${Math.round(opts.settleMs / 1000)} s`);
    return done();
  }
  const ctx: ProviderContext = { config: policy.provider, policyId: policy.id, rotationId: current.versionId, signal, resolve: deps.resolve, now: deps.now, reason: "reconcile" };
  const stages = await deps.store.stages(ref, signal);
  if (pendingApplies) await abandonPending(deps, policy, provider, ctx, stages, opts.dryRun, say);
  const previousVersion = Object.entries(stages).find(([, s]) => s.includes(AWSPREVIOUS))?.[0];
  const previous = previousVersion ? await deps.store.getVersion(ref, previousVersion, signal) : undefined;
  let previousLive: { id?: string } | undefined;
  if (provider.sweep) {
    const keep: string[] = [];
    const currentId = (await provider.identify(ctx, current.value)).credentialId;
    if (!currentId) {
      say("skipped", "the provider names no id for the current credential; nothing is swept without it");
      return done();
    }
    keep.push(currentId);
    if (previous) {
      try {
        const id = (await provider.identify(ctx, previous.value)).credentialId;
        if (!id) {
          say("skipped", "the provider names no id for the previous credential; nothing is swept, so it cannot be taken");
          return done();
        }
        keep.push(id);
        // The same token in both versions is one live credential, not two.
        if (id !== currentId) previousLive = { id };
      } catch (err) {
        // A value the provider does not know (401: not a live credential) is dead: nothing to
        // keep. Anything else (a timeout, a 5xx, a 403) leaves it unknown: sweep nothing.
        if (!(err instanceof HttpStatusError && err.status === 401)) throw err;
      }
    }
    if (opts.dryRun) {
      say("whole", `would sweep credentials rekey issued for the policy other than ${keep.join(", ")} (dry run: nothing removed)`);
    } else {
      const swept = await provider.sweep(ctx, keep);
      if (swept.length) {
        const message = `removed ${swept.length} credential(s) rekey issued that are neither AWSCURRENT nor AWSPREVIOUS: ${swept.join(", ")}`;
        await deps.audit.record({ policyId: policy.id, step: "reconcile.orphans", outcome: "ok", actor: ACTOR, message });
        say("orphans", message, true);
      } else if (!previousLive || !twoLiveApplies) {
        say("whole", `no orphaned credential; kept ${keep.join(", ")}`);
      }
    }
  } else if (previous && twoLiveApplies && previous.value !== current.value && (await provider.isLive!(ctx, previous.value))) {
    previousLive = {};
  }

  // ---- 3. two live: the current one and a previous one never revoked -------------------------
  if (previous && previousLive && twoLiveApplies) await recreate(deps, policy, { current: current.versionId, previous: previous.versionId, previousId: previousLive.id }, opts.dryRun, say);
  else if (!provider.sweep) say("whole", previous ? `the previous credential (version ${previous.versionId}) is no longer live` : "no previous version");
  return done();
}

/**
 * AWSPENDING on a version of an idle policy that no rotation in Redis owns: a rotation Redis
 * forgot stored its new credential and never promoted it. Never current, no consumer runs on it:
 * it is revoked and the label dropped, as that rotation's own failure path would have (I6; the
 * old credential stays current). Providers that list rekey's credentials sweep it anyway; this
 * covers those that cannot (Snyk client secrets, named only by value).
 */
async function abandonPending(
  deps: ReconcileDeps,
  policy: Policy,
  provider: Provider,
  ctx: ProviderContext,
  stages: Record<string, string[]>,
  dryRun: boolean,
  say: (kind: FindingKind, message: string, repaired?: boolean, rotationId?: string) => void,
): Promise<void> {
  const ref = refOf(policy);
  for (const [versionId, labels] of Object.entries(stages)) {
    if (!labels.includes(AWSPENDING) || labels.includes(AWSCURRENT)) continue;
    const rec = await deps.state.records.get(versionId);
    if (rec && rec.endedAt === undefined) continue; // its rotation is known and running
    const what = `version ${versionId} is AWSPENDING and ${rec ? `its rotation ended ${rec.status}` : "Redis has no rotation for it"}: its credential was never current`;
    if (dryRun) {
      say("pending", `${what}; would revoke it and drop the label (dry run)`, false, versionId);
      continue;
    }
    const pending = await deps.store.getVersion(ref, versionId, ctx.signal);
    if (pending) await provider.revoke!(ctx, { value: pending.value });
    await deps.store.discardPending(ref, versionId, ctx.signal);
    const message = `${what}; revoked it and dropped the label`;
    await deps.audit.record({ rotationId: versionId, policyId: policy.id, step: "reconcile.pending", outcome: "ok", actor: ACTOR, message });
    say("pending", message, true, versionId);
  }
}

/**
 * AWSPREVIOUS still live while the policy is idle: the rotation that made AWSCURRENT current
 * never revoked it (Redis forgot that rotation: a wipe, a lost-writes failover). Only consumers'
 * confirmations of the current version may end it (I2), so that rotation is queued again under
 * its own id (the current version's): it takes the policy's lock, finds its value stored and
 * current, tells consumers to confirm it, and revokes the previous credential through the normal
 * revoking step. One job per version (reconcileJobId), however many passes find it.
 */
async function recreate(
  deps: ReconcileDeps,
  policy: Policy,
  v: { current: string; previous: string; previousId?: string },
  dryRun: boolean,
  say: (kind: FindingKind, message: string, repaired?: boolean, rotationId?: string) => void,
): Promise<void> {
  const live = `version ${v.current} is AWSCURRENT and the previous credential${v.previousId ? ` ${v.previousId}` : ""} (version ${v.previous}, AWSPREVIOUS) is still live`;
  if (!z.uuid().safeParse(v.current).success) {
    say("two-live", `${live}; version ${v.current} was not written by a rekey rotation (its id is no rotation id), so rekey does not revoke the previous one: revoke it by hand once every consumer runs on ${v.current}`);
    return;
  }
  const rec = await deps.state.records.get(v.current);
  if (rec) {
    say("two-live", `${live}; rotation ${v.current} ${rec.endedAt !== undefined ? `ended ${rec.status}` : `is ${rec.status} without holding the policy`}${rec.message ? ` (${rec.message})` : ""}: rotate the policy once every consumer runs on ${v.current}`);
    return;
  }
  const jobId = reconcileJobId(policy.id, v.current);
  const queued = await deps.queue.getJob(jobId);
  if (queued && !(await queued.isCompleted()) && !(await queued.isFailed())) {
    say("in-flight", `${live}; rotation ${v.current} was queued again by an earlier pass and waits for a worker`);
    return;
  }
  // A finished job under this id (its record expired since) would make the add below a no-op.
  if (queued && !dryRun) await queued.remove();
  const what = `${live}, and Redis has no rotation for it: rotation ${v.current} ${dryRun ? "would be" : "is"} queued again, so that consumers confirm version ${v.current} and the previous credential is revoked once they have`;
  if (dryRun) {
    say("two-live", `${what} (dry run: nothing queued)`);
    return;
  }
  const data: RotationJobData = {
    v: 1,
    rotationId: v.current,
    policyId: policy.id,
    reason: "reconcile",
    actor: ACTOR,
    step: "start",
    startedAt: deps.now(),
    oldVersionId: v.previous,
    oldCredentialId: v.previousId,
    undo: [],
  };
  await deps.queue.add("rotate", data, { jobId, priority: PRIORITY.reconcile });
  await deps.audit.record({ rotationId: v.current, policyId: policy.id, step: "reconcile.re-created", outcome: "ok", actor: ACTOR, message: what });
  say("re-created", what, true, v.current);
}

/**
 * reconcilePolicy over every policy, a few at a time (each waits on the store and a provider;
 * one after the other, a pass over hundreds of policies under faults took minutes). A policy that
 * fails is reported and the others go on. Findings come in the order of `policies`.
 */
export async function reconcileAll(
  deps: ReconcileDeps,
  policies: Policy[],
  opts: { dryRun: boolean; settleMs: number; previous?: Map<string, Observation> },
): Promise<{ findings: Finding[]; observations: Map<string, Observation> }> {
  const results: { findings: Finding[]; observation: Observation }[] = new Array(policies.length);
  const one = async (policy: Policy): Promise<{ findings: Finding[]; observation: Observation }> => {
    try {
      return await reconcilePolicy(deps, policy, { dryRun: opts.dryRun, settleMs: opts.settleMs, previous: opts.previous?.get(policy.id) });
    } catch (err) {
      // An error says nothing about the policy: what the last pass saw still stands (the next
      // pass compares with it, and looks at the lock and AWSCURRENT itself). Without one, busy.
      const finding: Finding = { policyId: policy.id, kind: "error", message: errorMessage(err), repaired: false };
      return { findings: [finding], observation: opts.previous?.get(policy.id) ?? { idle: false, at: deps.now() } };
    }
  };
  let next = 0;
  const lane = async () => {
    while (next < policies.length) {
      const i = next++;
      results[i] = await one(policies[i] as Policy);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PASS_CONCURRENCY, policies.length) }, lane));
  return { findings: results.flatMap((r) => r.findings), observations: new Map(results.map((r, i) => [(policies[i] as Policy).id, r.observation])) };
}

export interface Reconciler {
  /** Run a pass now (the timer keeps its own pace). */
  pass(): Promise<Finding[]>;
  stop(): Promise<void>;
}

/**
 * The periodic pass the scheduler runs: every `everyMs`, one replica (a Redis claim per period)
 * reconciles every policy. What each pass saw is kept in Redis for the next, whichever replica
 * makes it: orphans are removed only for a policy idle in two passes at least `settleMs` apart,
 * with the same AWSCURRENT.
 */
export function startReconciler(
  deps: ReconcileDepsWithPolicies,
  opts: { everyMs: number; settleMs: number; log: { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void } },
): Reconciler {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  const pass = async (): Promise<Finding[]> => {
    // One replica per period; the claim expires before the next period starts.
    if (!(await deps.state.reconcile.claimPass(deps.now(), Math.max(1_000, Math.floor(opts.everyMs * 0.9))))) return [];
    // The last pass's observations are in Redis, whichever replica made it.
    const raw = await deps.state.reconcile.seen();
    const previous = new Map(Object.entries(raw).map(([id, json]) => [id, JSON.parse(json) as Observation]));
    const r = await reconcileAll(deps, deps.policies.all(), { dryRun: false, settleMs: opts.settleMs, previous });
    await deps.state.reconcile.replaceSeen(Object.fromEntries([...r.observations].map(([id, o]) => [id, JSON.stringify(o)])));
    for (const f of r.findings) {
      if (f.kind === "error") opts.log.error({ policyId: f.policyId, err: f.message }, "reconcile: could not look at a policy");
      else if (f.repaired) opts.log.warn({ policyId: f.policyId, kind: f.kind }, `reconcile: ${f.message}`);
    }
    return r.findings;
  };
  const arm = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass()
        .catch((err: unknown) => opts.log.error({ err: errorMessage(err) }, "reconcile pass failed; trying again next period"))
        .finally(arm);
    }, opts.everyMs);
  };
  arm();
  return {
    pass,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}

export type ReconcileDepsWithPolicies = ReconcileDeps & { policies: { all(): Policy[] } };
