/**
 * The policy file format. One policy = one credential that rekey rotates: which provider issues
 * it, where its value lives in the secret store, who consumes it and how they confirm, and when it
 * rotates. Every object is strict: an unknown key is an error, because it is usually a typo.
 *
 * Values never appear in a policy file: management credentials are references (a secret id in the
 * store, or an environment variable name).
 */
import { CronExpressionParser } from "cron-parser";
import { z } from "zod";
import { parseDuration } from "../util/duration.ts";

/** `30d`, `12h`, `1h30m` … parsed to milliseconds. */
export const Duration = z
  .string()
  .transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: "custom", message: `expected a duration such as "30d", "12h" or "1h30m", got "${text}"` });
      return z.NEVER;
    }
    return ms;
  })
  .meta({ description: "A duration: digits followed by ms, s, m, h, d or w, e.g. 30d, 12h, 1h30m.", pattern: "^(\\d+(ms|s|m|h|d|w))+$" });

export const TimeZone = z.string().refine(
  (tz) => {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  },
  { error: (iss) => `unknown time zone "${String(iss.input)}" (use an IANA name such as "Europe/Berlin" or "UTC")` },
);

export const CronExpression = z.string().superRefine((expr, ctx) => {
  const fields = expr.trim().split(/\s+/).filter(Boolean);
  if (fields.length !== 5) {
    ctx.addIssue({ code: "custom", message: `expected 5 fields (minute hour day-of-month month day-of-week), got ${fields.length}` });
    return;
  }
  try {
    CronExpressionParser.parse(expr, { tz: "UTC" });
  } catch (err) {
    ctx.addIssue({ code: "custom", message: `invalid cron expression "${expr}": ${err instanceof Error ? err.message : String(err)}` });
  }
});

const Email = z.email({ error: (iss) => `expected an email address, got "${String(iss.input)}"` });
const HttpUrl = z.url({ protocol: /^https?$/, error: (iss) => `expected an http(s) URL, got "${String(iss.input)}"` });

/** Where rekey finds a credential it uses itself (never the value in the file). */
export const CredentialRef = z.union([
  z.strictObject({
    secretId: z.string().min(1).meta({ description: "Secret name or ARN in the secret store." }),
    region: z.string().optional(),
    jsonKey: z.string().min(1).optional().meta({ description: "When the secret is a JSON document, the key holding this credential." }),
  }),
  z.strictObject({
    env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name").meta({ description: "Name of an environment variable holding the credential." }),
  }),
]);
export type CredentialRef = z.infer<typeof CredentialRef>;

const base = { baseUrl: HttpUrl.optional().meta({ description: "API host for regional or self-hosted endpoints." }) };

export const LaunchDarklyProvider = z.strictObject({
  kind: z.literal("launchdarkly"),
  ...base,
  /** Management (admin) access token used to create and delete tokens. */
  management: CredentialRef,
  /**
   * `create-delete` (default): create a second token with the same role fields, delete the old
   * one after confirmation. `reset-with-expiry`: the legacy reset endpoint with an expiry for the
   * old secret (whether the old secret really survives is unconfirmed, so this is opt-in).
   */
  strategy: z.enum(["create-delete", "reset-with-expiry"]).default("create-delete"),
  /** With reset-with-expiry: how long the old secret should keep working. */
  resetExpiry: Duration.optional(),
  /** Management credential of the successor, used when offboarding should create the new token as theirs. */
  successorManagement: CredentialRef.optional(),
});

export const SnykServiceAccountProvider = z
  .strictObject({
    kind: z.literal("snyk-service-account"),
    ...base,
    management: CredentialRef,
    orgId: z.string().min(1).optional(),
    groupId: z.string().min(1).optional(),
    serviceAccountId: z.string().min(1),
    clientId: z.string().min(1),
    apiVersion: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected a date YYYY-MM-DD").default("2024-10-15"),
  })
  .superRefine((p, ctx) => {
    if (!!p.orgId === !!p.groupId) ctx.addIssue({ code: "custom", path: ["orgId"], message: "give exactly one of orgId or groupId" });
  });

export const SnykUserTokenProvider = z.strictObject({
  kind: z.literal("snyk-user-token"),
  ...base,
  uiUrl: HttpUrl.default("https://app.snyk.io/account").meta({ description: "Where the human regenerates the token." }),
  apiVersion: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected a date YYYY-MM-DD").default("2024-10-15"),
});

export const SnykPatProvider = z.strictObject({
  kind: z.literal("snyk-pat"),
  ...base,
  uiUrl: HttpUrl.default("https://app.snyk.io/account/personal-access-tokens"),
  apiVersion: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected a date YYYY-MM-DD").default("2024-10-15"),
});

