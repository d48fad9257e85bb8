/**
 * Summarizes V8 CPU profiles (`bench/rotations.ts --cpu-prof <dir>`, or `node --cpu-prof`): where
 * the process's time went, by function and by group (ioredis, BullMQ, zod, pino, the AWS SDK,
 * undici, fastify, rekey's own folders, Node's internals).
 *
 *   tsx bench/profile-report.ts <dir or .cpuprofile files…> [--kind rekey] [--top 30] [--callers <regexp>]
 *
 * self: samples whose innermost frame is the function (or group). total: samples with the
 * function (or group) anywhere on the stack, each sample counted once. by owner: each sample
 * charged to the innermost frame that is neither Node's internals nor a V8 builtin (JSON.parse,
 * a regexp), so `JSON.parse` called by ioredis counts as ioredis. --callers: for the samples with
 * a function matching the regexp on the stack, the innermost frames of rekey's own code (src/)
 * and of BullMQ above it: who asked for that work.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { kind: { type: "string", default: "" }, top: { type: "string", default: "30" }, callers: { type: "string", default: "" } },
});
const top = Number(values.top);
const files = positionals.flatMap((p) =>
  statSync(p).isDirectory()
    ? readdirSync(p)
        .filter((f) => f.endsWith(".cpuprofile") && (!values.kind || f.startsWith(`${values.kind}-`)))
        .map((f) => join(p, f))
    : [p],
);
if (!files.length) throw new Error("usage: profile-report.ts <dir or .cpuprofile files> [--kind rekey]");

/** The group a frame belongs to, from its script URL. */
export function groupOf(frame: CallFrame): string {
  const url = frame.url;
  const name = frame.functionName;
  if (!url) {
    if (name === "(garbage collector)") return "gc";
    if (name === "(program)" || name === "(idle)" || name === "(root)") return name;
    return "v8 builtin";
  }
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (nm) {
    const pkg = nm[1] as string;
    if (pkg === "ioredis" || pkg === "redis-parser" || pkg === "redis-errors" || pkg === "denque" || pkg === "cluster-key-slot" || pkg === "standard-as-callback") return "ioredis";
    if (pkg === "bullmq" || pkg === "msgpackr" || pkg === "cron-parser" || pkg === "luxon") return "bullmq";
    if (pkg === "zod") return "zod";
    if (pkg === "pino" || pkg === "sonic-boom" || pkg === "fast-redact" || pkg === "@pinojs/redact" || pkg === "pino-std-serializers" || pkg === "thread-stream" || pkg === "quick-format-unescaped" || pkg === "safe-stable-stringify" || pkg === "on-exit-leak-free" || pkg === "atomic-sleep") return "pino";
    if (pkg.startsWith("@aws-sdk/") || pkg.startsWith("@smithy/") || pkg.startsWith("@aws-crypto/") || pkg === "fast-xml-parser" || pkg === "tslib" || pkg === "bowser" || pkg === "strnum") return "aws-sdk";
    if (pkg === "fastify" || pkg.startsWith("@fastify/") || pkg === "find-my-way" || pkg === "avvio" || pkg === "light-my-request" || pkg === "fast-json-stringify" || pkg === "secure-json-parse" || pkg === "abstract-logging" || pkg === "process-warning" || pkg === "toad-cache" || pkg === "fast-querystring" || pkg === "ret" || pkg === "safe-regex2" || pkg === "rfdc" || pkg === "@bull-board/api" || pkg === "@bull-board/fastify") return "fastify";
    if (pkg === "tsx" || pkg === "esbuild" || pkg === "get-tsconfig") return "tsx loader";
    if (pkg === "prom-client" || pkg === "tdigest" || pkg === "bintrees") return "prom-client";
    return `pkg ${pkg}`;
  }
  if (url.startsWith("node:internal/deps/undici") || url.includes("/undici/")) return "undici (fetch)";
  if (url.startsWith("node:")) {
    if (/^node:(internal\/)?(net|stream|streams|dns|tcp_wrap|internal\/stream_base_commons)/.test(url) || url.includes("stream")) return "node streams/net";
    if (url.includes("timers")) return "node timers";
    if (url.includes("http")) return "node http";
    if (url.includes("process/task_queues") || url.includes("async_hooks") || url.includes("promise")) return "node promises/ticks";
    return "node other";
  }
  const src = /\/(src|bench|test)\/(.+)$/.exec(url);
  if (src) {
    const [, top, rest] = src as unknown as [string, string, string];
    if (top === "src") {
      const parts = rest.split("/");
      if (parts[0] === "rotation") return `src/rotation/${parts.length > 2 ? `${parts[1]}/` : parts[1]}`;
      return `src/${parts[0]}${parts.length > 1 ? "/" : ""}`;
    }
    return `${top}/`;
  }
  return "other";
}

