/**
 * What an operator sees and does: `rekey status`, `history`, `rotate`, `plan` run in-process
 * against a live rekey; `/metrics`; and a worker that loses a job's lock aborting the provider
 * call in flight, with the rotation still ending with exactly one live token.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ADMIN_TOKEN, REGION, type Stack, startStack, until, cliEnv } from "../helpers/stack.ts";

const CONSUMER = "ops-consumer-token-0123456789abcdef";

describe("operating rekey", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let dir: string;
  let env: Record<string, string>;
  let admin: { id: string; value: string };
  let managed: { id: string; value: string };

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    admin = ld.addToken({ role: "admin" });
    managed = ld.addToken({ role: "writer", name: "ops" });
    dir = mkdtempSync(join(tmpdir(), "rekey-ops-"));
    const policy: PolicyInput = {
      id: "ld-ops",
      owner: "ops@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { cron: "0 6 * * *", timezone: "UTC" },
      target: { secretId: "prod/ld-ops", region: REGION },
      consumers: [{ id: "ops-api", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
    };
    writeFileSync(join(dir, "ld-ops.json"), JSON.stringify(policy));
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: admin.value }, concurrency: 1 });
    await stack.store.create!({ secretId: "prod/ld-ops", region: REGION }, managed.value);
    env = cliEnv(stack, dir);
  });

  afterEach(async () => {
    await stack.close();
    await ld.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function rekey(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await main(argv, { stdout: (s) => void (out += s), stderr: (s) => void (err += s), stdin: new PassThrough(), env });
    return { code, out, err };
  }

  it("rotate, status, history and metrics tell the operator what is going on", async () => {
    const rotate = await rekey("rotate", "ld-ops", "--json");
    expect(rotate.code, rotate.err).toBe(0);
    const { rotationId } = JSON.parse(rotate.out) as { rotationId: string };
    await until("awaiting", async () => (await stack.rt.state.records.get(rotationId))?.status === "awaiting-confirmation");
    // Nobody confirms: after lingering for a confirmation, the job parks (delayed).
    await until("parked", async () => (await stack.rt.queue.getDelayedCount()) === 1);

    const status = await rekey("status");
    expect(status.code, status.err).toBe(0);
    expect(status.out).toMatch(/ld-ops\s+launchdarkly\s+-\s+awaiting-confirmation\s+\d{4}-\d\d-\d\dT06:00:00Z/);
    expect(status.out).toContain(`${rotationId}  manual  awaiting-confirmation  waiting for consumers ops-api (push)`);
    const statusJson = JSON.parse((await rekey("status", "--json")).out) as { policyId: string; inFlight?: { waitingFor: { consumerId: string }[] } }[];
    expect(statusJson[0]?.inFlight?.waitingFor).toEqual([{ consumerId: "ops-api", confirm: "push" }]);

    const metrics = await (await fetch(`${stack.apiUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    expect(metrics).toMatch(/rekey_rotations_in_flight\{status="awaiting-confirmation"\} 1/);
    expect(metrics).toMatch(/rekey_queue_jobs\{state="delayed"\} 1/);
    expect(metrics).not.toContain(rotationId);

    const cur = await stack.store.getCurrent({ secretId: "prod/ld-ops", region: REGION });
    await stack.rt.rotations.confirm({ policyId: "ld-ops", consumerId: "ops-api", bearer: CONSUMER, versionId: cur!.versionId });
    await until("completed", async () => (await stack.rt.state.records.get(rotationId))?.status === "completed");

    const history = await rekey("history", "ld-ops");
    expect(history.code).toBe(0);
    const lines = history.out.trim().split("\n");
    // Newest first: revoked last, requested first.
    expect(lines[0]).toContain("revoking ok");
    expect(lines.at(-1)).toContain("manual.requested ok");
    expect(history.out).toContain("confirmation ok  by consumer:ops-api");
    const after = await rekey("status");
    expect(after.out).toMatch(/ld-ops\s+launchdarkly\s+\d{4}-\d\d-\d\dT[\d:]+Z\s+completed/);
    expect(after.out).not.toContain("in flight");
  });

  it("exits 1 with a clear message for an unknown policy, and 2 for a usage error", async () => {
    const unknown = await rekey("rotate", "no-such-policy");
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('unknown policy "no-such-policy"');
    expect((await rekey("rotate")).code).toBe(2);
    expect((await rekey("no-such-command")).code).toBe(2);
  });

  it("plan shows next due times, strategy and consumers of the example policies", async () => {
    const plan = await rekey("plan", "policies", "--json");
    expect(plan.code, plan.err).toBe(0);
    const rows = JSON.parse(plan.out) as { policyId: string; provider: string; strategy: string; issue: string; next: number[]; consumers: unknown[] }[];
    expect(rows).toHaveLength(7);
    const byKind = new Map(rows.map((r) => [r.provider, r]));
    expect(byKind.get("launchdarkly")?.strategy).toBe("overlap");
    expect(byKind.get("qstash-token")?.strategy).toBe("cut-over");
    expect(byKind.get("crewai-crew")?.issue).toBe("human");
    for (const r of rows) {
      expect(r.next).toHaveLength(3);
      expect(r.next[0]!).toBeGreaterThan(Date.now());
      expect(r.next[1]!).toBeGreaterThan(r.next[0]!);
    }
    const text = await rekey("plan", "policies");
    expect(text.out).toContain("strategy:  cut-over (human step)");
  });

  it("a lost lock aborts the provider call in flight, and the rotation still ends with one live token", async () => {
    // Hold token creation at LaunchDarkly; cancel the job the way a lost lock does.
    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "delay", delayMs: 6_000, times: 1 });
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-ops", reason: "manual", actor: "test" });
    await until("create in flight", () => ld.requests.some((r) => r.method === "POST" && r.path === "/api/v2/tokens"));
    const started = Date.now();
    const cancelled = await cancelActive(stack, req.jobId);
    expect(cancelled).toBe(true);
    // The job leaves the active state well before the held request would have answered.
    await until("job no longer active", async () => (await (await stack.rt.queue.getJob(req.jobId))?.getState()) !== "active", 10_000, 20);
    expect(Date.now() - started).toBeLessThan(4_500);
    // The held create still lands at LaunchDarkly after the abort (the request had left); the
    // retried run removes that orphan and finishes with exactly one live managed token.
    await until("awaiting", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation", 30_000);
    const cur = await stack.store.getCurrent({ secretId: "prod/ld-ops", region: REGION });
    // The held create lands at LaunchDarkly after the retry issued its own token: a live orphan.
    const orphan = await until("held create landed", () => ld.liveTokens().find((t) => t.description.includes(req.rotationId) && t.value !== cur!.value), 15_000);
    await stack.rt.rotations.confirm({ policyId: "ld-ops", consumerId: "ops-api", bearer: CONSUMER, versionId: cur!.versionId });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 30_000);
    // Completing the rotation swept it: exactly one live managed token, the current one.
    const live = ld.liveTokens().filter((t) => t.id !== admin.id);
    expect(live.map((t) => t.value)).toEqual([cur!.value]);
    expect(ld.isLive(orphan.value)).toBe(false);
  });
});

/** What the worker does on `lockRenewalFailed`: cancel the job, aborting its signal. */
async function cancelActive(stack: Stack, jobId: string): Promise<boolean> {
  const w = stack.worker;
  if (!w) throw new Error("stack has no worker");
  return w.cancelJob(jobId, "lock lost (test)");
}
