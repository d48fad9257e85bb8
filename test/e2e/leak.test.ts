/**
 * Leak response end to end on real Redis, the AWS emulator (with its 50 writes/s quota) and the
 * provider fakes over HTTP with their rate limits on: a mass leak across providers, a leak that
 * takes over a rotation waiting on consumers, and a leak found by its value on standard input.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { directActor } from "../../src/cli/context.ts";
import { afterEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { main } from "../../src/cli/main.ts";
import { formatLeakReport, runLeak } from "../../src/cli/commands/leak.ts";
import { leakResponseFor, type LeakReport } from "../../src/leak/leak.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { QStashFake } from "../fakes/qstash.ts";
import { startSnykFake } from "../fakes/snyk.ts";
import type { LoggedRequest } from "../fakes/http-fake.ts";
import { ADMIN_TOKEN, dumpRedis, ldPolicy, REGION, startStack, until } from "../helpers/stack.ts";
import { captureIo } from "../helpers/human.ts";

const CONSUMER_TOKEN = "leak-test-consumer-token-0123456789";
const BILLING_CONSUMER = { id: "billing", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) } as const;

const io = (stdin = "") => captureIo(stdin);

/** 429 answers grouped by window: a provider must never see more than the first one of a window. */
function max429PerWindow(requests: LoggedRequest[], windowMs: number): number {
  const per = new Map<number, number>();
  for (const r of requests) if (r.status === 429) per.set(Math.floor(r.at / windowMs), (per.get(Math.floor(r.at / windowMs)) ?? 0) + 1);
  return Math.max(0, ...per.values());
}


