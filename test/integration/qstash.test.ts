import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { PermanentError, RateLimitedError, TransientError, VerificationError } from "../../src/errors.ts";
import { QStashSigningKeysProvider, QStashTokenProvider, type CredentialRef, type ProviderConfigOf, type ProviderKind } from "../../src/policy/schema.ts";
import { createQStashSigningKeysProvider, createQStashTokenProvider, decodeSigningKeys, encodeSigningKeys } from "../../src/providers/qstash/index.ts";
import { IDENTIFY_LIST_TTL_MS } from "../../src/providers/qstash/token.ts";
import { type ProviderContext, type RotationReason } from "../../src/providers/types.ts";
import { HttpFake } from "../fakes/http-fake.ts";
import { fakesClosedAfterEach } from "../helpers/fakes.ts";
import { QStashFake, type QStashFakeOptions } from "../fakes/qstash.ts";

const start = fakesClosedAfterEach();

function ctxFor<K extends ProviderKind>(config: ProviderConfigOf<K>, secrets: Record<string, string>, reason: RotationReason = "scheduled"): ProviderContext<K> {
  return {
    config,
    policyId: "qstash-test",
    rotationId: randomUUID(),
    signal: new AbortController().signal,
    resolve: async (ref: CredentialRef) => {
      const name = "env" in ref ? ref.env : ref.secretId;
      const v = secrets[name];
      if (v === undefined) throw new Error(`test: no secret ${name}`);
      return v;
    },
    now: Date.now,
    reason,
  };
}

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`non-Error thrown: ${String(err)}`, { cause: err });
  }
  throw new Error("expected the call to fail");
}

function expectNoSecrets(err: Error, secrets: string[]): void {
  const text = `${err.message}\n${err.stack ?? ""}`;
  for (const s of secrets) expect(text).not.toContain(s);
}

async function tokenSetup(opts: QStashFakeOptions = {}, region?: string) {
  const fake = await start(new QStashFake(opts));
  const config = QStashTokenProvider.parse({
    kind: "qstash-token",
    baseUrl: fake.url,
    managementUrl: fake.url,
    email: fake.email,
    management: { env: "UPSTASH_API_KEY" },
    userId: fake.userId(region),
  });
  const ctx = ctxFor<"qstash-token">(config, { UPSTASH_API_KEY: fake.apiKey });
  return { fake, config, ctx };
}

