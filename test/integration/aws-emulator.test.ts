/**
 * Conformance of the AWS Secrets Manager emulator, driven by the real
 * @aws-sdk/client-secrets-manager over HTTP. Cases where AWS's answer is not established test
 * the emulator's documented choice, not a claim about AWS.
 */
import { randomUUID } from "node:crypto";
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutSecretValueCommand,
  RestoreSecretCommand,
  RotateSecretCommand,
  SecretsManagerClient,
  TagResourceCommand,
  UpdateSecretVersionStageCommand,
  type ListSecretVersionIdsCommandOutput,
} from "@aws-sdk/client-secrets-manager";
import { afterEach, describe, expect, it } from "vitest";
import { startAwsEmulator, type AwsEmulator, type AwsEmulatorOptions } from "../fakes/aws/emulator.ts";

const REGION = "us-east-1";
const T0 = Date.UTC(2030, 0, 1);

let emulators: AwsEmulator[] = [];
let clients: SecretsManagerClient[] = [];
let clock = T0;

afterEach(async () => {
  for (const c of clients) c.destroy();
  await Promise.all(emulators.map((e) => e.close()));
  emulators = [];
  clients = [];
  clock = T0;
});

/** An emulator on a hand-driven clock; the write quota is off unless a test turns it on. */
async function start(opts: AwsEmulatorOptions = {}): Promise<AwsEmulator> {
  const emu = await startAwsEmulator({ now: () => clock, writesPerSecond: Infinity, ...opts });
  emulators.push(emu);
  return emu;
}

function sdk(emu: AwsEmulator, opts: { region?: string; maxAttempts?: number } = {}): SecretsManagerClient {
  const c = new SecretsManagerClient({
    endpoint: emu.url,
    region: opts.region ?? REGION,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: opts.maxAttempts ?? 1,
  });
  clients.push(c);
  return c;
}

interface ServiceError {
  name: string;
  message: string;
  $metadata: { httpStatusCode?: number; attempts?: number };
}

async function failure(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error("expected the call to fail");
}

async function expectError(p: Promise<unknown>, name: string, message?: string | RegExp): Promise<ServiceError> {
  const err = await failure(p);
  expect(err.name).toBe(name);
  expect(err.$metadata.httpStatusCode).toBe(name === "InternalServiceError" ? 500 : 400);
  if (message !== undefined) {
    if (typeof message === "string") expect(err.message).toBe(message);
    else expect(err.message).toMatch(message);
  }
  return err;
}

const tok = (): string => randomUUID();

async function create(c: SecretsManagerClient, name: string, value?: string): Promise<{ arn: string; versionId?: string }> {
  const out = await c.send(new CreateSecretCommand({ Name: name, SecretString: value, ClientRequestToken: tok() }));
  return { arn: out.ARN ?? "", versionId: out.VersionId };
}

async function put(c: SecretsManagerClient, id: string, value: string, stages?: string[], token = tok()): Promise<string> {
  const out = await c.send(new PutSecretValueCommand({ SecretId: id, SecretString: value, ClientRequestToken: token, VersionStages: stages }));
  return out.VersionId ?? "";
}

async function labels(c: SecretsManagerClient, id: string): Promise<Record<string, string[]>> {
  return (await c.send(new DescribeSecretCommand({ SecretId: id }))).VersionIdsToStages ?? {};
}

async function listAll(c: SecretsManagerClient, id: string, includeDeprecated: boolean): Promise<string[]> {
  const ids: string[] = [];
  let next: string | undefined;
  do {
    const out: ListSecretVersionIdsCommandOutput = await c.send(
      new ListSecretVersionIdsCommand({ SecretId: id, IncludeDeprecated: includeDeprecated, MaxResults: 1, NextToken: next }),
    );
    for (const v of out.Versions ?? []) ids.push(v.VersionId ?? "");
    next = out.NextToken;
  } while (next);
  return ids;
}

/** GetSecretValue by default, by VersionStage AWSCURRENT and by the current VersionId agree. */
async function expectReadsAgree(c: SecretsManagerClient, id: string, value: string): Promise<void> {
  const byDefault = await c.send(new GetSecretValueCommand({ SecretId: id }));
  const byStage = await c.send(new GetSecretValueCommand({ SecretId: id, VersionStage: "AWSCURRENT" }));
  const byId = await c.send(new GetSecretValueCommand({ SecretId: id, VersionId: byDefault.VersionId }));
  expect([byDefault.SecretString, byStage.SecretString, byId.SecretString]).toEqual([value, value, value]);
  expect(byStage.VersionId).toBe(byDefault.VersionId);
  expect(byId.VersionStages).toContain("AWSCURRENT");
}

function holders(map: Record<string, string[]>, label: string): string[] {
  return Object.entries(map)
    .filter(([, l]) => l.includes(label))
    .map(([id]) => id);
}

