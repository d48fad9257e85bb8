/**
 * The attack run: hostile requests against `rekey api` — floods without a token, forged, replayed
 * and mismatched confirmations, oversized bodies, control characters, path tricks, wrong methods,
 * Bull Board writes, forged JWTs — from several addresses on the same network, while real
 * rotations wait for their consumer. The same number of rotations then runs without the attack.
 *
 * It reports Redis `used_memory` growth during the attack (and beyond what the same rotations
 * grow it by without the attack), audit entries the hostile requests
 * added (0 expected: none of them is authenticated but the replays, whose refusals are summed
 * into one entry per policy and minute), every rotation's outcome, and the real consumer's
 * confirmation latency p50/p99 under attack against the quiet run.
 *
 * `rekey api` runs alone in a process of its own (bench/api-process.ts), as it is deployed; the
 * rotation worker, the fakes and the consumers run in this process (`topology: "run"` puts the
 * API here too, as `rekey run` does). The API's process measures its GC pauses, event-loop lag,
 * CPU and waits for a core on each side (bench/lib/process-meter.ts).
 *
 * A private redis-server, the AWS emulator and the LaunchDarkly fake, all on 127.0.0.1. The
 * attacker sends from 127.0.0.2…127.0.0.N (Linux routes all of 127/8 to loopback): it is another
 * host as far as the per-address rate limit is concerned. Each slot's consumer sends from its own
 * address, 127.0.1.1 … (five services on five hosts): one address confirming for every slot
 * would meet the per-address limit (1,200 a minute) once rounds take under 250 ms.
 */
import { Agent, request } from "node:http";
import type { ApiReport, ApiSetup } from "./api-process.ts";
import type { AttackerInput, AttackerResult } from "./attack-process.ts";
import { ATTACK_SENDING, refusalLogLines } from "./lib/attack-protocol.ts";
import { runChild } from "./lib/child.ts";
import { type Pause, ProcessMeter, type Side, type SideFigures } from "./lib/process-meter.ts";
import { FakesClient } from "./lib/rig.ts";
import { availableParallelism, loadavg } from "node:os";
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { Redis } from "ioredis";
import { tokenHash } from "../src/consumers/fingerprint.ts";
import { createLogger, type Logger } from "../src/log.ts";
import { Policy } from "../src/policy/schema.ts";
import { startApiServer, startRotationWorker } from "../src/processes.ts";
import { createRuntime, type Runtime } from "../src/runtime.ts";
import { AwsSecretsManagerStore } from "../src/stores/aws-secrets-manager.ts";
import { startAwsEmulator } from "../test/fakes/aws/emulator.ts";
import { startLaunchDarklyFake } from "../test/fakes/launchdarkly.ts";
import { startRedisServer } from "../test/helpers/redis-server.ts";
import { NODE_FLAGS } from "../src/node-flags.ts";

const REGION = "us-east-1";
const ADMIN_TOKEN = "attack-admin-token-0123456789abcdef";
const CONSUMER_TOKEN = "attack-consumer-token-0123456789abcdef";
const OTHER_TOKEN = "attack-other-consumer-token-0123456789";
const FINGERPRINT_KEY = "attack-fingerprint-key-0123456789abcdef0123";
/** Rotations of one secret before the run moves on to a fresh one (AWS: 100 versions per 24 h). */
const VERSIONS_PER_SECRET = 90;

