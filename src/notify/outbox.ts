/**
 * The notification outbox: nothing is lost. A rotation step only enqueues; a BullMQ worker
 * delivers each (event × target) as its own job, retried with exponential backoff, so a receiver
 * that is down for an hour still gets every event once it is back.
 *
 * Job data holds the event and the target as the policy declares it (a URL and credential
 * references), never a resolved signing key or Slack webhook URL: those are resolved at delivery
 * time and live in memory for one request.
 */
import { createHash } from "node:crypto";
import { DelayedError, type Job, type JobsOptions, UnrecoverableError } from "bullmq";
import { z } from "zod";
import { errorMessage } from "../errors.ts";
import { type Logger } from "../log.ts";
import { type CredentialRef, NotifyTarget, type Policy } from "../policy/schema.ts";
import { type EventType, NotificationEvent } from "./events.ts";
import { slackMessage } from "./slack.ts";
import { SigningKeyError } from "./standard-webhooks.ts";
import { webhookRequest } from "./webhook.ts";

export const NotifyJobData = z.strictObject({
  v: z.literal(1),
  event: NotificationEvent,
  /** Position of the target in the policy's `notify` list (for logs and job ids). */
  targetIndex: z.number().int().nonnegative(),
  /** The target as declared: URL and credential references only. */
  target: NotifyTarget,
});
export type NotifyJobData = z.infer<typeof NotifyJobData>;

/**
 * Delivery defaults. 12 attempts at 2 s doubling span about 2 h 15 min of a receiver outage;
 * finished jobs are kept a day (failed ones a week) for inspection, bounded in number.
 */
export const notifyJobOptions: JobsOptions = {
  attempts: 12,
  backoff: { type: "exponential", delay: 2_000 },
  removeOnComplete: { age: 86_400, count: 10_000 },
  removeOnFail: { age: 7 * 86_400, count: 10_000 },
};

/** What a rotation step reports; rekey adds the provider kind, secret id and time. */
export interface NotificationInput {
  type: EventType;
  rotationId: string;
  policyId: string;
  reason: string;
  message: string;
  versionId?: string;
  /** Consumer ids still awaited (awaiting-confirmation, needs-attention) or told to reload (leak). */
  consumers?: string[];
  instructions?: string;
  link?: string;
  /** rotation.consumer-failed: where the consumer failed. */
  stage?: string;
}

export interface NotifyQueue {
  addBulk(jobs: { name: string; data: NotifyJobData; opts?: JobsOptions }[]): Promise<unknown>;
}

/** Builds the event from what a step reports and the policy it belongs to. `now` is epoch ms. */
export function buildEvent(policy: Policy, input: NotificationInput, now: number): NotificationEvent {
  const withConsumers =
    input.type === "rotation.awaiting-confirmation" || input.type === "rotation.needs-attention" || input.type === "rotation.leak" || input.type === "rotation.cutover-pending" || input.type === "rotation.consumer-failed";
  const human = input.type === "human.action-required" || input.type === "human.reminder";
  return NotificationEvent.parse({
    schemaVersion: 1,
    event: input.type,
    rotationId: input.rotationId,
    policyId: input.policyId,
    provider: policy.provider.kind,
    secretId: policy.target.secretId,
    versionId: input.versionId,
    reason: input.reason,
    message: input.message,
    at: new Date(now).toISOString(),
    ...(withConsumers ? { consumers: input.consumers ?? [] } : {}),
    ...(human ? { instructions: input.instructions, link: input.link } : {}),
    ...(input.type === "rotation.consumer-failed" ? { stage: input.stage } : {}),
  });
}

/**
 * Enqueue one delivery job per notify target of the policy (all or none). A step that runs again
 * after a crash enqueues the same job ids, which the queue ignores while the first jobs are kept;
 * reminders carry their time, so each reminder is its own job. Returns the job ids.
 */
export async function enqueueNotification(queue: NotifyQueue, policy: Policy, input: NotificationInput, now: () => number, jobOptions: JobsOptions = notifyJobOptions): Promise<string[]> {
  if (policy.notify.length === 0) return [];
  const event = buildEvent(policy, input, now());
  const { at: _at, ...stable } = event;
  const discriminator = createHash("sha256")
    .update(JSON.stringify(event.event === "human.reminder" ? event : stable))
    .digest("hex")
    .slice(0, 16);
  const jobs = policy.notify.map((target, targetIndex) => ({
    name: event.event,
    data: NotifyJobData.parse({ v: 1, event, targetIndex, target }),
    // A custom BullMQ id may hold ':' only as exactly three parts.
    opts: { ...jobOptions, jobId: `notify:${event.rotationId}:${event.event}.${discriminator}.${targetIndex}` },
  }));
  await queue.addBulk(jobs);
  return jobs.map((j) => j.opts.jobId);
}