async function raw(emu: AwsEmulator, target: string | undefined, body: string, region = REGION): Promise<{ status: number; type: string | null; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {
    "content-type": "application/x-amz-json-1.1",
    authorization: `AWS4-HMAC-SHA256 Credential=test/20300101/${region}/secretsmanager/aws4_request, SignedHeaders=host, Signature=00`,
  };
  if (target !== undefined) headers["x-amz-target"] = target;
  const res = await fetch(`${emu.url}/`, { method: "POST", headers, body });
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), json: JSON.parse(text) as Record<string, unknown> };
}

describe("AWS Secrets Manager emulator: identifiers", () => {
  it("creates ARNs with a random 6-letter suffix that changes on re-create (1)", async () => {
    const emu = await start({ accountId: "111122223333" });
    const c = sdk(emu, { region: "eu-west-1" });
    const first = await create(c, "app/db", "v1");
    expect(first.arn).toMatch(/^arn:aws:secretsmanager:eu-west-1:111122223333:secret:app\/db-[A-Za-z0-9]{6}$/);
    await c.send(new DeleteSecretCommand({ SecretId: first.arn, ForceDeleteWithoutRecovery: true }));
    const second = await create(c, "app/db", "v2");
    expect(second.arn).toMatch(/^arn:aws:secretsmanager:eu-west-1:111122223333:secret:app\/db-[A-Za-z0-9]{6}$/);
    expect(second.arn).not.toBe(first.arn);
  });

  it("finds a secret by name, full ARN and partial ARN (2)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { arn } = await create(c, "svc/token", "s3cr3t-value");
    const partial = arn.slice(0, -7);
    for (const id of ["svc/token", arn, partial]) {
      const out = await c.send(new GetSecretValueCommand({ SecretId: id }));
      expect([out.ARN, out.Name, out.SecretString]).toEqual([arn, "svc/token", "s3cr3t-value"]);
    }
  });

  it("keeps separate state per region, read from the SigV4 credential scope", async () => {
    const emu = await start();
    const east = sdk(emu, { region: "us-east-1" });
    const west = sdk(emu, { region: "us-west-2" });
    await create(east, "shared-name", "east-value");
    await expectError(west.send(new GetSecretValueCommand({ SecretId: "shared-name" })), "ResourceNotFoundException");
    await create(west, "shared-name", "west-value");
    expect((await west.send(new GetSecretValueCommand({ SecretId: "shared-name" }))).SecretString).toBe("west-value");
    expect(emu.inspect("shared-name", "us-east-1")?.versions.map((v) => v.value)).toEqual(["east-value"]);
    expect(emu.inspect("shared-name", "us-west-2")?.arn).toContain(":us-west-2:");
  });

  it("rejects invalid names with ValidationException and checks the 512-character bound (3)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const nameMessage = "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!";
    await expectError(create(c, "bad name!", "x"), "ValidationException", nameMessage);
    await expectError(create(c, "has space", "x"), "ValidationException", nameMessage);
    const ok = await create(c, "n".repeat(512), "x");
    expect(ok.arn).toContain(`:secret:${"n".repeat(512)}-`);
    await expectError(create(c, "n".repeat(513), "x"), "ValidationException", /name.*less than or equal to 512/);
  });
});

describe("AWS Secrets Manager emulator: CreateSecret", () => {
  it("handles duplicate names by token (4)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const token = tok();
    const first = await c.send(new CreateSecretCommand({ Name: "dup", SecretString: "one", ClientRequestToken: token }));
    await expectError(
      c.send(new CreateSecretCommand({ Name: "dup", SecretString: "one" })),
      "ResourceExistsException",
      "The operation failed because the secret dup already exists.",
    );
    const again = await c.send(new CreateSecretCommand({ Name: "dup", SecretString: "one", ClientRequestToken: token }));
    expect({ ARN: again.ARN, Name: again.Name, VersionId: again.VersionId }).toEqual({ ARN: first.ARN, Name: first.Name, VersionId: token });
    await expectError(
      c.send(new CreateSecretCommand({ Name: "dup", SecretString: "two", ClientRequestToken: token })),
      "ResourceExistsException",
      `You can't use ClientRequestToken ${token} because that value is already in use for a version of secret ${first.ARN}.`,
    );
    expect(emu.inspect("dup")?.versions).toHaveLength(1);
  });

  it("creates a secret without a value; the first PutSecretValue becomes current (5)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const out = await c.send(new CreateSecretCommand({ Name: "empty" }));
    expect(out.VersionId).toBeUndefined();
    expect(out.ARN).toMatch(/:secret:empty-[A-Za-z]{6}$/);
    await expectError(
      c.send(new GetSecretValueCommand({ SecretId: "empty" })),
      "ResourceNotFoundException",
      "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT",
    );
    const v1 = await put(c, "empty", "first", ["AWSPENDING"]);
    expect((await labels(c, "empty"))[v1]?.sort()).toEqual(["AWSCURRENT", "AWSPENDING"]);
    await expectReadsAgree(c, "empty", "first");
  });
});

