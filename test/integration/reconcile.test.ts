/**
 * Reconciliation after Redis forgot (a failover to a lagging replica, a wipe), on real Redis, the
 * AWS emulator through the real SDK, and the LaunchDarkly fake over HTTP: credentials rekey issued
 * that the store does not hold are removed once the policy stayed idle, a rotation whose job was
 * lost is ended and its lock freed, and nothing a consumer may be using is touched.
 */
import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type Finding, type Observation, reconcileAll, startReconciler } from "../../src/reconcile/reconcile.ts";
import type { Policy } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { deleteKeys } from "../helpers/redis.ts";
import { REGION, type Stack, startStack } from "../helpers/stack.ts";

const ID = "ld-reconcile";
const SECRET = { secretId: "prod/ld-reconcile", region: REGION };

function policy(ld: LaunchDarklyFake): PolicyInput {
  return {
    id: ID,
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    schedule: { cron: "0 3 * * 1" },
    target: SECRET,
    consumers: [{ id: "app", confirm: "probe", url: "http://127.0.0.1:9/never", interval: "1m" }],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
  };
}

/** A credential a rotation issued and Redis forgot: it carries the policy's marker and a rotation id. */
function orphan(ld: LaunchDarklyFake): { id: string; value: string } {
  const rotationId = randomUUID();
  return ld.addToken({ name: `billing (rekey ${rotationId.slice(0, 8)})`, description: `[rekey policy=${ID} rotation=${rotationId}]` });
}

