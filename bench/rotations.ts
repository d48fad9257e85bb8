/**
 * Child process: rotations through rekey against the fakes (bench/lib/rig.ts).
 *
 *   --mode engine: rekey, the same-calls baseline and the minimal script take turns (the order
 *     rotates each round, after two whole warm-up runs of each) on the same policies; per run the
 *     wall time, and per rekey rotation the time from the push confirmation to the old token's
 *     deletion at the fake.
 *   --mode memory: `rounds` rounds over every policy; this process's RSS sampled every
 *     `sample` completed rotations; Redis used_memory before and after, and what rekey keeps.
 *
 *   tsx bench/rotations.ts --mode engine|memory --redis <url> --policies <n> [--runs n]
 *     [--rounds n] [--concurrency n] [--sample n] [--in-memory] [--cpu-prof <dir>] [--cpu-prof-interval-us n]
 *
 *   --in-memory: the store and LaunchDarkly's calls answered from memory (lib/in-memory.ts), so
 *     that the rekey process's CPU per rotation is rekey's own overhead alone, and a profile shows
 *     nothing else; the references then cost next to nothing (their ratios mean nothing).
 *
 *   --cpu-prof <dir>: a V8 CPU profile of this process for each measured run (engine mode),
 *     `<dir>/<kind>-<round>.cpuprofile`, sampled every 250 µs unless --cpu-prof-interval-us says
 *     otherwise; warm-up runs are not profiled. Summarize them with
 *     `tsx bench/profile-report.ts <dir> --kind rekey`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_WORKER_CONCURRENCY } from "../src/rotation/defaults.ts";
import { emitResult, progress } from "./lib/child.ts";
import { type FakesDrain } from "./fakes-process.ts";
import { type RekeyRun, Rig } from "./lib/rig.ts";

export type Kind = "rekey" | "baseline" | "minimal";
const KINDS: Kind[] = ["rekey", "baseline", "minimal"];

export interface RunFigure {
  kind: Kind;
  wallMs: number;
  rotations: number;
  failed: number;
  /** CPU time of this process (user + system) during the run. */
  cpuMs: number;
  /** The share of the run this process's event loop was busy (1: never waiting). */
  busy: number;
  /** CPU time of the Redis server during the run. */
  redisCpuMs: number;
  /** Redis commands served during the run, by command, less the consumer process's own. */
  redisCalls: Record<string, number>;
  /** The consumer process's own Redis commands during the run (its reads of the audit stream). */
  consumerCalls: number;
}

export interface EngineResult {
  concurrency: number;
  policies: number;
  runs: RunFigure[];
  /** Confirmation -> deletion, ms, every rekey rotation of the measured runs. */
  confirmToRevokeMs: number[];
  /** HTTP requests per rotation at the fakes, by route, for each kind (measured runs). */
  callsPerRotation: Record<Kind, Record<string, number>>;
}

export interface MemorySample {
  rotations: number;
  rssBytes: number;
  heapUsedBytes: number;
  atMs: number;
}

export interface MemoryResult {
  concurrency: number;
  policies: number;
  rotations: number;
  failed: number;
  wallMs: number;
  samples: MemorySample[];
  redisUsedBefore: number;
  redisUsedAfter: number;
  /** What rekey holds in Redis afterwards, by kind of key. */
  keys: Record<string, number>;
  auditEntries: number;
  completedJobs: number;
}

