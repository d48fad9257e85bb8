/**
 * AwsSecretsManagerStore on the real SDK against the emulator over HTTP.
 */
import { randomUUID } from "node:crypto";
import { CreateSecretCommand, DeleteSecretCommand, SecretsManagerClient, UpdateSecretVersionStageCommand } from "@aws-sdk/client-secrets-manager";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PermanentError, RateLimitedError, SecretQuotaError, TransientError } from "../../src/errors.ts";
import { AwsSecretsManagerStore, replaceJsonKey } from "../../src/stores/aws-secrets-manager.ts";
import { type SecretRef } from "../../src/stores/types.ts";
import { startAwsEmulator, type AwsEmulator, type AwsEmulatorOptions } from "../fakes/aws/emulator.ts";

const REGION = "us-east-1";
const T0 = Date.UTC(2030, 0, 1);

let emulators: AwsEmulator[] = [];
let clients: SecretsManagerClient[] = [];
/** Every error a store call raised, checked for leaked values after each test. */
let errors: Error[] = [];
let clock = T0;
/** The emulator's error wording for the suite being run (AWS's, or every message worded otherwise). */
let wording: "aws" | "other" = "aws";

afterEach(async () => {
  const values = emulators.flatMap((e) => e.allValues()).filter((v) => v.length >= 6);
  for (const err of errors) {
    for (const v of values) expect(err.message).not.toContain(v);
  }
  for (const c of clients) c.destroy();
  await Promise.all(emulators.map((e) => e.close()));
  emulators = [];
  clients = [];
  errors = [];
  clock = T0;
});

async function setup(emuOpts: AwsEmulatorOptions = {}, maxAttempts = 1): Promise<{ emu: AwsEmulator; store: AwsSecretsManagerStore; raw: SecretsManagerClient }> {
  const emu = await startAwsEmulator({ now: () => clock, writesPerSecond: Infinity, messages: wording, ...emuOpts });
  emulators.push(emu);
  const clientFor = (region: string): SecretsManagerClient => {
    const c = new SecretsManagerClient({ endpoint: emu.url, region, credentials: { accessKeyId: "test", secretAccessKey: "test" }, maxAttempts });
    clients.push(c);
    return c;
  };
  const store = new AwsSecretsManagerStore({ region: REGION, clientFor, now: () => clock });
  return { emu, store, raw: clientFor(REGION) };
}

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    errors.push(err as Error);
    return err as Error;
  }
  throw new Error("expected the call to fail");
}

const token = (): string => randomUUID();

