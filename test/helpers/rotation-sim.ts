/**
 * Drives rotations through the step table (RotationEngine.process) on the in-memory fakes, the
 * way BullMQ would: a parked job (DelayedError) runs again at its time, a failed attempt after its
 * backoff, a crashed one (the process died) as a stalled job, an UnrecoverableError ends it. Time
 * is a simulated clock, jumped forward to the next job or event, so days of waiting take no time.
 * Consumers confirm (as POST /v1/confirmations would) a set time after they are told to load the
 * new version. The checks (invariants.ts) then read the whole history.
 */
import { Writable } from "node:stream";
import { DelayedError, UnrecoverableError } from "bullmq";
import pino from "pino";
import type { EngineEvent } from "../../src/rotation/engine.ts";
import { RotationEngine } from "../../src/rotation/engine.ts";
import { ProviderGateway } from "../../src/rotation/gateway.ts";
import { leakHandOffJobId, manualJobId } from "../../src/rotation/job-ids.ts";
import type { Reason, RotationJobData } from "../../src/rotation/job.ts";
import { type Policy, type PolicyInput, Policy as PolicySchema } from "../../src/policy/schema.ts";
import { refOf } from "../../src/rotation/scope.ts";
import { Credentials, memoryRegistry } from "../fakes/memory-providers.ts";
import { MemoryStore, rng, World } from "../fakes/memory-world.ts";
import { MemoryAudit, MemoryJob, MemoryState, type MemoryTx, openLimiter } from "../fakes/memory.ts";

const HASH = `sha256:${"ab".repeat(32)}`;

/** An overlap policy (LaunchDarkly create-delete) with two required push consumers. */
export function overlapPolicy(id: string, extra: Partial<PolicyInput> = {}): Policy {
  return PolicySchema.parse({
    id,
    owner: "dana.kim@example.com",
    provider: { kind: "launchdarkly", baseUrl: "https://app.launchdarkly.com", management: { env: "LD_ADMIN" } },
    target: { secretId: `prod/${id}`, region: "eu-central-1" },
    consumers: [
      { id: "checkout", confirm: "push", tokenHash: HASH },
      { id: "billing", confirm: "push", tokenHash: HASH },
      { id: "reports", confirm: "push", tokenHash: HASH, required: false },
    ],
    ...extra,
  } satisfies PolicyInput);
}

/** A cut-over policy (QStash token: a reset kills the old value). */
export function cutoverPolicy(id: string): Policy {
  return PolicySchema.parse({
    id,
    owner: "dana.kim@example.com",
    provider: { kind: "qstash-token", email: "ops@example.com", management: { env: "UPSTASH_KEY" }, userId: "u-1" },
    target: { secretId: `prod/${id}`, region: "eu-central-1" },
    consumers: [{ id: "publisher", confirm: "push", tokenHash: HASH }],
    acceptCutover: true,
  } satisfies PolicyInput);
}

/** A Snyk service account's client secret: no list, at most two live, the value goes to AWSPENDING first. */
export function clientSecretPolicy(id: string): Policy {
  return PolicySchema.parse({
    id,
    owner: "dana.kim@example.com",
    provider: { kind: "snyk-service-account", management: { env: "SNYK_ADMIN" }, orgId: "org-1", serviceAccountId: "sa-1", clientId: "client-1" },
    target: { secretId: `prod/${id}`, region: "eu-central-1" },
    consumers: [
      { id: "checkout", confirm: "push", tokenHash: HASH },
      { id: "billing", confirm: "push", tokenHash: HASH },
    ],
  } satisfies PolicyInput);
}

/** A credential only a person can make (Snyk PAT): rekey asks the owner and waits for `rekey submit`. */
export function humanPolicy(id: string): Policy {
  return PolicySchema.parse({
    id,
    owner: "dana.kim@example.com",
    provider: { kind: "snyk-pat" },
    target: { secretId: `prod/${id}`, region: "eu-central-1" },
    consumers: [{ id: "scanner", confirm: "push", tokenHash: HASH }],
    human: { timeout: "6h", remindEvery: "1h" },
  } satisfies PolicyInput);
}

export interface Tracked {
  job: MemoryJob;
  policy: Policy;
  rotationId: string;
  reason: Reason;
  /** The secret's AWSCURRENT version and value when the rotation first ran. */
  before?: { versionId?: string; value?: string };
  /** Set once the job completed or failed. */
  endedAt?: number;
}

export interface SimOptions {
  seed?: number;
  /** How long after being told each consumer confirms (ms); absent: never. */
  confirmAfter?: Record<string, number>;
  /** How long after being asked the owner of a human step submits a new value (ms); undefined: never. */
  humanAfter?: number;
}