describe("leak response", () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.reverse()) await c();
    closers.length = 0;
  });

  /** One LaunchDarkly policy, ld-billing, whose managed token is the secret's current value. */
  async function billing(extra: Partial<PolicyInput> = {}) {
    const ld = await startLaunchDarklyFake();
    closers.push(() => ld.close());
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    const managed = ld.addToken({ name: "billing-service", role: "reader" });
    const stack = await startStack({ policies: [ldPolicy(ld, "ld-billing", extra)], env: { LD_ADMIN_TOKEN: admin.value } });
    closers.push(() => stack.close());
    await stack.store.create!({ secretId: "prod/ld-billing", region: REGION }, managed.value);
    return {
      ld,
      admin,
      managed,
      stack,
      scheduled: () => stack.rt.rotations.enqueue({ policyId: "ld-billing", reason: "scheduled", actor: "scheduler", slot: Date.UTC(2026, 0, 5, 3) }),
      current: () => stack.store.getCurrent({ secretId: "prod/ld-billing", region: REGION }),
    };
  }

  it("rotates 50 policies across rate-limited providers: every old credential revoked, no 429 storm", { timeout: 150_000 }, async () => {
    // The injected 429 names a 6 s Retry-After: longer than any wait of the other providers here.
    const ld = await startLaunchDarklyFake({ rateLimitPerWindow: 40, tokenLimit: 200, injected429: { reset: false, retryAfterSeconds: 6 } });
    const snyk = await startSnykFake({ rateLimit: 12, rateWindowMs: 4_000 });
    const qstash = await new QStashFake({ regions: ["r1", "r2", "r3", "r4"], burstLimit: 4, burstWindowMs: 1_000 }).start();
    closers.push(() => ld.close(), () => snyk.close(), () => qstash.close());

    const ldAdmin = ld.addToken({ role: "admin", name: "rekey management" });
    const org = snyk.addOrg();
    const snykAdmin = snyk.addUser({ orgs: [org] });
    const policies: PolicyInput[] = [];
    const seeds: { id: string; value: string; check: () => boolean }[] = [];
    for (let i = 0; i < 30; i++) {
      const t = ld.addToken({ name: `svc-${i}`, role: "reader" });
      const id = `ld-${i}`;
      policies.push(ldPolicy(ld, id));
      seeds.push({ id, value: t.value, check: () => !ld.isLive(t.value) });
    }
    for (let i = 0; i < 16; i++) {
      const sa = snyk.addServiceAccount({ orgId: org, name: `sa-${i}` });
      const id = `snyk-${i}`;
      const old = sa.secrets[0]!;
      policies.push({
        id,
        owner: "bob@example.com",
        provider: { kind: "snyk-service-account", baseUrl: snyk.url, management: { env: "SNYK_ADMIN" }, orgId: org, serviceAccountId: sa.id, clientId: sa.clientId },
        target: { secretId: `prod/${id}`, region: REGION },
      });
      seeds.push({ id, value: old, check: () => !snyk.secretsOf(sa.id).includes(old) && snyk.secretsOf(sa.id).length === 1 });
    }
    for (const region of ["r1", "r2", "r3", "r4"]) {
      const id = `qstash-${region}`;
      const old = qstash.token(region);
      policies.push({
        id,
        owner: "carol@example.com",
        provider: { kind: "qstash-token", baseUrl: qstash.url, managementUrl: qstash.url, email: qstash.email, management: { env: "QSTASH_KEY" }, userId: qstash.userId(region) },
        target: { secretId: `prod/${id}`, region: REGION },
        acceptCutover: true,
      });
      seeds.push({ id, value: old, check: () => qstash.wasRetired(old) && !qstash.isLive(old) });
    }
    expect(policies).toHaveLength(50);

    const stack = await startStack({
      policies,
      env: { LD_ADMIN_TOKEN: ldAdmin.value, SNYK_ADMIN: snykAdmin.apiToken, QSTASH_KEY: qstash.apiKey },
      concurrency: 8,
      emulator: { writesPerSecond: 50 },
      awsWritesPerSecond: 50,
      providerRates: { "snyk-service-account": { limit: 12, windowMs: 4_000 } },
    });
    closers.push(() => stack.close());
    for (const s of seeds) await stack.store.create!({ secretId: `prod/${s.id}`, region: REGION }, s.value);

    // LaunchDarkly answers its first token creation with a 429: only LaunchDarkly work may wait.
    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "429" });

    const cli = io();
    const code = await runLeak(stack.rt, cli, { provider: "launchdarkly", policy: [...policies.filter((p) => !p.id.startsWith("ld-")).map((p) => p.id)], pollMs: 200, timeout: "140s" });
    expect(cli.err).toMatch(/leak [0-9a-f-]+: \d+\/50 done/);
    expect(code).toBe(0);
    const report = JSON.parse(await (async () => {
      const j = io();
      const c = await runLeak(stack.rt, j, { incident: cli.out.match(/leak incident ([0-9a-f-]{36})/)![1]!, json: true, pollMs: 50 });
      expect(c).toBe(0);
      return j.out;
    })()) as LeakReport;
    expect(report.total).toBe(50);
    expect(report.completed).toBe(50);
    expect(report.targets.every((t) => t.oldRevoked && t.state === "completed")).toBe(true);

    // Every old credential is dead at its provider and every secret holds a new, working value.
    for (const s of seeds) {
      expect(s.check(), `${s.id}: old credential revoked`).toBe(true);
      const cur = await stack.store.getCurrent({ secretId: `prod/${s.id}`, region: REGION });
      expect(cur?.value, s.id).not.toBe(s.value);
    }
    for (const p of policies.filter((x) => x.id.startsWith("ld-"))) {
      const cur = await stack.store.getCurrent({ secretId: `prod/${p.id}`, region: REGION });
      expect(ld.isLive(cur!.value)).toBe(true);
    }

    // Pacing: the one injected 429 closed LaunchDarkly's gate; no window saw a second 429, and
    // Snyk, QStash and AWS never hit their limits at all.
    expect(ld.count(undefined, 429)).toBeGreaterThanOrEqual(1);
    expect(max429PerWindow(ld.requests, 10_000)).toBe(1);
    expect(snyk.count(undefined, 429)).toBe(0);
    expect(max429PerWindow(qstash.requests, 1_000)).toBeLessThanOrEqual(1);
    expect(stack.emulator.calls.filter((c) => c.errorType === "ThrottlingException")).toHaveLength(0);
    // Only LaunchDarkly waited: other providers worked while its gate was closed.
    const first429 = ld.requests.find((r) => r.status === 429)!;
    const reopen = first429.at + 6_000;
    const othersMeanwhile = [...snyk.requests, ...qstash.requests].filter((r) => r.at > first429.at && r.at < reopen).length;
    // Requests already sent when the 429 came back may still arrive; nothing new is sent after that.
    const ldMeanwhile = ld.requests.filter((r) => r.at > first429.at + 1_000 && r.at < reopen - 100).length;
    expect(othersMeanwhile).toBeGreaterThan(0);
    expect(ldMeanwhile).toBe(0);

    // Audited: who asked (the OS account that ran the direct-Redis command, not $USER), and each policy's leak rotation.
    const audit = await stack.rt.audit.history({ limit: 5_000 });
    expect(audit.some((a) => a.step === "leak.incident" && a.actor === directActor())).toBe(true);
    expect(audit.filter((a) => a.step === "leak.requested" && a.actor === directActor())).toHaveLength(50);
  });

  it("a leaked old value takes over the rotation waiting on consumers: old revoked at once, no second new credential, confirmations still tracked", async () => {
    const { ld, admin, managed, stack, scheduled, current } = await billing({ consumers: [BILLING_CONSUMER], confirmation: { timeout: "1h", onTimeout: "keep-old" } });

    const sched = await scheduled();
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(sched.rotationId))?.status === "awaiting-confirmation");
    expect(ld.isLive(managed.value)).toBe(true);
    const creates = ld.count("POST /api/v2/tokens", 201);
    expect(creates).toBe(1);

    const res = await fetch(`${stack.apiUrl}/v1/leaks`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
      // The value that leaked is the old one (found as the old value of the rotation in flight).
      body: JSON.stringify({ value: managed.value }),
    });
    expect(res.status).toBe(202);
    const { incident } = (await res.json()) as { incident: { incidentId: string } };
    await until("scheduled rotation completed", async () => (await stack.rt.state.records.get(sched.rotationId))?.status === "completed", 20_000);
    expect(ld.isLive(managed.value)).toBe(false);
    expect(ld.count("POST /api/v2/tokens", 201)).toBe(creates);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id)).toHaveLength(1);
    const cur = await current();
    expect(cur?.versionId).toBe(sched.rotationId);

    const leaks = leakResponseFor(stack.rt);
    const report = await leaks.report((await leaks.incident(incident.incidentId))!);
    expect(report.targets).toEqual([expect.objectContaining({ policyId: "ld-billing", rotationId: sched.rotationId, tookOver: true, state: "completed", oldRevoked: true, notConfirmed: ["billing"] })]);

    // The consumer confirms after the revocation: accepted, and the report shows it.
    const conf = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
      body: JSON.stringify({ policyId: "ld-billing", consumerId: "billing", versionId: sched.rotationId }),
    });
    expect(conf.status).toBe(200);
    const after = await leaks.report((await leaks.incident(incident.incidentId))!);
    expect(after.targets[0]?.confirmed).toEqual(["billing"]);
    expect(after.targets[0]?.notConfirmed).toEqual([]);

    const history = await stack.rt.audit.history({ policyId: "ld-billing", limit: 100 });
    expect(history.some((h) => h.step === "leak.takeover" && h.actor === "api:admin")).toBe(true);
  });

  it("probe consumers of a leak's rotations are polled after the rotation ended, until they confirm or the timeout passes; the report says when", async () => {
    const ld = await startLaunchDarklyFake();
    closers.push(() => ld.close());
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    // Each probe consumer reports the version it runs on; "none" until the test says otherwise.
    const loaded = new Map<string, string>();
    const hits = new Map<string, number>();
    const probe = createServer((req, res) => {
      const id = (req.url ?? "").slice(1);
      hits.set(id, (hits.get(id) ?? 0) + 1);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ versionId: loaded.get(id) ?? "none" }));
    });
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    closers.push(() => new Promise<void>((r) => probe.close(() => r())));
    const probeUrl = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    const edge = (id: string) => ({ id: "edge", confirm: "probe" as const, url: `${probeUrl}/${id}`, interval: "1s" });
    const policies = [
      ldPolicy(ld, "ld-edge", { consumers: [edge("ld-edge")], confirmation: { timeout: "1h", onTimeout: "keep-old" } }),
      ldPolicy(ld, "ld-late", { consumers: [edge("ld-late")], confirmation: { timeout: "3s", onTimeout: "keep-old" } }),
    ];
    const stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value } });
    closers.push(() => stack.close());
    for (const p of policies) await stack.store.create!({ secretId: p.target.secretId, region: REGION }, ld.addToken({ name: p.id, role: "reader" }).value);

    const leaks = leakResponseFor(stack.rt);
    const { incident } = await leaks.handle({ provider: "launchdarkly" }, "cli:oncall");
    const report = async () => leaks.report((await leaks.incident(incident.incidentId))!);
    await until("both leak rotations completed", async () => (await report()).completed === 2, 20_000);
    const first = await report();
    const target = (r: LeakReport, id: string) => r.targets.find((t) => t.policyId === id)!;
    expect(target(first, "ld-edge")).toMatchObject({ state: "completed", oldRevoked: true, notConfirmed: ["edge"], probes: [{ consumerId: "edge", confirmed: false }] });
    const polledBefore = target(first, "ld-edge").probes[0]!.lastPolledAt!;
    expect(polledBefore).toBeGreaterThan(incident.createdAt);

    // The consumer loads the new value after the rotation ended: the report catches up by itself.
    loaded.set("ld-edge", target(first, "ld-edge").rotationId);
    const caught = await until("the probe consumer confirmed", async () => {
      const r = await report();
      return target(r, "ld-edge").notConfirmed.length === 0 ? r : undefined;
    }, 10_000, 100);
    expect(target(caught, "ld-edge").probes).toEqual([{ consumerId: "edge", confirmed: true, lastPolledAt: expect.any(Number) }]);
    expect(target(caught, "ld-edge").probes[0]!.lastPolledAt!).toBeGreaterThan(polledBefore);
    expect(formatLeakReport(caught)).toMatch(/ld-edge: edge confirmed, last polled \d{4}-/);
    expect(formatLeakReport(caught)).toMatch(/ld-late: edge not confirmed, last polled \d{4}-/);

    // The other one never confirms: polled until its 3 s confirmation timeout passes, then no more.
    await new Promise((r) => setTimeout(r, 4_000));
    const stopped = hits.get("ld-late") ?? 0;
    expect(stopped).toBeGreaterThanOrEqual(2);
    await new Promise((r) => setTimeout(r, 2_500));
    expect(hits.get("ld-late")).toBe(stopped);
    expect(target(await report(), "ld-late").notConfirmed).toEqual(["edge"]);
  });

  it("a policy leak during the wait for consumers revokes both live values: the old at once, then the new one by a rotation of its own", async () => {
    const { ld, admin, managed, stack, scheduled, current } = await billing({ consumers: [BILLING_CONSUMER], confirmation: { timeout: "1h", onTimeout: "keep-old" } });
    const sched = await scheduled();
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(sched.rotationId))?.status === "awaiting-confirmation");
    const promoted = await current();
    expect(ld.isLive(promoted!.value)).toBe(true);

    // "The billing token leaked": the old and the new value both work, and consumers may hold
    // either, so neither may survive the leak response.
    const leaks = leakResponseFor(stack.rt);
    const { incident } = await leaks.handle({ policies: ["ld-billing"] }, "test");
    const report = await until("both revoked", async () => {
      const r = await leaks.report((await leaks.incident(incident.incidentId))!);
      return r.targets[0]?.state === "completed" ? r : undefined;
    }, 20_000);
    expect((await stack.rt.state.records.get(sched.rotationId))?.status).toBe("completed");
    const target = report.targets[0]!;
    expect(target).toEqual(expect.objectContaining({ tookOver: false, state: "completed", oldRevoked: true }));
    expect(target.rotationId).toBe((await stack.rt.state.records.get(sched.rotationId))?.leakRetry);
    expect(ld.isLive(managed.value)).toBe(false);
    expect(ld.isLive(promoted!.value)).toBe(false);
    const cur = await current();
    expect(cur?.versionId).toBe(target.rotationId);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id).map((t) => t.value)).toEqual([cur!.value]);
    const history = await stack.rt.audit.history({ policyId: "ld-billing", limit: 100 });
    expect(history.some((h) => h.step === "leak.requeued" && h.rotationId === sched.rotationId)).toBe(true);
  });

  it("the follow-up leak rotation is queued even when queueing it fails once, and the report never says done before it is", async () => {
    const { ld, admin, managed, stack, scheduled, current } = await billing({ consumers: [BILLING_CONSUMER] });
    const sched = await scheduled();
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(sched.rotationId))?.status === "awaiting-confirmation");
    const promoted = await current();

    // Redis refuses the first attempt to queue the follow-up (as if the worker lost it right
    // after the rotation ended).
    const rotations = stack.rt.rotations;
    const enqueue = rotations.enqueue.bind(rotations);
    let refused = 0;
    rotations.enqueue = async (opts) => {
      if (opts.jobId?.includes("@retry-") && refused++ === 0) throw new Error("READONLY You can't write against a read only replica.");
      return enqueue(opts);
    };
    const leaks = leakResponseFor(stack.rt);
    const { incident } = await leaks.handle({ policies: ["ld-billing"] }, "test");
    await until("scheduled rotation ended", async () => (await stack.rt.state.records.get(sched.rotationId))?.endedAt !== undefined, 20_000);
    const between = await leaks.report((await leaks.incident(incident.incidentId))!);
    expect(between.targets[0]?.state).not.toBe("completed");
    expect(between.settled).toBe(false);

    const report = await until("both revoked", async () => {
      const r = await leaks.report((await leaks.incident(incident.incidentId))!);
      return r.targets[0]?.state === "completed" ? r : undefined;
    }, 30_000);
    expect(refused).toBeGreaterThanOrEqual(2);
    const rec = await stack.rt.state.records.get(sched.rotationId);
    expect(rec?.status).toBe("completed");
    expect(rec?.leakRetry).toBe(report.targets[0]?.rotationId);
    expect(ld.isLive(managed.value)).toBe(false);
    expect(ld.isLive(promoted!.value)).toBe(false);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id)).toHaveLength(1);
  });

  it("a taken-over rotation that fails before promotion hands the leak to a rotation of its own", async () => {
    const { ld, admin, managed, stack, scheduled, current } = await billing({ consumers: [BILLING_CONSUMER] });

    // The scheduled rotation's token create is held at LaunchDarkly; the leak arrives meanwhile and
    // takes that rotation over; then LaunchDarkly refuses the create (the account's token limit).
    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "delay", delayMs: 1_500, times: 1 });
    const sched = await scheduled();
    await until("create in flight", () => ld.requests.some((r) => r.method === "POST" && r.path === "/api/v2/tokens"));
    const res = await fetch(`${stack.apiUrl}/v1/leaks`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ policies: ["ld-billing"] }),
    });
    expect(res.status).toBe(202);
    const { incident } = (await res.json()) as { incident: { incidentId: string } };
    const leaks = leakResponseFor(stack.rt);
    await until("leak merged", async () => (await leaks.report((await leaks.incident(incident.incidentId))!)).targets[0]?.rotationId === sched.rotationId);
    ld.overrideNext("POST /api/v2/tokens", { status: 400, body: { code: "invalid_request", message: "Maximum number of access tokens reached" } });

    await until("scheduled rotation failed", async () => (await stack.rt.state.records.get(sched.rotationId))?.status === "failed", 20_000);
    // The leaked credential was still current: a leak rotation of its own replaces it.
    const report = await until("leak rotated", async () => {
      const r = await leaks.report((await leaks.incident(incident.incidentId))!);
      return r.targets[0]?.state === "completed" ? r : undefined;
    }, 20_000);
    const target = report.targets[0]!;
    expect(target.rotationId).not.toBe(sched.rotationId);
    expect(target).toEqual(expect.objectContaining({ policyId: "ld-billing", tookOver: false, state: "completed", oldRevoked: true, notConfirmed: ["billing"] }));
    expect((await stack.rt.state.records.get(sched.rotationId))?.leakRetry).toBe(target.rotationId);
    expect((await stack.rt.state.records.get(target.rotationId))?.reason).toBe("leak");

    // The leaked token is dead; exactly one managed token lives, and it is current.
    expect(ld.isLive(managed.value)).toBe(false);
    const cur = await current();
    expect(cur?.versionId).toBe(target.rotationId);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id).map((t) => t.value)).toEqual([cur!.value]);

    const history = await stack.rt.audit.history({ policyId: "ld-billing", limit: 100 });
    expect(history.find((h) => h.step === "leak.requeued")?.message).toContain(target.rotationId);
    // Once only, however the failure path ran.
    expect(ld.count("POST /api/v2/tokens", 201)).toBe(1);
  });

  it("a leak that finds the rotation in flight ending as it joins takes the policy itself", async () => {
    const { ld, admin, managed, stack, scheduled, current } = await billing();

    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "delay", delayMs: 1_000, times: 1 });
    const sched = await scheduled();
    await until("create in flight", () => ld.requests.some((r) => r.method === "POST" && r.path === "/api/v2/tokens"));
    // The leak finds the scheduled rotation holding the policy; before it joins, that rotation
    // fails (LaunchDarkly refuses the create) and ends.
    const state = stack.rt.state;
    const merge = state.locks.mergeLeak.bind(state.locks);
    let merges = 0;
    state.locks.mergeLeak = async (policyId, holder) => {
      merges++;
      ld.overrideNext("POST /api/v2/tokens", { status: 400, body: { code: "invalid_request", message: "Maximum number of access tokens reached" } });
      await until("the holder ended", async () => (await state.records.get(holder))?.endedAt !== undefined, 20_000);
      return merge(policyId, holder);
    };
    const leak = await stack.rt.rotations.enqueue({ policyId: "ld-billing", reason: "leak", actor: "test" });
    await until("leak rotation completed", async () => (await state.records.get(leak.rotationId))?.status === "completed", 20_000);
    expect(merges).toBe(1);
    const failed = await state.records.get(sched.rotationId);
    expect(failed?.status).toBe("failed");
    expect(failed?.leak).toBeUndefined();
    expect(ld.isLive(managed.value)).toBe(false);
    const cur = await current();
    expect(cur?.versionId).toBe(leak.rotationId);
    expect(ld.liveTokens().filter((t) => t.id !== admin.id).map((t) => t.value)).toEqual([cur!.value]);
  });

  it("finds the policy of a leaked value read from standard input, and never keeps the value", async () => {
    const ld = await startLaunchDarklyFake();
    closers.push(() => ld.close());
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    const tokens = [0, 1, 2].map((i) => ld.addToken({ name: `svc-${i}` }));
    const stack = await startStack({ policies: [0, 1, 2].map((i) => ldPolicy(ld, `ld-v${i}`)), env: { LD_ADMIN_TOKEN: admin.value } });
    closers.push(() => stack.close());
    for (const i of [0, 1, 2]) await stack.store.create!({ secretId: `prod/ld-v${i}`, region: REGION }, tokens[i]!.value);

    // A value on the command line is refused before anything runs.
    const refused = io();
    expect(await main(["leak", tokens[1]!.value], refused)).toBe(2);
    expect(refused.err).toContain("--value-stdin");
    expect(await main(["leak", "--value", tokens[1]!.value], io())).toBe(2);

    // Not rotated by rekey yet: found among the current values.
    const first = io(`${tokens[1]!.value}\n`);
    expect(await runLeak(stack.rt, first, { valueStdin: true, pollMs: 100, timeout: "30s" })).toBe(0);
    expect(first.out).toContain("ld-v1");
    expect(first.out).not.toContain("ld-v0");
    expect(ld.isLive(tokens[1]!.value)).toBe(false);
    expect(ld.isLive(tokens[0]!.value)).toBe(true);

    // The value rekey just stored leaks too: found through the fingerprint index.
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-v1", region: REGION });
    const second = io(cur!.value);
    expect(await runLeak(stack.rt, second, { valueStdin: true, json: true, pollMs: 100, timeout: "30s" })).toBe(0);
    const report = JSON.parse(second.out) as LeakReport;
    expect(report.targets.map((t) => t.policyId)).toEqual(["ld-v1"]);
    expect(ld.isLive(cur!.value)).toBe(false);

    // An unknown value is refused with a 404, and nothing is queued.
    const unknown = io("not-a-token-rekey-knows-abcdefgh");
    expect(await runLeak(stack.rt, unknown, { valueStdin: true })).toBe(1);
    expect(unknown.err).toContain("matches no credential");

    // I5: neither leaked value is in Redis, the audit or the logs.
    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const v of [tokens[1]!.value, cur!.value]) {
      expect(dump).not.toContain(v);
      expect(stack.logs.text()).not.toContain(v);
      expect(first.out + first.err + second.out + second.err).not.toContain(v);
    }
  });
});
