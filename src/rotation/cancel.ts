/**
 * `rekey cancel <rotationId>` (POST /v1/rotations/:id/cancel): stop a rotation that has not yet
 * passed its point of no return, safely.
 *
 * - Queued, not started: its job leaves the queue; nothing was issued. The record says so.
 * - Started, before its point of no return (issuing, a human step, a parked retry): the cancel is
 *   written on its record and the job is woken; the engine ends it through its failure path
 *   (Run.fail), which revokes a new credential it issued and discards the pending version. The
 *   old credential stays current.
 * - Past it (the new version is AWSCURRENT, or a cut-over's reset was sent, so the old value may
 *   no longer work): refused, saying why and what to do instead. Putting the old version back
 *   while consumers may already run on the new one is what rekey exists to prevent.
 * - A leak response: refused at any point; the leaked credential must not stay current.
 *
 * The decision is one script on the record (state.ts CANCEL_LUA against COMMIT_LUA): a cancel is
 * honoured before the engine commits, or refused; never both. Audited with the actor.
 */
import type { Job } from "bullmq";
import { engineDefaults } from "./defaults.ts";
import type { RotationJobData } from "./job.ts";
import { RequestError, type RequestDeps } from "./requests.ts";
import { cancelledMessage } from "./state/cancels.ts";
import type { RotationRecord } from "./state/records.ts";

export interface CancelResult {
  rotationId: string;
  policyId: string;
  /** "cancelled": the rotation has ended (its status and message say how); "cancelling": the worker is still cleaning up. */
  outcome: "cancelled" | "cancelling";
  /** The record's status once ended: failed, or needs-attention where the old value may already be dead (a human cut-over). */
  status?: string;
  message?: string;
}

export interface CancelOptions {
  rotationId: string;
  actor: string;
  reason?: string;
  /** How long to wait for the worker to finish the clean-up before answering "cancelling" (ms). */
  waitMs?: number;
}

/** Job states a rotation that has no record yet can be in (queued, or being taken by a worker). */
const JOB_STATES = ["waiting", "prioritized", "delayed", "active"] as const;
const PAGE = 500;
/** How long a cancel waits out a promotion attempt in flight, in polls of 100 ms (AWS's SDK retries a throttle for a few seconds). */
const PROMOTION_POLLS = 150;

/** Control characters out, at most `max` characters: text from a person, safe for the audit and a terminal. */
export function plainText(s: string, max: number): string {
  // eslint-disable-next-line no-control-regex -- a caller's text must not steer a terminal
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+/g, " ").trim().slice(0, max);
}