describe("AWS Secrets Manager emulator: PutSecretValue", () => {
  it("moves AWSCURRENT and AWSPREVIOUS and deprecates the old previous (6)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    const v2 = await put(c, "s", "two");
    const v3 = await put(c, "s", "three");
    const map = await labels(c, "s");
    expect(map).toEqual({ [v3]: ["AWSCURRENT"], [v2]: ["AWSPREVIOUS"] });
    expect(map[v1]).toBeUndefined();
    expect((await listAll(c, "s", false)).sort()).toEqual([v2, v3].sort());
    expect((await listAll(c, "s", true)).sort()).toEqual([v1, v2, v3].sort());
    await expectReadsAgree(c, "s", "three");
    expect((await c.send(new GetSecretValueCommand({ SecretId: "s", VersionStage: "AWSPREVIOUS" }))).SecretString).toBe("two");
  });

  it("is a no-op when retried with the same token and value (7)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    const token = tok();
    await put(c, "s", "two", ["AWSPENDING"], token);
    const before = emu.inspect("s");
    const again = await c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "two", ClientRequestToken: token }));
    expect(again.VersionId).toBe(token);
    expect(again.VersionStages).toEqual(["AWSPENDING"]);
    expect(emu.inspect("s")).toEqual(before);
  });

  it("writes straight to AWSCURRENT with VersionStages [AWSCURRENT]; a repeat of the token moves nothing back (6, 7)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    const token = tok();
    const first = await c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "two", ClientRequestToken: token, VersionStages: ["AWSCURRENT"] }));
    expect(first.VersionStages).toEqual(["AWSCURRENT"]);
    expect(await labels(c, "s")).toEqual({ [token]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
    // A later rotation's write takes AWSCURRENT; the first token's retry (an answer lost, sent
    // again) is a no-op that reports the labels its version holds now.
    const v3 = await put(c, "s", "three", ["AWSCURRENT"]);
    const again = await c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "two", ClientRequestToken: token, VersionStages: ["AWSCURRENT"] }));
    expect(again.VersionId).toBe(token);
    expect(again.VersionStages).toEqual(["AWSPREVIOUS"]);
    expect(await labels(c, "s")).toEqual({ [v3]: ["AWSCURRENT"], [token]: ["AWSPREVIOUS"] });
    await expectReadsAgree(c, "s", "three");
  });

  it("refuses a reused token with a different value, string against binary too (8)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { arn } = await create(c, "s", "one");
    const token = tok();
    await put(c, "s", "two", undefined, token);
    const message = `You can't use ClientRequestToken ${token} because that value is already in use for a version of secret ${arn}.`;
    await expectError(put(c, "s", "other", undefined, token), "ResourceExistsException", message);
    await expectError(
      c.send(new PutSecretValueCommand({ SecretId: "s", SecretBinary: new TextEncoder().encode("two"), ClientRequestToken: token })),
      "ResourceExistsException",
      message,
    );
    expect(emu.inspect("s")?.versions).toHaveLength(2);
  });

  it("requires exactly one of SecretString and SecretBinary (9)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    await expectError(
      c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "a", SecretBinary: new Uint8Array([1]), ClientRequestToken: tok() })),
      "InvalidRequestException",
    );
    await expectError(c.send(new PutSecretValueCommand({ SecretId: "s", ClientRequestToken: tok() })), "InvalidRequestException");
    await expectError(
      c.send(new CreateSecretCommand({ Name: "both", SecretString: "a", SecretBinary: new Uint8Array([1]) })),
      "InvalidRequestException",
    );
    expect(emu.inspect("s")?.versions).toHaveLength(1);
    expect(emu.inspect("both")).toBeUndefined();
  });

  it("checks the ClientRequestToken length: 32 to 64 characters (10)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    await expectError(put(c, "s", "a", undefined, "t".repeat(31)), "ValidationException", /clientRequestToken.*greater than or equal to 32/);
    await expectError(put(c, "s", "a", undefined, "t".repeat(65)), "ValidationException", /clientRequestToken.*less than or equal to 64/);
    expect(await put(c, "s", "b", undefined, "t".repeat(32))).toBe("t".repeat(32));
    expect(await put(c, "s", "c", undefined, "u".repeat(64))).toBe("u".repeat(64));
  });

  it("answers a raw request without a token like AWS", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    const res = await raw(emu, "secretsmanager.PutSecretValue", JSON.stringify({ SecretId: "s", SecretString: "x" }));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ __type: "InvalidRequestException", Message: "You must provide a ClientRequestToken value. We recommend a UUID-type value." });
  });

  it("writes AWSPENDING without moving AWSCURRENT and takes AWSPENDING from older versions (11)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    const p1 = await put(c, "s", "pending-1", ["AWSPENDING"]);
    const p2 = await put(c, "s", "pending-2", ["AWSPENDING"]);
    expect(await labels(c, "s")).toEqual({ [v1]: ["AWSCURRENT"], [p2]: ["AWSPENDING"] });
    expect(emu.inspect("s")?.versions.find((v) => v.versionId === p1)?.stages).toEqual([]);
    await expectReadsAgree(c, "s", "one");
  });

  it("moves custom labels without duplicates and allows at most 20 labels (12)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    const a = await put(c, "s", "two", ["blue", "AWSPENDING"]);
    const b = await put(c, "s", "three", ["blue", "blue"]);
    const map = await labels(c, "s");
    expect(holders(map, "blue")).toEqual([b]);
    expect(map[b]?.filter((l) => l === "blue")).toHaveLength(1);
    expect(map[a]).toEqual(["AWSPENDING"]);
    // AWSCURRENT (never moved), AWSPENDING and blue are attached: 17 more reach the limit.
    expect(holders(map, "AWSPREVIOUS")).toEqual([]);
    const custom = Array.from({ length: 17 }, (_, i) => `L${i}`);
    await put(c, "s", "four", custom);
    await expectError(put(c, "s", "five", ["one-too-many"]), "LimitExceededException");
    expect(emu.inspect("s")?.versions).toHaveLength(4);
  });

  it("keeps one AWSCURRENT and a consistent AWSPREVIOUS under parallel writes (32)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v0 = (await create(c, "s", "zero")).versionId ?? "";
    const tokens = Array.from({ length: 20 }, () => tok());
    await Promise.all(tokens.map((t, i) => put(c, "s", `value-${i}`, undefined, t)));
    const snap = emu.inspect("s");
    expect(snap?.versions).toHaveLength(21);
    const current = snap?.versions.filter((v) => v.stages.includes("AWSCURRENT")) ?? [];
    const previous = snap?.versions.filter((v) => v.stages.includes("AWSPREVIOUS")) ?? [];
    expect(current).toHaveLength(1);
    expect(previous).toHaveLength(1);
    // The previous version is the one written just before the current one.
    const order = snap?.versions.map((v) => v.versionId) ?? [];
    expect(order.indexOf(previous[0]?.versionId ?? "")).toBe(order.indexOf(current[0]?.versionId ?? "") - 1);
    expect(order[0]).toBe(v0);

    const same = tok();
    await Promise.all(Array.from({ length: 10 }, () => put(c, "s", "same-value", ["AWSPENDING"], same)));
    expect(emu.inspect("s")?.versions.filter((v) => v.versionId === same)).toHaveLength(1);
    expect(emu.inspect("s")?.versions).toHaveLength(22);
  });
});

