/**
 * Redis for tests, picked in this order:
 *   1. `REDIS_URL` from the environment;
 *   2. a `redis-server` binary on PATH, started on a free loopback port and stopped afterwards;
 *   3. testcontainers, where a Docker engine answers.
 * Anything else is a clear error naming all three options.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

export interface RunningRedis {
  url: string;
  /** Where the server keeps its AOF, for restart tests (own servers only). */
  dir?: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function which(bin: string): boolean {
  const paths = (process.env.PATH ?? "").split(":");
  return paths.some((p) => {
    try {
      return statSync(join(p, bin)).isFile();
    } catch {
      return false;
    }
  });
}

async function waitForPing(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on("error", () => undefined); // connection refused while the server starts: retried below
    try {
      await c.connect();
      await c.ping();
      c.disconnect();
      return;
    } catch (err) {
      lastErr = err;
      c.disconnect();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`redis at ${url} did not answer PING within ${timeoutMs} ms: ${String(lastErr)}`);
}

export interface StartOptions {
  /** Keep an append-only file so a restart keeps the data (crash and restart tests). */
  appendonly?: boolean;
  /** Reuse this directory (and port) to restart a server that was stopped. */
  dir?: string;
  port?: number;
}

/** Start a private redis-server from the binary. Requires `redis-server` on PATH. */
export async function startRedisServer(opts: StartOptions = {}): Promise<RunningRedis & { port: number; dir: string; kill(signal?: NodeJS.Signals): Promise<void> }> {
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "rekey-redis-"));
  const args = [
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--dir", dir,
    "--save", "",
    "--appendonly", opts.appendonly ? "yes" : "no",
    "--appendfsync", "always",
    "--maxmemory-policy", "noeviction",
  ];
  const child: ChildProcess = spawn("redis-server", args, { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `redis://127.0.0.1:${port}`;
  try {
    await waitForPing(url);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  const kill = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return {
    url,
    port,
    dir,
    kill,
    async stop() {
      await kill("SIGTERM");
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startContainer(): Promise<RunningRedis> {
  const { GenericContainer } = await import("testcontainers");
  const container = await new GenericContainer("redis:7-alpine")
    .withExposedPorts(6379)
    .withCommand(["redis-server", "--maxmemory-policy", "noeviction"])
    .start();
  return {
    url: `redis://${container.getHost()}:${container.getMappedPort(6379)}`,
    async stop() {
      await container.stop();
    },
  };
}

/** The Redis the whole test run shares (each test isolates itself with its own key prefix). */
export async function acquireRedis(): Promise<RunningRedis> {
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv) {
    await waitForPing(fromEnv);
    return { url: fromEnv, stop: async () => {} };
  }
  if (which("redis-server")) return startRedisServer();
  try {
    return await startContainer();
  } catch (err) {
    throw new Error(
      "tests need Redis: set REDIS_URL, put redis-server on PATH (apt-get install redis-server), " +
        `or run a Docker engine for testcontainers (that failed: ${err instanceof Error ? err.message : String(err)})`,
      { cause: err },
    );
  }
}

export function hasRedisServerBinary(): boolean {
  return which("redis-server");
}
