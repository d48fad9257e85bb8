/**
 * The policy file format. One policy = one credential that rekey rotates: which provider issues
 * it, where its value lives in the secret store, who consumes it and how they confirm, and when it
 * rotates. Every object is strict: an unknown key is an error, because it is usually a typo.
 *
 * Values never appear in a policy file: management credentials are references (a secret id in the
 * store, or an environment variable name).
 *
 * The `description` metadata below ends up in the JSON Schema (`rekey schema`) that editors show
 * on hover, so it is written for the person editing a policy file.
 */
import { CronExpressionParser } from "cron-parser";
import { z } from "zod";
import { parseDuration } from "../util/duration.ts";

/**
 * Validation results of cron expressions and time zones, by their text. Thousands of policies
 * share a handful of schedules, and both checks (cron-parser, Intl) cost far more than a lookup.
 */
const MEMO_LIMIT = 10_000;
function memo<T>(cache: Map<string, T>, key: string, compute: () => T): T {
  const hit = cache.get(key);
  if (hit !== undefined || cache.has(key)) return hit as T;
  if (cache.size >= MEMO_LIMIT) cache.clear();
  const value = compute();
  cache.set(key, value);
  return value;
}

const DURATION_HELP = 'a duration such as "30d", "12h" or "1h30m" (units: ms, s, m, h, d, w)';

/** `30d`, `12h`, `1h30m` … parsed to milliseconds. */
export const Duration = z
  .string({ error: (iss) => (iss.input === undefined ? undefined : `expected ${DURATION_HELP}, got ${JSON.stringify(iss.input)}`) })
  .transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: "custom", message: `expected ${DURATION_HELP}, got "${text}"` });
      return z.NEVER;
    }
    return ms;
  })
  .meta({ description: "A duration: digits followed by ms, s, m, h, d or w, e.g. 30d, 12h, 1h30m.", pattern: "^(\\d+(ms|s|m|h|d|w))+$" });

const timeZoneValid = new Map<string, boolean>();
export const TimeZone = z
  .string()
  .refine(
    (tz) =>
      memo(timeZoneValid, tz, () => {
        try {
          new Intl.DateTimeFormat("en-US", { timeZone: tz });
          return true;
        } catch {
          return false;
        }
      }),
    { error: (iss) => `unknown time zone "${String(iss.input)}" (use an IANA name such as "Europe/Berlin" or "UTC")` },
  )
  .meta({ description: 'IANA time zone the cron expression is evaluated in, e.g. "Europe/Berlin". Default: UTC.' });

/** Problem with a cron expression, or null when it is valid. */
const cronProblems = new Map<string, string | null>();
function cronProblem(expr: string): string | null {
  return memo(cronProblems, expr, () => {
    const fields = expr.trim().split(/\s+/).filter(Boolean);
    if (fields.length !== 5) {
      return `expected 5 fields (minute hour day-of-month month day-of-week), got ${fields.length}`;
    }
    try {
      CronExpressionParser.parse(expr, { tz: "UTC" });
      return null;
    } catch (err) {
      return `invalid cron expression "${expr}": ${err instanceof Error ? err.message : String(err)}`;
    }
  });
}

export const CronExpression = z
  .string()
  .superRefine((expr, ctx) => {
    const problem = cronProblem(expr);
    if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
  })
  .meta({ description: 'Five-field cron expression (minute hour day-of-month month day-of-week), e.g. "0 3 * * 1" for Mondays at 03:00.' });

// A missing field keeps zod's own message; the loader words that case itself.
const Email = z.email({ error: (iss) => (iss.input === undefined ? undefined : `expected an email address, got "${String(iss.input)}"`) });
const HttpUrl = z.url({
  protocol: /^https?$/,
  error: (iss) => (iss.input === undefined ? undefined : `expected an http(s) URL, got "${String(iss.input)}"`),
});
const ApiVersion = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "expected a date YYYY-MM-DD")
  .default("2024-10-15")
  .meta({ description: "Snyk REST API version date sent as ?version=. Default: 2024-10-15." });