describe("AWS Secrets Manager emulator: GetSecretValue", () => {
  it("reports a missing stage, an unknown VersionId and a VersionId/VersionStage mismatch (14)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    await expectError(
      c.send(new GetSecretValueCommand({ SecretId: "s", VersionStage: "AWSPENDING" })),
      "ResourceNotFoundException",
      "Secrets Manager can't find the specified secret value for staging label: AWSPENDING",
    );
    const unknown = tok();
    await expectError(
      c.send(new GetSecretValueCommand({ SecretId: "s", VersionId: unknown })),
      "ResourceNotFoundException",
      `Secrets Manager can't find the specified secret value for VersionId: ${unknown}`,
    );
    await expectError(c.send(new GetSecretValueCommand({ SecretId: "s", VersionId: v1, VersionStage: "AWSPREVIOUS" })), "InvalidRequestException");
    const both = await c.send(new GetSecretValueCommand({ SecretId: "s", VersionId: v1, VersionStage: "AWSCURRENT" }));
    expect(both.SecretString).toBe("one");
  });

  it("returns SecretBinary as bytes and only that member", async () => {
    const emu = await start();
    const c = sdk(emu);
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    await c.send(new CreateSecretCommand({ Name: "bin", SecretBinary: bytes }));
    const out = await c.send(new GetSecretValueCommand({ SecretId: "bin" }));
    expect(out.SecretString).toBeUndefined();
    expect([...(out.SecretBinary ?? [])]).toEqual([...bytes]);
    expect(out.CreatedDate?.getTime()).toBe(T0);
  });
});