export async function cancelRotation(deps: RequestDeps, wake: (rotationId: string, jobId: string) => Promise<void>, opts: CancelOptions): Promise<CancelResult> {
  const reason = opts.reason === undefined ? undefined : plainText(opts.reason, 500) || undefined;
  // A worker may take a queued job between the look-up and the removal: the record appears as it
  // starts, and the cancel is written there instead.
  for (let attempt = 0; attempt < 50; attempt++) {
    const rec = await deps.state.records.get(opts.rotationId);
    if (rec) return cancelStarted(deps, wake, rec, { ...opts, reason });
    const job = await findJob(deps, opts.rotationId);
    if (!job) throw new RequestError(404, `no rotation ${opts.rotationId} is queued or in flight (\`rekey status\` lists the rotations in flight; an ended rotation keeps its record for 30 days)`);
    // Refused while a worker holds the job (it is starting): its record is about to appear.
    const data = job.data as RotationJobData;
    if (data.reason === "leak") throw new RequestError(409, leakRefusal(data.rotationId, data.policyId));
    if (await job.remove().then(() => true, () => false)) return cancelQueued(deps, data, String(job.id), { ...opts, reason });
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new RequestError(409, `rotation ${opts.rotationId} is starting right now; run the cancel again in a moment`);
}

/** The job of a rotation that has not started (no record yet), or undefined. Rare: scanned page by page. */
async function findJob(deps: RequestDeps, rotationId: string): Promise<Job | undefined> {
  for (let start = 0; ; start += PAGE) {
    const jobs = await deps.queue.getJobs([...JOB_STATES], start, start + PAGE - 1, true);
    const found = jobs.find((j) => (j?.data as RotationJobData | undefined)?.rotationId === rotationId);
    if (found) return found;
    if (jobs.length < PAGE) return undefined;
  }
}

async function cancelQueued(deps: RequestDeps, data: RotationJobData, jobId: string, opts: CancelOptions): Promise<CancelResult> {
  const now = deps.now();
  const message = `${cancelledMessage({ by: opts.actor, reason: opts.reason })} before it started: nothing was issued; the old credential is still current and working`;
  const rec: RotationRecord = {
    rotationId: data.rotationId,
    policyId: data.policyId,
    reason: data.reason,
    actor: data.actor,
    status: "failed",
    step: "start",
    jobId,
    startedAt: data.startedAt,
    updatedAt: now,
    message,
    cancelRequestedAt: now,
    cancelledBy: opts.actor,
    cancelReason: opts.reason,
  };
  // It never held the policy, so it does not speak for it (`rekey status` keeps the last real rotation).
  await deps.state.records.put(rec, { claimsPolicy: false });
  await deps.state.records.end(rec, "failed", message, now, engineDefaults.recordTtlSec);
  await deps.audit.record({ rotationId: rec.rotationId, policyId: rec.policyId, step: "cancel", outcome: "ok", actor: opts.actor, message });
  return { rotationId: rec.rotationId, policyId: rec.policyId, outcome: "cancelled", status: "failed", message };
}

async function cancelStarted(deps: RequestDeps, wake: (rotationId: string, jobId: string) => Promise<void>, rec: RotationRecord, opts: CancelOptions): Promise<CancelResult> {
  const { rotationId, policyId } = rec;
  // A leak response is not cancelled: the leaked credential would stay current. (A leak that joins
  // a rotation after this check gets a leak rotation of its own when the cancelled one ends.)
  if (rec.reason === "leak" || rec.leak) throw new RequestError(409, leakRefusal(rotationId, policyId));
  let verdict = await deps.state.cancels.request(rotationId, opts.actor, opts.reason ?? "", deps.now());
  // Caught in the middle of a promotion attempt: it succeeds (refused then) or is throttled and
  // waits to retry (cancellable then). Wait for the outcome rather than answer "try again".
  for (let i = 0; verdict === "committed" && i < PROMOTION_POLLS; i++) {
    const now = await deps.state.records.get(rotationId);
    if (!now || now.promotedAt !== undefined || now.commitPoint !== "promotion") break;
    await new Promise((r) => setTimeout(r, 100));
    verdict = await deps.state.cancels.request(rotationId, opts.actor, opts.reason ?? "", deps.now());
  }
  if (verdict !== "ok") {
    const now = (await deps.state.records.get(rotationId)) ?? rec;
    if (verdict === "ended") throw new RequestError(409, `rotation ${rotationId} of ${policyId} has already ended (${now.status}): there is nothing to cancel`);
    if (verdict === "missing") throw new RequestError(404, `no rotation ${rotationId}`);
    throw new RequestError(409, whyNotCancellable(deps, now));
  }
  await deps.audit.record({ rotationId, policyId, step: "cancel", outcome: "requested", actor: opts.actor, message: `cancel requested at ${rec.step}${opts.reason ? `: ${opts.reason}` : ""}` });
  await wake(rotationId, rec.jobId);
  const deadline = deps.now() + (opts.waitMs ?? 0);
  for (;;) {
    const now = await deps.state.records.get(rotationId);
    if (now?.endedAt !== undefined) return { rotationId, policyId, outcome: "cancelled", status: now.status, message: now.message };
    if (deps.now() >= deadline) return { rotationId, policyId, outcome: "cancelling" };
    await new Promise((r) => setTimeout(r, 100));
  }
}

function leakRefusal(rotationId: string, policyId: string): string {
  return `rotation ${rotationId} of ${policyId} answers a leak and cannot be cancelled: the leaked credential would stay current. Let it finish (a rotation is safe to complete even if the leak was a false alarm)`;
}

/** The refusal of a rotation past its point of no return: why, and what to do instead. */
function whyNotCancellable(deps: RequestDeps, rec: RotationRecord): string {
  const secret = deps.policies.get(rec.policyId)?.target.secretId ?? "its secret";
  const head = `rotation ${rec.rotationId} of ${rec.policyId} cannot be cancelled`;
  if (rec.promotedAt !== undefined) {
    return `${head}: its new version is already current (AWSCURRENT in ${secret}) and consumers may be running on it, so putting the old one back could break them${
      rec.message ? `; it is ${rec.status}: ${rec.message}` : ""
    }. Have its consumers load the new version and confirm (\`rekey status\` shows who is missing), or let its confirmation timeout decide; to replace the new value, rotate again once this rotation has ended`;
  }
  return `${head}: it has passed its point of no return (the provider was asked to reset the credential, so the old value may no longer work, or the new version is being made current right now). Let it finish: \`rekey status\` shows what it waits for`;
}