export interface AttackOptions {
  /** Hostile requests to send (at least). */
  requests: number;
  /** Policies rotated side by side in each round (each waits for its consumer). */
  policies: number;
  /**
   * Rounds of rotations under attack, at least (they go on until the attack is over); the quiet
   * run afterwards repeats as many, so both runs hold the same rotations.
   */
  minRounds: number;
  /** Hostile requests in flight at once, at most. */
  concurrency: number;
  /** Hostile requests per second, at most (0: as fast as `concurrency` allows). */
  rate: number;
  /** Attack segments, each followed by a quiet one (default 1). */
  segments?: number;
  /** Attacker addresses 127.0.0.2 … (each with its own per-address limit). */
  addresses: number;
  /** How long a consumer takes to reload before it confirms, in ms (slot i takes (1 + i/policies) × this). */
  reloadMs?: number;
  /**
   * Where the API runs: "api", alone in a process of its own, as `rekey api` is deployed (the
   * default); "run", in the run's process beside the rotation worker, as `rekey run` does.
   */
  topology?: "api" | "run";
  /**
   * Node flags of the API's process (topology "api"): default, the flags rekey's image starts
   * Node with (src/node-flags.ts).
   */
  apiNodeFlags?: readonly string[];
  progress?: (line: string) => void;
}

export interface Latency {
  samples: number;
  p50: number;
  p99: number;
  /** The slowest samples, slowest first (the p99 of a few hundred samples is one of them). */
  slowest: number[];
  /** The segment (1-based) each of `slowest` came from: a stall of the machine holds several of one. */
  slowestSegments: number[];
  /** How much of each of `slowest` the API's process spent in garbage-collection pauses (ms). */
  slowestGcMs: number[];
}

export interface AttackReport {
  /** Where the API ran (AttackOptions.topology). */
  topology: "api" | "run";
  /** The Node flags of the API's process (topology "api"). */
  apiNodeFlags: readonly string[];
  hostile: number;
  /** Hostile requests per second achieved. */
  hostileRate: number;
  byKind: Record<string, Record<string, number>>;
  /** Hostile requests answered 5xx or not at all (must be 0). */
  failures: string[];
  usedMemoryBefore: number;
  usedMemoryAfter: number;
  /** used_memory growth over the quiet run's rotations (as many as under attack). */
  quietGrowth: number;
  /** used_memory growth over the attack, its rotations included. */
  attackGrowth: number;
  /** What the attack added beyond its rotations: attackGrowth − quietGrowth. */
  growthFromAttack: number;
  /** Audit entries added during the attack that no rotation, consumer or summary accounts for. */
  unauthenticatedAuditEntries: number;
  /** Entries summing an authenticated consumer's refused confirmations (the replays). */
  refusalSummaries: number;
  rotations: { quiet: Record<string, number>; attack: Record<string, number> };
  /** Old tokens revoked before their consumer confirmed (I2; must be 0). */
  revokedEarly: number;
  quiet: Latency;
  attack: Latency;
  /** The API process's event-loop delay (ms), p99 and max, in the quiet and the attack segments. */
  eventLoopDelay: { quiet: { p99: number; max: number }; attack: { p99: number; max: number } };
  /**
   * Where a slow confirmation's time may have gone besides rekey's own work, per side: the API
   * process's garbage-collection pauses (total, longest, major collections) and the times the
   * kernel took a core from it (involuntary context switches: it waited for a core).
   */
  process: Record<Side, SideFigures>;
  /**
   * CPU time of the process serving the API (with the worker in it where topology is "run") per
   * hostile request: its CPU in the attack segments minus in the quiet ones, over the hostile
   * requests.
   */
  apiCpuPerHostileMs: number;
  /** The machine's 1-minute load average at the start and the end of the measured run. */
  loadAverage: [number, number];
  /** Log lines the refusals produced (rate-limited). */
  refusalLogLines: number;
  durationMs: number;
}

/** One request from the consumer's own address; resolves to the status. */
function post(agent: Agent, url: URL, path: string, token: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ agent, host: url.hostname, port: url.port, method: "POST", path, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) }, timeout: 30_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

/** One confirmation's latency (ms), when it was sent (epoch ms), and the segment it was measured in. */
interface Sample {
  ms: number;
  start: number;
  segment: number;
}