/** Where rekey finds a credential it uses itself (never the value in the file). */
export const CredentialRef = z
  .union([
    z.strictObject({
      secretId: z.string().min(1).meta({ description: "Secret name or ARN in the secret store." }),
      region: z.string().optional().meta({ description: "AWS region of the secret. Default: the configured region." }),
      jsonKey: z.string().min(1).optional().meta({ description: "When the secret is a JSON document, the key holding this credential." }),
    }),
    z.strictObject({
      env: z
        .string()
        .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name")
        .meta({ description: "Name of an environment variable holding the credential." }),
    }),
  ])
  .meta({ description: "A reference to a credential rekey uses itself: { secretId } in the secret store, or { env } naming an environment variable. Never the value." });
export type CredentialRef = z.infer<typeof CredentialRef>;

const base = { baseUrl: HttpUrl.optional().meta({ description: "API host for regional or self-hosted endpoints." }) };

export const LaunchDarklyProvider = z.strictObject({
  kind: z.literal("launchdarkly"),
  ...base,
  /** Management (admin) access token used to create and delete tokens. */
  management: CredentialRef.meta({ description: "Admin access token used to create and delete tokens." }),
  /**
   * `create-delete` (default): create a second token with the same role fields, delete the old
   * one after confirmation. `reset-with-expiry`: the legacy reset endpoint with an expiry for the
   * old secret (whether the old secret really survives is unconfirmed, so this is opt-in).
   */
  strategy: z
    .enum(["create-delete", "reset-with-expiry"])
    .default("create-delete")
    .meta({
      description:
        "create-delete (default): create a second token with the same role, delete the old one after confirmation. reset-with-expiry: reset in place; treated as a cut-over.",
    }),
  /** With reset-with-expiry: how long the old secret should keep working. */
  resetExpiry: Duration.optional().meta({ description: "With strategy reset-with-expiry: how long the old secret should keep working." }),
  /** Management credential of the successor, used when offboarding should create the new token as theirs. */
  successorManagement: CredentialRef.optional().meta({
    description: "Management credential of the offboarding successor, so the new token is created as theirs.",
  }),
});

export const SnykServiceAccountProvider = z
  .strictObject({
    kind: z.literal("snyk-service-account"),
    ...base,
    management: CredentialRef.meta({ description: "Snyk API token allowed to manage the service account's secrets." }),
    orgId: z.string().min(1).optional().meta({ description: "Organization that owns the service account (give orgId or groupId)." }),
    groupId: z.string().min(1).optional().meta({ description: "Group that owns the service account (give orgId or groupId)." }),
    serviceAccountId: z.string().min(1).meta({ description: "Id of the OAuth client-secret service account." }),
    clientId: z.string().min(1).meta({ description: "OAuth client id of the service account (not secret)." }),
    apiVersion: ApiVersion,
  })
  .refine((p) => !!p.orgId !== !!p.groupId, {
    path: ["orgId"],
    message: "give exactly one of orgId or groupId",
    // Also checked when other fields are wrong, so a file shows every problem at once.
    when: (payload) => typeof payload.value === "object" && payload.value !== null,
  });

export const SnykUserTokenProvider = z.strictObject({
  kind: z.literal("snyk-user-token"),
  ...base,
  uiUrl: HttpUrl.default("https://app.snyk.io/account").meta({ description: "Where the owner regenerates the token." }),
  apiVersion: ApiVersion,
});

export const SnykPatProvider = z.strictObject({
  kind: z.literal("snyk-pat"),
  ...base,
  uiUrl: HttpUrl.default("https://app.snyk.io/account/personal-access-tokens").meta({ description: "Where the owner creates the new personal access token." }),
  apiVersion: ApiVersion,
  patId: z.string().min(1).optional().meta({
    description:
      "Id of the PAT the secret holds before rekey's first rotation, needed only when the user has several active PATs and that one's name does not follow rekey's naming.",
  }),
  management: CredentialRef.optional().meta({
    description: "A credential of the same Snyk user used to delete the old PAT (e.g. this policy's own target secret, which holds the new PAT by then). Default: the old PAT deletes itself.",
  }),
});

