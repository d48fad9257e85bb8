/**
 * What every command that talks to Redis needs: configuration from the environment, a logger,
 * and the runtime. Long-running commands also wait for a stop signal here.
 */
import { userInfo } from "node:os";
import { loadConfig, type Config } from "../config.ts";
import { createLogger, type Logger } from "../log.ts";
import type { RotationObserver } from "../observe/metrics.ts";
import { createRuntime, type Runtime } from "../runtime.ts";
import type { CliIo } from "./io.ts";
import { esc } from "../util/terminal.ts";

export interface CommandContext {
  config: Config;
  log: Logger;
  rt: Runtime;
}

export async function openRuntime(io: CliIo, opts: { name: string; policies?: string[]; quiet?: boolean; observer?: RotationObserver }): Promise<CommandContext> {
  const config = loadConfig(io.env);
  // Short commands keep stdout for their own output; the logger writes JSON lines to stderr.
  const log = createLogger({ level: opts.quiet ? "warn" : config.logLevel, name: opts.name, destination: opts.quiet ? process.stderr : undefined });
  const rt = await createRuntime({
    redis: config.redis,
    prefix: config.prefix,
    policyPaths: opts.policies ?? [config.policyDir],
    log,
    auditMaxLen: config.auditMaxLen,
    fingerprintKey: config.fingerprintKey,
    region: config.awsRegion,
    env: io.env,
    // A short command has an operator waiting: say Redis is unreachable rather than hang.
    connectTimeoutMs: opts.quiet ? config.redisConnectTimeoutMs : undefined,
    observer: opts.observer,
  });
  return { config, log, rt };
}

/** Resolves on SIGINT/SIGTERM; SIGHUP calls `onHup` (policy reload) and keeps running. */
export function untilStopped(log: Logger, onHup?: () => Promise<void>, hupMeans = "reloading policies"): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const hup = () => {
      log.info(`SIGHUP: ${hupMeans}`);
      void onHup?.().catch((err: unknown) => log.error({ err }, "reload failed"));
    };
    const stop = (sig: NodeJS.Signals) => {
      process.off("SIGHUP", hup);
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      log.info({ signal: sig }, "stopping");
      resolve(sig);
    };
    process.on("SIGHUP", hup);
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

export function when(ms: number | undefined): string {
  return ms ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z") : "-";
}

/**
 * The audit actor of a command that acts with direct Redis access: whoever holds REDIS_URL can
 * change anything, so rekey can vouch for nothing more than the OS account that ran the command
 * (from the system's user database, not `$USER`, which any shell can set). Printed to stderr, so
 * the operator sees what the audit will say.
 */
export function directActor(): string {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    user = `uid-${process.getuid?.() ?? "unknown"}`;
  }
  return `redis-direct:${user.replace(/[^A-Za-z0-9._-]/g, "?").slice(0, 64) || "unknown"}`;
}

/** Says plainly on stderr that a command changes state with direct Redis access, and as whom. */
export function noteDirect(io: CliIo, command: string): string {
  const actor = directActor();
  io.stderr(`rekey ${command}: acting with direct Redis access (REDIS_URL), audited as ${esc(actor)}; with REKEY_API_URL and REKEY_TOKEN set, commands that support it go through the API with a token instead\n`);
  return actor;
}