describe("AWS Secrets Manager emulator: UpdateSecretVersionStage", () => {
  async function rotationState(c: SecretsManagerClient): Promise<{ v0: string; v1: string; p: string }> {
    const v0 = (await create(c, "s", "zero")).versionId ?? "";
    const v1 = await put(c, "s", "one");
    const p = await put(c, "s", "pending", ["AWSPENDING"]);
    return { v0, v1, p };
  }

  it("refuses to move AWSCURRENT without RemoveFromVersionId, with AWS's message (15)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v1, p } = await rotationState(c);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: p })),
      "InvalidParameterException",
      `The parameter RemoveFromVersionId can't be empty. Staging label AWSCURRENT is currently attached to version ${v1}, so you must explicitly reference that version in RemoveFromVersionId.`,
    );
    await expectReadsAgree(c, "s", "one");
  });

  it("refuses a RemoveFromVersionId that does not hold the label (16)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v0, p } = await rotationState(c);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: p, RemoveFromVersionId: v0 })),
      "InvalidParameterException",
    );
    await expectReadsAgree(c, "s", "one");
  });

  it("moves AWSCURRENT: AWSPREVIOUS follows, the target keeps AWSPENDING (13, 17)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v0, v1, p } = await rotationState(c);
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: p, RemoveFromVersionId: v1 }));
    const map = await labels(c, "s");
    expect(map[p]?.sort()).toEqual(["AWSCURRENT", "AWSPENDING"]);
    expect(map[v1]).toEqual(["AWSPREVIOUS"]);
    expect(map[v0]).toBeUndefined();
    expect(holders(map, "AWSCURRENT")).toHaveLength(1);
    expect(holders(map, "AWSPREVIOUS")).toHaveLength(1);
    await expectReadsAgree(c, "s", "pending");
    expect((await c.send(new GetSecretValueCommand({ SecretId: "s", VersionStage: "AWSPREVIOUS" }))).SecretString).toBe("one");

    // Finishing the rotation: remove-only of AWSPENDING (19).
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSPENDING", RemoveFromVersionId: p }));
    expect(await labels(c, "s")).toEqual({ [p]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
    await expectReadsAgree(c, "s", "pending");
    // And back again: the reads still agree after every move.
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: v1, RemoveFromVersionId: p }));
    expect(await labels(c, "s")).toEqual({ [v1]: ["AWSCURRENT"], [p]: ["AWSPREVIOUS"] });
    await expectReadsAgree(c, "s", "one");
  });

  it("requires RemoveFromVersionId to move a custom label too (18)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v0 } = await rotationState(c);
    const a = await put(c, "s", "a", ["green"]);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "green", MoveToVersionId: v0 })),
      "InvalidParameterException",
      /RemoveFromVersionId can't be empty/,
    );
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "green", MoveToVersionId: v0, RemoveFromVersionId: a }));
    const map = await labels(c, "s");
    expect(holders(map, "green")).toEqual([v0]);
    expect(map[a]).toBeUndefined();
  });

  it("deprecates a version that loses its last label; it stays readable by VersionId (19)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { p } = await rotationState(c);
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSPENDING", RemoveFromVersionId: p }));
    expect((await labels(c, "s"))[p]).toBeUndefined();
    expect(await listAll(c, "s", false)).not.toContain(p);
    expect(await listAll(c, "s", true)).toContain(p);
    const out = await c.send(new GetSecretValueCommand({ SecretId: "s", VersionId: p }));
    expect([out.SecretString, out.VersionStages]).toEqual(["pending", []]);
    // Chosen behaviour: removing a label the version does not carry is an error.
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSPENDING", RemoveFromVersionId: p })),
      "InvalidParameterException",
      `Version stage AWSPENDING not found in version ${p}`,
    );
  });

  it("treats moving a label to its holder as a no-op, and refuses to strip AWSCURRENT (20, chosen)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v1 } = await rotationState(c);
    const before = emu.inspect("s");
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: v1 }));
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: v1, RemoveFromVersionId: v1 }));
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT" }));
    expect(emu.inspect("s")).toEqual(before);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", RemoveFromVersionId: v1 })),
      "InvalidParameterException",
    );
    await expectReadsAgree(c, "s", "one");
  });

  it("refuses unknown MoveTo and RemoveFrom version ids (21)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const { v1 } = await rotationState(c);
    const unknown = tok();
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: unknown, RemoveFromVersionId: v1 })),
      "InvalidParameterException",
      `Not a valid version: ${unknown}`,
    );
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSPENDING", RemoveFromVersionId: unknown })),
      "InvalidParameterException",
    );
    await expectReadsAgree(c, "s", "one");
  });
});

