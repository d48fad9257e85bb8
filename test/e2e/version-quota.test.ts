/**
 * AWS's version quota is per secret: a secret that has created its quota of versions within 24 h
 * answers PutSecretValue with LimitExceededException. On the emulator (quota lowered to 3), with
 * two LaunchDarkly policies: the rotation of the secret at its quota parks alone — its new token
 * is deleted again, its old value stays current, the audit says why and until when — while the
 * other policy's secret, in the same region, rotates to completion at once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { storeScope } from "../../src/rotation/scope.ts";
import { jobViewer } from "../../src/rotation/status.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ldPolicy, REGION, type Stack, startStack, until } from "../helpers/stack.ts";


describe("AWS version quota of one secret", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  const policies: PolicyInput[] = [];
  const old: Record<string, string> = {};
  const full = { secretId: "prod/ld-full", region: REGION };
  const free = { secretId: "prod/ld-free", region: REGION };

  beforeAll(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    for (const id of ["ld-full", "ld-free"]) policies.push(ldPolicy(ld, id));
    stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value }, emulator: { versionQuota: 3 } });
    for (const p of policies) {
      old[p.id] = ld.addToken({ name: p.id }).value;
      await stack.store.create!({ secretId: p.target.secretId, region: REGION }, old[p.id]!);
    }
    // ld-full has made its 3 versions today: its next PutSecretValue is refused.
    for (const token of ["00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"]) {
      await stack.store.putPending(full, token, `filler-${token}`);
      await stack.store.discardPending(full, token);
    }
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await ld?.close();
  });

  it("parks only the rotation of the secret at its quota; the other secret in the region rotates", async () => {
    const parked = await stack.rt.rotations.enqueue({ policyId: "ld-full", reason: "manual", actor: "test" });
    const refused = await until("the quota refusal audited", async () =>
      (await stack.rt.audit.history({ policyId: "ld-full", limit: 50 })).find((h) => h.rotationId === parked.rotationId && h.outcome === "rate-limited"),
    );
    // One write refused (the SDK's own attempts at most, 3): rekey does not retry a quota in-process.
    expect(stack.emulator.count("PutSecretValue", 400)).toBeGreaterThan(0);
    expect(stack.emulator.count("PutSecretValue", 400)).toBeLessThanOrEqual(3);
    expect(refused.message).toContain("version quota of secret prod/ld-full");
    expect(refused.message).toContain("only this rotation waits");

    // The region stays open: no gate closed for every secret of us-east-1.
    expect(await stack.rt.state.gates.until(storeScope(full))).toBe(0);
    const rotated = await stack.rt.rotations.enqueue({ policyId: "ld-free", reason: "manual", actor: "test" });
    await until("ld-free completed", async () => (await stack.rt.state.records.get(rotated.rotationId))?.status === "completed", 30_000);
    const cur = await stack.store.getCurrent(free);
    expect(cur?.versionId).toBe(rotated.rotationId);
    expect(ld.isLive(cur!.value)).toBe(true);
    expect(ld.isLive(old["ld-free"]!)).toBe(false);

    // The parked rotation: its new token deleted again, nothing written, the old value current and
    // live, the job waiting about an hour (not failed, no attempt used), the policy still held.
    const issued = ld.tokens().filter((t) => t.description.includes(parked.rotationId));
    expect(issued.length).toBe(1);
    expect(issued.every((t) => !ld.isLive(t.value))).toBe(true);
    expect(await stack.store.getVersion(full, parked.rotationId)).toBeUndefined();
    expect((await stack.store.getCurrent(full))?.value).toBe(old["ld-full"]);
    expect(ld.isLive(old["ld-full"]!)).toBe(true);
    const rec = await stack.rt.state.records.get(parked.rotationId);
    expect(rec).toMatchObject({ status: "running", step: "issuing" });
    expect(rec?.endedAt).toBeUndefined();
    const job = await jobViewer(stack.rt.queue)(parked.jobId);
    expect(job).toMatchObject({ state: "delayed", attemptsMade: 0 });
    expect(job?.delayedUntil).toBeGreaterThan(Date.now() + 50 * 60_000);
    expect(await stack.rt.state.locks.inFlight("ld-full")).toBe(parked.rotationId);
  }, 90_000);
});
