/**
 * Upstash QStash rotated end to end on real Redis, the real AWS SDK against the emulator and the
 * QStash fake over HTTP:
 * - the token (a reset by the Developer API, a cut-over): consumers warned before the reset, the
 *   new token verified with /v2/topics, stored and promoted at once, consumers told;
 * - the signing keys (a roll, the pair stored as one JSON secret): no second roll while receivers
 *   have not confirmed the first, and a roll again once they have.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { encodeSigningKeys } from "../../src/providers/qstash/signing-keys.ts";
import { QStashFake } from "../fakes/qstash.ts";
import { confirmVersion, type Receiver, startReceiver, statusOf, WEBHOOK_KEY, WEBHOOK_KEY_ENV, webhookTarget } from "../helpers/human.ts";
import { dumpRedis, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const PUBLISHER_TOKEN = "qstash-publisher-token-abcdefghijklmnop";
const RECEIVER_TOKEN = "qstash-receiver-token-abcdefghijklmnopq";

describe("QStash rotation end to end", () => {
  let qstash: QStashFake;
  let receiver: Receiver;
  let stack: Stack | undefined;

  beforeEach(async () => {
    qstash = await new QStashFake().start();
    receiver = await startReceiver();
  });

  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await receiver.close();
    await qstash.close();
  });

  it("token: consumers warned before the reset, the new token verified with /v2/topics, stored and promoted at once, consumers told", async () => {
    const policy: PolicyInput = {
      id: "qstash-token",
      owner: "owner@example.com",
      provider: { kind: "qstash-token", baseUrl: qstash.url, managementUrl: qstash.url, email: qstash.email, management: { env: "UPSTASH_API_KEY" }, userId: qstash.userId() },
      target: { secretId: "prod/qstash-token", region: REGION },
      consumers: [{ id: "publisher", confirm: "push", tokenHash: tokenHash(PUBLISHER_TOKEN) }],
      acceptCutover: true,
      notify: [webhookTarget(receiver)],
    };
    stack = await startStack({ policies: [policy], env: { UPSTASH_API_KEY: qstash.apiKey, [WEBHOOK_KEY_ENV]: WEBHOOK_KEY } });
    const oldToken = qstash.token();
    await stack.store.create!({ secretId: "prod/qstash-token", region: REGION }, oldToken);

    const req = await stack.rt.rotations.enqueue({ policyId: "qstash-token", reason: "manual", actor: "cli:test" });
    await statusOf(stack, req.rotationId, ["awaiting-confirmation"]);
    const newToken = qstash.token();
    expect(qstash.tokenRotations()).toBe(1);
    expect(newToken).not.toBe(oldToken);
    expect(qstash.wasRetired(oldToken)).toBe(true);
    // Stored and promoted at once: AWSCURRENT is the new token while the consumer has not confirmed.
    const current = await stack.store.getCurrent({ secretId: "prod/qstash-token", region: REGION });
    expect(current).toMatchObject({ versionId: req.rotationId, value: newToken });
    // Verified on the data plane once current (a cut-over: the old token is already dead), with the new token.
    const rotatedAt = qstash.requests.find((r) => r.method === "POST" && r.path.startsWith("/v2/qstash/rotate-token/"))!.at;
    expect(qstash.requests.filter((r) => r.method === "GET" && r.path === "/v2/topics" && r.status === 200 && r.at >= rotatedAt).length).toBeGreaterThanOrEqual(1);

    // Consumers were warned before the reset and told when the new version was current.
    const warned = await receiver.waitFor("rotation.cutover-pending", req.rotationId);
    expect(Date.parse(warned.at)).toBeLessThanOrEqual(rotatedAt);
    if (warned.event === "rotation.cutover-pending") expect(warned.consumers).toEqual(["publisher"]);
    const told = await receiver.waitFor("rotation.awaiting-confirmation", req.rotationId);
    expect(told.versionId).toBe(req.rotationId);

    expect(await confirmVersion(stack, "qstash-token", "publisher", req.rotationId, PUBLISHER_TOKEN)).toBe(200);
    await statusOf(stack, req.rotationId, ["completed"]);
    expect(qstash.tokenRotations()).toBe(1);
    expect(qstash.isLive(newToken)).toBe(true);
    const completed = await receiver.waitFor("rotation.completed", req.rotationId);
    expect(completed.message).toContain("nothing to revoke");

    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [oldToken, newToken, qstash.apiKey]) {
      expect(dump).not.toContain(secret);
      expect(stack.logs.text()).not.toContain(secret);
      expect(receiver.raw()).not.toContain(secret);
    }
  });

  /** The signing-key policy and its secret holding QStash's current pair; returns the stack, the secret and that pair. */
  const startSigningKeys = async () => {
    const policy: PolicyInput = {
      id: "qstash-keys",
      owner: "owner@example.com",
      provider: { kind: "qstash-signing-keys", baseUrl: qstash.url, management: { env: "QSTASH_TOKEN" } },
      target: { secretId: "prod/qstash-keys", region: REGION },
      consumers: [{ id: "receiver", confirm: "push", tokenHash: tokenHash(RECEIVER_TOKEN) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
    };
    const started = await startStack({ policies: [policy], env: { QSTASH_TOKEN: qstash.token() } });
    stack = started;
    const ref = { secretId: "prod/qstash-keys", region: REGION };
    const before = qstash.keys();
    await started.store.create!(ref, encodeSigningKeys(before));
    return { stack: started, ref, before };
  };

  it("signing keys: one roll stored as one JSON secret; no second roll until receivers confirmed, then the next rotation rolls", async () => {
    const { stack, ref, before } = await startSigningKeys();

    const first = await stack.rt.rotations.enqueue({ policyId: "qstash-keys", reason: "scheduled", actor: "scheduler", slot: Date.UTC(2026, 0, 1) });
    await statusOf(stack, first.rotationId, ["awaiting-confirmation"]);
    expect(qstash.keyRolls()).toBe(1);
    const after = qstash.keys();
    // The previous `next` signs now, so receivers that hold the old pair keep verifying.
    expect(after.current).toBe(before.next);
    const stored = await stack.store.getCurrent(ref);
    expect(stored?.versionId).toBe(first.rotationId);
    expect(JSON.parse(stored!.value)).toEqual({ current: after.current, next: after.next });

    // A second rotation of this policy while the receivers have not confirmed: no second roll (I3).
    const second = await stack.rt.rotations.enqueue({ policyId: "qstash-keys", reason: "scheduled", actor: "scheduler", slot: Date.UTC(2026, 0, 2) });
    expect(await statusOf(stack, second.rotationId, ["skipped", "awaiting-confirmation", "completed", "failed"])).toBe("skipped");
    const manual = await stack.rt.rotations.enqueue({ policyId: "qstash-keys", reason: "manual", actor: "cli:test" });
    expect(await statusOf(stack, manual.rotationId, ["skipped", "awaiting-confirmation", "completed", "failed"])).toBe("skipped");
    expect(qstash.keyRolls()).toBe(1);
    expect(qstash.keys()).toEqual(after);
    expect(await stack.rt.state.locks.inFlight("qstash-keys")).toBe(first.rotationId);

    // The receiver confirms the new pair: the first rotation completes, and the next one may roll.
    expect(await confirmVersion(stack, "qstash-keys", "receiver", first.rotationId, RECEIVER_TOKEN)).toBe(200);
    await statusOf(stack, first.rotationId, ["completed"]);
    expect(qstash.keyRolls()).toBe(1);
    const third = await stack.rt.rotations.enqueue({ policyId: "qstash-keys", reason: "manual", actor: "cli:test" });
    await statusOf(stack, third.rotationId, ["awaiting-confirmation"]);
    expect(qstash.keyRolls()).toBe(2);
    expect(qstash.keys().current).toBe(after.next);
    expect(JSON.parse((await stack.store.getCurrent(ref))!.value)).toEqual(qstash.keys());

    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const key of [before.current, before.next, after.next, qstash.keys().next]) {
      expect(dump).not.toContain(key);
      expect(stack.logs.text()).not.toContain(key);
    }
  });
  it("signing keys: the rolled pair, verified, is ONE write straight to AWSCURRENT; a write that failed is retried with the live pair, never a second roll", { timeout: 40_000 }, async () => {
    const { stack, ref, before } = await startSigningKeys();
    // Every write of the first attempt is refused (the in-process retries included): the rolled
    // pair is then only at QStash, and the queue's next attempt must store it without rolling again.
    stack.emulator.faults.inject({ route: "PutSecretValue", kind: "500", times: Infinity });

    const req = await stack.rt.rotations.enqueue({ policyId: "qstash-keys", reason: "manual", actor: "cli:test" });
    const s = stack;
    await until("the first attempt to fail", async () => ((await s.rt.queue.getJob(req.jobId))?.attemptsMade ?? 0) >= 1, 30_000);
    expect(qstash.keyRolls()).toBe(1);
    stack.emulator.faults.clear();
    await statusOf(stack, req.rotationId, ["awaiting-confirmation"], 30_000);
    expect(qstash.keyRolls()).toBe(1);
    const stored = await stack.store.getCurrent(ref);
    expect(stored?.versionId).toBe(req.rotationId);
    expect(JSON.parse(stored!.value)).toEqual(qstash.keys());
    expect(qstash.keys().current).toBe(before.next);
    const writes = stack.emulator.calls.filter((c) => c.secretId?.includes("qstash-keys") && c.status === 200 && ["PutSecretValue", "UpdateSecretVersionStage"].includes(c.operation));
    // The seed's create is a CreateSecret; the rotation's one accepted write is its PutSecretValue.
    expect(writes.map((c) => c.operation)).toEqual(["PutSecretValue"]);
  });

  it("token: a reset that times out here but lands at QStash later is read back, never sent twice", async () => {
    const policy: PolicyInput = {
      id: "qstash-late",
      owner: "owner@example.com",
      provider: { kind: "qstash-token", baseUrl: qstash.url, managementUrl: qstash.url, email: qstash.email, management: { env: "UPSTASH_API_KEY" }, userId: qstash.userId() },
      target: { secretId: "prod/qstash-late", region: REGION },
      consumers: [{ id: "publisher", confirm: "push", tokenHash: tokenHash(PUBLISHER_TOKEN) }],
      acceptCutover: true,
    };
    // rekey gives up on the call after 1 s; QStash carries the reset out after 7 s. rekey reads
    // the token back (hedged reads, sub-second back-off) until the late reset shows: it must store
    // that token as soon as it appears, and never send a second reset.
    stack = await startStack({ policies: [policy], env: { UPSTASH_API_KEY: qstash.apiKey }, requestTimeoutMs: 1_000 });
    const oldToken = qstash.token();
    await stack.store.create!({ secretId: "prod/qstash-late", region: REGION }, oldToken);
    qstash.faults.inject({ route: "rotate-token", kind: "delay", delayMs: 7_000, times: 1 });
    const req = await stack.rt.rotations.enqueue({ policyId: "qstash-late", reason: "manual", actor: "cli:test" });
    await statusOf(stack, req.rotationId, ["awaiting-confirmation"], 45_000);
    expect(qstash.tokenRotations()).toBe(1);
    const current = await stack.store.getCurrent({ secretId: "prod/qstash-late", region: REGION });
    expect(current?.value).toBe(qstash.token());
    expect(qstash.isLive(current!.value)).toBe(true);
    // The cut-over outage: from the moment the late reset killed the old token to AWSCURRENT.
    const [reset] = qstash.rotationLog();
    const madeCurrent = stack.emulator.currentMoves("prod/qstash-late").find((m) => m.value === reset!.token);
    expect(madeCurrent!.at - reset!.at).toBeLessThan(1_500);
  });
});
