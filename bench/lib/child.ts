/**
 * Each measurement runs in a fresh Node process (own heap, own peak RSS), started with tsx as a
 * loader. The child prints one line `BENCH_RESULT <json>`; everything else it prints is passed
 * through so progress stays visible.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const MARK = "BENCH_RESULT ";

/** Node flags a bench child runs with: tsx as loader, plus `extra`. */
export function tsxExecArgv(extra: readonly string[] = []): string[] {
  return ["--import", "tsx", ...extra];
}

export function benchFile(name: string): string {
  return fileURLToPath(new URL(`../${name}`, import.meta.url));
}

export async function runChild<T>(script: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; nodeFlags?: string[]; label: string; onLine?: (line: string) => void }): Promise<T> {
  const child = spawn(process.execPath, [...tsxExecArgv(opts.nodeFlags), benchFile(script), ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let result: T | undefined;
  let buf = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith(MARK)) result = JSON.parse(line.slice(MARK.length)) as T;
      else if (line.trim()) {
        opts.onLine?.(line);
        process.stdout.write(`    ${line}\n`);
      }
    }
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  if (result === undefined) throw new Error(`${opts.label}: child ${script} exited with ${code} without a result${code === null ? ` (killed after ${opts.timeoutMs} ms?)` : ""}`);
  return result;
}

/** Called by a child to hand its result to the orchestrator. */
export function emitResult(result: unknown): void {
  process.stdout.write(`${MARK}${JSON.stringify(result)}\n`);
}

/** Called by a child for a progress line. */
export function progress(message: string): void {
  process.stdout.write(`${message}\n`);
}

/**
 * The child side of the IPC protocol FakesClient (lib/rig.ts) speaks: each request `{ id, type,
 * … }` is answered `{ id, result }` or `{ id, error }`; `stop` exits after its answer; the parent
 * going away (killed, crashed) takes the child with it. Announces itself ready.
 */
export function serveIpc<T extends { id: number; type: string }>(handle: (msg: T) => Promise<unknown>): void {
  process.on("message", (msg: T) => {
    handle(msg).then(
      (result) => {
        process.send?.({ id: msg.id, result });
        if (msg.type === "stop") setTimeout(() => process.exit(0), 10);
      },
      (err: unknown) => process.send?.({ id: msg.id, error: err instanceof Error ? err.stack : String(err) }),
    );
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({ ready: true });
}