export const QStashTokenProvider = z.strictObject({
  kind: z.literal("qstash-token"),
  /** Data plane host (for verification), e.g. https://qstash.upstash.io. */
  ...base,
  /** Developer API host, default https://api.upstash.com. */
  managementUrl: HttpUrl.optional().meta({ description: "Upstash Developer API host. Default: https://api.upstash.com." }),
  /** Email of the Upstash account the management API key belongs to. */
  email: Email.meta({ description: "Email of the Upstash account the management API key belongs to." }),
  /** The Developer API key (HTTP Basic password). */
  management: CredentialRef.meta({ description: "Upstash Developer API key." }),
  /** QStash user id of the region whose token this is (from GET /v2/qstash/users). */
  userId: z.string().min(1).meta({ description: "QStash user id of the region whose token this is." }),
});

export const QStashSigningKeysProvider = z.strictObject({
  kind: z.literal("qstash-signing-keys"),
  ...base,
  /** QStash token (Bearer) of the region whose signing keys these are. */
  management: CredentialRef.meta({ description: "QStash token of the region whose signing keys these are." }),
});

export const CrewAiCrewProvider = z.strictObject({
  kind: z.literal("crewai-crew"),
  /** The crew's own host, e.g. https://my-crew.crewai.com. */
  crewUrl: HttpUrl.meta({ description: "The crew's own host, e.g. https://my-crew.crewai.com." }),
  uiUrl: HttpUrl.default("https://app.crewai.com/crewai_plus/deployments").meta({ description: "Where the owner presses Reset for the crew's token." }),
});

export const ProviderConfig = z
  .discriminatedUnion("kind", [
    LaunchDarklyProvider,
    SnykServiceAccountProvider,
    SnykUserTokenProvider,
    SnykPatProvider,
    QStashTokenProvider,
    QStashSigningKeysProvider,
    CrewAiCrewProvider,
  ])
  .meta({ description: "Which provider issues the credential; `kind` selects the fields that apply." });
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

const scheduleWindow = Duration.optional().meta({
  description: "How late a missed slot may still run when rekey starts again; later it is recorded as missed. Default: 1h.",
});

export const Schedule = z
  .union([
    z.strictObject({
      cron: CronExpression,
      timezone: TimeZone.default("UTC"),
      /** How late a missed slot may still run (caught up on start); default: one hour. */
      window: scheduleWindow,
    }),
    z.strictObject({
      every: Duration.meta({ description: "Rotate at this interval, e.g. 30d." }),
      window: scheduleWindow,
    }),
  ])
  .meta({ description: "When to rotate: { cron, timezone } or { every }. Without a schedule the policy rotates only on demand." });
export type Schedule = z.infer<typeof Schedule>;

export const Target = z
  .strictObject({
    secretId: z.string().min(1).max(2048).meta({ description: "Secret name or ARN." }),
    region: z.string().optional().meta({ description: "AWS region of the secret. Default: the configured region." }),
    jsonKey: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "When the secret is a JSON document: the key holding this credential; other keys are kept as they are." }),
  })
  .meta({ description: "Where the credential's value lives in the secret store." });
export type Target = z.infer<typeof Target>;

const consumerBase = {
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]*$/, "expected lower-case letters, digits, '.', '_' or '-'")
    .meta({ description: "Name of the consumer, unique within the policy." }),
  /** A consumer that is not required is told, and its confirmation reported, but not waited for. */
  required: z
    .boolean()
    .default(true)
    .meta({ description: "Whether the old credential waits for this consumer's confirmation. Default: true." }),
};

export const Consumer = z
  .discriminatedUnion("confirm", [
    z.strictObject({
      ...consumerBase,
      confirm: z.literal("push").meta({ description: "The consumer calls POST /v1/confirmations with its bearer token." }),
      /** sha256 of the consumer's bearer token for POST /v1/confirmations, as `sha256:<hex>`. */
      tokenHash: z
        .string()
        .regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 hex digits> (see docs/consumers.md)")
        .meta({ description: "sha256 of the consumer's bearer token, as sha256:<64 hex digits>." }),
    }),
    z.strictObject({
      ...consumerBase,
      confirm: z.literal("probe").meta({ description: "rekey polls the consumer's URL for the version id or fingerprint it loaded." }),
      /** rekey GETs this URL; it answers with the version id or fingerprint the consumer has loaded. */
      url: HttpUrl.meta({ description: "URL rekey GETs; it answers with the version id or fingerprint the consumer has loaded." }),
      interval: Duration.prefault("30s").meta({ description: "How often rekey polls the URL. Default: 30s." }),
    }),
    z.strictObject({
      ...consumerBase,
      confirm: z.literal("usage").meta({ description: "The old credential going unused counts as confirmation (providers that report last use)." }),
      /** The old credential counts as abandoned when unused this long after promotion. */
      quietFor: Duration.prefault("1h").meta({ description: "The old credential counts as abandoned when unused this long after promotion. Default: 1h." }),
    }),
  ])
  .meta({ description: "A service that uses the credential and how it confirms it runs on the new value: push, probe or usage." });
