/**
 * Scheduling end to end: two scheduler replicas on one due slot give one rotation, which a worker
 * completes; a policy file edited on disk is picked up without a restart.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { PolicySet } from "../../src/policy/policy-set.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { startScheduler, type SchedulerHandle } from "../../src/scheduler/runner.ts";
import { nextSlots } from "../../src/scheduler/slots.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { REGION, type Stack, startStack, until } from "../helpers/stack.ts";

describe("scheduled rotations", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let dir: string;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };
  let policy: PolicyInput;
  const runners: { stop(): Promise<void> }[] = [];

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    admin = ld.addToken({ role: "admin" });
    managed = ld.addToken({ role: "writer", name: "reports" });
    dir = mkdtempSync(join(tmpdir(), "rekey-sched-"));
    policy = {
      id: "ld-reports",
      owner: "alice@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { every: "1h" },
      target: { secretId: "prod/ld-reports", region: REGION },
    };
    writeFileSync(join(dir, "ld-reports.yaml"), stringify(policy));
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: admin.value } });
    await stack.store.create!({ secretId: "prod/ld-reports", region: REGION }, managed.value);
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
    await stack.close();
    await ld.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function runner(now: () => number): Promise<SchedulerHandle> {
    // Each replica has its own policy set watching the folder, as a scheduler process has.
    const policies = new PolicySet([dir]);
    await policies.reload();
    const unwatch = policies.watch(() => undefined, 20);
    const h = startScheduler({
      redis: stack.rt.redis,
      prefix: stack.prefix,
      now,
      log: (await import("../../src/log.ts")).createLogger({ level: "silent" }),
      policies,
      tickMs: 3_600_000, // ticks are driven by the test
      enqueue: async ({ policyId, slot, jobId }) => {
        await stack.rt.rotations.enqueue({ policyId, reason: "scheduled", actor: "scheduler", slot, jobId });
      },
    });
    runners.push({
      stop: async () => {
        unwatch();
        await h.stop();
      },
    });
    return h;
  }

  it("gives one rotation for one due slot across two scheduler replicas", async () => {
    const slot = nextSlots({ every: 3_600_000 }, Date.now(), 1, "ld-reports")[0]!;
    let now = slot - 5_000;
    const a = await runner(() => now);
    const b = await runner(() => now);
    await Promise.all([a.tick(), b.tick()]);
    const counts = await stack.rt.queue.getJobCounts();
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);

    now = slot + 1_000;
    const reports = await Promise.all([a.tick(), b.tick(), a.tick(), b.tick()]);
    const jobs = await stack.rt.queue.getJobs(["waiting", "active", "delayed", "completed", "prioritized"]);
    expect(jobs).toHaveLength(1);
    // The queue holds the slot under the id the scheduler reports, the same on every replica.
    expect(new Set(reports.flatMap((r) => r.enqueued.map((e) => e.jobId)))).toEqual(new Set([jobs[0]!.id]));
    const rotationId = (jobs[0]!.data as { rotationId: string }).rotationId;
    await until("completed", async () => (await stack.rt.state.records.get(rotationId))?.status === "completed");
    // One rotation: exactly one new token, the old one deleted (no consumers to wait for).
    expect(ld.liveTokens().filter((t) => t.id !== admin.id)).toHaveLength(1);
    expect(ld.isLive(managed.value)).toBe(false);
  });

  it("picks up an edited policy file without a restart", async () => {
    const h = await runner(Date.now);
    const before = h.scheduler.nextDue("ld-reports");
    expect(before).toBeDefined();
    writeFileSync(join(dir, "ld-reports.yaml"), stringify({ ...policy, schedule: { cron: "15 4 * * *", timezone: "UTC" } }));
    const after = await until("new schedule", () => {
      const due = h.scheduler.nextDue("ld-reports");
      return due !== undefined && due !== before ? due : undefined;
    }, 10_000);
    expect(new Date(after).getUTCHours()).toBe(4);
    expect(new Date(after).getUTCMinutes()).toBe(15);
    // A broken edit keeps the last good schedule.
    writeFileSync(join(dir, "ld-reports.yaml"), "id: ld-reports\nschedule: { cron: 'not a cron' }\n");
    await new Promise((r) => setTimeout(r, 800));
    expect(h.scheduler.nextDue("ld-reports")).toBe(after);
  });
});