describe("AWS Secrets Manager emulator: ListSecretVersionIds", () => {
  it("filters deprecated versions and pages with MaxResults and NextToken (22)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const ids = [(await create(c, "s", "v0")).versionId ?? ""];
    for (let i = 1; i < 7; i++) ids.push(await put(c, "s", `v${i}`));
    const labelled = await listAll(c, "s", false);
    expect(labelled.sort()).toEqual([ids[5], ids[6]].sort());
    const every = await listAll(c, "s", true);
    expect(every).toHaveLength(ids.length);
    expect(new Set(every)).toEqual(new Set(ids));
    const full = await c.send(new ListSecretVersionIdsCommand({ SecretId: "s", IncludeDeprecated: true }));
    expect(full.NextToken).toBeUndefined();
    expect(full.Versions?.every((v) => v.CreatedDate instanceof Date)).toBe(true);
    await expectError(
      c.send(new ListSecretVersionIdsCommand({ SecretId: "s", NextToken: "not-a-token" })),
      "InvalidNextTokenException",
    );
    await expectError(c.send(new ListSecretVersionIdsCommand({ SecretId: "s", MaxResults: 101 })), "ValidationException");
  });
});

describe("AWS Secrets Manager emulator: quotas", () => {
  it("refuses more than 100 versions within 24 h and purges old unlabeled ones after (23)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await c.send(new CreateSecretCommand({ Name: "busy" }));
    for (let i = 0; i < 100; i++) await put(c, "busy", `value-${i}`);
    expect(emu.inspect("busy")?.versions).toHaveLength(100);
    await expectError(put(c, "busy", "one-too-many"), "LimitExceededException");
    // The SDK retries LimitExceededException: three attempts, one request each.
    const before = emu.count("PutSecretValue");
    const retried = await failure(sdk(emu, { maxAttempts: 3 }).send(new PutSecretValueCommand({ SecretId: "busy", SecretString: "x", ClientRequestToken: tok() })));
    expect(retried.name).toBe("LimitExceededException");
    expect(emu.count("PutSecretValue") - before).toBe(3);
    expect(emu.inspect("busy")?.versions).toHaveLength(100);

    clock += 24 * 60 * 60 * 1000 + 1;
    const fresh = await put(c, "busy", "next-day");
    const snap = emu.inspect("busy");
    expect(snap?.versions).toHaveLength(100);
    expect(snap?.versions.at(-1)?.versionId).toBe(fresh);
    expect(snap?.versions.some((v) => v.value === "value-0")).toBe(false);
    expect(snap?.versions.filter((v) => v.stages.length > 0).map((v) => v.value).sort()).toEqual(["next-day", "value-99"]);
  });

  it("throttles the shared write quota with ThrottlingException \"Rate exceeded\" (24)", async () => {
    const emu = await start({ writesPerSecond: 50 });
    const c = sdk(emu);
    const { versionId: v1 = "" } = await create(c, "s", "one");
    const results = await Promise.allSettled(Array.from({ length: 45 }, (_, i) => put(c, "s", `v${i}`, [`L${i % 5}`])));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(45);
    // UpdateSecretVersionStage shares the bucket: 5 more fill it.
    for (let i = 0; i < 5; i++) {
      await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: `extra${i}`, MoveToVersionId: v1 }));
    }
    const err = await expectError(put(c, "s", "throttled"), "ThrottlingException", "Rate exceeded");
    expect(err.$metadata.attempts).toBe(1);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "extra9", MoveToVersionId: v1 })),
      "ThrottlingException",
    );
    // Reads are not in this bucket (and custom labels never moved AWSCURRENT).
    expect((await c.send(new GetSecretValueCommand({ SecretId: "s" }))).SecretString).toBe("one");
    clock += 1000;
    await put(c, "s", "after-a-second");
    expect(emu.inspect("s")?.versions.filter((v) => v.value === "throttled")).toHaveLength(0);
  });

  it("ends with exactly one new version when the SDK retries a throttled write with its token (24)", async () => {
    const emu = await start();
    const c = sdk(emu, { maxAttempts: 3 });
    await create(c, "s", "one");
    emu.faults.inject({ route: "PutSecretValue", kind: "429" });
    const out = await c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "two" }));
    expect(out.$metadata.attempts).toBe(2);
    expect(emu.inspect("s")?.versions.map((v) => v.value)).toEqual(["one", "two"]);
    const puts = emu.calls.filter((call) => call.operation === "PutSecretValue");
    expect(puts.map((p) => [p.status, p.errorType])).toEqual([
      [400, "ThrottlingException"],
      [200, undefined],
    ]);
    expect(new Set(puts.map((p) => p.clientRequestToken)).size).toBe(1);
  });

  it("survives a dropped response after the write: the retry is idempotent", async () => {
    const emu = await start();
    const c = sdk(emu, { maxAttempts: 3 });
    await create(c, "s", "one");
    emu.faults.inject({ route: "PutSecretValue", kind: "drop-after" });
    const out = await c.send(new PutSecretValueCommand({ SecretId: "s", SecretString: "two" }));
    expect(out.VersionStages).toEqual(["AWSCURRENT"]);
    expect(emu.count("PutSecretValue")).toBe(2);
    expect(emu.inspect("s")?.versions.map((v) => v.value)).toEqual(["one", "two"]);
  });
});

