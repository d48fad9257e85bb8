/**
 * A wire-compatible AWS Secrets Manager emulator (awsJson1_1: `POST /` with
 * `X-Amz-Target: secretsmanager.<Operation>`) for driving the real `@aws-sdk/client-secrets-manager`
 * client in tests and in the standalone `npm run fake:aws`.
 *
 * Operations: CreateSecret, DescribeSecret, GetSecretValue, PutSecretValue, UpdateSecret,
 * UpdateSecretVersionStage, ListSecretVersionIds, DeleteSecret, RestoreSecret, TagResource,
 * RotateSecret. State is kept per region; the region is read from the SigV4 credential scope of
 * the `authorization` header (the signature itself is not checked).
 *
 * What it models as AWS documents it: staging-label moves (AWSCURRENT/AWSPREVIOUS follow each
 * other, one holder per label, unlabeled versions are deprecated and hidden), ClientRequestToken
 * idempotency, ARNs with a random 6-letter suffix, lookup by name / full ARN / partial ARN, the
 * version quota (more than `versionQuota` versions created within 24 h → LimitExceededException;
 * unlabeled versions older than 24 h are purged to make room), the shared write-rate quota of
 * PutSecretValue + UpdateSecret + UpdateSecretVersionStage (ThrottlingException "Rate exceeded"),
 * at most 20 staging labels per secret, and deletion scheduling / restore. Client errors are 400
 * with `{"__type","Message"}`; InternalServiceError is 500.
 *
 * Behaviour this emulator picks where AWS's answer is not established (not claimed to be AWS's):
 * - SecretString and SecretBinary together, or neither: InvalidRequestException "You must provide
 *   either SecretString or SecretBinary." / "…but not both."
 * - GetSecretValue with an unknown VersionId: ResourceNotFoundException "Secrets Manager can't find
 *   the specified secret value for VersionId: <id>"; VersionId and VersionStage naming different
 *   versions: InvalidRequestException "You provided a VersionStage that is not associated to the
 *   provided VersionId."
 * - A repeated PutSecretValue (same token, same value) does not re-apply VersionStages.
 * - When AWSCURRENT moves, other labels on the version it leaves stay there.
 * - UpdateSecretVersionStage: a RemoveFromVersionId that does not hold the label →
 *   InvalidParameterException; remove-only of a label the version lacks → InvalidParameterException
 *   "Version stage <L> not found in version <V>"; removing AWSCURRENT without moving it →
 *   InvalidParameterException; an unknown version id → InvalidParameterException "Not a valid
 *   version: <id>"; neither MoveTo nor RemoveFrom → success, no change; moving a label to the
 *   version that already holds it → success, no change (RemoveFromVersionId is then not checked).
 * - The 20-label limit and the version quota answer LimitExceededException with this emulator's
 *   own wording.
 * - A secret scheduled for deletion still answers DescribeSecret, ListSecretVersionIds,
 *   RestoreSecret and DeleteSecret (a second DeleteSecret with a window keeps the first date);
 *   every other operation answers InvalidRequestException "…marked for deletion.". It disappears
 *   when its DeletionDate passes on the emulator's clock. ForceDeleteWithoutRecovery removes it
 *   at once (AWS does so after a short delay).
 * - RotateSecret records the rotation and creates the valueless AWSPENDING version but invokes no
 *   Lambda: the caller performs the createSecret/setSecret/testSecret/finishSecret steps itself.
 * - Rate quotas other than the shared write quota are not enforced; the write quota is a sliding
 *   one-second window on the emulator's clock, and throttled calls do not count against it.
 * - TagResource: more than 50 tags → LimitExceededException; an `aws:` key → InvalidParameterException.
 * - An unknown `X-Amz-Target` (or a request that is not `POST /`) gets 400
 *   UnknownOperationException as JSON; a body that is not a JSON object gets 400
 *   SerializationException.
 */
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { HttpFake, type FakeReply, type FakeRequest, type Faults, type LoggedRequest } from "../http-fake.ts";

export interface AwsEmulatorOptions {
  /** TCP port on 127.0.0.1 (default 0: any free port). */
  port?: number;
  /** Clock in epoch milliseconds (default `Date.now`); drives timestamps, both quotas and deletion. */
  now?: () => number;
  /**
   * Shared quota of PutSecretValue + UpdateSecret + UpdateSecretVersionStage calls per second,
   * per region (default 50; `Infinity` disables it).
   */
  writesPerSecond?: number;
  /** Versions one secret may hold before unlabeled ones older than 24 h must go (default 100). */
  versionQuota?: number;
  /** 12-digit account id used in ARNs (default `123456789012`). */
  accountId?: string;
  /**
   * Error message wording. `"aws"` (default): the texts AWS has been seen to send. `"other"`:
   * every message worded otherwise, as AWS may word them any day (only `__type` is the API's
   * contract): a missing secret and a missing version both say "The requested resource was not
   * found.", a deleted secret says "You can’t perform this operation on the secret because it was
   * deleted." (curly apostrophe, as AWS has also answered), anything else gets a prefix. Error
   * types and statuses do not change.
   */
  messages?: "aws" | "other";
  /**
   * GetSecretValue naming neither VersionId nor VersionStage answers the AWSPREVIOUS version (a
   * stale default, as an implementation behind a cache may): AWS documents AWSCURRENT, and rekey
   * names it on every read of the current value.
   */
  staleDefault?: boolean;
}

