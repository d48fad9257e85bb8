/**
 * Every queue and worker operational default in one place, each with its reason.
 */
import type { DefaultJobOptions } from "bullmq";

export const ROTATION_QUEUE = "rotations";
export const NOTIFY_QUEUE = "notify";

export const rotationJobOptions: DefaultJobOptions = {
  // Transient failures (a provider's 5xx, a dropped connection) are retried with backoff; 8
  // attempts at 5 s doubling cover about 20 minutes of an outage before the failure path runs.
  // Rate limits and waiting for consumers do not use attempts (moveToDelayed skips them).
  attempts: 8,
  backoff: { type: "exponential", delay: 5_000 },
  // Completed rotations stay a day for `rekey status` / Bull Board, then go: the audit stream
  // and the rotation records are the long-term history. Bounded so Redis memory stays flat.
  removeOnComplete: { age: 86_400, count: 10_000 },
  // Failed rotations stay a week so an operator can inspect them.
  removeOnFail: { age: 7 * 86_400, count: 10_000 },
};

/** Lower is sooner in BullMQ: leaks go ahead of everything. */
export const PRIORITY = { leak: 2, offboarding: 5, manual: 5, scheduled: 10, reconcile: 5 } as const;

/**
 * A leak rotation parked by a rate limit (a provider's budget, the AWS write quota) resumes ahead
 * of the leak rotations that have not started yet. At its old priority it went back behind the
 * whole backlog of a mass leak when its wait ended (BullMQ orders one priority by arrival):
 * measured, QStash token rotations whose reset met a 429 at 12 s were reset only at 36 s, the
 * last credentials of a 1,000-credential leak to die.
 */
export const LEAK_RESUME_PRIORITY = 1;

/**
 * A parked rotation woken by a confirmation or a submission has one step left before the old
 * credential goes: it runs ahead of rotations that have not started yet (after leaks only), or it
 * would wait behind a whole mass rotation's backlog (measured: p99 20 s from the last confirmation
 * to revocation with 1,000 queued rotations, instead of well under 500 ms).
 */
export const RESUME_PRIORITY = 3;

/**
 * Rotation jobs one worker process runs at once (REKEY_WORKER_CONCURRENCY, `rekey worker -c`).
 * A rotation spends nearly all its time waiting on providers and AWS: with a few hundred ms per
 * provider call, one rotation takes about a second, so a worker running 8 at once finishes about 8
 * a second, and a leak across two workers could not use the 50 writes a second AWS allows it
 * (Little's law: 50 a second at a second each needs 50 in flight). What reaches the providers and
 * AWS is bounded by pacing (their announced budgets, the 429 gates, the AWS write pacing), not by
 * this number. Concurrent rotations also cost less CPU each: what they send to Redis in one turn
 * of the event loop leaves in one write (util/coalesce-writes.ts). Measured in the engine
 * benchmark (BENCHMARKS.md, "by concurrency"): rekey's CPU per rotation falls as concurrency rises
 * from 8 to 32, the minimal script's does not.
 */
export const DEFAULT_WORKER_CONCURRENCY = 32;

export const workerDefaults = {
  // A step holds its lock while it calls a provider and the store; 60 s covers the HTTP timeouts
  // (15 s per call) with room, and a dead worker's job is picked up again within about a minute.
  lockDuration: 60_000,
  // How often BullMQ looks for stalled jobs (a worker that died mid-step).
  stalledInterval: 15_000,
  // A job that stalls this often is failed rather than retried forever (a step that crashes its
  // worker every time). Each resumed step is idempotent, so a few stalls are harmless.
  maxStalledCount: 5,
} as const;

export const engineDefaults = {
  /** Re-check pending confirmations at least this often (push confirmations wake the job at once). */
  confirmationRecheckMs: 30_000,
  /**
   * How long a job that reaches awaiting-confirmation waits in the worker for a push confirmation
   * (heard on the rotation's wake channel) before it parks (processor.ts, Linger).
   */
  confirmationLingerMs: 2_000,
  /** Remind the owner of a pending human step this often. */
  humanReminderMs: 4 * 3_600_000,
  /** How long a human step may wait before it needs attention. */
  humanTimeoutMs: 3 * 86_400_000,
  /** After needs-attention, retry the step this often (an operator may have fixed the cause). */
  attentionRetryMs: 15 * 60_000,
  /** After promotion, a step whose attempts ran out on transient errors is retried this often. */
  transientAttentionRetryMs: 60_000,
  /** Rotation records and per-rotation confirmation sets are kept this long after the end. */
  recordTtlSec: 30 * 86_400,
  /**
   * Retry a failed rotation's cleanup (revoke the new credential, drop AWSPENDING) this often; also
   * how often a reset whose value was lost is read back until it is stored.
   */
  cleanupRetryMs: 10_000,
  /**
   * After a reset request was sent, how long its effect may still show up at the provider (a
   * request that timed out here but is carried out there). No second reset is sent before that.
   */
  resetSettleMs: 60_000,
  /**
   * A cut-over (the reset killed the old value) retries its read-back, store write, promotion and
   * verification in the worker, backing off 50 ms doubling to 400 ms, for this long before the
   * queue's retries (5 s, 10 s, …) take over: consumers fail until the new value is current.
   */
  cutoverRetryBudgetMs: 15_000,
  /** In-process retries of the store write that must not lose a freshly issued value. */
  storeWriteRetries: 5,
  /** Added to a rate limit's reset time so a fleet does not retry in the same millisecond. */
  rateLimitJitterMs: 250,
  /** AWS Secrets Manager: PutSecretValue + UpdateSecret + UpdateSecretVersionStage, per account and region. */
  awsWritesPerSecond: 50,
} as const;
