/**
 * Process wiring shared by the entry points (workers/, `rekey api|scheduler|run`, CLI commands):
 * Redis connections, the queues, the store, the providers, the policies, and the engine. Nothing
 * in the rest of src/ creates a connection; it all takes its dependencies as arguments.
 */
import { Queue } from "bullmq";
import { Audit } from "./audit/audit.ts";
import type { RedisBatch } from "./util/redis-batch.ts";
import { readEnvOrFile } from "./config.ts";
import { ApiTokens } from "./auth/tokens.ts";
import { ConfigError, PolicyError, RedisUnavailableError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { RotationObserver } from "./observe/metrics.ts";
import { enqueueNotification } from "./notify/outbox.ts";
import { PolicySet } from "./policy/policy-set.ts";
import type { CredentialRef, Policy } from "./policy/schema.ts";
import { createProviders } from "./providers/index.ts";
import { assertPrefixFits, createRedisClient, describeRedisTarget, type RedisClient, type RedisTarget, redisTargetVariables } from "./redis-connection.ts";
import type { ProviderRegistry } from "./providers/types.ts";
import { engineDefaults, NOTIFY_QUEUE, ROTATION_QUEUE, rotationJobOptions } from "./rotation/defaults.ts";
import { type CrashPoint, type EngineEvent, RotationEngine } from "./rotation/engine.ts";
import { type ProviderRates, RateLimiter } from "./rotation/pacing.ts";
import { leakHandOffJobId } from "./rotation/job-ids.ts";
import { ProviderGateway } from "./rotation/gateway.ts";
import { RedisKeys } from "./rotation/keys.ts";
import { Rotations } from "./rotation/requests.ts";
import { RekeyState } from "./rotation/state.ts";
import { AwsSecretsManagerStore } from "./stores/aws-secrets-manager.ts";
import type { SecretStore } from "./stores/types.ts";
import { withTimeout } from "./util/timeout.ts";

export interface RuntimeOptions {
  /** The Redis to use (config.redis); or `redisUrl`, a single Redis at that URL. */
  redis?: RedisTarget;
  redisUrl?: string;
  prefix: string;
  policyPaths: string[];
  log: Logger;
  auditMaxLen?: number;
  fingerprintKey?: string;
  region?: string;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  /** Tests inject these; production builds them. */
  store?: SecretStore;
  providers?: ProviderRegistry;
  awsWritesPerSecond?: number;
  /** Budget of one provider or AWS request in ms (default 15 s; REKEY_REQUEST_TIMEOUT). */
  requestTimeoutMs?: number;
  /** Overrides of the provider limits paced proactively (src/rotation/pacing.ts). */
  providerRates?: ProviderRates;
  crashAt?: (point: CrashPoint) => void;
  /** Step durations and failures of the rotations this process runs (metrics). */
  observer?: RotationObserver;
  /**
   * Give up when Redis cannot be reached within this many ms (short commands: the operator is
   * waiting). Unset: wait and reconnect for as long as it takes (long-running roles).
   */
  connectTimeoutMs?: number;
}

export interface Runtime {
  redis: RedisClient;
  queue: Queue;
  notifyQueue: Queue;
  state: RekeyState;
  audit: Audit;
  store: SecretStore;
  providers: ProviderRegistry;
  policies: PolicySet;
  rotations: Rotations;
  /** Every provider call and store write of this process (gateway.ts). */
  gateway: ProviderGateway;
  /** Named API tokens (`rekey token`, the API's guard). */
  tokens: ApiTokens;
  engine: RotationEngine;
  resolve(ref: CredentialRef): Promise<string>;
  /** REKEY_FINGERPRINT_KEY, where set (leak by value, confirmations by fingerprint). */
  fingerprintKey?: string;
  /** BullMQ connection options for Workers (each Worker opens its own connections). */
  connection: RedisClient;
  /** Where Redis is (for connections a role opens itself, such as QueueEvents). */
  redisTarget: RedisTarget;
  prefix: string;
  close(): Promise<void>;
}

/**
 * BullMQ needs `maxRetriesPerRequest: null` on its connections (blocking commands). rekey's own
 * connection (`pipelined`) sends the commands issued in one tick — by concurrent rotations, or
 * reads a step makes side by side — in one write; it never blocks, so nothing waits behind one.
 */
export function redisConnection(target: RedisTarget | string, opts: { pipelined?: boolean } = {}): RedisClient {
  return createRedisClient(typeof target === "string" ? { kind: "single", url: target } : target, opts);
}

function ready(c: RedisClient): Promise<void> {
  return c.status === "ready" ? Promise.resolve() : new Promise((resolve) => c.once("ready", () => resolve()));
}

/** True once every wait is over; false when `ms` passed first, or a wait failed. */
function reachableWithin(ms: number, waits: Promise<unknown>[]): Promise<boolean> {
  return withTimeout(Promise.all(waits), ms, "not reachable").then(
    () => true,
    () => false,
  );
}

/** BullMQ prefix: under rekey's own prefix so one Redis can host several installs. */
export function bullPrefix(prefix: string): string {
  return new RedisKeys(prefix).queues();
}

export function credentialResolver(store: SecretStore, env: NodeJS.ProcessEnv): (ref: CredentialRef) => Promise<string> {
  return async (ref) => {
    if ("env" in ref) {
      // The variable, or the file its <NAME>_FILE names (a mounted Secret volume).
      const v = readEnvOrFile(env, ref.env);
      if (!v) throw new ConfigError(`environment variable ${ref.env} (a credential a policy refers to) is not set, nor ${ref.env}_FILE`);
      return v;
    }
    const cur = await store.getCurrent({ secretId: ref.secretId, region: ref.region, jsonKey: ref.jsonKey });
    if (!cur) throw new ConfigError(`secret ${ref.secretId}${ref.jsonKey ? ` (key ${ref.jsonKey})` : ""}, a credential a policy refers to, holds no value`);
    return cur.value;
  };
}

/** fetch with a per-request budget (ProviderHttp's own default is 15 s). */
function timedFetch(ms: number): typeof fetch {
  return (input, init) => {
    const budget = AbortSignal.timeout(ms);
    return fetch(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, budget]) : budget });
  };
}

