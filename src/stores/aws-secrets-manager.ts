/**
 * SecretStore on AWS Secrets Manager through the official SDK. A rotation's id is the
 * ClientRequestToken of the version it writes, so a retried write is a no-op and the version is
 * found again after a crash. Labels follow the AWS rotation pattern: the new value is written
 * as AWSPENDING, AWSCURRENT is moved to it naming the old holder (AWSPREVIOUS follows), then
 * AWSPENDING is dropped.
 *
 * Credentials come from the SDK's standard chain; the endpoint from the SDK's own
 * AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL variables (the emulator and LocalStack-style
 * set-ups use them). Errors become RateLimitedError / TransientError / PermanentError and never
 * carry a secret value.
 */
import { randomUUID } from "node:crypto";
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  UpdateSecretVersionStageCommand,
  type GetSecretValueCommandOutput,
} from "@aws-sdk/client-secrets-manager";
import { z } from "zod";
import { ConfigError, PermanentError, RateLimitedError, SecretQuotaError, TransientError } from "../errors.ts";
import { AWSCURRENT, AWSPENDING, AWSPREVIOUS, type SecretRef, type SecretStore, type StoredVersion, type VersionInfo } from "./types.ts";

export interface AwsSecretsManagerStoreOptions {
  /** Region for refs that name none (default: AWS_REGION, then AWS_DEFAULT_REGION). */
  region?: string;
  /** Builds the client for one region (default: an SDK client with the standard credential chain). */
  clientFor?: (region: string) => SecretsManagerClient;
  /** SDK attempts per call, first one included (default 3, the SDK's standard retry mode). */
  maxAttempts?: number;
  /**
   * Budget of one HTTP request in ms (default 15 000). The SDK has none of its own (only a
   * 5-minute idle-socket timeout), so without it one unanswered call holds a worker slot for minutes.
   */
  requestTimeoutMs?: number;
  /** Clock in epoch milliseconds, for RateLimitedError.retryAt (default Date.now). */
  now?: () => number;
}

/** Wait after a ThrottlingException: the write quota is per second. */
const THROTTLE_WAIT_MS = 1_000;
/** Wait after LimitExceededException: versions only age out of the 24 h window slowly. */
const VERSION_QUOTA_WAIT_MS = 60 * 60 * 1_000;
/** ListSecretVersionIds page size (the API's maximum). */
const PAGE_SIZE = 100;
/** Guard against a NextToken that never ends (100 pages × 100 versions is far past any real secret). */
const MAX_PAGES = 10_000;

// Service responses are checked at the boundary like any other input.
const DescribeShape = z.object({ VersionIdsToStages: z.record(z.string(), z.array(z.string())).optional(), DeletedDate: z.date().optional() });
const ListShape = z.object({
  Versions: z
    .array(z.object({ VersionId: z.string(), VersionStages: z.array(z.string()).optional(), CreatedDate: z.date().optional() }))
    .optional(),
  NextToken: z.string().optional(),
});
const ValueShape = z.object({
  VersionId: z.string(),
  SecretString: z.string().optional(),
  SecretBinary: z.instanceof(Uint8Array).optional(),
  VersionStages: z.array(z.string()).optional(),
});

/** A PermanentError that keeps the service's error name, for the few cases the store handles itself. */
class AwsServiceError extends PermanentError {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

function isAwsError(err: unknown, code: string): err is AwsServiceError {
  return err instanceof AwsServiceError && err.code === code;
}

interface AwsErrorLike {
  name?: string;
  message?: string;
  $fault?: string;
  $metadata?: { httpStatusCode?: number; requestId?: string };
}

export class AwsSecretsManagerStore implements SecretStore {
  private readonly clients = new Map<string, SecretsManagerClient>();
  private readonly now: () => number;

