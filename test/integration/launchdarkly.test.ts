import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { PermanentError, RateLimitedError, TransientError, VerificationError } from "../../src/errors.ts";
import { LaunchDarklyProvider, type CredentialRef } from "../../src/policy/schema.ts";
import { createLaunchDarklyProvider, LAUNCHDARKLY_API_VERSION, launchDarkly } from "../../src/providers/launchdarkly.ts";
import { type ProviderContext, type RotationReason } from "../../src/providers/types.ts";
import { startLaunchDarklyFake, type LaunchDarklyFake, type LaunchDarklyFakeOptions } from "../fakes/launchdarkly.ts";

const fakes: LaunchDarklyFake[] = [];
afterEach(async () => {
  await Promise.all(fakes.splice(0).map((f) => f.close()));
});

async function fake(opts?: LaunchDarklyFakeOptions): Promise<LaunchDarklyFake> {
  const f = await startLaunchDarklyFake(opts);
  fakes.push(f);
  return f;
}

/** A fake with an admin management token, the way a real deployment is set up. */
async function setup(opts?: LaunchDarklyFakeOptions) {
  const ld = await fake(opts);
  const adminId = ld.addMember("admin@example.com", "admin");
  const admin = ld.addToken({ memberId: adminId, role: "admin", name: "rekey management" });
  return { ld, adminId, admin };
}

interface CtxOpts {
  config?: Record<string, unknown>;
  reason?: RotationReason;
  rotationId?: string;
  successor?: string;
  secrets?: Record<string, string>;
  signal?: AbortSignal;
  now?: () => number;
}

