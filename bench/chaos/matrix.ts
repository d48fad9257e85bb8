/**
 * The fault matrix: several real worker processes rotate many policies while the harness
 * SIGKILLs workers at random moments and starts them again, kills Redis itself (AOF on) and
 * restarts it on the same port and directory, and every provider and the AWS emulator answer a
 * share of requests with a 429 (the provider's real headers), a 500, a delay longer than the
 * workers' per-request budget (REKEY_REQUEST_TIMEOUT), a dropped connection, or a dropped
 * connection after the side effect happened. Consumers confirm (push over HTTP, probe) as
 * rotations reach awaiting-confirmation. At the end faults stop, stragglers get a bounded wait,
 * and the checker (checker.ts) counts violations of I1, I2, I3, I5, I6 from the fakes' final
 * state, the store and Redis.
 *
 * Time is compressed for the run: retries back off from 200 ms instead of 5 s (the harness's
 * own queue options), locks last seconds, and requests time out after about a second.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { Queue } from "bullmq";
import { createLogger } from "../../src/log.ts";
import { startApiServer } from "../../src/processes.ts";
import { ROTATION_QUEUE, rotationJobOptions } from "../../src/rotation/defaults.ts";
import { Rotations } from "../../src/rotation/requests.ts";
import { bullPrefix, createRuntime, type Runtime } from "../../src/runtime.ts";
import { AwsSecretsManagerStore } from "../../src/stores/aws-secrets-manager.ts";
import type { RedisTarget } from "../../src/redis-connection.ts";
import { startRedisServer } from "../../test/helpers/redis-server.ts";
import { startSentinelTopology } from "../../test/helpers/redis-topology.ts";
import { check, type Tracked, type Violations } from "./checker.ts";
import { type CutoverFigures, cutoverOutages, formatCutover } from "./cutover.ts";
import { WorkerPool } from "./workers.ts";
import { formatWipe, type WipeFigures, WipeRepair } from "./wipe.ts";
import { reconcileJobId } from "../../src/rotation/job-ids.ts";
import { CONSUMER_TOKEN, FINGERPRINT_KEY, type PolicyWorld, REGION, startWorld } from "./world.ts";

export interface MatrixOptions {
  ld: number;
  snyk: number;
  qstash: number;
  /** Rotations requested in all (duplicate requests for I3 come on top). */
  rotations: number;
  workers: number;
  concurrency: number;
  /** Worker SIGKILLs, at most; one every `killEveryMs` (random in the range). */
  kills: number;
  killEveryMs: [number, number];
  /**
   * Redis faults at these shares of the requested rotations (e.g. [0.4]): a single Redis is
   * SIGKILLed and restarted on its AOF; a Sentinel topology loses its master (failover).
   */
  redisRestartsAt: number[];
  /**
   * The Redis under test: one redis-server (default), or a master with two replicas and three
   * sentinels whose master is SIGKILLed at each fault; with `lagMs`, the replicas lag that long
   * first, so the promoted one has lost the writes of that time. `wipe`: the single Redis restarts
   * empty (no AOF) at each fault, while some rotations wait for confirmations that are held back;
   * then reconcile passes run until every policy is whole (wipe.ts), and the load goes on.
   */
  redis?: { kind: "single"; wipe?: boolean } | { kind: "sentinel"; lagMs: number };
  faultRate: number;
  /** Per-request budget of the workers; injected delays are longer. */
  requestTimeoutMs: number;
  /** Share of requests that also get a duplicate request while in flight (must be skipped). */
  duplicateRate: number;
  /** Rotations in flight at once, at most. */
  maxInFlight: number;
  /** The whole run (enqueue and drive) stops after this, then settles. */
  deadlineMs: number;
  /** Bounded wait for the last rotations after faults stop. */
  settleMs: number;
  seed?: number;
  progress?: (line: string) => void;
}

