/**
 * A Redis wipe in the middle of a rotation, on a real stack (Redis, the AWS emulator through the
 * real SDK, the API and a worker, the LaunchDarkly fake over HTTP, webhooks over HTTP) with the
 * consumer library in-process as one of the policy's two consumers:
 *
 * - the rotation had made its new token current and one consumer had confirmed it when Redis was
 *   wiped: `rekey reconcile` finds two live tokens (AWSCURRENT and AWSPREVIOUS) and no rotation,
 *   queues that rotation again, the library confirms the version again when asked, and the old
 *   token is revoked only after both consumers confirmed: one live token, the current one;
 * - a rotation that starts after such a wipe does not sweep the live AWSPREVIOUS token before it
 *   issues (I2): it goes only once the consumers confirmed the new value.
 */
import { CreateSecretCommand } from "@aws-sdk/client-secrets-manager";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { createSecretSource, type SecretSource } from "../../src/consumers/index.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { Policy, PolicyInput } from "../../src/policy/schema.ts";
import { reconcileAll } from "../../src/reconcile/reconcile.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { HOOK_KEY, HOOK_KEY_ENV } from "../helpers/consumer.ts";
import { main } from "../../src/cli/main.ts";
import { deleteKeys } from "../helpers/redis.ts";
import { cliEnv, emulatorClient, FINGERPRINT_KEY, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const ID = "ld-wipe";
const SECRET = { secretId: "prod/ld-wipe", region: REGION };
const APP_TOKEN = "wipe-node-app-consumer-token-0123456789";
const OPS_TOKEN = "wipe-ops-consumer-token-0123456789abcdef";

describe("a Redis wipe mid-rotation", { timeout: 90_000 }, () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let policy: Policy;
  let source: SecretSource | undefined;
  let server: Server | undefined;
  let managed: { id: string; value: string };
  let input: PolicyInput;
  let adminToken: string;
  const managedLive = () => ld.liveTokens().filter((t) => t.name !== "rekey management");

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    adminToken = admin.value;
    // The app's webhook endpoint, listening before the policy names it.
    server = createServer((req, res) => {
      if (source && req.url === "/rekey/webhook") return source.webhookHandler()(req, res);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", () => r()));
    input = {
      id: ID,
      owner: "owner@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: SECRET,
      consumers: [
        { id: "node-app", confirm: "push", tokenHash: tokenHash(APP_TOKEN) },
        { id: "ops", confirm: "push", tokenHash: tokenHash(OPS_TOKEN) },
      ],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
      notify: [{ kind: "webhook", url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/rekey/webhook`, signingKey: { env: HOOK_KEY_ENV } }],
    };
    stack = await startStack({ policies: [input], env: { LD_ADMIN_TOKEN: admin.value, [HOOK_KEY_ENV]: HOOK_KEY } });
    policy = stack.rt.policies.get(ID)!;
  });

  afterEach(async () => {
    await source?.close();
    source = undefined;
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    await stack.close();
    await ld.close();
  });

  const confirm = async (token: string, consumerId: string, versionId: string) => {
    const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ policyId: ID, consumerId, versionId }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const record = (id: string) => stack.rt.state.records.get(id);
  /** The `rekey` CLI in-process, against this stack (the policy from a file, as operators run it). */
  const cli = async (argv: string[]) => {
    const dir = mkdtempSync(join(tmpdir(), "rekey-wipe-"));
    writeFileSync(join(dir, `${ID}.json`), JSON.stringify(input));
    let out = "";
    let err = "";
    const env: Record<string, string> = { ...cliEnv(stack, dir), REKEY_FINGERPRINT_KEY: FINGERPRINT_KEY, LD_ADMIN_TOKEN: adminToken, [HOOK_KEY_ENV]: HOOK_KEY };
    // The AWS SDK reads its endpoint and credentials from the process's environment.
    const aws = Object.keys(env).filter((k) => k.startsWith("AWS_"));
    const saved = new Map(aws.map((k) => [k, process.env[k]]));
    for (const k of aws) process.env[k] = env[k];
    try {
      const code = await main(argv, { stdout: (t) => void (out += t), stderr: (t) => void (err += t), stdin: new PassThrough(), env });
      return { code, out, err };
    } finally {
      rmSync(dir, { recursive: true, force: true });
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  };
  const reconcileTwice = async () => {
    const deps = { state: stack.rt.state, audit: stack.rt.audit, store: stack.store, providers: stack.rt.providers, queue: stack.rt.queue, resolve: stack.rt.resolve, now: Date.now };
    const first = await reconcileAll(deps, [policy], { dryRun: false, settleMs: 0 });
    return (await reconcileAll(deps, [policy], { dryRun: false, settleMs: 0, previous: first.observations })).findings;
  };

  it("reconcile queues the forgotten rotation again; consumers confirm again; the old token goes only then", async () => {
    managed = ld.addToken({ name: "node-app", role: "reader" });
    await stack.store.create!(SECRET, managed.value);
    source = createSecretSource({
      secretId: SECRET.secretId,
      region: REGION,
      client: emulatorClient(stack.emulator),
      confirm: { url: stack.apiUrl, token: APP_TOKEN, policyId: ID, consumerId: "node-app", fingerprintKey: FINGERPRINT_KEY },
      webhook: { signingKey: HOOK_KEY },
      pollIntervalMs: 0,
      confirmRetryDelaysMs: [100, 200, 400, 800],
      onError: () => undefined,
    });
    await source.get();
    const req = await stack.rt.rotations.enqueue({ policyId: ID, reason: "manual", actor: "test" });
    // The library confirms the new version; "ops" has not yet when Redis is wiped.
    await until("the library confirmed", async () => (await stack.rt.state.consumers.confirmations(req.rotationId)).has("node-app"), 30_000);
    expect((await record(req.rotationId))?.status).toBe("awaiting-confirmation");
    await deleteKeys(stack.rt.redis, stack.prefix);
    expect(await record(req.rotationId)).toBeUndefined();
    // Two live tokens, and nobody left to revoke the old one.
    expect(managedLive()).toHaveLength(2);
    expect(ld.isLive(managed.value)).toBe(true);

    // `rekey reconcile` (two passes, the settle period shortened): a dry run says what it would
    // do, one line a finding; then the repair, as JSON.
    const previousVersion = Object.entries(await stack.store.stages(SECRET)).find(([, l]) => l.includes("AWSPREVIOUS"))![0];
    const dry = await cli(["reconcile", "--settle", "1s", "--dry-run"]);
    expect(dry.code, dry.err + dry.out).toBe(0);
    expect(dry.out.trimEnd().split("\n").at(-1)).toBe(
      `${ID}\ttwo-live\tversion ${req.rotationId} is AWSCURRENT and the previous credential ${managed.id} (version ${previousVersion}, AWSPREVIOUS) is still live, and Redis has no rotation for it: rotation ${req.rotationId} would be queued again, so that consumers confirm version ${req.rotationId} and the previous credential is revoked once they have (dry run: nothing queued)`,
    );
    expect(await stack.rt.queue.getJob(`reconcile@${ID}@${req.rotationId}`)).toBeUndefined();
    const reconciledAt = Date.now();
    const run = await cli(["reconcile", "--settle", "1s", "--json"]);
    expect(run.code, run.err).toBe(0);
    const { findings } = JSON.parse(run.out) as { findings: { kind: string; message: string; repaired: boolean; rotationId?: string }[] };
    expect(findings.map((f) => f.kind)).toEqual(["re-created"]);
    expect(findings[0]).toMatchObject({ repaired: true, rotationId: req.rotationId });
    expect(findings[0]!.message).toContain(`version ${req.rotationId} is AWSCURRENT and the previous credential ${managed.id}`);
    // The same rotation (its id is the version's): it waits for both consumers again; the library
    // confirms again when the rotation asks, although it had confirmed this version before.
    // A confirmation sent just before the wipe whose write comes after it finds no record and is
    // refused (it used to land on the wiped keys and count, with the time of before the wipe, so
    // this wait never ended): "again" is one sent after the rotation was queued again, to the
    // record that waits for it.
    await until(
      "the library confirmed again",
      async () => {
        const c = (await stack.rt.state.consumers.confirmations(req.rotationId)).get("node-app");
        return c !== undefined && c.at >= reconciledAt && (await record(req.rotationId))?.message === "waiting for ops";
      },
      30_000,
    );
    const waiting = await record(req.rotationId);
    expect(waiting).toMatchObject({ status: "awaiting-confirmation", reason: "reconcile", oldVersionId: expect.any(String) });
    expect(waiting!.message).toBe("waiting for ops");
    expect(ld.isLive(managed.value)).toBe(true);
    // Its value is current, consumers run on it: `rekey cancel` is refused (its failure path would
    // revoke the current token) and nothing changes.
    const refused = await stack.rt.rotations.cancel({ rotationId: req.rotationId, actor: "test" }).then(() => undefined, (err: unknown) => err);
    expect(refused).toMatchObject({ status: 409 });
    expect((refused as Error).message).toContain(`rotation ${req.rotationId} of ${ID} cannot be cancelled`);
    expect((await record(req.rotationId))?.status).toBe("awaiting-confirmation");
    expect(ld.isLive((await stack.store.getCurrent(SECRET))!.value)).toBe(true);

    const confirmedAt = Date.now();
    expect((await confirm(OPS_TOKEN, "ops", req.rotationId)).status).toBe(200);
    await until("completed", async () => (await record(req.rotationId))?.status === "completed", 30_000);
    // One live token, the one in AWSCURRENT; the old one deleted after the last confirmation.
    const current = (await stack.store.getCurrent(SECRET))!;
    expect(current.versionId).toBe(req.rotationId);
    expect(managedLive().map((t) => t.value)).toEqual([current.value]);
    const old = ld.tokens().find((t) => t.id === managed.id)!;
    expect(old.state).toBe("deleted");
    expect(old.lastModified).toBeGreaterThanOrEqual(confirmedAt);
    const history = await stack.rt.audit.history({ policyId: ID, limit: 50 });
    expect(history.map((h) => h.step)).toEqual(expect.arrayContaining(["reconcile.re-created", "start", "confirmation", "revoking"]));
    expect(history.find((h) => h.step === "start")?.message).toContain("queued again by reconcile");
    // Whole: nothing left for reconcile.
    expect((await reconcileTwice()).map((f) => f.kind)).toEqual(["whole"]);
  });

  it("a rotation after the wipe keeps the live AWSPREVIOUS token until its consumers confirmed the new one", async () => {
    // P was current, then C (both issued by rekey); C's rotation was forgotten before it revoked P.
    const pRotation = randomUUID();
    const previous = ld.addToken({ name: "node-app (rekey)", role: "reader", description: `[rekey policy=${ID} rotation=${pRotation}]` });
    await emulatorClient(stack.emulator).send(new CreateSecretCommand({ Name: SECRET.secretId, SecretString: previous.value, ClientRequestToken: pRotation }));
    const cRotation = randomUUID();
    const current = ld.addToken({ name: "node-app (rekey)", role: "reader", description: `[rekey policy=${ID} rotation=${cRotation}]` });
    await stack.store.putPending(SECRET, cRotation, current.value);
    await stack.store.promote(SECRET, cRotation);
    // A leftover of some lost request: swept before the rotation issues.
    const leftover = ld.addToken({ name: "node-app (rekey)", role: "reader", description: `[rekey policy=${ID} rotation=${randomUUID()}]` });

    const req = await stack.rt.rotations.enqueue({ policyId: ID, reason: "manual", actor: "test" });
    await until("awaiting confirmation", async () => (await record(req.rotationId))?.status === "awaiting-confirmation", 30_000);
    expect(ld.isLive(leftover.value)).toBe(false);
    // I2: P is not swept without a confirmation; C (now AWSPREVIOUS) is not revoked either.
    expect(ld.isLive(previous.value)).toBe(true);
    expect(ld.isLive(current.value)).toBe(true);

    const confirmedAt = Date.now();
    for (const [token, consumer] of [[APP_TOKEN, "node-app"], [OPS_TOKEN, "ops"]] as const) expect((await confirm(token, consumer, req.rotationId)).status).toBe(200);
    // Once seen timing out in a fresh-clone CI run (not reproduced since): the failure names where the rotation stood.
    await until("completed", async () => (await record(req.rotationId))?.status === "completed", 30_000).catch(async (err: unknown) => {
      const job = await stack.rt.queue.getJob((await record(req.rotationId))?.jobId ?? "");
      throw new Error(`${err instanceof Error ? err.message : String(err)}; record ${JSON.stringify(await record(req.rotationId))}; job ${job ? `${await job.getState()} ${JSON.stringify(job.data)}` : "gone"}`, { cause: err });
    });
    const now = (await stack.store.getCurrent(SECRET))!;
    expect(managedLive().map((t) => t.value)).toEqual([now.value]);
    for (const t of [previous, current]) expect(ld.tokens().find((x) => x.id === t.id)!.lastModified).toBeGreaterThanOrEqual(confirmedAt);
  });
});