export async function createRuntime(opts: RuntimeOptions): Promise<Runtime> {
  const now = opts.now ?? Date.now;
  const env = opts.env ?? process.env;
  const target: RedisTarget | undefined = opts.redis ?? (opts.redisUrl !== undefined ? { kind: "single", url: opts.redisUrl } : undefined);
  if (!target) throw new ConfigError("createRuntime: give redis (a Redis target) or redisUrl");
  // On a Cluster, a prefix without a hash tag would fail at the first multi-key script.
  assertPrefixFits(target, opts.prefix);
  // Not auto-pipelined: a rotation awaits each of its few Redis round trips in turn, so a flush
  // rarely holds more than one command, and auto-pipelining only deferred each write to the next
  // tick and built a pipeline (with every script copied onto it) per flush — measured side by
  // side in the engine benchmark, rekey's CPU per rotation 3.8 → 3.5 ms and its wall time 5.1 → 3.9 s.
  // What concurrent rotations send in one turn of the event loop still leaves in one write: every
  // client coalesces its writes (util/coalesce-writes.ts).
  const redis = redisConnection(target);
  const connection = redisConnection(target);
  // ioredis reconnects by itself (a Redis restart); without a listener each error would also be
  // printed as an "Unhandled error event". Log it once per outage instead.
  let down = false;
  let lastError: string | undefined;
  for (const c of [redis, connection]) {
    c.on("error", (err: Error) => {
      lastError = err.message;
      if (!down) opts.log.warn({ err: err.message }, "redis connection lost; reconnecting");
      down = true;
    });
    c.on("ready", () => {
      if (down) opts.log.info("redis connection back");
      down = false;
    });
  }
  const prefix = opts.prefix;
  // BullMQ checks the Redis version on its own as a queue is created, and a queue closed before
  // that check is answered reports the check's failure as an unhandled rejection ("Connection is
  // closed": a short command that read through `redis` and closed at once). The queues skip it:
  // they only add and read jobs; the workers, which block on Redis, still check.
  const queueOpts = { connection, prefix: bullPrefix(prefix), skipVersionCheck: true, skipWaitingForReady: true };
  const queue = new Queue(ROTATION_QUEUE, { ...queueOpts, defaultJobOptions: rotationJobOptions });
  const notifyQueue = new Queue(NOTIFY_QUEUE, queueOpts);
  // A queue re-emits its connection's errors, and without a listener BullMQ prints each one to
  // stderr. The connection's own listener above has logged the outage already.
  for (const q of [queue, notifyQueue]) {
    q.on("error", (err: Error) => {
      if (!down) opts.log.warn({ err: err.message }, "redis queue error");
    });
  }
  const closeAll = async (): Promise<void> => {
    await Promise.allSettled([queue.close(), notifyQueue.close()]);
    // QUIT lets what was sent finish; without a connection it would wait for one, so drop it.
    await Promise.allSettled([redis, connection].map((c) => (c.status === "ready" ? c.quit() : c.disconnect())));
  };
  // Short commands have an operator waiting: give up after `connectTimeoutMs`. The long-running
  // roles start without Redis (the API answers /readyz with 503) and reconnect by themselves.
  if (opts.connectTimeoutMs !== undefined && !(await reachableWithin(opts.connectTimeoutMs, [ready(redis), ready(connection)]))) {
    await closeAll();
    throw new RedisUnavailableError(
      `cannot reach Redis at ${describeRedisTarget(target)} within ${opts.connectTimeoutMs / 1000} s${lastError ? ` (${lastError})` : ""}; check ${redisTargetVariables(target)} and that Redis is running`,
    );
  }
  const state = new RekeyState(redis, prefix);
  const audit = new Audit(redis, prefix, { maxLen: opts.auditMaxLen ?? 100_000, now });
  const store = opts.store ?? new AwsSecretsManagerStore({ region: opts.region, requestTimeoutMs: opts.requestTimeoutMs });
  const providers = opts.providers ?? createProviders({ now, fetch: opts.requestTimeoutMs ? timedFetch(opts.requestTimeoutMs) : undefined });
  const policies = new PolicySet(opts.policyPaths);
  if (opts.policyPaths.length) {
    const { issues } = await policies.reload();
    if (issues.length) {
      await closeAll();
      throw new PolicyError(issues);
    }
  }
  const resolve = credentialResolver(store, env);
  const notify = async (policy: Policy, event: EngineEvent): Promise<void> => {
    if (policy.notify.length === 0) return;
    await enqueueNotification(notifyQueue, policy, event, now);
  };
  // One gateway for every provider call and store write of this process: the engine's, a
  // submission's, offboarding's (context, pacing, the 429 gate, the AWS write pacing).
  const gateway = new ProviderGateway({ state, limiter: new RateLimiter(state.redis, state.keys), providers, resolve, now, providerRates: opts.providerRates, awsWritesPerSecond: opts.awsWritesPerSecond });
  const engine = new RotationEngine<RedisBatch>({
    gateway,
    state,
    audit,
    store,
    providers,
    policies,
    resolve,
    notify,
    requeueLeak: async (policyId, endedRotationId) =>
      (await rotations.enqueue({ policyId, reason: "leak", actor: "worker", jobId: leakHandOffJobId(policyId, endedRotationId) })).rotationId,
    wake: async (jobId) => {
      const job = await queue.getJob(jobId);
      if (job && (await job.isDelayed())) await job.promote().catch(() => undefined);
    },
    now,
    log: opts.log,
    fingerprintKey: opts.fingerprintKey,
    // A provider carrying out a create it received long after rekey gave up on it is unlikely:
    // four request budgets (the default budget of 15 s gives the cap).
    lostRequestSettleMs: Math.min(engineDefaults.resetSettleMs, 4 * (opts.requestTimeoutMs ?? 15_000)),
    crashAt: opts.crashAt,
    observer: opts.observer,
  });
  const rotations = new Rotations({ queue, state, audit, policies, now, store, gateway, fingerprintKey: opts.fingerprintKey, notify });
  // A wake this process's channel got for a rotation no run here listens to any more.
  state.wake.unheard = (rotationId) => rotations.wakeUnheard(rotationId);
  return {
    redis,
    queue,
    notifyQueue,
    state,
    audit,
    store,
    providers,
    policies,
    rotations,
    gateway,
    tokens: new ApiTokens(redis, prefix, now),
    engine,
    resolve,
    fingerprintKey: opts.fingerprintKey,
    connection,
    redisTarget: target,
    prefix,
    close: async () => {
      await state.wake.close();
      await closeAll();
    },
  };
}
