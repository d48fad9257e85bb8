/**
 * A whole rekey in one test process: the AWS emulator, the real store on the real SDK, a runtime
 * on the shared test Redis with a fresh prefix, a rotation worker and the HTTP API on 127.0.0.1.
 * Provider fakes are started by each test and referred to from its policies.
 */
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type { Worker } from "bullmq";
import { createLogger } from "../../src/log.ts";
import { Policy, type PolicyInput } from "../../src/policy/schema.ts";
import { type ApiServerOptions, startApiServer, startRotationWorker } from "../../src/processes.ts";
import type { ProviderRegistry } from "../../src/providers/types.ts";
import type { RotationObserver } from "../../src/observe/metrics.ts";
import type { CrashPoint } from "../../src/rotation/engine.ts";
import type { ProviderRates } from "../../src/rotation/pacing.ts";
import { type RedisTarget, scanKeys } from "../../src/redis-connection.ts";
import { createRuntime, type Runtime } from "../../src/runtime.ts";
import { AwsSecretsManagerStore } from "../../src/stores/aws-secrets-manager.ts";
import { type AwsEmulator, type AwsEmulatorOptions, startAwsEmulator } from "../fakes/aws/emulator.ts";
import { deleteKeys, redisUrl, testPrefix } from "./redis.ts";

export const REGION = "us-east-1";
export const ADMIN_TOKEN = "rekey-test-admin-token-0123456789";
export const FINGERPRINT_KEY = "rekey-test-fingerprint-key-0123456789abcdef";

export function emulatorClient(emulator: AwsEmulator, region = REGION, requestTimeoutMs?: number): SecretsManagerClient {
  return new SecretsManagerClient({
    region,
    endpoint: emulator.url,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: 3,
    // As the runtime's own store does with REKEY_REQUEST_TIMEOUT.
    ...(requestTimeoutMs ? { requestHandler: { requestTimeout: requestTimeoutMs, throwOnRequestTimeout: true } } : {}),
  });
}

export function emulatorStore(emulator: AwsEmulator, requestTimeoutMs?: number): AwsSecretsManagerStore {
  return new AwsSecretsManagerStore({ region: REGION, clientFor: (r) => emulatorClient(emulator, r, requestTimeoutMs) });
}

/** A pino destination that keeps every line, so tests can scan logs for secrets. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    cb();
  }
  text(): string {
    return this.lines.join("\n");
  }
}

export interface StackOptions {
  policies: PolicyInput[];
  env?: Record<string, string>;
  concurrency?: number;
  /** Start a worker in this process (default true). */
  worker?: boolean;
  providers?: ProviderRegistry;
  emulator?: AwsEmulatorOptions;
  crashAt?: (point: CrashPoint) => void;
  awsWritesPerSecond?: number;
  /** Provider limits paced proactively (default: the documented ones). */
  providerRates?: ProviderRates;
  /** Per-request timeout (ms) for provider and AWS calls (REKEY_REQUEST_TIMEOUT). */
  requestTimeoutMs?: number;
  /** API options beyond host, port, admin token and log (SSO, rate limits, refusal window). */
  api?: Pick<ApiServerOptions, "oidc" | "rateLimit" | "refusalAuditWindowMs">;
  /** The Redis to use (default: the shared test Redis), e.g. a Sentinel or Cluster topology. */
  redis?: RedisTarget;
  /** Key prefix (default: a fresh one); a Cluster needs a hash-tagged one. */
  prefix?: string;
  /** Step durations and failures (metrics) of the in-process worker. */
  observer?: RotationObserver;
  /** Human-step notifications carry one-time submit links to this stack's API (REKEY_PUBLIC_URL). */
  submitLinks?: boolean;
  /** How long a job awaiting confirmation lingers before it parks (default: engineDefaults). */
  confirmationLingerMs?: number;
}