export const QStashTokenProvider = z.strictObject({
  kind: z.literal("qstash-token"),
  /** Data plane host (for verification), e.g. https://qstash.upstash.io. */
  ...base,
  /** Developer API host, default https://api.upstash.com. */
  managementUrl: HttpUrl.optional(),
  /** Email of the Upstash account the management API key belongs to. */
  email: Email,
  /** The Developer API key (HTTP Basic password). */
  management: CredentialRef,
  /** QStash user id of the region whose token this is (from GET /v2/qstash/users). */
  userId: z.string().min(1),
});

export const QStashSigningKeysProvider = z.strictObject({
  kind: z.literal("qstash-signing-keys"),
  ...base,
  /** QStash token (Bearer) of the region whose signing keys these are. */
  management: CredentialRef,
});

export const CrewAiCrewProvider = z.strictObject({
  kind: z.literal("crewai-crew"),
  /** The crew's own host, e.g. https://my-crew.crewai.com. */
  crewUrl: HttpUrl,
  uiUrl: HttpUrl.default("https://app.crewai.com/crewai_plus/deployments"),
});

export const ProviderConfig = z.discriminatedUnion("kind", [
  LaunchDarklyProvider,
  SnykServiceAccountProvider,
  SnykUserTokenProvider,
  SnykPatProvider,
  QStashTokenProvider,
  QStashSigningKeysProvider,
  CrewAiCrewProvider,
]);
export type ProviderConfig = z.infer<typeof ProviderConfig>;
export type ProviderKind = ProviderConfig["kind"];
export type ProviderConfigOf<K extends ProviderKind> = Extract<ProviderConfig, { kind: K }>;
export const PROVIDER_KINDS = [
  "launchdarkly",
  "snyk-service-account",
  "snyk-user-token",
  "snyk-pat",
  "qstash-token",
  "qstash-signing-keys",
  "crewai-crew",
] as const satisfies readonly ProviderKind[];

export const Schedule = z.union([
  z.strictObject({
    cron: CronExpression,
    timezone: TimeZone.default("UTC"),
    /** How late a missed slot may still run (caught up on start); default: one hour. */
    window: Duration.optional(),
  }),
  z.strictObject({
    every: Duration,
    window: Duration.optional(),
  }),
]);
export type Schedule = z.infer<typeof Schedule>;

export const Target = z.strictObject({
  secretId: z.string().min(1).max(2048).meta({ description: "Secret name or ARN." }),
  region: z.string().optional(),
  jsonKey: z.string().min(1).optional().meta({ description: "When the secret is a JSON document: the key holding this credential; other keys are kept as they are." }),
});
export type Target = z.infer<typeof Target>;

const consumerBase = {
  id: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, "expected lower-case letters, digits, '.', '_' or '-'"),
  /** A consumer that is not required is told, and its confirmation reported, but not waited for. */
  required: z.boolean().default(true),
};

export const Consumer = z.discriminatedUnion("confirm", [
  z.strictObject({
    ...consumerBase,
    confirm: z.literal("push"),
    /** sha256 of the consumer's bearer token for POST /v1/confirmations, as `sha256:<hex>`. */
    tokenHash: z.string().regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 hex digits> (see README: confirming a rotation)"),
  }),
  z.strictObject({
    ...consumerBase,
    confirm: z.literal("probe"),
    /** rekey GETs this URL; it answers with the version id or fingerprint the consumer has loaded. */
    url: HttpUrl,
    interval: Duration.default(30_000),
  }),
  z.strictObject({
    ...consumerBase,
    confirm: z.literal("usage"),
    /** The old credential counts as abandoned when unused this long after promotion. */
    quietFor: Duration.default(3_600_000),
  }),
]);
export type Consumer = z.infer<typeof Consumer>;

export const Confirmation = z.strictObject({
  timeout: Duration.default(86_400_000),
  onTimeout: z.enum(["keep-old", "revoke"]).default("keep-old"),
});

export const NotifyTarget = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("webhook"),
    url: HttpUrl,
    /** HMAC-SHA256 key for the X-Rekey-Signature header. */
    signingKey: CredentialRef,
  }),
  z.strictObject({
    kind: z.literal("slack"),
    /** The incoming-webhook URL is itself a secret, so it is a reference. */
    webhook: CredentialRef,
  }),
]);
export type NotifyTarget = z.infer<typeof NotifyTarget>;

export const Policy = z.strictObject({
  id: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,127}$/, "expected 1-128 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"),
  description: z.string().optional(),
  /** The member whose credential this is. */
  owner: Email,
  provider: ProviderConfig,
  schedule: Schedule.optional(),
  target: Target,
  consumers: z.array(Consumer).default([]),
  confirmation: Confirmation.default({ timeout: 86_400_000, onTimeout: "keep-old" }),
  /**
   * Required (true) for credentials whose old value dies when the new one is issued: consumers
   * see failures until they load the new value.
   */
  acceptCutover: z.boolean().optional(),
  notify: z.array(NotifyTarget).default([]),
  offboarding: z.strictObject({ successor: Email }).optional(),
});
export type Policy = z.infer<typeof Policy>;
export type PolicyInput = z.input<typeof Policy>;