export interface InspectedVersion {
  versionId: string;
  stages: string[];
  /** SecretString, or undefined for a binary or valueless version. */
  value: string | undefined;
  /** SecretBinary as base64, where the version holds binary data. */
  binary?: string;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface InspectedSecret {
  arn: string;
  name: string;
  /** Epoch milliseconds of the DeleteSecret call, while deletion is scheduled. */
  deletedAt?: number;
  tags: Record<string, string>;
  /** In creation order, deprecated (unlabeled) versions included. */
  versions: InspectedVersion[];
}

/** One handled call (no values: those never leave the emulator except in responses). */
export interface AwsCall {
  operation: string;
  region: string;
  status: number;
  errorType?: string;
  secretId?: string;
  clientRequestToken?: string;
  at: number;
}

export interface AwsEmulator {
  /** Endpoint for the SDK's `endpoint` option or AWS_ENDPOINT_URL_SECRETS_MANAGER. */
  url: string;
  close(): Promise<void>;
  /**
   * Fault injection; routes are `"POST <Operation>"`, e.g. `{ route: "PutSecretValue", kind: "429" }`
   * (429 answers ThrottlingException, 500 InternalServiceError). A string route matches as a
   * substring, so "UpdateSecret" also hits UpdateSecretVersionStage; use /^POST UpdateSecret$/.
   */
  faults: Faults;
  /** Every HTTP request, faults included; `route` is `"POST <Operation>"`. */
  requests: LoggedRequest[];
  /** Every call that reached the emulator's logic or an injected 429/500, with token and secret id. */
  calls: AwsCall[];
  /** Requests for one operation (faulted ones included), optionally with one status. */
  count(operation: string, status?: number): number;
  /** A snapshot of one secret (undefined where it does not exist). Default region us-east-1. */
  inspect(secretId: string, region?: string): InspectedSecret | undefined;
  /** Every secret value held in any region, SecretBinary decoded as UTF-8 too (for leak scans). */
  allValues(): string[];
  /**
   * Each time AWSCURRENT moved on one secret (by name or ARN): when (wall-clock epoch ms), to which
   * version, holding which value. Cut-over outage figures pair these with a provider's resets.
   */
  currentMoves(secretId: string, region?: string): { at: number; versionId: string; value: string | undefined }[];
}

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_REGION = "us-east-1";
const MAX_LABELS = 20;
const MAX_TAGS = 50;
const CURRENT = "AWSCURRENT";
const PREVIOUS = "AWSPREVIOUS";
const PENDING = "AWSPENDING";
const WRITE_OPS = new Set(["PutSecretValue", "UpdateSecret", "UpdateSecretVersionStage"]);

interface Version {
  id: string;
  stages: string[];
  string?: string;
  binary?: Buffer;
  createdAt: number;
  lastAccessedAt?: number;
}

interface Secret {
  arn: string;
  name: string;
  description?: string;
  kmsKeyId?: string;
  tags: Map<string, string>;
  createdAt: number;
  lastChangedAt: number;
  lastAccessedAt?: number;
  deletedAt?: number;
  deletionAt?: number;
  rotationEnabled?: boolean;
  rotationLambdaArn?: string;
  rotationRules?: unknown;
  lastRotatedAt?: number;
  /** Insertion order is creation order. */
  versions: Map<string, Version>;
  /** The CreateSecret token and response, for an idempotent repeat of the create. */
  createToken: string;
  createResponse: Record<string, unknown>;
}

interface RegionState {
  secrets: Secret[];
  /** Times of accepted write-quota calls within the last second. */
  writes: number[];
}

class AwsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const notFound = (): AwsError => new AwsError("ResourceNotFoundException", "Secrets Manager can't find the specified secret.");
const markedForDeletion = (): AwsError =>
  new AwsError("InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.");

// Model constraints (lengths per the service's API model); unknown members pass through ignored.
const SecretId = z.string().min(1).max(2048);
const Token = z.string().min(32).max(64);
const VersionIdShape = z.string().min(32).max(64);
const Label = z.string().min(1).max(256);
const SecretStringShape = z.string().max(65536);
const SecretBinaryShape = z.string().max(90_000);
const TagShape = z.object({ Key: z.string().min(1).max(128), Value: z.string().max(256) });
const Tags = z.array(TagShape);

const schemas = {
  CreateSecret: z.object({
    Name: z.string().min(1).max(512),
    ClientRequestToken: Token.optional(),
    Description: z.string().max(2048).optional(),
    KmsKeyId: z.string().max(2048).optional(),
    SecretString: SecretStringShape.optional(),
    SecretBinary: SecretBinaryShape.optional(),
    Tags: Tags.optional(),
  }),
  DescribeSecret: z.object({ SecretId }),
  GetSecretValue: z.object({ SecretId, VersionId: VersionIdShape.optional(), VersionStage: Label.optional() }),
  PutSecretValue: z.object({
    SecretId,
    ClientRequestToken: Token.optional(),
    SecretString: SecretStringShape.optional(),
    SecretBinary: SecretBinaryShape.optional(),
    VersionStages: z.array(Label).min(1).max(20).optional(),
  }),
  UpdateSecret: z.object({
    SecretId,
    ClientRequestToken: Token.optional(),
    Description: z.string().max(2048).optional(),
    KmsKeyId: z.string().max(2048).optional(),
    SecretString: SecretStringShape.optional(),
    SecretBinary: SecretBinaryShape.optional(),
  }),
  UpdateSecretVersionStage: z.object({
    SecretId,
    VersionStage: Label,
    MoveToVersionId: VersionIdShape.optional(),
    RemoveFromVersionId: VersionIdShape.optional(),
  }),
  ListSecretVersionIds: z.object({
    SecretId,
    MaxResults: z.number().int().min(1).max(100).optional(),
    NextToken: z.string().min(1).max(4096).optional(),
    IncludeDeprecated: z.boolean().optional(),
  }),
  DeleteSecret: z.object({
    SecretId,
    RecoveryWindowInDays: z.number().int().optional(),
    ForceDeleteWithoutRecovery: z.boolean().optional(),
  }),
  RestoreSecret: z.object({ SecretId }),
  TagResource: z.object({ SecretId, Tags }),
  RotateSecret: z.object({
    SecretId,
    ClientRequestToken: Token.optional(),
    RotationLambdaARN: z.string().max(2048).optional(),
    RotationRules: z
      .object({
        AutomaticallyAfterDays: z.number().int().min(1).max(1000).optional(),
        Duration: z.string().optional(),
        ScheduleExpression: z.string().optional(),
      })
      .optional(),
    RotateImmediately: z.boolean().optional(),
  }),
} as const;

type Operation = keyof typeof schemas;
type Input<O extends Operation> = z.infer<(typeof schemas)[O]>;

function isOperation(op: string): op is Operation {
  return Object.hasOwn(schemas, op);
}

/** AWS-style validation text: member names in lowerCamelCase, never the offending value. */
function validationError(error: z.ZodError): AwsError {
  const parts = error.issues.map((issue) => {
    const member = issue.path.map((p) => (typeof p === "string" ? p.charAt(0).toLowerCase() + p.slice(1) : String(p))).join(".");
    let constraint: string;
    if (issue.code === "too_small") constraint = `Member must have length greater than or equal to ${String(issue.minimum)}`;
    else if (issue.code === "too_big") constraint = `Member must have length less than or equal to ${String(issue.maximum)}`;
    else if (issue.code === "invalid_type" && /received undefined/.test(issue.message)) constraint = "Member must not be null";
    else constraint = `Member is invalid (${issue.code})`;
    return `Value at '${member}' failed to satisfy constraint: ${constraint}`;
  });
  const n = parts.length;
  return new AwsError("ValidationException", `${n} validation error${n === 1 ? "" : "s"} detected: ${parts.join("; ")}`);
}

const NAME_PATTERN = /^[A-Za-z0-9/_+=.@-]+$/;
const SUFFIX_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

function randomSuffix(): string {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  let out = "";
  for (const b of bytes) out += SUFFIX_CHARS[b % SUFFIX_CHARS.length];
  return out;
}

/** Region from `Credential=<AKID>/<date>/<region>/secretsmanager/aws4_request`. */
function regionOf(req: FakeRequest): string {
  const auth = req.headers.authorization;
  const value = Array.isArray(auth) ? auth[0] : auth;
  const m = value ? /Credential=[^/,\s]+\/\d{8}\/([^/,\s]+)\//.exec(value) : null;
  return m?.[1] ?? DEFAULT_REGION;
}

function operationOf(req: FakeRequest): string {
  const target = req.headers["x-amz-target"];
  const value = Array.isArray(target) ? target[0] : target;
  if (!value) return "";
  return value.startsWith("secretsmanager.") ? value.slice("secretsmanager.".length) : value;
}

const seconds = (ms: number): number => ms / 1000;

export async function startAwsEmulator(opts: AwsEmulatorOptions = {}): Promise<AwsEmulator> {
  const now = opts.now ?? Date.now;
  const writesPerSecond = opts.writesPerSecond ?? 50;
  const versionQuota = opts.versionQuota ?? 100;
  const accountId = opts.accountId ?? "123456789012";
  const regions = new Map<string, RegionState>();
  const calls: AwsCall[] = [];
  const moves = new Map<string, { at: number; versionId: string; value: string | undefined }[]>();

  function state(region: string): RegionState {
    let s = regions.get(region);
    if (!s) {
      s = { secrets: [], writes: [] };
      regions.set(region, s);
    }
    return s;
  }

  function purgeExpired(rs: RegionState): void {
    const t = now();
    rs.secrets = rs.secrets.filter((s) => s.deletionAt === undefined || s.deletionAt > t);
  }

  /** Name, full ARN or partial ARN (the ARN without its `-XXXXXX` suffix). */
  function find(rs: RegionState, secretId: string): Secret | undefined {
    purgeExpired(rs);
    if (secretId.startsWith("arn:")) {
      return rs.secrets.find((s) => s.arn === secretId) ?? rs.secrets.find((s) => s.arn.slice(0, -7) === secretId);
    }
    return rs.secrets.find((s) => s.name === secretId);
  }

  function lookup(rs: RegionState, secretId: string): Secret {
    const s = find(rs, secretId);
    if (!s) throw notFound();
    return s;
  }

  function live(rs: RegionState, secretId: string): Secret {
    const s = lookup(rs, secretId);
    if (s.deletedAt !== undefined) throw markedForDeletion();
    return s;
  }

  function holder(s: Secret, label: string): Version | undefined {
    for (const v of s.versions.values()) if (v.stages.includes(label)) return v;
    return undefined;
  }

  function attachedLabels(s: Secret): Set<string> {
    const all = new Set<string>();
    for (const v of s.versions.values()) for (const l of v.stages) all.add(l);
    return all;
  }

  function checkLabelLimit(s: Secret, adding: Iterable<string>): void {
    const all = attachedLabels(s);
    for (const l of adding) all.add(l);
    if (all.size > MAX_LABELS) {
      throw new AwsError("LimitExceededException", `A secret can have at most ${MAX_LABELS} staging labels attached across its versions.`);
    }
  }

  function detach(v: Version, label: string): void {
    v.stages = v.stages.filter((l) => l !== label);
  }

  function attach(v: Version, label: string): void {
    if (!v.stages.includes(label)) v.stages.push(label);
  }

  /** Put `label` on `target`, taking it from its holder; AWSPREVIOUS follows a moved AWSCURRENT. */
  function moveLabel(s: Secret, label: string, target: Version): void {
    const from = holder(s, label);
    if (from === target) return;
    if (from) detach(from, label);
    attach(target, label);
    if (label === CURRENT) {
      const log = moves.get(s.arn) ?? [];
      log.push({ at: Date.now(), versionId: target.id, value: target.string });
      moves.set(s.arn, log);
    }
    if (label === CURRENT && from) {
      const prev = holder(s, PREVIOUS);
      if (prev) detach(prev, PREVIOUS);
      attach(from, PREVIOUS);
    }
  }

  /** Labels a new (or newly filled) version gets from PutSecretValue / UpdateSecret. */
  function applyStages(s: Secret, target: Version, requested: string[] | undefined): void {
    const stages = [...new Set(requested ?? [CURRENT])];
    // The first version of a secret is always current, whatever was asked for.
    if (!holder(s, CURRENT) && !stages.includes(CURRENT)) stages.unshift(CURRENT);
    // AWSCURRENT first, so an explicitly requested AWSPREVIOUS wins over the automatic one.
    stages.sort((a, b) => (a === CURRENT ? -1 : b === CURRENT ? 1 : 0));
    for (const l of stages) moveLabel(s, l, target);
  }

  function labelsAdded(s: Secret, requested: string[] | undefined): string[] {
    const stages = requested ?? [CURRENT];
    const added = [...stages];
    if (!holder(s, CURRENT)) added.push(CURRENT);
    if (added.includes(CURRENT) && holder(s, CURRENT)) added.push(PREVIOUS);
    return added;
  }

  /** Version quota: purge old unlabeled versions when full, then refuse if still full. */
  function reserveVersion(s: Secret): void {
    const cutoff = now() - DAY_MS;
    if (s.versions.size >= versionQuota) {
      for (const v of [...s.versions.values()]) {
        if (s.versions.size < versionQuota) break;
        if (v.stages.length === 0 && v.createdAt <= cutoff) s.versions.delete(v.id);
      }
    }
    if (s.versions.size >= versionQuota) {
      throw new AwsError(
        "LimitExceededException",
        `You have exceeded the maximum number of versions (${versionQuota}) for this secret: unlabeled versions are removed only after 24 hours.`,
      );
    }
  }

  function requireToken(token: string | undefined): string {
    if (token === undefined) {
      throw new AwsError("InvalidRequestException", "You must provide a ClientRequestToken value. We recommend a UUID-type value.");
    }
    return token;
  }

  function decodeBinary(b64: string | undefined): Buffer | undefined {
    if (b64 === undefined) return undefined;
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) {
      throw new AwsError("SerializationException", "SecretBinary is not valid base64.");
    }
    const buf = Buffer.from(b64, "base64");
    if (buf.length > 65536) {
      throw new AwsError("ValidationException", "1 validation error detected: Value at 'secretBinary' failed to satisfy constraint: Member must have length less than or equal to 65536");
    }
    return buf;
  }

