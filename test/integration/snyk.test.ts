import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttentionError, PermanentError, RateLimitedError, TransientError, VerificationError } from "../../src/errors.ts";
import {
  SnykPatProvider,
  SnykServiceAccountProvider,
  SnykUserTokenProvider,
  type CredentialRef,
  type ProviderConfigOf,
} from "../../src/policy/schema.ts";
import { createSnykPatProvider, createSnykServiceAccountProvider, createSnykUserTokenProvider, patName } from "../../src/providers/snyk/index.ts";
import { type ProviderContext, type RotationReason } from "../../src/providers/types.ts";
import { jsonApiError, startSnykFake, type SnykFake, type SnykFakeOptions, type SnykServiceAccount, type SnykUser } from "../fakes/snyk.ts";

type SnykKind = "snyk-service-account" | "snyk-user-token" | "snyk-pat";

interface CtxOpts {
  env?: Record<string, string>;
  rotationId?: string;
  policyId?: string;
  reason?: RotationReason;
  successor?: string;
  now?: () => number;
}

function ctxFor<K extends SnykKind>(config: ProviderConfigOf<K>, opts: CtxOpts = {}): ProviderContext<K> {
  const env = opts.env ?? {};
  return {
    config,
    policyId: opts.policyId ?? "snyk-ci",
    rotationId: opts.rotationId ?? randomUUID(),
    signal: new AbortController().signal,
    resolve: async (ref: CredentialRef) => {
      const v = "env" in ref ? env[ref.env] : undefined;
      if (v === undefined) throw new Error(`test resolve: no value for ${JSON.stringify(ref)}`);
      return v;
    },
    now: opts.now ?? Date.now,
    reason: opts.reason ?? "scheduled",
    successor: opts.successor,
  };
}

/** Awaits a promise that must reject and returns the error. */
async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

let fake: SnykFake;
async function start(opts?: SnykFakeOptions): Promise<SnykFake> {
  await fake?.close();
  fake = await startSnykFake(opts);
  return fake;
}
beforeEach(async () => {
  fake = await startSnykFake();
});
afterEach(async () => {
  await fake.close();
});

describe("snyk fake", () => {
  it("requires the version parameter and a JSON:API content type, and answers JSON:API", async () => {
    const user = fake.addUser();
    const auth = { authorization: `token ${user.apiToken}` };

    const noVersion = await fetch(`${fake.url}/rest/self`, { headers: auth });
    expect(noVersion.status).toBe(400);
    expect(((await noVersion.json()) as { errors: { detail: string }[] }).errors[0]?.detail).toMatch(/version/);
    expect((await fetch(`${fake.url}/rest/self?version=2024-1-5`, { headers: auth })).status).toBe(400);

    const ok = await fetch(`${fake.url}/rest/self?version=2024-10-15`, { headers: auth });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("application/vnd.api+json");

    const org = fake.addOrg();
    user.orgs.add(org);
    const sa = fake.addServiceAccount({ orgId: org });
    const body = JSON.stringify({ data: { type: "service_account", attributes: { mode: "create" } } });
    const url = `${fake.url}/rest/orgs/${org}/service_accounts/${sa.id}/secrets?version=2024-10-15`;
    const wrongType = await fetch(url, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body });
    expect(wrongType.status).toBe(400);
    expect(fake.secretsOf(sa.id)).toHaveLength(1);

    expect((await fetch(`${fake.url}/rest/self?version=2024-10-15`, { headers: { authorization: "token nope" } })).status).toBe(401);
  });

  it("enforces the PAT limits and kills a regenerated user token at once", async () => {
    const user = fake.addUser();
    expect(() => fake.createPat(user.id, { name: "long", expiresInDays: 91 })).toThrow(/90 days/);
    for (const n of [1, 2, 3]) fake.createPat(user.id, { name: `p${n}` });
    expect(() => fake.createPat(user.id, { name: "p4" })).toThrow(/at most 3/);

    const old = user.apiToken;
    const fresh = fake.regenerateUserToken(user.id);
    expect(fake.isLive(old)).toBe(false);
    expect(fake.isLive(fresh)).toBe(true);
  });

  it("opens a new rate-limit window once the old one has passed", async () => {
    let t = 1_000_000;
    await start({ rateLimit: 2, now: () => t });
    const user = fake.addUser();
    const get = () => fetch(`${fake.url}/rest/self?version=2024-10-15`, { headers: { authorization: `token ${user.apiToken}` } });
    expect((await get()).status).toBe(200);
    expect((await get()).status).toBe(200);
    const limited = await get();
    expect(limited.status).toBe(429);
    expect([...limited.headers.keys()].filter((h) => /rate|retry/i.test(h))).toEqual([]);
    t += 59_999;
    expect((await get()).status).toBe(429);
    t += 1;
    expect((await get()).status).toBe(200);
  });
});

