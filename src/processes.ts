/**
 * The long-running roles — rotation worker, API, scheduler — as functions the entry points call
 * (`workers/`, `rekey worker|api|scheduler|run`). Each returns a handle whose `stop()` drains it.
 */
import { Worker } from "bullmq";
import type { Server as TlsServer } from "node:tls";
import type { FastifyInstance } from "fastify";
import { collectDefaultMetrics, Registry } from "prom-client";
import { buildApi } from "./api/server.ts";
import { httpsOptions, secureContextOf, type TlsFiles } from "./api/tls.ts";
import { type OidcOptions, OidcVerifier } from "./auth/jwt.ts";
import { errorMessage } from "./errors.ts";
import { leakResponseFor } from "./leak/leak.ts";
import type { Logger } from "./log.ts";
import { createNotifyProcessor } from "./notify/outbox.ts";
import { redisCheck, secretStoreCheck } from "./observe/readiness.ts";
import { type ReadinessCheck, runReadiness, startRoleServer } from "./observe/role-server.ts";
import { offboardingFor } from "./offboarding/offboarding.ts";
import type { Provider } from "./providers/types.ts";
import { createRedisClient } from "./redis-connection.ts";
import { engineDefaults, NOTIFY_QUEUE, ROTATION_QUEUE, workerDefaults } from "./rotation/defaults.ts";
import { jobViewer } from "./rotation/status.ts";
import { SubmitLinks } from "./rotation/submit-links.ts";
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
  /**
   * REKEY_PUBLIC_URL: where owners' browsers reach the API. With it, human-step notifications
   * carry a one-time submit link; without it, they say `rekey submit` only.
   */
  publicUrl?: string;
  /** Override engineDefaults.confirmationLingerMs (0: park at once). */
  confirmationLingerMs?: number;
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
  // A job lingering for its confirmations (processor.ts, Linger) lends its slot: the worker runs one
  // more job meanwhile. A lingering job only waits for a message on its subscription, so up to four
  // times the concurrency may linger (each holds a job lock); beyond that a job parks at once.
  let lingering = 0;
  const lingerMs = opts.confirmationLingerMs ?? engineDefaults.confirmationLingerMs;
  const linger = (rt.engine.linger = {
    ms: lingerMs,
    begin: () => {
      if (lingering >= 4 * opts.concurrency) return false;
      worker.concurrency = opts.concurrency + ++lingering;
      return true;
    },
    end: () => {
      worker.concurrency = opts.concurrency + (lingering = Math.max(0, lingering - 1));
    },
  });
  worker.on("lockRenewalFailed", (ids) => {
    for (const id of ids) worker.cancelJob(id, "lock lost");
    opts.log.warn({ jobIds: ids }, "lost the lock of rotation jobs; aborted their calls");
  });
  worker.on("failed", (job, err) => {
    opts.log.warn({ jobId: job?.id, err: errorMessage(err) }, "rotation job failed");
  });
  worker.on("error", (err) => opts.log.error({ err: errorMessage(err) }, "rotation worker error"));
  const links = new SubmitLinks(rt.state);
  const publicUrl = opts.publicUrl;
  const submitLink = publicUrl ? (rotationId: string) => links.mint(rotationId, publicUrl) : undefined;
  const notifier = new Worker(NOTIFY_QUEUE, createNotifyProcessor({ resolve: rt.resolve, now: Date.now, log: opts.log, policies: rt.policies, submitLink }), {
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
      if (rt.engine.linger === linger) rt.engine.linger = undefined;
    },
  };
}

/** How long stop() waits for the workers' start-up check of Redis. */
const READY_PING_MS = 2_000;

/** What every role's readiness covers: Redis, and the secret store the policies' secrets live in. */
export function readinessChecks(rt: Pick<Runtime, "redis" | "store" | "policies">): ReadinessCheck[] {
  return [redisCheck(rt.redis), secretStoreCheck({ store: rt.store, targets: () => rt.policies.all().map((p) => p.target) })];
}

/**
 * A registry for a role's /metrics: Node's process metrics under `rekey_`, labelled with the
 * role. Per-role metrics register into the same registry.
 */
export function roleRegistry(role: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry, prefix: "rekey_" });
  return registry;
}