  function oneValue(input: { SecretString?: string | undefined; SecretBinary?: string | undefined }, required: boolean): { string?: string; binary?: Buffer } {
    if (input.SecretString !== undefined && input.SecretBinary !== undefined) {
      throw new AwsError("InvalidRequestException", "You must provide either SecretString or SecretBinary, but not both.");
    }
    if (required && input.SecretString === undefined && input.SecretBinary === undefined) {
      throw new AwsError("InvalidRequestException", "You must provide either SecretString or SecretBinary.");
    }
    const binary = decodeBinary(input.SecretBinary);
    return input.SecretString !== undefined ? { string: input.SecretString } : binary ? { binary } : {};
  }

  function sameValue(v: Version, value: { string?: string; binary?: Buffer }): boolean {
    const sameString = v.string === value.string;
    const sameBinary = v.binary === undefined || value.binary === undefined ? v.binary === value.binary : v.binary.equals(value.binary);
    return sameString && sameBinary;
  }

  function hasValue(v: Version): boolean {
    return v.string !== undefined || v.binary !== undefined;
  }

  function tokenInUse(token: string, s: Secret): AwsError {
    return new AwsError("ResourceExistsException", `You can't use ClientRequestToken ${token} because that value is already in use for a version of secret ${s.arn}.`);
  }