const { values } = parseArgs({
  options: {
    mode: { type: "string" },
    redis: { type: "string" },
    policies: { type: "string", default: "1000" },
    runs: { type: "string", default: "3" },
    rounds: { type: "string", default: "10" },
    concurrency: { type: "string", default: String(DEFAULT_WORKER_CONCURRENCY) },
    sample: { type: "string", default: "500" },
    // Whole runs of each kind first (`warmup-runs`, of `warmup` policies; default all): JIT, heap
    // growth (see the memory section), connection pools and Redis's own structures settle before
    // anything is measured.
    warmup: { type: "string", default: "" },
    "warmup-runs": { type: "string", default: "2" },
    kinds: { type: "string", default: "rekey,baseline,minimal" },
    "cpu-prof": { type: "string", default: "" },
    "cpu-prof-interval-us": { type: "string", default: "250" },
    // The store and the provider answer from memory (lib/in-memory.ts): rekey's own overhead alone.
    "in-memory": { type: "boolean", default: false },
  },
});
const redisUrl = values.redis ?? "";
if (!redisUrl || (values.mode !== "engine" && values.mode !== "memory")) throw new Error("usage: rotations.ts --mode engine|memory --redis <url> …");
const policies = Number(values.policies);
const concurrency = Number(values.concurrency);
const kinds = (values.kinds ?? "").split(",");
const all = Array.from({ length: policies }, (_, i) => i);
// Generous: a run that takes this long has hung, not slowed down.
const deadlineMs = Math.max(120_000, policies * 200);

// Engine mode: every kind rotates a set of policies of its own, so each finds the version its own
// last rotation made current (rekey's CurrentFacts, the baseline's memory of them), as it would
// in a deployment where nothing else writes the secrets.
const sets = values.mode === "engine" ? KINDS.length : 1;
const rig = await Rig.start({ redisUrl, policies: policies * sets, perAccount: 20, concurrency, inMemory: values["in-memory"] });
const setOf = (kind: Kind, indices: number[]) => indices.map((i) => i + policies * Math.max(0, KINDS.indexOf(kind)));
try {
  if (values.mode === "engine") emitResult(await engine());
  else emitResult(await memory());
} finally {
  await rig.close();
}
// A BullMQ or HTTP keep-alive handle must not keep a finished child alive.
process.exit(0);

async function engine(): Promise<EngineResult> {
  const warm = values.warmup ? all.slice(0, Math.min(policies, Number(values.warmup))) : all;
  const run = async (kind: Kind, own: number[]): Promise<RekeyRun> => {
    const indices = setOf(kind, own);
    if (kind === "rekey") return rig.rekeyRun(indices, { deadlineMs });
    const res = kind === "baseline" ? await rig.baselineRun(indices, { deadlineMs }) : await rig.minimalRun(indices, { deadlineMs });
    return { ...res, failed: indices.length - res.completed, confirmToRevokeMs: [] };
  };
  for (let w = 0; w < Number(values["warmup-runs"]); w++) {
    for (const kind of KINDS) if (kinds.includes(kind)) await run(kind, warm);
  }
  const runs: RunFigure[] = [];
  const confirmToRevokeMs: number[] = [];
  const calls: Record<Kind, Record<string, number>> = { rekey: {}, baseline: {}, minimal: {} };
  const add = (into: Record<string, number>, d: FakesDrain) => {
    for (const [route, n] of Object.entries(d.routes)) into[route] = (into[route] ?? 0) + n;
  };
  const profileDir = values["cpu-prof"] ?? "";
  const inspector = profileDir ? new Session() : undefined;
  if (inspector) {
    mkdirSync(profileDir, { recursive: true });
    inspector.connect();
    await inspector.post("Profiler.enable");
    await inspector.post("Profiler.setSamplingInterval", { interval: Number(values["cpu-prof-interval-us"]) });
  }
  const rounds = Math.min(20, Number(values.runs));
  for (let r = 0; r < rounds; r++) {
    // Each kind goes first, second and last in turn, so a drift of the machine spreads evenly.
    const order = KINDS.map((_, k) => KINDS[(k + r) % KINDS.length] as Kind);
    for (const kind of order) {
      if (!kinds.includes(kind)) continue;
      const before = await rig.redisCounters();
      if (inspector) await inspector.post("Profiler.start");
      const res = await run(kind, all);
      if (inspector) writeFileSync(join(profileDir, `${kind}-${r}.cpuprofile`), JSON.stringify((await inspector.post("Profiler.stop")).profile));
      const after = await rig.redisCounters();
      const redisCalls: Record<string, number> = {};
      for (const [c, n] of Object.entries(after.calls)) if (n - (before.calls[c] ?? 0) > 0) redisCalls[c] = n - (before.calls[c] ?? 0);
      const consumerCalls = Object.entries(after.consumer).reduce((s, [c, n]) => s + n - (before.consumer[c] ?? 0), 0);
      runs.push({ kind, wallMs: res.wallMs, rotations: res.completed, failed: res.failed, cpuMs: res.cpuMs, busy: res.busy, redisCpuMs: after.cpuMs - before.cpuMs, redisCalls, consumerCalls });
      confirmToRevokeMs.push(...res.confirmToRevokeMs);
      add(calls[kind], res.drain);
      const last = runs[runs.length - 1] as RunFigure;
      const redisCount = Object.values(last.redisCalls).reduce((a, b) => a + b, 0);
      progress(
        `${kind.padEnd(8)} ${last.rotations} rotations in ${(last.wallMs / 1000).toFixed(2)} s (${((last.rotations * 1000) / last.wallMs).toFixed(0)}/s); ` +
          `cpu ${(last.cpuMs / last.rotations).toFixed(2)} ms/rotation, loop busy ${(last.busy * 100).toFixed(0)}%, redis cpu ${(last.redisCpuMs / last.rotations).toFixed(2)} ms and ${(redisCount / last.rotations).toFixed(1)} commands/rotation ` +
          `(the consumer's own reads, not counted: ${(last.consumerCalls / last.rotations).toFixed(1)})`,
      );
    }
  }
  const perRotation = (m: Record<string, number>, kind: Kind) => {
    const n = runs.filter((r) => r.kind === kind).reduce((s, r) => s + r.rotations, 0);
    return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v / Math.max(1, n)]));
  };
  return {
    concurrency,
    policies,
    runs,
    confirmToRevokeMs,
    callsPerRotation: { rekey: perRotation(calls.rekey, "rekey"), baseline: perRotation(calls.baseline, "baseline"), minimal: perRotation(calls.minimal, "minimal") },
  };
}