function latency(samples: Sample[], pauses: Pause[]): Latency {
  const bySpeed = [...samples].sort((a, b) => a.ms - b.ms);
  const sorted = bySpeed.map((x) => x.ms);
  const slowest = bySpeed.slice(-8).reverse();
  const gcWithin = (x: Sample) => pauses.reduce((sum, p) => sum + Math.max(0, Math.min(p.end, x.start + x.ms) - Math.max(p.start, x.start)), 0);
  return { samples: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), slowest: slowest.map((x) => x.ms), slowestSegments: slowest.map((x) => x.segment), slowestGcMs: slowest.map(gcWithin) };
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runAttack(opts: AttackOptions): Promise<AttackReport> {
  const t0 = Date.now();
  const say = opts.progress ?? (() => {});
  const redisServer = await startRedisServer();
  // Each secret is rotated some hundred times within minutes here, far past AWS's quota of about
  // 100 versions per secret in 24 hours (which parks a rotation for an hour: aws-store tests it).
  // The attack run measures the API under attack, not that quota: the emulator lifts it.
  const emulator = await startAwsEmulator({ writesPerSecond: Infinity, versionQuota: 1_000_000 });
  const ld = await startLaunchDarklyFake({ rateLimitPerWindow: 1_000_000, tokenLimit: 100_000 });
  const admin = ld.addToken({ role: "admin", name: "rekey management" });
  const logLines: string[] = [];
  const log = createLogger({ level: "warn", destination: new Writable({ write: (c: Buffer, _e, cb) => (logLines.push(c.toString("utf8")), cb()) }) });
  const store = new AwsSecretsManagerStore({ region: REGION, clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: emulator.url, credentials: { accessKeyId: "a", secretAccessKey: "a" }, maxAttempts: 3 }) });
  const prefix = "attack";
  const rt = await createRuntime({ redisUrl: redisServer.url, prefix, policyPaths: [], log, fingerprintKey: FINGERPRINT_KEY, region: REGION, env: { LD_ADMIN_TOKEN: admin.value }, store, awsWritesPerSecond: Infinity });
  // AWS Secrets Manager refuses a secret's 101st version within 24 hours (LimitExceededException,
  // which rekey rightly waits an hour on). A full run rotates hundreds of times, so each of the
  // `policies` slots moves to a fresh policy (and secret) after VERSIONS_PER_SECRET rotations.
  const topology = opts.topology ?? "api";
  const apiNodeFlags = opts.apiNodeFlags ?? NODE_FLAGS;
  const api = await apiUnderAttack(topology, apiNodeFlags, rt, log, logLines, { redisUrl: redisServer.url, prefix, fingerprintKey: FINGERPRINT_KEY, region: REGION, awsUrl: emulator.url, adminTokenHash: tokenHash(ADMIN_TOKEN) });
  const loaded: { input: unknown; file: string }[] = [];
  const addPolicy = async (id: string) => {
    loaded.push({
      input: {
        id,
        owner: "owner@example.com",
        provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
        target: { secretId: `attack/${id}`, region: REGION },
        consumers: [
          { id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) },
          { id: "other", confirm: "push", tokenHash: tokenHash(OTHER_TOKEN), required: false },
        ],
        confirmation: { timeout: "1h", onTimeout: "keep-old" },
      },
      file: `${id}.yaml`,
    });
    rt.policies.replace(loaded.map((l) => ({ policy: Policy.parse(l.input), file: l.file })));
    await api.policies(loaded);
    await store.create!({ secretId: `attack/${id}`, region: REGION }, ld.addToken({ name: id }).value);
  };
  const slots = Array.from({ length: opts.policies }, (_, i) => ({ slot: i, generation: 0, rotations: 0, policyId: `ld-attack-${i}` }));
  for (const s of slots) await addPolicy(s.policyId);
  /** The slot's policy for its next rotation: a fresh one once the current secret has its share of versions. */
  const policyFor = async (s: (typeof slots)[number]): Promise<string> => {
    if (s.rotations >= VERSIONS_PER_SECRET) {
      s.generation++;
      s.rotations = 0;
      s.policyId = `ld-attack-${s.slot}-g${s.generation}`;
      await addPolicy(s.policyId);
    }
    s.rotations++;
    return s.policyId;
  };
  const policyIds = () => slots.map((s) => s.policyId);
  const worker = startRotationWorker(rt, { concurrency: Math.max(4, opts.policies), log });
  const base = new URL(api.url);
  const viewer = (await rt.tokens.create({ name: "attack-viewer", scopes: ["viewer"] }, "attack run")).token;
  const probe = new Redis(redisServer.url);
  const consumerAgents = slots.map((s) => new Agent({ keepAlive: true, maxSockets: 4, localAddress: `127.0.1.${s.slot + 1}` }));
  const oldVersions: string[] = [];
  const jobIds: string[] = [];
  let revokedEarly = 0;
  /** The segment the rounds now running belong to (1-based; 0: the warm-up). */
  let segment = 0;

  const usedMemory = async () => Number(/^used_memory:(\d+)/m.exec(await probe.info("memory"))?.[1]);

  /** One round: every policy rotates; its consumer confirms once the rotation waits for it. */
  const round = async (samples: Sample[], outcomes: Record<string, number>) => {
    await Promise.all(
      slots.map(async (slot) => {
        const policyId = await policyFor(slot);
        const old = await store.getCurrent({ secretId: `attack/${policyId}`, region: REGION });
        const req = await rt.rotations.enqueue({ policyId, reason: "manual", actor: "attack-run" });
        jobIds.push(req.jobId);
        const deadline = Date.now() + 120_000;
        let rec = await rt.state.records.get(req.rotationId);
        while (rec?.status !== "awaiting-confirmation" && !rec?.endedAt && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
          rec = await rt.state.records.get(req.rotationId);
        }
        if (rec?.status === "awaiting-confirmation") {
          // Consumers reload at their own pace: spread over one reload time, so that one stall of
          // the machine does not delay every sample of a round alike (the p99 is over samples, and
          // five that share one stall would count as five).
          const reload = opts.reloadMs ?? 100;
          await new Promise((r) => setTimeout(r, reload + (slot.slot * reload) / slots.length));
          // I2: the old token is alive until the consumer confirmed.
          if (old && !ld.isLive(old.value)) revokedEarly++;
          const started = performance.now();
          const status = await post(consumerAgents[slot.slot]!, base, "/v1/confirmations", CONSUMER_TOKEN, JSON.stringify({ policyId, consumerId: "app", versionId: req.rotationId }));
          samples.push({ ms: performance.now() - started, start: performance.timeOrigin + started, segment });
          if (status !== 200) outcomes[`consumer answered ${status}`] = (outcomes[`consumer answered ${status}`] ?? 0) + 1;
        }
        while (!rec?.endedAt && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
          rec = await rt.state.records.get(req.rotationId);
        }
        const outcome = rec?.endedAt ? (rec.status ?? "ended") : "still waiting after 120 s";
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
        oldVersions.push(req.rotationId);
      }),
    );
  };

  try {
    // Warm-up round (JIT, connections), not measured; its versions are the replays' material.
    await round([], {});

    const auditBefore = await probe.xlen(`${prefix}:audit`);
    const auditFirstId = (await probe.xrevrange(`${prefix}:audit`, "+", "-", "COUNT", 1))[0]?.[0] ?? "0-0";
    const memStart = await usedMemory();
    const measured = new Set<string>();
    const attackSamples: Sample[] = [];
    const attackOutcomes: Record<string, number> = {};
    const quietSamples: Sample[] = [];
    const quietOutcomes: Record<string, number> = {};
    let attackGrowth = 0;
    let quietGrowth = 0;
    let sent = 0;
    let elapsedMs = 0;
    let attackRounds = 0;
    const loadBefore = loadavg()[0]!;
    const byKind: Record<string, Record<string, number>> = {};
    const failures: string[] = [];
    // The API process measures itself on each side (ProcessMeter).
    const rounds = async (n: number | ((done: number) => boolean), samples: Sample[], outcomes: Record<string, number>): Promise<number> => {
      await api.side(samples === attackSamples ? "attack" : "quiet");
      try {
        return await roundsOf(n, samples, outcomes);
      } finally {
        await api.side(undefined);
      }
    };
    const roundsOf = async (n: number | ((done: number) => boolean), samples: Sample[], outcomes: Record<string, number>): Promise<number> => {
      let done = 0;
      while (typeof n === "number" ? done < n : n(done)) {
        const before = oldVersions.length;
        await round(samples, outcomes);
        for (const v of oldVersions.slice(before)) measured.add(v);
        done++;
      }
      return done;
    };
    // Attack and quiet alternate (A Q A Q …), each quiet segment with as many rounds as the attack
    // segment before it: the machine's background load drifts, and both sides see the same drift.
    const segments = Math.max(1, opts.segments ?? 1);
    for (let seg = 0; seg < segments; seg++) {
      segment = seg + 1;
      const requests = Math.ceil(opts.requests / segments);
      const input: AttackerInput = { apiUrl: api.url, requests, concurrency: opts.concurrency, rate: opts.rate, addresses: opts.addresses, policyIds: policyIds(), oldVersions: oldVersions.slice(0, 50), jobIds: jobIds.slice(-50), viewer, consumerToken: CONSUMER_TOKEN, otherToken: OTHER_TOKEN };
      let done = false;
      let sending!: () => void;
      const underWay = new Promise<void>((resolve) => (sending = resolve));
      const memBefore = await usedMemory();
      const attack = runChild<AttackerResult>("attack-process.ts", [JSON.stringify(input)], { timeoutMs: 30 * 60_000, label: "attacker", onLine: (line) => line === ATTACK_SENDING && sending() }).finally(() => {
        done = true;
        sending();
      });
      // Rotations "under attack" start once the attacker sends (not while its process starts).
      await underWay;
      const minRounds = Math.ceil(opts.minRounds / segments);
      const n = await rounds((finished) => !done || finished < minRounds, attackSamples, attackOutcomes);
      const result = await attack;
      attackGrowth += (await usedMemory()) - memBefore;
      attackRounds += n;
      sent += result.sent;
      elapsedMs += result.elapsedMs;
      failures.push(...result.failures);
      for (const [kind, statuses] of Object.entries(result.byKind)) {
        const k = (byKind[kind] ??= {});
        for (const [st, c] of Object.entries(statuses)) k[st] = (k[st] ?? 0) + c;
      }
      const quietBefore = await usedMemory();
      await rounds(n, quietSamples, quietOutcomes);
      quietGrowth += (await usedMemory()) - quietBefore;
      say(`segment ${seg + 1}/${segments}: ${result.sent} hostile requests, ${n} rounds under attack, ${n} quiet`);
    }
    // Stopping the API writes a pending refusal summary; then count what the audit gained.
    const measuredApi = await api.stop();
    const memEnd = await usedMemory();
    const added = await probe.xrange(`${prefix}:audit`, `(${auditFirstId}`, "+");
    let summaries = 0;
    let unexplained = 0;
    for (const [, flat] of added) {
      const f: Record<string, string> = {};
      for (let j = 0; j + 1 < flat.length; j += 2) f[flat[j]!] = flat[j + 1]!;
      if (f.rotationId && measured.has(f.rotationId)) continue;
      if (f.actor === "api" && f.step === "confirmation" && f.outcome === "refused") summaries++;
      else unexplained++;
    }
    say(`${sent} hostile requests, ${attackRounds} rounds under attack and as many quiet, audit ${auditBefore} → ${auditBefore + added.length}`);
    return {
      topology,
      apiNodeFlags: topology === "api" ? apiNodeFlags : [],
      hostile: sent,
      hostileRate: sent / (elapsedMs / 1000),
      byKind,
      failures,
      usedMemoryBefore: memStart,
      usedMemoryAfter: memEnd,
      quietGrowth,
      attackGrowth,
      growthFromAttack: attackGrowth - quietGrowth,
      unauthenticatedAuditEntries: unexplained,
      refusalSummaries: summaries,
      rotations: { quiet: quietOutcomes, attack: attackOutcomes },
      revokedEarly,
      quiet: latency(quietSamples, measuredApi.pauses),
      attack: latency(attackSamples, measuredApi.pauses),
      eventLoopDelay: {
        quiet: { p99: measuredApi.quiet.loopP99Ms, max: measuredApi.quiet.loopMaxMs },
        attack: { p99: measuredApi.attack.loopP99Ms, max: measuredApi.attack.loopMaxMs },
      },
      process: { quiet: measuredApi.quiet, attack: measuredApi.attack },
      apiCpuPerHostileMs: (measuredApi.attack.cpuMs - measuredApi.quiet.cpuMs) / Math.max(1, sent),
      loadAverage: [loadBefore, loadavg()[0]!],
      refusalLogLines: measuredApi.refusalLogLines,
      durationMs: Date.now() - t0,
    };
  } finally {
    await api.stop().catch(() => undefined);
    await worker.stop();
    for (const a of consumerAgents) a.destroy();
    probe.disconnect();
    await rt.close();
    await ld.close();
    await emulator.close();
    await redisServer.stop();
  }
}