  function newVersion(s: Secret, id: string, value: { string?: string; binary?: Buffer }): Version {
    const v: Version = { id, stages: [], createdAt: now(), ...value };
    s.versions.set(id, v);
    s.lastChangedAt = now();
    return v;
  }

  function checkWriteQuota(rs: RegionState): void {
    if (!Number.isFinite(writesPerSecond)) return;
    const t = now();
    rs.writes = rs.writes.filter((w) => w > t - 1000);
    if (rs.writes.length >= writesPerSecond) throw new AwsError("ThrottlingException", "Rate exceeded");
    rs.writes.push(t);
  }

  function applyTags(s: Secret, tags: { Key: string; Value: string }[]): void {
    for (const t of tags) {
      if (t.Key.toLowerCase().startsWith("aws:")) throw new AwsError("InvalidParameterException", "Tag keys starting with aws: are reserved.");
    }
    const merged = new Map(s.tags);
    for (const t of tags) merged.set(t.Key, t.Value);
    if (merged.size > MAX_TAGS) throw new AwsError("LimitExceededException", `A secret can have at most ${MAX_TAGS} tags.`);
    s.tags = merged;
  }

  const handlers: { [O in Operation]: (rs: RegionState, input: Input<O>, region: string) => Record<string, unknown> } = {
    CreateSecret(rs, input, region) {
      const token = requireToken(input.ClientRequestToken);
      if (!NAME_PATTERN.test(input.Name)) {
        throw new AwsError("ValidationException", "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!");
      }
      const value = oneValue(input, false);
      const existing = find(rs, input.Name);
      if (existing) {
        if (existing.deletedAt !== undefined) {
          throw new AwsError("InvalidRequestException", "You can't create this secret because a secret with this name is already scheduled for deletion.");
        }
        const v = existing.versions.get(token);
        if (v) {
          if (sameValue(v, value)) return existing.createResponse;
          throw tokenInUse(token, existing);
        }
        if (existing.createToken === token && existing.versions.size === 0 && value.string === undefined && value.binary === undefined) {
          return existing.createResponse;
        }
        throw new AwsError("ResourceExistsException", `The operation failed because the secret ${input.Name} already exists.`);
      }
      const t = now();
      const s: Secret = {
        arn: `arn:aws:secretsmanager:${region}:${accountId}:secret:${input.Name}-${randomSuffix()}`,
        name: input.Name,
        tags: new Map(),
        createdAt: t,
        lastChangedAt: t,
        versions: new Map(),
        createToken: token,
        createResponse: {},
      };
      if (input.Description !== undefined) s.description = input.Description;
      if (input.KmsKeyId !== undefined && input.KmsKeyId !== "alias/aws/secretsmanager") s.kmsKeyId = input.KmsKeyId;
      if (input.Tags) applyTags(s, input.Tags);
      s.createResponse = { ARN: s.arn, Name: s.name };
      if (value.string !== undefined || value.binary !== undefined) {
        const v = newVersion(s, token, value);
        v.stages = [CURRENT];
        s.createResponse.VersionId = token;
      }
      rs.secrets.push(s);
      return s.createResponse;
    },

    DescribeSecret(rs, input) {
      const s = lookup(rs, input.SecretId);
      const stages: Record<string, string[]> = {};
      for (const v of s.versions.values()) if (v.stages.length > 0) stages[v.id] = [...v.stages];
      const out: Record<string, unknown> = { ARN: s.arn, Name: s.name };
      if (s.description !== undefined) out.Description = s.description;
      if (s.kmsKeyId !== undefined) out.KmsKeyId = s.kmsKeyId;
      if (s.rotationEnabled !== undefined) out.RotationEnabled = s.rotationEnabled;
      if (s.rotationLambdaArn !== undefined) out.RotationLambdaARN = s.rotationLambdaArn;
      if (s.rotationRules !== undefined) out.RotationRules = s.rotationRules;
      if (s.lastRotatedAt !== undefined) out.LastRotatedDate = seconds(s.lastRotatedAt);
      out.LastChangedDate = seconds(s.lastChangedAt);
      if (s.lastAccessedAt !== undefined) out.LastAccessedDate = seconds(s.lastAccessedAt);
      if (s.deletedAt !== undefined) out.DeletedDate = seconds(s.deletedAt);
      if (s.tags.size > 0) out.Tags = [...s.tags].map(([Key, Value]) => ({ Key, Value }));
      if (Object.keys(stages).length > 0) out.VersionIdsToStages = stages;
      out.CreatedDate = seconds(s.createdAt);
      return out;
    },

    GetSecretValue(rs, input) {
      const s = live(rs, input.SecretId);
      let v: Version | undefined;
      if (input.VersionId !== undefined) {
        v = s.versions.get(input.VersionId);
        if (!v) throw new AwsError("ResourceNotFoundException", `Secrets Manager can't find the specified secret value for VersionId: ${input.VersionId}`);
        if (input.VersionStage !== undefined && !v.stages.includes(input.VersionStage)) {
          throw new AwsError("InvalidRequestException", "You provided a VersionStage that is not associated to the provided VersionId.");
        }
      } else {
        const label = input.VersionStage ?? CURRENT;
        v = opts.staleDefault && input.VersionStage === undefined ? (holder(s, PREVIOUS) ?? holder(s, label)) : holder(s, label);
        if (!v) throw new AwsError("ResourceNotFoundException", `Secrets Manager can't find the specified secret value for staging label: ${label}`);
      }
      if (!hasValue(v)) {
        const what = input.VersionId !== undefined ? `VersionId: ${v.id}` : `staging label: ${input.VersionStage ?? CURRENT}`;
        throw new AwsError("ResourceNotFoundException", `Secrets Manager can't find the specified secret value for ${what}`);
      }
      // LastAccessedDate is day-granular.
      const day = Math.floor(now() / DAY_MS) * DAY_MS;
      s.lastAccessedAt = day;
      v.lastAccessedAt = day;
      const out: Record<string, unknown> = { ARN: s.arn, Name: s.name, VersionId: v.id };
      if (v.string !== undefined) out.SecretString = v.string;
      else if (v.binary !== undefined) out.SecretBinary = v.binary.toString("base64");
      out.VersionStages = [...v.stages];
      out.CreatedDate = seconds(v.createdAt);
      return out;
    },

    PutSecretValue(rs, input) {
      const token = requireToken(input.ClientRequestToken);
      const s = live(rs, input.SecretId);
      const value = oneValue(input, true);
      const existing = s.versions.get(token);
      if (existing && hasValue(existing)) {
        if (!sameValue(existing, value)) throw tokenInUse(token, s);
        return { ARN: s.arn, Name: s.name, VersionId: existing.id, VersionStages: [...existing.stages] };
      }
      checkLabelLimit(s, labelsAdded(s, input.VersionStages));
      let v: Version;
      if (existing) {
        // A valueless placeholder (RotateSecret's AWSPENDING) is filled in place.
        Object.assign(existing, value);
        s.lastChangedAt = now();
        v = existing;
      } else {
        reserveVersion(s);
        v = newVersion(s, token, value);
      }
      applyStages(s, v, input.VersionStages);
      return { ARN: s.arn, Name: s.name, VersionId: v.id, VersionStages: [...v.stages] };
    },

    UpdateSecret(rs, input) {
      const s = live(rs, input.SecretId);
      const value = oneValue(input, false);
      if (input.Description !== undefined) s.description = input.Description;
      if (input.KmsKeyId !== undefined) s.kmsKeyId = input.KmsKeyId === "alias/aws/secretsmanager" ? undefined : input.KmsKeyId;
      s.lastChangedAt = now();
      if (value.string === undefined && value.binary === undefined) return { ARN: s.arn, Name: s.name };
      const token = requireToken(input.ClientRequestToken);
      const existing = s.versions.get(token);
      if (existing) {
        if (!sameValue(existing, value)) throw tokenInUse(token, s);
        return { ARN: s.arn, Name: s.name, VersionId: existing.id };
      }
      checkLabelLimit(s, labelsAdded(s, undefined));
      reserveVersion(s);
      const v = newVersion(s, token, value);
      applyStages(s, v, undefined);
      return { ARN: s.arn, Name: s.name, VersionId: v.id };
    },

    UpdateSecretVersionStage(rs, input) {
      const s = live(rs, input.SecretId);
      const label = input.VersionStage;
      const versionOf = (id: string): Version => {
        const v = s.versions.get(id);
        if (!v) throw new AwsError("InvalidParameterException", `Not a valid version: ${id}`);
        return v;
      };
      const moveTo = input.MoveToVersionId === undefined ? undefined : versionOf(input.MoveToVersionId);
      const removeFrom = input.RemoveFromVersionId === undefined ? undefined : versionOf(input.RemoveFromVersionId);
      const done = { ARN: s.arn, Name: s.name };
      if (!moveTo && !removeFrom) return done;
      const current = holder(s, label);
      if (moveTo) {
        if (current === moveTo) return done;
        if (current && !removeFrom) {
          throw new AwsError(
            "InvalidParameterException",
            `The parameter RemoveFromVersionId can't be empty. Staging label ${label} is currently attached to version ${current.id}, so you must explicitly reference that version in RemoveFromVersionId.`,
          );
        }
        if (removeFrom && removeFrom !== current) {
          throw new AwsError(
            "InvalidParameterException",
            `When you move staging label ${label}, if you specify RemoveFromVersionId, it must be set to the version that currently has the staging label ${label}.`,
          );
        }
        const adding = [label];
        if (label === CURRENT && current) adding.push(PREVIOUS);
        checkLabelLimit(s, adding);
        moveLabel(s, label, moveTo);
      } else if (removeFrom) {
        if (!removeFrom.stages.includes(label)) {
          throw new AwsError("InvalidParameterException", `Version stage ${label} not found in version ${removeFrom.id}`);
        }
        if (label === CURRENT) {
          throw new AwsError("InvalidParameterException", "You can't remove the staging label AWSCURRENT without moving it to another version: a secret always has a current version.");
        }
        detach(removeFrom, label);
      }
      s.lastChangedAt = now();
      return done;
    },

    ListSecretVersionIds(rs, input) {
      const s = lookup(rs, input.SecretId);
      const all = [...s.versions.values()].filter((v) => input.IncludeDeprecated === true || v.stages.length > 0);
      let offset = 0;
      if (input.NextToken !== undefined) {
        const decoded = decodePageToken(input.NextToken);
        if (!decoded || decoded.arn !== s.arn || decoded.offset > all.length) {
          throw new AwsError("InvalidNextTokenException", "The NextToken value is invalid.");
        }
        offset = decoded.offset;
      }
      const size = input.MaxResults ?? 100;
      const page = all.slice(offset, offset + size);
      const out: Record<string, unknown> = {
        Versions: page.map((v) => {
          const item: Record<string, unknown> = { VersionId: v.id };
          if (v.stages.length > 0) item.VersionStages = [...v.stages];
          if (v.lastAccessedAt !== undefined) item.LastAccessedDate = seconds(v.lastAccessedAt);
          item.CreatedDate = seconds(v.createdAt);
          return item;
        }),
        ARN: s.arn,
        Name: s.name,
      };
      if (offset + size < all.length) out.NextToken = encodePageToken(s.arn, offset + size);
      return out;
    },

    DeleteSecret(rs, input) {
      const s = lookup(rs, input.SecretId);
      if (input.ForceDeleteWithoutRecovery === true && input.RecoveryWindowInDays !== undefined) {
        throw new AwsError("InvalidParameterException", "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.");
      }
      const t = now();
      if (input.ForceDeleteWithoutRecovery === true) {
        rs.secrets = rs.secrets.filter((x) => x !== s);
        return { ARN: s.arn, Name: s.name, DeletionDate: seconds(t) };
      }
      const days = input.RecoveryWindowInDays ?? 30;
      if (days < 7 || days > 30) {
        throw new AwsError("InvalidParameterException", "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).");
      }
      if (s.deletedAt === undefined || s.deletionAt === undefined) {
        s.deletedAt = t;
        s.deletionAt = t + days * DAY_MS;
      }
      return { ARN: s.arn, Name: s.name, DeletionDate: seconds(s.deletionAt) };
    },

    RestoreSecret(rs, input) {
      const s = lookup(rs, input.SecretId);
      delete s.deletedAt;
      delete s.deletionAt;
      return { ARN: s.arn, Name: s.name };
    },

    TagResource(rs, input) {
      const s = live(rs, input.SecretId);
      applyTags(s, input.Tags);
      return {};
    },

    RotateSecret(rs, input) {
      const token = requireToken(input.ClientRequestToken);
      const s = live(rs, input.SecretId);
      const lambda = input.RotationLambdaARN ?? s.rotationLambdaArn;
      if (lambda === undefined) {
        throw new AwsError("InvalidRequestException", "No Lambda rotation function ARN is associated with this secret.");
      }
      const existing = s.versions.get(token);
      if (existing) {
        if (existing.stages.includes(PENDING) || existing.stages.includes(CURRENT)) return { ARN: s.arn, Name: s.name, VersionId: token };
        throw tokenInUse(token, s);
      }
      const pending = holder(s, PENDING);
      if (pending && !pending.stages.includes(CURRENT)) {
        throw new AwsError("InvalidRequestException", "A previous rotation isn't complete. That rotation will be reattempted.");
      }
      checkLabelLimit(s, [PENDING]);
      reserveVersion(s);
      s.rotationEnabled = true;
      s.rotationLambdaArn = lambda;
      if (input.RotationRules !== undefined) s.rotationRules = input.RotationRules;
      const v = newVersion(s, token, {});
      moveLabel(s, PENDING, v);
      s.lastRotatedAt = now();
      return { ARN: s.arn, Name: s.name, VersionId: token };
    },
  };

