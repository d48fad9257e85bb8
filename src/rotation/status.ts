/**
 * What `rekey status`, `GET /v1/status` and the dashboard show: per policy its owner, strategy,
 * credential age, last result and next due time, and every rotation still in flight with what it
 * really waits for — derived from its record, its confirmations, its queue job (waiting, active,
 * or delayed until when) and the shared rate-limit gates, never from a message's words.
 */
import type { Queue } from "bullmq";
import type { Policy } from "../policy/schema.ts";
import { capabilitiesOf } from "../policy/capabilities.ts";
import { providerScope, refOf, storeScope } from "./scope.ts";
import type { RekeyState } from "./state.ts";
import type { RotationRecord } from "./state/records.ts";

/** What a rotation in flight waits for. */
export type WaitKind = "queued" | "running" | "consumers" | "human" | "rate-limit" | "retry" | "resume";

export interface Waiting {
  kind: WaitKind;
  /** The answer in words, read after "waiting for": `consumers checkout (push); next check …`, `a retry of promoting at …`. */
  text: string;
  /** When the rotation acts next (epoch ms): a rate-limit gate opens, a retry, a re-check, a deadline. */
  until?: number;
  /** `rate-limit`: the gate's scope (provider kind and host, or the AWS region). */
  gate?: string;
  /** `retry`: the error of the attempt that failed, and attempts made so far. */
  lastError?: string;
  attemptsMade?: number;
}

export interface InFlight {
  rotationId: string;
  reason: string;
  status: string;
  step: string;
  startedAt: number;
  promotedAt?: number;
  message?: string;
  /** Required consumers that have not confirmed, with how each confirms. */
  waitingFor: { consumerId: string; confirm: string }[];
  confirmed: { consumerId: string; via: string; at: number }[];
  /** Failure reports of consumers still awaited (their latest each): why they have not confirmed. */
  consumerFailures: { consumerId: string; stage: string; message: string; at: number; versionId?: string }[];
  /** What it really waits for, from its state. */
  waitsFor: Waiting;
}

export interface PolicyStatus {
  policyId: string;
  provider: string;
  owner: string;
  secretId: string;
  /** `overlap` (old and new live together until consumers confirm), `cut-over`, or either with a human step. */
  strategy: string;
  lastRotationId?: string;
  lastStatus?: string;
  lastCompletedAt?: number;
  lastEndedAt?: number;
  /**
   * When the current credential became current (the last promotion rekey made, else the last
   * completed rotation). Absent: rekey has not rotated it yet, so its age is unknown.
   */
  currentSince?: number;
  nextDue?: number;
  inFlight?: InFlight;
  /** What an operator should do, where the policy needs attention. */
  remedy?: string;
}

/** A rotation's queue job as status needs it. */
export interface JobView {
  /** BullMQ's state: waiting, prioritized, active, delayed, completed, failed, unknown. */
  state: string;
  /** For a delayed job: when it runs again (epoch ms). */
  delayedUntil?: number;
  attemptsMade: number;
  attempts: number;
  failedReason?: string;
}

/**
 * Reads a rotation job for status. A delayed job's run time is its score in BullMQ's delayed set
 * (`timestamp * 0x1000 + counter`, BullMQ's getDelayedScore.lua): BullMQ has no public reader
 * for the time a job moved with moveToDelayed will run (job.delay counts from the move, which it
 * does not keep). Undocumented; listed in docs/operating.md.
 */
export function jobViewer(queue: Pick<Queue, "getJob" | "getJobState" | "getBackend" | "keys">): (jobId: string) => Promise<JobView | undefined> {
  return async (jobId) => {
    const job = await queue.getJob(jobId);
    if (!job) return undefined;
    const state = await queue.getJobState(jobId);
    let delayedUntil: number | undefined;
    if (state === "delayed") {
      const score = await (await queue.getBackend().client).zscore(queue.keys.delayed!, jobId);
      if (score !== null) delayedUntil = Math.floor(Number(score) / 0x1000);
    }
    return { state, delayedUntil, attemptsMade: job.attemptsMade, attempts: job.opts.attempts ?? 1, failedReason: job.failedReason || undefined };
  };
}