describe("snyk-service-account", () => {
  const provider = createSnykServiceAccountProvider();
  let admin: SnykUser;
  let org: string;
  let sa: SnykServiceAccount;
  let oldSecret: string;

  function config(over: Partial<Record<string, unknown>> = {}): ProviderConfigOf<"snyk-service-account"> {
    return SnykServiceAccountProvider.parse({
      kind: "snyk-service-account",
      baseUrl: fake.url,
      management: { env: "SNYK_ADMIN" },
      orgId: org,
      serviceAccountId: sa.id,
      clientId: sa.clientId,
      apiVersion: "2024-10-15",
      ...over,
    });
  }
  const ctx = (c = config(), opts: CtxOpts = {}) => ctxFor(c, { env: { SNYK_ADMIN: admin.apiToken }, ...opts });

  beforeEach(() => {
    org = fake.addOrg();
    admin = fake.addUser({ orgs: [org] });
    sa = fake.addServiceAccount({ orgId: org });
    oldSecret = sa.secrets[0] ?? "";
  });

  it("creates a second secret, verifies it, then deletes the old one", async () => {
    const c = ctx();
    const handle = await provider.identify(c, oldSecret);
    expect(handle.meta?.serviceAccountId).toBe(sa.id);

    const issued = await provider.issue!(c, { value: oldSecret, ...handle });
    expect(issued.value).not.toBe(oldSecret);
    expect(fake.secretsOf(sa.id)).toEqual([oldSecret, issued.value]);
    expect(fake.isLive(oldSecret)).toBe(true);

    await provider.verify(c, issued.value, issued);
    expect(fake.count("POST /oauth2/token", 200)).toBe(1);
    expect(fake.count("GET /rest/self", 200)).toBe(1);

    await provider.revoke!(c, { value: oldSecret, ...handle });
    expect(fake.secretsOf(sa.id)).toEqual([issued.value]);
    expect(fake.isLive(oldSecret)).toBe(false);

    // Every REST call pinned the configured version (content type is enforced by the fake: a
    // create with another type is refused, see above).
    const rest = fake.requests.filter((r) => r.path.startsWith("/rest/"));
    expect(rest.length).toBeGreaterThan(0);
    expect(rest.every((r) => r.query.get("version") === "2024-10-15")).toBe(true);
    expect(fake.count(/^POST .*\/secrets$/, 201)).toBe(1);
  });

  it("reads the service account once per rotation: identify, then issue or replace, ask the management key once", async () => {
    const fresh = createSnykServiceAccountProvider();
    const accountReads = () => fake.count(/^GET \/rest\/orgs\/[^/]+\/service_accounts\/[^/]+$/, 200);
    const c = ctx();
    const handle = await fresh.identify(c, oldSecret);
    await fresh.issue!(c, { value: oldSecret, ...handle });
    expect(accountReads()).toBe(1);
    // Another rotation reads it again (an account changed in between is seen).
    const leak = ctxFor(c.config, { env: { SNYK_ADMIN: admin.apiToken }, reason: "leak" });
    await fresh.identify(leak, oldSecret);
    await fresh.replaceAll!(leak);
    expect(accountReads()).toBe(2);
  });

  it("treats an already deleted secret as revoked, but not a vanished service account", async () => {
    const c = ctx();
    const issued = await provider.issue!(c, undefined);
    await provider.revoke!(c, { value: oldSecret });
    await provider.revoke!(c, { value: oldSecret });
    expect(fake.secretsOf(sa.id)).toEqual([issued.value]);

    fake.serviceAccounts.delete(sa.id);
    const err = await failure(provider.revoke!(c, { value: issued.value }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/does not exist/);
  });

  it("refuses a wrong secret in verify without putting it in the message", async () => {
    const wrong = "snyk_cs_definitely-not-the-secret";
    const err = await failure(provider.verify(ctx(), wrong, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toMatch(/oauth2\/token.*401/);
    expect(err.message).not.toContain(wrong);
  });

  it("explains the crash between create and the store write instead of killing the working secret", async () => {
    const c = ctx();
    // The first attempt's answer is lost (as if the worker died before the store write).
    const lost = await provider.issue!(c, { value: oldSecret });
    expect(fake.secretsOf(sa.id)).toHaveLength(2);

    expect(await provider.cleanupOrphans!(c, undefined)).toEqual([]);
    const err = await failure(provider.issue!(c, { value: oldSecret }));
    expect(err).toBeInstanceOf(AttentionError);
    expect(err.message).toContain("400");
    expect(err.message).toContain("while the current one still works");
    expect(err.message).toContain(`rekey leak --policy ${c.policyId}`);
    expect(err.message).not.toContain(oldSecret);
    expect(err.message).not.toContain(lost.value);
    expect(fake.secretsOf(sa.id)).toEqual([oldSecret, lost.value]);
    await provider.verify(c, oldSecret, {});

    // The remedy: a leak rotation's replace leaves exactly one secret, the new one.
    const replaced = await provider.replaceAll!(ctxFor(c.config, { env: { SNYK_ADMIN: admin.apiToken }, reason: "leak" }));
    expect(fake.secretsOf(sa.id)).toEqual([replaced.value]);
    expect(fake.isLive(oldSecret)).toBe(false);
    expect(fake.isLive(lost.value)).toBe(false);
    await provider.verify(c, replaced.value, replaced);
  });

  it("turns a create whose answer was dropped into the same explained failure on retry", async () => {
    const c = ctx();
    fake.faults.inject({ route: /^POST .*\/secrets$/, kind: "drop-after" });
    expect(await failure(provider.issue!(c, { value: oldSecret }))).toBeInstanceOf(TransientError);
    const err = await failure(provider.issue!(c, { value: oldSecret }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err).toBeInstanceOf(AttentionError);
    expect(err.message).toMatch(/already holds two/);
    expect(fake.isLive(oldSecret)).toBe(true);
  });

  it("treats a create answer without the secret as a lost secret, not a retry", async () => {
    fake.respondOnce(/^POST .*\/secrets$/, { status: 201, headers: { "content-type": "application/vnd.api+json" }, body: { data: { type: "service_account", id: sa.id, attributes: {} } } });
    const err = await failure(provider.issue!(ctx(), { value: oldSecret }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("data.attributes.client_secret");
    expect(err.message).toMatch(/rekey leak/);
  });

  it("works on a group's service account", async () => {
    const group = fake.addGroup();
    const groupAdmin = fake.addUser({ groups: [group] });
    const gsa = fake.addServiceAccount({ groupId: group });
    const old = gsa.secrets[0] ?? "";
    const c = ctxFor(config({ orgId: undefined, groupId: group, serviceAccountId: gsa.id, clientId: gsa.clientId }), { env: { SNYK_ADMIN: groupAdmin.apiToken } });
    const issued = await provider.issue!(c, { value: old });
    await provider.verify(c, issued.value, issued);
    await provider.revoke!(c, { value: old });
    expect(fake.secretsOf(gsa.id)).toEqual([issued.value]);
    expect(fake.count(`POST /rest/groups/${group}/service_accounts/${gsa.id}/secrets`)).toBe(2);
    expect(fake.count("/rest/orgs/")).toBe(0);
  });

  it("refuses a service account of another org, or one without a client secret", async () => {
    const other = fake.addOrg();
    const foreign = fake.addServiceAccount({ orgId: other });
    let err = await failure(provider.issue!(ctx(config({ serviceAccountId: foreign.id, clientId: foreign.clientId })), undefined));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/does not exist in org/);

    const keyed = fake.addServiceAccount({ orgId: org, authType: "api_key" });
    err = await failure(provider.identify(ctx(config({ serviceAccountId: keyed.id })), "x"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/auth_type api_key/);
    expect(fake.secretsOf(foreign.id)).toHaveLength(1);
  });

  it("answers a refused management token with a PermanentError that omits the token", async () => {
    const bad = "snyk-management-token-that-is-wrong";
    const err = await failure(provider.issue!(ctxFor(config(), { env: { SNYK_ADMIN: bad } }), undefined));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err).not.toBeInstanceOf(VerificationError);
    expect(err.message).toMatch(/GET \/rest\/orgs\/.*: 401/);
    expect(err.message).toMatch(/provider\.management/);
    expect(err.message).not.toContain(bad);
  });

  it("waits about 60 s on a 429 without headers, and honours Retry-After when sent", async () => {
    await start({ rateLimit: 1 });
    org = fake.addOrg();
    admin = fake.addUser({ orgs: [org] });
    sa = fake.addServiceAccount({ orgId: org });
    const before = Date.now();
    // identify reads the account (1 request), issue reads it again: the second is over the limit.
    await provider.identify(ctx(), "x");
    const err = await failure(provider.issue!(ctx(), undefined));
    const after = Date.now();
    expect(err).toBeInstanceOf(RateLimitedError);
    const at = (err as RateLimitedError).retryAt;
    expect(at).toBeGreaterThanOrEqual(before + 60_000);
    expect(at).toBeLessThanOrEqual(after + 60_000);
    expect((err as RateLimitedError).scope).toBe(`snyk:${new URL(fake.url).host}`);
    expect(fake.secretsOf(sa.id)).toHaveLength(1);

    await start({ retryAfterSeconds: 7 });
    org = fake.addOrg();
    admin = fake.addUser({ orgs: [org] });
    sa = fake.addServiceAccount({ orgId: org });
    fake.faults.inject({ route: "GET /rest/orgs/", kind: "429" });
    const t = 5_000_000;
    const limited = await failure(provider.identify(ctx(config(), { now: () => t }), "x"));
    expect(limited).toBeInstanceOf(RateLimitedError);
    expect((limited as RateLimitedError).retryAt).toBe(t + 7_000);
  });
});

// Snyk documents neither the status of a refused third create nor that of a delete of an unknown
// secret: whatever the fake answers (400, the documented status, by default; 404/409 as the old
// fake guessed), the adapter decides from the token endpoint.
describe.each([{ refusals: 400 as const }, { refusals: "404/409" as const }])("snyk-service-account, refusals answered $refusals", ({ refusals }) => {
  const provider = createSnykServiceAccountProvider();
  let admin: SnykUser;
  let sa: SnykServiceAccount;
  let oldSecret: string;
  let c: ProviderContext<"snyk-service-account">;

  beforeEach(async () => {
    await start({ secretRefusals: refusals });
    const org = fake.addOrg();
    admin = fake.addUser({ orgs: [org] });
    sa = fake.addServiceAccount({ orgId: org });
    oldSecret = sa.secrets[0] ?? "";
    const config = SnykServiceAccountProvider.parse({ kind: "snyk-service-account", baseUrl: fake.url, management: { env: "SNYK_ADMIN" }, orgId: org, serviceAccountId: sa.id, clientId: sa.clientId });
    c = ctxFor(config, { env: { SNYK_ADMIN: admin.apiToken }, policyId: "snyk-sa" });
  });

  it("a delete whose answer was lost: the retry's refusal is checked at /oauth2/token, the secret is gone, so it is revoked", async () => {
    const issued = await provider.issue!(c, { value: oldSecret });
    fake.faults.inject({ route: /^POST .*\/secrets$/, kind: "drop-after" });
    expect(await failure(provider.revoke!(c, { value: oldSecret }))).toBeInstanceOf(TransientError);
    expect(fake.isLive(oldSecret)).toBe(false);
    await provider.revoke!(c, { value: oldSecret });
    expect(fake.count(/^POST .*\/secrets$/, refusals === 400 ? 400 : 404)).toBe(1);
    const exchanged = fake.requests.filter((r) => r.path === "/oauth2/token");
    expect(exchanged.at(-1)?.status).toBe(401);
    expect(fake.secretsOf(sa.id)).toEqual([issued.value]);
  });

  it("a refused delete of a secret that still authenticates is not taken for revoked", async () => {
    // The last secret cannot be deleted: the refusal comes, the token endpoint says it is live.
    const err = await failure(provider.revoke!(c, { value: oldSecret }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("still authenticates");
    expect(err.message).not.toContain(oldSecret);
    expect(fake.isLive(oldSecret)).toBe(true);
  });

  it("a create whose answer was lost: the next create's refusal needs attention and names rekey leak, the old secret untouched", async () => {
    fake.faults.inject({ route: /^POST .*\/secrets$/, kind: "drop-after" });
    expect(await failure(provider.issue!(c, { value: oldSecret }))).toBeInstanceOf(TransientError);
    const err = await failure(provider.issue!(c, { value: oldSecret }));
    expect(err).toBeInstanceOf(AttentionError);
    expect(fake.count(/^POST .*\/secrets$/, refusals === 400 ? 400 : 409)).toBe(1);
    expect(err.message).toContain("rekey leak --policy snyk-sa");
    expect(err.message).toContain("while the current one still works");
    expect(fake.secretsOf(sa.id)).toHaveLength(2);
    expect(fake.isLive(oldSecret)).toBe(true);
  });
});

describe("snyk-user-token", () => {
  const provider = createSnykUserTokenProvider();
  const config = () => SnykUserTokenProvider.parse({ kind: "snyk-user-token", baseUrl: fake.url, uiUrl: "https://app.snyk.io/account" });

  it("verifies the regenerated token and refuses the old one without echoing it", async () => {
    const user = fake.addUser();
    const old = user.apiToken;
    const fresh = fake.regenerateUserToken(user.id);
    const c = ctxFor(config());
    await provider.verify(c, fresh, {});
    const err = await failure(provider.verify(c, old, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toMatch(/GET \/rest\/self: 401/);
    expect(err.message).not.toContain(old);
    expect(fake.requests.every((r) => r.query.get("version") === "2024-10-15")).toBe(true);
    expect(await provider.identify(c, fresh)).toEqual({});
  });

  it("checks that an offboarding token belongs to the successor", async () => {
    const departed = fake.addUser({ email: "ann@example.com" });
    const successor = fake.addUser({ email: "bob@example.com" });
    const c = ctxFor(config(), { reason: "offboarding", successor: "bob@example.com" });
    await provider.verify(c, successor.apiToken, {});
    const err = await failure(provider.verify(c, departed.apiToken, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toContain("ann@example.com");
  });

  it("gives the owner the exact steps, the link and the submit command", () => {
    const rotationId = randomUUID();
    const { text, link } = provider.instructions!(config(), { policyId: "snyk-ci", rotationId, successor: "bob@example.com" });
    expect(link).toBe("https://app.snyk.io/account");
    expect(text).toContain("Account settings → General → Auth Token");
    expect(text).toContain("Revoke & Regenerate");
    expect(text).toContain(`rekey submit ${rotationId}`);
    expect(text).toContain("standard input");
    expect(text).toContain("bob@example.com");
    expect(text).toMatch(/stops working at once/);
  });
});

describe("snyk-pat", () => {
  const provider = createSnykPatProvider();
  const config = (over: Partial<Record<string, unknown>> = {}) => SnykPatProvider.parse({ kind: "snyk-pat", baseUrl: fake.url, ...over });
  let user: SnykUser;

  beforeEach(() => {
    user = fake.addUser({ email: "dev@example.com" });
  });

  it("identifies the old PAT, verifies and identifies the new one, then deletes the old one", async () => {
    const old = fake.createPat(user.id, { name: "ci token", expiresInDays: 60 });
    const rotationId = randomUUID();
    const c = ctxFor(config(), { rotationId });

    const oldHandle = await provider.identify(c, old.token);
    expect(oldHandle.credentialId).toBe(old.id);

    const { text } = provider.instructions!(c.config, { policyId: c.policyId, rotationId });
    const name = patName(c.policyId, rotationId);
    expect(text).toContain(name);
    expect(text).toContain(`rekey submit ${rotationId}`);
    expect(text).toMatch(/at most 90 days/);
    expect(text).toMatch(/at most 3 active/);

    const fresh = fake.createPat(user.id, { name, expiresInDays: 90 });
    await provider.verify(c, fresh.token, {});
    const newHandle = await provider.identify(c, fresh.token);
    expect(newHandle.credentialId).toBe(fresh.id);

    await provider.revoke!(c, { value: old.token, ...oldHandle });
    expect(fake.isLive(old.token)).toBe(false);
    expect(fake.isLive(fresh.token)).toBe(true);
    expect(fake.count(`DELETE /rest/self/personal_access_tokens/${old.id}`, 204)).toBe(1);
    // Again: the old PAT is gone and refuses itself, which counts as revoked.
    await provider.revoke!(c, { value: old.token, ...oldHandle });

    // The next rotation finds the PAT rekey named for this policy.
    fake.createPat(user.id, { name: "someone else's" });
    const next = ctxFor(config(), { rotationId: randomUUID() });
    expect((await provider.identify(next, fresh.token)).credentialId).toBe(fresh.id);
  });

  it("deletes the old PAT with provider.management when set", async () => {
    const old = fake.createPat(user.id, { name: "first" });
    const rotationId = randomUUID();
    const fresh = fake.createPat(user.id, { name: patName("snyk-ci", rotationId) });
    const c = ctxFor(config({ management: { env: "NEW_PAT" } }), { rotationId, env: { NEW_PAT: fresh.token } });
    await provider.revoke!(c, { value: old.token, credentialId: old.id });
    expect(fake.isLive(old.token)).toBe(false);
    await provider.revoke!(c, { value: old.token, credentialId: old.id });
  });

  it("refuses a new PAT that does not carry the rotation's name", async () => {
    fake.createPat(user.id, { name: "first" });
    const misnamed = fake.createPat(user.id, { name: "new token" });
    const c = ctxFor(config());
    const err = await failure(provider.verify(c, misnamed.token, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toContain(patName(c.policyId, c.rotationId));
    expect(err.message).not.toContain(misnamed.token);

    const refused = await failure(provider.verify(c, "snyk_pat_not-a-real-one", {}));
    expect(refused).toBeInstanceOf(VerificationError);
    expect(refused.message).toMatch(/401/);
  });

  it("will not guess between several PATs, and uses provider.patId for the first rotation", async () => {
    const a = fake.createPat(user.id, { name: "laptop" });
    const b = fake.createPat(user.id, { name: "ci" });
    const err = await failure(provider.identify(ctxFor(config()), b.token));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain(a.id);
    expect(err.message).toContain(b.id);
    expect(err.message).toMatch(/provider\.patId/);
    expect(err.message).not.toContain(b.token);

    expect((await provider.identify(ctxFor(config({ patId: b.id })), b.token)).credentialId).toBe(b.id);
  });

  it("deletes the new PAT when a failed rotation cleans up after itself", async () => {
    const old = fake.createPat(user.id, { name: "first" });
    const rotationId = randomUUID();
    const fresh = fake.createPat(user.id, { name: patName("snyk-ci", rotationId) });
    const c = ctxFor(config(), { rotationId });
    const handle = await provider.identify(c, fresh.token);
    await provider.revoke!(c, { value: fresh.token, ...handle });
    expect(fake.isLive(fresh.token)).toBe(false);
    expect(fake.isLive(old.token)).toBe(true);

    const err = await failure(provider.revoke!(c, { value: old.token }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/no PAT id was recorded/);
    expect(fake.isLive(old.token)).toBe(true);
  });

  it("records nothing for a PAT Snyk already refuses, and counts it as revoked", async () => {
    let t = Date.now();
    await start({ now: () => t });
    user = fake.addUser();
    const short = fake.createPat(user.id, { name: "short", expiresInDays: 1 });
    t += 2 * 86_400_000;
    const c = ctxFor(config(), { now: () => t });
    const handle = await provider.identify(c, short.token);
    expect(handle).toEqual({});
    await provider.revoke!(c, { value: short.token, ...handle });
    expect(fake.count("DELETE /rest/self/personal_access_tokens/")).toBe(0);
    expect(fake.count(/^GET \/rest\/self$/, 401)).toBe(1);
  });

  it("reports a malformed answer clearly", async () => {
    const pat = fake.createPat(user.id, { name: "only" });
    fake.respondOnce("GET /rest/self/personal_access_tokens", {
      status: 200,
      headers: { "content-type": "application/vnd.api+json" },
      body: { data: [{ id: pat.id, attributes: {} }] },
    });
    const err = await failure(provider.identify(ctxFor(config()), pat.token));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/GET \/rest\/self\/personal_access_tokens: unexpected answer \(status 200\): data\.0\.attributes\.name/);

    fake.respondOnce("GET /rest/self", jsonApiError(403, "Forbidden for this token"));
    const forbidden = await failure(provider.verify(ctxFor(config()), pat.token, {}));
    expect(forbidden).toBeInstanceOf(PermanentError);
    expect(forbidden.message).toContain("Forbidden for this token");
  });
});