export interface NotifyProcessorDeps {
  /** Resolves a credential reference (signing key, Slack webhook URL) to its value. */
  resolve(ref: CredentialRef): Promise<string>;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
  now: () => number;
  log: Logger;
  /**
   * When given, a delivery to a target the policy no longer lists (or to a policy that is gone
   * with all its targets) is dropped instead of retried against a receiver nobody wants any more.
   */
  policies?: { get(policyId: string): Policy | undefined };
  /**
   * Makes a one-time submit link for a rotation waiting for its human step (undefined when it no
   * longer waits). Called at each delivery of a human event, so the link exists in plain only in
   * the request to the receiver. Without it, human events carry no link.
   */
  submitLink?(rotationId: string): Promise<string | undefined>;
  /** Per-request timeout in ms. Default 10,000. */
  timeoutMs?: number;
  /** Longest wait honoured from a 429's Retry-After, in ms. Default 3,600,000 (1 h). */
  maxRetryAfterMs?: number;
}

export interface DeliveryResult {
  /** HTTP status of the delivery, or "dropped" when the policy no longer lists the target. */
  status: number | "dropped";
  /** `webhook <origin><path>` or `slack (target n)`: never the Slack URL or a query string. */
  target: string;
}

function describeTarget(target: NotifyTarget, index: number): string {
  if (target.kind === "slack") return `slack (target ${index})`;
  const u = new URL(target.url);
  return `webhook ${u.origin}${u.pathname}`;
}

/** Seconds or an HTTP date, as milliseconds from now. */
export function retryAfterMs(value: string | null, now: number): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function createNotifyProcessor(deps: NotifyProcessorDeps): (job: Job, token?: string) => Promise<DeliveryResult> {
  const doFetch = deps.fetch ?? fetch;
  const timeoutMs = deps.timeoutMs ?? 10_000;
  const maxRetryAfter = deps.maxRetryAfterMs ?? 3_600_000;
  return async (job, token) => {
    const parsed = NotifyJobData.safeParse(job.data);
    if (!parsed.success) {
      // A payload that does not parse will never parse: fail now.
      throw new UnrecoverableError(`notification job ${job.id ?? "?"} has invalid data: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`);
    }
    const { event, target, targetIndex } = parsed.data;
    const label = describeTarget(target, targetIndex);
    const ctx = { jobId: job.id, policyId: event.policyId, rotationId: event.rotationId, event: event.event, target: label };

    if (deps.policies) {
      const policy = deps.policies.get(event.policyId);
      const still = policy?.notify.some((t) => JSON.stringify(t) === JSON.stringify(target)) ?? false;
      if (!still) {
        deps.log.warn(ctx, "notification dropped: the policy no longer lists this target");
        return { status: "dropped", target: label };
      }
    }

    const ref = target.kind === "webhook" ? target.signingKey : target.webhook;
    let credential: string;
    try {
      credential = await deps.resolve(ref);
    } catch (err) {
      throw new Error(`${label} of policy ${event.policyId}: cannot resolve its credential reference: ${errorMessage(err)}`, { cause: err });
    }

    // The submit link is made now, for this delivery only (it is never in the job's data).
    let delivered = event;
    if ((event.event === "human.action-required" || event.event === "human.reminder") && deps.submitLink) {
      const submitUrl = await deps.submitLink(event.rotationId);
      if (submitUrl) {
        const how = `Or submit the new value in a browser with this one-time link (it works for one submission, until the human step times out): ${submitUrl}`;
        delivered = { ...event, submitUrl, instructions: event.instructions ? `${event.instructions}\n\n${how}` : how };
      }
    }

    let url: string;
    let init: RequestInit;
    if (target.kind === "webhook") {
      let req: ReturnType<typeof webhookRequest>;
      try {
        req = webhookRequest(delivered, credential, deps.now(), job.id ?? `${event.rotationId}.${targetIndex}`);
      } catch (err) {
        // A key that cannot sign never will: fail now, naming the target (never the key).
        if (err instanceof SigningKeyError) throw new UnrecoverableError(`${label} of policy ${event.policyId}: ${err.message}`);
        throw err;
      }
      url = target.url;
      init = { method: "POST", headers: req.headers, body: req.body };
    } else {
      url = credential;
      init = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(slackMessage(delivered)) };
    }

    let res: Response;
    try {
      res = await doFetch(url, { ...init, redirect: "error", signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      // Only the label: for Slack the URL is the credential.
      throw new Error(`${label}: request failed (${cause ?? errorMessage(err)}); will retry`, { cause: err });
    }
    const snippet = (await res.text().catch(() => "")).slice(0, 200).replace(/\s+/g, " ").trim();

    if (res.ok) {
      deps.log.info({ ...ctx, status: res.status }, "notification delivered");
      return { status: res.status, target: label };
    }
    if (res.status === 429) {
      const wait = retryAfterMs(res.headers.get("retry-after"), deps.now());
      if (wait !== undefined && token) {
        // A rate limit is waited out without using up an attempt.
        deps.log.warn({ ...ctx, waitMs: wait }, "notification target rate limited; waiting");
        await job.moveToDelayed(deps.now() + Math.min(wait, maxRetryAfter), token);
        throw new DelayedError();
      }
      throw new Error(`${label} answered 429 Too Many Requests; will retry`);
    }
    if (res.status >= 500) throw new Error(`${label} answered ${res.status}; will retry`);
    throw new UnrecoverableError(
      `${label} answered ${res.status}${snippet ? ` (${snippet})` : ""}; not retried: fix the receiver or the policy's notify target and its credential`,
    );
  };
}
