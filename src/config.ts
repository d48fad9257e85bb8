/**
 * Process configuration from environment variables, validated once at start. A bad variable
 * stops the process with a message that names it and says what was expected; the value of a
 * variable that may hold a secret is never repeated.
 */
import { readConfigFile } from "./util/config-file.ts";
import { z } from "zod";
import { parseSinkSpec, type SinkSpec } from "./audit/sink.ts";
import { ConfigError } from "./errors.ts";
import { DEFAULT_WORKER_CONCURRENCY } from "./rotation/defaults.ts";
import { type OidcOptions, parseScopeMap } from "./auth/jwt.ts";
import type { TlsFiles } from "./api/tls.ts";
import { type HostPort, prefixProblem, readTlsCa, type RedisTarget } from "./redis-connection.ts";
import { parseDuration } from "./util/duration.ts";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  /**
   * The Redis rekey keeps its state and queues in: a single Redis (REDIS_URL, `redis://` or
   * `rediss://`; default `redis://127.0.0.1:6379`), a Sentinel-managed master (REDIS_SENTINELS,
   * REDIS_SENTINEL_MASTER), or a Redis Cluster (REDIS_CLUSTER_NODES). See docs/redis.md.
   */
  redis: RedisTarget;
  /**
   * Prefix of every Redis key and BullMQ queue. Default: `rekey`. A Redis Cluster needs a hash
   * tag such as `{rekey}`, so that all of rekey's keys live in one slot (checked at start).
   */
  prefix: string;
  /** Directory (or file) the scheduler loads policies from. Default: `policies`. */
  policyDir: string;
  /** Address the HTTP API listens on. Default: `127.0.0.1`. */
  apiHost: string;
  /** Port of the HTTP API. Default: 8080. */
  apiPort: number;
  /** `sha256:<hex>` of the admin bearer token for the admin API; without it the admin API is off. */
  adminTokenHash?: string;
  /** Key (at least 32 characters) for value fingerprints; commands that need it check for it. */
  fingerprintKey?: string;
  /** Rotation jobs one worker process runs at the same time. Default: 8. */
  workerConcurrency: number;
  /** Approximate number of audit records kept (Redis stream MAXLEN). Default: 100000. */
  auditMaxLen: number;
  /** How often the scheduler looks for due rotations, in milliseconds. Default: 5000 (`5s`). */
  schedulerTickMs: number;
  /** AWS region of the secret store (AWS_REGION, else AWS_DEFAULT_REGION); unset lets the SDK decide. */
  awsRegion?: string;
  /** pino log level. Default: `info`. */
  logLevel: LogLevel;
  /** How long a worker's lock on a rotation job lasts, in ms (REKEY_WORKER_LOCK_DURATION). Default: 60 s. */
  workerLockMs?: number;
  /** How often workers look for stalled jobs, in ms (REKEY_WORKER_STALLED_INTERVAL). Default: 15 s. */
  workerStalledIntervalMs?: number;
  /**
   * Budget of one provider or AWS request, in ms (REKEY_REQUEST_TIMEOUT); a request that takes
   * longer is abandoned and retried as a transient failure. Default: 15 s.
   */
  requestTimeoutMs?: number;
  /**
   * How long a short command (status, rotate, leak, ...) waits for Redis before it exits 1 saying
   * so, in ms (REKEY_REDIS_CONNECT_TIMEOUT). Default: 10 s. Long-running roles keep reconnecting.
   */
  redisConnectTimeoutMs: number;
  /**
   * Port of the role's health server (/healthz, /readyz, /metrics) for worker, scheduler, api and
   * run (REKEY_HEALTH_PORT). Unset: no health server (the CLI default; the image sets 9090).
   */
  healthPort?: number;
  /** Address the health server listens on (REKEY_HEALTH_HOST). Default: `127.0.0.1`. */
  healthHost: string;
  /** API requests per client address per minute, across replicas (REKEY_API_RATE_LIMIT). Default: 1200. */
  apiRateLimit: number;
  /** API requests per authenticated identity per minute (REKEY_API_IDENTITY_RATE_LIMIT). Default: 600. */
  apiIdentityRateLimit: number;
  /** SSO: bearer JWTs of this OIDC issuer are accepted (REKEY_OIDC_*); unset: tokens only. */
  oidc?: OidcOptions;
  /**
   * How often the scheduler reconciles Redis's records with the store and the providers, in ms
   * (REKEY_RECONCILE_INTERVAL; `off` turns it off: undefined). Default: 10 minutes.
   */
  reconcileEveryMs?: number;
  /**
   * Where the audit trail is shipped, hash-chained (REKEY_AUDIT_SINK): `stdout`, `file:<path>`,
   * or an http(s) URL. Unset: the trail lives only in Redis (bounded by REKEY_AUDIT_MAXLEN).
   */
  auditSink?: SinkSpec;
  /**
   * HTTPS for the API: PEM certificate and key files (REKEY_TLS_CERT, REKEY_TLS_KEY), and
   * optionally a PEM CA bundle whose client certificates are required (REKEY_TLS_CLIENT_CA, mTLS).
   * Unset: plain HTTP (put the API behind a TLS-terminating proxy, or on 127.0.0.1 only).
   */
  tls?: TlsFiles;
  /**
   * Where people's browsers reach the API (REKEY_PUBLIC_URL), e.g. `https://rekey.example.com`.
   * With it, a human step's notification carries a one-time link to submit the new value.
   */
  publicUrl?: string;
}

