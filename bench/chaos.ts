/**
 * `npm run chaos`: the full fault matrix (bench/chaos/matrix.ts) and the bad-input matrix
 * (bench/chaos/bad-input.ts), then a summary. Exit code 1 when any invariant was violated, a
 * rotation was left without an end or an alert, or a bad input crashed something.
 *
 * Then the attack run (bench/attack.ts): ≥ 10,000 hostile requests against the API while real
 * rotations wait for their consumer.
 *
 *   npm run chaos                   # ≥ 500 rotations, kills, a Redis restart, 20 % faults
 *   CHAOS_ROTATIONS=100 npm run chaos   # a shorter run
 *   CHAOS_ONLY=attack npm run chaos     # the attack run alone
 *   CHAOS_ATTACK_TOPOLOGY=run npm run chaos   # the attack on the API and the worker in one
 *                                       # process (`rekey run`) instead of the API alone
 *   CHAOS_API_NODE_FLAGS= npm run chaos # the API's process without the image's Node flags
 *                                       # (src/node-flags.ts); or with other flags
 *   npm run chaos -- --failover         # the fault matrix on Sentinel (a master, two replicas,
 *                                       # three sentinels): the master is SIGKILLed 3 times
 *                                       # (CHAOS_FAILOVERS)
 *   npm run chaos -- --failover --lag 2000   # and the replicas lag 2 s before each kill:
 *                                       # the promoted one has lost those writes
 *   npm run chaos -- --wipe             # halfway through, Redis restarts empty; reconcile
 *                                       # passes repair until every policy is whole, then the
 *                                       # load goes on (bench/chaos/wipe.ts)
 *
 * The failover and wipe runs are the fault matrix alone: the bad-input matrix and the attack run
 * do not depend on the Redis topology.
 */
import { parseArgs } from "node:util";
import { attackViolations, formatAttackReport, runAttack } from "./attack.ts";
import { formatReport, runMatrix, totalViolations } from "./chaos/matrix.ts";
import { runBadInput } from "./chaos/bad-input.ts";

const { values: flags } = parseArgs({ options: { failover: { type: "boolean", default: false }, lag: { type: "string" }, wipe: { type: "boolean", default: false } } });
if (flags.wipe && flags.failover) throw new Error("--wipe: not with --failover (the wipe runs on a single Redis)");
const lagMs = flags.lag === undefined ? 0 : Number(flags.lag);
if (!Number.isInteger(lagMs) || lagMs < 0 || lagMs > 60_000) throw new Error(`--lag: expected milliseconds from 0 to 60000 (got ${JSON.stringify(flags.lag)})`);
if (lagMs && !flags.failover) throw new Error("--lag: only with --failover (the replicas that lag are the Sentinel topology's)");
const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const rotations = num("CHAOS_ROTATIONS", 520);
const failovers = num("CHAOS_FAILOVERS", 3);
const t0 = Date.now();

const only = flags.failover || flags.wipe ? "matrix" : process.env.CHAOS_ONLY;
// Checked before anything runs, not after the fault matrix.
const topology = attackTopology();
let failed = false;

if (!only || only === "matrix") {
  console.log(`rekey fault matrix — ${rotations} rotations${flags.failover ? `, on Sentinel with ${failovers} failovers${lagMs ? ` after ${lagMs} ms of replica lag each` : ""}` : ""}${flags.wipe ? ", Redis wiped halfway" : ""}, started ${new Date().toISOString()}`);
  const report = await runMatrix({
    ld: num("CHAOS_LD", 120),
    snyk: num("CHAOS_SNYK", 10),
    qstash: num("CHAOS_QSTASH", 6),
    rotations,
    workers: num("CHAOS_WORKERS", 3),
    concurrency: num("CHAOS_CONCURRENCY", 8),
    kills: num("CHAOS_KILLS", 40),
    killEveryMs: [4_000, 12_000],
    redisRestartsAt: flags.failover ? Array.from({ length: failovers }, (_, i) => (i + 1) / (failovers + 1)) : flags.wipe ? [0.5] : [0.45],
    redis: flags.failover ? { kind: "sentinel", lagMs } : { kind: "single", wipe: flags.wipe },
    faultRate: num("CHAOS_FAULT_RATE", 0.2),
    requestTimeoutMs: 1_000,
    duplicateRate: 0.05,
    maxInFlight: num("CHAOS_IN_FLIGHT", 48),
    deadlineMs: num("CHAOS_DEADLINE_S", 720) * 1_000,
    settleMs: 90_000,
    seed: num("CHAOS_SEED", Date.now() % 1_000_000),
    progress: (line) => console.log(line),
  });
  console.log("\n== fault matrix ==");
  for (const line of formatReport(report)) console.log(line);
  failed ||= totalViolations(report.violations) > 0 || report.stragglers.length > 0;
  // A wipe's goals: every policy whole again, no orphan, one live credential per policy.
  failed ||= report.wipes.some((w) => w.wholeAfterMs === undefined || w.orphanedLive - w.unlistable > 0 || w.multiLive.length > 0);

  if (!flags.failover && !flags.wipe) {
    console.log("\n== bad input ==");
    const bad = await runBadInput({ files: num("CHAOS_BAD_FILES", 1_000), progress: (line) => console.log(line) });
    for (const line of bad.lines) console.log(line);
    failed ||= bad.problems.length > 0;
  }
}

if (!only || only === "attack") {
  console.log(`\n== attack == started ${new Date().toISOString()}`);
  const attack = await runAttack({
    requests: num("CHAOS_ATTACK_REQUESTS", 10_000),
    policies: num("CHAOS_ATTACK_POLICIES", 5),
    minRounds: num("CHAOS_ATTACK_MIN_ROUNDS", 8),
    concurrency: num("CHAOS_ATTACK_CONCURRENCY", 32),
    rate: num("CHAOS_ATTACK_RATE", 500),
    segments: num("CHAOS_ATTACK_SEGMENTS", 4),
    addresses: num("CHAOS_ATTACK_ADDRESSES", 16),
    topology,
    apiNodeFlags: apiNodeFlags(),
    progress: (line) => console.log(line),
  });
  for (const line of formatAttackReport(attack)) console.log(line);
  const violations = attackViolations(attack);
  for (const v of violations) console.log(`GOAL MISSED: ${v}`);
  failed ||= violations.length > 0;
}

console.log(`\n${failed ? "FAILED" : "OK"} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);

/** The Node flags of the attack run's API process: the image's (default), or CHAOS_API_NODE_FLAGS. */
function apiNodeFlags(): readonly string[] | undefined {
  const f = process.env.CHAOS_API_NODE_FLAGS;
  return f === undefined ? undefined : f.split(/\s+/).filter(Boolean);
}

/** Where the attack run's API runs: alone, as `rekey api` is deployed (default), or as `rekey run`. */
function attackTopology(): "api" | "run" {
  const t = process.env.CHAOS_ATTACK_TOPOLOGY ?? "api";
  if (t !== "api" && t !== "run") throw new Error(`CHAOS_ATTACK_TOPOLOGY: "api" or "run" (got ${JSON.stringify(t)})`);
  return t;
}
