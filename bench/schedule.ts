/**
 * Child process: the scale of the schedule. Loads, validates and schedules every policy file in
 * a folder with the scheduler's own start-up path (PolicySet.reload, then startScheduler), runs
 * the first tick (every policy's slot marker synced in Redis), then re-applies single changed
 * files (PolicySet.reloadFile; the scheduler follows the set). The reference, measured in the same process right after: a plain walk + read + YAML
 * parse (the `yaml` package) of the same files.
 *
 *   tsx bench/schedule.ts --dir <policy folder> --redis <url> --reloads <n>
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { parse as parseYaml } from "yaml";
import { createLogger } from "../src/log.ts";
import { PolicySet } from "../src/policy/policy-set.ts";
import { startScheduler } from "../src/scheduler/runner.ts";
import { emitResult } from "./lib/child.ts";
import { policyText } from "./lib/policies.ts";
import { median, percentile } from "./lib/stats.ts";

export interface ScheduleResult {
  files: number;
  policies: number;
  issues: number;
  rssBeforeBytes: number;
  /** Peak RSS of the process up to the end of the load (getrusage maxrss). */
  peakRssBytes: number;
  heapUsedAfterBytes: number;
  loadMs: number;
  firstTickMs: number;
  reloadMs: number[];
  reloadMedianMs: number;
  reloadP95Ms: number;
  /** Reference: walk + read + YAML.parse of every file. */
  yamlMs: number;
  /** Reference for one file: read + YAML.parse, median. */
  yamlOneMs: number;
}

const { values } = parseArgs({ options: { dir: { type: "string" }, redis: { type: "string" }, reloads: { type: "string", default: "20" } } });
const dir = values.dir ?? "";
const reloads = Math.min(200, Number(values.reloads));
if (!dir || !values.redis) throw new Error("usage: schedule.ts --dir <folder> --redis <url> [--reloads n]");

const sink = new Writable({ write: (_c, _e, cb) => cb() });
const log = createLogger({ level: "info", destination: sink });
const redis = new Redis(values.redis, { maxRetriesPerRequest: null });
const prefix = `rekey-bench-sched-${process.pid}-${Date.now()}`;

const rssBeforeBytes = process.memoryUsage().rss;
const t0 = performance.now();
const set = new PolicySet([dir]);
const loaded = await set.reload();
if (loaded.issues.length) throw new Error(`${loaded.issues.length} problem(s) in the generated policies`);
const handle = startScheduler({
  redis,
  prefix,
  now: Date.now,
  log,
  policies: set,
  tickMs: 3_600_000,
  enqueue: async () => {},
});
const loadMs = performance.now() - t0;
const peakRssBytes = process.resourceUsage().maxRSS * 1024;
const heapUsedAfterBytes = process.memoryUsage().heapUsed;
const policies = handle.scheduler.size;

const t1 = performance.now();
await handle.tick();
const firstTickMs = performance.now() - t1;

// Re-apply single changed files spread over the folder: each edit changes the schedule.
const files = walk(dir);
const reloadMs: number[] = [];
let issues = 0;
for (let k = 0; k < reloads; k++) {
  const idx = Math.floor(((k + 0.5) * files.length) / reloads);
  const file = files[idx] as string;
  const i = Number(/policy-(\d+)\.yaml$/.exec(file)?.[1]);
  writeFileSync(file, policyText(i, k + 1));
  const t = performance.now();
  const report = await set.reloadFile(file);
  reloadMs.push(performance.now() - t);
  if (report.upserted !== 1 || report.issues.length) issues++;
}

// Reference: the same files walked, read and parsed as plain YAML.
const t2 = performance.now();
let parsed = 0;
for (const f of walk(dir)) if (parseYaml(readFileSync(f, "utf8"))) parsed++;
const yamlMs = performance.now() - t2;
const one: number[] = [];
for (let k = 0; k < Math.max(reloads, 20); k++) {
  const f = files[Math.floor(((k + 0.5) * files.length) / Math.max(reloads, 20))] as string;
  const t = performance.now();
  parseYaml(readFileSync(f, "utf8"));
  one.push(performance.now() - t);
}

await handle.stop();
const keys = await redis.keys(`${prefix}:*`);
for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
redis.disconnect();

const result: ScheduleResult = {
  files: parsed,
  policies,
  issues,
  rssBeforeBytes,
  peakRssBytes,
  heapUsedAfterBytes,
  loadMs,
  firstTickMs,
  reloadMs,
  reloadMedianMs: median(reloadMs),
  reloadP95Ms: percentile(reloadMs, 95),
  yamlMs,
  yamlOneMs: median(one),
};
emitResult(result);

function walk(d: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const full = join(d, e.name);
    if (e.isDirectory()) out.push(...walk(full));
    else if (e.name.endsWith(".yaml")) out.push(full);
  }
  return out.sort();
}
