/**
 * Rotation worker processes for the fault matrix: real `node dist/workers/rotation-worker.js`
 * children, killed with SIGKILL (no cleanup, no lock release) and started again. Their output is
 * kept whole so the checker can scan it for secret values (I5).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface WorkerProc {
  slot: number;
  child: ChildProcess;
  exited: Promise<void>;
}

export class WorkerPool {
  private readonly procs = new Map<number, WorkerProc>();
  private readonly output: string[] = [];
  private outputBytes = 0;
  kills = 0;
  starts = 0;

  constructor(
    private readonly env: Record<string, string>,
    readonly size: number,
  ) {}

  start(): void {
    for (let slot = 0; slot < this.size; slot++) this.spawn(slot);
  }

  private spawn(slot: number): WorkerProc {
    // The compiled worker, as deployed (`npm run chaos` builds dist/ first).
    const child = spawn(process.execPath, ["dist/workers/rotation-worker.js"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (d: Buffer) => {
      this.output.push(d.toString("utf8"));
      this.outputBytes += d.length;
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const proc = { slot, child, exited };
    this.procs.set(slot, proc);
    this.starts++;
    return proc;
  }

  private alive(p: WorkerProc | undefined): p is WorkerProc {
    return p !== undefined && p.child.exitCode === null && p.child.signalCode === null;
  }

  /** SIGKILL one running worker (picked by `pick`), then start its replacement after `restartAfterMs`. */
  async killOne(pick: number, restartAfterMs: number): Promise<number | undefined> {
    const live = [...this.procs.values()].filter((p) => this.alive(p));
    const victim = live[pick % Math.max(1, live.length)];
    if (!victim) return undefined;
    victim.child.kill("SIGKILL");
    await victim.exited;
    this.kills++;
    await new Promise((r) => setTimeout(r, restartAfterMs));
    this.spawn(victim.slot);
    return victim.child.pid;
  }

  /** Workers that died on their own (not killed by the harness) show up here as a nonzero count. */
  unexpectedExits(): number {
    return [...this.procs.values()].filter((p) => p.child.exitCode !== null && p.child.exitCode !== 0).length;
  }

  text(): string {
    return this.output.join("");
  }

  bytes(): number {
    return this.outputBytes;
  }

  /** SIGTERM every worker (they finish their steps), SIGKILL what is left after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    const procs = [...this.procs.values()];
    for (const p of procs) if (this.alive(p)) p.child.kill("SIGTERM");
    const all = Promise.all(procs.map((p) => p.exited));
    const timer = new Promise((r) => setTimeout(r, graceMs));
    await Promise.race([all, timer]);
    for (const p of procs) if (this.alive(p)) p.child.kill("SIGKILL");
    await all;
  }
}
