import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PolicySet } from "../../src/policy/policy-set.ts";
import { Policy, type PolicyInput } from "../../src/policy/schema.ts";
import { startScheduler, type SchedulerHandle } from "../../src/scheduler/runner.ts";
import { Scheduler, type EnqueueRequest, type SchedulerDeps } from "../../src/scheduler/scheduler.ts";
import { nextSlots } from "../../src/scheduler/slots.ts";
import { connect, deleteKeys, testPrefix } from "../helpers/redis.ts";

const MIN = 60_000;
const H = 60 * MIN;
const T0 = Date.parse("2025-06-02T10:17:00Z");

function policy(id: string, schedule: PolicyInput["schedule"]): Policy {
  return Policy.parse({
    id,
    owner: "owner@example.com",
    provider: { kind: "launchdarkly", management: { env: "LD_ADMIN_TOKEN" } },
    schedule,
    target: { secretId: `app/${id}` },
  });
}

function policyYaml(id: string, cron: string): string {
  return [
    `id: ${id}`,
    "owner: owner@example.com",
    "provider:",
    "  kind: launchdarkly",
    "  management: { env: LD_ADMIN_TOKEN }",
    "schedule:",
    `  cron: "${cron}"`,
    "  timezone: Europe/Berlin",
    "target:",
    `  secretId: app/${id}`,
    "",
  ].join("\n");
}

let redis: Redis;
let prefix: string;
let clock: number;
let logLines: Record<string, unknown>[];
const extraConnections: Redis[] = [];

beforeEach(() => {
  redis = connect();
  prefix = testPrefix("sched");
  clock = T0;
  logLines = [];
});

afterEach(async () => {
  await deleteKeys(redis, prefix);
  redis.disconnect();
  for (const c of extraConnections.splice(0)) c.disconnect();
});

function replica(opts: Partial<SchedulerDeps> & { enqueued?: EnqueueRequest[] } = {}): { s: Scheduler; enqueued: EnqueueRequest[] } {
  const enqueued = opts.enqueued ?? [];
  const conn = connect();
  extraConnections.push(conn);
  const log = pino({ level: "debug" }, { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) });
  const s = new Scheduler({
    redis: conn,
    prefix,
    now: () => clock,
    enqueue: async (req) => {
      enqueued.push(req);
    },
    log,
    ...opts,
  });
  return { s, enqueued };
}

