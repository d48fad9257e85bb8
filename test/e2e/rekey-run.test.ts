/**
 * `rekey run` as an operator starts it: one process with scheduler, worker and API, configured
 * from the environment and a policy folder. The schedule fires, the rotation completes, the API
 * answers, and SIGTERM stops the process cleanly.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { verifyChain } from "../../src/audit/chain.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { freePort } from "../helpers/redis-server.ts";
import { redisUrl } from "../helpers/redis.ts";
import { ADMIN_TOKEN, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

describe("rekey run", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let dir: string;

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    dir = mkdtempSync(join(tmpdir(), "rekey-run-"));
  });

  afterEach(async () => {
    await stack?.close();
    await ld.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("rotates on schedule with scheduler, worker and API in one process, and stops on SIGTERM", async () => {
    const admin = ld.addToken({ role: "admin" });
    const managed = ld.addToken({ role: "writer", name: "nightly" });
    const policy: PolicyInput = {
      id: "ld-nightly",
      owner: "ops@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { every: "3s" },
      target: { secretId: "prod/ld-nightly", region: REGION },
    };
    writeFileSync(join(dir, "nightly.yaml"), stringify(policy));
    // The in-process stack only provides the emulator and a view of the same Redis prefix.
    stack = await startStack({ policies: [policy], worker: false, env: {} });
    await stack.store.create!({ secretId: "prod/ld-nightly", region: REGION }, managed.value);
    const port = await freePort();
    const child = spawn(process.execPath, ["bin/rekey.js", "run"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        REDIS_URL: redisUrl(),
        REKEY_PREFIX: stack.prefix,
        REKEY_POLICY_DIR: dir,
        REKEY_API_PORT: String(port),
        REKEY_SCHEDULER_TICK: "1s",
        AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url,
        AWS_REGION: REGION,
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        LD_ADMIN_TOKEN: admin.value,
        REKEY_ADMIN_TOKEN_HASH: tokenHash(ADMIN_TOKEN),
        REKEY_AUDIT_SINK: `file:${join(dir, "audit.jsonl")}`,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await until("api up", async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok, 20_000, 200);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      // The first slot after start fires (no consumers: the old token goes as soon as the new one is current).
      await until("a scheduled rotation completed", async () => (await stack.rt.state.records.policySummary("ld-nightly")).lastCompletedAt, 30_000, 200);
      expect(ld.isLive(managed.value)).toBe(false);
      const cur = await stack.store.getCurrent({ secretId: "prod/ld-nightly", region: REGION });
      expect(ld.isLive(cur!.value)).toBe(true);
      const history = await stack.rt.audit.history({ policyId: "ld-nightly", limit: 200 });
      expect(history.some((h) => h.step === "scheduled.requested" && h.actor === "scheduler")).toBe(true);
      // The operator's view of the same process: the dashboard, per-credential metrics, the audit sink.
      const ui = await fetch(`http://127.0.0.1:${port}/ui`, { headers: { authorization: `Basic ${Buffer.from(`ops:${ADMIN_TOKEN}`).toString("base64")}` } });
      expect(ui.status).toBe(200);
      expect(await ui.text()).toContain('data-policy="ld-nightly"');
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
      // Label order differs by metric type: match each label, whatever its place.
      expect(metrics).toMatch(/rekey_credential_age_seconds\{(?=[^}]*policy="ld-nightly")(?=[^}]*role="scheduler\+worker\+api")[^}]*\} \d/);
      expect(metrics).toMatch(/rekey_rotation_step_duration_seconds_count\{(?=[^}]*provider="launchdarkly")(?=[^}]*step="revoking")[^}]*\} [1-9]/);
      await until("audit shipped", () => existsSync(join(dir, "audit.jsonl")) && readFileSync(join(dir, "audit.jsonl"), "utf8").includes('"step":"revoking"'), 15_000, 200);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited, output).toBe(0);
    const shipped = verifyChain([{ name: "audit.jsonl", text: readFileSync(join(dir, "audit.jsonl"), "utf8") }]);
    expect(shipped.ok, JSON.stringify(shipped.problems)).toBe(true);
    expect(shipped.firstSeq).toBe(1);
    // I5: nothing the process printed holds a token.
    for (const t of ld.tokens()) expect(output).not.toContain(t.value);
  });
});
