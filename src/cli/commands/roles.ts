/** `rekey worker | api | scheduler | run`: the long-running roles. */
import type { Command } from "commander";
import { loadPolicies, loadPolicyFile } from "../../policy/loader.ts";
import { startApiServer, startRotationWorker, type Stoppable } from "../../processes.ts";
import { startScheduler } from "../../scheduler/runner.ts";
import { openRuntime, untilStopped, type CommandContext } from "../context.ts";
import type { CliIo } from "../io.ts";

type Role = "worker" | "api" | "scheduler";

async function runRoles(io: CliIo, roles: Role[], opts: { concurrency?: string }): Promise<void> {
  const ctx: CommandContext = await openRuntime(io, { name: roles.join("+") });
  const { config, log, rt } = ctx;
  const running: Stoppable[] = [];
  let nextDue: ((id: string) => number | undefined) | undefined;
  let reloadScheduler: (() => Promise<unknown>) | undefined;
  try {
    if (roles.includes("scheduler")) {
      const sched = await startScheduler({
        redis: rt.redis,
        prefix: rt.prefix,
        now: Date.now,
        log,
        policyPaths: [config.policyDir],
        tickMs: config.schedulerTickMs,
        loadPolicies,
        loadPolicyFile,
        enqueue: async ({ policyId, slot }) => {
          // The scheduler's own watch may have seen a new policy file before this set did.
          if (!rt.policies.get(policyId)) await rt.policies.reload();
          await rt.rotations.enqueue({ policyId, reason: "scheduled", actor: "scheduler", slot });
        },
      });
      nextDue = (id) => sched.scheduler.nextDue(id);
      reloadScheduler = () => sched.reload();
      running.push({ stop: () => sched.stop() });
    }
    if (roles.includes("worker")) {
      const concurrency = opts.concurrency ? Number(opts.concurrency) : config.workerConcurrency;
      running.push(startRotationWorker(rt, { concurrency, log }));
      log.info({ concurrency }, "rotation worker started");
    }
    if (roles.includes("api")) {
      running.push(await startApiServer(rt, { host: config.apiHost, port: config.apiPort, adminTokenHash: config.adminTokenHash, log, nextDue }));
    }
    const unwatch = rt.policies.watch((issues) => {
      for (const i of issues) log.error({ file: i.file, line: i.line, path: i.path }, `${i.message} (the last good policies stay in force)`);
      if (!issues.length) log.info({ policies: rt.policies.all().length }, "policies reloaded");
    });
    running.push({ stop: async () => unwatch() });
    await untilStopped(log, async () => {
      const issues = await rt.policies.reload();
      for (const i of issues) log.error({ file: i.file, line: i.line, path: i.path }, i.message);
      await reloadScheduler?.();
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
    .option("-c, --concurrency <n>", "rotation jobs at once (default REKEY_WORKER_CONCURRENCY or 8)")
    .action((opts: { concurrency?: string }) => runRoles(io, ["worker"], opts));
  program
    .command("api")
    .description("serve the HTTP API (confirmations, triggers, status, metrics) on REKEY_API_HOST:REKEY_API_PORT")
    .action(() => runRoles(io, ["api"], {}));
  program
    .command("scheduler")
    .description("queue rotations when their policies are due; watches the policy folder, SIGHUP reloads it")
    .action(() => runRoles(io, ["scheduler"], {}));
  program
    .command("run")
    .description("scheduler, worker and API in one process (small installs; `npm start`)")
    .option("-c, --concurrency <n>", "rotation jobs at once")
    .action((opts: { concurrency?: string }) => runRoles(io, ["scheduler", "worker", "api"], opts));
}