export class Sim {
  readonly world: World;
  readonly state: MemoryState;
  readonly audit: MemoryAudit;
  readonly store: MemoryStore;
  readonly creds: Credentials;
  readonly policies = new Map<string, Policy>();
  readonly tracked: Tracked[] = [];
  readonly events: EngineEvent[] = [];
  readonly logs: string[] = [];
  /** Every error a run ended with (I5: none may carry a value). */
  readonly errors: unknown[] = [];
  crashes = 0;
  private readonly timers: { at: number; fn: () => void }[] = [];
  private readonly engine: RotationEngine<MemoryTx>;
  confirmAfter: Record<string, number>;
  humanAfter: number | undefined;

  constructor(opts: SimOptions = {}) {
    this.world = new World(rng(opts.seed ?? 1));
    this.audit = new MemoryAudit(this.world);
    this.state = new MemoryState(this.world, this.audit);
    this.store = new MemoryStore(this.world);
    this.creds = new Credentials(this.world);
    this.confirmAfter = opts.confirmAfter ?? { checkout: 60_000, billing: 120_000, reports: 30_000, publisher: 10_000, scanner: 90_000 };
    this.humanAfter = "humanAfter" in opts ? opts.humanAfter : 20 * 60_000;
    const logs = this.logs;
    const log = pino({ level: "trace" }, new Writable({ write: (chunk: Buffer, _enc, cb) => void (logs.push(chunk.toString()), cb()) }));
    const providers = memoryRegistry(this.world, this.creds);
    const resolve = async () => "management-credential";
    // The real gateway (pacing, 429 gates, store-write pacing) on the in-memory gates; no shared budgets.
    const gateway = new ProviderGateway({
      state: this.state,
      limiter: openLimiter,
      providers,
      resolve,
      now: this.world.clock.now,
      sleep: this.world.clock.sleep,
      awsWritesPerSecond: Number.POSITIVE_INFINITY,
    });
    this.engine = new RotationEngine<MemoryTx>({
      gateway,
      state: this.state,
      audit: this.audit,
      store: this.store,
      providers,
      policies: { get: (id) => this.policies.get(id) },
      resolve,
      notify: async (policy, event) => this.onEvent(policy, event),
      wake: async (jobId) => this.wake(jobId),
      requeueLeak: async (policyId, ended) => this.enqueue(policyId, "leak", leakHandOffJobId(policyId, ended)).rotationId,
      now: this.world.clock.now,
      sleep: this.world.clock.sleep,
      log,
      fingerprintKey: "fingerprint-key-for-tests",
    });
  }

  get now(): number {
    return this.world.clock.t;
  }

  /** A policy whose secret holds a live credential that existed before rekey. */
  addPolicy(policy: Policy): Policy {
    this.policies.set(policy.id, policy);
    const c = this.creds.make(policy.id);
    this.store.seed(refOf(policy), this.world.uuid(), c.value);
    return policy;
  }

  /** Queue a rotation (idempotent per job id, as BullMQ's custom job ids are). */
  enqueue(policyId: string, reason: Reason = "manual", jobId?: string): Tracked {
    const existing = jobId ? this.tracked.find((t) => t.job.id === jobId) : undefined;
    if (existing) return existing;
    const policy = this.policies.get(policyId);
    if (!policy) throw new Error(`no policy ${policyId}`);
    const rotationId = this.world.uuid();
    const data: RotationJobData = { v: 1, rotationId, policyId, reason, actor: "test", step: "start", startedAt: this.now, undo: [] };
    const t: Tracked = { job: new MemoryJob(this.world, jobId ?? manualJobId(policyId, rotationId), data), policy, rotationId, reason };
    this.tracked.push(t);
    return t;
  }

  /** Run `fn` at simulated time `at` (between job runs). */
  at(at: number, fn: () => void): void {
    this.timers.push({ at, fn });
  }

