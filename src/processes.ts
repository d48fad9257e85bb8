/**
 * The long-running roles — rotation worker, API, scheduler — as functions the entry points call
 * (`workers/`, `rekey worker|api|scheduler|run`). Each returns a handle whose `stop()` drains it.
 */
import { Worker } from "bullmq";
import { buildApi } from "./api/server.ts";
import { errorMessage } from "./errors.ts";
import { leakResponseFor } from "./leak/leak.ts";
import type { Logger } from "./log.ts";
import { createNotifyProcessor } from "./notify/outbox.ts";
import { offboardingFor } from "./offboarding/offboarding.ts";
import { NOTIFY_QUEUE, ROTATION_QUEUE, workerDefaults } from "./rotation/defaults.ts";
import { bullPrefix, type Runtime } from "./runtime.ts";
import { withTimeout } from "./util/timeout.ts";

export interface Stoppable {
  stop(): Promise<void>;
}

export interface WorkerOptions {
  concurrency: number;
  log: Logger;
  /** Override workerDefaults.lockDuration (ms): crash tests shorten how long a dead worker's job stays locked. */
  lockDurationMs?: number;
  /** Override workerDefaults.stalledInterval (ms). */
  stalledIntervalMs?: number;
}

export function startRotationWorker(rt: Runtime, opts: WorkerOptions): Stoppable & { worker: Worker } {
  const worker = new Worker(ROTATION_QUEUE, rt.engine.process, {
    connection: rt.connection,
    prefix: bullPrefix(rt.prefix),
    concurrency: opts.concurrency,
    ...workerDefaults,
    ...(opts.lockDurationMs ? { lockDuration: opts.lockDurationMs } : {}),
    ...(opts.stalledIntervalMs ? { stalledInterval: opts.stalledIntervalMs } : {}),
  });
  // A lost lock means another worker may already run this job: abort every provider and AWS call
  // in flight for it (the processor's signal reaches them all).
  worker.on("lockRenewalFailed", (ids) => {
    for (const id of ids) worker.cancelJob(id, "lock lost");
    opts.log.warn({ jobIds: ids }, "lost the lock of rotation jobs; aborted their calls");
  });
  worker.on("failed", (job, err) => {
    opts.log.warn({ jobId: job?.id, err: errorMessage(err) }, "rotation job failed");
  });
  worker.on("error", (err) => opts.log.error({ err: errorMessage(err) }, "rotation worker error"));
  const notifier = new Worker(NOTIFY_QUEUE, createNotifyProcessor({ resolve: rt.resolve, now: Date.now, log: opts.log, policies: rt.policies }), {
    connection: rt.connection,
    prefix: bullPrefix(rt.prefix),
    concurrency: 4,
  });
  notifier.on("error", (err) => opts.log.error({ err: errorMessage(err) }, "notification worker error"));
  return {
    worker,
    async stop() {
      // A BullMQ worker closed before its own start-up check of Redis is answered reports that
      // check's failure as an unhandled rejection (a worker stopped right after it started). With
      // Redis there, the check takes a moment: let it finish first (without Redis, not for long).
      await withTimeout(Promise.all([worker.waitUntilReady(), notifier.waitUntilReady()]), READY_PING_MS, "workers not ready").catch(() => undefined);
      await Promise.allSettled([worker.close(), notifier.close()]);
    },
  };
}

/** How long /readyz waits for Redis to answer, and stop() for the workers' start-up check. */
const READY_PING_MS = 2_000;

export async function startApiServer(rt: Runtime, opts: { host: string; port: number; adminTokenHash?: string; log: Logger; nextDue?: (policyId: string) => number | undefined }): Promise<Stoppable & { url: string }> {
  const leaks = leakResponseFor(rt);
  const offboarding = offboardingFor(rt);
  const app = buildApi({
    rotations: rt.rotations,
    state: rt.state,
    audit: rt.audit,
    policies: rt.policies,
    log: opts.log,
    adminTokenHash: opts.adminTokenHash,
    nextDue: opts.nextDue,
    boardQueues: [rt.queue, rt.notifyQueue],
    queueCounts: () => rt.queue.getJobCounts("waiting", "active", "delayed", "prioritized", "failed", "completed"),
    // Without Redis, commands wait in the client's offline queue for the reconnect: say so at
    // once instead, so a readiness probe gets its 503 rather than a timeout.
    ping: async () => {
      if (rt.redis.status !== "ready") throw new Error(`not connected (${rt.redis.status})`);
      await withTimeout(rt.redis.ping(), READY_PING_MS, `no answer to PING within ${READY_PING_MS} ms`);
    },
    redisReady: () => rt.redis.status === "ready",
    extensions: {
      leak: (body, actor) => leaks.handle(body, actor),
      offboard: (body, actor) => offboarding.handle(body, actor),
    },
  });
  const address = await app.listen({ host: opts.host, port: opts.port });
  opts.log.info({ address }, "rekey api listening");
  return {
    url: address,
    async stop() {
      await app.close();
    },
  };
}
