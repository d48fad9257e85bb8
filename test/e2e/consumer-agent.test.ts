/**
 * `rekey agent` as a real process in front of a real app process (examples/python-service, a
 * Python service that calls the LaunchDarkly fake with its token), against a real rekey stack
 * (Redis, the AWS emulator through the SDK, the API and worker over HTTP): the agent writes the
 * token, reloads the app, waits for its health check and only then confirms, so the old token
 * dies after the app moved over and the app's callers never see an upstream 401. A reload that
 * fails never confirms and is reported, shown by `rekey status` and alerted. Forged and replayed
 * webhooks are refused.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { NotificationEvent } from "../../src/notify/events.ts";
import { webhookRequest } from "../../src/notify/webhook.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { type AlertReceiver, HOOK_KEY, HOOK_KEY_ENV, loadLoop, type Proc, startAlertReceiver, startProcess } from "../helpers/consumer.ts";
import { freePort } from "../helpers/redis-server.ts";
import { redisUrl } from "../helpers/redis.ts";
import { dumpRedis, FINGERPRINT_KEY, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "python-app-consumer-token-0123456789abcdef";
const SECRET = { secretId: "prod/ld-app", region: REGION };

describe("rekey agent in front of a Python service", { timeout: 120_000 }, () => {
  let ld: LaunchDarklyFake;
  let alerts: AlertReceiver;
  let stack: Stack;
  let dir: string;
  let policy: PolicyInput;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };
  let agentPort: number;
  let appPort: number;
  const procs: Proc[] = [];

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    alerts = await startAlertReceiver();
    admin = ld.addToken({ role: "admin", name: "rekey management" });
    managed = ld.addToken({ name: "python-app", role: "reader" });
    dir = mkdtempSync(join(tmpdir(), "rekey-agent-"));
    agentPort = await freePort();
    appPort = await freePort();
    policy = {
      id: "ld-app",
      owner: "owner@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: SECRET,
      consumers: [{ id: "python-app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
      notify: [
        { kind: "webhook", url: `http://127.0.0.1:${agentPort}/rekey/webhook`, signingKey: { env: HOOK_KEY_ENV } },
        { kind: "webhook", url: alerts.url, signingKey: { env: HOOK_KEY_ENV } },
      ],
    };
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: admin.value, [HOOK_KEY_ENV]: HOOK_KEY } });
    await stack.store.create!(SECRET, managed.value);
  });

  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop()));
    await stack.close();
    await alerts.close();
    await ld.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const awsEnv = (): Record<string, string> => ({
    AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url,
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
  });

  /** The agent process with this reload command, and the app behind it once the token file is there. */
  async function startAgentAndApp(reloadCommand: string, opts: { poll?: string } = {}): Promise<{ agent: Proc; app: Proc }> {
    const config = {
      rekey: { url: stack.apiUrl, token: { env: "REKEY_CONSUMER_TOKEN" }, fingerprintKey: { env: "REKEY_FINGERPRINT_KEY" } },
      listen: `127.0.0.1:${agentPort}`,
      webhook: { signingKey: { env: "REKEY_WEBHOOK_KEY" } },
      secrets: { ld: { secretId: SECRET.secretId, region: REGION, policyId: "ld-app", consumerId: "python-app" } },
      outputs: [
        { path: join(dir, "token"), secret: "ld" },
        { path: join(dir, "app.env"), env: { LD_TOKEN: "ld" } },
      ],
      reload: { command: reloadCommand, timeout: "10s" },
      health: { url: `http://127.0.0.1:${appPort}/healthz`, timeout: "2s", within: "10s", interval: "200ms" },
      poll: opts.poll ?? "30s",
      debounce: "200ms",
      retry: "1s",
    };
    writeFileSync(join(dir, "agent.yaml"), stringify(config));
    const agent = startProcess(process.execPath, ["bin/rekey.js", "agent", "-c", join(dir, "agent.yaml"), "--log-level", "debug"], {
      ...awsEnv(),
      REKEY_CONSUMER_TOKEN: CONSUMER_TOKEN,
      REKEY_WEBHOOK_KEY: HOOK_KEY,
      REKEY_FINGERPRINT_KEY: FINGERPRINT_KEY,
    });
    procs.push(agent);
    await until("agent ready", async () => (await fetch(`http://127.0.0.1:${agentPort}/healthz`).catch(() => undefined))?.status === 200, 60_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}\nagent output:\n${agent.output()}`);
    });
    const app = startProcess("python3", ["examples/python-service/app.py"], {
      TOKEN_FILE: join(dir, "token"),
      UPSTREAM_URL: `${ld.url}/api/v2/caller-identity`,
      AUTH_SCHEME: "",
      PORT: String(appPort),
      PID_FILE: join(dir, "app.pid"),
      LISTEN_LOCAL: "1",
    });
    procs.push(app);
    await until("app healthy", async () => (await fetch(`http://127.0.0.1:${appPort}/healthz`).catch(() => undefined))?.status === 200, 30_000, 100).catch((err: unknown) => {
      throw new Error(`${String(err)}\napp output:\n${app.output()}`);
    });
    return { agent, app };
  }

  async function appStats(): Promise<{ requests: number; upstream_401: number; reloads: number }> {
    return (await (await fetch(`http://127.0.0.1:${appPort}/stats`)).json()) as { requests: number; upstream_401: number; reloads: number };
  }

  it("a full rotation: the app reloads, the agent confirms, the old token dies after — and no caller sees an upstream 401", async () => {
    const { agent } = await startAgentAndApp(`kill -HUP "$(cat '${join(dir, "app.pid")}')"`);
    expect(readFileSync(join(dir, "token"), "utf8")).toBe(managed.value);
    expect(statSync(join(dir, "token")).mode & 0o777).toBe(0o600);

    const load = loadLoop(`http://127.0.0.1:${appPort}/`);
    await until("load running", () => load.total() >= 10);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-app", reason: "manual", actor: "test" });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 60_000);
    const atEnd = load.total();
    // Keep calling a while after the old token was deleted.
    await until("more load", () => load.total() >= atEnd + 10);
    await load.stop();

    const current = (await stack.store.getCurrent(SECRET))!;
    expect(current.versionId).toBe(req.rotationId);
    expect(ld.isLive(managed.value)).toBe(false);
    expect(ld.isLive(current.value)).toBe(true);
    // What the app's callers saw: every request answered 200 by the upstream.
    expect([...load.statuses.keys()]).toEqual([200]);
    const stats = await appStats();
    expect(stats.upstream_401).toBe(0);
    expect(stats.reloads).toBe(1);
    // The agent wrote the new token atomically with mode 0600, and the env file.
    expect(readFileSync(join(dir, "token"), "utf8")).toBe(current.value);
    expect(statSync(join(dir, "token")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, "app.env"), "utf8")).toBe(`LD_TOKEN=${current.value}\n`);
    // The confirmation came from the agent, by fingerprint; nothing failed.
    const confirmations = await stack.rt.state.consumers.confirmations(req.rotationId);
    expect([...confirmations.keys()]).toEqual(["python-app"]);
    const history = await stack.rt.audit.history({ policyId: "ld-app", limit: 100 });
    expect(history.find((h) => h.step === "confirmation" && h.outcome === "ok")?.message).toContain("fingerprint");
    expect(history.some((h) => h.step === "consumer-failure")).toBe(false);
    // The agent's status names versions, never values; its log holds no value either.
    const status = (await (await fetch(`http://127.0.0.1:${agentPort}/status`)).json()) as { secrets: { versionId: string; confirmedVersionId: string }[] };
    expect(status.secrets[0]).toMatchObject({ versionId: req.rotationId, confirmedVersionId: req.rotationId });
    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [managed.value, current.value, CONSUMER_TOKEN]) {
      expect(agent.output()).not.toContain(secret);
      expect(JSON.stringify(status)).not.toContain(secret);
      expect(dump).not.toContain(secret);
    }
    expect(agent.output()).toContain("confirmed to rekey");
  });

  it("a reload command that fails: no confirmation, the rotation keeps waiting, rekey status shows it and it is alerted", async () => {
    const { agent } = await startAgentAndApp(`echo "app.service: reload refused" >&2; exit 3`);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-app", reason: "manual", actor: "test" });
    const alert = await alerts.waitFor("rotation.consumer-failed", (e) => e.rotationId === req.rotationId, 60_000);
    expect(alert).toMatchObject({ policyId: "ld-app", versionId: req.rotationId, consumers: ["python-app"], stage: "reload" });
    expect(alert.message).toContain("reload command exited with code 3");
    // The agent tries again (backoff from 1 s) and never confirms.
    await until("a second report", async () => (await stack.rt.audit.history({ policyId: "ld-app", limit: 200 })).filter((h) => h.step === "consumer-failure").length >= 2, 30_000);
    expect((await stack.rt.state.consumers.confirmations(req.rotationId)).size).toBe(0);
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-confirmation");
    expect(ld.isLive(managed.value)).toBe(true);
    expect((await appStats()).reloads).toBe(0);

    // `rekey status`, as an operator runs it.
    const policyDir = join(dir, "policies");
    await import("node:fs/promises").then((fs) => fs.mkdir(policyDir));
    writeFileSync(join(policyDir, "ld-app.json"), JSON.stringify(policy));
    const { stdout } = await promisify(execFile)(process.execPath, ["bin/rekey.js", "status"], {
      env: { PATH: process.env.PATH ?? "", ...awsEnv(), REDIS_URL: redisUrl(), REKEY_PREFIX: stack.prefix, REKEY_POLICY_DIR: policyDir, LD_ADMIN_TOKEN: "x", [HOOK_KEY_ENV]: HOOK_KEY },
      timeout: 60_000,
    });
    expect(stdout).toContain(`${req.rotationId}  manual  awaiting-confirmation  waiting for consumers python-app (push)`);
    expect(stdout).toMatch(/! python-app failed \(reload\) at \d{4}-\d\d-\d\dT[\d:]+Z: reload command exited with code 3: app\.service: reload refused/);
    expect(agent.output()).not.toContain(managed.value);
  });

  it("refuses forged, stale and replayed webhooks; a genuine one makes it read the secret at once", async () => {
    await startAgentAndApp(`kill -HUP "$(cat '${join(dir, "app.pid")}')"`, { poll: "10m" });
    const agentStatus = async () => ((await (await fetch(`http://127.0.0.1:${agentPort}/status`)).json()) as { secrets: { versionId: string }[] }).secrets[0]!.versionId;
    const first = await agentStatus();
    // A new version appears in the store without rekey (the agent polls only every 10 minutes).
    const newToken = ld.addToken({ name: "python-app-2", role: "reader" });
    const versionId = randomUUID();
    await stack.store.putPending(SECRET, versionId, newToken.value);
    await stack.store.promote(SECRET, versionId);

    const event: NotificationEvent = {
      schemaVersion: 1,
      event: "rotation.awaiting-confirmation",
      rotationId: versionId,
      policyId: "ld-app",
      provider: "launchdarkly",
      secretId: SECRET.secretId,
      versionId,
      reason: "manual",
      message: "load it",
      at: new Date().toISOString(),
      consumers: ["python-app"],
    };
    const post = async (r: { headers: Record<string, string>; body: string }) =>
      (await fetch(`http://127.0.0.1:${agentPort}/rekey/webhook`, { method: "POST", headers: r.headers, body: r.body })).status;

    const forged = webhookRequest(event, `whsec_${Buffer.from("someone-elses-key-0123456789abcd").toString("base64")}`, Date.now(), "msg-forged");
    expect(await post(forged)).toBe(401);
    const unsigned = webhookRequest(event, HOOK_KEY, Date.now(), "msg-unsigned");
    delete unsigned.headers["webhook-signature"];
    expect(await post(unsigned)).toBe(401);
    const stale = webhookRequest(event, HOOK_KEY, Date.now() - 10 * 60_000, "msg-stale");
    expect(await post(stale)).toBe(401);
    const tampered = webhookRequest(event, HOOK_KEY, Date.now(), "msg-tampered");
    expect(await post({ ...tampered, body: tampered.body.replace("ld-app", "ld-apq") })).toBe(401);
    await new Promise((r) => setTimeout(r, 500));
    expect(await agentStatus()).toBe(first);

    const genuine = webhookRequest(event, HOOK_KEY, Date.now(), "msg-genuine");
    expect(await post(genuine)).toBe(200);
    await until("agent read the new version", async () => (await agentStatus()) === versionId, 15_000);
    await until("app reloaded", async () => (await appStats()).reloads === 1, 15_000);
    // The same request again: a replay.
    expect(await post(genuine)).toBe(409);
    expect(readFileSync(join(dir, "token"), "utf8")).toBe(newToken.value);
  });
});
