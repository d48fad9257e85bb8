/**
 * A LaunchDarkly token rotated end to end on real Redis, the real AWS SDK against the emulator,
 * and the LaunchDarkly fake over HTTP: issue, store, verify, promote, confirm (push and probe),
 * revoke — with the old token alive until the last consumer confirmed.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fingerprint, tokenHash } from "../../src/consumers/fingerprint.ts";
import { PermanentError } from "../../src/errors.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ADMIN_TOKEN, dumpRedis, FINGERPRINT_KEY, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "billing-consumer-token-abcdefghijklmnop";

interface ProbeServer {
  url: string;
  report: { versionId?: string; fingerprint?: string };
  close(): Promise<void>;
}

async function startProbe(): Promise<ProbeServer> {
  const state: ProbeServer = { url: "", report: {}, close: async () => {} };
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(state.report));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/rekey-version`;
  state.close = () => new Promise((r) => server.close(() => r()));
  return state;
}

function ldPolicy(ld: LaunchDarklyFake, probeUrl: string, extra: Partial<PolicyInput> = {}): PolicyInput {
  return {
    id: "ld-api",
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    schedule: { cron: "0 3 * * 1", timezone: "Europe/Berlin" },
    target: { secretId: "prod/ld-api-token", region: REGION },
    consumers: [
      { id: "billing", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) },
      { id: "web", confirm: "probe", url: probeUrl, interval: "1s" },
    ],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
    ...extra,
  };
}

async function confirm(stack: Stack, body: Record<string, unknown>, token = CONSUMER_TOKEN): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("LaunchDarkly rotation end to end", () => {
  let ld: LaunchDarklyFake;
  let probe: ProbeServer;
  let stack: Stack;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    probe = await startProbe();
    admin = ld.addToken({ role: "admin", name: "rekey management" });
    managed = ld.addToken({ name: "billing-service", customRoleIds: ["billing"] });
    stack = await startStack({ policies: [ldPolicy(ld, probe.url)], env: { LD_ADMIN_TOKEN: admin.value } });
    await stack.store.create!({ secretId: "prod/ld-api-token", region: REGION }, managed.value);
  });

  afterEach(async () => {
    await stack.close();
    await probe.close();
    await ld.close();
  });

  it("rotates, waits for every consumer, then deletes the old token — AWSCURRENT always works", async () => {
    // Watch AWSCURRENT the whole time: its value must work at LaunchDarkly at every moment.
    let checks = 0;
    let broken = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const cur = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
        checks++;
        if (!cur || !ld.isLive(cur.value)) broken++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();

    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "scheduled", actor: "scheduler", slot: Date.UTC(2026, 10, 23, 2) });
    expect(req.added).toBe(true);
    const rec = await until("awaiting-confirmation", async () => {
      const r = await stack.rt.state.records.get(req.rotationId);
      return r?.status === "awaiting-confirmation" ? r : undefined;
    });

    const current = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
    expect(current?.versionId).toBe(req.rotationId);
    expect(current?.value).not.toBe(managed.value);
    const newToken = ld.tokens().find((t) => t.value === current?.value);
    expect(newToken?.customRoleIds).toEqual(["billing"]);
    expect(rec.newCredentialId).toBe(newToken?.id);
    // I2: both consumers still outstanding — the old token must still work.
    expect(ld.isLive(managed.value)).toBe(true);

    // A forged confirmation (wrong bearer) is refused and changes nothing.
    const forged = await confirm(stack, { policyId: "ld-api", consumerId: "billing", versionId: req.rotationId }, "not-the-token");
    expect(forged.status).toBe(401);
    // A mistaken one (an old version) is refused too.
    const mistaken = await confirm(stack, { policyId: "ld-api", consumerId: "billing", versionId: "11111111-2222-4333-8444-555555555555" });
    expect(mistaken.status).toBe(409);
    expect((await stack.rt.state.consumers.confirmations(req.rotationId)).size).toBe(0);

    // billing confirms by fingerprint (it never sends the value).
    const ok = await confirm(stack, { policyId: "ld-api", consumerId: "billing", fingerprint: fingerprint(FINGERPRINT_KEY, current!.value) });
    expect(ok.status).toBe(200);
    expect(ok.body.waitingFor).toEqual(["web"]);
    await new Promise((r) => setTimeout(r, 300));
    expect(ld.isLive(managed.value)).toBe(true);

    // web reports the new version through its probe: the last confirmation.
    probe.report = { versionId: req.rotationId };
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed");
    expect(ld.isLive(managed.value)).toBe(false);
    expect(ld.isLive(current!.value)).toBe(true);
    expect(ld.isLive(admin.value)).toBe(true);
    // Exactly one live managed token: the new one.
    expect(ld.liveTokens().filter((t) => t.id !== admin.id).map((t) => t.id)).toEqual([newToken!.id]);

    watching = false;
    await watcher;
    expect(checks).toBeGreaterThan(10);
    expect(broken).toBe(0);

    // The audit trail tells the story. Refusals are not written one by one (a flood of them would
    // trim the real history away): the consumer's mistaken one is summed into one entry a minute.
    const history = await stack.rt.audit.history({ policyId: "ld-api", limit: 50 });
    const steps = history.map((h) => `${h.step}:${h.outcome}`).reverse();
    expect(steps).toEqual(expect.arrayContaining(["start:ok", "issuing:ok", "confirmation:ok", "revoking:ok"]));
    // One write straight to AWSCURRENT: nothing staged as AWSPENDING, no label moved afterwards.
    expect(steps.filter((st) => st.startsWith("verifying") || st.startsWith("promoting"))).toEqual([]);
    expect(stack.emulator.count("PutSecretValue")).toBe(1);
    expect(stack.emulator.count("UpdateSecretVersionStage")).toBe(0);
    expect(steps.filter((st) => st === "confirmation:refused")).toHaveLength(0);

    // I5: no secret value anywhere in Redis, the logs, or the audit.
    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [managed.value, current!.value, admin.value]) {
      expect(dump).not.toContain(secret);
      expect(stack.logs.text()).not.toContain(secret);
    }
    expect(dump).toContain(req.rotationId);
  });

  it("keeps the old token and flags needs-attention when consumers do not confirm in time", async () => {
    stack.rt.policies.replace([{ policy: (await import("../../src/policy/schema.ts")).Policy.parse(ldPolicy(ld, probe.url, { confirmation: { timeout: "1s", onTimeout: "keep-old" } })), file: "ld.yaml" }]);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("needs-attention", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "needs-attention", 20_000);
    expect(ld.isLive(managed.value)).toBe(true);
    // A late confirmation still finishes the rotation.
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
    expect((await confirm(stack, { policyId: "ld-api", consumerId: "billing", versionId: cur!.versionId })).status).toBe(200);
    probe.report = { versionId: cur!.versionId };
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 40_000);
    expect(ld.isLive(managed.value)).toBe(false);
  });

  it("revokes on timeout where the policy says onTimeout: revoke", async () => {
    stack.rt.policies.replace([{ policy: (await import("../../src/policy/schema.ts")).Policy.parse(ldPolicy(ld, probe.url, { confirmation: { timeout: "1s", onTimeout: "revoke" } })), file: "ld.yaml" }]);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 20_000);
    expect(ld.isLive(managed.value)).toBe(false);
    const history = await stack.rt.audit.history({ policyId: "ld-api" });
    expect(history.some((h) => h.outcome === "timeout")).toBe(true);
  });

  it("a rotation after a completed one reads only what it needs: no identity call for the old token, no sweep", async () => {
    stack.rt.policies.replace([{ policy: (await import("../../src/policy/schema.ts")).Policy.parse(ldPolicy(ld, probe.url, { confirmation: { timeout: "1s", onTimeout: "revoke" } })), file: "ld.yaml" }]);
    const rotate = async () => {
      const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
      await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 20_000);
    };
    await rotate();
    const ldBefore = ld.requests.length;
    const awsBefore = stack.emulator.calls.length;
    await rotate();
    const routes = ld.requests.slice(ldBefore).map((r) => r.route ?? `${r.method} ${r.path}`);
    // The old token's id is the one the last rotation recorded for the version still current; the
    // last rotation left no other token of the policy, so nothing is listed to sweep.
    expect(routes.filter((r) => r.startsWith("GET /api/v2/caller-identity"))).toHaveLength(1);
    expect(routes.filter((r) => r === "GET /api/v2/tokens" || r.startsWith("GET /api/v2/tokens?"))).toEqual([]);
    expect(routes.filter((r) => r.startsWith("DELETE"))).toHaveLength(1);
    const aws = stack.emulator.calls.slice(awsBefore).map((c) => c.operation);
    expect(aws.sort()).toEqual(["GetSecretValue", "PutSecretValue"]);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id)).toHaveLength(1);
  });

  it("a job replayed after its rotation ended (the worker died before completing the job) revokes and sweeps nothing more", async () => {
    stack.rt.policies.replace([{ policy: (await import("../../src/policy/schema.ts")).Policy.parse(ldPolicy(ld, probe.url, { confirmation: { timeout: "1s", onTimeout: "revoke" } })), file: "ld.yaml" }]);
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 20_000);
    const job = (await stack.rt.queue.getJob(req.jobId))!;
    // The cursor the job last wrote: "done" is never written, the record's end is the truth.
    expect(["awaiting-confirmation", "revoking"]).toContain((job.data as { step: string }).step);
    // A second rotation is in flight when the stale job comes back: its new token must survive.
    const second = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    const secondToken = await until("second issued", async () => (await stack.rt.state.records.get(second.rotationId))?.newCredentialId);
    const requests = ld.requests.length;
    const audits = (await stack.rt.audit.history({ policyId: "ld-api", limit: 500 })).length;
    for (const step of ["awaiting-confirmation", "revoking"]) {
      const replay = { id: job.id, data: { ...job.data, step }, opts: job.opts, attemptsMade: 0, updateData: async () => undefined } as unknown as typeof job;
      expect(await stack.rt.engine.process(replay)).toEqual({ status: "completed" });
    }
    expect(ld.requests.slice(requests).filter((r) => r.method === "DELETE")).toEqual([]);
    expect(ld.tokens().some((t) => t.id === secondToken)).toBe(true);
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("completed");
    // Nothing was audited for the first rotation again.
    const after = await stack.rt.audit.history({ policyId: "ld-api", limit: 500 });
    expect(after.slice(0, after.length - audits).filter((a) => a.rotationId === req.rotationId)).toEqual([]);
  });

  it("a token create that timed out and lands after the consumers confirmed is swept before the rotation ends", { timeout: 40_000 }, async () => {
    // Requests get 2 s here, so a create left unanswered is waited out for 4 × 2 s.
    await stack.close();
    const onlyPush = ldPolicy(ld, probe.url, { consumers: [{ id: "billing", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }] });
    stack = await startStack({ policies: [onlyPush], env: { LD_ADMIN_TOKEN: admin.value }, requestTimeoutMs: 2_000 });
    await stack.store.create!({ secretId: "prod/ld-api-token", region: REGION }, managed.value);
    // LaunchDarkly carries out the first create 8 s late; rekey gives up on it after 2 s and its
    // retry (5 s later) issues, stores and promotes its own token before the late one lands.
    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "delay", delayMs: 8_000, times: 1 });
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation", 20_000);
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
    expect((await confirm(stack, { policyId: "ld-api", consumerId: "billing", versionId: cur!.versionId })).status).toBe(200);
    // The old token goes at once; the rotation waits for the late create before its last sweep.
    await until("old token revoked", () => !ld.isLive(managed.value), 10_000);
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("running");
    await until("late create landed", () => ld.requests.filter((r) => r.method === "POST" && r.path === "/api/v2/tokens" && r.status === 201).length === 2, 15_000);
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 15_000);
    const live = ld.liveTokens().filter((t) => t.id !== admin.id);
    expect(live.map((t) => t.value)).toEqual([cur!.value]);
    const history = await stack.rt.audit.history({ policyId: "ld-api", limit: 100 });
    expect(history.some((h) => h.step === "revoking" && h.outcome === "waiting")).toBe(true);
    expect(history.find((h) => h.step === "revoking" && h.outcome === "ok")?.message).toMatch(/removed 1 leftover credential/);
  });

  it("fails safely before the write: the new token is deleted and the old one stays current (I6)", async () => {
    // Hold the identity checks back, and delete the new token at LaunchDarkly before its
    // verification runs: verification must fail, nothing is written, and the rotation cleans up.
    ld.faults.inject({ route: "GET /api/v2/caller-identity", kind: "delay", delayMs: 1_500, times: 2 });
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    const newId = await until("issued", async () => ld.tokens().find((t) => t.description.includes(req.rotationId))?.id);
    const del = await fetch(`${ld.url}/api/v2/tokens/${newId}`, { method: "DELETE", headers: { authorization: admin.value } });
    expect(del.status).toBe(204);
    // The clean-up's first call fails too: the clean-up must resume on retry and run once to the end.
    ld.faults.inject({ route: `DELETE /api/v2/tokens/${newId}`, kind: "500", times: 1 });
    const status = await until("ended", async () => {
      const s = (await stack.rt.state.records.get(req.rotationId))?.status;
      return s === "failed" || s === "completed" || s === "needs-attention" ? s : undefined;
    }, 45_000);
    expect(status).toBe("failed");
    expect(ld.count(`DELETE /api/v2/tokens/${newId}`, 500)).toBe(1);
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
    expect(cur?.value).toBe(managed.value);
    expect(ld.isLive(managed.value)).toBe(true);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id).map((t) => t.id)).toEqual([managed.id]);
    // Nothing was written for the rotation, and the lock is released: a new rotation may start.
    expect(await stack.store.getVersion({ secretId: "prod/ld-api-token", region: REGION }, req.rotationId)).toBeUndefined();
    expect(stack.emulator.count("PutSecretValue")).toBe(0);
    expect(await stack.rt.state.locks.inFlight("ld-api")).toBeUndefined();
    // The failure path ran once: one audit record of the failure, and the job ended failed.
    const failures = (await stack.rt.audit.history({ policyId: "ld-api", limit: 100 })).filter((h) => h.rotationId === req.rotationId && h.outcome === "failed");
    expect(failures).toHaveLength(1);
    expect(failures[0]!.message).toContain("the old credential is still current and working");
    expect(await (await stack.rt.queue.getJob(req.jobId))?.getState()).toBe("failed");
  });

  it("keeps one rotation in flight per policy (I3): a second request is skipped", async () => {
    const first = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(first.rotationId))?.status === "awaiting-confirmation");
    const second = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("skipped", async () => (await stack.rt.state.records.get(second.rotationId))?.status === "skipped");
    expect(ld.liveTokens().filter((t) => t.id !== admin.id)).toHaveLength(2);
    expect(await stack.rt.state.locks.inFlight("ld-api")).toBe(first.rotationId);
    // The skipped request does not speak for the policy: status still shows the running one.
    const summary = await stack.rt.state.records.policySummary("ld-api");
    expect(summary.lastRotationId).toBe(first.rotationId);
    expect(summary.lastStatus).toBe("awaiting-confirmation");
  });

  it("answers the operator API with auth: status lists the waiting consumers", async () => {
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation");
    // Nobody confirms: after lingering for a confirmation, the job parks (delayed).
    await until("parked", async () => (await (await stack.rt.queue.getJob(req.jobId))?.isDelayed()) === true);
    const unauth = await fetch(`${stack.apiUrl}/v1/status`);
    expect(unauth.status).toBe(401);
    const res = await fetch(`${stack.apiUrl}/v1/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { policyId: string; inFlight?: { rotationId: string; waitingFor: { consumerId: string }[] } }[];
    const ld1 = body.find((p) => p.policyId === "ld-api");
    expect(ld1?.inFlight?.rotationId).toBe(req.rotationId);
    expect(ld1?.inFlight?.waitingFor.map((w) => w.consumerId).sort()).toEqual(["billing", "web"]);
    // Bull Board: the admin token as the HTTP Basic password, and no secret in what it shows.
    expect((await fetch(`${stack.apiUrl}/admin/queues`)).status).toBe(401);
    const basic = `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString("base64")}`;
    const board = await fetch(`${stack.apiUrl}/admin/queues`, { headers: { authorization: basic } });
    expect(board.status).toBe(200);
    expect(await board.text()).toContain("<html");
    const jobs = await fetch(`${stack.apiUrl}/admin/queues/api/queues?activeQueue=rotations&status=delayed&page=1`, { headers: { authorization: basic } });
    expect(jobs.status).toBe(200);
    const jobsText = await jobs.text();
    expect(jobsText).toContain(req.rotationId);
    expect(jobsText).not.toContain(managed.value);
    expect(jobsText).not.toContain(admin.value);
    // Malformed bodies get 4xx, never 5xx.
    for (const body of ["{not json", JSON.stringify({ policyId: 5 }), JSON.stringify({ policyId: "ld-api", consumerId: "billing" })]) {
      const r = await fetch(`${stack.apiUrl}/v1/confirmations`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` }, body });
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }
  });
  it("a write whose answer is lost is read back by its version id: nothing is undone, the new token stays (I6)", async () => {
    // AWS writes the version, then the answer never arrives and the store keeps failing: the step
    // must read the version back, not guess (revoking the new token would break every consumer).
    const realPut = stack.store.putCurrent!.bind(stack.store);
    let calls = 0;
    stack.store.putCurrent = async (...args: Parameters<typeof realPut>) => {
      if (++calls === 1) await realPut(...args);
      throw new PermanentError("PutSecretValue: connection dropped after the request was sent");
    };
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-api", reason: "manual", actor: "cli" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation");
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-api-token", region: REGION });
    expect(cur?.versionId).toBe(req.rotationId);
    expect(ld.isLive(cur!.value)).toBe(true);
    expect(ld.isLive(managed.value)).toBe(true);
    const history = await stack.rt.audit.history({ policyId: "ld-api", limit: 50 });
    expect(history.some((h) => h.step === "issuing" && h.outcome === "recovered")).toBe(true);
    expect(history.some((h) => h.outcome === "failed" || h.outcome === "compensated")).toBe(false);
    expect(calls).toBe(1);
  });
});