describe("Scheduler", () => {
  it("enqueues a due slot once, with a deterministic job id, and never a policy's past slots", async () => {
    const p = policy("billing-ld", { every: "1h" });
    const { s, enqueued } = replica();
    s.setPolicies([p]);
    const slot = nextSlots(p.schedule!, T0, 1, p.id)[0]!;

    // First sight: the slot that passed before T0 is not run.
    expect((await s.tick()).enqueued).toEqual([]);
    expect(s.nextDue(p.id)).toBe(slot);
    expect(s.status()).toEqual([{ policyId: p.id, schedule: "every:3600000", nextDue: slot, lastSlot: slot - H }]);

    clock = slot - 1;
    expect((await s.tick()).enqueued).toEqual([]);
    clock = slot;
    await s.tick();
    clock = slot + 5_000;
    await s.tick();
    expect(enqueued).toEqual([{ policyId: p.id, slot, jobId: `sched@${p.id}@${slot}` }]);
    expect(s.nextDue(p.id)).toBe(slot + H);
    expect(await redis.hget(`${prefix}:sched:last:${p.id}`, "last")).toBe(String(slot));
  });

  it("two replicas ticking the same slots enqueue each slot exactly once", async () => {
    const enqueued: EnqueueRequest[] = [];
    const a = replica({ enqueued });
    const b = replica({ enqueued });
    const policies = Array.from({ length: 50 }, (_, i) => policy(`p-${i}`, { cron: "0 * * * *" }));
    a.s.setPolicies(policies);
    b.s.setPolicies(policies);
    await Promise.all([a.s.tick(), b.s.tick()]);
    expect(enqueued).toEqual([]);

    clock = Date.parse("2025-06-02T11:00:00Z");
    const [ra, rb] = await Promise.all([a.s.tick(), b.s.tick()]);
    expect(ra.enqueued.length + rb.enqueued.length).toBe(50);
    expect(new Set(enqueued.map((r) => r.jobId)).size).toBe(50);
    expect(enqueued).toHaveLength(50);

    // Both know the slot is handled now.
    clock += MIN;
    await Promise.all([a.s.tick(), b.s.tick()]);
    expect(enqueued).toHaveLength(50);
    expect(a.s.nextDue("p-7")).toBe(Date.parse("2025-06-02T12:00:00Z"));
    expect(b.s.nextDue("p-7")).toBe(Date.parse("2025-06-02T12:00:00Z"));
  });

  it("a restarted scheduler does not enqueue a slot again", async () => {
    const p = policy("restart", { cron: "30 10 * * *" });
    const first = replica();
    first.s.setPolicies([p]);
    await first.s.tick();
    clock = Date.parse("2025-06-02T10:30:00Z");
    await first.s.tick();
    expect(first.enqueued).toHaveLength(1);

    clock += 10 * MIN;
    const second = replica();
    second.s.setPolicies([p]);
    expect((await second.s.tick()).enqueued).toEqual([]);
    expect(second.s.nextDue(p.id)).toBe(Date.parse("2025-06-03T10:30:00Z"));
  });

  it("catches up a slot missed while nothing ran when it is still inside its window", async () => {
    const p = policy("catch-up", { cron: "30 10 * * *" }); // default window: 1 h
    const before = replica();
    before.s.setPolicies([p]);
    await before.s.tick();

    // Nothing ran at 10:30; a scheduler starts at 11:15.
    clock = Date.parse("2025-06-02T11:15:00Z");
    const after = replica();
    after.s.setPolicies([p]);
    const report = await after.s.tick();
    expect(report.enqueued).toEqual([{ policyId: p.id, slot: Date.parse("2025-06-02T10:30:00Z"), jobId: `sched@${p.id}@${Date.parse("2025-06-02T10:30:00Z")}` }]);
    expect(await after.s.missed()).toEqual([]);
  });

  it("records a slot missed beyond its window and does not run it", async () => {
    const p = policy("too-late", { cron: "30 10 * * *", window: "10m" });
    const before = replica();
    before.s.setPolicies([p]);
    await before.s.tick();
    const lastHandled = Date.parse("2025-06-01T10:30:00Z");

    clock = Date.parse("2025-06-02T11:15:00Z");
    const after = replica();
    after.s.setPolicies([p]);
    const report = await after.s.tick();
    const slot = Date.parse("2025-06-02T10:30:00Z");
    expect(report.enqueued).toEqual([]);
    expect(report.missed).toEqual([{ policyId: p.id, slot }]);
    const missed = await after.s.missed(10);
    expect(missed).toHaveLength(1);
    expect(missed[0]).toMatchObject({ policyId: p.id, slot, detectedAt: clock, lastHandled });
    expect(logLines.some((l) => l.msg === "scheduled slot missed: it is past its window, so it is recorded and not run" && l.policyId === p.id)).toBe(true);

    // Recorded once, and the next slot runs normally.
    expect((await after.s.tick()).missed).toEqual([]);
    clock = Date.parse("2025-06-03T10:30:00Z");
    expect((await after.s.tick()).enqueued.map((r) => r.slot)).toEqual([clock]);
    expect(await after.s.missed(10)).toHaveLength(1);
  });

  it("stops scheduling a removed policy", async () => {
    const keep = policy("keep", { cron: "0 * * * *" });
    const gone = policy("gone", { cron: "0 * * * *" });
    const { s, enqueued } = replica();
    s.setPolicies([keep, gone]);
    await s.tick();
    s.remove(gone.id);
    expect(s.nextDue(gone.id)).toBeUndefined();
    expect(s.status().map((x) => x.policyId)).toEqual(["keep"]);
    clock = Date.parse("2025-06-02T11:00:00Z");
    await s.tick();
    expect(enqueued.map((r) => r.policyId)).toEqual(["keep"]);

    // setPolicies without it has the same effect.
    s.setPolicies([]);
    clock += H;
    await s.tick();
    expect(enqueued).toHaveLength(1);
  });

  it("retries a slot whose enqueue failed, and another replica takes over a dead replica's claim", async () => {
    const p = policy("flaky", { cron: "0 * * * *" });
    let fail = true;
    const enqueued: EnqueueRequest[] = [];
    const a = replica({
      claimLeaseMs: 30_000,
      enqueue: async (req) => {
        if (fail) throw new Error("queue unavailable");
        enqueued.push(req);
      },
    });
    a.s.setPolicies([p]);
    await a.s.tick();
    clock = Date.parse("2025-06-02T11:00:00Z");
    const r1 = await a.s.tick();
    expect(r1.failed).toEqual([{ policyId: p.id, slot: clock, error: "queue unavailable" }]);
    fail = false;
    const r2 = await a.s.tick();
    expect(r2.enqueued.map((r) => r.slot)).toEqual([clock]);

    // Next slot: replica C claims it and dies before enqueueing; B waits out the lease.
    clock = Date.parse("2025-06-02T12:00:00Z");
    const c = replica({
      enqueue: async () => {
        throw new Error("process killed");
      },
    });
    const b = replica();
    c.s.setPolicies([p]);
    b.s.setPolicies([p]);
    await c.s.tick();
    expect((await b.s.tick()).enqueued).toEqual([]);
    clock += 10_000;
    expect((await b.s.tick()).enqueued).toEqual([]);
    clock += 25_000;
    expect((await b.s.tick()).enqueued.map((r) => r.jobId)).toEqual([`sched@${p.id}@${Date.parse("2025-06-02T12:00:00Z")}`]);
  });

  it("reports a slot as missed when its enqueue keeps failing past the window", async () => {
    const p = policy("broken-queue", { cron: "0 * * * *", window: "5m" });
    const { s } = replica({
      enqueue: async () => {
        throw new Error("queue unavailable");
      },
    });
    s.setPolicies([p]);
    await s.tick();
    const slot = Date.parse("2025-06-02T11:00:00Z");
    clock = slot;
    expect((await s.tick()).failed).toHaveLength(1);
    clock = slot + 4 * MIN;
    expect((await s.tick()).failed).toHaveLength(1);
    clock = slot + 6 * MIN;
    const report = await s.tick();
    expect(report.failed).toEqual([]);
    expect(report.missed).toEqual([{ policyId: p.id, slot }]);
    expect(s.nextDue(p.id)).toBe(slot + H);
  });

  it("a changed schedule counts from its own latest slot", async () => {
    const { s, enqueued } = replica();
    s.setPolicies([policy("edit", { cron: "0 3 * * *" })]);
    await s.tick();
    // Edited to hourly at 10:17: 10:00 already passed and is neither run nor reported missed.
    s.upsert(policy("edit", { cron: "0 * * * *" }));
    const report = await s.tick();
    expect(report).toEqual({ enqueued: [], missed: [], failed: [] });
    expect(s.nextDue("edit")).toBe(Date.parse("2025-06-02T11:00:00Z"));
    clock = Date.parse("2025-06-02T11:00:00Z");
    await s.tick();
    expect(enqueued.map((r) => r.slot)).toEqual([clock]);
  });
});

