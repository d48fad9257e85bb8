/**
 * A whole rekey in the benchmark process — runtime on Redis, rotation worker, HTTP API — against
 * the fakes in their own process (bench/fakes-process.ts), plus the baseline: the same provider
 * and store calls, in the engine's order, with the same concurrency and no queue, no Redis.
 *
 * Every policy is a LaunchDarkly token (create-delete: issue beside the old token, verify it, one
 * write straight to AWSCURRENT, wait for the push confirmation, delete the old token) with one push
 * consumer. The consumer (bench/consumer-process.ts, its own process like the services it stands
 * for) confirms over HTTP as soon as its rotation parks awaiting confirmation (BullMQ's `delayed`
 * event): the figure is rekey's, not a consumer's reaction time.
 */
import { fork, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { createLogger } from "../../src/log.ts";
import { Policy } from "../../src/policy/schema.ts";
import { startApiServer, startRotationWorker, type Stoppable } from "../../src/processes.ts";
import type { Provider, ProviderContext } from "../../src/providers/types.ts";
import { refOf } from "../../src/rotation/scope.ts";
import { createRuntime, type Runtime } from "../../src/runtime.ts";
import { AwsSecretsManagerStore } from "../../src/stores/aws-secrets-manager.ts";
import type { SecretRef, SecretStore, StoredVersion } from "../../src/stores/types.ts";
import type { ConsumerReport } from "../consumer-process.ts";
import type { FakesDrain, FakesRequest, FakesSetup } from "../fakes-process.ts";
import { InMemoryStore, inMemoryProviders } from "./in-memory.ts";
import { benchFile, tsxExecArgv } from "./child.ts";

export const REGION = "us-east-1";
const CONSUMER_TOKEN = "bench-consumer-token-0123456789abcdef";
const FINGERPRINT_KEY = "bench-fingerprint-key-0123456789abcdef0123";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The fakes process, over IPC. */
export class FakesClient {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (msg: { id?: number; result?: unknown; error?: string }) => {
      if (msg.id === undefined) return;
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (msg.error !== undefined) w?.reject(new Error(`fakes process: ${msg.error}`));
      else w?.resolve(msg.result);
    });
    child.on("exit", (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`fakes process exited (${code})`));
      this.waiting.clear();
    });
  }

  /** `script` (a file in bench/) and `args`: another fakes process speaking the same protocol (bench/leak.ts). */
  static async start(script = "fakes-process.ts", args: string[] = [], nodeFlags: readonly string[] = []): Promise<FakesClient> {
    const child = fork(benchFile(script), args, { execArgv: tsxExecArgv(nodeFlags), stdio: ["ignore", "inherit", "inherit", "ipc"] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("fakes process did not start within 30 s")), 30_000);
      child.once("message", () => {
        clearTimeout(timer);
        resolve();
      });
      child.once("exit", (code) => reject(new Error(`fakes process exited (${code}) before it was ready`)));
    });
    return new FakesClient(child);
  }

  request<T>(msg: FakesRequest extends infer R ? (R extends unknown ? Omit<R, "id"> : never) : never, timeoutMs = 60_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`fakes process: no answer to ${msg.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ ...msg, id });
    });
  }

  /** Any message of another fakes process's protocol (its own `type`s); answered like request(). */
  call<T>(msg: { type: string } & Record<string, unknown>, timeoutMs = 60_000): Promise<T> {
    return this.request<T>(msg as unknown as Parameters<FakesClient["request"]>[0], timeoutMs);
  }

  async stop(): Promise<void> {
    await this.request({ type: "stop" }, 10_000).catch(() => undefined);
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

/**
 * Wall time, this process's CPU (user + system) and its event loop's busy share, from now until
 * `stop()`: what every kind of engine run reports.
 */
function startMeter(): { stop(): { wallMs: number; cpuMs: number; busy: number } } {
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  return {
    stop() {
      const wallMs = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, busy: performance.eventLoopUtilization(elu0).utilization };
    },
  };
}

export interface RigOptions {
  redisUrl: string;
  policies: number;
  /** Policies per LaunchDarkly account (fake instance). */
  perAccount: number;
  concurrency: number;
  /**
   * The store and the LaunchDarkly calls answered from memory (./in-memory.ts), for every kind:
   * the rekey process's CPU is then rekey's own overhead alone (for profiling; the references cost
   * next to nothing, so their ratios mean nothing).
   */
  inMemory?: boolean;
}

export interface RekeyRun {
  wallMs: number;
  /** This process's CPU (user + system) from the first rotation's start to the last one's end. */
  cpuMs: number;
  /** The share of the run the event loop was busy (not waiting for I/O or timers): 1 = never idle. */
  busy: number;
  completed: number;
  failed: number;
  /** Confirmation sent -> old token deleted at the fake, ms, per rotation. */
  confirmToRevokeMs: number[];
  drain: FakesDrain;
}

export interface BaselineRun {
  wallMs: number;
  /** This process's CPU (user + system) from the first rotation's start to the last one's end. */
  cpuMs: number;
  /** The share of the run the event loop was busy (not waiting for I/O or timers): 1 = never idle. */
  busy: number;
  completed: number;
  drain: FakesDrain;
}

interface RunState {
  /** Policy index by policy id, for the policies this run rotates. */
  expected: Map<string, number>;
  jobs: Map<string, { i: number; rotationId: string }>;
  done: Set<string>;
  failed: Set<string>;
  onComplete?: (count: number) => void;
}

export class Rig {
  private run: RunState | undefined;
  /** Redis commands the harness itself sent on rekey's connection (its reads of the records it reports on), by command. */
  private readonly harnessCalls: Record<string, number> = {};
  /** The baseline's memory of what its last rotation of each policy made current. */
  private readonly baselineFacts = new Map<number, { versionId: string; credentialId: string }>();

  private constructor(
    readonly opts: RigOptions,
    readonly fakes: FakesClient,
    readonly rt: Runtime,
    readonly policies: Policy[],
    /** Live managed token id of each policy (the one the next rotation deletes). */
    readonly tokenOf: string[],
    private readonly roles: Stoppable[],
    readonly apiUrl: string,
    private readonly consumer: FakesClient,
    worker: ReturnType<typeof startRotationWorker>["worker"],
  ) {
    // The worker's own events: no Redis reads in this process for the harness's bookkeeping.
    worker.on("completed", (job) => this.onEnded(String(job.id), true));
    worker.on("failed", (job) => {
      // A failed attempt that will be retried is not an end.
      if (job?.finishedOn) this.onEnded(String(job.id), false);
    });
  }

  static async start(opts: RigOptions): Promise<Rig> {
    const fakes = await FakesClient.start();
    const accounts = Math.ceil(opts.policies / opts.perAccount);
    const setup = await fakes.request<FakesSetup>({ type: "setup", accounts, perAccount: opts.perAccount });
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const log = createLogger({ level: "info", destination: sink });
    const store: SecretStore & Required<Pick<SecretStore, "create">> = opts.inMemory
      ? new InMemoryStore()
      : new AwsSecretsManagerStore({
          region: REGION,
          clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: setup.awsUrl, credentials: { accessKeyId: "bench", secretAccessKey: "bench" }, maxAttempts: 3 }),
        });
    const env: Record<string, string> = {};
    setup.accounts.forEach((a, k) => (env[`LD_ADMIN_${k}`] = a.admin));
    const prefix = `rekey-bench-${process.pid}-${Date.now()}`;
    const rt = await createRuntime({
      redisUrl: opts.redisUrl,
      prefix,
      policyPaths: [],
      log,
      fingerprintKey: FINGERPRINT_KEY,
      region: REGION,
      env,
      store,
      // Otherwise the runtime's own providers, as `rekey run` builds them.
      providers: opts.inMemory ? inMemoryProviders() : undefined,
      // The emulator runs without its quota: rekey's own pacing of AWS writes is off too.
      awsWritesPerSecond: Infinity,
    });
    const policies: Policy[] = [];
    for (let i = 0; i < opts.policies; i++) {
      const t = setup.tokens[i];
      if (!t) throw new Error(`fakes set up no token for policy ${i}`);
      policies.push(
        Policy.parse({
          id: `bench-ld-${i}`,
          owner: "bench@example.com",
          provider: { kind: "launchdarkly", baseUrl: setup.accounts[t.account]?.url, management: { env: `LD_ADMIN_${t.account}` } },
          schedule: { cron: "0 3 * * 1" },
          target: { secretId: `bench/ld-${i}`, region: REGION },
          consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
          confirmation: { timeout: "1h", onTimeout: "keep-old" },
        }),
      );
    }
    rt.policies.replace(policies.map((policy) => ({ policy, file: `${policy.id}.yaml` })));
    await pool(policies.map((p, i) => ({ p, i })), 16, async ({ p, i }) => {
      await store.create(refOf(p), setup.tokens[i]?.value ?? "");
    });
    // The benchmark measures the engine: limits far above its rate (the counters still run).
    const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 1_000_000, perIdentity: 1_000_000 } });
    const worker = startRotationWorker(rt, { concurrency: opts.concurrency, log });
    const consumer = await FakesClient.start("consumer-process.ts");
    await consumer.call({ type: "setup", redisUrl: opts.redisUrl, prefix, apiUrl: api.url, token: CONSUMER_TOKEN });
    const rig = new Rig(opts, fakes, rt, policies, setup.tokens.map((t) => t.id), [worker, api], api.url, consumer, worker.worker);
    await fakes.request({ type: "drain" });
    return rig;
  }

  // ---- rekey ---------------------------------------------------------------------------------

  /** `manual@<policyId>@<rotationId>`: events may arrive before enqueue() has returned the id. */
  private ours(jobId: string): { run: RunState; i: number; rotationId: string } | undefined {
    const [kind, policyId, rotationId] = jobId.split("@");
    const run = this.run;
    const i = policyId === undefined ? undefined : run?.expected.get(policyId);
    if (kind !== "manual" || !run || i === undefined || rotationId === undefined) return undefined;
    return { run, i, rotationId };
  }

  private onEnded(jobId: string, ok: boolean): void {
    const run = this.ours(jobId)?.run;
    if (!run || run.done.has(jobId) || run.failed.has(jobId)) return;
    (ok ? run.done : run.failed).add(jobId);
    if (ok) run.onComplete?.(run.done.size);
  }

  /**
   * Rotates each given policy once through rekey: enqueue (16 requests at a time, as a scheduler
   * tick does), let the worker run, the consumer confirm each when it parks, wait for every
   * completion.
   */
  async rekeyRun(indices: number[], opts: { deadlineMs: number; onComplete?: (count: number) => void }): Promise<RekeyRun> {
    const run: RunState = { expected: new Map(indices.map((i) => [this.policies[i]?.id ?? "", i])), jobs: new Map(), done: new Set(), failed: new Set(), onComplete: opts.onComplete };
    this.run = run;
    await this.consumer.call({ type: "arm" });
    const deadline = Date.now() + opts.deadlineMs;
    const meter = startMeter();
    await pool(indices, 16, async (i) => {
      const policy = this.policies[i] as Policy;
      const rotationJob = await this.rt.rotations.enqueue({ policyId: policy.id, reason: "manual", actor: "bench" });
      run.jobs.set(rotationJob.jobId, { i, rotationId: rotationJob.rotationId });
    });
    let lastProgress = Date.now();
    let seen = 0;
    while (run.done.size + run.failed.size < indices.length) {
      if (Date.now() > deadline) throw new Error(`rekey run: ${run.done.size}/${indices.length} completed before the deadline`);
      await sleep(5);
      const n = run.done.size + run.failed.size;
      if (n !== seen) {
        seen = n;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > 3_000) {
        // Events can be missed (a trimmed event stream): look at the records themselves.
        await this.sweep(run);
        lastProgress = Date.now();
      }
    }
    // The process's CPU over the rotations alone, not the harness's bookkeeping after them.
    const { wallMs, cpuMs, busy } = meter.stop();
    const report = await this.consumer.call<ConsumerReport>({ type: "disarm" });
    const confirmedAt = new Map(report.confirmedAt);
    this.run = undefined;
    const drain = await this.fakes.request<FakesDrain>({ type: "drain" });
    const deletedAt = new Map(drain.deletes.map((d) => [d.id, d.at]));
    const confirmToRevokeMs: number[] = [];
    const records = await pool([...run.jobs], 32, async ([jobId, { i, rotationId }]) => ({ jobId, i, rec: await this.readRecord(rotationId) }));
    for (const { jobId, i, rec } of records) {
      const old = this.tokenOf[i] as string;
      const del = deletedAt.get(old);
      const conf = confirmedAt.get(jobId);
      if (del !== undefined && conf !== undefined && rec?.status === "completed") confirmToRevokeMs.push(del - conf);
      if (rec?.newCredentialId && rec.status === "completed") this.tokenOf[i] = rec.newCredentialId;
    }
    return { wallMs, cpuMs, busy, completed: run.done.size, failed: run.failed.size, confirmToRevokeMs, drain };
  }

  /** A record the harness reads to report on (one HGETALL, counted apart from rekey's commands). */
  private readRecord(rotationId: string) {
    this.harnessCalls.hgetall = (this.harnessCalls.hgetall ?? 0) + 1;
    return this.rt.state.records.get(rotationId);
  }

  private async sweep(run: RunState): Promise<void> {
    for (const [jobId, { rotationId }] of run.jobs) {
      if (run.done.has(jobId) || run.failed.has(jobId)) continue;
      const rec = await this.readRecord(rotationId);
      if (rec?.status === "completed") this.onEnded(jobId, true);
      else if (rec?.status === "failed" || rec?.status === "skipped") this.onEnded(jobId, false);
      else if (rec?.status === "awaiting-confirmation") await this.consumer.call({ type: "confirm", jobId });
    }
  }

  // ---- baseline ------------------------------------------------------------------------------

  /**
   * The same HTTP calls as a rekey rotation, in the same order, `concurrency` at a time, straight
   * from the provider adapter and the store: no queue, no Redis, no records, no audit. Like the
   * engine, it remembers which version the last rotation of a policy made current and that
   * version's token (the engine's CurrentFacts): while that version is still current, no identity
   * call and no sweep before issuing.
   */
  baselineRun(indices: number[], opts: { deadlineMs: number }): Promise<BaselineRun> {
    return this.scriptRun("baseline", indices, opts, async ({ i, ctx, provider, store, ref, rotationId, current }) => {
      // start: the current value's credential id from the last rotation, else asked
      const known = this.baselineFacts.get(i);
      const clean = known?.versionId === current.versionId;
      const old = clean ? { credentialId: known.credentialId } : await provider.identify(ctx, current.value);
      // issuing: leftovers of earlier rotations swept unless the last one left none; issue; verify
      // in memory; one write straight to AWSCURRENT
      if (!clean && provider.sweep && old.credentialId) await provider.sweep(ctx, [old.credentialId]);
      const issued = await provider.issue!(ctx, { value: current.value, credentialId: old.credentialId });
      await provider.verify(ctx, issued.value, { credentialId: issued.credentialId, meta: issued.meta });
      await store.putCurrent!(ref, rotationId, issued.value, ctx.signal);
      // (the consumer confirms) revoking: by id, no value read
      await provider.revoke!(ctx, { value: "", credentialId: old.credentialId });
      if (issued.credentialId) this.baselineFacts.set(i, { versionId: rotationId, credentialId: issued.credentialId });
      return issued.credentialId;
    });
  }

  /**
   * The reference a careful hand-written script sets, `concurrency` at a time: read the current
   * value, issue beside the old token (whose id the script keeps), verify the new value, one store
   * write straight to AWSCURRENT, revoke the old token. Nothing re-read, no sweeps, no queue, no
   * Redis, no records, no audit.
   */
  minimalRun(indices: number[], opts: { deadlineMs: number }): Promise<BaselineRun> {
    return this.scriptRun("minimal run", indices, opts, async ({ i, ctx, provider, store, ref, rotationId, current }) => {
      const old = { value: current.value, credentialId: this.tokenOf[i] };
      const issued = await provider.issue!(ctx, old);
      await provider.verify(ctx, issued.value, { credentialId: issued.credentialId, meta: issued.meta });
      await store.putCurrent!(ref, rotationId, issued.value, ctx.signal);
      await provider.revoke!(ctx, old);
      return issued.credentialId;
    });
  }

  /**
   * A rotation script over `indices`, `concurrency` at a time: each call gets the policy's context
   * and its current value (read once) and returns the new token's id.
   */
  private async scriptRun(
    name: string,
    indices: number[],
    opts: { deadlineMs: number },
    rotate: (s: { i: number; ctx: ProviderContext; provider: Provider; store: SecretStore; ref: SecretRef; rotationId: string; current: StoredVersion }) => Promise<string | undefined>,
  ): Promise<BaselineRun> {
    const deadline = Date.now() + opts.deadlineMs;
    const provider = this.rt.providers.launchdarkly as Provider;
    const store = this.rt.store;
    if (!store.putCurrent) throw new Error(`${name}: the store cannot write straight to AWSCURRENT`);
    let completed = 0;
    const meter = startMeter();
    await pool(indices, this.opts.concurrency, async (i) => {
      if (Date.now() > deadline) throw new Error(`${name}: past the deadline`);
      const policy = this.policies[i] as Policy;
      const ref = refOf(policy);
      const rotationId = randomUUID();
      const ctx: ProviderContext = { config: policy.provider, policyId: policy.id, rotationId, signal: new AbortController().signal, resolve: this.rt.resolve, now: Date.now, reason: "manual" };
      const current = await store.getCurrent(ref, ctx.signal);
      if (!current) throw new Error(`${name}: secret of ${policy.id} is empty`);
      const newId = await rotate({ i, ctx, provider, store, ref, rotationId, current });
      if (newId) this.tokenOf[i] = newId;
      completed++;
    });
    // The process's CPU over the rotations alone, not the harness's bookkeeping after them.
    const { wallMs, cpuMs, busy } = meter.stop();
    const drain = await this.fakes.request<FakesDrain>({ type: "drain" });
    return { wallMs, cpuMs, busy, completed, drain };
  }

  /**
   * The Redis server's CPU time and the commands it served, by command — less those the consumer
   * process sent (its reads of the audit stream, `consumer`): a real consumer learns that its
   * rotation waits for it from rekey's push or webhook, not from Redis — and less the harness's
   * own reads of the records it reports on.
   */
  async redisCounters(): Promise<{ cpuMs: number; calls: Record<string, number>; consumer: Record<string, number> }> {
    const cpu = await this.rt.redis.info("cpu");
    const stats = await this.rt.redis.info("commandstats");
    const consumer = await this.consumer.call<Record<string, number>>({ type: "count" });
    const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
    const calls: Record<string, number> = {};
    for (const m of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      const c = m[1] as string;
      calls[c] = Number(m[2]) - (consumer[c] ?? 0) - (this.harnessCalls[c] ?? 0);
    }
    return { cpuMs: (num("used_cpu_user") + num("used_cpu_sys")) * 1000, calls, consumer };
  }

  async redisUsedMemory(): Promise<number> {
    const info = await this.rt.redis.info("memory");
    return Number(/^used_memory:(\d+)/m.exec(info)?.[1]);
  }

  async close(): Promise<void> {
    await this.consumer.stop();
    for (const r of this.roles) await r.stop().catch(() => undefined);
    await this.rt.close();
    await this.fakes.stop();
  }
}

/** Runs `fn` over `items`, `limit` at a time; results in item order. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const k = next++;
      out[k] = await fn(items[k] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
