/**
 * `rekey cancel <rotationId>` on real Redis and real HTTP: through the API with an operator token
 * (the audit names it). A queued rotation leaves the queue; a rotation waiting before its new value
 * is current ends through the engine's failure path (the new LaunchDarkly token is deleted at the
 * fake, nothing is written to AWS, the old token stays current); a rotation whose new version is
 * already current is refused, with why and what to do instead, and nothing changes; a token
 * without the operator scope gets 403 and nothing is written.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { directActor } from "../../src/cli/context.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { type SnykFake, startSnykFake } from "../fakes/snyk.ts";
import { runCli } from "../helpers/human.ts";
import { ldPolicy, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "cancel-consumer-token-abcdefghijklmnop";

/** One push consumer that confirms with CONSUMER_TOKEN; the wait keeps the old token past its timeout. */
const waitsForApp: Partial<PolicyInput> = {
  consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
  confirmation: { timeout: "1h", onTimeout: "keep-old" },
};


async function post(url: string, token: string | undefined, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: "POST", headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe("rekey cancel", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  const policies: PolicyInput[] = [];
  const old: Record<string, string> = {};
  let ops: string;
  let viewer: string;

  beforeAll(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    for (const id of ["ld-queued", "ld-waiting", "ld-promoted"]) policies.push(ldPolicy(ld, id, waitsForApp));
    stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value } });
    for (const p of policies) {
      old[p.id] = ld.addToken({ name: p.id }).value;
      await stack.store.create!({ secretId: p.target.secretId, region: REGION }, old[p.id]!);
    }
    ops = (await stack.rt.tokens.create({ name: "ops", scopes: ["operator"] }, "test")).token;
    viewer = (await stack.rt.tokens.create({ name: "view", scopes: ["viewer"] }, "test")).token;
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await ld?.close();
  });

  const cli = (args: string[]) => runCli(stack, policies, args, "", { REKEY_API_URL: stack.apiUrl, REKEY_TOKEN: ops });

  it("a queued rotation leaves the queue: nothing issued, the record says who cancelled it", async () => {
    await stack.worker!.pause();
    try {
      const req = await stack.rt.rotations.enqueue({ policyId: "ld-queued", reason: "manual", actor: "test" });
      const tokensBefore = ld.tokens().length;
      const r = await cli(["cancel", req.rotationId, "--reason", "wrong policy", "--json"]);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ rotationId: req.rotationId, policyId: "ld-queued", outcome: "cancelled", status: "failed" });
      expect(await stack.rt.queue.getJob(req.jobId)).toBeUndefined();
      const rec = await stack.rt.state.records.get(req.rotationId);
      expect(rec).toMatchObject({ status: "failed", cancelledBy: "token:ops", cancelReason: "wrong policy" });
      expect(rec?.message).toContain("cancelled by token:ops (wrong policy) before it started");
      expect(ld.tokens().length).toBe(tokensBefore);
      const history = await stack.rt.audit.history({ policyId: "ld-queued", limit: 10 });
      expect(history.find((h) => h.step === "cancel")).toMatchObject({ rotationId: req.rotationId, outcome: "ok", actor: "token:ops" });
      // It never held the policy: a new rotation starts at once.
      expect(await stack.rt.state.locks.inFlight("ld-queued")).toBeUndefined();
    } finally {
      stack.worker!.resume();
    }
  }, 60_000);

  it("a leak response is not cancelled: the leaked credential must not stay current", async () => {
    await stack.worker!.pause();
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-queued", reason: "leak", actor: "test" });
    try {
      const r = await cli(["cancel", req.rotationId]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("the API refused (409)");
      expect(r.stderr).toContain("answers a leak and cannot be cancelled: the leaked credential would stay current");
      expect(await stack.rt.queue.getJob(req.jobId)).toBeDefined();
      expect(await stack.rt.state.records.get(req.rotationId)).toBeUndefined();
    } finally {
      await (await stack.rt.queue.getJob(req.jobId))?.remove();
      stack.worker!.resume();
    }
  }, 60_000);

  it("a rotation waiting before its new value is current: the new LaunchDarkly token is deleted, nothing is written, the old token stays current", async () => {
    // AWS throttles the one write to AWSCURRENT: the rotation has issued and verified its new
    // token, gives the point of no return back once the write is refused, and waits to retry.
    stack.emulator.faults.inject({ route: "PutSecretValue", kind: "429", times: 100_000 });
    try {
      const req = await stack.rt.rotations.enqueue({ policyId: "ld-waiting", reason: "manual", actor: "test" });
      const ref = { secretId: "prod/ld-waiting", region: REGION };
      const issued = await until("the new token issued", async () => ld.tokens().find((t) => t.description.includes(req.rotationId)));
      await until("a throttled write", () => stack.emulator.count("PutSecretValue", 400) > 0);

      const cancelled = cli(["cancel", req.rotationId, "--reason", "change freeze"]);
      await until("the cancel on the record", async () => (await stack.rt.state.records.get(req.rotationId))?.cancelRequestedAt);
      stack.emulator.faults.clear();
      const r = await cancelled;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`cancelled rotation ${req.rotationId} of ld-waiting (failed)`);
      expect(r.stdout).toContain("the old credential is still current and working");

      // Every token this rotation issued is gone; the old one is current and live; no version was written.
      expect(ld.tokens().filter((t) => t.description.includes(req.rotationId)).every((t) => !ld.isLive(t.value))).toBe(true);
      expect(ld.isLive(issued.value)).toBe(false);
      expect(ld.isLive(old["ld-waiting"]!)).toBe(true);
      expect((await stack.store.getCurrent(ref))?.value).toBe(old["ld-waiting"]);
      expect(await stack.store.getVersion(ref, req.rotationId)).toBeUndefined();
      const rec = await stack.rt.state.records.get(req.rotationId);
      expect(rec).toMatchObject({ status: "failed", cancelledBy: "token:ops", cancelReason: "change freeze" });
      expect(rec?.promotedAt).toBeUndefined();
      expect(rec?.message).toContain("cancelled by token:ops (change freeze)");
      const history = await stack.rt.audit.history({ policyId: "ld-waiting", limit: 20 });
      expect(history.find((h) => h.step === "cancel")).toMatchObject({ rotationId: req.rotationId, outcome: "requested", actor: "token:ops" });
      expect(history.find((h) => h.rotationId === req.rotationId && h.outcome === "compensated")?.message).toContain("the new credential was revoked again and the old one stays current");
      expect(history.find((h) => h.rotationId === req.rotationId && h.outcome === "failed")).toBeDefined();
      // The policy is free again.
      expect(await stack.rt.state.locks.inFlight("ld-waiting")).toBeUndefined();
    } finally {
      stack.emulator.faults.clear();
    }
  }, 90_000);

  it("a rotation whose new version is current is refused, saying why and what to do instead; nothing changes", async () => {
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-promoted", reason: "manual", actor: "test" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation");
    const recBefore = await stack.rt.redis.hgetall(`${stack.prefix}:rot:${req.rotationId}`);
    const auditBefore = await stack.rt.redis.xlen(`${stack.prefix}:audit`);

    const r = await cli(["cancel", req.rotationId]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the API refused (409)");
    expect(r.stderr).toContain("its new version is already current");
    expect(r.stderr).toContain("waiting for app");
    expect(r.stderr).toContain("Have its consumers load the new version and confirm");

    expect(await stack.rt.redis.hgetall(`${stack.prefix}:rot:${req.rotationId}`)).toEqual(recBefore);
    expect(await stack.rt.redis.xlen(`${stack.prefix}:audit`)).toBe(auditBefore);
    expect((await stack.store.getCurrent({ secretId: "prod/ld-promoted", region: REGION }))?.versionId).toBe(req.rotationId);
    expect(ld.isLive(old["ld-promoted"]!)).toBe(true);

    // A viewer may not cancel: 403, and nothing is written either. Without a token: 401.
    const asViewer = await post(`${stack.apiUrl}/v1/rotations/${req.rotationId}/cancel`, viewer, {});
    expect(asViewer.status).toBe(403);
    expect(asViewer.json.error).toContain("operator");
    expect((await post(`${stack.apiUrl}/v1/rotations/${req.rotationId}/cancel`, undefined, {})).status).toBe(401);
    expect(await stack.rt.redis.hgetall(`${stack.prefix}:rot:${req.rotationId}`)).toEqual(recBefore);
    expect(await stack.rt.redis.xlen(`${stack.prefix}:audit`)).toBe(auditBefore);

    // The rotation goes on as if nothing had been asked: its consumer confirms, it completes.
    const confirmed = await post(`${stack.apiUrl}/v1/confirmations`, CONSUMER_TOKEN, { policyId: "ld-promoted", consumerId: "app", versionId: req.rotationId });
    expect(confirmed.status).toBe(200);
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed");
    expect(ld.isLive(old["ld-promoted"]!)).toBe(false);

    // An ended rotation has nothing to cancel; an unknown one is not found.
    const ended = await post(`${stack.apiUrl}/v1/rotations/${req.rotationId}/cancel`, ops, {});
    expect(ended.status).toBe(409);
    expect(ended.json.error).toContain("has already ended (completed)");
    const unknown = await post(`${stack.apiUrl}/v1/rotations/00000000-0000-4000-8000-000000000000/cancel`, ops, {});
    expect(unknown.status).toBe(404);
    const bad = await post(`${stack.apiUrl}/v1/rotations/not-a-uuid/cancel`, ops, {});
    expect(bad.status).toBe(400);
  }, 90_000);
});