const INTERNAL = new Set(["v8 builtin", "node streams/net", "node timers", "node http", "node promises/ticks", "node other", "gc", "(program)", "(idle)", "(root)"]);

const fnKey = (f: CallFrame) => {
  const where = f.url ? `${f.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*?\/(src|bench|test)\//, "$1/")}:${f.lineNumber + 1}` : "";
  return `${f.functionName || "(anonymous)"} ${where}`.trim();
};

const selfFn = new Map<string, number>();
const totalFn = new Map<string, number>();
const selfGroup = new Map<string, number>();
const totalGroup = new Map<string, number>();
const ownerGroup = new Map<string, number>();
const ownerFn = new Map<string, number>();
const callers = new Map<string, number>();
const callersRe = values.callers ? new RegExp(values.callers) : undefined;
let allUs = 0;
let wallUs = 0;
const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);

for (const file of files) {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  wallUs += p.endTime - p.startTime;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0;
    const leaf = byId.get(p.samples[i] as number);
    if (!leaf) continue;
    const g = groupOf(leaf.callFrame);
    if (g === "(idle)") continue;
    allUs += us;
    add(selfFn, fnKey(leaf.callFrame), us);
    add(selfGroup, g, us);
    const seenFn = new Set<string>();
    const seenGroup = new Set<string>();
    let owner: string | undefined;
    let ownerF: string | undefined;
    let matched = false;
    let srcFrame: string | undefined;
    let bullFrame: string | undefined;
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const f = (byId.get(id) as ProfileNode).callFrame;
      const fg = groupOf(f);
      if (fg === "(root)") break;
      seenFn.add(fnKey(f));
      seenGroup.add(fg);
      if (callersRe && !matched && callersRe.test(fnKey(f))) matched = true;
      else if (matched) {
        if (srcFrame === undefined && fg.startsWith("src/")) srcFrame = fnKey(f);
        if (bullFrame === undefined && fg === "bullmq") bullFrame = fnKey(f);
      }
      if (owner === undefined && !INTERNAL.has(fg)) {
        owner = fg;
        ownerF = fnKey(f);
      }
    }
    for (const k of seenFn) add(totalFn, k, us);
    for (const k of seenGroup) add(totalGroup, k, us);
    add(ownerGroup, owner ?? g, us);
    add(ownerFn, ownerF ?? fnKey(leaf.callFrame), us);
    if (matched) add(callers, `${ownerF ?? "-"}  <-  ${srcFrame ?? "(no src frame)"}  <-  ${bullFrame ?? "-"}`, us);
  }
}

const pct = (us: number) => `${((100 * us) / allUs).toFixed(1).padStart(5)}%`;
const msOf = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
const list = (title: string, m: Map<string, number>, n: number) => {
  console.log(`\n${title}`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`  ${pct(v)} ${msOf(v)}  ${k}`);
};
console.log(`${files.length} profile(s), ${(wallUs / 1e6).toFixed(2)} s profiled, ${(allUs / 1e6).toFixed(2)} s on CPU (idle left out)`);
list("groups, self time", selfGroup, 40);
list("groups, by owner (builtins and Node internals charged to their caller's group)", ownerGroup, 40);
list("groups, total time (on the stack)", totalGroup, 40);
list(`functions, self time (top ${top})`, selfFn, top);
list(`functions, by owner (top ${top})`, ownerFn, top);
list(`functions, total time (top ${top})`, totalFn, top);
list(`rekey's own functions (src/), total time (top ${top})`, new Map([...totalFn].filter(([k]) => / src\//.test(k))), top);
if (callersRe) list(`callers of /${values.callers}/: owner <- innermost src frame <- innermost BullMQ frame`, callers, top);