export type Consumer = z.infer<typeof Consumer>;

export const Confirmation = z
  .strictObject({
    timeout: Duration.prefault("1d").meta({ description: "How long to wait for every required consumer. Default: 1d." }),
    onTimeout: z
      .enum(["keep-old", "revoke"])
      .default("keep-old")
      .meta({ description: "keep-old (default): keep the old credential and alert. revoke: revoke it anyway." }),
  })
  .meta({ description: "How long to wait for consumers' confirmations, and what to do when they do not all arrive." });

export const NotifyTarget = z
  .discriminatedUnion("kind", [
    z.strictObject({
      kind: z.literal("webhook"),
      url: HttpUrl.meta({ description: "URL that receives a signed JSON POST for each rotation event." }),
      /** Standard Webhooks signing key (whsec_<base64>) for the webhook-signature header. */
      signingKey: CredentialRef.meta({ description: "Signing key for the Standard Webhooks webhook-signature header: whsec_ followed by base64 (other strings are used as their bytes)." }),
    }),
    z.strictObject({
      kind: z.literal("slack"),
      /** The incoming-webhook URL is itself a secret, so it is a reference. */
      webhook: CredentialRef.meta({ description: "Slack incoming-webhook URL (a secret, so a reference)." }),
    }),
  ])
  .meta({ description: "Where rotation events are sent: a signed webhook or Slack." });
export type NotifyTarget = z.infer<typeof NotifyTarget>;

/**
 * Providers whose new credential only a person can make (Snyk user token and PAT, CrewAI crew):
 * how long rekey waits for the value and how often it reminds the owner meanwhile.
 */
export const HumanStep = z
  .strictObject({
    timeout: Duration.optional().meta({ description: "How long rekey waits for the new value before the rotation needs attention. Default: 72h." }),
    remindEvery: Duration.optional().meta({ description: "How often the owner is reminded while rekey waits. Default: 4h." }),
  })
  .meta({ description: "Human steps (providers without an issuing API): how long to wait for the submitted value, and how often to remind the owner." });
export type HumanStep = z.infer<typeof HumanStep>;

export const Policy = z
  .strictObject({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,127}$/, "expected 1-128 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
      .meta({ description: "Unique id of the policy across all policy files." }),
    description: z.string().optional().meta({ description: "Free text for people reading the policy." }),
    /** The member whose credential this is. */
    owner: Email.meta({ description: "Email of the member whose credential this is; offboarding finds policies by owner." }),
    provider: ProviderConfig,
    schedule: Schedule.optional(),
    target: Target,
    consumers: z.array(Consumer).default([]).meta({ description: "Who uses the credential and how each one confirms. Default: none." }),
    confirmation: Confirmation.prefault({}),
    /**
     * Required (true) for credentials whose old value dies when the new one is issued: consumers
     * see failures until they load the new value.
     */
    acceptCutover: z.boolean().optional().meta({
      description:
        "Must be true for providers whose old credential dies when the new one is issued (consumers fail until they reload).",
    }),
    notify: z.array(NotifyTarget).default([]).meta({ description: "Where rotation events are sent. Default: none." }),
    human: HumanStep.optional(),
    offboarding: z
      .strictObject({ successor: Email.meta({ description: "Email of the member who takes the credential over." }) })
      .optional()
      .meta({ description: "Who receives this credential when the owner is offboarded." }),
  })
  .meta({ title: "rekey policy", description: "One credential that rekey rotates: its provider, secret store target, consumers and schedule." });
export type Policy = z.infer<typeof Policy>;
export type PolicyInput = z.input<typeof Policy>;