  /**
   * Run jobs and timers in time order until nothing is left (or `horizonMs` of simulated time
   * passed). Jobs ready at the same moment run concurrently. `afterBatch` sees the world at rest.
   */
  async run(opts: { horizonMs?: number; afterBatch?: (ended: Tracked[]) => void } = {}): Promise<void> {
    const horizon = this.now + (opts.horizonMs ?? 30 * 86_400_000);
    for (let i = 0; i < 20_000; i++) {
      const ready = this.tracked.filter((t) => t.job.state === "waiting" || t.job.state === "delayed");
      const nextJob = Math.min(...ready.map((t) => t.job.readyAt));
      const nextTimer = Math.min(...this.timers.map((t) => t.at));
      const next = Math.min(nextJob, nextTimer);
      if (!Number.isFinite(next) || next > horizon) return;
      this.world.clock.t = Math.max(this.now, next);
      if (nextTimer <= nextJob) {
        const due = this.timers.filter((t) => t.at <= this.now);
        for (const t of due) this.timers.splice(this.timers.indexOf(t), 1);
        for (const t of due) t.fn();
        continue;
      }
      const batch = ready.filter((t) => t.job.readyAt <= this.now);
      await Promise.all(batch.map((t) => this.runOnce(t)));
      this.world.revive();
      const ended = batch.filter((t) => t.job.state === "completed" || t.job.state === "failed");
      for (const t of ended) t.endedAt = this.now;
      opts.afterBatch?.(ended);
    }
    throw new Error("the simulation did not settle in 20,000 runs");
  }

  private async runOnce(t: Tracked): Promise<void> {
    if (!t.before) {
      const cur = this.store.holder(refOf(t.policy), "AWSCURRENT");
      t.before = { versionId: cur?.versionId, value: cur?.value };
    }
    const ctl = new AbortController();
    this.world.runs.add(ctl);
    t.job.state = "active";
    t.job.attemptsStarted++;
    try {
      await this.engine.process(t.job, "lock-token", ctl.signal);
      t.job.state = "completed";
    } catch (err) {
      this.errors.push(err);
      if (ctl.signal.aborted) {
        // The worker died: BullMQ finds the job stalled and runs it again (no attempt used).
        this.crashes++;
        t.job.stalledCounter++;
        t.job.state = "waiting";
        t.job.readyAt = this.now + 15_000;
      } else if (err instanceof DelayedError) {
        t.job.state = "delayed";
      } else if (err instanceof UnrecoverableError) {
        t.job.state = "failed";
      } else {
        t.job.attemptsMade++;
        if (t.job.attemptsMade >= t.job.opts.attempts) t.job.state = "failed";
        else {
          t.job.state = "waiting";
          t.job.readyAt = this.now + 5_000 * 2 ** (t.job.attemptsMade - 1);
        }
      }
    } finally {
      this.world.runs.delete(ctl);
    }
  }

  /** `rekey cancel` of a started rotation: the request on its record, then its job woken. */
  cancel(rotationId: string, by = "operator:test"): string {
    const verdict = this.state.cancelNow(rotationId, by, "");
    const t = this.tracked.find((x) => x.rotationId === rotationId);
    if (verdict === "ok" && t) this.wake(String(t.job.id));
    return verdict;
  }

  private wake(jobId: string): void {
    const t = this.tracked.find((x) => x.job.id === jobId);
    if (t?.job.state === "delayed") t.job.readyAt = this.now;
  }

  /** The owner makes a new credential and `rekey submit`s it: stored under the rotation's id, the job woken. */
  private submit(policy: Policy, rotationId: string): void {
    const rec = this.state.db.records.get(rotationId);
    if (rec?.status !== "awaiting-human" || rec.endedAt !== undefined) return;
    const c = this.creds.make(policy.id, rotationId);
    this.store.putPendingNow(refOf(policy), rotationId, c.value);
    this.state.patch(rotationId, { status: "running", step: "verifying", newCredentialId: c.credentialId, updatedAt: this.now });
    this.state.db.wake.add(rotationId);
    const t = this.tracked.find((x) => x.rotationId === rotationId);
    if (t) this.wake(String(t.job.id));
  }

  /** Consumers told to load a new version confirm it later (POST /v1/confirmations: confirm, wake). */
  private onEvent(policy: Policy, event: EngineEvent): void {
    this.events.push(event);
    if (event.type === "human.action-required" && this.humanAfter !== undefined) this.at(this.now + this.humanAfter, () => this.submit(policy, event.rotationId));
    if (event.type !== "rotation.awaiting-confirmation" && event.type !== "rotation.leak") return;
    const rotationId = event.rotationId;
    if (!rotationId) return;
    for (const c of policy.consumers) {
      const after = this.confirmAfter[c.id];
      if (after === undefined) continue;
      this.at(this.now + after, () => {
        if (!this.state.confirmNow(rotationId, { consumerId: c.id, at: this.now, via: "push", versionId: rotationId })) return;
        this.state.db.wake.add(rotationId);
        const t = this.tracked.find((x) => x.rotationId === rotationId);
        if (t) this.wake(String(t.job.id));
      });
    }
  }
}