export interface MatrixReport {
  rotationsRequested: number;
  duplicatesRequested: number;
  outcomes: Record<string, number>;
  stragglers: { rotationId: string; policyId: string; status: string; step?: string }[];
  workerKills: number;
  workerStarts: number;
  redisRestarts: number;
  /** Sentinel runs: each failover, how long until a replica answered as master, and the writes lost. */
  failovers: { ms: number; writesLostMs: number; writesLost: number }[];
  /** Wipe runs: what each wipe cost and how reconcile repaired it. */
  wipes: WipeFigures[];
  /** Live credentials beyond one per policy when the run ended (orphans, old ones kept alive). */
  extraLive: number;
  faults: Record<string, number>;
  requests: number;
  confirmations: { push: number; probe: number };
  violations: Violations;
  /** Findings that are not invariant violations (leftover credentials, harness errors). */
  notes: string[];
  durationMs: number;
  byProvider: Record<string, number>;
  /** Reset → AWSCURRENT of the cut-over (QStash token) rotations. */
  cutover: CutoverFigures;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The workers' job lock: a worker whose job Redis forgot stops within it (its renewal fails). */
const WORKER_LOCK_MS = 4_000;
const TERMINAL = new Set(["completed", "failed", "skipped"]);

/** A small seeded generator (mulberry32) so a run can be repeated. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

class Capture extends Writable {
  readonly chunks: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk.toString("utf8"));
    cb();
  }
}

interface Lane {
  policy: PolicyWorld;
  /** AWSCURRENT version the harness expects (the seed's, then each completed rotation's). */
  currentVersion: string;
  /** When the rotation that made `currentVersion` ended (records' endedAt; 0 for the seed's). */
  currentEndedAt: number;
  open?: Tracked;
  /** Stopped: a rotation of this policy needs attention and holds the policy. */
  held: boolean;
}

