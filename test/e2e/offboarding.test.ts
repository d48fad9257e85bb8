/**
 * Offboarding end to end on real Redis, the AWS emulator and the LaunchDarkly fake over HTTP: a
 * departing member with managed credentials (policies they own, and a policy of someone else
 * that runs on their personal token) and an unmanaged one; the report says what blocks, and a
 * re-run changes nothing already done.
 */
import { directActor } from "../../src/cli/context.ts";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runOffboard } from "../../src/cli/commands/leak.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { OffboardReport } from "../../src/offboarding/offboarding.ts";
import { Policy, type PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ADMIN_TOKEN, REGION, type Stack, startStack, until } from "../helpers/stack.ts";
import { captureIo } from "../helpers/human.ts";

const CONSUMER_TOKEN = "offboarding-consumer-token-0123456789";

const io = () => captureIo("", "hr-ops");

describe("offboarding", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let admin: { id: string; value: string };
  let dana: string;
  const tokens: Record<string, { id: string; value: string }> = {};

  function policy(id: string, owner: string, extra: Partial<PolicyInput> = {}): PolicyInput {
    return {
      id,
      owner,
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: { secretId: `prod/${id}`, region: REGION },
      ...extra,
    };
  }

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    const adminMember = ld.addMember("admin@example.com", "admin");
    admin = ld.addToken({ memberId: adminMember, role: "admin", name: "rekey management" });
    dana = ld.addMember("dana@example.com", "writer");
    const olga = ld.addMember("olga@example.com", "writer");
    tokens.api = ld.addToken({ memberId: dana, name: "dana api", role: "reader" });
    tokens.batch = ld.addToken({ memberId: dana, name: "dana batch", role: "reader" });
    tokens.shared = ld.addToken({ memberId: dana, name: "reports (dana's token)", role: "reader" });
    tokens.olga = ld.addToken({ memberId: olga, name: "olga", role: "reader" });
    tokens.laptop = ld.addToken({ memberId: dana, name: "dana laptop script", role: "reader" });
    const policies = [
      policy("dana-api", "dana@example.com", {
        offboarding: { successor: "sam@example.com" },
        consumers: [{ id: "web", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
      }),
      policy("dana-batch", "dana@example.com", { offboarding: { successor: "sam@example.com" } }),
      policy("reports", "olga@example.com"),
      policy("olga-own", "olga@example.com"),
    ];
    stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value } });
    for (const [id, t] of [["dana-api", tokens.api], ["dana-batch", tokens.batch], ["reports", tokens.shared], ["olga-own", tokens.olga]] as const) {
      await stack.store.create!({ secretId: `prod/${id}`, region: REGION }, t!.value);
    }
  });

  afterEach(async () => {
    await stack.close();
    await ld.close();
  });

  it("rotates the member's managed credentials to the successor, reports what blocks, and a re-run changes nothing done", async () => {
    const first = io();
    expect(await runOffboard(stack.rt, first, "dana@example.com", { json: true, pollMs: 100, timeout: "30s" })).toBe(1);
    const report = JSON.parse(first.out) as OffboardReport;
    expect(report.safeToRemove).toBe(false);
    const byId = Object.fromEntries(report.policies.map((p) => [p.policyId, p]));
    expect(Object.keys(byId).sort()).toEqual(["dana-api", "dana-batch", "reports"]);
    expect(byId["dana-api"]).toMatchObject({ reason: "owner", successor: "sam@example.com", state: "awaiting-confirmation", waitingFor: ["web"] });
    expect(byId["dana-batch"]).toMatchObject({ reason: "owner", state: "completed" });
    // Olga's policy runs on Dana's personal token: it is Dana's credential, rotated to the policy's owner.
    expect(byId.reports).toMatchObject({ reason: "credential", successor: "olga@example.com", state: "completed" });
    expect(report.unmanaged.map((u) => u.credentialId)).toEqual([tokens.laptop!.id]);
    expect(report.blockers).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^dana-api: rotation .* waiting for consumers to confirm: web$/),
        expect.stringMatching(/^dana-api: dana-api\.yaml still names dana@example\.com as owner; change owner to sam@example\.com$/),
        expect.stringMatching(/^dana-batch: dana-batch\.yaml still names/),
        expect.stringContaining(`unmanaged launchdarkly credential ${tokens.laptop!.id} "dana laptop script" (personal)`),
      ]),
    );
    expect(report.blockers).toHaveLength(4);

    // The new credentials outlive Dana: service tokens, not Dana's; hers are gone where confirmed.
    for (const id of ["dana-batch", "reports"]) {
      const cur = await stack.store.getCurrent({ secretId: `prod/${id}`, region: REGION });
      const t = ld.tokens().find((x) => x.value === cur!.value)!;
      expect(t.serviceToken).toBe(true);
      expect(t.memberId).not.toBe(dana);
    }
    expect(ld.isLive(tokens.batch!.value)).toBe(false);
    expect(ld.isLive(tokens.shared!.value)).toBe(false);
    expect(ld.isLive(tokens.api!.value)).toBe(true); // I2: web has not confirmed yet
    expect(ld.isLive(tokens.olga!.value)).toBe(true);

    // A re-run (through the API this time) continues: same rotations, no new token, nothing revoked twice.
    const creates = ld.count("POST /api/v2/tokens", 201);
    const deletes = ld.count(/^DELETE /);
    const jobs = await stack.rt.queue.getJobCounts("completed", "delayed", "waiting", "active", "prioritized");
    const res = await fetch(`${stack.apiUrl}/v1/offboardings`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ member: "Dana@example.com" }),
    });
    expect(res.status).toBe(202);
    const again = (await res.json()) as OffboardReport;
    expect(again.policies.map((p) => [p.policyId, p.rotationId, p.state])).toEqual(report.policies.map((p) => [p.policyId, p.rotationId, p.state]));
    await new Promise((r) => setTimeout(r, 300));
    expect(ld.count("POST /api/v2/tokens", 201)).toBe(creates);
    expect(ld.count(/^DELETE /)).toBe(deletes);
    expect(await stack.rt.queue.getJobCounts("completed", "delayed", "waiting", "active", "prioritized")).toEqual(jobs);

    // Even after the queue forgot the jobs (retention), the record keeps a re-run from starting over.
    await stack.rt.queue.clean(0, 1_000, "completed");
    const third = io();
    await runOffboard(stack.rt, third, "dana@example.com", { json: true, wait: false });
    expect((JSON.parse(third.out) as OffboardReport).policies.map((p) => p.rotationId)).toEqual(report.policies.map((p) => p.rotationId));
    expect(ld.count("POST /api/v2/tokens", 201)).toBe(creates);

    // The operator clears the rest: web confirms, the laptop token is deleted, the files name Sam.
    const api = byId["dana-api"]!;
    const conf = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
      body: JSON.stringify({ policyId: "dana-api", consumerId: "web", versionId: api.rotationId }),
    });
    expect(conf.status).toBe(200);
    await until("dana-api completed", async () => (await stack.rt.state.records.get(api.rotationId!))?.status === "completed");
    expect(ld.isLive(tokens.api!.value)).toBe(false);
    await fetch(`${ld.url}/api/v2/tokens/${tokens.laptop!.id}`, { method: "DELETE", headers: { authorization: admin.value } });
    stack.rt.policies.replace(
      stack.rt.policies.all().map((p) => ({ policy: { ...p, owner: p.owner === "dana@example.com" ? "sam@example.com" : p.owner }, file: `${p.id}.yaml` })),
    );
    const last = io();
    expect(await runOffboard(stack.rt, last, "dana@example.com", { pollMs: 100, timeout: "10s" })).toBe(0);
    expect(last.out).toContain("safe to remove dana@example.com: yes");
    expect(last.out).toMatch(/dana-api\s+launchdarkly\s+owner\s+sam@example.com\s+completed/);

    const audit = await stack.rt.audit.history({ limit: 500 });
    expect(audit.filter((a) => a.step === "offboarding.run").map((a) => a.actor).reverse()).toEqual([directActor(), "api:admin", directActor(), directActor()]);
    expect(audit.filter((a) => a.step === "offboarding.requested" && a.policyId)).toHaveLength(3);
  });

  it("reset-with-expiry: the departed member's tokens are replaced, not reset in place; safe to remove only once done, and removing the member breaks no consumer", async () => {
    const web = { id: "web", confirm: "push" as const, tokenHash: tokenHash(CONSUMER_TOKEN) };
    const reset = { kind: "launchdarkly" as const, baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" }, strategy: "reset-with-expiry" as const, resetExpiry: "1h" };
    const resetPolicies = (owner: string) => [
      Policy.parse(policy("dana-api", owner, { provider: reset, acceptCutover: true, offboarding: { successor: "sam@example.com" }, consumers: [web] })),
      // Olga's policy on Dana's personal token.
      Policy.parse(policy("reports", "olga@example.com", { provider: reset, acceptCutover: true, consumers: [web] })),
    ];
    stack.rt.policies.replace(resetPolicies("dana@example.com").map((p) => ({ policy: p, file: `${p.id}.yaml` })));
    // Dana's other tokens are no policy's: deleted, so only the policies' tokens are in question.
    for (const t of [tokens.batch!, tokens.laptop!]) await fetch(`${ld.url}/api/v2/tokens/${t.id}`, { method: "DELETE", headers: { authorization: admin.value } });

    const first = io();
    expect(await runOffboard(stack.rt, first, "dana@example.com", { json: true, pollMs: 100, timeout: "20s" })).toBe(1);
    const report = JSON.parse(first.out) as OffboardReport;
    expect(report.safeToRemove).toBe(false);
    expect(report.policies.map((p) => [p.policyId, p.state])).toEqual([["dana-api", "awaiting-confirmation"], ["reports", "awaiting-confirmation"]]);
    // No reset in place: each policy got a new token that is not Dana's, and Dana's stay until confirmed.
    expect(ld.count(/\/reset/)).toBe(0);
    for (const id of ["dana-api", "reports"]) {
      const cur = await stack.store.getCurrent({ secretId: `prod/${id}`, region: REGION });
      const t = ld.tokens().find((x) => x.value === cur!.value)!;
      expect(t.memberId).not.toBe(dana);
    }
    expect(ld.isLive(tokens.api!.value)).toBe(true);
    expect(ld.isLive(tokens.shared!.value)).toBe(true);

    for (const p of report.policies) {
      const conf = await fetch(`${stack.apiUrl}/v1/confirmations`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
        body: JSON.stringify({ policyId: p.policyId, consumerId: "web", versionId: p.rotationId }),
      });
      expect(conf.status).toBe(200);
    }
    for (const p of report.policies) await until(`${p.policyId} completed`, async () => (await stack.rt.state.records.get(p.rotationId!))?.status === "completed");
    expect(ld.isLive(tokens.api!.value)).toBe(false);
    expect(ld.isLive(tokens.shared!.value)).toBe(false);
    stack.rt.policies.replace(resetPolicies("sam@example.com").map((p) => ({ policy: p, file: `${p.id}.yaml` })));
    const last = io();
    expect(await runOffboard(stack.rt, last, "dana@example.com", { pollMs: 100, timeout: "10s" })).toBe(0);
    expect(last.out).toContain("safe to remove dana@example.com: yes");

    // The report reads the world, not the records: a policy put back on a token of Dana's (by hand,
    // after its rotation completed) makes it unsafe again.
    const ref = { secretId: "prod/reports", region: REGION };
    const good = (await stack.store.getCurrent(ref))!.value;
    const stray = ld.addToken({ memberId: dana, name: "dana again", role: "reader" });
    await stack.store.putCurrent!(ref, crypto.randomUUID(), stray.value);
    const unsafe = io();
    expect(await runOffboard(stack.rt, unsafe, "dana@example.com", { json: true, wait: false })).toBe(1);
    expect((JSON.parse(unsafe.out) as OffboardReport).blockers).toEqual([expect.stringMatching(/^reports: rotation .* completed, but the credential it runs on still belongs to dana@example.com/)]);
    await stack.store.putCurrent!(ref, crypto.randomUUID(), good);
    await fetch(`${ld.url}/api/v2/tokens/${stray.id}`, { method: "DELETE", headers: { authorization: admin.value } });

    // Dana is removed from the account: every consumer of every offboarded policy still works.
    ld.removeMember(dana);
    for (const id of ["dana-api", "reports"]) {
      const cur = await stack.store.getCurrent({ secretId: `prod/${id}`, region: REGION });
      expect(ld.isLive(cur!.value)).toBe(true);
      const res = await fetch(`${ld.url}/api/v2/caller-identity`, { headers: { authorization: cur!.value } });
      await res.text();
      expect(res.status).toBe(200);
    }
  });

  it("names a missing successor as a blocker and starts nothing for that policy", async () => {
    stack.rt.policies.replace([{ policy: Policy.parse(policy("dana-api", "dana@example.com")), file: "dana-api.yaml" }]);
    const out = io();
    expect(await runOffboard(stack.rt, out, "dana@example.com", { wait: false })).toBe(1);
    expect(out.out).toContain("safe to remove dana@example.com: no");
    expect(out.out).toContain("dana-api: no successor is named; add offboarding.successor to dana-api.yaml or run again with --successor");
    expect(ld.count("POST /api/v2/tokens")).toBe(0);
  });
});
