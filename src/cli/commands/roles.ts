/** `rekey worker | api | scheduler | run`: the long-running roles. */
import { type Command, InvalidArgumentError, Option } from "commander";
import { AuditShipper, auditSinkMetrics, sinkFor } from "../../audit/sink.ts";
import { leakResponseFor } from "../../leak/leak.ts";
import { openLeakIncidents, rotationMetrics, stateMetrics } from "../../observe/metrics.ts";
import { errorMessage } from "../../errors.ts";
import { logReload } from "../../policy/policy-set.ts";
import { persistedNextDue } from "../../scheduler/next-due.ts";
import { roleRegistry, startApiServer, startHealthServer, startRotationWorker, type Stoppable } from "../../processes.ts";
import { DEFAULT_WORKER_CONCURRENCY, workerDefaults } from "../../rotation/defaults.ts";
import { startScheduler } from "../../scheduler/runner.ts";
import { openRuntime, untilStopped, type CommandContext } from "../context.ts";
import type { CliIo } from "../io.ts";

type Role = "worker" | "api" | "scheduler";

interface RoleOptions {
  concurrency?: string;
  healthPort?: number;
}

function port(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 65_535) throw new InvalidArgumentError("expected a port number from 0 to 65535 (0 picks a free port)");
  return Number(value);
}

/** --health-port: off unless given here or in REKEY_HEALTH_PORT (the container image sets 9090). */
const healthPortOption = () =>
  new Option("--health-port <port>", "serve /healthz, /readyz and /metrics on this port (default REKEY_HEALTH_PORT; unset: off)").argParser(port);

async function runRoles(io: CliIo, roles: Role[], opts: RoleOptions): Promise<void> {
  // One metrics registry per process, whatever roles it runs: the API and the health port serve it at /metrics.
  const registry = roleRegistry(roles.join("+"));
  const observer = roles.includes("worker") ? rotationMetrics(registry) : undefined;
  const ctx: CommandContext = await openRuntime(io, { name: roles.join("+"), observer });
  const { config, log, rt } = ctx;
  const running: Stoppable[] = [];
  let nextDue: ((id: string) => number | undefined) | undefined;
  let reloadTls: (() => void) | undefined;
  try {
    if (config.auditSink) {
      // Every role may ship; a lease in Redis lets one process at a time do it.
      const shipper: AuditShipper = new AuditShipper({
        redis: rt.redis,
        prefix: rt.prefix,
        audit: rt.audit,
        sink: sinkFor(config.auditSink),
        log,
        metrics: auditSinkMetrics(registry, () => shipper.lag()),
      });
      shipper.start();
      running.push({ stop: () => shipper.stop() });
    }
    if (roles.includes("scheduler")) {
      const sched = startScheduler({
        redis: rt.redis,
        prefix: rt.prefix,
        now: Date.now,
        log,
        policies: rt.policies,
        tickMs: config.schedulerTickMs,
        enqueue: async ({ policyId, slot, jobId }) => {
          await rt.rotations.enqueue({ policyId, reason: "scheduled", actor: "scheduler", slot, jobId });
        },
      });
      nextDue = (id) => sched.scheduler.nextDue(id);
      running.push({ stop: () => sched.stop() });
      if (config.reconcileEveryMs !== undefined) {
        // What Redis forgot (a failover, a wipe) is repaired where that is safe; see docs/redis.md.
        const { startReconciler } = await import("../../reconcile/reconcile.ts");
        const settleMs = (config.workerLockMs ?? workerDefaults.lockDuration) + (config.requestTimeoutMs ?? 15_000);
        const reconciler = startReconciler(
          { state: rt.state, audit: rt.audit, store: rt.store, providers: rt.providers, queue: rt.queue, resolve: rt.resolve, now: Date.now, policies: rt.policies },
          { everyMs: Math.max(config.reconcileEveryMs, settleMs), settleMs, log },
        );
        running.push(reconciler);
      }
    }
    if (roles.includes("api") || roles.includes("scheduler")) {
      // What is true now (credential age, pending consumers, ...): read from Redis when scraped.
      const leaks = leakResponseFor(rt);
      stateMetrics(registry, {
        state: rt.state,
        policies: rt.policies,
        nextDue: async () => nextDue ?? (await persistedNextDue(rt.redis, rt.prefix, rt.policies.all(), Date.now())),
        openLeakIncidents: () => openLeakIncidents(leaks),
      });
    }
    if (roles.includes("worker")) {
      const concurrency = opts.concurrency ? Number(opts.concurrency) : config.workerConcurrency;
      running.push(startRotationWorker(rt, { concurrency, log, publicUrl: config.publicUrl }));
      log.info({ concurrency }, "rotation worker started");
    }
    if (roles.includes("api")) {
      const api = await startApiServer(rt, {
        host: config.apiHost,
        port: config.apiPort,
        adminTokenHash: config.adminTokenHash,
        log,
        nextDue,
        registry,
        oidc: config.oidc,
        rateLimit: { perAddress: config.apiRateLimit, perIdentity: config.apiIdentityRateLimit },
        tls: config.tls,
        publicUrl: config.publicUrl,
      });
      reloadTls = () => api.reloadTls();
      running.push(api);
    }
    const healthPort = opts.healthPort ?? config.healthPort;
    if (healthPort !== undefined) {
      // Started last, so it stops first: readiness goes away before the roles drain.
      running.push(await startHealthServer(rt, { role: roles.join("+"), host: config.healthHost, port: healthPort, log, registry }));
    }
    const unwatch = rt.policies.watch((report) => logReload(log, rt.policies, report));
    running.push({ stop: async () => unwatch() });
    await untilStopped(log, async () => {
      logReload(log, rt.policies, await rt.policies.reload());
      try {
        reloadTls?.();
      } catch (err) {
        // A half-written certificate file must not stop the API: the one in use stays.
        log.error({ err: errorMessage(err) }, "TLS certificate not reloaded; the previous one stays in use");
      }
    });
  } finally {
    for (const r of running.reverse()) await r.stop();
    await rt.close();
  }
}

export function register(program: Command, io: CliIo): void {
  program
    .command("worker")
    .description("run a rotation worker (and the notification sender) until SIGINT/SIGTERM; SIGHUP reloads policies")
    .option("-c, --concurrency <n>", `rotation jobs at once (default REKEY_WORKER_CONCURRENCY or ${DEFAULT_WORKER_CONCURRENCY})`)
    .addOption(healthPortOption())
    .action((opts: RoleOptions) => runRoles(io, ["worker"], opts));
  program
    .command("api")
    .description("serve the HTTP API (confirmations, triggers, status, metrics) on REKEY_API_HOST:REKEY_API_PORT; HTTPS with REKEY_TLS_CERT/REKEY_TLS_KEY, mTLS with REKEY_TLS_CLIENT_CA")
    .addOption(healthPortOption())
    .action((opts: RoleOptions) => runRoles(io, ["api"], opts));
  program
    .command("scheduler")
    .description("queue rotations when their policies are due; watches the policy folder, SIGHUP reloads it")
    .addOption(healthPortOption())
    .action((opts: RoleOptions) => runRoles(io, ["scheduler"], opts));
  program
    .command("run")
    .description("scheduler, worker and API in one process (small installs; `npm start`)")
    .option("-c, --concurrency <n>", "rotation jobs at once")
    .addOption(healthPortOption())
    .action((opts: RoleOptions) => runRoles(io, ["scheduler", "worker", "api"], opts));
}