  constructor(private readonly opts: AwsSecretsManagerStoreOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  async getCurrent(ref: SecretRef, signal?: AbortSignal): Promise<StoredVersion | undefined> {
    // Named, never left to a default: an implementation whose default is stale stalled rotations.
    const out = await this.readValue(ref, { VersionStage: AWSCURRENT }, signal);
    return out ? this.toStored(ref, out) : undefined;
  }

  async getVersion(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<StoredVersion | undefined> {
    const out = await this.readValue(ref, { VersionId: versionId }, signal);
    return out ? this.toStored(ref, out) : undefined;
  }

  /**
   * The credential of the version holding a staging label (`AWSPREVIOUS` for consumers that accept
   * the old value too), or undefined where no version holds it. Needs only GetSecretValue.
   */
  async getStage(ref: SecretRef, stage: string, signal?: AbortSignal): Promise<StoredVersion | undefined> {
    const out = await this.readValue(ref, { VersionStage: stage }, signal);
    return out ? this.toStored(ref, out) : undefined;
  }

  async stages(ref: SecretRef, signal?: AbortSignal): Promise<Record<string, string[]>> {
    return (await this.describe(ref, signal)).VersionIdsToStages ?? {};
  }

  private async describe(ref: SecretRef, signal?: AbortSignal): Promise<z.infer<typeof DescribeShape>> {
    return DescribeShape.parse(await this.call(ref, "DescribeSecret", signal, (c, s) => c.send(new DescribeSecretCommand({ SecretId: ref.secretId }), s)));
  }

  async probe(ref: SecretRef, signal?: AbortSignal): Promise<void> {
    const region = this.regionOf(ref);
    try {
      await this.client(region).send(new DescribeSecretCommand({ SecretId: ref.secretId }), signal ? { abortSignal: signal } : {});
    } catch (err) {
      // The service answered and accepted the credentials; the missing secret is the rotation's to report.
      if ((err as AwsErrorLike).name === "ResourceNotFoundException") return;
      if (signal?.aborted) throw new TransientError(`DescribeSecret on secret ${ref.secretId} in ${region} got no answer in time`);
      throw this.mapError(err, ref, region, "DescribeSecret", []);
    }
  }

  async listVersions(ref: SecretRef, opts: { includeDeprecated?: boolean; signal?: AbortSignal } = {}): Promise<VersionInfo[]> {
    const versions: VersionInfo[] = [];
    let nextToken: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const out = ListShape.parse(
        await this.call(ref, "ListSecretVersionIds", opts.signal, (c, s) =>
          c.send(
            new ListSecretVersionIdsCommand({
              SecretId: ref.secretId,
              IncludeDeprecated: opts.includeDeprecated ?? false,
              MaxResults: PAGE_SIZE,
              NextToken: nextToken,
            }),
            s,
          ),
        ),
      );
      for (const v of out.Versions ?? []) {
        const info: VersionInfo = { versionId: v.VersionId, stages: v.VersionStages ?? [] };
        if (v.CreatedDate) info.createdAt = v.CreatedDate.getTime();
        versions.push(info);
      }
      // A page may be empty and still carry a NextToken: only its absence ends the listing.
      if (!out.NextToken) return versions;
      nextToken = out.NextToken;
    }
    throw new TransientError(`ListSecretVersionIds for secret ${ref.secretId} in ${this.regionOf(ref)} did not end after ${MAX_PAGES} pages`);
  }

  async putPending(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string }> {
    // I4: no read first. A version under this token means an earlier run already wrote it: the
    // same value again is a no-op at AWS, a different one is refused (ResourceExistsException)
    // and read back below. A ResourceNotFoundException on a write can only mean the secret.
    const document = ref.jsonKey === undefined ? value : await this.documentWith(ref, ref.jsonKey, value, signal);
    try {
      await this.call(
        ref,
        "PutSecretValue",
        signal,
        (c, s) => c.send(new PutSecretValueCommand({ SecretId: ref.secretId, ClientRequestToken: token, SecretString: document, VersionStages: [AWSPENDING] }), s),
        [value, document],
      );
    } catch (err) {
      // Another worker wrote this token between our read and our write.
      if (isAwsError(err, "ResourceExistsException")) {
        const raced = await this.getVersion(ref, token, signal);
        if (raced) return this.sameOrConflict(ref, token, raced, value);
      }
      throw err;
    }
    return { versionId: token };
  }

  async putCurrent(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string; current: boolean }> {
    // No read first: the token makes a repeated write a no-op, and a different value under it is
    // refused by AWS (ResourceExistsException), which is read back below. One request on the path
    // where every consumer waits.
    const document = ref.jsonKey === undefined ? value : await this.documentWith(ref, ref.jsonKey, value, signal);
    try {
      const out = await this.call(
        ref,
        "PutSecretValue",
        signal,
        (c, s) => c.send(new PutSecretValueCommand({ SecretId: ref.secretId, ClientRequestToken: token, SecretString: document, VersionStages: [AWSCURRENT] }), s),
        [value, document],
      );
      return { versionId: token, current: (out.VersionStages ?? [AWSCURRENT]).includes(AWSCURRENT) };
    } catch (err) {
      if (isAwsError(err, "ResourceExistsException")) {
        const existing = await this.getVersion(ref, token, signal);
        if (existing) return { ...this.sameOrConflict(ref, token, existing, value), current: existing.stages.includes(AWSCURRENT) };
      }
      throw err;
    }
  }

  async promote(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<{ previousVersionId?: string }> {
    // One re-read covers a label that moved between our read and our write.
    for (let attempt = 1; ; attempt++) {
      const stages = await this.stages(ref, signal);
      const current = holderOf(stages, AWSCURRENT);
      if (current === versionId) {
        // Re-run after AWSCURRENT already moved: only the pending label may be left.
        if (stages[versionId]?.includes(AWSPENDING)) await this.removeLabel(ref, AWSPENDING, versionId, signal);
        return withPrevious(holderOf(stages, AWSPREVIOUS));
      }
      try {
        await this.call(ref, "UpdateSecretVersionStage", signal, (c, s) =>
          c.send(
            new UpdateSecretVersionStageCommand({
              SecretId: ref.secretId,
              VersionStage: AWSCURRENT,
              MoveToVersionId: versionId,
              RemoveFromVersionId: current,
            }),
            s,
          ),
        );
      } catch (err) {
        if (attempt < 2 && isAwsError(err, "InvalidParameterException")) continue;
        throw err;
      }
      if (stages[versionId]?.includes(AWSPENDING)) await this.removeLabel(ref, AWSPENDING, versionId, signal);
      return withPrevious(current);
    }
  }

  async discardPending(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<void> {
    const stages = await this.stages(ref, signal);
    if (!stages[versionId]?.includes(AWSPENDING)) return;
    await this.removeLabel(ref, AWSPENDING, versionId, signal);
  }

  async create(ref: SecretRef, value: string, signal?: AbortSignal): Promise<{ versionId: string }> {
    const token = randomUUID();
    const document = ref.jsonKey === undefined ? value : JSON.stringify({ [ref.jsonKey]: value });
    const out = await this.call(
      ref,
      "CreateSecret",
      signal,
      (c, s) => c.send(new CreateSecretCommand({ Name: ref.secretId, ClientRequestToken: token, SecretString: document }), s),
      [value, document],
    );
    return { versionId: out.VersionId ?? token };
  }

  // --- internals -------------------------------------------------------------------------------

  private regionOf(ref: SecretRef): string {
    const region = ref.region ?? this.opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION;
    if (!region) {
      throw new ConfigError(`no AWS region for secret ${ref.secretId}: set AWS_REGION (or AWS_DEFAULT_REGION) or the secret's region in the policy`);
    }
    return region;
  }

  private client(region: string): SecretsManagerClient {
    let c = this.clients.get(region);
    if (!c) {
      c =
        this.opts.clientFor?.(region) ??
        new SecretsManagerClient({
          region,
          maxAttempts: this.opts.maxAttempts ?? 3,
          requestHandler: { requestTimeout: this.opts.requestTimeoutMs ?? 15_000, throwOnRequestTimeout: true },
        });
      this.clients.set(region, c);
    }
    return c;
  }

  /**
   * One SDK call with errors mapped to rekey's classes. `values` are scrubbed from any message
   * the service sends back, in case it ever echoes input.
   */
  private async call<T>(
    ref: SecretRef,
    operation: string,
    signal: AbortSignal | undefined,
    send: (client: SecretsManagerClient, options: { abortSignal?: AbortSignal }) => Promise<T>,
    values: string[] = [],
  ): Promise<T> {
    const region = this.regionOf(ref);
    try {
      return await send(this.client(region), signal ? { abortSignal: signal } : {});
    } catch (err) {
      if (signal?.aborted) throw err;
      throw await this.explain(err, ref, region, operation, values, signal);
    }
  }

  /**
   * What an error means, from its exception name; where the name alone is ambiguous, from
   * DescribeSecret (the world), never from the message, whose wording AWS does not promise (it
   * has answered "…marked for deletion." and "You can’t … because it was deleted.").
   */
  private async explain(err: unknown, ref: SecretRef, region: string, operation: string, values: string[], signal?: AbortSignal): Promise<Error> {
    if (nameOf(err) === "InvalidRequestException" && operation !== "DescribeSecret") {
      // Invalid for the secret's state: scheduled for deletion is the state rekey can explain.
      const described = await this.describe(ref, signal).catch(() => undefined);
      if (described?.DeletedDate) return this.deletedError(ref, region);
    }
    return this.mapError(err, ref, region, operation, values);
  }

  private deletedError(ref: SecretRef, region: string): PermanentError {
    return new PermanentError(`secret ${ref.secretId} in ${region} is scheduled for deletion: restore it (aws secretsmanager restore-secret --secret-id ${ref.secretId}) before rotating it`);
  }

  private mapError(err: unknown, ref: SecretRef, region: string, operation: string, values: string[]): Error {
    const e = (typeof err === "object" && err !== null ? err : {}) as AwsErrorLike;
    const name = e.name ?? "Error";
    const status = e.$metadata?.httpStatusCode;
    const detail = scrub(`${name}${status ? ` (HTTP ${status})` : ""}: ${e.message ?? String(err)}`, values);
    const where = `secret ${ref.secretId} in ${region}`;
    const scope = `aws-secrets-manager:${region}`;
    switch (name) {
      case "ThrottlingException":
      case "TooManyRequestsException":
      case "RequestLimitExceeded": {
        const retryAt = this.now() + THROTTLE_WAIT_MS;
        return new RateLimitedError(scope, retryAt, `AWS Secrets Manager throttled ${operation} on ${where} (write quota, 50 requests/s per account and region); retry after ${new Date(retryAt).toISOString()}`);
      }
      case "LimitExceededException": {
        // A quota of this one secret, not of the region (AWS's quotas page): by its name, never its message.
        const retryAt = this.now() + VERSION_QUOTA_WAIT_MS;
        return new SecretQuotaError(
          `${scope}:${ref.secretId}`,
          retryAt,
          `${operation} refused: the version quota of secret ${ref.secretId} in ${region} is reached (about 100 versions created within 24 hours, or 20 staging labels); only this rotation waits, until ${new Date(retryAt).toISOString()} — other secrets keep rotating. Something writes this secret unusually often: check its schedule and other writers`,
        );
      }
      case "ResourceNotFoundException":
        return new PermanentError(`${where} not found: create it first (e.g. aws secretsmanager create-secret --name ${ref.secretId} --region ${region}); ${operation} failed`);
      case "AccessDeniedException":
      case "AccessDeniedExceptionReason":
      case "UnrecognizedClientException":
      case "InvalidSignatureException":
      case "ExpiredTokenException":
        return new PermanentError(`${operation} on ${where} was refused: ${detail}; rekey needs secretsmanager:${operation} on this secret and valid AWS credentials`);
    }
    if (name === "InternalServiceError" || e.$fault === "server" || (status !== undefined && status >= 500)) {
      return new TransientError(`${operation} on ${where} failed on the AWS side: ${detail}`);
    }
    if (status === undefined || e.$fault === undefined) {
      // No HTTP answer: connection refused or reset, DNS, timeout.
      return new TransientError(`${operation} on ${where} got no answer from AWS Secrets Manager: ${detail}`);
    }
    return new AwsServiceError(`${operation} on ${where} failed: ${detail}`, name);
  }

  /** GetSecretValue; undefined where the version or label holds no value (the secret exists). */
  private async readValue(ref: SecretRef, which: { VersionId?: string; VersionStage?: string }, signal?: AbortSignal): Promise<z.infer<typeof ValueShape> | undefined> {
    const region = this.regionOf(ref);
    try {
      const out: GetSecretValueCommandOutput = await this.client(region).send(
        new GetSecretValueCommand({ SecretId: ref.secretId, ...which }),
        signal ? { abortSignal: signal } : {},
      );
      return ValueShape.parse(out);
    } catch (err) {
      if (signal?.aborted) throw err;
      if (nameOf(err) === "ResourceNotFoundException") {
        // One exception for a missing secret and for a missing version or label; only its
        // message told them apart. DescribeSecret does: it fails only where the secret is missing.
        const described = await this.describe(ref, signal);
        if (described.DeletedDate) throw this.deletedError(ref, region);
        return undefined;
      }
      throw await this.explain(err, ref, region, "GetSecretValue", [], signal);
    }
  }

  private toStored(ref: SecretRef, out: z.infer<typeof ValueShape>): StoredVersion | undefined {
    const document = this.stringOf(ref, out);
    const value = ref.jsonKey === undefined ? document : readJsonKey(document, ref.jsonKey, `secret ${ref.secretId} version ${out.VersionId}`);
    return value === undefined ? undefined : { versionId: out.VersionId, value, stages: out.VersionStages ?? [] };
  }

  private stringOf(ref: SecretRef, out: z.infer<typeof ValueShape>): string {
    if (out.SecretString === undefined) {
      throw new PermanentError(`secret ${ref.secretId} version ${out.VersionId} holds a binary value (SecretBinary); rekey stores credentials as SecretString`);
    }
    return out.SecretString;
  }

  private sameOrConflict(ref: SecretRef, token: string, existing: StoredVersion, value: string): { versionId: string } {
    if (existing.value === value) return { versionId: existing.versionId };
    throw new PermanentError(
      `version ${token} of secret ${ref.secretId} already holds a different credential: a rotation id is written once; start a new rotation`,
    );
  }

  /** The current JSON document with only `key` set to `value`; a secret without a value starts empty. */
  private async documentWith(ref: SecretRef, key: string, value: string, signal?: AbortSignal): Promise<string> {
    const current = await this.readValue(ref, { VersionStage: AWSCURRENT }, signal);
    if (!current) return JSON.stringify({ [key]: value });
    const document = this.stringOf(ref, current);
    return replaceJsonKey(document, key, value, `secret ${ref.secretId} version ${current.VersionId}`);
  }

  private async removeLabel(ref: SecretRef, label: string, versionId: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.call(ref, "UpdateSecretVersionStage", signal, (c, s) =>
        c.send(new UpdateSecretVersionStageCommand({ SecretId: ref.secretId, VersionStage: label, RemoveFromVersionId: versionId }), s),
      );
    } catch (err) {
      // A concurrent run may have removed it already; only a label still there is a failure.
      if (isAwsError(err, "InvalidParameterException")) {
        const stages = await this.stages(ref, signal);
        if (!stages[versionId]?.includes(label)) return;
      }
      throw err;
    }
  }
}

/** The exception name the SDK read from the answer (`__type`, namespace cut off). */
function nameOf(err: unknown): string | undefined {
  return typeof err === "object" && err !== null ? (err as AwsErrorLike).name : undefined;
}

function holderOf(stages: Record<string, string[]>, label: string): string | undefined {
  for (const [id, labels] of Object.entries(stages)) if (labels.includes(label)) return id;
  return undefined;
}

function withPrevious(previousVersionId: string | undefined): { previousVersionId?: string } {
  return previousVersionId === undefined ? {} : { previousVersionId };
}

function scrub(text: string, values: string[]): string {
  let out = text;
  for (const v of values) if (v.length > 0) out = out.split(v).join("[redacted]");
  return out;
}

// --- JSON documents: replace one key's value and keep every other byte ------------------------

interface Member {
  key: string;
  /** Just after the `{` or `,` before this member. */
  leadStart: number;
  keyStart: number;
  keyEnd: number;
  valueStart: number;
  valueEnd: number;
}

interface ObjectLayout {
  open: number;
  close: number;
  members: Member[];
}

function parseObject(document: string, what: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(document);
  } catch {
    throw new PermanentError(`${what} is not a JSON document, so a JSON key cannot be set in it; remove jsonKey from the policy or store a JSON object`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new PermanentError(`${what} is JSON but not an object, so a JSON key cannot be set in it; store a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

/** The value of `key` as a string, undefined where the key is absent. */
export function readJsonKey(document: string, key: string, what: string): string | undefined {
  const obj = parseObject(document, what);
  if (!Object.hasOwn(obj, key)) return undefined;
  const v = obj[key];
  if (typeof v !== "string") throw new PermanentError(`${what}: JSON key ${key} holds a ${v === null ? "null" : typeof v}, not a string`);
  return v;
}

/**
 * Splices the new value's JSON text over the old one's span, so whitespace, key order, number
 * formatting and escapes elsewhere in the document stay as they were. A missing key is appended
 * in the document's own style.
 */
export function replaceJsonKey(document: string, key: string, value: string, what: string): string {
  parseObject(document, what);
  const layout = scanObject(document);
  const encoded = JSON.stringify(value);
  // JSON.parse keeps the last of duplicate keys, so that is the one readers see.
  const member = layout.members.filter((m) => m.key === key).at(-1);
  if (member) return document.slice(0, member.valueStart) + encoded + document.slice(member.valueEnd);

  const last = layout.members.at(-1);
  if (!last) {
    const inner = document.slice(layout.open + 1, layout.close);
    return `${document.slice(0, layout.open + 1)}${JSON.stringify(key)}:${encoded}${inner}${document.slice(layout.close)}`;
  }
  // The new member copies the last one's layout: the whitespace before its key and around ':'.
  const indent = document.slice(last.leadStart, last.keyStart);
  const separator = document.slice(last.keyEnd, last.valueStart);
  const insert = `,${indent}${JSON.stringify(key)}${separator}${encoded}`;
  return document.slice(0, last.valueEnd) + insert + document.slice(last.valueEnd);
}

/** Top-level member spans of a document already known to be a valid JSON object. */
function scanObject(text: string): ObjectLayout {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && /\s/.test(text.charAt(i))) i++;
  };
  const skipString = (): void => {
    i++; // opening quote
    while (i < text.length) {
      const ch = text.charAt(i);
      if (ch === "\\") i += 2;
      else if (ch === '"') {
        i++;
        return;
      } else i++;
    }
  };
  const skipValue = (): void => {
    const ch = text.charAt(i);
    if (ch === '"') return skipString();
    if (ch === "{" || ch === "[") {
      let depth = 0;
      while (i < text.length) {
        const c = text.charAt(i);
        if (c === '"') {
          skipString();
          continue;
        }
        if (c === "{" || c === "[") depth++;
        else if (c === "}" || c === "]") {
          depth--;
          if (depth === 0) {
            i++;
            return;
          }
        }
        i++;
      }
      return;
    }
    while (i < text.length && !/[\s,}\]]/.test(text.charAt(i))) i++;
  };

  ws();
  const open = i;
  i++;
  const members: Member[] = [];
  let leadStart = i;
  ws();
  while (i < text.length && text.charAt(i) !== "}") {
    const keyStart = i;
    skipString();
    const keyEnd = i;
    const key = JSON.parse(text.slice(keyStart, keyEnd)) as string;
    ws();
    i++; // ':'
    ws();
    const valueStart = i;
    skipValue();
    members.push({ key, leadStart, keyStart, keyEnd, valueStart, valueEnd: i });
    ws();
    if (text.charAt(i) === ",") {
      i++;
      leadStart = i;
      ws();
    }
  }
  return { open, close: i, members };
}