/** The API the attack targets, wherever it runs, with a ProcessMeter of its process. */
interface ApiUnderAttack {
  url: string;
  /** The policies the API checks confirmations against (the run adds some as it goes). */
  policies(loaded: { input: unknown; file: string }[]): Promise<void>;
  /** What follows is measured as this side of the run (undefined: neither). */
  side(side: Side | undefined): Promise<void>;
  /** Stop it (it writes its pending refusal summary) and report what its process measured. Once. */
  stop(): Promise<ApiReport>;
}

async function apiUnderAttack(topology: "api" | "run", nodeFlags: readonly string[], rt: Runtime, log: Logger, logLines: string[], setup: ApiSetup): Promise<ApiUnderAttack> {
  let stopped: Promise<ApiReport> | undefined;
  if (topology === "run") {
    const meter = new ProcessMeter();
    const server = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, adminTokenHash: setup.adminTokenHash });
    return {
      url: server.url,
      policies: async () => {},
      side: async (side) => (side ? meter.enter(side) : meter.leave()),
      stop: () =>
        (stopped ??= (async () => {
          meter.stop();
          await server.stop();
          return { ...meter.report(), refusalLogLines: refusalLogLines(logLines) };
        })()),
    };
  }
  const child = await FakesClient.start("api-process.ts", [], nodeFlags);
  try {
    const url = await child.call<string>({ type: "setup", ...setup });
    return {
      url,
      policies: async (loaded) => void (await child.call({ type: "policies", policies: loaded })),
      side: async (side) => void (await child.call({ type: "side", side })),
      stop: () =>
        (stopped ??= (async () => {
          const report = await child.call<ApiReport>({ type: "stop" }, 30_000);
          await child.stop();
          return report;
        })()),
    };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

const who = (r: AttackReport) => (r.topology === "api" ? "rekey api process" : "rekey process");

export function formatAttackReport(r: AttackReport): string[] {
  const slowest = (l: Latency) => l.slowest.map((x, i) => `${x.toFixed(0)} (${l.slowestSegments[i]}, GC ${l.slowestGcMs[i]!.toFixed(0)})`).join(", ") + " ms";
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(2)} MB`;
  const ms = (n: number) => `${n.toFixed(1)} ms`;
  const lines = [
    `topology: ${r.topology === "api" ? `the API alone in its own process, as rekey api is deployed (Node flags: ${r.apiNodeFlags.join(" ") || "none"}); the worker, the fakes and the consumers in the run's process` : "the API and the worker in one process, as rekey run"}`,
    `hostile requests: ${r.hostile} at ${Math.round(r.hostileRate)}/s (${r.failures.length} answered 5xx or not at all)`,
    ...Object.entries(r.byKind).map(([k, v]) => `  ${k}: ${Object.entries(v).sort().map(([s, n]) => `${s}×${n}`).join(", ")}`),
    `Redis used_memory: ${mb(r.usedMemoryBefore)} → ${mb(r.usedMemoryAfter)} over the run; growth during attack segments ${mb(r.attackGrowth)}, during the quiet segments' same rotations ${mb(r.quietGrowth)}; growth from the attack ${mb(r.growthFromAttack)} (goal ≤ 1 MB)`,
    `audit entries added by unauthenticated requests: ${r.unauthenticatedAuditEntries} (goal 0); refused-confirmation summaries (replays with a captured consumer token): ${r.refusalSummaries}`,
    `rotations: quiet ${JSON.stringify(r.rotations.quiet)}, under attack ${JSON.stringify(r.rotations.attack)}; old token revoked before its consumer confirmed: ${r.revokedEarly}`,
    `consumer confirmation latency: quiet p50 ${ms(r.quiet.p50)} p99 ${ms(r.quiet.p99)} (${r.quiet.samples}); under attack p50 ${ms(r.attack.p50)} p99 ${ms(r.attack.p99)} (${r.attack.samples}); p99 ratio ${(r.attack.p99 / r.quiet.p99).toFixed(2)} (goal ≤ 2)`,
    `slowest confirmations (segment, ms of it in the ${who(r)}'s GC pauses): quiet ${slowest(r.quiet)}; under attack ${slowest(r.attack)}`,
    `${who(r)} event-loop delay: quiet p99 ${ms(r.eventLoopDelay.quiet.p99)} max ${ms(r.eventLoopDelay.quiet.max)}; under attack p99 ${ms(r.eventLoopDelay.attack.p99)} max ${ms(r.eventLoopDelay.attack.max)}`,
    `${who(r)}, quiet / under attack: GC pauses ${ms(r.process.quiet.gcMs)} / ${ms(r.process.attack.gcMs)} in all, longest ${ms(r.process.quiet.gcMaxMs)} / ${ms(r.process.attack.gcMaxMs)}, major collections ${r.process.quiet.majorGcs} / ${r.process.attack.majorGcs}; times it waited for a core (involuntary context switches) ${r.process.quiet.involuntarySwitches} / ${r.process.attack.involuntarySwitches}`,
    `${who(r)}'s CPU per hostile request: ${r.apiCpuPerHostileMs.toFixed(2)} ms; machine load average ${r.loadAverage[0].toFixed(1)} → ${r.loadAverage[1].toFixed(1)} on ${availableParallelism()} cores`,
    `refusal log lines: ${r.refusalLogLines}; duration ${(r.durationMs / 1000).toFixed(1)} s`,
  ];
  return lines;
}