export function strategyOf(p: Policy): string {
  const caps = capabilitiesOf(p.provider);
  return `${caps.oldSurvivesIssue ? "overlap" : "cut-over"}${caps.issue === "human" ? " (human step)" : ""}`;
}

function iso(t: number): string {
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** What the rotation waits for, from its record, confirmations, job and the gates. */
export async function waitOf(opts: {
  policy: Policy;
  rec: RotationRecord;
  pending: { consumerId: string; confirm: string }[];
  job: JobView | undefined;
  gate: (scope: string) => Promise<number>;
  now: number;
}): Promise<Waiting> {
  const { policy, rec, pending, job, now } = opts;
  const at = job?.state === "delayed" ? job.delayedUntil : undefined;
  const consumers = pending.map((c) => `${c.consumerId} (${c.confirm})`).join(", ");
  if (rec.status === "awaiting-human") {
    return { kind: "human", until: at, text: `${policy.owner} to submit the new value (rekey submit ${rec.rotationId})${at ? `; next reminder or deadline ${iso(at)}` : ""}` };
  }
  if (rec.promotedAt !== undefined && rec.step === "awaiting-confirmation" && pending.length && !rec.leak) {
    return { kind: "consumers", until: at, text: `consumers ${consumers}${at ? `; next check ${iso(at)}` : ""}` };
  }
  if (job?.state === "active") return { kind: "running", text: `its worker (running ${rec.step})` };
  if (job && ["waiting", "prioritized", "waiting-children"].includes(job.state)) return { kind: "queued", text: "a free worker (queued)" };
  if (job?.state === "delayed") {
    // A rate limit parks the job until the provider's (or AWS's) gate opens; the gate says until when.
    const scopes = [providerScope(policy.provider), storeScope(refOf(policy))];
    for (const scope of scopes) {
      const until = await opts.gate(scope);
      if (until > now) return { kind: "rate-limit", gate: scope, until, text: `the rate limit of ${scope} until ${iso(until)}` };
    }
    if (rec.status === "needs-attention" || (job.attemptsMade > 0 && job.failedReason)) {
      return {
        kind: "retry",
        until: at,
        lastError: job.failedReason ?? rec.message,
        attemptsMade: job.attemptsMade,
        text: `a retry of ${rec.step}${at ? ` at ${iso(at)}` : ""}${job.attemptsMade ? ` (attempt ${job.attemptsMade + 1} of ${job.attempts})` : ""}`,
      };
    }
    return { kind: "resume", until: at, text: `its next run of ${rec.step}${at ? ` at ${iso(at)}` : ""}` };
  }
  if (!job) return { kind: "queued", text: "its queue job (not found: removed, or not written yet)" };
  return { kind: "running", text: `its job (${job.state})` };
}

/** What an operator does about a policy that needs attention (from its state, not its message). */
export function remedyOf(p: Policy, s: Pick<PolicyStatus, "lastStatus" | "lastRotationId" | "inFlight">): string | undefined {
  const f = s.inFlight;
  if (f && f.status === "needs-attention") {
    if (f.waitsFor.kind === "consumers" || (f.step === "awaiting-confirmation" && f.waitingFor.length)) {
      return `have ${f.waitingFor.map((w) => w.consumerId).join(", ")} load version ${f.rotationId} of ${p.target.secretId} and confirm; the old credential stays alive until then (a leak rotation revokes it at once)`;
    }
    if (f.promotedAt !== undefined) {
      return `the new value is current and nothing is undone; fix the cause in the message (provider credential, network), rekey retries ${f.step}${f.waitsFor.until ? ` at ${iso(f.waitsFor.until)}` : ""}`;
    }
    return `fix the cause in the message; rekey retries ${f.step}${f.waitsFor.until ? ` at ${iso(f.waitsFor.until)}` : ""} and keeps the old credential current until the new one is stored`;
  }
  if (!f && s.lastStatus === "needs-attention") {
    return `rotation ${s.lastRotationId ?? ""} ended needing attention: read its message and history, check the credential and consumers, then rotate again (rekey rotate ${p.id})`;
  }
  if (!f && s.lastStatus === "failed") return `the old credential is still current; fix the cause in the history, then rotate again (rekey rotate ${p.id})`;
  return undefined;
}

export async function collectStatus(opts: {
  state: RekeyState;
  policies: Policy[];
  nextDue?: (policyId: string) => number | undefined;
  /** The rotation queue's job reader (jobViewer); without it, what a rotation waits for is read from its record only. */
  jobs?: (jobId: string) => Promise<JobView | undefined>;
  now?: number;
}): Promise<PolicyStatus[]> {
  const now = opts.now ?? Date.now();
  const active = new Map<string, RotationRecord>();
  for (const rec of await opts.state.records.active()) {
    if (rec.status !== "skipped") active.set(rec.policyId, rec);
  }
  const gates = new Map<string, Promise<number>>();
  const gate = (scope: string) => {
    let g = gates.get(scope);
    if (!g) gates.set(scope, (g = opts.state.gates.until(scope)));
    return g;
  };
  const out: PolicyStatus[] = [];
  for (const p of opts.policies) {
    const summary = await opts.state.records.policySummary(p.id);
    const holder = await opts.state.locks.inFlight(p.id);
    const rec = holder ? ((await opts.state.records.get(holder)) ?? active.get(p.id)) : undefined;
    let inFlight: InFlight | undefined;
    if (rec && !["completed", "failed", "skipped"].includes(rec.status)) {
      const [confirmations, failures] = await Promise.all([opts.state.consumers.confirmations(rec.rotationId), opts.state.consumers.failures(rec.rotationId)]);
      const pending = p.consumers.filter((c) => c.required && !confirmations.has(c.id)).map((c) => ({ consumerId: c.id, confirm: c.confirm }));
      const job = opts.jobs ? await opts.jobs(rec.jobId) : undefined;
      inFlight = {
        rotationId: rec.rotationId,
        reason: rec.reason,
        status: rec.status,
        step: rec.step,
        startedAt: rec.startedAt,
        promotedAt: rec.promotedAt,
        message: rec.message,
        waitingFor: rec.promotedAt !== undefined && !rec.leak ? pending : [],
        confirmed: [...confirmations.values()].map((c) => ({ consumerId: c.consumerId, via: c.via, at: c.at })),
        consumerFailures: [...failures.values()].filter((f) => !confirmations.has(f.consumerId)).map((f) => ({ consumerId: f.consumerId, stage: f.stage, message: f.message, at: f.at, versionId: f.versionId })),
        waitsFor: await waitOf({ policy: p, rec, pending, job: opts.jobs ? job : { state: "unknown", attemptsMade: 0, attempts: 1 }, gate, now }),
      };
    }
    const num = (v: string | undefined) => (v ? Number(v) : undefined);
    const row: PolicyStatus = {
      policyId: p.id,
      provider: p.provider.kind,
      owner: p.owner,
      secretId: p.target.secretId,
      strategy: strategyOf(p),
      lastRotationId: summary.lastRotationId,
      lastStatus: summary.lastStatus,
      lastCompletedAt: num(summary.lastCompletedAt),
      lastEndedAt: num(summary.lastEndedAt),
      currentSince: num(summary.lastPromotedAt) ?? num(summary.lastCompletedAt),
      nextDue: opts.nextDue?.(p.id),
      inFlight,
    };
    row.remedy = remedyOf(p, row);
    out.push(row);
  }
  return out;
}
