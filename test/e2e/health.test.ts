/**
 * Health on every role: `rekey worker` and `rekey scheduler`, started as an operator starts them
 * (the compiled bin, configuration from the environment), answer /healthz and /readyz on their
 * health port; /readyz is 503 naming the secret store while the store does not answer; /metrics
 * serves Prometheus text. Nothing they print is a Node or AWS SDK warning.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { main } from "../../src/cli/main.ts";
import { createLogger } from "../../src/log.ts";
import { startApiServer } from "../../src/processes.ts";
import { createRuntime } from "../../src/runtime.ts";
import { AwsSecretsManagerStore } from "../../src/stores/aws-secrets-manager.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type AwsEmulator, startAwsEmulator } from "../fakes/aws/emulator.ts";
import { freePort } from "../helpers/redis-server.ts";
import { deleteKeys, connect, redisUrl, testPrefix } from "../helpers/redis.ts";
import { emulatorClient, emulatorStore, REGION, until } from "../helpers/stack.ts";

interface RoleProc {
  child: ChildProcess;
  url: string;
  exited: Promise<number | null>;
  output: () => string;
}

describe("health of the worker and scheduler processes", () => {
  let emulator: AwsEmulator;
  let dir: string;
  const prefix = testPrefix("health");
  const running: RoleProc[] = [];

  beforeAll(async () => {
    emulator = await startAwsEmulator();
    await emulatorStore(emulator).create!({ secretId: "prod/health-ld", region: REGION }, "initial-token-value");
    dir = mkdtempSync(join(tmpdir(), "rekey-health-"));
    const policy: PolicyInput = {
      id: "health-ld",
      owner: "ops@example.com",
      provider: { kind: "launchdarkly", baseUrl: "http://127.0.0.1:9", management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { every: "30d" },
      target: { secretId: "prod/health-ld", region: REGION },
    };
    writeFileSync(join(dir, "health.yaml"), stringify(policy));
  });

  afterEach(async () => {
    for (const p of running.splice(0)) {
      p.child.kill("SIGTERM");
      await p.exited;
    }
  });

  afterAll(async () => {
    await emulator.close();
    rmSync(dir, { recursive: true, force: true });
    const redis = connect();
    await deleteKeys(redis, prefix);
    await redis.quit();
  });

  async function start(args: string[], env: Record<string, string>, port: number): Promise<RoleProc> {
    const child = spawn(process.execPath, ["bin/rekey.js", ...args], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        REDIS_URL: redisUrl(),
        REKEY_PREFIX: prefix,
        REKEY_POLICY_DIR: dir,
        AWS_REGION: REGION,
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        LD_ADMIN_TOKEN: "unused-management-token",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const proc = { child, url: `http://127.0.0.1:${port}`, exited, output: () => out };
    running.push(proc);
    await until(`${args[0]} health port up`, async () => (await fetch(`${proc.url}/healthz`).catch(() => undefined))?.ok, 30_000, 200);
    return proc;
  }

  async function stop(p: RoleProc): Promise<string> {
    running.splice(running.indexOf(p), 1);
    p.child.kill("SIGTERM");
    expect(await p.exited, p.output()).toBe(0);
    return p.output();
  }

  function noWarnings(output: string): void {
    // Node prints process warnings as "(node:<pid>) …"; the AWS SDK's Node-version notice is one.
    expect(output).not.toContain("NodeVersionSupportWarning");
    expect(output).not.toMatch(/\(node:\d+\)/);
  }

  it("a worker (--health-port) is live and ready, and serves its metrics", async () => {
    const port = await freePort();
    const worker = await start(["worker", "--health-port", String(port)], { AWS_ENDPOINT_URL_SECRETS_MANAGER: emulator.url }, port);
    const live = await fetch(`${worker.url}/healthz`);
    expect(await live.json()).toEqual({ ok: true, role: "worker" });
    const ready = await fetch(`${worker.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ role: "worker", ok: true, checks: { redis: { ok: true }, secretStore: { ok: true, note: `answered in ${REGION}` } } });
    // The store check read metadata only: no secret value was fetched for it.
    expect(emulator.count("DescribeSecret")).toBeGreaterThan(0);
    expect(emulator.count("GetSecretValue")).toBe(0);
    const metrics = await fetch(`${worker.url}/metrics`);
    expect(metrics.headers.get("content-type")).toContain("text/plain");
    const text = await metrics.text();
    expect(text).toMatch(/^rekey_process_cpu_user_seconds_total\{role="worker"\} \d/m);
    // What the worker does: step durations and failures (src/observe/metrics.ts).
    expect(text).toContain("# TYPE rekey_rotation_step_duration_seconds histogram");
    expect(text).toContain("# TYPE rekey_rotation_failures_total counter");
    noWarnings(await stop(worker));
  });

  it("a scheduler (REKEY_HEALTH_PORT) is live and ready", async () => {
    const port = await freePort();
    const scheduler = await start(["scheduler"], { AWS_ENDPOINT_URL_SECRETS_MANAGER: emulator.url, REKEY_HEALTH_PORT: String(port) }, port);
    expect(await (await fetch(`${scheduler.url}/healthz`)).json()).toEqual({ ok: true, role: "scheduler" });
    const ready = await fetch(`${scheduler.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { checks: Record<string, { ok: boolean }> }).checks).toMatchObject({ redis: { ok: true }, secretStore: { ok: true } });
    // What is true now, read from Redis: the per-credential gauges, on the scheduler too.
    const metrics = await (await fetch(`${scheduler.url}/metrics`)).text();
    expect(metrics).toContain("# TYPE rekey_credential_age_seconds gauge");
    expect(metrics).toMatch(/^rekey_leak_incidents_open\{role="scheduler"\} 0$/m);
    noWarnings(await stop(scheduler));
  });

  it("the standalone worker entry point (dist/workers/rotation-worker.js) serves the same health port", async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ["dist/workers/rotation-worker.js"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        REDIS_URL: redisUrl(),
        REKEY_PREFIX: prefix,
        REKEY_POLICY_DIR: dir,
        REKEY_HEALTH_PORT: String(port),
        AWS_REGION: REGION,
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        AWS_ENDPOINT_URL_SECRETS_MANAGER: emulator.url,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const proc = { child, url: `http://127.0.0.1:${port}`, exited, output: () => out };
    running.push(proc);
    await until("worker health port up", async () => (await fetch(`${proc.url}/healthz`).catch(() => undefined))?.ok, 30_000, 200);
    expect((await fetch(`${proc.url}/readyz`)).status).toBe(200);
    noWarnings(await stop(proc));
  });

  it("readiness is 503 naming the secret store while it does not answer; liveness stays 200", async () => {
    const closed = await freePort();
    const port = await freePort();
    const worker = await start(["worker", "--health-port", String(port)], { AWS_ENDPOINT_URL_SECRETS_MANAGER: `http://127.0.0.1:${closed}` }, port);
    expect((await fetch(`${worker.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${worker.url}/readyz`, { signal: AbortSignal.timeout(10_000) });
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { ok: boolean; checks: { redis: { ok: boolean }; secretStore: { ok: boolean; error?: string } } };
    expect(body.ok).toBe(false);
    expect(body.checks.redis).toEqual({ ok: true });
    expect(body.checks.secretStore.ok).toBe(false);
    expect(body.checks.secretStore.error).toMatch(/prod\/health-ld in us-east-1/);
    noWarnings(await stop(worker));
  });

  it("the API's /readyz covers the secret store too", async () => {
    const closed = await freePort();
    const log = createLogger({ level: "silent" });
    const rt = await createRuntime({
      redisUrl: redisUrl(),
      prefix,
      policyPaths: [dir],
      log,
      env: {},
      // Wait for Redis, so only the store is missing.
      connectTimeoutMs: 10_000,
      store: new AwsSecretsManagerStore({ region: REGION, maxAttempts: 1, clientFor: (r) => emulatorClient({ ...emulator, url: `http://127.0.0.1:${closed}` }, r) }),
    });
    const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log });
    try {
      const ready = await fetch(`${api.url}/readyz`, { signal: AbortSignal.timeout(10_000) });
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { error: string }).error).toMatch(/^secretStore: DescribeSecret on secret prod\/health-ld in us-east-1 got no answer/);
    } finally {
      await api.stop();
      await rt.close();
    }
  });

  it("refuses a bad --health-port as a usage error", async () => {
    let err = "";
    const code = await main(["worker", "--health-port", "70000"], { stdout: () => undefined, stderr: (s) => void (err += s), stdin: new PassThrough(), env: {} });
    expect(code).toBe(2);
    expect(err).toContain("expected a port number from 0 to 65535");
  });
});