/** The goals that failed, in words (empty: all met). */
export function attackViolations(r: AttackReport): string[] {
  const v: string[] = [];
  if (r.failures.length) v.push(`${r.failures.length} hostile requests answered 5xx or not at all: ${r.failures.slice(0, 3).join("; ")}`);
  if (r.growthFromAttack > 1024 * 1024) v.push(`the attack grew Redis by ${r.growthFromAttack} bytes beyond its rotations (goal ≤ 1 MB)`);
  if (r.unauthenticatedAuditEntries !== 0) v.push(`${r.unauthenticatedAuditEntries} audit entries from unauthenticated requests`);
  for (const [side, outcomes] of [["under attack", r.rotations.attack], ["quiet", r.rotations.quiet]] as const) {
    if (Object.keys(outcomes).some((k) => k !== "completed") || !outcomes.completed) v.push(`rotations ${side} did not all complete: ${JSON.stringify(outcomes)}`);
  }
  // A fair p99: both sides hold the same rotations, so the same number of samples.
  if (r.attack.samples !== r.quiet.samples) v.push(`latency samples differ: ${r.attack.samples} under attack, ${r.quiet.samples} quiet`);
  if (r.revokedEarly) v.push(`${r.revokedEarly} old tokens revoked before their consumer confirmed`);
  if (!(r.attack.p99 <= 2 * r.quiet.p99)) v.push(`consumer p99 ${r.attack.p99.toFixed(1)} ms under attack > 2 × quiet ${r.quiet.p99.toFixed(1)} ms`);
  return v;
}