export interface Stack {
  /** The in-process BullMQ worker (absent with `worker: false`). */
  worker?: Worker;
  emulator: AwsEmulator;
  store: AwsSecretsManagerStore;
  rt: Runtime;
  prefix: string;
  apiUrl: string;
  logs: LogCapture;
  stopWorker(): Promise<void>;
  close(): Promise<void>;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const emulator = await startAwsEmulator({ writesPerSecond: Infinity, ...opts.emulator });
  const store = emulatorStore(emulator, opts.requestTimeoutMs);
  const prefix = opts.prefix ?? testPrefix("stack");
  const logs = new LogCapture();
  const log = createLogger({ level: "debug", destination: logs });
  const rt = await createRuntime({
    ...(opts.redis ? { redis: opts.redis } : { redisUrl: redisUrl() }),
    prefix,
    policyPaths: [],
    log,
    fingerprintKey: FINGERPRINT_KEY,
    region: REGION,
    env: { ...opts.env },
    store,
    providers: opts.providers,
    crashAt: opts.crashAt,
    awsWritesPerSecond: opts.awsWritesPerSecond ?? Infinity,
    requestTimeoutMs: opts.requestTimeoutMs,
    providerRates: opts.providerRates,
    observer: opts.observer,
  });
  rt.policies.replace(opts.policies.map((p) => ({ policy: Policy.parse(p), file: `${p.id}.yaml` })));
  const { tokenHash } = await import("../../src/consumers/fingerprint.ts");
  const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, adminTokenHash: tokenHash(ADMIN_TOKEN), log, ...opts.api });
  const publicUrl = opts.submitLinks ? api.url : undefined;
  const worker = opts.worker === false ? undefined : startRotationWorker(rt, { concurrency: opts.concurrency ?? 4, log, publicUrl, confirmationLingerMs: opts.confirmationLingerMs });
  let workerStopped = !worker;
  return {
    worker: worker?.worker,
    emulator,
    store,
    rt,
    prefix,
    apiUrl: api.url,
    logs,
    async stopWorker() {
      if (!workerStopped) await worker?.stop();
      workerStopped = true;
    },
    async close() {
      if (!workerStopped) await worker?.stop();
      await api.stop();
      await deleteKeys(rt.redis, prefix);
      await rt.close();
      await emulator.close();
    },
  };
}

/** A LaunchDarkly policy on `ld` whose management token is LD_ADMIN_TOKEN, stored at prod/<id>. */
export function ldPolicy(ld: { url: string }, id: string, extra: Partial<PolicyInput> = {}): PolicyInput {
  return {
    id,
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    target: { secretId: `prod/${id}`, region: REGION },
    ...extra,
  };
}

/** Poll until `fn` returns a value (not undefined/false), or fail after `timeoutMs`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Every string stored under a prefix in Redis: keys, and values of every type. */
export async function dumpRedis(rt: Runtime, prefix: string): Promise<string> {
  const out: string[] = [];
  {
    for (const k of await scanKeys(rt.redis, `${prefix}*`)) {
      out.push(k);
      const type = await rt.redis.type(k);
      if (type === "string") out.push((await rt.redis.get(k)) ?? "");
      else if (type === "hash") out.push(JSON.stringify(await rt.redis.hgetall(k)));
      else if (type === "list") out.push(JSON.stringify(await rt.redis.lrange(k, 0, -1)));
      else if (type === "set") out.push(JSON.stringify(await rt.redis.smembers(k)));
      else if (type === "zset") out.push(JSON.stringify(await rt.redis.zrange(k, 0, "-1")));
      else if (type === "stream") out.push(JSON.stringify(await rt.redis.xrange(k, "-", "+")));
    }
  }
  return out.join("\n");
}

/** The environment of the `rekey` CLI pointed at `stack`, with policy files from `policyDir`. */
export function cliEnv(stack: Pick<Stack, "prefix" | "emulator">, policyDir: string): Record<string, string> {
  return {
    REDIS_URL: redisUrl(),
    REKEY_PREFIX: stack.prefix,
    REKEY_POLICY_DIR: policyDir,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url,
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    LOG_LEVEL: "silent",
  };
}