function ctxFor(ld: LaunchDarklyFake, management: string, o: CtxOpts = {}): ProviderContext<"launchdarkly"> {
  const secrets: Record<string, string> = { LD_ADMIN: management, ...o.secrets };
  return {
    config: LaunchDarklyProvider.parse({ kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN" }, ...o.config }),
    policyId: "ld-ci",
    rotationId: o.rotationId ?? randomUUID(),
    signal: o.signal ?? new AbortController().signal,
    resolve: async (ref: CredentialRef) => {
      const key = "env" in ref ? ref.env : ref.secretId;
      const v = secrets[key];
      if (v === undefined) throw new Error(`no test secret ${key}`);
      return v;
    },
    now: o.now ?? Date.now,
    reason: o.reason ?? "scheduled",
    successor: o.successor,
  };
}

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected the call to fail");
}

async function ldFetch(ld: LaunchDarklyFake, path: string, auth: string | undefined, init: RequestInit = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (auth !== undefined) headers.authorization = auth;
  const res = await fetch(`${ld.url}${path}`, { ...init, headers });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

describe("LaunchDarkly fake", () => {
  it("refuses a Bearer prefix and a missing header with 401 and LaunchDarkly's error shape", async () => {
    const { ld, admin } = await setup();
    const bearer = await ldFetch(ld, "/api/v2/caller-identity", `Bearer ${admin.value}`);
    expect(bearer.status).toBe(401);
    expect(bearer.body).toMatchObject({ code: "unauthorized", message: expect.any(String), id: expect.any(String) });
    expect((await ldFetch(ld, "/api/v2/caller-identity", undefined)).status).toBe(401);
    const plain = await ldFetch(ld, "/api/v2/caller-identity", admin.value);
    expect(plain.status).toBe(200);
    expect(plain.body).toMatchObject({ tokenId: admin.id, serviceToken: false, accountId: ld.accountId });
  });

  it("shows the secret only in the create answer, then its last 4 characters", async () => {
    const { ld, admin } = await setup();
    const created = await ldFetch(ld, "/api/v2/tokens", admin.value, { method: "POST", body: JSON.stringify({ name: "ci", role: "writer" }) });
    expect(created.status).toBe(201);
    const secret = String(created.body?.token);
    const id = String(created.body?._id);
    expect(ld.isLive(secret)).toBe(true);
    const got = await ldFetch(ld, `/api/v2/tokens/${id}`, admin.value);
    expect(got.body?.token).toBe(secret.slice(-4));
    const list = await ldFetch(ld, "/api/v2/tokens", admin.value);
    const items = list.body?.items as { _id: string; token: string }[];
    expect(items.find((t) => t._id === id)?.token).toBe(secret.slice(-4));
    expect(JSON.stringify(list.body)).not.toContain(secret);
  });

  it("refuses a deleted token with 401 everywhere and records lastUsed on each use", async () => {
    let clock = 1_700_000_000_000;
    const { ld, admin } = await setup({ now: () => clock });
    const t = ld.addToken({ role: "reader", name: "victim" });
    expect(ld.tokens().find((x) => x.id === t.id)?.lastUsed).toBeUndefined();
    clock += 5_000;
    expect((await ldFetch(ld, "/api/v2/caller-identity", t.value)).status).toBe(200);
    expect(ld.tokens().find((x) => x.id === t.id)?.lastUsed).toBe(clock);
    clock += 5_000;
    expect((await ldFetch(ld, `/api/v2/tokens/${t.id}`, admin.value, { method: "DELETE" })).status).toBe(204);
    expect(ld.tokens().find((x) => x.id === t.id)?.state).toBe("deleted");
    for (const path of ["/api/v2/caller-identity", "/api/v2/tokens", `/api/v2/tokens/${t.id}`, "/api/v2/members"]) {
      expect((await ldFetch(ld, path, t.value)).status).toBe(401);
    }
    expect(ld.isLive(t.value)).toBe(false);
    expect((await ldFetch(ld, `/api/v2/tokens/${t.id}`, admin.value)).status).toBe(404);
  });

  it("lets only admin tokens list with showAll or act on other members' tokens", async () => {
    const { ld, admin } = await setup();
    const bob = ld.addMember("bob@example.com");
    const writer = ld.addToken({ memberId: bob, role: "writer" });
    const other = ld.addToken({ role: "reader" });
    expect((await ldFetch(ld, "/api/v2/tokens?showAll=true", writer.value)).status).toBe(403);
    expect((await ldFetch(ld, `/api/v2/tokens/${other.id}`, writer.value, { method: "DELETE" })).status).toBe(403);
    const own = await ldFetch(ld, "/api/v2/tokens", writer.value);
    expect((own.body?.items as { _id: string }[]).map((t) => t._id)).toEqual([writer.id]);
    const all = await ldFetch(ld, "/api/v2/tokens?showAll=true", admin.value);
    expect(all.body?.totalCount).toBe(3);
    expect(ld.isLive(other.value)).toBe(true);
  });

  it("invalidates a removed member's personal tokens but not service tokens", async () => {
    const { ld } = await setup();
    const carol = ld.addMember("carol@example.com");
    const personal = ld.addToken({ memberId: carol, role: "writer" });
    const service = ld.addToken({ memberId: carol, role: "writer", serviceToken: true });
    ld.removeMember(carol);
    expect(ld.isLive(personal.value)).toBe(false);
    expect(ld.isLive(service.value)).toBe(true);
  });

  it("enforces the account's token limit with a 400 error body", async () => {
    const { ld, admin } = await setup({ tokenLimit: 3 });
    ld.addToken({ role: "reader" });
    ld.addToken({ role: "reader" });
    const over = await ldFetch(ld, "/api/v2/tokens", admin.value, { method: "POST", body: JSON.stringify({ name: "x", role: "reader" }) });
    expect(over.status).toBe(400);
    expect(over.body).toMatchObject({ code: "invalid_request" });
    expect(String(over.body?.message)).toMatch(/limit/i);
    expect(ld.liveTokens()).toHaveLength(3);
  });

  it("answers 429 with the window's reset in epoch ms once a token exceeds its rate limit", async () => {
    const clock = 1_700_000_003_000;
    const { ld, admin } = await setup({ now: () => clock, rateLimitPerWindow: 2 });
    expect((await ldFetch(ld, "/api/v2/caller-identity", admin.value)).status).toBe(200);
    expect((await ldFetch(ld, "/api/v2/caller-identity", admin.value)).status).toBe(200);
    const res = await fetch(`${ld.url}/api/v2/caller-identity`, { headers: { authorization: admin.value } });
    expect(res.status).toBe(429);
    expect(res.headers.get("x-ratelimit-reset")).toBe("1700000010000");
    expect(res.headers.get("x-ratelimit-route-remaining")).toBe("0");
    expect(res.headers.get("x-ratelimit-global-remaining")).toBe("0");
    await res.text();
  });
});

describe("LaunchDarkly adapter", () => {
  it("identifies the token a value belongs to and pins the API version", async () => {
    const { ld, admin } = await setup();
    const bob = ld.addMember("bob@example.com");
    const t = ld.addToken({ memberId: bob, role: "writer", name: "ci deploy" });
    const handle = await launchDarkly.identify(ctxFor(ld, admin.value), t.value);
    expect(handle).toEqual({ credentialId: t.id, meta: { memberId: bob, serviceToken: "false", tokenName: "ci deploy" } });
    expect(ld.apiVersions.at(-1)).toBe(LAUNCHDARKLY_API_VERSION);
    expect(launchDarkly.capabilities(ctxFor(ld, admin.value).config).issue).toBe("overlap");
  });

  it("issues a second token copying the role fields, named and described with the rotation id", async () => {
    const { ld, admin, adminId } = await setup();
    const old = ld.addToken({
      name: "ci deploy",
      description: "used by the deploy job",
      customRoleIds: ["deployers"],
      inlineRole: [{ effect: "allow", actions: ["*"], resources: ["proj/*"] }],
      serviceToken: true,
      defaultApiVersion: 20220603,
    });
    const rotationId = randomUUID();
    const ctx = ctxFor(ld, admin.value, { rotationId });
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    expect(issued.credentialId).not.toBe(old.id);
    const made = ld.tokens().find((t) => t.id === issued.credentialId);
    expect(made).toMatchObject({
      value: issued.value,
      name: `ci deploy (rekey ${rotationId.slice(0, 8)})`,
      customRoleIds: ["deployers"],
      inlineRole: [{ effect: "allow", actions: ["*"], resources: ["proj/*"] }],
      serviceToken: true,
      defaultApiVersion: 20220603,
      memberId: adminId,
    });
    expect(made?.role).toBeUndefined();
    expect(made?.description).toContain("used by the deploy job");
    expect(made?.description).toContain(rotationId);
    expect(issued.meta).toEqual({ memberId: adminId, serviceToken: "true", tokenName: made?.name });
    // Overlap: both work until the old one is revoked.
    expect(ld.isLive(old.value)).toBe(true);
    expect(ld.isLive(issued.value)).toBe(true);

    // A second rotation replaces the marker instead of stacking it.
    const next = await launchDarkly.issue!(ctxFor(ld, admin.value, { rotationId: "abcdef12-0000-4000-8000-000000000000" }), issued);
    const again = ld.tokens().find((t) => t.id === next.credentialId);
    expect(again?.name).toBe("ci deploy (rekey abcdef12)");
    expect(again?.description).not.toContain(rotationId);
  });

  it("copies a built-in role and finds the old id from the value when no handle is given", async () => {
    const { ld, admin } = await setup();
    const bob = ld.addMember("bob@example.com");
    const old = ld.addToken({ memberId: bob, role: "writer", name: "reporting" });
    const issued = await launchDarkly.issue!(ctxFor(ld, admin.value), { value: old.value });
    const made = ld.tokens().find((t) => t.id === issued.credentialId);
    expect(made).toMatchObject({ role: "writer", customRoleIds: [], inlineRole: [], serviceToken: false });
  });

  it("refuses to issue when the secret holds no current token", async () => {
    const { ld, admin } = await setup();
    const before = ld.tokens().length;
    for (const old of [undefined, { value: "" }]) {
      const err = await caught(launchDarkly.issue!(ctxFor(ld, admin.value), old));
      expect(err).toBeInstanceOf(PermanentError);
      expect(err.message).toMatch(/holds no current token/);
    }
    expect(ld.tokens()).toHaveLength(before);
  });

  it("turns the account's token limit into a PermanentError that says what to do", async () => {
    const { ld, admin } = await setup({ tokenLimit: 2 });
    const old = ld.addToken({ role: "reader" });
    const err = await caught(launchDarkly.issue!(ctxFor(ld, admin.value), { value: old.value, credentialId: old.id }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/token limit/);
    expect(err.message).toContain("POST /api/v2/tokens");
  });

  it("verifies the right token and rejects another or a dead one without showing the value", async () => {
    const { ld, admin } = await setup();
    const old = ld.addToken({ role: "reader" });
    const ctx = ctxFor(ld, admin.value);
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    await expect(launchDarkly.verify(ctx, issued.value, { credentialId: issued.credentialId })).resolves.toBeUndefined();

    const wrong = await caught(launchDarkly.verify(ctx, old.value, { credentialId: issued.credentialId }));
    expect(wrong).toBeInstanceOf(VerificationError);
    expect(wrong.message).toContain(old.id);
    expect(wrong.message).not.toContain(old.value);

    await launchDarkly.revoke!(ctx, { value: issued.value, credentialId: issued.credentialId });
    const dead = await caught(launchDarkly.verify(ctx, issued.value, { credentialId: issued.credentialId }));
    expect(dead).toBeInstanceOf(VerificationError);
    expect(dead.message).toContain("401");
    expect(dead.message).not.toContain(issued.value);
  });

  it("revokes by id, treats an already-deleted token as revoked, and works from the value alone", async () => {
    const { ld, admin } = await setup();
    const ctx = ctxFor(ld, admin.value);
    const a = ld.addToken({ role: "reader" });
    await launchDarkly.revoke!(ctx, { value: a.value, credentialId: a.id });
    expect(ld.isLive(a.value)).toBe(false);
    await expect(launchDarkly.revoke!(ctx, { value: a.value, credentialId: a.id })).resolves.toBeUndefined();
    expect(ld.count(/^DELETE \/api\/v2\/tokens\//, 404)).toBe(1);

    const b = ld.addToken({ role: "reader" });
    await launchDarkly.revoke!(ctx, { value: b.value });
    expect(ld.isLive(b.value)).toBe(false);
    await expect(launchDarkly.revoke!(ctx, { value: b.value })).resolves.toBeUndefined();
    expect(ld.isLive(admin.value)).toBe(true);
  });

  it("never deletes the management token itself", async () => {
    const { ld, admin } = await setup();
    const err = await caught(launchDarkly.revoke!(ctxFor(ld, admin.value), { value: admin.value, credentialId: admin.id }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/management token/);
    expect(err.message).not.toContain(admin.value);
    expect(ld.isLive(admin.value)).toBe(true);
    expect(ld.count("DELETE")).toBe(0);
  });

  it("asks the management token's own id once per token, and still spares it after another token is revoked", async () => {
    const { ld, admin } = await setup();
    const provider = createLaunchDarklyProvider();
    const ctx = ctxFor(ld, admin.value);
    for (let i = 0; i < 3; i++) {
      const t = ld.addToken({ role: "reader" });
      await provider.revoke!(ctx, { value: t.value, credentialId: t.id });
      expect(ld.isLive(t.value)).toBe(false);
    }
    expect(ld.count("GET /api/v2/caller-identity")).toBe(1);
    expect(await caught(provider.revoke!(ctx, { value: admin.value, credentialId: admin.id }))).toBeInstanceOf(PermanentError);
    expect(ld.isLive(admin.value)).toBe(true);
    // Another management token is another identity: asked for, never taken from the first.
    const otherAdmin = ld.addToken({ memberId: ld.addMember("second@example.com", "admin"), role: "admin" });
    expect(await caught(provider.revoke!(ctxFor(ld, otherAdmin.value), { value: otherAdmin.value, credentialId: otherAdmin.id }))).toBeInstanceOf(PermanentError);
    expect(ld.count("GET /api/v2/caller-identity")).toBe(2);
    expect(ld.isLive(otherAdmin.value)).toBe(true);
  });

  it("cleans up only the tokens this rotation created, sparing the kept one", async () => {
    const { ld, admin } = await setup();
    const old = ld.addToken({ role: "writer", name: "ci" });
    const rotationId = randomUUID();
    const ctx = ctxFor(ld, admin.value, { rotationId });
    // A crashed run: the token was created but the answer never arrived.
    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "drop-after" });
    expect(await caught(launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id }))).toBeInstanceOf(TransientError);
    const orphan = ld.liveTokens().find((t) => t.description.includes(rotationId));
    expect(orphan).toBeDefined();
    const kept = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    const otherRotation = await launchDarkly.issue!(ctxFor(ld, admin.value), { value: old.value, credentialId: old.id });
    const bystander = ld.addToken({ role: "reader", description: "hand-made" });

    const removed = await launchDarkly.cleanupOrphans!(ctx, { credentialId: kept.credentialId });
    expect(removed).toEqual([orphan?.id]);
    const live = ld.liveTokens().map((t) => t.id);
    expect(live).toEqual(expect.arrayContaining([admin.id, old.id, kept.credentialId, otherRotation.credentialId, bystander.id]));
    expect(live).not.toContain(orphan?.id);
    expect(await launchDarkly.cleanupOrphans!(ctx, { credentialId: kept.credentialId })).toEqual([]);
    // Without a kept token, every token of this rotation is an orphan.
    expect(await launchDarkly.cleanupOrphans!(ctx, undefined)).toEqual([kept.credentialId]);
  });

  it("offboarding without successorManagement creates a service token", async () => {
    const { ld, admin } = await setup();
    const dave = ld.addMember("dave@example.com");
    const old = ld.addToken({ memberId: dave, role: "writer", name: "dave's ci" });
    const ctx = ctxFor(ld, admin.value, { reason: "offboarding", successor: "erin@example.com" });
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    const made = ld.tokens().find((t) => t.id === issued.credentialId);
    expect(made?.serviceToken).toBe(true);
    expect(made?.role).toBe("writer");
    ld.removeMember(dave);
    expect(ld.isLive(old.value)).toBe(false);
    expect(ld.isLive(issued.value)).toBe(true);
  });

  it("offboarding with successorManagement creates the token as the successor's", async () => {
    const { ld, admin } = await setup();
    const dave = ld.addMember("dave@example.com");
    const erin = ld.addMember("erin@example.com", "admin");
    const erinToken = ld.addToken({ memberId: erin, role: "admin", name: "erin's admin" });
    const old = ld.addToken({ memberId: dave, role: "writer" });
    const ctx = ctxFor(ld, admin.value, {
      reason: "offboarding",
      successor: "erin@example.com",
      config: { successorManagement: { env: "LD_SUCCESSOR" } },
      secrets: { LD_SUCCESSOR: erinToken.value },
    });
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    const made = ld.tokens().find((t) => t.id === issued.credentialId);
    expect(made).toMatchObject({ memberId: erin, serviceToken: false, role: "writer" });
    expect(issued.meta?.memberId).toBe(erin);
    ld.removeMember(dave);
    expect(ld.isLive(issued.value)).toBe(true);
  });

  it("offboarding refuses a successorManagement token that is not the successor's", async () => {
    const { ld, admin } = await setup();
    const dave = ld.addMember("dave@example.com");
    const daveAdmin = ld.addToken({ memberId: dave, role: "admin" });
    const mallory = ld.addMember("mallory@example.com", "admin");
    const malloryToken = ld.addToken({ memberId: mallory, role: "admin" });
    const old = ld.addToken({ memberId: dave, role: "writer" });
    const before = ld.liveTokens().length;
    for (const successorToken of [daveAdmin.value, malloryToken.value]) {
      const ctx = ctxFor(ld, admin.value, {
        reason: "offboarding",
        successor: "erin@example.com",
        config: { successorManagement: { env: "LD_SUCCESSOR" } },
        secrets: { LD_SUCCESSOR: successorToken },
      });
      const err = await caught(launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id }));
      expect(err).toBeInstanceOf(PermanentError);
      expect(err.message).toMatch(/successor/);
      expect(err.message).not.toContain(successorToken);
    }
    expect(ld.liveTokens()).toHaveLength(before);
  });

  it("lists a member's tokens across pages", async () => {
    const { ld, admin } = await setup({ maxPageSize: 3 });
    const frank = ld.addMember("frank@example.com");
    const mine = Array.from({ length: 7 }, (_, i) => ld.addToken({ memberId: frank, role: "reader", name: `f${i}`, serviceToken: i === 0 }));
    for (let i = 0; i < 4; i++) ld.addToken({ role: "reader", name: `other${i}` });
    const gone = ld.addToken({ memberId: frank, role: "reader" });
    await launchDarkly.revoke!(ctxFor(ld, admin.value), { value: gone.value, credentialId: gone.id });

    const owned = await launchDarkly.listByOwner!(ctxFor(ld, admin.value), "Frank@example.com");
    expect(owned.map((o) => o.credentialId).sort()).toEqual(mine.map((t) => t.id).sort());
    expect(owned.every((o) => o.owner === "Frank@example.com")).toBe(true);
    expect(owned.filter((o) => o.kind === "service").map((o) => o.credentialId)).toEqual([mine[0]?.id]);
    // 12 live tokens, at most 3 per page whatever rekey asks for: offsets 0, 3, 6, 9.
    const pages = ld.requests.filter((r) => r.method === "GET" && r.path === "/api/v2/tokens");
    expect(pages.map((r) => r.query.get("offset"))).toEqual(["0", "3", "6", "9"]);

    const err = await caught(launchDarkly.listByOwner!(ctxFor(ld, admin.value), "nobody@example.com"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("nobody@example.com");
  });

  it("reports lastUsed from LaunchDarkly", async () => {
    let clock = 1_700_000_000_000;
    const { ld, admin } = await setup({ now: () => clock });
    const t = ld.addToken({ role: "reader" });
    const ctx = ctxFor(ld, admin.value);
    expect(await launchDarkly.lastUsed!(ctx, { credentialId: t.id })).toBeUndefined();
    clock += 60_000;
    await launchDarkly.identify(ctx, t.value);
    expect(await launchDarkly.lastUsed!(ctx, { credentialId: t.id })).toBe(clock);
    expect(await launchDarkly.lastUsed!(ctx, {})).toBeUndefined();
  });

  it("reset-with-expiry keeps the id, lets the old secret live until the expiry, and has nothing to revoke", async () => {
    let clock = 1_700_000_000_000;
    const { ld, admin } = await setup({ now: () => clock });
    const old = ld.addToken({ role: "writer" });
    const ctx = ctxFor(ld, admin.value, { config: { strategy: "reset-with-expiry", resetExpiry: "1h" }, now: () => clock });
    expect(launchDarkly.capabilities(ctx.config)).toMatchObject({ issue: "reset", oldSurvivesIssue: false, revoke: "none" });
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    expect(issued.credentialId).toBe(old.id);
    expect(issued.value).not.toBe(old.value);
    const resetCall = ld.requests.find((r) => r.path === `/api/v2/tokens/${old.id}/reset`);
    expect(resetCall?.query.get("expiry")).toBe(String(clock + 3_600_000));
    await launchDarkly.verify(ctx, issued.value, { credentialId: old.id });
    expect(ld.isLive(old.value)).toBe(true);
    expect(await launchDarkly.cleanupOrphans!(ctx, undefined)).toEqual([]);
    await launchDarkly.revoke!(ctx, { value: old.value, credentialId: old.id });
    expect(ld.isLive(issued.value)).toBe(true);
    clock += 3_600_001;
    expect(ld.isLive(old.value)).toBe(false);
    expect(ld.isLive(issued.value)).toBe(true);
  });

  it("reset-with-expiry on a leak kills the old secret at once", async () => {
    const { ld, admin } = await setup();
    const old = ld.addToken({ role: "writer" });
    const ctx = ctxFor(ld, admin.value, { reason: "leak", config: { strategy: "reset-with-expiry", resetExpiry: "1h" } });
    const issued = await launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id });
    expect(ld.requests.find((r) => r.path.endsWith("/reset"))?.query.has("expiry")).toBe(false);
    expect(ld.isLive(old.value)).toBe(false);
    expect(ld.isLive(issued.value)).toBe(true);
  });

  it("turns a 429 into RateLimitedError at X-Ratelimit-Reset (epoch ms)", async () => {
    const clock = 1_700_000_003_000;
    const { ld, admin } = await setup({ now: () => clock });
    const provider = createLaunchDarklyProvider({ now: () => clock });
    ld.faults.inject({ route: "GET /api/v2/caller-identity", kind: "429" });
    const err = await caught(provider.identify(ctxFor(ld, admin.value), admin.value));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAt).toBe(1_700_000_010_000);
    expect((err as RateLimitedError).scope).toBe(`launchdarkly:${new URL(ld.url).host}`);
  });

  it("falls back to Retry-After (seconds) when no X-Ratelimit-Reset is sent", async () => {
    const clock = 1_700_000_003_000;
    const { ld, admin } = await setup({ now: () => clock, injected429: { reset: false, retryAfterSeconds: 7 } });
    const provider = createLaunchDarklyProvider({ now: () => clock });
    ld.faults.inject({ route: "GET /api/v2/caller-identity", kind: "429" });
    const err = await caught(provider.identify(ctxFor(ld, admin.value), admin.value));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAt).toBe(clock + 7_000);
  });

  it("maps a real per-token rate limit to RateLimitedError", async () => {
    const clock = 1_700_000_001_000;
    const { ld, admin } = await setup({ now: () => clock, rateLimitPerWindow: 1 });
    const provider = createLaunchDarklyProvider({ now: () => clock });
    const ctx = ctxFor(ld, admin.value);
    await provider.identify(ctx, admin.value);
    const err = await caught(provider.identify(ctx, admin.value));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAt).toBe(1_700_000_010_000);
  });

  it("a 5xx is transient", async () => {
    const { ld, admin } = await setup();
    ld.faults.inject({ route: "GET /api/v2/caller-identity", kind: "500" });
    const err = await caught(launchDarkly.identify(ctxFor(ld, admin.value), admin.value));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toContain("500");
  });

  it("an invalid management token is a PermanentError that shows no token", async () => {
    const { ld } = await setup();
    const old = ld.addToken({ role: "reader" });
    const badAdmin = "api-not-a-real-token-0123456789";
    const err = await caught(launchDarkly.issue!(ctxFor(ld, badAdmin), { value: old.value, credentialId: old.id }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/management token is invalid or lacks admin rights/);
    expect(err.message).toContain("GET /api/v2/tokens/");
    expect(err.message).toContain("401");
    expect(err.message).not.toContain(badAdmin);
    expect(err.message).not.toContain(old.value);
  });

  it("a non-admin management token is a PermanentError asking for admin rights", async () => {
    const { ld } = await setup();
    const bob = ld.addMember("bob@example.com");
    const weak = ld.addToken({ memberId: bob, role: "writer" });
    const err = await caught(launchDarkly.listByOwner!(ctxFor(ld, weak.value), "bob@example.com"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/403.*admin rights/);
    expect(err.message).not.toContain(weak.value);
  });

  it("a current value LaunchDarkly refuses is a clear PermanentError", async () => {
    const { ld, admin } = await setup();
    const err = await caught(launchDarkly.identify(ctxFor(ld, admin.value), "api-stale-value-0000000000"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/current value in the secret is not a live LaunchDarkly token/);
    expect(err.message).not.toContain("api-stale-value");
  });

  it("a body that is not JSON, or lacks a field, is a clear error", async () => {
    const { ld, admin } = await setup();
    const ctx = ctxFor(ld, admin.value);
    ld.overrideNext("GET /api/v2/caller-identity", { status: 200, headers: { "content-type": "application/json" }, body: '{"tokenId": "abc",' });
    const broken = await caught(launchDarkly.identify(ctx, admin.value));
    expect(broken).toBeInstanceOf(TransientError);
    expect(broken.message).toMatch(/GET \/api\/v2\/caller-identity: answered 200 with a body that is not valid JSON/);

    ld.overrideNext("GET /api/v2/caller-identity", { status: 200, body: { accountId: "a", tokenName: "x" } });
    const shape = await caught(launchDarkly.identify(ctx, admin.value));
    expect(shape).toBeInstanceOf(TransientError);
    expect(shape.message).toMatch(/unexpected answer \(status 200\): tokenId:/);

    // A create answer without the secret cannot be stored: the rotation must not go on.
    const old = ld.addToken({ role: "reader" });
    ld.overrideNext("POST /api/v2/tokens", { status: 201, body: { _id: "0123", token: "abcd" } });
    const noSecret = await caught(launchDarkly.issue!(ctx, { value: old.value, credentialId: old.id }));
    expect(noSecret.message).toMatch(/token: expected the full token secret/);
  });

  it("stops at once when the rotation is aborted", async () => {
    const { ld, admin } = await setup();
    ld.faults.inject({ route: "GET /api/v2/caller-identity", kind: "delay", delayMs: 5_000 });
    const ac = new AbortController();
    const started = Date.now();
    const p = caught(launchDarkly.identify(ctxFor(ld, admin.value, { signal: ac.signal }), admin.value));
    setTimeout(() => ac.abort(new Error("lock lost")), 50);
    const err = await p;
    expect(err.message).toBe("lock lost");
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