async function memory(): Promise<MemoryResult> {
  const rounds = Math.min(100, Number(values.rounds));
  const every = Number(values.sample);
  const samples: MemorySample[] = [];
  const redisUsedBefore = await rig.redisUsedMemory();
  const t0 = performance.now();
  const sample = (rotations: number) => {
    const m = process.memoryUsage();
    samples.push({ rotations, rssBytes: m.rss, heapUsedBytes: m.heapUsed, atMs: performance.now() - t0 });
  };
  sample(0);
  let total = 0;
  let failed = 0;
  for (let r = 0; r < rounds; r++) {
    const before = total;
    const res = await rig.rekeyRun(all, {
      deadlineMs,
      onComplete: (n) => {
        if ((before + n) % every === 0) sample(before + n);
      },
    });
    total += res.completed;
    failed += res.failed;
    progress(`round ${r + 1}/${rounds}: ${total} rotations, rss ${(process.memoryUsage().rss / 1048576).toFixed(0)} MB`);
  }
  const wallMs = performance.now() - t0;
  const redisUsedAfter = await rig.redisUsedMemory();
  const keys: Record<string, number> = {};
  const redis = rig.rt.redis;
  let cursor = "0";
  let scans = 0;
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", `${rig.rt.prefix}:*`, "COUNT", 1000);
    cursor = next;
    for (const k of batch) {
      const kind = k
        .slice(rig.rt.prefix.length + 1)
        .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>")
        .replace(/bench-ld-\d+/g, "<policy>")
        .replace(/^fpi:.*/, "fpi:<fingerprint>")
        .replace(/^(pace|gate):.*/, "$1:…");
      keys[kind] = (keys[kind] ?? 0) + 1;
    }
  } while (cursor !== "0" && ++scans < 100_000);
  const auditEntries = await redis.xlen(`${rig.rt.prefix}:audit`);
  const completedJobs = await rig.rt.queue.getCompletedCount();
  return { concurrency, policies, rotations: total, failed, wallMs, samples, redisUsedBefore, redisUsedAfter, keys, auditEntries, completedJobs };
}