  function errorReply(err: AwsError): FakeReply {
    return {
      status: err.status,
      headers: { "content-type": "application/x-amz-json-1.1", "x-amzn-RequestId": randomUUID() },
      body: { __type: err.type, Message: err.message },
    };
  }

  function record(req: FakeRequest, status: number, errorType?: string): void {
    const body = req.json && typeof req.json === "object" ? (req.json as Record<string, unknown>) : {};
    const call: AwsCall = { operation: operationOf(req), region: regionOf(req), status, at: now() };
    if (errorType) call.errorType = errorType;
    if (typeof body.SecretId === "string") call.secretId = body.SecretId;
    else if (typeof body.Name === "string") call.secretId = body.Name;
    if (typeof body.ClientRequestToken === "string") call.clientRequestToken = body.ClientRequestToken;
    calls.push(call);
  }

  function dispatch(req: FakeRequest): FakeReply {
    const op = operationOf(req);
    if (req.method !== "POST" || req.path !== "/" || !isOperation(op)) {
      throw new AwsError("UnknownOperationException", op ? `Unknown operation ${op}` : "Missing X-Amz-Target header");
    }
    if (!req.json || typeof req.json !== "object" || Array.isArray(req.json)) {
      throw new AwsError("SerializationException", "The request body must be a JSON object.");
    }
    const region = regionOf(req);
    const rs = state(region);
    if (WRITE_OPS.has(op)) checkWriteQuota(rs);
    const parsed = schemas[op].safeParse(req.json);
    if (!parsed.success) throw validationError(parsed.error);
    const handler = handlers[op] as (rs: RegionState, input: unknown, region: string) => Record<string, unknown>;
    const body = handler(rs, parsed.data, region);
    return {
      status: 200,
      headers: { "content-type": "application/x-amz-json-1.1", "x-amzn-RequestId": randomUUID() },
      body,
    };
  }