describe("rekey cancel of a human step", () => {
  let snyk: SnykFake;
  let stack: Stack;
  const policy: PolicyInput = {
    id: "snyk-pat-cancel",
    owner: "owner@example.com",
    provider: { kind: "snyk-pat", baseUrl: "" },
    target: { secretId: "prod/snyk-pat-cancel", region: REGION },
    consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
    human: { timeout: "1h", remindEvery: "30m" },
  };

  beforeAll(async () => {
    snyk = await startSnykFake();
    policy.provider = { kind: "snyk-pat", baseUrl: snyk.url };
    stack = await startStack({ policies: [policy] });
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await snyk?.close();
  });

  it("a rotation waiting for its owner ends failed (not needs-attention: nobody timed out), the old PAT current; with direct Redis access the command says so", async () => {
    const owner = snyk.addUser({ email: "owner@example.com" });
    const oldPat = snyk.createPat(owner.id, { name: "ci", expiresInDays: 60 });
    await stack.store.create!({ secretId: "prod/snyk-pat-cancel", region: REGION }, oldPat.token);
    const req = await stack.rt.rotations.enqueue({ policyId: policy.id, reason: "manual", actor: "test" });
    await until("awaiting-human", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-human");

    const r = await runCli(stack, [policy], ["cancel", req.rotationId, "--reason", "owner on leave", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`rekey cancel: acting with direct Redis access (REDIS_URL), audited as ${directActor()}`);
    const res = JSON.parse(r.stdout) as { outcome: string; status: string; message: string };
    expect(res).toMatchObject({ outcome: "cancelled", status: "failed" });
    expect(res.message).toContain(`rotation failed at awaiting-human: cancelled by ${directActor()} (owner on leave)`);
    expect(res.message).toContain("the old credential is still current and working");
    expect((await stack.store.getCurrent({ secretId: "prod/snyk-pat-cancel", region: REGION }))?.value).toBe(oldPat.token);
    expect(snyk.isLive(oldPat.token)).toBe(true);
    expect(await stack.rt.state.locks.inFlight(policy.id)).toBeUndefined();
    const history = await stack.rt.audit.history({ policyId: policy.id, limit: 20 });
    expect(history.find((h) => h.step === "cancel")?.actor).toBe(directActor());
  }, 60_000);
});