describe("AWS Secrets Manager emulator: error wire format", () => {
  it("answers 400 with __type and Message for client errors, 500 for InternalServiceError (25)", async () => {
    const emu = await start();
    const res = await raw(emu, "secretsmanager.DescribeSecret", JSON.stringify({ SecretId: "missing" }));
    expect(res.status).toBe(400);
    expect(res.type).toBe("application/x-amz-json-1.1");
    expect(res.json).toEqual({ __type: "ResourceNotFoundException", Message: "Secrets Manager can't find the specified secret." });

    const c = sdk(emu);
    await expectError(c.send(new DescribeSecretCommand({ SecretId: "missing" })), "ResourceNotFoundException");
    emu.faults.inject({ route: "GetSecretValue", kind: "500" });
    const err = await expectError(c.send(new GetSecretValueCommand({ SecretId: "missing" })), "InternalServiceError");
    expect(err.$metadata.httpStatusCode).toBe(500);
  });

  it("answers an unknown or missing X-Amz-Target with a JSON error (31)", async () => {
    const emu = await start();
    const unknown = await raw(emu, "secretsmanager.FlyToTheMoon", "{}");
    expect(unknown.status).toBe(400);
    expect(unknown.json.__type).toBe("UnknownOperationException");
    const missing = await raw(emu, undefined, "{}");
    expect(missing.status).toBe(400);
    expect(missing.json.__type).toBe("UnknownOperationException");
    const notJson = await raw(emu, "secretsmanager.DescribeSecret", "not json");
    expect([notJson.status, notJson.json.__type]).toEqual([400, "SerializationException"]);
  });

  it("answers ResourceNotFound for every operation on an unknown secret (30)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const id = "no-such-secret";
    const message = "Secrets Manager can't find the specified secret.";
    const calls: Promise<unknown>[] = [
      c.send(new DescribeSecretCommand({ SecretId: id })),
      c.send(new GetSecretValueCommand({ SecretId: id })),
      c.send(new PutSecretValueCommand({ SecretId: id, SecretString: "x" })),
      c.send(new UpdateSecretVersionStageCommand({ SecretId: id, VersionStage: "AWSCURRENT", MoveToVersionId: tok() })),
      c.send(new ListSecretVersionIdsCommand({ SecretId: id })),
      c.send(new DeleteSecretCommand({ SecretId: id })),
      c.send(new RestoreSecretCommand({ SecretId: id })),
      c.send(new TagResourceCommand({ SecretId: id, Tags: [{ Key: "a", Value: "b" }] })),
      c.send(new RotateSecretCommand({ SecretId: id, RotationLambdaARN: "arn:aws:lambda:us-east-1:123456789012:function:rot" })),
      c.send(new GetSecretValueCommand({ SecretId: `arn:aws:secretsmanager:${REGION}:123456789012:secret:${id}-AbCdEf` })),
    ];
    for (const p of calls) await expectError(p, "ResourceNotFoundException", message);
  });
});