  /** The same error, worded otherwise (opts.messages "other"). */
  function reworded(err: AwsError): AwsError {
    if (opts.messages !== "other") return err;
    let text = `Request refused: ${err.message.replace(/'/g, "\u2019")}`;
    if (err.type === "ResourceNotFoundException") text = "The requested resource was not found.";
    else if (err.type === "InvalidRequestException" && /marked for deletion/.test(err.message)) text = "You can\u2019t perform this operation on the secret because it was deleted.";
    return new AwsError(err.type, text, err.status);
  }

  function handle(req: FakeRequest): FakeReply {
    let reply: FakeReply;
    try {
      reply = dispatch(req);
    } catch (err) {
      reply = errorReply(reworded(err instanceof AwsError ? err : new AwsError("InternalServiceError", "An error occurred on the server side.", 500)));
    }
    const type = (reply.body as { __type?: string }).__type;
    record(req, reply.status, type);
    return reply;
  }

  const fake = new HttpFake(handle, {
    port: opts.port,
    routeKey: (req) => `POST ${operationOf(req) || "(no target)"}`,
    rateLimited: (req) => {
      const reply = errorReply(new AwsError("ThrottlingException", "Rate exceeded"));
      record(req, reply.status, "ThrottlingException");
      return reply;
    },
    serverError: (req) => {
      const reply = errorReply(new AwsError("InternalServiceError", "An error occurred on the server side.", 500));
      record(req, reply.status, "InternalServiceError");
      return reply;
    },
  });
  await fake.start();

