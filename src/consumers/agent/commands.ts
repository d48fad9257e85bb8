/**
 * The agent's reload command and health check. Commands run through `/bin/sh -c` so users write
 * what they would type (`kill -HUP "$(cat /run/app.pid)"`, `systemctl reload app`, `kubectl
 * rollout restart … && kubectl rollout status …`). No secret is put in the command's argv or
 * environment: the agent's own credentials (the variables the config names) are removed from the
 * environment the command gets; only the user's own files and template decide what it can read.
 */
import { spawn } from "node:child_process";

export interface CommandResult {
  ok: boolean;
  /** Exit code, or null when it was killed. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The last 1,000 characters of its stdout and stderr, scrubbed by the caller's `scrub`. */
  output: string;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** Applied to the command's output before it is kept (removes secret values). */
  scrub: (text: string) => string;
}

const KEEP = 1_000;

export function runShell(command: string, opts: RunOptions): Promise<CommandResult> {
  return new Promise((resolve) => {
    // Its own process group, so a timeout ends the command and everything it started.
    const child = spawn("/bin/sh", ["-c", command], { env: opts.env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    const keep = (b: Buffer): void => {
      output = (output + b.toString("utf8")).slice(-4 * KEEP);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, opts.timeoutMs);
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      resolve({ ok: code === 0 && !timedOut, code, signal, timedOut, output: opts.scrub(output).slice(-KEEP).trim() });
    };
    child.on("error", (err) => {
      output += `\n${err.message}`;
      done(null, null);
    });
    child.on("close", done);
  });
}

/** One line describing a failed command, for logs and the report to rekey. */
export function describeFailure(what: string, r: CommandResult, timeoutMs: number): string {
  const how = r.timedOut ? `did not finish within ${timeoutMs / 1000} s` : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`;
  const tail = r.output ? `: ${r.output.split("\n").slice(-3).join(" | ").slice(-300)}` : "";
  return `${what} ${how}${tail}`;
}

export interface HealthCheck {
  url?: string;
  command?: string;
  timeoutMs: number;
  withinMs: number;
  intervalMs: number;
}

/**
 * Try the health check until it passes or `withinMs` is over. A URL passes with any 2xx; a
 * command with exit code 0. Resolves to undefined on success, else the last failure.
 */
export async function waitHealthy(check: HealthCheck, opts: Omit<RunOptions, "timeoutMs"> & { fetch?: typeof fetch; signal?: AbortSignal }): Promise<string | undefined> {
  const deadline = Date.now() + check.withinMs;
  let last: string;
  for (;;) {
    if (opts.signal?.aborted) return "stopped";
    if (check.url) {
      try {
        const res = await (opts.fetch ?? fetch)(check.url, { signal: AbortSignal.timeout(check.timeoutMs), redirect: "manual" });
        await res.body?.cancel().catch(() => undefined);
        if (res.status >= 200 && res.status < 300) return undefined;
        last = `health check ${check.url} answered ${res.status}`;
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code;
        last = `health check ${check.url} got no answer (${cause ?? (err instanceof Error ? err.name : "error")})`;
      }
    } else {
      const r = await runShell(check.command!, { ...opts, timeoutMs: check.timeoutMs });
      if (r.ok) return undefined;
      last = describeFailure("health command", r, check.timeoutMs);
    }
    if (Date.now() + check.intervalMs > deadline) return `${last} (still failing after ${check.withinMs / 1000} s)`;
    await new Promise((r) => setTimeout(r, check.intervalMs));
  }
}
