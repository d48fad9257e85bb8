/**
 * The consumer library (`rekey/consumer`) in-process in a small HTTP app that calls the
 * LaunchDarkly fake with its token, against a real rekey stack (Redis, the AWS emulator through
 * the real SDK, the API and worker over HTTP, webhooks over HTTP): a full rotation in which the
 * app's change handler runs, the library confirms, the old token dies only afterwards and no
 * request sees an upstream 401; a change handler that fails never confirms and is reported;
 * forged and replayed webhooks are refused; invalidate() coalesces a burst of 401s into one read.
 */
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createSecretSource, type SecretSource, type SecretSourceOptions } from "../../src/consumers/index.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { NotificationEvent } from "../../src/notify/events.ts";
import { webhookRequest } from "../../src/notify/webhook.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { collectStatus } from "../../src/rotation/status.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { type AlertReceiver, HOOK_KEY, HOOK_KEY_ENV, loadLoop, startAlertReceiver } from "../helpers/consumer.ts";
import { freePort } from "../helpers/redis-server.ts";
import { dumpRedis, emulatorClient, FINGERPRINT_KEY, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "node-app-consumer-token-0123456789abcdef";
const SECRET = { secretId: "prod/ld-node", region: REGION };

interface App {
  url: string;
  source: SecretSource;
  stats: { requests: number; upstream401: number; changes: number; errors: string[] };
  close(): Promise<void>;
}

/** The app: every request calls LaunchDarkly with the current token; on a 401 it invalidates and retries once. */
async function startApp(ldUrl: string, port: number, opts: Partial<SecretSourceOptions> & { apiUrl: string; failHandler?: boolean }): Promise<App> {
  const { apiUrl, failHandler, ...overrides } = opts;
  const stats = { requests: 0, upstream401: 0, changes: 0, errors: [] as string[] };
  const source = createSecretSource({
    secretId: SECRET.secretId,
    region: REGION,
    confirm: { url: apiUrl, token: CONSUMER_TOKEN, policyId: "ld-node", consumerId: "node-app", fingerprintKey: FINGERPRINT_KEY },
    webhook: { signingKey: HOOK_KEY },
    pollIntervalMs: 60_000,
    confirmRetryDelaysMs: [100, 200, 400, 800, 1_600],
    onError: (err) => stats.errors.push(err.message),
    ...overrides,
  });
  source.onChange(async () => {
    stats.changes++;
    if (failHandler) throw new Error("could not rebuild the LaunchDarkly client: connection pool busy");
  });
  const call = async (token: string) => (await fetch(`${ldUrl}/api/v2/caller-identity`, { headers: { authorization: token } })).status;
  const webhook = source.webhookHandler();
  const server: Server = createServer((req, res) => {
    if (req.url === "/rekey/webhook") return webhook(req, res);
    void (async () => {
      stats.requests++;
      let status = await call(await source.get());
      if (status === 401) {
        stats.upstream401++;
        status = await call((await source.invalidate()).value);
      }
      res.writeHead(status === 200 ? 200 : 502).end();
    })();
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await source.get();
  return {
    url,
    source,
    stats,
    close: async () => {
      await source.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("the consumer library in-process", { timeout: 90_000 }, () => {
  let ld: LaunchDarklyFake;
  let alerts: AlertReceiver;
  let stack: Stack;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };
  let appPort: number;
  let app: App | undefined;

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    alerts = await startAlertReceiver();
    admin = ld.addToken({ role: "admin", name: "rekey management" });
    managed = ld.addToken({ name: "node-app", role: "reader" });
    appPort = await freePort();
    const policy: PolicyInput = {
      id: "ld-node",
      owner: "owner@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: SECRET,
      consumers: [{ id: "node-app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
      notify: [
        { kind: "webhook", url: `http://127.0.0.1:${appPort}/rekey/webhook`, signingKey: { env: HOOK_KEY_ENV } },
        { kind: "webhook", url: alerts.url, signingKey: { env: HOOK_KEY_ENV } },
      ],
    };
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: admin.value, [HOOK_KEY_ENV]: HOOK_KEY } });
    await stack.store.create!(SECRET, managed.value);
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
    await stack.close();
    await alerts.close();
    await ld.close();
  });

  it("a full rotation: the handler runs, the library confirms, the old token dies after — and no upstream 401", async () => {
    app = await startApp(ld.url, appPort, { client: emulatorClient(stack.emulator), apiUrl: stack.apiUrl });
    const load = loadLoop(app.url);
    await until("load running", () => load.total() >= 10);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-node", reason: "manual", actor: "test" });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 60_000);
    const atEnd = load.total();
    // Keep calling a while after the old token was deleted.
    await until("more load", () => load.total() >= atEnd + 10);
    await load.stop();

    const current = (await stack.store.getCurrent(SECRET))!;
    expect(ld.isLive(managed.value)).toBe(false);
    expect(await app.source.get()).toBe(current.value);
    expect([...load.statuses.keys()]).toEqual([200]);
    expect(app.stats.upstream401).toBe(0);
    expect(app.stats.changes).toBe(1);
    expect(app.source.status()).toMatchObject({ versionId: req.rotationId, appliedVersionId: req.rotationId, confirmedVersionId: req.rotationId });
    // Verifiers read both: the new value first, then the one before it.
    expect((await app.source.all()).map((v) => v.value)).toEqual([current.value, managed.value]);
    const history = await stack.rt.audit.history({ policyId: "ld-node", limit: 100 });
    expect(history.find((h) => h.step === "confirmation" && h.outcome === "ok")).toMatchObject({ actor: "consumer:node-app" });
    expect(history.find((h) => h.step === "confirmation" && h.outcome === "ok")?.message).toContain("fingerprint");
    // The first confirmation after start found no rotation waiting (409); nothing else went wrong.
    expect(app.stats.errors).toEqual([]);
    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [managed.value, current.value, CONSUMER_TOKEN]) expect(dump).not.toContain(secret);
  });

  it("a change handler that fails: no confirmation, the rotation keeps waiting, the failure is in status and alerted", async () => {
    app = await startApp(ld.url, appPort, { client: emulatorClient(stack.emulator), apiUrl: stack.apiUrl, failHandler: true });
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-node", reason: "manual", actor: "test" });
    const alert = await alerts.waitFor("rotation.consumer-failed", (e) => e.rotationId === req.rotationId, 60_000);
    expect(alert).toMatchObject({ consumers: ["node-app"], stage: "handler", versionId: req.rotationId });
    expect(alert.message).toContain("connection pool busy");
    expect((await stack.rt.state.consumers.confirmations(req.rotationId)).size).toBe(0);
    expect(ld.isLive(managed.value)).toBe(true);
    const [status] = await collectStatus({ state: stack.rt.state, policies: stack.rt.policies.all() });
    expect(status?.inFlight?.status).toBe("awaiting-confirmation");
    expect(status?.inFlight?.consumerFailures).toEqual([expect.objectContaining({ consumerId: "node-app", stage: "handler", versionId: req.rotationId })]);
    expect(app.stats.errors.some((e) => e.includes("a change handler failed"))).toBe(true);
    expect(app.source.status().confirmedVersionId).not.toBe(req.rotationId);
  });

  it("refuses forged and replayed webhooks; a genuine one reloads", async () => {
    app = await startApp(ld.url, appPort, { client: emulatorClient(stack.emulator), apiUrl: stack.apiUrl });
    const before = app.source.status().versionId;
    const versionId = randomUUID();
    const next = ld.addToken({ name: "node-app-2", role: "reader" });
    await stack.store.putPending(SECRET, versionId, next.value);
    await stack.store.promote(SECRET, versionId);
    const event: NotificationEvent = {
      schemaVersion: 1,
      event: "rotation.completed",
      rotationId: versionId,
      policyId: "ld-node",
      provider: "launchdarkly",
      secretId: SECRET.secretId,
      versionId,
      reason: "manual",
      message: "done",
      at: new Date().toISOString(),
    };
    const post = async (r: { headers: Record<string, string>; body: string }) => (await fetch(`${app!.url}/rekey/webhook`, { method: "POST", headers: r.headers, body: r.body })).status;
    expect(await post(webhookRequest(event, "a-key-that-is-not-the-policys", Date.now(), "m1"))).toBe(401);
    expect(await post(webhookRequest(event, HOOK_KEY, Date.now() + 10 * 60_000, "m2"))).toBe(401);
    const tampered = webhookRequest(event, HOOK_KEY, Date.now(), "m3");
    expect(await post({ ...tampered, body: tampered.body.replace('"done"', '"DONE"') })).toBe(401);
    await new Promise((r) => setTimeout(r, 300));
    expect(app.source.status().versionId).toBe(before);

    const genuine = webhookRequest(event, HOOK_KEY, Date.now(), "m4");
    expect(await post(genuine)).toBe(200);
    await until("reloaded", () => app!.source.status().versionId === versionId, 10_000);
    expect(await post(genuine)).toBe(409);
    expect(app.stats.changes).toBe(1);
  });

  it("failure reports need the consumer's token; a refused one records and alerts nothing", async () => {
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-node", reason: "manual", actor: "test" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation");
    const report = async (body: Record<string, unknown>, token = CONSUMER_TOKEN) => {
      const res = await fetch(`${stack.apiUrl}/v1/consumer-failures`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const good = { policyId: "ld-node", consumerId: "node-app", versionId: req.rotationId, stage: "reload", message: "exit 1" };
    expect((await report(good, "not-the-token")).status).toBe(401);
    expect((await report({ ...good, stage: "coffee" })).status).toBe(400);
    // The token is this policy's consumer's: naming another policy or consumer is the same 401.
    expect((await report({ ...good, policyId: "nope" })).status).toBe(401);
    expect((await report({ ...good, consumerId: "someone-else" })).status).toBe(401);
    await new Promise((r) => setTimeout(r, 500));
    expect((await stack.rt.state.consumers.failures(req.rotationId)).size).toBe(0);
    expect(alerts.events.filter((e) => e.event === "rotation.consumer-failed")).toEqual([]);
    // The real one, with control characters a terminal must not receive.
    const ok = await report({ ...good, message: "reload failed\u001b[2J\nsee log" });
    expect(ok).toEqual({ status: 200, body: { rotationId: req.rotationId, recorded: true } });
    const kept = (await stack.rt.state.consumers.failures(req.rotationId)).get("node-app");
    expect(kept).toMatchObject({ stage: "reload", message: "reload failed [2J see log", versionId: req.rotationId });
    await alerts.waitFor("rotation.consumer-failed", (e) => e.rotationId === req.rotationId);
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-confirmation");
  });

  it("invalidate() after a 401 reads the store once for a burst of callers", async () => {
    app = await startApp(ld.url, appPort, { client: emulatorClient(stack.emulator), apiUrl: stack.apiUrl, webhook: undefined, minRefreshIntervalMs: 1_000 });
    const versionId = randomUUID();
    const next = ld.addToken({ name: "node-app-3", role: "reader" });
    await stack.store.putPending(SECRET, versionId, next.value);
    await stack.store.promote(SECRET, versionId);
    // The last read (at start) is more than minRefreshIntervalMs ago.
    await new Promise((r) => setTimeout(r, 1_100));
    const reads = stack.emulator.count("GetSecretValue");
    const got = await Promise.all(Array.from({ length: 20 }, () => app!.source.invalidate()));
    expect(new Set(got.map((v) => v.versionId))).toEqual(new Set([versionId]));
    expect(stack.emulator.count("GetSecretValue") - reads).toBe(1);
    // Within minRefreshIntervalMs the cache answers.
    await app.source.invalidate();
    expect(stack.emulator.count("GetSecretValue") - reads).toBe(1);
    await until("handler ran", () => app!.stats.changes === 1, 5_000);
  });
});
