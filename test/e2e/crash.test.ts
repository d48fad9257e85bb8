/**
 * Crash safety with real processes: a worker is SIGKILLed right after LaunchDarkly issued the
 * new token, right after the store write, and right after promotion. A second worker process
 * resumes the stalled job and finishes the rotation. At the end LaunchDarkly holds exactly one
 * live managed token, AWSCURRENT is that token, and nothing is orphaned.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import type { CrashPoint } from "../../src/rotation/engine.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { redisUrl } from "../helpers/redis.ts";
import { FINGERPRINT_KEY, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "crash-consumer-token-0123456789abcdef";

interface WorkerProc {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

function spawnWorker(env: Record<string, string>): WorkerProc {
  // The compiled worker, as deployed (the global setup builds dist/).
  const child = spawn(process.execPath, ["dist/workers/rotation-worker.js"], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, exited, output: () => out };
}

describe("a worker killed mid-rotation", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };
  let dir: string;
  let workers: WorkerProc[] = [];
  let baseEnv: Record<string, string>;

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    admin = ld.addToken({ role: "admin", name: "rekey management" });
    managed = ld.addToken({ role: "writer", name: "checkout-service" });
    dir = mkdtempSync(join(tmpdir(), "rekey-crash-"));
    const policy: PolicyInput = {
      id: "ld-crash",
      owner: "alice@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: { secretId: "prod/ld-crash", region: REGION },
      consumers: [{ id: "checkout", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
    };
    writeFileSync(join(dir, "ld-crash.json"), JSON.stringify(policy, null, 2));
    stack = await startStack({ policies: [policy], worker: false, env: { LD_ADMIN_TOKEN: admin.value } });
    await stack.store.create!({ secretId: "prod/ld-crash", region: REGION }, managed.value);
    baseEnv = {
      REDIS_URL: redisUrl(),
      REKEY_PREFIX: stack.prefix,
      REKEY_POLICY_DIR: dir,
      REKEY_FINGERPRINT_KEY: FINGERPRINT_KEY,
      REKEY_WORKER_CONCURRENCY: "2",
      REKEY_WORKER_LOCK_DURATION: "2s",
      REKEY_WORKER_STALLED_INTERVAL: "1s",
      AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      LD_ADMIN_TOKEN: admin.value,
      LOG_LEVEL: "info",
    };
    workers = [];
  });

  afterEach(async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
    await Promise.all(workers.map((w) => w.exited));
    await stack.close();
    await ld.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const point of ["after-issue", "after-store", "after-promote"] as CrashPoint[]) {
    it(`finishes the rotation when the worker dies ${point.replace("-", " ")}`, async () => {
      const first = spawnWorker({ ...baseEnv, REKEY_FAULT_INJECTION: "1", REKEY_CRASH_AT: point });
      workers.push(first);
      const req = await stack.rt.rotations.enqueue({ policyId: "ld-crash", reason: "manual", actor: "test" });
      const died = await first.exited;
      expect(died.signal, first.output()).toBe("SIGKILL");

      const second = spawnWorker(baseEnv);
      workers.push(second);
      await until("awaiting confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation", 45_000, 100);
      // I2 holds across the crash: the old token lives until the consumer confirmed.
      expect(ld.isLive(managed.value)).toBe(true);
      const cur = await stack.store.getCurrent({ secretId: "prod/ld-crash", region: REGION });
      const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
        body: JSON.stringify({ policyId: "ld-crash", consumerId: "checkout", versionId: cur!.versionId }),
      });
      expect(res.status).toBe(200);
      await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 30_000, 100);

      const final = await stack.store.getCurrent({ secretId: "prod/ld-crash", region: REGION });
      const live = ld.liveTokens().filter((t) => t.id !== admin.id);
      // Exactly one live managed token, and it is the one in AWSCURRENT.
      expect(live).toHaveLength(1);
      expect(live[0]!.value).toBe(final!.value);
      expect(final!.versionId).toBe(req.rotationId);
      expect(ld.isLive(managed.value)).toBe(false);
      // No orphans: every token this rotation created but did not keep is deleted.
      const mine = ld.tokens().filter((t) => t.description.includes(req.rotationId));
      expect(mine.filter((t) => t.state === "live").map((t) => t.id)).toEqual([live[0]!.id]);
      // The store holds one version for this rotation, no AWSPENDING left behind.
      const secret = stack.emulator.inspect("prod/ld-crash", REGION)!;
      expect(secret.versions.filter((v) => v.stages.includes("AWSPENDING"))).toHaveLength(0);
      expect(secret.versions.filter((v) => v.versionId === req.rotationId)).toHaveLength(1);
      // I5: the worker processes logged no secret.
      for (const w of workers) {
        for (const s of [managed.value, final!.value, admin.value]) expect(w.output()).not.toContain(s);
      }
    });
  }
});