describe("rekey reconcile", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let p: Policy;
  let current: { id: string; value: string };
  const live = () => ld.liveTokens().map((t) => t.id);

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    // No worker: only what reconcile does happens.
    stack = await startStack({ policies: [policy(ld)], env: { LD_ADMIN_TOKEN: admin.value }, worker: false });
    p = stack.rt.policies.get(ID)!;
    current = ld.addToken({ name: "billing" });
    await stack.store.create!(SECRET, current.value);
  });

  afterEach(async () => {
    await stack.close();
    await ld.close();
  });

  const deps = () => ({ state: stack.rt.state, audit: stack.rt.audit, store: stack.store, providers: stack.rt.providers, queue: stack.rt.queue, resolve: stack.rt.resolve, now: Date.now });
  const pass = (previous?: Map<string, Observation>, opts: { dryRun?: boolean; settleMs?: number } = {}) =>
    reconcileAll(deps(), [p], { dryRun: opts.dryRun ?? false, settleMs: opts.settleMs ?? 0, previous });
  const kinds = (fs: Finding[]) => fs.map((f) => f.kind);

  it("after a wipe, removes credentials rekey issued that no version holds, once the policy stayed idle — the current one stays", async () => {
    const lost = [orphan(ld), orphan(ld)];
    await deleteKeys(stack.rt.redis, stack.prefix); // the wipe
    const first = await pass(undefined, { settleMs: 0 });
    expect(kinds(first.findings)).toEqual(["unsettled"]);
    // Nothing is removed on the first look: a worker still running a forgotten job may be about
    // to write its credential.
    expect(live()).toEqual(expect.arrayContaining(lost.map((t) => t.id)));

    const second = await pass(first.observations, { settleMs: 0 });
    expect(kinds(second.findings)).toEqual(["orphans"]);
    expect(second.findings[0]!.repaired).toBe(true);
    for (const t of lost) expect(ld.isLive(t.value)).toBe(false);
    expect(ld.isLive(current.value)).toBe(true);
    // One live managed credential, the one in AWSCURRENT (the admin token aside).
    const cur = await stack.store.getCurrent(SECRET);
    expect(ld.liveTokens().filter((t) => t.name !== "rekey management").map((t) => t.value)).toEqual([cur!.value]);
    const audit = await stack.rt.audit.history({ policyId: ID });
    expect(audit[0]).toMatchObject({ step: "reconcile.orphans", outcome: "ok", actor: "reconcile" });
    expect(audit[0]!.message).toContain(lost[0]!.id);
    // Reconciled again: nothing left to do.
    const third = await pass(second.observations);
    expect(kinds(third.findings)).toEqual(["whole"]);
  });

  it("waits out the settle period and starts it again when AWSCURRENT moved", async () => {
    const lost = orphan(ld);
    const first = await pass(undefined, { settleMs: 60_000 });
    const early = await pass(first.observations, { settleMs: 60_000 });
    expect(kinds(early.findings)).toEqual(["unsettled"]);
    // A rotation Redis forgot wrote its value meanwhile: the clock starts again.
    const moved = new Map([[ID, { ...first.observations.get(ID)!, at: Date.now() - 120_000, currentVersionId: "another-version" }]]);
    expect(kinds((await pass(moved, { settleMs: 60_000 })).findings)).toEqual(["unsettled"]);
    expect(ld.isLive(lost.value)).toBe(true);
  });

  it("keeps the previous credential of a rotation whose write happened (consumers may still use it), and removes the rest", async () => {
    // An earlier rotation issued P (it carries rekey's marker too) and completed; then a rotation
    // issued N and made it AWSCURRENT, and Redis forgot it before it could wait for the consumers
    // and revoke P.
    const earlier = randomUUID();
    const previous = ld.addToken({ name: `billing (rekey ${earlier.slice(0, 8)})`, description: `[rekey policy=${ID} rotation=${earlier}]` });
    await stack.store.putPending(SECRET, earlier, previous.value);
    await stack.store.promote(SECRET, earlier);
    const rotationId = randomUUID();
    const issued = ld.addToken({ name: `billing (rekey ${rotationId.slice(0, 8)})`, description: `[rekey policy=${ID} rotation=${rotationId}]` });
    await stack.store.putPending(SECRET, rotationId, issued.value);
    await stack.store.promote(SECRET, rotationId);
    const lost = orphan(ld);
    const first = await pass();
    const second = await pass(first.observations);
    expect(kinds(second.findings)).toEqual(["orphans", "re-created"]);
    expect(ld.isLive(lost.value)).toBe(false);
    // I2: the old credential (AWSPREVIOUS) is not revoked without the consumers' confirmations.
    expect(ld.isLive(previous.value)).toBe(true);
    expect(ld.isLive(issued.value)).toBe(true);
    expect(second.findings[0]!.message).not.toContain(previous.id);
    // The rotation that made N current is queued again under its own id, to wait for the
    // consumers and revoke P through the normal revoking step.
    expect(second.findings[1]).toMatchObject({ repaired: true });
    expect(second.findings[1]!.message).toContain(`version ${rotationId} is AWSCURRENT and the previous credential ${previous.id} (version ${earlier}, AWSPREVIOUS) is still live`);
    const job = await stack.rt.queue.getJob(`reconcile@${ID}@${rotationId}`);
    expect(job?.data).toMatchObject({ rotationId, policyId: ID, reason: "reconcile", actor: "reconcile", step: "start", oldVersionId: earlier, oldCredentialId: previous.id });
    const audit = await stack.rt.audit.history({ policyId: ID });
    expect(audit[0]).toMatchObject({ rotationId, step: "reconcile.re-created", outcome: "ok", actor: "reconcile" });
    // Found again before a worker took it: nothing is queued twice.
    const third = await pass(second.observations);
    expect(kinds(third.findings)).toEqual(["in-flight"]);
    expect(await stack.rt.queue.getJobCounts("waiting", "prioritized")).toEqual({ waiting: 0, prioritized: 1 });
    expect(ld.isLive(previous.value)).toBe(true);
  });

  it("reports two live credentials it must not finish: a dry run, a current version rekey did not write, a rotation Redis still knows", async () => {
    const earlier = randomUUID();
    const previous = ld.addToken({ name: "billing (rekey)", description: `[rekey policy=${ID} rotation=${earlier}]` });
    await stack.store.putPending(SECRET, earlier, previous.value);
    await stack.store.promote(SECRET, earlier);
    const rotationId = randomUUID();
    const issued = ld.addToken({ name: "billing (rekey)", description: `[rekey policy=${ID} rotation=${rotationId}]` });
    await stack.store.putPending(SECRET, rotationId, issued.value);
    await stack.store.promote(SECRET, rotationId);
    const first = await pass(undefined, { dryRun: true });
    const dry = await pass(first.observations, { dryRun: true });
    expect(kinds(dry.findings)).toEqual(["whole", "two-live"]);
    expect(dry.findings[1]).toMatchObject({ repaired: false });
    expect(dry.findings[1]!.message).toContain("dry run: nothing queued");
    expect(await stack.rt.queue.getJob(`reconcile@${ID}@${rotationId}`)).toBeUndefined();

    // Redis still has the rotation's record (it ended needing attention): it says so, queues nothing.
    const now = Date.now();
    await stack.rt.state.records.put({ rotationId, policyId: ID, reason: "manual", actor: "test", status: "running", step: "awaiting-confirmation", jobId: "gone", startedAt: now, updatedAt: now });
    await stack.rt.state.records.end({ rotationId, policyId: ID }, "needs-attention", "its job was lost", now, 60);
    const known = await pass(dry.observations);
    expect(kinds(known.findings)).toEqual(["two-live"]);
    expect(known.findings[0]!.message).toContain(`rotation ${rotationId} ended needs-attention (its job was lost)`);

    // A current version whose id is no rotation id was written by someone else.
    const operator = ld.addToken({ name: "billing by hand" });
    const handWritten = "written-by-an-operator-0000000000000001";
    await stack.store.putPending(SECRET, handWritten, operator.value);
    await stack.store.promote(SECRET, handWritten);
    const a = await pass();
    const b = await pass(a.observations);
    // (P, marked by rekey and in neither label now, is an orphan.)
    expect(kinds(b.findings)).toEqual(["orphans", "two-live"]);
    expect(ld.isLive(previous.value)).toBe(false);
    expect(b.findings[1]!.message).toContain("was not written by a rekey rotation");
    expect(await stack.rt.queue.getJobCounts("waiting", "prioritized")).toEqual({ waiting: 0, prioritized: 0 });
    for (const t of [issued, operator]) expect(ld.isLive(t.value)).toBe(true);
  });

  it("revokes the credential of a pending version no running rotation owns (never current), and keeps a running rotation's", async () => {
    const forgotten = randomUUID();
    const abandoned = ld.addToken({ name: "billing (rekey)", description: `[rekey policy=${ID} rotation=${forgotten}]` });
    await stack.store.putPending(SECRET, forgotten, abandoned.value);
    const first = await pass();
    const second = await pass(first.observations);
    expect(kinds(second.findings)).toEqual(["pending", "whole"]);
    expect(second.findings[0]).toMatchObject({ repaired: true, rotationId: forgotten });
    expect(ld.isLive(abandoned.value)).toBe(false);
    expect(ld.isLive(current.value)).toBe(true);
    expect((await stack.store.stages(SECRET))[forgotten] ?? []).not.toContain("AWSPENDING");
    expect((await stack.rt.audit.history({ policyId: ID }))[0]).toMatchObject({ rotationId: forgotten, step: "reconcile.pending", actor: "reconcile" });

    // A rotation Redis knows and that has not ended owns its pending version.
    const running = randomUUID();
    const issued = ld.addToken({ name: "billing (rekey)", description: `[rekey policy=${ID} rotation=${running}]` });
    await stack.store.putPending(SECRET, running, issued.value);
    const now = Date.now();
    await stack.rt.state.records.put({ rotationId: running, policyId: ID, reason: "manual", actor: "test", status: "running", step: "verifying", jobId: "x", startedAt: now, updatedAt: now });
    const third = await pass(second.observations);
    expect(third.findings.map((f) => f.kind)).not.toContain("pending");
    expect((await stack.store.stages(SECRET))[running]).toContain("AWSPENDING");
  });

  it("ends a rotation whose job Redis lost, frees its lock, and says whether its write happened", async () => {
    const now = Date.now();
    const before = randomUUID();
    const after = randomUUID();
    const rec = (rotationId: string, policyId: string) => ({ rotationId, policyId, reason: "manual", actor: "test", status: "running" as const, step: "issuing", jobId: `manual@${policyId}@${rotationId}`, startedAt: now, updatedAt: now });
    // Lost before its write: the old credential is still current.
    expect(await stack.rt.state.locks.begin(rec(before, ID))).toBe(before);
    const r1 = await pass();
    expect(kinds(r1.findings)).toEqual(["dead-lock"]);
    expect(await stack.rt.state.locks.inFlight(ID)).toBeUndefined();
    expect(await stack.rt.state.records.get(before)).toMatchObject({ status: "failed", endedAt: expect.any(Number) });

    // Lost after its write: its value is current, the old credential was never revoked.
    const issued = ld.addToken({ name: "billing (rekey)", description: `[rekey policy=${ID} rotation=${after}]` });
    await stack.store.putPending(SECRET, after, issued.value);
    await stack.store.promote(SECRET, after);
    expect(await stack.rt.state.locks.begin({ ...rec(after, ID), status: "awaiting-confirmation", step: "awaiting-confirmation" })).toBe(after);
    const r2 = await pass();
    expect(kinds(r2.findings)).toEqual(["dead-lock"]);
    const ended = await stack.rt.state.records.get(after);
    expect(ended).toMatchObject({ status: "needs-attention", endedAt: expect.any(Number) });
    expect(ended!.message).toContain("the previous credential was not revoked");
    expect(await stack.rt.state.locks.inFlight(ID)).toBeUndefined();
    expect(ld.isLive(current.value)).toBe(true);
    const audit = await stack.rt.audit.history({ policyId: ID });
    expect(audit.map((a) => `${a.step} ${a.outcome}`)).toEqual(["reconcile.dead-lock needs-attention", "reconcile.dead-lock failed"]);
  });

  it("leaves a rotation whose job is there to its worker, and a dry run changes nothing", async () => {
    const q = await stack.rt.rotations.enqueue({ policyId: ID, reason: "manual", actor: "test" });
    const now = Date.now();
    expect(await stack.rt.state.locks.begin({ rotationId: q.rotationId, policyId: ID, reason: "manual", actor: "test", status: "running", step: "issuing", jobId: q.jobId, startedAt: now, updatedAt: now })).toBe(q.rotationId);
    expect(kinds((await pass()).findings)).toEqual(["in-flight"]);
    expect(await stack.rt.state.locks.inFlight(ID)).toBe(q.rotationId);

    await (await stack.rt.queue.getJob(q.jobId))!.remove();
    const lost = orphan(ld);
    const dry = await pass(undefined, { dryRun: true });
    expect(dry.findings[0]).toMatchObject({ kind: "dead-lock", repaired: false });
    expect(await stack.rt.state.locks.inFlight(ID)).toBe(q.rotationId);
    expect(ld.isLive(lost.value)).toBe(true);
    expect(await stack.rt.audit.history({ policyId: ID })).not.toContainEqual(expect.objectContaining({ actor: "reconcile" }));
  });

  it("runs as a periodic pass: one replica per period, the settle carried between passes in Redis", async () => {
    const lost = orphan(ld);
    const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const policies = { all: () => [p] };
    const a = startReconciler({ ...deps(), policies }, { everyMs: 3_600_000, settleMs: 0, log });
    const b = startReconciler({ ...deps(), policies }, { everyMs: 3_600_000, settleMs: 0, log });
    try {
      expect(kinds(await a.pass())).toEqual(["unsettled"]);
      // The other replica finds this period claimed and does nothing.
      expect(await b.pass()).toEqual([]);
      expect(ld.isLive(lost.value)).toBe(true);
      // Next period (the claim expired): the other replica picks up what the first one saw.
      await stack.rt.redis.del(stack.rt.state.keys.reconcilePass());
      expect(kinds(await b.pass())).toEqual(["orphans"]);
      expect(ld.isLive(lost.value)).toBe(false);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
