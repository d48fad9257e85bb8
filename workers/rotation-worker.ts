/**
 * Rotation worker entry point: `node dist/workers/rotation-worker.js` once built (`npx tsx
 * workers/rotation-worker.ts` from the sources); `rekey worker` runs the same role.
 * Configuration comes from the environment (see README: configuration).
 *
 * Fault injection for crash tests: with REKEY_FAULT_INJECTION=1, REKEY_CRASH_AT names a point
 * (after-issue, after-store, after-promote) at which the process kills itself with SIGKILL, the
 * way a machine dies: no cleanup, no lock release. Without the first variable the second is
 * ignored, so production never honours it by accident.
 */
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { logReload } from "../src/policy/policy-set.ts";
import { startHealthServer, startRotationWorker } from "../src/processes.ts";
import type { CrashPoint } from "../src/rotation/engine.ts";
import { createRuntime } from "../src/runtime.ts";

const config = loadConfig(process.env);
const log = createLogger({ level: config.logLevel, name: "worker" });
const crashPoint = process.env.REKEY_FAULT_INJECTION === "1" ? (process.env.REKEY_CRASH_AT as CrashPoint | undefined) : undefined;

const rt = await createRuntime({
  redis: config.redis,
  prefix: config.prefix,
  policyPaths: [config.policyDir],
  log,
  auditMaxLen: config.auditMaxLen,
  fingerprintKey: config.fingerprintKey,
  region: config.awsRegion,
  requestTimeoutMs: config.requestTimeoutMs,
  awsWritesPerSecond: process.env.REKEY_AWS_WRITES_PER_SECOND ? Number(process.env.REKEY_AWS_WRITES_PER_SECOND) : undefined,
  crashAt: crashPoint
    ? (point) => {
        if (point === crashPoint) {
          log.warn({ point }, "fault injection: killing this worker now");
          process.kill(process.pid, "SIGKILL");
        }
      }
    : undefined,
});
const worker = startRotationWorker(rt, {
  concurrency: config.workerConcurrency,
  log,
  lockDurationMs: config.workerLockMs,
  stalledIntervalMs: config.workerStalledIntervalMs,
  publicUrl: config.publicUrl,
});
log.info({ concurrency: config.workerConcurrency, pid: process.pid }, "rotation worker started");
const health = config.healthPort === undefined ? undefined : await startHealthServer(rt, { role: "worker", host: config.healthHost, port: config.healthPort, log });

const unwatch = rt.policies.watch((report) => logReload(log, rt.policies, report));
process.on("SIGHUP", () => {
  void rt.policies.reload().then((report) => logReload(log, rt.policies, report));
});
const stop = async (signal: string) => {
  log.info({ signal }, "stopping: finishing the steps in progress");
  unwatch();
  await health?.stop();
  await worker.stop();
  await rt.close();
  process.exit(0);
};
process.once("SIGINT", () => void stop("SIGINT"));
process.once("SIGTERM", () => void stop("SIGTERM"));
