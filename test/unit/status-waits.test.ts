/**
 * What `rekey status` and the dashboard say a rotation waits for comes from its state: the
 * record, the consumers still to confirm, its queue job, and the shared rate-limit gates.
 */
import { describe, expect, it } from "vitest";
import { Policy } from "../../src/policy/schema.ts";
import { providerScope, refOf, storeScope } from "../../src/rotation/scope.ts";
import type { RotationRecord } from "../../src/rotation/state/records.ts";
import { remedyOf, type JobView, waitOf } from "../../src/rotation/status.ts";

const NOW = Date.parse("2026-12-02T12:00:00Z");
const policy = Policy.parse({
  id: "ld-api",
  owner: "alice@example.com",
  provider: { kind: "launchdarkly", management: { env: "LD_ADMIN_TOKEN" } },
  target: { secretId: "prod/ld", region: "us-east-1" },
  consumers: [{ id: "billing", confirm: "push", tokenHash: `sha256:${"a".repeat(64)}` }],
});
const rec = (patch: Partial<RotationRecord>): RotationRecord => ({
  rotationId: "r1",
  policyId: "ld-api",
  reason: "scheduled",
  actor: "scheduler",
  status: "running",
  step: "issuing",
  jobId: "j1",
  startedAt: NOW - 60_000,
  updatedAt: NOW - 1_000,
  ...patch,
});
const job = (patch: Partial<JobView>): JobView => ({ state: "active", attemptsMade: 0, attempts: 5, ...patch });
const pending = [{ consumerId: "billing", confirm: "push" }];
const noGate = async () => 0;

describe("what a rotation waits for", () => {
  it("a retry against AWS is a retry at its time, not the consumers", async () => {
    const w = await waitOf({ policy, rec: rec({ step: "promoting" }), pending, job: job({ state: "delayed", delayedUntil: NOW + 8_000, attemptsMade: 2, failedReason: "AWS Secrets Manager: InternalServiceError" }), gate: noGate, now: NOW });
    expect(w).toMatchObject({ kind: "retry", until: NOW + 8_000, attemptsMade: 2, lastError: "AWS Secrets Manager: InternalServiceError" });
    expect(w.text).toBe("a retry of promoting at 2026-12-02T12:00:08Z (attempt 3 of 5)");
  });

  it("a parked job behind a rate limit names the gate and until when", async () => {
    const until = NOW + 42_000;
    const scope = storeScope(refOf(policy));
    const w = await waitOf({ policy, rec: rec({ step: "promoting" }), pending, job: job({ state: "delayed", delayedUntil: until }), gate: async (s) => (s === scope ? until : 0), now: NOW });
    expect(w).toMatchObject({ kind: "rate-limit", gate: scope, until });
    const p = await waitOf({ policy, rec: rec({}), pending, job: job({ state: "delayed", delayedUntil: until }), gate: async (s) => (s === providerScope(policy.provider) ? until : 0), now: NOW });
    expect(p.gate).toBe(providerScope(policy.provider));
  });

  it("consumers only once the new value is current, with the next check", async () => {
    const w = await waitOf({ policy, rec: rec({ status: "awaiting-confirmation", step: "awaiting-confirmation", promotedAt: NOW - 5_000 }), pending, job: job({ state: "delayed", delayedUntil: NOW + 30_000 }), gate: noGate, now: NOW });
    expect(w).toEqual({ kind: "consumers", until: NOW + 30_000, text: "consumers billing (push); next check 2026-12-02T12:00:30Z" });
    // Before promotion nobody is asked to confirm yet.
    const before = await waitOf({ policy, rec: rec({ step: "issuing" }), pending, job: job({ state: "active" }), gate: noGate, now: NOW });
    expect(before).toEqual({ kind: "running", text: "its worker (running issuing)" });
  });

  it("a human step names the owner and the command; queued and running jobs say so", async () => {
    const w = await waitOf({ policy, rec: rec({ status: "awaiting-human", step: "awaiting-human" }), pending, job: job({ state: "delayed", delayedUntil: NOW + 3_600_000 }), gate: noGate, now: NOW });
    expect(w.kind).toBe("human");
    expect(w.text).toContain("alice@example.com to submit the new value (rekey submit r1)");
    expect((await waitOf({ policy, rec: rec({}), pending, job: job({ state: "prioritized" }), gate: noGate, now: NOW })).kind).toBe("queued");
  });

  it("needs-attention after promotion says the retry and what to fix", async () => {
    const r = rec({ status: "needs-attention", step: "revoking", promotedAt: NOW - 60_000, message: "revoking failed after promotion" });
    const w = await waitOf({ policy, rec: r, pending: [], job: job({ state: "delayed", delayedUntil: NOW + 60_000 }), gate: noGate, now: NOW });
    expect(w.kind).toBe("retry");
    const remedy = remedyOf(policy, {
      lastStatus: "needs-attention",
      inFlight: { rotationId: "r1", reason: "scheduled", status: "needs-attention", step: "revoking", startedAt: 0, promotedAt: NOW - 60_000, waitingFor: [], confirmed: [], consumerFailures: [], waitsFor: w },
    });
    expect(remedy).toContain("rekey retries revoking at 2026-12-02T12:01:00Z");
  });
});
