/**
 * The three Snyk credentials rotated end to end on real Redis, the real AWS SDK against the
 * emulator and the Snyk fake over HTTP:
 * - a service account's OAuth client secret (overlap: a second secret, the old one deleted only
 *   after confirmation, AWSCURRENT working at every moment);
 * - a user's API token (a human step and a cut-over: the owner is told what to do, regenerates it
 *   in the "UI" and hands the value to `rekey submit` on stdin);
 * - a personal access token (a human step with overlap: submitted through the API, the old PAT
 *   deleted by API only after confirmation).
 */
import { directActor } from "../../src/cli/context.ts";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { patName } from "../../src/providers/snyk/pat.ts";
import { type SnykFake, type SnykUser, startSnykFake } from "../fakes/snyk.ts";
import { apiSubmit, confirmVersion, type Receiver, runCli, startReceiver, statusOf, WEBHOOK_KEY, WEBHOOK_KEY_ENV, webhookTarget } from "../helpers/human.ts";
import { ADMIN_TOKEN, dumpRedis, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "snyk-consumer-token-abcdefghijklmnopqr";
const HUMAN = { timeout: "1h", remindEvery: "30m" };

function secretOf(id: string) {
  return { secretId: `prod/${id}`, region: REGION };
}

function base(id: string, extra: Partial<PolicyInput>): Omit<PolicyInput, "provider"> {
  return {
    id,
    owner: "owner@example.com",
    target: secretOf(id),
    consumers: [{ id: "ci", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
    ...extra,
  };
}

/** Audit outcomes of a policy, oldest first, as "step:outcome". */
async function steps(stack: Stack, policyId: string): Promise<string[]> {
  return (await stack.rt.audit.history({ policyId, limit: 100 })).map((h) => `${h.step}:${h.outcome}`).reverse();
}

async function noSecretsAnywhere(stack: Stack, receiver: Receiver | undefined, secrets: string[]): Promise<void> {
  const dump = await dumpRedis(stack.rt, stack.prefix);
  const audit = JSON.stringify(await stack.rt.audit.history({ limit: 1_000 }));
  for (const secret of secrets) {
    expect(dump).not.toContain(secret);
    expect(stack.logs.text()).not.toContain(secret);
    expect(audit).not.toContain(secret);
    if (receiver) expect(receiver.raw()).not.toContain(secret);
  }
}

describe("Snyk rotation end to end", () => {
  let snyk: SnykFake;
  let receiver: Receiver;
  let stack: Stack | undefined;
  let orgId: string;
  let admin: SnykUser;
  let owner: SnykUser;

  beforeEach(async () => {
    snyk = await startSnykFake();
    receiver = await startReceiver();
    orgId = snyk.addOrg();
    admin = snyk.addUser({ email: "admin@example.com", orgs: [orgId] });
    owner = snyk.addUser({ email: "owner@example.com" });
  });

  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await receiver.close();
    await snyk.close();
  });

  async function start(policies: PolicyInput[]): Promise<Stack> {
    stack = await startStack({ policies, env: { SNYK_ADMIN_TOKEN: admin.apiToken, [WEBHOOK_KEY_ENV]: WEBHOOK_KEY } });
    return stack;
  }

  it("service account: a second client secret, verified by token exchange and /rest/self, the old one deleted only after confirmation", async () => {
    const account = snyk.addServiceAccount({ orgId });
    const [oldSecret] = snyk.secretsOf(account.id);
    const policy: PolicyInput = {
      ...base("snyk-sa", {}),
      provider: { kind: "snyk-service-account", baseUrl: snyk.url, management: { env: "SNYK_ADMIN_TOKEN" }, orgId, serviceAccountId: account.id, clientId: account.clientId },
    };
    const s = await start([policy]);
    await s.store.create!(secretOf("snyk-sa"), oldSecret!);

    // AWSCURRENT must authenticate at Snyk at every moment of the rotation.
    let checks = 0;
    let broken = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const cur = await s.store.getCurrent(secretOf("snyk-sa"));
        checks++;
        if (!cur || !snyk.isLive(cur.value)) broken++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();

    const req = await s.rt.rotations.enqueue({ policyId: "snyk-sa", reason: "manual", actor: "cli:test" });
    await statusOf(s, req.rotationId, ["awaiting-confirmation"]);
    const current = await s.store.getCurrent(secretOf("snyk-sa"));
    expect(current?.versionId).toBe(req.rotationId);
    expect(current?.value).not.toBe(oldSecret);
    // mode=create added a second secret alongside the first.
    expect(snyk.secretsOf(account.id)).toEqual([oldSecret, current!.value]);
    // Verified before promotion: the new secret was exchanged for an access token, which called /rest/self.
    expect(snyk.count("POST /oauth2/token", 200)).toBeGreaterThanOrEqual(1);
    expect(snyk.count("GET /rest/self", 200)).toBeGreaterThanOrEqual(1);

    // I2: nobody confirmed yet, so the old secret is still there.
    await new Promise((r) => setTimeout(r, 300));
    expect(snyk.secretsOf(account.id)).toContain(oldSecret);

    expect(await confirmVersion(s, "snyk-sa", "ci", req.rotationId, CONSUMER_TOKEN)).toBe(200);
    await statusOf(s, req.rotationId, ["completed"]);
    expect(snyk.secretsOf(account.id)).toEqual([current!.value]);
    expect(snyk.isLive(oldSecret!)).toBe(false);

    watching = false;
    await watcher;
    expect(checks).toBeGreaterThan(10);
    expect(broken).toBe(0);
    // Client secrets cannot be listed, so a new one whose value only memory knew could never be
    // found again: it is written to AWSPENDING first, verified there, then promoted (I1).
    const seq = await steps(s, "snyk-sa");
    expect(seq).toEqual(expect.arrayContaining(["start:ok", "issuing:ok", "verifying:ok", "promoting:ok", "confirmation:ok", "revoking:ok"]));
    expect(seq.indexOf("issuing:ok")).toBeLessThan(seq.indexOf("verifying:ok"));
    await noSecretsAnywhere(s, receiver, [oldSecret!, current!.value, admin.apiToken]);
  });

  it("user token: the owner is told, the cut-over is announced first, a wrong or old value is refused, the regenerated one is stored", async () => {
    const policy: PolicyInput = {
      ...base("snyk-user", { acceptCutover: true, human: HUMAN, notify: [webhookTarget(receiver)] }),
      provider: { kind: "snyk-user-token", baseUrl: snyk.url, uiUrl: "https://app.snyk.io/account" },
    };
    const s = await start([policy]);
    const oldToken = owner.apiToken;
    await s.store.create!(secretOf("snyk-user"), oldToken);

    const req = await s.rt.rotations.enqueue({ policyId: "snyk-user", reason: "scheduled", actor: "scheduler", slot: Date.UTC(2026, 0, 5, 3) });
    await statusOf(s, req.rotationId, ["awaiting-human"]);
    const asked = await receiver.waitFor("human.action-required", req.rotationId);
    if (asked.event !== "human.action-required") throw new Error("unexpected event");
    expect(asked.link).toBe("https://app.snyk.io/account");
    expect(asked.instructions).toContain("Revoke & Regenerate");
    expect(asked.instructions).toContain(`rekey submit ${req.rotationId}`);
    // Consumers hear of the cut-over before the owner acts: the old token still works now.
    const warned = await receiver.waitFor("rotation.cutover-pending", req.rotationId);
    expect(warned.secretId).toBe("prod/snyk-user");
    expect(snyk.isLive(oldToken)).toBe(true);
    expect(receiver.of("rotation.leak")).toEqual([]);

    // A value given as an argument is refused before anything is read or changed.
    const argv = await runCli(s, [policy], ["submit", req.rotationId, "some-value"], "");
    expect(argv.code).toBe(2);
    expect(argv.stderr).toContain("refusing a value given as an argument");

    // A wrong value: refused with the reason, the rotation keeps waiting.
    const wrong = await runCli(s, [policy], ["submit", req.rotationId], "not-a-snyk-token\n");
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("did not pass the snyk-user-token check");
    expect(wrong.stderr).toContain("keeps waiting");
    // The old (current) value still passes Snyk's check until the owner regenerates: refused too.
    const same = await runCli(s, [policy], ["submit", req.rotationId], `${oldToken}\n`);
    expect(same.code).toBe(1);
    expect(same.stderr).toContain("that is the current value");
    expect((await s.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-human");
    expect(Object.values(await s.store.stages(secretOf("snyk-user"))).flat()).not.toContain("AWSPENDING");

    // The owner regenerates in the UI (the old token dies at once) and submits the new one on stdin.
    const actedAt = Date.now();
    const newToken = snyk.regenerateUserToken(owner.id);
    expect(snyk.isLive(oldToken)).toBe(false);
    const ok = await runCli(s, [policy], ["submit", req.rotationId], `${newToken}\n`);
    // The one line on stderr says how the command acted, and as whom.
    expect(ok.stderr).toBe(`rekey submit: acting with direct Redis access (REDIS_URL), audited as ${directActor()}; with REKEY_API_URL and REKEY_TOKEN set, commands that support it go through the API with a token instead\n`);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`accepted`);

    await statusOf(s, req.rotationId, ["awaiting-confirmation"]);
    const current = await s.store.getCurrent(secretOf("snyk-user"));
    expect(current).toMatchObject({ versionId: req.rotationId, value: newToken });
    const told = await receiver.waitFor("rotation.awaiting-confirmation", req.rotationId);
    expect(told.versionId).toBe(req.rotationId);
    if (told.event === "rotation.awaiting-confirmation") expect(told.consumers).toEqual(["ci"]);
    // The pre-warning reached the receiver before the owner acted, and exactly once.
    expect(receiver.events.filter((e) => e.event.event === "rotation.cutover-pending").map((e) => e.receivedAt <= actedAt)).toEqual([true]);

    expect(await confirmVersion(s, "snyk-user", "ci", req.rotationId, CONSUMER_TOKEN)).toBe(200);
    await statusOf(s, req.rotationId, ["completed"]);
    expect(snyk.isLive(newToken)).toBe(true);
    expect(await steps(s, "snyk-user")).toEqual(expect.arrayContaining(["awaiting-human:requested", "submit:refused", "submit:ok", "awaiting-human:ok", "revoking:ok"]));
    expect(receiver.badSignatures).toBe(0);
    await noSecretsAnywhere(s, receiver, [oldToken, newToken]);
  });

  it("PAT: created by the owner under the name the instructions give, submitted through the API, the old PAT deleted only after confirmation", async () => {
    const oldPat = snyk.createPat(owner.id, { name: "ci-scanner", expiresInDays: 60 });
    const policy: PolicyInput = {
      ...base("snyk-pat", { human: HUMAN, notify: [webhookTarget(receiver)] }),
      provider: { kind: "snyk-pat", baseUrl: snyk.url },
    };
    const s = await start([policy]);
    await s.store.create!(secretOf("snyk-pat"), oldPat.token);

    const req = await s.rt.rotations.enqueue({ policyId: "snyk-pat", reason: "manual", actor: "cli:test" });
    await statusOf(s, req.rotationId, ["awaiting-human"]);
    const asked = await receiver.waitFor("human.action-required", req.rotationId);
    const name = patName("snyk-pat", req.rotationId);
    if (asked.event !== "human.action-required") throw new Error("unexpected event");
    expect(asked.instructions).toContain(name);
    expect(asked.link).toBe("https://app.snyk.io/account/personal-access-tokens");

    // A misnamed PAT is refused with the reason; nothing is stored.
    const misnamed = snyk.createPat(owner.id, { name: "my new token" });
    const refused = await apiSubmit(s, req.rotationId, misnamed.token, ADMIN_TOKEN);
    expect(refused.status).toBe(422);
    expect(String(refused.body.error)).toContain(`no active PAT named "${name}"`);
    expect((await s.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-human");
    await fetch(`${snyk.url}/rest/self/personal_access_tokens/${misnamed.id}?version=2024-10-15`, { method: "DELETE", headers: { authorization: `token ${misnamed.token}` } });

    // The owner creates the PAT as told and submits it through the API with the admin token.
    const newPat = snyk.createPat(owner.id, { name, expiresInDays: 80 });
    expect((await apiSubmit(s, req.rotationId, newPat.token, "not-the-admin-token")).status).toBe(401);
    const ok = await apiSubmit(s, req.rotationId, newPat.token, ADMIN_TOKEN);
    expect(ok).toEqual({ status: 200, body: { policyId: "snyk-pat", versionId: req.rotationId } });

    const rec = await until("awaiting-confirmation", async () => {
      const r = await s.rt.state.records.get(req.rotationId);
      return r?.status === "awaiting-confirmation" ? r : undefined;
    });
    expect(rec.newCredentialId).toBe(newPat.id);
    expect((await s.store.getCurrent(secretOf("snyk-pat")))?.value).toBe(newPat.token);
    // Overlap: no cut-over warning, and the old PAT keeps working until the consumer confirmed.
    expect(receiver.of("rotation.cutover-pending")).toEqual([]);
    await new Promise((r) => setTimeout(r, 300));
    expect(snyk.isLive(oldPat.token)).toBe(true);
    expect(snyk.count(/^DELETE \/rest\/self\/personal_access_tokens\//)).toBe(1); // only the misnamed one

    expect(await confirmVersion(s, "snyk-pat", "ci", req.rotationId, CONSUMER_TOKEN)).toBe(200);
    await statusOf(s, req.rotationId, ["completed"]);
    expect(snyk.isLive(oldPat.token)).toBe(false);
    expect(snyk.pats.get(oldPat.id)?.deleted).toBe(true);
    expect(snyk.activePats(owner.id).map((p) => p.id)).toEqual([newPat.id]);
    expect(snyk.count(`DELETE /rest/self/personal_access_tokens/${oldPat.id}`, 204)).toBe(1);
    await noSecretsAnywhere(s, receiver, [oldPat.token, newPat.token, misnamed.token]);
  });
});