describe("qstash-token", () => {
  it("rotates the token: the old one dies at once and the new one verifies", async () => {
    const { fake, ctx } = await tokenSetup();
    const provider = createQStashTokenProvider();
    const old = fake.token();

    const handle = await provider.identify(ctx, old);
    expect(handle).toEqual({ credentialId: fake.userId(), meta: { region: "eu-central-1" } });

    const issued = await provider.issue!(ctx, { ...handle, value: old });
    expect(issued.value).toBe(fake.token());
    expect(issued.value).not.toBe(old);
    expect(issued.credentialId).toBe(fake.userId());
    expect(fake.isLive(old)).toBe(false);
    expect(fake.isLive(issued.value)).toBe(true);
    expect(fake.count("POST /v2/qstash/rotate-token/", 200)).toBe(1);

    await provider.verify(ctx, issued.value, handle);
    expect(fake.count("GET /v2/topics", 200)).toBe(1);

    const err = await caught(provider.verify(ctx, old, handle));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toContain("GET /v2/topics");
    expect(err.message).toContain("401");
    expectNoSecrets(err, [old, issued.value, fake.apiKey]);
  });

  it("rotates only the region the policy names", async () => {
    const { fake, ctx } = await tokenSetup({ regions: ["eu-central-1", "us-east-1"] }, "us-east-1");
    const provider = createQStashTokenProvider();
    const euBefore = fake.token("eu-central-1");

    const issued = await provider.issue!(ctx, undefined);
    expect(issued.value).toBe(fake.token("us-east-1"));
    expect(issued.meta).toEqual({ region: "us-east-1" });
    expect(fake.token("eu-central-1")).toBe(euBefore);
    expect(fake.tokenRotations("eu-central-1")).toBe(0);
  });

  it("refuses to rotate when the stored token belongs to another region", async () => {
    const { fake, ctx } = await tokenSetup({ regions: ["eu-central-1", "us-east-1"] }, "us-east-1");
    const euToken = fake.token("eu-central-1");
    const err = await caught(createQStashTokenProvider().identify(ctx, euToken));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain(fake.userId("eu-central-1"));
    expect(err.message).toContain("provider.userId");
    expectNoSecrets(err, [euToken, fake.apiKey]);
    expect(fake.tokenRotations("eu-central-1") + fake.tokenRotations("us-east-1")).toBe(0);
  });

  it("identify reads the account's users once for the rotations that start together; recoverIssued always reads afresh", async () => {
    const regions = ["eu-central-1", "us-east-1", "ap-southeast-1"];
    const fake = await start(new QStashFake({ regions }));
    let now = 1_750_000_000_000;
    const provider = createQStashTokenProvider();
    const ctxOf = (region: string) => ({
      ...ctxFor<"qstash-token">(QStashTokenProvider.parse({ kind: "qstash-token", baseUrl: fake.url, managementUrl: fake.url, email: fake.email, management: { env: "UPSTASH_API_KEY" }, userId: fake.userId(region) }), { UPSTASH_API_KEY: fake.apiKey }),
      now: () => now,
    });
    const handles = await Promise.all(regions.map((r) => provider.identify(ctxOf(r), fake.token(r))));
    expect(handles.map((h) => h.credentialId)).toEqual(regions.map((r) => fake.userId(r)));
    expect(fake.count("GET /v2/qstash/users", 200)).toBe(1);
    // The shared list still tells a token of another region from the policy's own.
    const err = await caught(provider.identify(ctxOf("us-east-1"), fake.token("eu-central-1")));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain(fake.userId("eu-central-1"));
    expect(fake.count("GET /v2/qstash/users", 200)).toBe(1);

    // A reset changes the token: recoverIssued reads the list again and returns the new one.
    const issued = await provider.issue!(ctxOf("us-east-1"), undefined);
    const recovered = await provider.recoverIssued!(ctxOf("us-east-1"));
    expect(recovered?.value).toBe(issued.value);
    expect(fake.count("GET /v2/qstash/users", 200)).toBe(2);

    // Past IDENTIFY_LIST_TTL_MS identify reads again.
    now += IDENTIFY_LIST_TTL_MS;
    await provider.identify(ctxOf("us-east-1"), issued.value);
    expect(fake.count("GET /v2/qstash/users", 200)).toBe(3);
  });

  it("a users list read that failed is not shared: the next identify reads again", async () => {
    const { fake, ctx } = await tokenSetup();
    const provider = createQStashTokenProvider();
    fake.faults.inject({ route: "GET /v2/qstash/users", kind: "500" });
    expect(await caught(provider.identify(ctx, fake.token()))).toBeInstanceOf(TransientError);
    expect(await provider.identify(ctx, fake.token())).toEqual({ credentialId: fake.userId(), meta: { region: "eu-central-1" } });
    expect(fake.count("GET /v2/qstash/users")).toBe(2);
  });

  it("falls back to the older rotatetoken path when rotate-token answers 404", async () => {
    const { fake, ctx } = await tokenSetup({ legacyRotateOnly: true });
    const old = fake.token();
    const issued = await createQStashTokenProvider().issue!(ctx, undefined);
    expect(fake.count("POST /v2/qstash/rotate-token/", 404)).toBe(1);
    expect(fake.count("POST /v2/qstash/user/rotatetoken", 200)).toBe(1);
    expect(issued.value).toBe(fake.token());
    expect(fake.isLive(old)).toBe(false);
    await createQStashTokenProvider().verify(ctx, issued.value, { credentialId: fake.userId() });
  });

  it("does not use the older path when the account has several regions", async () => {
    const { fake, ctx } = await tokenSetup({ legacyRotateOnly: true, regions: ["eu-central-1", "us-east-1"] }, "us-east-1");
    const err = await caught(createQStashTokenProvider().issue!(ctx, undefined));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("Nothing was reset");
    expect(fake.count("POST /v2/qstash/user/rotatetoken")).toBe(0);
    expect(fake.tokenRotations("eu-central-1") + fake.tokenRotations("us-east-1")).toBe(0);
  });

  it("names an unknown user id instead of resetting anything", async () => {
    const { fake, config } = await tokenSetup();
    const ctx = ctxFor<"qstash-token">({ ...config, userId: "no-such-user" }, { UPSTASH_API_KEY: fake.apiKey });
    const err = await caught(createQStashTokenProvider().issue!(ctx, undefined));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("no QStash user no-such-user");
    expect(fake.tokenRotations()).toBe(0);
  });

  it("recoverIssued returns the token a reset produced when its answer was lost", async () => {
    const { fake, ctx } = await tokenSetup();
    const provider = createQStashTokenProvider();
    const old = fake.token();
    fake.faults.inject({ route: "POST /v2/qstash/rotate-token/", kind: "drop-after" });

    const err = await caught(provider.issue!(ctx, undefined));
    expect(err).toBeInstanceOf(TransientError);
    expect(fake.tokenRotations()).toBe(1);
    expect(fake.isLive(old)).toBe(false);

    const recovered = await provider.recoverIssued!(ctx);
    expect(recovered?.value).toBe(fake.token());
    expect(recovered?.credentialId).toBe(fake.userId());
    await provider.verify(ctx, recovered!.value, { credentialId: fake.userId() });
    expect(fake.tokenRotations()).toBe(1);
  });

  it("maps an injected 429 to RateLimitedError with Burst-RateLimit-Reset (seconds) as epoch ms", async () => {
    const now = 1_750_000_000_123;
    const { fake, ctx } = await tokenSetup({ now: () => now, injected429ResetSec: 7 });
    fake.faults.inject({ route: "POST /v2/qstash/rotate-token/", kind: "429" });
    const err = await caught(createQStashTokenProvider({ now: () => now }).issue!(ctx, undefined));
    expect(err).toBeInstanceOf(RateLimitedError);
    const reset = fake.lastRateLimitResetSec!;
    expect(reset).toBe(Math.floor(now / 1000) + 7);
    expect((err as RateLimitedError).retryAt).toBe(reset * 1000);
    expect((err as RateLimitedError).scope).toBe(`qstash:${new URL(fake.url).host}`);
    expect(err.message).toContain("Exceeded burst rate limit");
    expect(fake.tokenRotations()).toBe(0);
  });

  it("reads the daily RateLimit-Reset header too", async () => {
    const now = 1_750_000_000_000;
    const { fake, ctx } = await tokenSetup({ now: () => now, injected429: "daily", injected429ResetSec: 3600 });
    fake.faults.inject({ route: "GET /v2/topics", kind: "429" });
    const err = await caught(createQStashTokenProvider({ now: () => now }).verify(ctx, fake.token(), {}));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAt).toBe((Math.floor(now / 1000) + 3600) * 1000);
  });

  it("waits out the burst limit until the window's reset", async () => {
    const now = 1_750_000_000_400;
    const { fake, ctx } = await tokenSetup({ now: () => now, burstLimit: 1, burstWindowMs: 1000 });
    const provider = createQStashTokenProvider({ now: () => now });
    await provider.verify(ctx, fake.token(), {});
    const err = await caught(provider.verify(ctx, fake.token(), {}));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect(fake.count("GET /v2/topics", 429)).toBe(1);
    expect((err as RateLimitedError).retryAt).toBe(fake.lastRateLimitResetSec! * 1000);
    expect((err as RateLimitedError).retryAt).toBeGreaterThan(now);
  });

  it("a refused Developer API key is a PermanentError that names the call and keeps secrets out", async () => {
    const { fake, config } = await tokenSetup();
    const wrongKey = "wrong-key-0123456789";
    const ctx = ctxFor<"qstash-token">(config, { UPSTASH_API_KEY: wrongKey });
    const err = await caught(createQStashTokenProvider().issue!(ctx, undefined));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err).not.toBeInstanceOf(VerificationError);
    expect(err.message).toContain(`POST /v2/qstash/rotate-token/${fake.userId()}`);
    expect(err.message).toContain("401");
    expect(err.message).toContain("provider.management");
    expectNoSecrets(err, [wrongKey, fake.apiKey, fake.token(), Buffer.from(`${fake.email}:${wrongKey}`).toString("base64")]);
    expect(fake.tokenRotations()).toBe(0);
  });

  it("a malformed rotate-token answer is a clear error naming the field", async () => {
    const odd = await start(new HttpFake(() => ({ status: 200, body: { id: "u-1", region: "eu-central-1" } })));
    const config = QStashTokenProvider.parse({ kind: "qstash-token", baseUrl: odd.url, managementUrl: odd.url, email: "a@example.com", management: { env: "K" }, userId: "u-1" });
    const err = await caught(createQStashTokenProvider().issue!(ctxFor<"qstash-token">(config, { K: "key" }), undefined));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toContain("POST /v2/qstash/rotate-token/u-1");
    expect(err.message).toContain("token");
  });
});