  function snapshot(s: Secret): InspectedSecret {
    const out: InspectedSecret = {
      arn: s.arn,
      name: s.name,
      tags: Object.fromEntries(s.tags),
      versions: [...s.versions.values()].map((v) => {
        const iv: InspectedVersion = { versionId: v.id, stages: [...v.stages], value: v.string, createdAt: v.createdAt };
        if (v.binary) iv.binary = v.binary.toString("base64");
        return iv;
      }),
    };
    if (s.deletedAt !== undefined) out.deletedAt = s.deletedAt;
    return out;
  }

  return {
    url: fake.url,
    close: () => fake.close(),
    faults: fake.faults,
    requests: fake.requests,
    calls,
    count: (operation, status) => fake.count(new RegExp(`^POST ${operation}$`), status),
    inspect(secretId, region = DEFAULT_REGION) {
      const s = find(state(region), secretId);
      return s ? snapshot(s) : undefined;
    },
    currentMoves(secretId, region = DEFAULT_REGION) {
      const s = find(state(region), secretId);
      return s ? [...(moves.get(s.arn) ?? [])] : [];
    },
    allValues() {
      const out: string[] = [];
      for (const rs of regions.values()) {
        for (const s of rs.secrets) {
          for (const v of s.versions.values()) {
            if (v.string !== undefined) out.push(v.string);
            if (v.binary !== undefined) out.push(v.binary.toString("utf8"), v.binary.toString("base64"));
          }
        }
      }
      return out;
    },
  };
}

function encodePageToken(arn: string, offset: number): string {
  return Buffer.from(JSON.stringify({ arn, offset })).toString("base64url");
}

function decodePageToken(token: string): { arn: string; offset: number } | undefined {
  try {
    const parsed = z
      .object({ arn: z.string(), offset: z.number().int().min(0) })
      .safeParse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