export async function runMatrix(opts: MatrixOptions): Promise<MatrixReport> {
  const t0 = Date.now();
  const say = opts.progress ?? (() => undefined);
  const random = rng(opts.seed ?? Date.now());
  const notes: string[] = [];
  const redisUnder = await startChaosRedis(opts.redis ?? { kind: "single" });
  const dir = mkdtempSync(join(tmpdir(), "rekey-chaos-"));
  const world = await startWorld({ ld: opts.ld, snyk: opts.snyk, qstash: opts.qstash, probeEvery: 3 });
  const prefix = `chaos-${randomUUID().slice(0, 8)}`;
  for (const p of world.inputs) writeFileSync(join(dir, `${p.id}.json`), JSON.stringify(p, null, 2));
  const capture = new Capture();
  const log = createLogger({ level: "info", destination: capture });
  const store = new AwsSecretsManagerStore({
    region: REGION,
    clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: world.aws.url, credentials: { accessKeyId: "chaos", secretAccessKey: "chaos" }, maxAttempts: 3 }),
  });
  let rt: Runtime | undefined;
  let pool: WorkerPool | undefined;
  let api: { url: string; stop(): Promise<void> } | undefined;
  let queue: Queue | undefined;
  try {
    // The harness's provider calls (reconcile's, in wipe runs) have the workers' request budget.
    rt = await createRuntime({ redis: redisUnder.target, prefix, policyPaths: [dir], log, fingerprintKey: FINGERPRINT_KEY, region: REGION, env: world.env, store, awsWritesPerSecond: Infinity, requestTimeoutMs: opts.requestTimeoutMs });
    const runtime = rt;
    // Consumers confirm from one address at the matrix's pace: limits above it (counters still run).
    api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 1_000_000, perIdentity: 1_000_000 } });
    const apiUrl = api.url;
    // The harness's own queue: the same job options but retries back off from 200 ms, not 5 s.
    queue = new Queue(ROTATION_QUEUE, { connection: rt.connection, prefix: bullPrefix(prefix), defaultJobOptions: { ...rotationJobOptions, backoff: { type: "exponential", delay: 200 } } });
    // The matrix restarts Redis on purpose: the queue's re-emitted connection errors are expected
    // (without a listener BullMQ prints each one).
    queue.on("error", () => undefined);
    const rotationQueue = queue;
    const rotations = new Rotations({ queue, state: rt.state, audit: rt.audit, policies: rt.policies, now: Date.now });

    const lanes: Lane[] = [];
    for (const p of world.policies) {
      const created = await store.create({ secretId: p.secretId, region: REGION }, p.seed);
      lanes.push({ policy: p, currentVersion: created.versionId, currentEndedAt: 0, held: false });
    }
    const laneOf = new Map(lanes.map((l) => [l.policy.id, l]));

    pool = new WorkerPool(
      {
        ...world.env,
        ...redisUnder.env,
        REKEY_PREFIX: prefix,
        REKEY_POLICY_DIR: dir,
        REKEY_FINGERPRINT_KEY: FINGERPRINT_KEY,
        REKEY_WORKER_CONCURRENCY: String(opts.concurrency),
        REKEY_WORKER_LOCK_DURATION: `${WORKER_LOCK_MS}ms`,
        REKEY_WORKER_STALLED_INTERVAL: "1s",
        REKEY_REQUEST_TIMEOUT: `${opts.requestTimeoutMs}ms`,
        AWS_ENDPOINT_URL_SECRETS_MANAGER: world.aws.url,
        AWS_REGION: REGION,
        AWS_ACCESS_KEY_ID: "chaos",
        AWS_SECRET_ACCESS_KEY: "chaos",
        LOG_LEVEL: "info",
      },
      opts.workers,
    );
    const workers = pool;
    workers.start();
    world.setFaults(opts.faultRate, opts.requestTimeoutMs * 2 + 500);
    say(`fault matrix: ${world.policies.length} policies (${opts.ld} LaunchDarkly, ${opts.snyk} Snyk, ${opts.qstash} QStash), ${opts.workers} workers × ${opts.concurrency}, ${Math.round(opts.faultRate * 100)} % faults`);

    const tracked: Tracked[] = [];
    const confirmations = { push: 0, probe: 0 };
    // Rotation ids whose push confirmation the API accepted. After a wipe, a rotation reconcile
    // queued again keeps its id, so two tracked entries (the forgotten one and the new one) may
    // confirm it: either one's 200 answers both.
    const accepted = new Set<string>();
    const i2Early: string[] = [];
    const i6Broken: string[] = [];
    let requested = 0;
    let duplicates = 0;
    let redisRestarts = 0;
    let harnessErrors = 0;
    let stopChaos = false;
    let redisDown = false;
    const deadline = t0 + opts.deadlineMs;

    // Seconds of acknowledged writes a failover lost: the harness appends a tick to a list every
    // 50 ms and, after each fault, looks for acknowledged ticks the new master does not hold.
    const ticksKey = `${prefix}:chaos:ticks`;
    const ticksAcked: number[] = [];
    let ticking = true;
    const ticker = (async () => {
      while (ticking) {
        const at = Date.now();
        try {
          await runtime.redis.rpush(ticksKey, String(at));
          ticksAcked.push(at);
        } catch {
          // Redis down: the tick was not acknowledged, so it cannot count as lost
        }
        await sleep(50);
      }
    })();
    const failovers: MatrixReport["failovers"] = [];
    const lostBefore = new Set<number>();
    const wipes: WipeFigures[] = [];
    let repair: WipeRepair | undefined;
    let wipedAt = 0;
    // Wipe runs: consumers hold their confirmations back for a moment before the wipe, so that
    // some rotations have made their new value current and not yet revoked the old one.
    let holdConfirmations = false;
    const restartRedis = async () => {
      if (redisUnder.wipes) {
        holdConfirmations = true;
        // Until two rotations of overlap policies wait (or one, after 10 s; at most 30 s).
        for (const t0Hold = Date.now(); Date.now() < t0Hold + 30_000; ) {
          for (const t of tracked.filter((x) => !x.closed)) await observe(t).catch(() => undefined);
          const waiting = tracked.filter((x) => !x.closed && x.status === "awaiting-confirmation" && laneOf.get(x.policyId)?.policy.overlap).length;
          if (waiting >= 2 || (waiting >= 1 && Date.now() > t0Hold + 10_000)) break;
          await sleep(200);
        }
      }
      redisDown = true;
      const r = await redisUnder.fault(random, say);
      redisRestarts++;
      redisDown = false;
      if (redisUnder.wipes) {
        // Everything Redis held is gone: the harness forgets what it tracked there too.
        wipedAt = Date.now();
        const open = tracked.filter((t) => !t.closed);
        for (const t of tracked) t.lost = true;
        for (const t of open) {
          t.closed = true;
          t.status = "lost";
        }
        for (const lane of lanes) {
          lane.open = undefined;
          lane.held = false;
        }
        repair = new WipeRepair(
          { state: runtime.state, audit: runtime.audit, store, providers: runtime.providers, queue: rotationQueue, resolve: runtime.resolve, now: Date.now },
          () => runtime.policies.all(),
          { settleMs: 5_000, everyMs: 6_000, wipedAt, startedAt: t0, lostRotations: open.filter((t) => !t.duplicate).length },
        );
        holdConfirmations = false;
        say(`  redis wiped: ${open.length} rotation(s) in flight forgotten; new requests wait while reconcile repairs`);
      }
      if (r.failoverMs !== undefined) {
        // Every tick acknowledged so far was acknowledged by the old master (before the kill) or
        // by the new one; those the new one does not hold were lost by this failover (ticks lost
        // by an earlier one are counted there).
        const have = new Set((await runtime.redis.lrange(ticksKey, 0, -1)).map(Number));
        const lost = ticksAcked.filter((t) => !have.has(t) && !lostBefore.has(t));
        for (const t of lost) lostBefore.add(t);
        failovers.push({ ms: r.failoverMs, writesLost: lost.length, writesLostMs: lost.length ? (lost.at(-1) as number) - (lost[0] as number) + 50 : 0 });
        say(`  failover: a replica answered as master after ${r.failoverMs} ms; ${lost.length} acknowledged ticks lost (${((failovers.at(-1)?.writesLostMs ?? 0) / 1000).toFixed(1)} s of writes)`);
      }
    };

    const killer = (async () => {
      for (let k = 0; k < opts.kills && !stopChaos; k++) {
        const [lo, hi] = opts.killEveryMs;
        const until = Date.now() + lo + random() * (hi - lo);
        while (Date.now() < until && !stopChaos) await sleep(100);
        if (stopChaos) break;
        await workers.killOne(Math.floor(random() * 1_000), 200 + random() * 1_300);
      }
    })();

    /** The consumer: checks the old credential still works (I2), then confirms by push and probe. */
    const confirm = async (t: Tracked, lane: Lane) => {
      await sleep(random() * 300);
      while (holdConfirmations) await sleep(100);
      // A rotation reconcile queued again may already have this consumer's confirmation (sent
      // for the same version before the wipe, retried since), and revoked the old credential on
      // it: the checker's LaunchDarkly check (deletion time against confirmations) covers it.
      if (lane.policy.overlap && !t.recreated) {
        const oldVersion = t.oldVersionId ?? lane.currentVersion;
        const old = world.aws.inspect(lane.policy.secretId, REGION)?.versions.find((v) => v.versionId === oldVersion)?.value;
        if (old !== undefined && !lane.policy.isLive(old)) i2Early.push(`${t.rotationId} (${t.policyId}): old credential dead before any confirmation`);
      }
      t.confirmedAt = Date.now();
      if (lane.policy.consumers.includes("edge")) {
        world.probeLoaded.set(t.policyId, t.rotationId);
        confirmations.probe++;
      }
      for (let attempt = 0; attempt < 400 && Date.now() < deadline + opts.settleMs; attempt++) {
        if (accepted.has(t.rotationId)) return;
        try {
          const res = await fetch(`${apiUrl}/v1/confirmations`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
            body: JSON.stringify({ policyId: t.policyId, consumerId: "app", versionId: t.rotationId }),
            signal: AbortSignal.timeout(10_000),
          });
          t.lastAnswer = `${res.status} ${(await res.text()).slice(0, 160)}`;
          if (res.status === 200) {
            accepted.add(t.rotationId);
            confirmations.push++;
            return;
          }
          // 503: the API's Redis connection is down or not back yet (it says so at once); retry.
          if (res.status >= 500 && res.status !== 503 && !redisDown) harnessErrors++;
        } catch {
          // a dropped connection; try again
        }
        await sleep(250);
      }
      // A rotation Redis forgot that reconcile did not queue again has nothing to confirm.
      if (!t.lost) notes.push(`confirmation of ${t.rotationId} (${t.policyId}${t.recreated ? ", queued again by reconcile" : ""}, ${t.status}) never accepted; the API's last answer: ${t.lastAnswer ?? "none"}`);
    };

    const enqueue = async (lane: Lane, duplicate: boolean) => {
      const r = await rotations.enqueue({ policyId: lane.policy.id, reason: "manual", actor: "chaos" });
      const t: Tracked = { rotationId: r.rotationId, policyId: lane.policy.id, kind: lane.policy.kind, duplicate, enqueuedAt: Date.now(), status: "queued" };
      tracked.push(t);
      if (duplicate && lane.open) {
        t.partner = lane.open;
        lane.open.partner = t;
      }
      if (!duplicate) lane.open = t;
      return t;
    };

    const observe = async (t: Tracked) => {
      const lane = laneOf.get(t.policyId) as Lane;
      const rec = await runtime.state.records.get(t.rotationId);
      if (!rec) return;
      t.status = rec.status;
      t.step = rec.step;
      if (rec.status === "awaiting-confirmation" && t.confirmedAt === undefined && !t.confirming) {
        t.confirming = true;
        void confirm(t, lane);
      }
      const ended = TERMINAL.has(rec.status) || (rec.status === "needs-attention" && rec.endedAt !== undefined);
      if (rec.status === "needs-attention" && rec.endedAt === undefined) {
        // After promotion: it keeps the policy (old credential alive) and retries later. While
        // the run settles it stays watched, so a retry that finishes the rotation is seen.
        if (settleUntil !== undefined) return;
        t.closed = true;
        if (!t.duplicate) {
          lane.held = true;
          lane.open = undefined;
        }
        return;
      }
      if (!ended) return;
      t.closed = true;
      // A duplicate request whose job started only after its partner had ended ran as a rotation
      // of its own, one after the other (rekey turns a request away only while another rotation
      // holds the policy; the checker's span check proves they did not overlap). Its version is
      // then the current one, for the consumer's check of the next rotation's old credential.
      const newer = rec.status === "completed" && (rec.endedAt ?? 0) >= lane.currentEndedAt;
      if (t.duplicate) {
        if (newer && t.partner?.closed) {
          lane.currentVersion = t.rotationId;
          lane.currentEndedAt = rec.endedAt ?? 0;
        }
        return;
      }
      if (rec.status === "skipped" && t.partner?.duplicate) {
        // The second request won the race for the policy: it is the rotation, this one the duplicate.
        t.duplicate = true;
        t.partner.duplicate = false;
        t.partner.closed = false;
        lane.open = t.partner;
        return;
      }
      lane.open = undefined;
      if (newer) {
        lane.currentVersion = t.rotationId;
        lane.currentEndedAt = rec.endedAt ?? 0;
      }
      if (rec.status === "failed") {
        // I6: a failure before promotion left the old credential current and working.
        const cur = world.aws.inspect(lane.policy.secretId, REGION)?.versions.find((v) => v.stages.includes("AWSCURRENT"));
        if (!cur || cur.versionId !== lane.currentVersion) i6Broken.push(`${t.rotationId} (${t.policyId}): AWSCURRENT is ${cur?.versionId ?? "nothing"}, expected ${lane.currentVersion}`);
        else if (cur.value === undefined || !lane.policy.isLive(cur.value)) i6Broken.push(`${t.rotationId} (${t.policyId}): the current credential no longer works`);
      }
      if (rec.status === "skipped") notes.push(`${t.rotationId} (${t.policyId}) was skipped although nothing else was in flight`);
    };

    /** A reconcile pass when due; re-queued rotations are tracked (consumers confirm them). */
    const stepRepair = async (r: WipeRepair, now: number) => {
      let step;
      try {
        step = await r.step(now);
      } catch (err) {
        notes.push(`reconcile pass failed: ${String(err)}`);
        return;
      }
      if (!step) return;
      say(`  ${step.line}`);
      for (const f of step.recreated) {
        const lane = laneOf.get(f.policyId) as Lane;
        const job = await rotationQueue.getJob(reconcileJobId(f.policyId, f.rotationId as string));
        const t: Tracked = { rotationId: f.rotationId as string, policyId: f.policyId, kind: lane.policy.kind, duplicate: false, enqueuedAt: now, status: "queued", recreated: true, oldVersionId: (job?.data as { oldVersionId?: string } | undefined)?.oldVersionId };
        tracked.push(t);
        lane.open = t;
      }
      const pending = tracked.some((t) => t.recreated && !t.closed);
      if (!step.whole || pending) return;
      r.finish(world, Date.now());
      wipes.push(r.figures);
      repair = undefined;
      // The store says which version is current now (a forgotten rotation may have moved it).
      for (const lane of lanes) {
        lane.currentVersion = world.aws.inspect(lane.policy.secretId, REGION)?.versions.find((v) => v.stages.includes("AWSCURRENT"))?.versionId ?? lane.currentVersion;
        lane.open = undefined;
      }
      say(`  ${formatWipe(r.figures)}`);
    };

    let next = 0;
    const restartMarks = [...opts.redisRestartsAt].sort();
    let lastReport = Date.now();
    let settleUntil: number | undefined;
    for (let loop = 0; loop < 1_000_000; loop++) {
      const now = Date.now();
      if (restartMarks.length && requested >= (restartMarks[0] as number) * opts.rotations) {
        restartMarks.shift();
        await restartRedis().catch((err: unknown) => notes.push(`redis restart failed: ${String(err)}`));
      }
      const open = tracked.filter((t) => !t.closed);
      if (now < deadline && settleUntil === undefined && !repair) {
        let budget = opts.maxInFlight - open.length;
        for (let scan = 0; scan < lanes.length && budget > 0 && requested < opts.rotations; scan++) {
          const lane = lanes[next++ % lanes.length] as Lane;
          if (lane.open || lane.held) continue;
          try {
            await enqueue(lane, false);
            requested++;
            budget--;
            if (random() < opts.duplicateRate) {
              await enqueue(lane, true);
              duplicates++;
            }
          } catch (err) {
            harnessErrors++;
            notes.push(`enqueue failed: ${String(err)}`);
          }
        }
      }
      for (const t of open) {
        try {
          await observe(t);
        } catch {
          if (!redisDown) harnessErrors++;
        }
      }
      if (repair) await stepRepair(repair, now);
      let stillOpen = tracked.filter((t) => !t.closed).length;
      const allAsked = requested >= opts.rotations || lanes.every((l) => l.held);
      if (settleUntil === undefined && ((allAsked && stillOpen === 0 && !repair) || now >= deadline)) {
        // Faults and kills stop; what is still open gets a bounded wait.
        stopChaos = true;
        world.setFaults(0, 0);
        settleUntil = now + opts.settleMs;
        for (const t of tracked) if (!t.duplicate && !t.lost && t.status === "needs-attention") t.closed = false;
        stillOpen = tracked.filter((t) => !t.closed).length;
        say(`  all ${requested} rotations requested; faults off, settling ${stillOpen} open rotation(s) for at most ${Math.round(opts.settleMs / 1000)} s`);
      }
      if (settleUntil !== undefined && ((stillOpen === 0 && !repair) || now >= settleUntil)) break;
      if (now - lastReport > 10_000) {
        lastReport = now;
        const done = tracked.filter((t) => t.closed && !t.duplicate).length;
        say(`  ${Math.round((now - t0) / 1000)} s: ${requested}/${opts.rotations} requested, ${done} ended, ${stillOpen} open, ${workers.kills} kills, ${redisRestarts} redis restarts`);
      }
      await sleep(200);
    }
    stopChaos = true;
    if (repair) {
      wipes.push((repair as WipeRepair).figures);
      notes.push("reconcile did not find every policy whole before the run ended");
    }
    ticking = false;
    await ticker;
    await killer;
    await workers.stop();

    const cutover = cutoverOutages(
      world.aws,
      world.qstash.map((fake, i) => ({ resets: fake.rotationLog(), secretId: `chaos/chaos-qstash-${i}`, region: REGION })),
    );
    const forgottenUntil = wipedAt ? wipedAt + WORKER_LOCK_MS : undefined;
    const violations = await check({ world, rt: runtime, prefix, tracked, texts: [workers.text(), capture.chunks.join("")], i2Early, i6Broken, notes, forgottenUntil });
    const outcomes: Record<string, number> = {};
    for (const t of tracked) {
      const key = t.duplicate ? `duplicate ${t.status}` : t.status;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
    // Still needing attention after the settle: alerted (a notification went out), not stuck.
    for (const t of tracked) if (!t.closed && t.status === "needs-attention") t.closed = true;
    const stragglers = tracked
      .filter((t) => !t.closed)
      .map((t) => ({ rotationId: t.rotationId, policyId: t.policyId, status: t.status, step: t.step }));
    const byProvider: Record<string, number> = {};
    for (const t of tracked) if (!t.duplicate) byProvider[t.kind] = (byProvider[t.kind] ?? 0) + 1;
    if (harnessErrors) notes.push(`${harnessErrors} harness call(s) failed outside the Redis restart window`);
    if (workers.unexpectedExits()) notes.push(`${workers.unexpectedExits()} worker(s) exited on their own with a nonzero code`);
    return {
      rotationsRequested: requested,
      duplicatesRequested: duplicates,
      outcomes,
      stragglers,
      workerKills: workers.kills,
      workerStarts: workers.starts,
      redisRestarts,
      failovers,
      wipes,
      extraLive: countExtraLive(notes),
      faults: world.faultCounts(),
      requests: world.requestCount(),
      confirmations,
      violations,
      notes,
      durationMs: Date.now() - t0,
      byProvider,
      cutover,
    };
  } finally {
    await pool?.stop(1_000).catch(() => undefined);
    await api?.stop().catch(() => undefined);
    await queue?.close().catch(() => undefined);
    await rt?.close().catch(() => undefined);
    await world.close();
    await redisUnder.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Total violations over every invariant. */
export function totalViolations(v: Violations): number {
  return Object.values(v).reduce((n, list) => n + list.length, 0);
}

/** The report as text lines (the `npm run chaos` summary). */
export function formatReport(r: MatrixReport): string[] {
  const lines = [
    `rotations requested: ${r.rotationsRequested} (${Object.entries(r.byProvider).map(([k, n]) => `${k} ${n}`).join(", ")}) + ${r.duplicatesRequested} duplicate requests`,
    `outcomes: ${Object.entries(r.outcomes).map(([k, n]) => `${k} ${n}`).join(", ")}`,
    r.wipes.length
      ? `worker SIGKILLs: ${r.workerKills} (worker starts ${r.workerStarts}); Redis wiped (restarted empty): ${r.redisRestarts}`
      : r.failovers.length
      ? `worker SIGKILLs: ${r.workerKills} (worker starts ${r.workerStarts}); Sentinel failovers (master SIGKILLed): ${r.failovers.length}, promotion ${r.failovers.map((f) => `${(f.ms / 1000).toFixed(1)} s`).join(", ")}; acknowledged writes lost: ${r.failovers.map((f) => `${(f.writesLostMs / 1000).toFixed(1)} s`).join(", ")}`
      : `worker SIGKILLs: ${r.workerKills} (worker starts ${r.workerStarts}); Redis SIGKILL+restart: ${r.redisRestarts}`,
    `requests to fakes: ${r.requests}; faults injected: ${Object.entries(r.faults).map(([k, n]) => `${k} ${n}`).join(", ")} (total ${Object.values(r.faults).reduce((a, b) => a + b, 0)})`,
    `confirmations: push ${r.confirmations.push}, probe ${r.confirmations.probe}`,
    `violations: ${Object.entries(r.violations).map(([k, list]) => `${k} ${list.length}`).join(", ")} (total ${totalViolations(r.violations)})`,
    `stragglers (no end, no alert): ${r.stragglers.length}`,
    `live credentials beyond one per policy at the end: ${r.extraLive}`,
    ...r.wipes.map((w) => `wipe: ${formatWipe(w)}`),
    formatCutover(r.cutover),
    `duration: ${(r.durationMs / 1000).toFixed(1)} s`,
  ];
  for (const [k, list] of Object.entries(r.violations)) for (const v of list.slice(0, 10)) lines.push(`  ${k}: ${v}`);
  for (const s of r.stragglers.slice(0, 10)) lines.push(`  straggler: ${s.rotationId} ${s.policyId} ${s.status}${s.step ? ` at ${s.step}` : ""}`);
  for (const n of r.notes.slice(0, 20)) lines.push(`  note: ${n}`);
  return lines;
}

/** The checker's note on live credentials beyond one per policy, as a number (0 without it). */
function countExtraLive(notes: string[]): number {
  for (const n of notes) {
    const m = /^(\d+) live credential\(s\) beyond one per policy/.exec(n);
    if (m) return Number(m[1]);
  }
  return 0;
}

interface ChaosRedis {
  target: RedisTarget;
  /** What worker processes get in their environment to reach it. */
  env: Record<string, string>;
  /** Each fault wipes Redis (it restarts empty). */
  wipes?: boolean;
  /** One Redis fault; `failoverMs` where a replica was promoted. */
  fault(random: () => number, say: (line: string) => void): Promise<{ failoverMs?: number }>;
  stop(): Promise<void>;
}

async function startChaosRedis(kind: NonNullable<MatrixOptions["redis"]>): Promise<ChaosRedis> {
  if (kind.kind === "sentinel") {
    const topo = await startSentinelTopology({ replicas: 2, sentinels: 3 });
    const target = topo.target as Extract<RedisTarget, { kind: "sentinel" }>;
    return {
      target,
      env: { REDIS_SENTINELS: target.sentinels.map((h) => `${h.host}:${h.port}`).join(","), REDIS_SENTINEL_MASTER: target.masterName },
      async fault(_random, say) {
        say(`  redis: ${kind.lagMs ? `replicas frozen for ${kind.lagMs} ms, then ` : ""}SIGKILL of the master (port ${await topo.masterPort()}); the sentinels promote a replica`);
        const r = await topo.failover({ lagMs: kind.lagMs });
        return { failoverMs: r.ms };
      },
      stop: () => topo.stop(),
    };
  }
  const first = await startRedisServer({ appendonly: true });
  let redis = first;
  const wipe = kind.wipe === true;
  return {
    target: { kind: "single", url: first.url },
    env: { REDIS_URL: first.url },
    wipes: wipe,
    async fault(random, say) {
      say(`  redis: SIGKILL (pid of port ${redis.port}), restart on the same port ${wipe ? "EMPTY (a new directory: everything is lost)" : "and AOF dir"}`);
      await redis.kill("SIGKILL");
      await sleep(500 + random() * 1_500);
      if (wipe && redis !== first) rmSync(redis.dir, { recursive: true, force: true });
      redis = await startRedisServer({ appendonly: true, port: first.port, dir: wipe ? undefined : first.dir });
      return {};
    },
    async stop() {
      await redis.stop();
      rmSync(first.dir, { recursive: true, force: true });
      if (redis !== first) rmSync(redis.dir, { recursive: true, force: true });
    },
  };
}