/**
 * Variables whose values must not appear in an error message. Each can also be read from a file
 * named by `<NAME>_FILE` (a mounted Kubernetes Secret, a Docker secret), so the value need not
 * sit in the process environment.
 */
export const SECRET_VARIABLES: ReadonlySet<string> = new Set(["REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "REKEY_ADMIN_TOKEN_HASH", "REKEY_FINGERPRINT_KEY", "REKEY_AUDIT_SINK", "REKEY_AUDIT_SINK_TOKEN"]);

/**
 * The value of `name`, or else the content of the file `<name>_FILE` names, without its trailing
 * line break (files written by `echo` or `kubectl create secret --from-file` end with one). The
 * file is read on every call, so a rotated Secret volume is seen without a restart. Throws
 * ConfigError naming the variable and the file, never the content.
 */
export function readEnvOrFile(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (file === undefined || file === "") return direct === "" ? undefined : direct;
  if (direct !== undefined && direct !== "") throw new ConfigError(`${name}_FILE: set either ${name} or ${name}_FILE, not both`);
  const text = readConfigFile(`${name}_FILE`, file).toString("utf8");
  const value = text.replace(/[\r\n]+$/, "");
  if (value === "") throw new ConfigError(`${name}_FILE: ${file} is empty`);
  return value;
}

const int = (min: number, max: number, what: string) =>
  z
    .string()
    .regex(/^\d+$/, `expected ${what}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `expected ${what}`).max(max, `expected ${what}`));

/** `host:port,host:port` (spaces allowed after commas); IPv6 hosts in brackets: `[::1]:26379`. */
const hostList = (what: string) =>
  z.string().transform((v, ctx): HostPort[] => {
    const out: HostPort[] = [];
    for (const item of v.split(",").map((s) => s.trim())) {
      const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(item);
      const port = m ? Number(m[2]) : 0;
      if (!m || port < 1 || port > 65_535) {
        ctx.addIssue({ code: "custom", message: `expected a comma-separated list of ${what} as host:port (such as 10.0.0.5:26379), and ${JSON.stringify(item)} is not one` });
        return z.NEVER;
      }
      out.push({ host: m[1]!.replace(/^\[|\]$/g, ""), port });
    }
    return out;
  });

const bool = z.enum(["true", "false", "1", "0"], { error: "expected true or false" }).transform((v) => v === "true" || v === "1");

const Env = z.object({
  REDIS_URL: z
    .string()
    .refine((v) => {
      try {
        return ["redis:", "rediss:"].includes(new URL(v).protocol);
      } catch {
        return false;
      }
    }, "expected a redis:// or rediss:// URL")
    .optional(),
  REDIS_SENTINELS: hostList("sentinels").optional(),
  REDIS_SENTINEL_MASTER: z.string().regex(/^[A-Za-z0-9._-]+$/, "expected the master group name the sentinels monitor, such as mymaster").optional(),
  REDIS_SENTINEL_USERNAME: z.string().optional(),
  REDIS_SENTINEL_PASSWORD: z.string().optional(),
  REDIS_SENTINEL_TLS: bool.optional(),
  REDIS_CLUSTER_NODES: hostList("cluster nodes").optional(),
  REDIS_USERNAME: z.string().optional(),
  REDIS_PASSWORD: z.string().optional(),
  REDIS_TLS: bool.optional(),
  REDIS_TLS_CA_FILE: z.string().optional(),
  REKEY_PREFIX: z
    .string()
    .default("rekey")
    .refine((v) => /^[^\s:]+$/.test(v), "expected a prefix without spaces or ':' (e.g. rekey, or {rekey} for a Redis Cluster)")
    .refine((v) => !/[{}]/.test(v) || /^[^{}]*\{[^{}]+\}[^{}]*$/.test(v), "expected at most one hash tag such as {rekey}"),
  REKEY_POLICY_DIR: z.string().min(1).default("policies"),
  REKEY_API_HOST: z.string().min(1).default("127.0.0.1"),
  REKEY_API_PORT: int(0, 65_535, "a port number from 0 to 65535 (0 picks a free port)").default(8080),
  REKEY_ADMIN_TOKEN_HASH: z
    .string()
    .regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 lower-case hex digits> (the sha256 of the admin token)")
    .optional(),
  REKEY_FINGERPRINT_KEY: z.string().min(32, "expected at least 32 characters (a random key, e.g. openssl rand -hex 32)").optional(),
  REKEY_WORKER_CONCURRENCY: int(1, 1_000, "a whole number from 1 to 1000").default(DEFAULT_WORKER_CONCURRENCY),
  REKEY_AUDIT_MAXLEN: int(1_000, 100_000_000, "a whole number from 1000 to 100000000").default(100_000),
  REKEY_SCHEDULER_TICK: z
    .string()
    .default("5s")
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === undefined || ms < 1_000 || ms > 3_600_000) {
        ctx.addIssue({ code: "custom", message: 'expected a duration from 1s to 1h, such as "5s"' });
        return z.NEVER;
      }
      return ms;
    }),
  REKEY_WORKER_LOCK_DURATION: durationBetween(1_000, 600_000, 'expected a duration from 1s to 10m, such as "60s"').optional(),
  REKEY_WORKER_STALLED_INTERVAL: durationBetween(500, 600_000, 'expected a duration from 500ms to 10m, such as "15s"').optional(),
  REKEY_REQUEST_TIMEOUT: durationBetween(100, 300_000, 'expected a duration from 100ms to 5m, such as "15s"').optional(),
  REKEY_REDIS_CONNECT_TIMEOUT: durationBetween(100, 300_000, 'expected a duration from 100ms to 5m, such as "10s"').default(10_000),
  REKEY_HEALTH_PORT: int(0, 65_535, "a port number from 0 to 65535 (0 picks a free port)").optional(),
  REKEY_HEALTH_HOST: z.string().min(1).default("127.0.0.1"),
  REKEY_RECONCILE_INTERVAL: z
    .string()
    .default("10m")
    .transform((v, ctx) => {
      if (v === "off") return undefined;
      const ms = parseDuration(v);
      if (ms === undefined || ms < 1_000 || ms > 86_400_000) {
        ctx.addIssue({ code: "custom", message: 'expected a duration from 1s to 24h, such as "10m", or off' });
        return z.NEVER;
      }
      return ms;
    }),
  AWS_REGION: z.string().regex(/^[a-z]{2}(-[a-z0-9]+)+$/, "expected an AWS region such as eu-central-1").optional(),
  AWS_DEFAULT_REGION: z.string().regex(/^[a-z]{2}(-[a-z0-9]+)+$/, "expected an AWS region such as eu-central-1").optional(),
  REKEY_API_RATE_LIMIT: int(1, 1_000_000, "a whole number of requests per minute from 1 to 1000000").default(1_200),
  REKEY_API_IDENTITY_RATE_LIMIT: int(1, 1_000_000, "a whole number of requests per minute from 1 to 1000000").default(600),
  REKEY_OIDC_ISSUER: z.url({ protocol: /^https?$/, error: "expected the issuer URL (https://…)" }).optional(),
  REKEY_OIDC_AUDIENCE: z.string().min(1).optional(),
  REKEY_OIDC_JWKS_URL: z.url({ protocol: /^https?$/, error: "expected the URL of the issuer's JWKS (https://…)" }).optional(),
  REKEY_OIDC_CLAIM: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "expected a claim name such as groups").default("groups"),
  REKEY_OIDC_SCOPE_MAP: z.string().min(1).optional(),
  REKEY_AUDIT_SINK: z
    .string()
    .refine((v) => parseSinkSpec(v) !== undefined, "expected stdout, file:<path>, or an http(s):// URL")
    .optional(),
  REKEY_AUDIT_SINK_TOKEN: z.string().min(1).optional(),
  REKEY_AUDIT_FILE_MAX_BYTES: int(1_048_576, 1_099_511_627_776, "a size in bytes from 1048576 (1 MiB) to 1099511627776 (1 TiB)").default(104_857_600),
  REKEY_PUBLIC_URL: z
    .url({ protocol: /^https?$/, error: "expected the http(s) URL at which browsers reach the API, e.g. https://rekey.example.com" })
    .refine((v) => !/[?#]/.test(v), "expected a URL without query or fragment")
    .optional(),
  REKEY_TLS_CERT: z.string().min(1).optional(),
  REKEY_TLS_KEY: z.string().min(1).optional(),
  REKEY_TLS_CLIENT_CA: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS, { error: `expected one of ${LOG_LEVELS.join(", ")}` }).default("info"),
});

function durationBetween(min: number, max: number, message: string) {
  return z.string().transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < min || ms > max) {
      ctx.addIssue({ code: "custom", message });
      return z.NEVER;
    }
    return ms;
  });
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable (`FOO=` in a compose file) means "not set", not "set to nothing".
  const input: Record<string, string> = {};
  const fileProblems: string[] = [];
  for (const key of Object.keys(Env.shape)) {
    let value: string | undefined;
    if (SECRET_VARIABLES.has(key)) {
      try {
        value = readEnvOrFile(env, key);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        fileProblems.push(err.message);
      }
    } else value = env[key];
    if (value !== undefined && value !== "") input[key] = value;
  }
  const parsed = Env.safeParse(input);
  if (!parsed.success || fileProblems.length) {
    const lines = (parsed.error?.issues ?? []).map((issue) => {
      const name = String(issue.path[0] ?? "environment");
      const value = input[name];
      // A value read from a file is named by the variable that pointed at the file.
      const label = SECRET_VARIABLES.has(name) && env[`${name}_FILE`] ? `${name} (from ${name}_FILE)` : name;
      const shown = value === undefined || SECRET_VARIABLES.has(name) ? "" : ` (got ${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)})`;
      return `${label}: ${issue.message}${shown}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${[...fileProblems, ...lines].join("\n  ")}`);
  }
  const e = parsed.data;
  if (Boolean(e.REKEY_TLS_CERT) !== Boolean(e.REKEY_TLS_KEY)) {
    throw new ConfigError(`invalid configuration:\n  ${e.REKEY_TLS_CERT ? "REKEY_TLS_KEY" : "REKEY_TLS_CERT"}: set REKEY_TLS_CERT and REKEY_TLS_KEY together (the certificate and its private key, PEM files)`);
  }
  if (e.REKEY_TLS_CLIENT_CA && !e.REKEY_TLS_CERT) {
    throw new ConfigError("invalid configuration:\n  REKEY_TLS_CLIENT_CA: client certificates need HTTPS: set REKEY_TLS_CERT and REKEY_TLS_KEY too");
  }
  let oidc: OidcOptions | undefined;
  if (e.REKEY_OIDC_ISSUER) {
    const missing = [!e.REKEY_OIDC_AUDIENCE && "REKEY_OIDC_AUDIENCE", !e.REKEY_OIDC_SCOPE_MAP && "REKEY_OIDC_SCOPE_MAP"].filter(Boolean);
    if (missing.length) throw new ConfigError(`invalid configuration:\n  ${missing.map((m) => `${m}: required with REKEY_OIDC_ISSUER`).join("\n  ")}`);
    oidc = { issuer: e.REKEY_OIDC_ISSUER, audience: e.REKEY_OIDC_AUDIENCE!, jwksUrl: e.REKEY_OIDC_JWKS_URL, claim: e.REKEY_OIDC_CLAIM, scopeMap: parseScopeMap(e.REKEY_OIDC_SCOPE_MAP!) };
  } else if (e.REKEY_OIDC_AUDIENCE || e.REKEY_OIDC_SCOPE_MAP || e.REKEY_OIDC_JWKS_URL) {
    throw new ConfigError("invalid configuration:\n  REKEY_OIDC_ISSUER: required with the other REKEY_OIDC_* variables");
  }
  const redis = redisTarget(e);
  const problem = prefixProblem(redis, e.REKEY_PREFIX);
  if (problem) throw new ConfigError(`invalid configuration:\n  ${problem}`);
  return {
    redis,
    prefix: e.REKEY_PREFIX,
    policyDir: e.REKEY_POLICY_DIR,
    apiHost: e.REKEY_API_HOST,
    apiPort: e.REKEY_API_PORT,
    adminTokenHash: e.REKEY_ADMIN_TOKEN_HASH,
    fingerprintKey: e.REKEY_FINGERPRINT_KEY,
    workerConcurrency: e.REKEY_WORKER_CONCURRENCY,
    auditMaxLen: e.REKEY_AUDIT_MAXLEN,
    schedulerTickMs: e.REKEY_SCHEDULER_TICK,
    awsRegion: e.AWS_REGION ?? e.AWS_DEFAULT_REGION,
    logLevel: e.LOG_LEVEL,
    workerLockMs: e.REKEY_WORKER_LOCK_DURATION,
    workerStalledIntervalMs: e.REKEY_WORKER_STALLED_INTERVAL,
    requestTimeoutMs: e.REKEY_REQUEST_TIMEOUT,
    redisConnectTimeoutMs: e.REKEY_REDIS_CONNECT_TIMEOUT,
    healthPort: e.REKEY_HEALTH_PORT,
    healthHost: e.REKEY_HEALTH_HOST,
    apiRateLimit: e.REKEY_API_RATE_LIMIT,
    apiIdentityRateLimit: e.REKEY_API_IDENTITY_RATE_LIMIT,
    oidc,
    reconcileEveryMs: e.REKEY_RECONCILE_INTERVAL,
    auditSink: e.REKEY_AUDIT_SINK ? parseSinkSpec(e.REKEY_AUDIT_SINK, { maxBytes: e.REKEY_AUDIT_FILE_MAX_BYTES, token: e.REKEY_AUDIT_SINK_TOKEN }) : undefined,
    publicUrl: e.REKEY_PUBLIC_URL,
    tls: e.REKEY_TLS_CERT && e.REKEY_TLS_KEY ? { cert: e.REKEY_TLS_CERT, key: e.REKEY_TLS_KEY, clientCa: e.REKEY_TLS_CLIENT_CA } : undefined,
  };
}

/**
 * One of three ways to reach Redis. Mixing them is an error rather than a silent choice: an
 * operator who set REDIS_SENTINELS and forgot an old REDIS_URL must not end up on the wrong Redis.
 */
function redisTarget(e: z.infer<typeof Env>): RedisTarget {
  const set = (["REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES"] as const).filter((k) => e[k] !== undefined);
  if (set.length > 1) throw new ConfigError(`invalid configuration:\n  ${set.join(", ")}: set only one of REDIS_URL (a single Redis), REDIS_SENTINELS (Sentinel) and REDIS_CLUSTER_NODES (Cluster)`);
  const bad = (lines: string[]) => new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  const sentinelOnly = (["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_TLS"] as const).filter((k) => e[k] !== undefined);
  const nodeAuth = (["REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_TLS", "REDIS_TLS_CA_FILE"] as const).filter((k) => e[k] !== undefined);
  if (!e.REDIS_SENTINELS && sentinelOnly.length) throw bad(sentinelOnly.map((k) => `${k}: only used with REDIS_SENTINELS (the sentinels' addresses), which is not set`));
  if (!e.REDIS_SENTINELS && !e.REDIS_CLUSTER_NODES) {
    if (nodeAuth.length) throw bad(nodeAuth.map((k) => `${k}: only used with REDIS_SENTINELS or REDIS_CLUSTER_NODES; a single Redis takes its user, password and TLS from REDIS_URL (user:password@, rediss://)`));
    return { kind: "single", url: e.REDIS_URL ?? "redis://127.0.0.1:6379" };
  }
  const auth = {
    username: e.REDIS_USERNAME,
    password: e.REDIS_PASSWORD,
    tls: e.REDIS_TLS ?? false,
    tlsCa: e.REDIS_TLS_CA_FILE ? readTlsCa("REDIS_TLS_CA_FILE", e.REDIS_TLS_CA_FILE) : undefined,
  };
  if (e.REDIS_CLUSTER_NODES) return { kind: "cluster", nodes: e.REDIS_CLUSTER_NODES, ...auth };
  if (!e.REDIS_SENTINEL_MASTER) throw bad(["REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS: the master group name the sentinels monitor (sentinel monitor <name> ...), such as mymaster"]);
  return {
    kind: "sentinel",
    sentinels: e.REDIS_SENTINELS!,
    masterName: e.REDIS_SENTINEL_MASTER,
    sentinelUsername: e.REDIS_SENTINEL_USERNAME,
    sentinelPassword: e.REDIS_SENTINEL_PASSWORD,
    sentinelTls: e.REDIS_SENTINEL_TLS ?? false,
    ...auth,
  };
}