async function keysSetup(opts: QStashFakeOptions = {}, reason: RotationReason = "scheduled") {
  const fake = await start(new QStashFake(opts));
  const config = QStashSigningKeysProvider.parse({ kind: "qstash-signing-keys", baseUrl: fake.url, management: { secretId: "qstash/token" } });
  const ctx = ctxFor<"qstash-signing-keys">(config, { "qstash/token": fake.token() }, reason);
  return { fake, config, ctx };
}

describe("qstash-signing-keys", () => {
  it("rolls once: next becomes current, the stored value is the JSON pair, and it verifies", async () => {
    const { fake, ctx } = await keysSetup();
    const provider = createQStashSigningKeysProvider();
    const before = fake.keys();
    const stored = encodeSigningKeys(before);

    expect(await provider.identify(ctx, stored)).toEqual({});
    const issued = await provider.issue!(ctx, { value: stored });
    const pair = decodeSigningKeys(issued.value, "test");
    expect(pair).toEqual(fake.keys());
    expect(pair.current).toBe(before.next);
    expect(pair.next).not.toBe(before.next);
    expect(JSON.parse(issued.value)).toEqual({ current: pair.current, next: pair.next });
    expect(fake.keyRolls()).toBe(1);

    await provider.verify(ctx, issued.value, {});
    const stale = await caught(provider.verify(ctx, stored, {}));
    expect(stale).toBeInstanceOf(VerificationError);
    expectNoSecrets(stale, [before.current, before.next, pair.current, pair.next, fake.token()]);
  });

  it("a re-run after a roll stores the live pair instead of rolling twice", async () => {
    const { fake, ctx } = await keysSetup();
    const provider = createQStashSigningKeysProvider();
    const stored = encodeSigningKeys(fake.keys());
    fake.faults.inject({ route: "POST /v2/keys/rotate", kind: "drop-after" });
    expect(await caught(provider.issue!(ctx, { value: stored }))).toBeInstanceOf(TransientError);
    expect(fake.keyRolls()).toBe(1);

    const again = await provider.issue!(ctx, { value: stored });
    expect(fake.keyRolls()).toBe(1);
    expect(decodeSigningKeys(again.value, "test")).toEqual(fake.keys());
    const recovered = await provider.recoverIssued!(ctx);
    expect(recovered?.value).toBe(again.value);
  });

  it("refuses to roll when the keys were rolled more than once outside rekey", async () => {
    const { fake, ctx } = await keysSetup();
    const stored = encodeSigningKeys(fake.keys());
    fake.rollKeys();
    fake.rollKeys();
    const err = await caught(createQStashSigningKeysProvider().issue!(ctx, { value: stored }));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("Nothing was rolled");
    expect(fake.keyRolls()).toBe(2);
    const live = fake.keys();
    expectNoSecrets(err, [live.current, live.next]);
  });

  it("a leak rolls until neither leaked key is live", async () => {
    const { fake, ctx } = await keysSetup({}, "leak");
    const leaked = fake.keys();
    const issued = await createQStashSigningKeysProvider().issue!(ctx, { value: encodeSigningKeys(leaked) });
    const pair = decodeSigningKeys(issued.value, "test");
    expect(fake.keyRolls()).toBe(2);
    expect([pair.current, pair.next]).not.toContain(leaked.current);
    expect([pair.current, pair.next]).not.toContain(leaked.next);
  });

  it("maps a Burst-RateLimit 429 on the roll to RateLimitedError in ms, without rolling", async () => {
    const now = 1_750_000_100_000;
    const { fake, ctx } = await keysSetup({ now: () => now, injected429ResetSec: 4 });
    fake.faults.inject({ route: "POST /v2/keys/rotate", kind: "429" });
    const err = await caught(createQStashSigningKeysProvider({ now: () => now }).issue!(ctx, { value: encodeSigningKeys(fake.keys()) }));
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAt).toBe((Math.floor(now / 1000) + 4) * 1000);
    expect(fake.keyRolls()).toBe(0);
  });

  it("a refused QStash token is a PermanentError without secrets", async () => {
    const { fake, config } = await keysSetup();
    const badToken = "bad-token-abcdef123456";
    const ctx = ctxFor<"qstash-signing-keys">(config, { "qstash/token": badToken });
    const err = await caught(createQStashSigningKeysProvider().recoverIssued!(ctx));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toContain("GET /v2/keys");
    expect(err.message).toContain("401");
    expect(err.message).toContain("provider.management");
    const keys = fake.keys();
    expectNoSecrets(err, [badToken, fake.token(), keys.current, keys.next]);
  });

  it("a malformed keys body names the missing field and not the key", async () => {
    const secretish = "sig_visible_only_in_body_123";
    const odd = await start(new HttpFake(() => ({ status: 200, body: { current: secretish } })));
    const config = QStashSigningKeysProvider.parse({ kind: "qstash-signing-keys", baseUrl: odd.url, management: { env: "T" } });
    const err = await caught(createQStashSigningKeysProvider().recoverIssued!(ctxFor<"qstash-signing-keys">(config, { T: "t" })));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toContain("GET /v2/keys");
    expect(err.message).toContain("next");
    expectNoSecrets(err, [secretish]);
  });

  it("a stored value that is not a pair is a clear error that does not echo it", async () => {
    const { ctx } = await keysSetup();
    const notJson = "sig_plain_key_value_xyz";
    const e1 = await caught(createQStashSigningKeysProvider().identify(ctx, notJson));
    expect(e1).toBeInstanceOf(PermanentError);
    expect(e1.message).toContain("not JSON");
    expectNoSecrets(e1, [notJson]);
    const e2 = await caught(createQStashSigningKeysProvider().identify(ctx, JSON.stringify({ current: notJson })));
    expect(e2.message).toContain("next is missing");
    expectNoSecrets(e2, [notJson]);
  });
});