describe("startScheduler: the scheduler follows the policy set", () => {
  let dir: string;
  let handle: SchedulerHandle | undefined;
  let unwatch: (() => void) | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "rekey-sched-"));
  });

  afterEach(async () => {
    unwatch?.();
    await handle?.stop();
    handle = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(watch: boolean) {
    const conn = connect();
    extraConnections.push(conn);
    const enqueued: EnqueueRequest[] = [];
    const policies = new PolicySet([dir]);
    await policies.reload();
    unwatch = watch ? policies.watch(() => undefined, 20) : undefined;
    handle = startScheduler({
      redis: conn,
      prefix,
      now: () => clock,
      enqueue: async (req) => void enqueued.push(req),
      log: pino({ level: "debug" }, { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) }),
      policies,
      tickMs: 60_000,
    });
    return { handle, enqueued, policies };
  }

  it("applies a changed file, keeps the last good version of an invalid edit, and unschedules a removed file", async () => {
    const file = join(dir, "ld.yaml");
    writeFileSync(file, policyYaml("ld-app", "0 14 * * *"));
    writeFileSync(join(dir, "other.yaml"), policyYaml("other", "0 6 * * *"));
    const { handle: h, policies } = await start(false);
    expect(h.scheduler.nextDue("ld-app")).toBe(Date.parse("2025-06-02T12:00:00Z")); // 14:00 in Berlin (CEST)

    writeFileSync(file, policyYaml("ld-app", "0 18 * * *"));
    const applied = await policies.reloadFile(file);
    expect(applied).toEqual({ upserted: 1, removed: 0, issues: [] });
    expect(h.scheduler.nextDue("ld-app")).toBe(Date.parse("2025-06-02T16:00:00Z"));

    writeFileSync(file, policyYaml("ld-app", "0 18 * *"));
    const bad = await policies.reloadFile(file);
    expect(bad.issues.length).toBeGreaterThan(0);
    expect(bad.issues[0]!.path).toContain("schedule.cron");
    expect(h.scheduler.nextDue("ld-app")).toBe(Date.parse("2025-06-02T16:00:00Z"));

    // A full reload with the broken file still keeps it; an edit of the other file applies.
    writeFileSync(join(dir, "other.yaml"), policyYaml("other", "0 7 * * *"));
    const full = await policies.reload();
    expect(full.issues.length).toBeGreaterThan(0);
    expect(h.scheduler.nextDue("ld-app")).toBe(Date.parse("2025-06-02T16:00:00Z"));
    expect(h.scheduler.nextDue("other")).toBe(Date.parse("2025-06-03T05:00:00Z"));

    // The same id in a second file is refused.
    const dup = join(dir, "dup.yaml");
    writeFileSync(dup, policyYaml("other", "0 1 * * *"));
    expect((await policies.reloadFile(dup)).issues.map((i) => i.path)).toEqual(["id"]);
    expect(h.scheduler.nextDue("other")).toBe(Date.parse("2025-06-03T05:00:00Z"));
    unlinkSync(dup);

    unlinkSync(file);
    expect(await policies.reloadFile(file)).toEqual({ upserted: 0, removed: 1, issues: [] });
    expect(h.scheduler.has("ld-app")).toBe(false);
    expect(h.scheduler.has("other")).toBe(true);
  });

  it("watches the policy folder, sub-folders included", async () => {
    const { handle: h } = await start(true);
    expect(h.scheduler.size).toBe(0);
    writeFileSync(join(dir, "top.yml"), policyYaml("top", "15 4 * * 1"));
    await until(() => h.scheduler.has("top"));
    expect(h.scheduler.nextDue("top")).toBe(Date.parse("2025-06-09T02:15:00Z"));

    writeFileSync(join(dir, "top.yml"), policyYaml("top", "15 5 * * 1"));
    await until(() => h.scheduler.nextDue("top") === Date.parse("2025-06-09T03:15:00Z"));

    mkdirSync(join(dir, "team"));
    writeFileSync(join(dir, "team", "deep.yaml"), policyYaml("deep", "0 9 * * *"));
    await until(() => h.scheduler.has("deep"));

    unlinkSync(join(dir, "top.yml"));
    await until(() => !h.scheduler.has("top"));
    expect(h.scheduler.has("deep")).toBe(true);
  });

  it("follows a Kubernetes ConfigMap volume, which changes by swapping its ..data link", async () => {
    // The kubelet's layout: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>/.
    mkdirSync(join(dir, "..2026_12_02_10_00_00.1"));
    writeFileSync(join(dir, "..2026_12_02_10_00_00.1", "policy.yaml"), policyYaml("cm", "0 1 * * *"));
    symlinkSync("..2026_12_02_10_00_00.1", join(dir, "..data"));
    symlinkSync(join("..data", "policy.yaml"), join(dir, "policy.yaml"));
    const { handle: h } = await start(true);
    expect(h.scheduler.nextDue("cm")).toBe(Date.parse("2025-06-02T23:00:00Z"));
    // The update: a new folder, then an atomic rename of a new link over ..data.
    mkdirSync(join(dir, "..2026_12_02_10_05_00.2"));
    writeFileSync(join(dir, "..2026_12_02_10_05_00.2", "policy.yaml"), policyYaml("cm", "0 2 * * *"));
    symlinkSync("..2026_12_02_10_05_00.2", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    await until(() => h.scheduler.nextDue("cm") === Date.parse("2025-06-03T00:00:00Z"));
  });
});

/** Polls a condition (file events arrive asynchronously); fails after a generous limit. */
async function until(cond: () => boolean, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