describe("AWS Secrets Manager emulator: deletion, tags, rotation", () => {
  it("schedules deletion, blocks value operations, and restores intact (26)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    const v2 = await put(c, "s", "two");
    const before = await labels(c, "s");
    const del = await c.send(new DeleteSecretCommand({ SecretId: "s" }));
    expect(del.DeletionDate?.getTime()).toBe(T0 + 30 * 24 * 60 * 60 * 1000);
    const marked = "You can't perform this operation on the secret because it was marked for deletion.";
    await expectError(c.send(new GetSecretValueCommand({ SecretId: "s" })), "InvalidRequestException", marked);
    await expectError(put(c, "s", "three"), "InvalidRequestException", marked);
    await expectError(
      c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: v1, RemoveFromVersionId: v2 })),
      "InvalidRequestException",
      marked,
    );
    await expectError(
      c.send(new RotateSecretCommand({ SecretId: "s", RotationLambdaARN: "arn:aws:lambda:us-east-1:123456789012:function:rot" })),
      "InvalidRequestException",
      marked,
    );
    const described = await c.send(new DescribeSecretCommand({ SecretId: "s" }));
    expect(described.DeletedDate?.getTime()).toBe(T0);
    await expectError(
      create(c, "s", "again"),
      "InvalidRequestException",
      "You can't create this secret because a secret with this name is already scheduled for deletion.",
    );
    await c.send(new RestoreSecretCommand({ SecretId: "s" }));
    expect((await c.send(new DescribeSecretCommand({ SecretId: "s" }))).DeletedDate).toBeUndefined();
    expect(await labels(c, "s")).toEqual(before);
    await expectReadsAgree(c, "s", "two");
  });

  it("validates DeleteSecret options; force delete frees the name; the window expires on the clock (27)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "s", "one");
    await expectError(c.send(new DeleteSecretCommand({ SecretId: "s", RecoveryWindowInDays: 7, ForceDeleteWithoutRecovery: true })), "InvalidParameterException");
    await expectError(c.send(new DeleteSecretCommand({ SecretId: "s", RecoveryWindowInDays: 6 })), "InvalidParameterException");
    await expectError(c.send(new DeleteSecretCommand({ SecretId: "s", RecoveryWindowInDays: 31 })), "InvalidParameterException");
    await c.send(new DeleteSecretCommand({ SecretId: "s", RecoveryWindowInDays: 7 }));
    // Force-deleting a scheduled secret is allowed.
    await c.send(new DeleteSecretCommand({ SecretId: "s", ForceDeleteWithoutRecovery: true }));
    await expectError(c.send(new DescribeSecretCommand({ SecretId: "s" })), "ResourceNotFoundException");
    await create(c, "s", "reborn");
    await expectReadsAgree(c, "s", "reborn");

    await c.send(new DeleteSecretCommand({ SecretId: "s", RecoveryWindowInDays: 7 }));
    clock += 7 * 24 * 60 * 60 * 1000;
    await expectError(c.send(new DescribeSecretCommand({ SecretId: "s" })), "ResourceNotFoundException");
  });

  it("merges and overwrites tags (28)", async () => {
    const emu = await start();
    const c = sdk(emu);
    await c.send(new CreateSecretCommand({ Name: "s", SecretString: "one", Tags: [{ Key: "team", Value: "a" }] }));
    await c.send(new TagResourceCommand({ SecretId: "s", Tags: [{ Key: "team", Value: "b" }, { Key: "Team", Value: "c" }, { Key: "env", Value: "prod" }] }));
    const tags = (await c.send(new DescribeSecretCommand({ SecretId: "s" }))).Tags ?? [];
    expect(Object.fromEntries(tags.map((t) => [t.Key, t.Value]))).toEqual({ team: "b", Team: "c", env: "prod" });
  });

  it("rotates through a valueless AWSPENDING placeholder and refuses a second rotation (29)", async () => {
    const emu = await start();
    const c = sdk(emu);
    const lambda = "arn:aws:lambda:us-east-1:123456789012:function:rot";
    const v1 = (await create(c, "s", "one")).versionId ?? "";
    await expectError(c.send(new RotateSecretCommand({ SecretId: "s" })), "InvalidRequestException");
    const token = tok();
    const out = await c.send(new RotateSecretCommand({ SecretId: "s", ClientRequestToken: token, RotationLambdaARN: lambda }));
    expect(out.VersionId).toBe(token);
    const described = await c.send(new DescribeSecretCommand({ SecretId: "s" }));
    expect(described.VersionIdsToStages).toEqual({ [v1]: ["AWSCURRENT"], [token]: ["AWSPENDING"] });
    expect(described.RotationEnabled).toBe(true);
    await expectError(c.send(new GetSecretValueCommand({ SecretId: "s", VersionId: token, VersionStage: "AWSPENDING" })), "ResourceNotFoundException");
    await expectError(c.send(new RotateSecretCommand({ SecretId: "s", ClientRequestToken: tok() })), "InvalidRequestException");

    // The four steps, as a rotation function runs them.
    expect((await c.send(new GetSecretValueCommand({ SecretId: "s", VersionStage: "AWSCURRENT" }))).SecretString).toBe("one");
    await put(c, "s", "rotated", ["AWSPENDING"], token);
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSCURRENT", MoveToVersionId: token, RemoveFromVersionId: v1 }));
    await c.send(new UpdateSecretVersionStageCommand({ SecretId: "s", VersionStage: "AWSPENDING", RemoveFromVersionId: token }));
    expect(await labels(c, "s")).toEqual({ [token]: ["AWSCURRENT"], [v1]: ["AWSPREVIOUS"] });
    await expectReadsAgree(c, "s", "rotated");
    expect(emu.inspect("s")?.versions).toHaveLength(2);

    // With AWSPENDING gone a new rotation may start.
    const next = await c.send(new RotateSecretCommand({ SecretId: "s", ClientRequestToken: tok() }));
    expect((await labels(c, "s"))[next.VersionId ?? ""]).toEqual(["AWSPENDING"]);
  });

  it("exposes every held value for leak scans", async () => {
    const emu = await start();
    const c = sdk(emu);
    await create(c, "a", "alpha-value");
    await put(c, "a", "beta-value", ["AWSPENDING"]);
    await c.send(new CreateSecretCommand({ Name: "b", SecretBinary: new TextEncoder().encode("gamma-bytes") }));
    expect(emu.allValues()).toEqual(expect.arrayContaining(["alpha-value", "beta-value", "gamma-bytes"]));
    expect(emu.calls.every((call) => !JSON.stringify(call).includes("alpha-value"))).toBe(true);
  });
});