/** The health server of a role process (REKEY_HEALTH_PORT): /healthz, /readyz, /metrics. */
export async function startHealthServer(
  rt: Pick<Runtime, "redis" | "store" | "policies">,
  opts: { role: string; host: string; port: number; log: Logger; registry?: Registry },
): Promise<Stoppable & { url: string }> {
  return startRoleServer({ role: opts.role, host: opts.host, port: opts.port, log: opts.log, registry: opts.registry ?? roleRegistry(opts.role), checks: readinessChecks(rt) });
}

export interface ApiServerOptions {
  host: string;
  port: number;
  adminTokenHash?: string;
  log: Logger;
  nextDue?: (policyId: string) => number | undefined;
  /** SSO (REKEY_OIDC_*). */
  oidc?: OidcOptions;
  /** Requests per client address / per identity per window (defaults: 1200 and 600 a minute). */
  rateLimit?: { perAddress?: number; perIdentity?: number; windowMs?: number };
  /** How often refused confirmations are summed into the audit, in ms (default 60 s). */
  refusalAuditWindowMs?: number;
  /** The process's metrics registry (state gauges registered by the caller); else the API makes its own. */
  registry?: Registry;
  /** HTTPS (REKEY_TLS_CERT / REKEY_TLS_KEY), and mTLS with REKEY_TLS_CLIENT_CA. */
  tls?: TlsFiles;
  /** REKEY_PUBLIC_URL: the origin a submit-link page is posted from, besides the request's own. */
  publicUrl?: string;
}

export async function startApiServer(rt: Runtime, opts: ApiServerOptions): Promise<Stoppable & { url: string; app: FastifyInstance; reloadTls(): void }> {
  const tls = opts.tls;
  const leaks = leakResponseFor(rt);
  const offboarding = offboardingFor(rt);
  const checks = readinessChecks(rt);
  const limiter = createRedisClient(rt.redisTarget, { pipelined: true });
  limiter.on("error", () => undefined); // rekey's own connection reports outages; the limiter skips on error
  const app = buildApi({
    rotations: rt.rotations,
    state: rt.state,
    audit: rt.audit,
    policies: rt.policies,
    log: opts.log,
    adminTokenHash: opts.adminTokenHash,
    tokens: rt.tokens,
    oidc: opts.oidc ? new OidcVerifier(opts.oidc) : undefined,
    // Its own connection, pipelined: a flood's counter updates do not queue ahead of rekey's own
    // commands, and a confirmation's counts and reads leave in one write.
    rateLimits: { redis: limiter, prefix: rt.prefix, ...opts.rateLimit },
    refusalAuditWindowMs: opts.refusalAuditWindowMs,
    nextDue: opts.nextDue,
    registry: opts.registry,
    jobs: jobViewer(rt.queue),
    dashboard: { leaks, offboarding },
    boardQueues: [rt.queue, rt.notifyQueue],
    queueCounts: () => rt.queue.getJobCounts("waiting", "active", "delayed", "prioritized", "failed", "completed"),
    ping: async () => {
      const readiness = await runReadiness(checks);
      if (!readiness.ok) {
        const failed = Object.entries(readiness.checks).flatMap(([name, c]) => (c.ok ? [] : [`${name}: ${c.error}`]));
        throw new Error(failed.join("; "));
      }
    },
    redisReady: () => rt.redis.status === "ready",
    https: tls ? httpsOptions(tls) : undefined,
    submitPage: {
      links: new SubmitLinks(rt.state),
      publicUrl: opts.publicUrl,
      instructions: (policy, target) =>
        (rt.providers[policy.provider.kind] as Provider).instructions?.(policy.provider as never, { policyId: policy.id, rotationId: target.rotationId, successor: target.successor }),
    },
    extensions: {
      leak: (body, actor) => leaks.handle(body, actor),
      offboard: (body, actor) => offboarding.handle(body, actor),
    },
  });
  const address = await app.listen({ host: opts.host, port: opts.port });
  opts.log.info({ address, tls: tls ? (tls.clientCa ? "mtls" : "https") : "off" }, "rekey api listening");
  return {
    url: address,
    app,
    /** Read the certificate, key and client CAs again; new connections use them (SIGHUP). */
    reloadTls() {
      if (!tls) return;
      (app.server as unknown as TlsServer).setSecureContext(secureContextOf(tls));
      opts.log.info("TLS certificate reloaded");
    },
    async stop() {
      await app.close();
      limiter.disconnect();
    },
  };
}