// The store decides from exception names and DescribeSecret, never from message text: every test
// passes with AWS's wording and with every message worded otherwise.
describe.each(["aws", "other"] as const)("AwsSecretsManagerStore, %s error wording", (messages) => {
  beforeEach(() => {
    wording = messages;
  });

  it("tells a missing secret from a missing version, and a deleted secret, by exception name and DescribeSecret", async () => {
    const { raw, store, emu } = await setup();
    const ref: SecretRef = { secretId: "truth" };
    await store.create(ref, "credential-one");
    // A missing version: undefined, and the rotation goes on (it used to stop with "create it first").
    expect(await store.getVersion(ref, token())).toBeUndefined();
    const t = token();
    await store.putPending(ref, t, "credential-two");
    expect((await store.getVersion(ref, t))?.value).toBe("credential-two");
    // A missing secret: told to create it.
    const missing = await caught(store.getVersion({ secretId: "absent" }, token()));
    expect(missing.message).toMatch(/^secret absent in us-east-1 not found: create it first/);
    // Scheduled for deletion: told to restore it, whatever the message said.
    await raw.send(new DeleteSecretCommand({ SecretId: "truth" }));
    for (const call of [() => store.getCurrent(ref), () => store.putPending(ref, token(), "credential-three"), () => store.promote(ref, t)]) {
      const err = await caught(call());
      expect(err).toBeInstanceOf(PermanentError);
      expect(err.message).toMatch(/scheduled for deletion: restore it/);
    }
    if (messages === "other") expect(emu.calls.some((c) => c.errorType === "InvalidRequestException")).toBe(true);
  });

  it("putCurrent: one write straight to AWSCURRENT; a repeat of a token already written as AWSPENDING says it is not current", async () => {
    const { store, emu } = await setup();
    const ref: SecretRef = { secretId: "cut" };
    const { versionId: v1 } = await store.create(ref, "credential-one");
    const t = token();
    expect(await store.putCurrent(ref, t, "credential-two")).toEqual({ versionId: t, current: true });
    expect(await store.stages(ref)).toEqual({ [t]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
    expect(emu.count("PutSecretValue")).toBe(1);
    expect(emu.count("GetSecretValue")).toBe(0);
    // AWS does nothing on a repeated token and value, labels included: the caller must promote.
    const t2 = token();
    await store.putPending(ref, t2, "credential-three");
    expect(await store.putCurrent(ref, t2, "credential-three")).toEqual({ versionId: t2, current: false });
    expect((await store.getCurrent(ref))?.value).toBe("credential-two");
    const conflict = await caught(store.putCurrent(ref, t2, "credential-four"));
    expect(conflict).toBeInstanceOf(PermanentError);
    expect(conflict.message).toMatch(/already holds a different credential/);
  });

  it("names AWSCURRENT on every read of the current value (an implementation with a stale default)", async () => {
    const { store } = await setup({ staleDefault: true });
    const ref: SecretRef = { secretId: "stale", jsonKey: "token" };
    await store.create(ref, "credential-one");
    const t = token();
    await store.putPending(ref, t, "credential-two");
    await store.promote(ref, t);
    expect(await store.getCurrent(ref)).toMatchObject({ versionId: t, value: "credential-two" });
    // The JSON document a write starts from is the current one too, not the stale default.
    const t2 = token();
    await store.putCurrent(ref, t2, "credential-three");
    expect(await store.getCurrent(ref)).toMatchObject({ versionId: t2, value: "credential-three" });
  });

  it("writes AWSPENDING once per token; a retry is a no-op", async () => {
    const { emu, store } = await setup();
    const ref: SecretRef = { secretId: "app/api-token" };
    const { versionId: v1 } = await store.create(ref, "old-credential-1");
    const t = token();
    expect(await store.putPending(ref, t, "new-credential-2")).toEqual({ versionId: t });
    expect(await store.putPending(ref, t, "new-credential-2")).toEqual({ versionId: t });
    // The retry is sent as is (no read first): the token makes it a no-op, no second version.
    expect(emu.count("PutSecretValue")).toBe(2);
    expect(emu.inspect("app/api-token")?.versions).toHaveLength(2);
    expect(await store.stages(ref)).toEqual({ [v1]: ["AWSCURRENT"], [t]: ["AWSPENDING"] });
    expect(await store.getVersion(ref, t)).toEqual({ versionId: t, value: "new-credential-2", stages: ["AWSPENDING"] });
    expect((await store.getCurrent(ref))?.value).toBe("old-credential-1");

    const err = await caught(store.putPending(ref, t, "another-credential-3"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/already holds a different credential/);
    expect(emu.inspect("app/api-token")?.versions).toHaveLength(2);
  });

  it("promotes: AWSCURRENT moves, AWSPREVIOUS follows, AWSPENDING goes; a re-run changes nothing", async () => {
    const { emu, store } = await setup();
    const ref: SecretRef = { secretId: "app/api-token" };
    const { versionId: v1 } = await store.create(ref, "credential-one");
    const t2 = token();
    await store.putPending(ref, t2, "credential-two");
    expect(await store.promote(ref, t2)).toEqual({ previousVersionId: v1 });
    expect(await store.stages(ref)).toEqual({ [t2]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
    expect(await store.getCurrent(ref)).toEqual({ versionId: t2, value: "credential-two", stages: ["AWSCURRENT"] });

    const moves = emu.count("UpdateSecretVersionStage");
    expect(await store.promote(ref, t2)).toEqual({ previousVersionId: v1 });
    expect(emu.count("UpdateSecretVersionStage")).toBe(moves);

    // A second rotation: the old previous is deprecated but still listed with includeDeprecated.
    const t3 = token();
    await store.putPending(ref, t3, "credential-three");
    expect(await store.promote(ref, t3)).toEqual({ previousVersionId: t2 });
    expect(await store.stages(ref)).toEqual({ [t3]: ["AWSCURRENT"], [t2]: ["AWSPREVIOUS"] });
    const all = await store.listVersions(ref, { includeDeprecated: true });
    expect(all.map((v) => v.versionId).sort()).toEqual([v1, t2, t3].sort());
    expect(all.find((v) => v.versionId === v1)).toEqual({ versionId: v1, stages: [], createdAt: T0 });
    expect((await store.listVersions(ref)).map((v) => v.versionId).sort()).toEqual([t2, t3].sort());
  });

  it("finishes a promotion that stopped after moving AWSCURRENT", async () => {
    const { raw, store } = await setup();
    const ref: SecretRef = { secretId: "half-done" };
    const { versionId: v1 } = await store.create(ref, "credential-one");
    const t2 = token();
    await store.putPending(ref, t2, "credential-two");
    await raw.send(new UpdateSecretVersionStageCommand({ SecretId: "half-done", VersionStage: "AWSCURRENT", MoveToVersionId: t2, RemoveFromVersionId: v1 }));
    expect((await store.stages(ref))[t2]?.sort()).toEqual(["AWSCURRENT", "AWSPENDING"]);
    expect(await store.promote(ref, t2)).toEqual({ previousVersionId: v1 });
    expect(await store.stages(ref)).toEqual({ [t2]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
  });

  it("discards a pending version idempotently and leaves the current one alone", async () => {
    const { emu, store } = await setup();
    const ref: SecretRef = { secretId: "discard-me" };
    const { versionId: v1 } = await store.create(ref, "credential-one");
    const t = token();
    await store.putPending(ref, t, "credential-two");
    await store.discardPending(ref, t);
    await store.discardPending(ref, t);
    expect(await store.stages(ref)).toEqual({ [v1]: ["AWSCURRENT"] });
    expect(emu.count("UpdateSecretVersionStage")).toBe(1);
    expect((await store.getCurrent(ref))?.value).toBe("credential-one");
    // The discarded version is still readable by id until AWS cleans it up.
    expect(await store.getVersion(ref, t)).toEqual({ versionId: t, value: "credential-two", stages: [] });
  });

  it("with jsonKey, replaces only that key's value and keeps every other byte", async () => {
    const { raw, store, emu } = await setup();
    const document = '{\n  "user" : "admin",\n  "port": 5432.0,\n  "password": "old\\u0041pw",\n  "nested": {"password": [1, "}", {"x": "\\""}]},\n  "note": "caf\\u00e9"\n}\n';
    await raw.send(new CreateSecretCommand({ Name: "db", SecretString: document }));
    const ref: SecretRef = { secretId: "db", jsonKey: "password" };
    expect((await store.getCurrent(ref))?.value).toBe("oldApw");

    const t = token();
    await store.putPending(ref, t, 'new"pw\\2');
    const written = emu.inspect("db")?.versions.find((v) => v.versionId === t)?.value;
    expect(written).toBe(document.replace('"old\\u0041pw"', JSON.stringify('new"pw\\2')));
    expect(await store.getVersion(ref, t)).toEqual({ versionId: t, value: 'new"pw\\2', stages: ["AWSPENDING"] });
    // The retry compares the key's value, not the document.
    await store.putPending(ref, t, 'new"pw\\2');
    expect(emu.count("PutSecretValue")).toBe(2);
    expect(emu.inspect("db")?.versions).toHaveLength(2);

    // A key the document lacks is added in the document's own layout.
    const added = { secretId: "db", jsonKey: "apiKey" };
    expect(await store.getCurrent(added)).toBeUndefined();
    const t2 = token();
    await store.putPending(added, t2, "key-value-123");
    const withKey = emu.inspect("db")?.versions.find((v) => v.versionId === t2)?.value;
    expect(withKey).toBe(document.replace('"caf\\u00e9"\n}', '"caf\\u00e9",\n  "apiKey": "key-value-123"\n}'));
    expect(JSON.parse(withKey ?? "")).toEqual({ ...(JSON.parse(document) as object), apiKey: "key-value-123" });
  });

  it("with jsonKey, refuses a current value that is not a JSON object", async () => {
    const { store } = await setup();
    await store.create({ secretId: "plain" }, "not-json-credential");
    const err = await caught(store.putPending({ secretId: "plain", jsonKey: "password" }, token(), "new-credential"));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.message).toMatch(/secret plain version .* is not a JSON document/);
    await store.create({ secretId: "array" }, "[1,2]");
    const arr = await caught(store.getCurrent({ secretId: "array", jsonKey: "password" }));
    expect(arr.message).toMatch(/not an object/);
  });

  it("splices JSON keys in compact, empty and duplicate-key documents", () => {
    expect(replaceJsonKey('{"a":1,"b":"x"}', "b", "y", "doc")).toBe('{"a":1,"b":"y"}');
    expect(replaceJsonKey('{"a":1}', "b", "y", "doc")).toBe('{"a":1,"b":"y"}');
    expect(replaceJsonKey('{"a": 1, "c": 2}', "b", "y", "doc")).toBe('{"a": 1, "c": 2, "b": "y"}');
    expect(replaceJsonKey("{ }", "b", "y", "doc")).toBe('{"b":"y" }');
    expect(replaceJsonKey('{"b":"1","b":"2"}', "b", "y", "doc")).toBe('{"b":"1","b":"y"}');
    expect(replaceJsonKey(' {"b":null} ', "b", "y", "doc")).toBe(' {"b":"y"} ');
  });

  it("creates a JSON document with the key for a secret that has no value yet", async () => {
    const { raw, store, emu } = await setup();
    await raw.send(new CreateSecretCommand({ Name: "fresh" }));
    const ref: SecretRef = { secretId: "fresh", jsonKey: "token" };
    expect(await store.getCurrent(ref)).toBeUndefined();
    const t = token();
    await store.putPending(ref, t, "first-credential");
    expect(emu.inspect("fresh")?.versions[0]?.value).toBe('{"token":"first-credential"}');
    // The first version of a secret is always current; promote only drops AWSPENDING.
    expect(await store.promote(ref, t)).toEqual({});
    expect(await store.stages(ref)).toEqual({ [t]: ["AWSCURRENT"] });
  });

  it("pages through many versions until NextToken is absent", async () => {
    const { emu, store } = await setup({ versionQuota: 1000 });
    const ref: SecretRef = { secretId: "many" };
    await store.create(ref, "v-initial");
    const ids = new Set<string>();
    for (let i = 0; i < 230; i++) {
      const t = token();
      ids.add(t);
      await store.putPending(ref, t, `v-${i}`);
    }
    const versions = await store.listVersions(ref, { includeDeprecated: true });
    expect(versions).toHaveLength(231);
    expect(new Set(versions.map((v) => v.versionId)).size).toBe(231);
    for (const id of ids) expect(versions.some((v) => v.versionId === id)).toBe(true);
    expect(emu.count("ListSecretVersionIds")).toBe(3);
    // Only the initial (current) and the last pending version carry labels.
    expect(await store.listVersions(ref)).toHaveLength(2);
  });

  it("turns throttling into RateLimitedError about one second out", async () => {
    const { store } = await setup({ writesPerSecond: 2 });
    const ref: SecretRef = { secretId: "busy" };
    await store.create(ref, "credential-zero");
    await store.putPending(ref, token(), "credential-one");
    await store.putPending(ref, token(), "credential-two");
    const err = await caught(store.putPending(ref, token(), "credential-three"));
    expect(err).toBeInstanceOf(RateLimitedError);
    const limited = err as RateLimitedError;
    expect(limited.scope).toBe(`aws-secrets-manager:${REGION}`);
    expect(limited.retryAt).toBe(T0 + 1000);
    expect(limited.message).toMatch(/throttled PutSecretValue on secret busy in us-east-1/);
    clock += 1000;
    await store.putPending(ref, token(), "credential-four");
  });

  it("turns the version quota into the secret's own SecretQuotaError an hour out", async () => {
    const { store } = await setup({ versionQuota: 3 });
    const ref: SecretRef = { secretId: "quota" };
    await store.create(ref, "credential-zero");
    await store.putPending(ref, token(), "credential-one");
    await store.putPending(ref, token(), "credential-two");
    const err = await caught(store.putPending(ref, token(), "credential-three"));
    expect(err).toBeInstanceOf(SecretQuotaError);
    expect((err as SecretQuotaError).retryAt).toBe(T0 + 60 * 60 * 1000);
    // The secret's own scope, not the region's: nothing else waits for it.
    expect((err as SecretQuotaError).scope).toBe("aws-secrets-manager:us-east-1:quota");
    expect(err.message).toMatch(/the version quota of secret quota in us-east-1 is reached/);
  });

  it("names an unknown secret and its region and says to create it", async () => {
    const { store } = await setup();
    const ref: SecretRef = { secretId: "nope", region: "eu-central-1" };
    for (const call of [() => store.getCurrent(ref), () => store.putPending(ref, token(), "some-credential"), () => store.promote(ref, token()), () => store.stages(ref)]) {
      const err = await caught(call());
      expect(err).toBeInstanceOf(PermanentError);
      expect(err.message).toMatch(/^secret nope in eu-central-1 not found: create it first/);
    }
    expect(await store.getVersion({ secretId: "nope-too" }, token()).catch((e: unknown) => e)).toBeInstanceOf(PermanentError);
  });

  it("returns undefined for unknown versions and secrets without a value", async () => {
    const { raw, store } = await setup();
    await raw.send(new CreateSecretCommand({ Name: "empty" }));
    expect(await store.getCurrent({ secretId: "empty" })).toBeUndefined();
    expect(await store.getVersion({ secretId: "empty" }, token())).toBeUndefined();
    expect(await store.stages({ secretId: "empty" })).toEqual({});
  });

  it("keeps regions apart", async () => {
    const { emu, store } = await setup();
    await store.create({ secretId: "dup", region: "us-west-2" }, "west-credential");
    await store.create({ secretId: "dup" }, "east-credential");
    expect((await store.getCurrent({ secretId: "dup", region: "us-west-2" }))?.value).toBe("west-credential");
    expect((await store.getCurrent({ secretId: "dup" }))?.value).toBe("east-credential");
    expect(emu.inspect("dup", "us-west-2")?.arn).toContain(":us-west-2:");
  });

  it("maps 5xx, dropped connections and a stopped endpoint to TransientError; refuses a scheduled deletion", async () => {
    const { emu, store, raw } = await setup();
    const ref: SecretRef = { secretId: "flaky" };
    await store.create(ref, "credential-one");
    emu.faults.inject({ route: "DescribeSecret", kind: "500" });
    const server = await caught(store.stages(ref));
    expect(server).toBeInstanceOf(TransientError);
    expect(server.message).toMatch(/InternalServiceError/);
    emu.faults.inject({ route: "GetSecretValue", kind: "drop" });
    expect(await caught(store.getCurrent(ref))).toBeInstanceOf(TransientError);

    await raw.send(new DeleteSecretCommand({ SecretId: "flaky" }));
    const deleted = await caught(store.putPending(ref, token(), "credential-two"));
    expect(deleted).toBeInstanceOf(PermanentError);
    expect(deleted.message).toMatch(/scheduled for deletion: restore it/);

    await emu.close();
    expect(await caught(store.getCurrent(ref))).toBeInstanceOf(TransientError);
  });

  it("passes the abort signal to the SDK", async () => {
    const { emu, store } = await setup();
    const ref: SecretRef = { secretId: "slow" };
    await store.create(ref, "credential-one");
    emu.faults.inject({ route: "GetSecretValue", kind: "delay", delayMs: 5_000 });
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 50);
    const err = await caught(store.getCurrent(ref, ac.signal));
    expect(err.name).toBe("AbortError");
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it("builds its own client from the standard AWS environment variables", async () => {
    const emu = await startAwsEmulator();
    emulators.push(emu);
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_SECRETS_MANAGER: emu.url,
      AWS_REGION: "ap-southeast-2",
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
    });
    try {
      const store = new AwsSecretsManagerStore({ maxAttempts: 1 });
      await store.create({ secretId: "from-env" }, "env-credential");
      expect(emu.inspect("from-env", "ap-southeast-2")?.versions[0]?.value).toBe("env-credential");
      expect((await store.getCurrent({ secretId: "from-env" }))?.value).toBe("env-credential");
    } finally {
      for (const k of ["AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });
});
