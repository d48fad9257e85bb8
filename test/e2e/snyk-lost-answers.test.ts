/**
 * Snyk service-account secrets whose answers are lost, end to end on real Redis, the AWS emulator
 * and the Snyk fake over HTTP. Snyk documents neither the status of a refused third create nor
 * that of a delete of an unknown secret; the fake answers 400 (a status the endpoint documents) by
 * default and 404/409 on request, and rekey must end the same way under both: it asks the token
 * endpoint whether a secret still exists (401 invalid_client = gone) and decides from that.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type SnykFake, type SnykServiceAccount, type SnykUser, startSnykFake } from "../fakes/snyk.ts";
import { confirmVersion, statusOf } from "../helpers/human.ts";
import { REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "snyk-lost-consumer-token-abcdefghijklmn";
const SECRETS = /^POST .*\/service_accounts\/[^/]+\/secrets$/;

describe.each([{ refusals: 400 as const }, { refusals: "404/409" as const }])("Snyk lost answers, refusals answered $refusals", ({ refusals }) => {
  let snyk: SnykFake;
  let stack: Stack | undefined;
  let admin: SnykUser;
  let account: SnykServiceAccount;
  let oldSecret: string;
  const ref = { secretId: "prod/snyk-lost", region: REGION };

  beforeEach(async () => {
    snyk = await startSnykFake({ secretRefusals: refusals });
    const orgId = snyk.addOrg();
    admin = snyk.addUser({ email: "admin@example.com", orgs: [orgId] });
    account = snyk.addServiceAccount({ orgId });
    oldSecret = snyk.secretsOf(account.id)[0]!;
    const policy: PolicyInput = {
      id: "snyk-lost",
      owner: "owner@example.com",
      provider: { kind: "snyk-service-account", baseUrl: snyk.url, management: { env: "SNYK_ADMIN_TOKEN" }, orgId, serviceAccountId: account.id, clientId: account.clientId },
      target: ref,
      consumers: [{ id: "ci", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
    };
    // A 1 s request budget: a lost create is waited out for 4 s, not a minute.
    stack = await startStack({ policies: [policy], env: { SNYK_ADMIN_TOKEN: admin.apiToken }, requestTimeoutMs: 1_000 });
    await stack.store.create!(ref, oldSecret);
  });

  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await snyk.close();
  });

  it("mode=delete whose answer is lost: the retry is refused, the token endpoint says the old secret is gone, the rotation completes", async () => {
    const s = stack!;
    const req = await s.rt.rotations.enqueue({ policyId: "snyk-lost", reason: "manual", actor: "cli:test" });
    await statusOf(s, req.rotationId, ["awaiting-confirmation"]);
    const current = await s.store.getCurrent(ref);
    snyk.faults.inject({ route: SECRETS, kind: "drop-after" });
    expect(await confirmVersion(s, "snyk-lost", "ci", req.rotationId, CONSUMER_TOKEN)).toBe(200);
    await statusOf(s, req.rotationId, ["completed", "needs-attention", "failed"], 45_000);
    const rec = await s.rt.state.records.get(req.rotationId);
    expect(rec?.status, rec?.message).toBe("completed");
    expect(rec?.message ?? "").not.toContain("kept alive");
    // The lost delete happened; the retry was refused with the fake's status, then checked.
    expect(snyk.count(SECRETS, refusals === 400 ? 400 : 404)).toBe(1);
    expect(snyk.requests.some((r) => r.path === "/oauth2/token" && r.status === 401)).toBe(true);
    expect(snyk.secretsOf(account.id)).toEqual([current!.value]);
    expect(snyk.isLive(oldSecret)).toBe(false);
  });

  it("mode=create whose answer is lost: the next create is refused, the rotation needs attention and names rekey leak; the old secret stays current and working", async () => {
    const s = stack!;
    snyk.faults.inject({ route: SECRETS, kind: "drop-after" });
    const req = await s.rt.rotations.enqueue({ policyId: "snyk-lost", reason: "manual", actor: "cli:test" });
    const rec = await until("the rotation ends", async () => {
      const r = await s.rt.state.records.get(req.rotationId);
      return r?.endedAt !== undefined ? r : undefined;
    }, 45_000, 100);
    expect(rec.status, rec.message).toBe("needs-attention");
    expect(rec.message).toContain("rekey leak --policy snyk-lost");
    expect(snyk.count(SECRETS, refusals === 400 ? 400 : 409)).toBe(1);
    // I6: the old secret is still current and authenticates; the lost one is the unlistable second.
    expect((await s.store.getCurrent(ref))?.value).toBe(oldSecret);
    expect(snyk.isLive(oldSecret)).toBe(true);
    expect(snyk.secretsOf(account.id)).toHaveLength(2);
    expect(await s.rt.state.locks.inFlight("snyk-lost")).toBeUndefined();
  });
});
