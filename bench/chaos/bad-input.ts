/**
 * The bad-input matrix: generated malformed policy files (wrong types, missing fields, bad cron,
 * unknown keys, broken YAML and JSON, bad durations and enums), each of which must be refused
 * with a clear error — the file, a field path or line, and a reason — and never crash the loader;
 * and malformed or forged API requests (bad JSON, wrong types, huge bodies, bad or missing
 * tokens, unknown routes, wrong versions), each of which must get a 4xx, never a 5xx, and change
 * nothing in Redis — the audit trail included — but the rate-limit counters (one key per client
 * address or identity, expiring with its window).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyIssue } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import { loadPolicyFile } from "../../src/policy/loader.ts";
import { Policy } from "../../src/policy/schema.ts";
import { startApiServer } from "../../src/processes.ts";
import { createRuntime } from "../../src/runtime.ts";
import { startRedisServer } from "../../test/helpers/redis-server.ts";
import { dumpRedis } from "./checker.ts";

const EXAMPLES = fileURLToPath(new URL("../../policies/", import.meta.url));

export interface Mutated {
  name: string;
  ext: ".yaml" | ".json";
  text: string;
  /** What was broken, for messages. */
  what: string;
}

function pick<T>(list: readonly T[], n: number): T {
  return list[n % list.length] as T;
}

const WRONG_VALUES = ["[1, 2]", "42", "true", "{ a: 1 }", "null", '""', "-1"];
const BAD_CRONS = ['"61 * * * *"', '"* * *"', '"every monday"', '"0 3 * * 8"', '"0 25 * * *"', '"*/0 * * * *"', '"0 3 31 2 * * *"', "7"];
const BAD_DURATIONS = ['"5 parsecs"', '"-1h"', '"1x"', "[]", '"forever"', "0"];
const REQUIRED_TOP = ["id", "owner", "provider", "target", "consumers"];

/** Drops the top-level block `key:` (its line and every indented line under it). */
function dropTop(lines: string[], key: string): string[] {
  const out: string[] = [];
  let skipping = false;
  for (const l of lines) {
    if (new RegExp(`^${key}:`).test(l)) {
      skipping = true;
      continue;
    }
    if (skipping && (/^\s/.test(l) || l === "")) continue;
    skipping = false;
    out.push(l);
  }
  return out;
}

/** Replaces the value of the first line `<indent>key: value` (any indent). */
function setValue(lines: string[], key: string, value: string): string[] | undefined {
  const i = lines.findIndex((l) => new RegExp(`^\\s*(- )?${key}: \\S`).test(l));
  if (i < 0) return undefined;
  const copy = [...lines];
  copy[i] = (copy[i] as string).replace(new RegExp(`(${key}: ).*$`), `$1${value}`);
  return copy;
}

/** The `n`-th malformed policy file, made from the example policies. */
export function malformedPolicy(n: number, templates: string[]): Mutated {
  const base = pick(templates, n).split("\n").filter((l) => !/^\s*#/.test(l));
  const kind = n % 9;
  const k = Math.floor(n / 9);
  const name = `bad-${String(n).padStart(4, "0")}`;
  const withId = (lines: string[]) => lines.map((l) => (l.startsWith("id: ") ? `id: ${name}` : l));
  switch (kind) {
    case 0: {
      const key = pick(["id", "owner", "secretId", "kind", "confirm", "baseUrl", "region"], k);
      const lines = setValue(withId(base), key, pick(WRONG_VALUES, k)) ?? setValue(withId(base), "owner", pick(WRONG_VALUES, k));
      return { name, ext: ".yaml", text: (lines ?? []).join("\n"), what: `wrong type for ${key}` };
    }
    case 1: {
      const key = pick(REQUIRED_TOP, k);
      return { name, ext: ".yaml", text: dropTop(withId(base), key).join("\n"), what: `missing ${key}` };
    }
    case 2: {
      const lines = withId(base).filter((l) => !/^\s+(cron|every|timezone|window):/.test(l) && !/^schedule:/.test(l));
      return { name, ext: ".yaml", text: [...lines, "schedule:", `  cron: ${pick(BAD_CRONS, k)}`].join("\n"), what: "bad cron" };
    }
    case 3: {
      const where = k % 3;
      const lines = withId(base);
      if (where === 0) return { name, ext: ".yaml", text: [...lines, `colour${k}: blue`].join("\n"), what: "unknown top-level key" };
      const at = lines.findIndex((l) => l.startsWith(where === 1 ? "provider:" : "target:"));
      const copy = [...lines];
      copy.splice(at + 1, 0, `  unknownField${k}: 1`);
      return { name, ext: ".yaml", text: copy.join("\n"), what: "unknown nested key" };
    }
    case 4: {
      const lines = withId(base);
      const at = 1 + (k % Math.max(1, lines.length - 2));
      const copy = [...lines];
      const breakers = [`owner: "unterminated`, "  : no key", "provider: [unclosed", "\tid: tab-indented", "target:\n secretId: a\n  region: b", "- a\nb: c", "consumers: {a: 1", "id: a\nid: b"];
      copy.splice(at, 0, pick(breakers, k));
      return { name, ext: ".yaml", text: copy.join("\n"), what: "broken YAML" };
    }
    case 5: {
      const key = pick(["timeout", "interval", "window", "remindEvery"], k);
      const lines = setValue(withId(base), key, pick(BAD_DURATIONS, k)) ?? [...dropTop(withId(base), "confirmation"), "confirmation:", `  timeout: ${pick(BAD_DURATIONS, k)}`];
      return { name, ext: ".yaml", text: lines.join("\n"), what: `bad duration for ${key}` };
    }
    case 6: {
      const key = pick(["kind", "onTimeout", "confirm", "id", "owner"], k);
      const value = pick(["gitlab", "maybe", "carrier-pigeon", '"has spaces and :colons"', '"not-an-email"'], k);
      const lines = setValue(withId(base), key, value) ?? setValue(withId(base), "owner", '"not-an-email"');
      return { name, ext: ".yaml", text: (lines ?? []).join("\n"), what: `bad value for ${key}` };
    }
    case 7: {
      const breakers = ['{"id": "x", ', "[1, 2, 3]", '{"id": 5, "owner": []}', "", "null", '{"id": "x"} trailing', "\u0000\u0001", '{"id":"x","owner":"a@b.c","provider":{"kind":"launchdarkly"}}'];
      return { name, ext: ".json", text: pick(breakers, k), what: "broken or incomplete JSON" };
    }
    default: {
      const bad = ["  - id: c", `    confirm: ${pick(["push", "probe", "usage", "email"], k)}`, `    ${pick(["tokenHash: md5:abc", "url: not a url", "quietFor: soon", "interval: 1h"], k)}`];
      return { name, ext: ".yaml", text: [...dropTop(withId(base), "consumers"), "consumers:", ...bad].join("\n"), what: "bad consumer" };
    }
  }
}

export interface BadInputResult {
  files: number;
  refused: number;
  /** Generated files the loader accepted (the mutation happened to leave a valid policy). */
  accepted: number;
  apiRequests: number;
  api4xx: number;
  /** Anything that breaks the rules: a crash, an unclear error, a 5xx, a changed state. */
  problems: string[];
  lines: string[];
}

function clear(issue: PolicyIssue, file: string): string | undefined {
  if (!issue.file || !issue.file.endsWith(file)) return "issue does not name the file";
  if (!issue.message || issue.message.length < 8) return "no reason given";
  if (issue.line === undefined && !issue.path) return "neither a line nor a field path";
  if (/TypeError|ReferenceError|\bundefined\b|\[object Object\]|Cannot read/.test(issue.message)) return `reads like a crash: ${issue.message}`;
  return undefined;
}

export async function checkPolicyFiles(count: number): Promise<Pick<BadInputResult, "files" | "refused" | "accepted" | "problems"> & { samples: string[] }> {
  const templates = readdirSync(EXAMPLES)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .map((f) => readFileSync(join(EXAMPLES, f), "utf8"));
  const dir = mkdtempSync(join(tmpdir(), "rekey-bad-policies-"));
  const problems: string[] = [];
  const samples: string[] = [];
  let refused = 0;
  let accepted = 0;
  try {
    for (let n = 0; n < count; n++) {
      const m = malformedPolicy(n, templates);
      const file = join(dir, `${m.name}${m.ext}`);
      writeFileSync(file, m.text);
      let issues: PolicyIssue[];
      let valid: number;
      try {
        const r = await loadPolicyFile(file);
        issues = r.issues;
        valid = r.policies.length;
      } catch (err) {
        problems.push(`${m.name} (${m.what}): the loader threw ${err instanceof Error ? err.name : "?"}: ${String(err)}`);
        continue;
      }
      if (issues.length === 0) {
        accepted++;
        continue;
      }
      if (valid > 0) problems.push(`${m.name} (${m.what}): refused with issues but also loaded a policy`);
      refused++;
      for (const i of issues) {
        const why = clear(i, `${m.name}${m.ext}`);
        if (why) problems.push(`${m.name} (${m.what}): ${why}: ${JSON.stringify(i)}`);
      }
      if (samples.length < 9 && n % 9 === samples.length) {
        const i = issues[0] as PolicyIssue;
        samples.push(`${m.what}: ${i.file.slice(dir.length + 1)}${i.line ? `:${i.line}` : ""}: ${i.path ? `${i.path}: ` : ""}${i.message}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { files: count, refused, accepted, problems, samples };
}

const ADMIN = "chaos-admin-token-0123456789abcdefghij";
const CONSUMER = "chaos-bad-input-consumer-0123456789ab";

interface ApiCase {
  what: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

/** Malformed and forged requests. None may succeed, none may be a 5xx. */
export function apiCases(): ApiCase[] {
  const cases: ApiCase[] = [];
  const json = { "content-type": "application/json" };
  const consumerAuth = { authorization: `Bearer ${CONSUMER}` };
  const auths: [string, Record<string, string>][] = [
    ["no token", {}],
    ["bad token", { authorization: "Bearer not-the-token" }],
    ["forged token of the right length", { authorization: `Bearer ${"x".repeat(ADMIN.length)}` }],
    ["token without Bearer", { authorization: ADMIN.slice(1) }],
    ["Basic instead of Bearer", { authorization: `Basic ${Buffer.from(`admin:${ADMIN}x`).toString("base64")}` }],
    ["huge token", { authorization: `Bearer ${"a".repeat(8_000)}` }],
    ["consumer token on an admin route", consumerAuth],
  ];
  const bodies: [string, string][] = [
    ["bad JSON", '{"policyId": '],
    ["array body", "[1,2,3]"],
    ["wrong types", '{"policyId": 5, "consumerId": [], "versionId": {}}'],
    ["missing fields", "{}"],
    ["unknown fields", '{"policyId":"bad-input","consumerId":"app","versionId":"v","admin":true}'],
    ["null", "null"],
    ["huge body", JSON.stringify({ policyId: "bad-input", consumerId: "app", versionId: "v", pad: "x".repeat(200_000) })],
    ["prototype pollution", '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}},"policyId":"bad-input"}'],
    ["deeply nested", `${"[".repeat(5_000)}${"]".repeat(5_000)}`],
    ["not JSON at all", "policyId=bad-input&consumerId=app"],
  ];
  // Consumer confirmations: every body with a valid consumer token, and forged tokens on a good body.
  for (const [what, body] of bodies) cases.push({ what: `confirmation: ${what}`, method: "POST", path: "/v1/confirmations", headers: { ...json, ...consumerAuth }, body });
  const good = JSON.stringify({ policyId: "bad-input", consumerId: "app", versionId: "00000000-0000-4000-8000-000000000000" });
  for (const [what, headers] of auths) if (what !== "consumer token on an admin route") cases.push({ what: `confirmation: ${what}`, method: "POST", path: "/v1/confirmations", headers: { ...json, ...headers }, body: good });
  cases.push(
    { what: "confirmation: unknown policy", method: "POST", path: "/v1/confirmations", headers: { ...json, ...consumerAuth }, body: JSON.stringify({ policyId: "nope", consumerId: "app", versionId: "v" }) },
    { what: "confirmation: unknown consumer", method: "POST", path: "/v1/confirmations", headers: { ...json, ...consumerAuth }, body: JSON.stringify({ policyId: "bad-input", consumerId: "ghost", versionId: "v" }) },
    { what: "confirmation: no rotation in flight", method: "POST", path: "/v1/confirmations", headers: { ...json, ...consumerAuth }, body: good },
    { what: "confirmation: bad fingerprint", method: "POST", path: "/v1/confirmations", headers: { ...json, ...consumerAuth }, body: JSON.stringify({ policyId: "bad-input", consumerId: "app", fingerprint: "zz" }) },
    { what: "confirmation: text/plain", method: "POST", path: "/v1/confirmations", headers: { "content-type": "text/plain", ...consumerAuth }, body: good },
    { what: "confirmation: xml", method: "POST", path: "/v1/confirmations", headers: { "content-type": "application/xml", ...consumerAuth }, body: "<a/>" },
  );
  // Operator routes: every forged auth, and bad bodies with the real admin token.
  const admin = { authorization: `Bearer ${ADMIN}` };
  const opRoutes: [string, string][] = [
    ["POST", "/v1/rotations"],
    ["POST", "/v1/rotations/00000000-0000-4000-8000-000000000000/submit"],
    ["GET", "/v1/status"],
    ["GET", "/v1/policies/bad-input/history"],
    ["POST", "/v1/leaks"],
    ["POST", "/v1/offboardings"],
    ["GET", "/admin/queues"],
  ];
  for (const [method, path] of opRoutes) {
    for (const [what, headers] of auths) cases.push({ what: `${method} ${path}: ${what}`, method, path, headers: { ...json, ...headers }, body: method === "POST" ? JSON.stringify({ policyId: "bad-input" }) : undefined });
  }
  for (const [what, body] of bodies) {
    cases.push({ what: `rotations: ${what}`, method: "POST", path: "/v1/rotations", headers: { ...json, ...admin }, body });
    cases.push({ what: `submit: ${what}`, method: "POST", path: "/v1/rotations/00000000-0000-4000-8000-000000000000/submit", headers: { ...json, ...admin }, body });
  }
  cases.push(
    { what: "rotations: unknown policy", method: "POST", path: "/v1/rotations", headers: { ...json, ...admin }, body: JSON.stringify({ policyId: "nope" }) },
    { what: "submit: unknown rotation", method: "POST", path: "/v1/rotations/nope/submit", headers: { ...json, ...admin }, body: JSON.stringify({ value: "x" }) },
    { what: "submit: empty value", method: "POST", path: "/v1/rotations/00000000-0000-4000-8000-000000000000/submit", headers: { ...json, ...admin }, body: JSON.stringify({ value: "" }) },
    { what: "history: unknown policy", method: "GET", path: "/v1/policies/nope/history?limit=abc", headers: admin },
  );
  // Unknown routes, wrong versions, wrong methods.
  for (const path of ["/v2/confirmations", "/v0/status", "/v1", "/v1/", "/V1/status", "/v1/confirmations/extra", "/v1/rotations/../../etc/passwd", "/%00", "/v1/status%2F..", "/api/v2/tokens", "/.env", "/v1/policies"]) {
    cases.push({ what: `unknown route ${path}`, method: "GET", path, headers: admin });
    cases.push({ what: `unknown route POST ${path}`, method: "POST", path, headers: { ...json, ...admin }, body: "{}" });
  }
  for (const method of ["PUT", "DELETE", "PATCH"]) {
    for (const path of ["/v1/confirmations", "/v1/rotations", "/v1/status"]) cases.push({ what: `${method} ${path}`, method, path, headers: { ...json, ...admin }, body: "{}" });
  }
  return cases;
}

/**
 * Redis without the rate-limit counters (bounded: one key per address or identity, with a TTL)
 * and BullMQ's own bookkeeping. The audit is in: refusals are counted in metrics, not audited.
 */
async function stateOf(redis: Parameters<typeof dumpRedis>[0], prefix: string): Promise<string> {
  const dump = (await dumpRedis(redis, prefix)).split("\n");
  const out: string[] = [];
  for (let i = 0; i + 1 < dump.length; i += 2) {
    const key = dump[i] as string;
    if (key.startsWith(`${prefix}:ratelimit:`) || /:bull:[^:]+:(events|stalled-check|meta)$/.test(key)) continue;
    out.push(key, dump[i + 1] as string);
  }
  return out.sort().join("\n");
}

export async function checkApi(): Promise<{ requests: number; fourxx: number; problems: string[]; statuses: Record<string, number> }> {
  const redis = await startRedisServer();
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const log = createLogger({ level: "silent", destination: sink });
  const prefix = "badinput";
  const rt = await createRuntime({ redisUrl: redis.url, prefix, policyPaths: [], log, region: "us-east-1", env: {} });
  const problems: string[] = [];
  const statuses: Record<string, number> = {};
  let fourxx = 0;
  const cases = apiCases();
  let api: { url: string; stop(): Promise<void> } | undefined;
  try {
    rt.policies.replace([
      {
        policy: Policy.parse({
          id: "bad-input",
          owner: "owner@example.com",
          provider: { kind: "launchdarkly", baseUrl: "http://127.0.0.1:9", management: { env: "NONE" } },
          target: { secretId: "bad/input", region: "us-east-1" },
          consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
        }),
        file: "bad-input.yaml",
      },
    ]);
    api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, adminTokenHash: tokenHash(ADMIN) });
    await rt.redis.set(`${prefix}:marker`, "1");
    const before = await stateOf(rt.redis, prefix);
    for (const c of cases) {
      let status: number;
      try {
        const res = await fetch(`${api.url}${c.path}`, { method: c.method, headers: c.headers, body: c.body, signal: AbortSignal.timeout(10_000) });
        await res.arrayBuffer();
        status = res.status;
      } catch (err) {
        problems.push(`${c.what}: no answer (${String(err)})`);
        continue;
      }
      statuses[String(status)] = (statuses[String(status)] ?? 0) + 1;
      if (status >= 400 && status < 500) fourxx++;
      else problems.push(`${c.what}: answered ${status}`);
    }
    const after = await stateOf(rt.redis, prefix);
    if (after !== before) problems.push("the requests changed Redis state (audit included) besides the rate-limit counters");
    const jobs = await rt.queue.getJobCounts();
    if (Object.values(jobs).some((n) => n > 0)) problems.push(`the requests queued jobs: ${JSON.stringify(jobs)}`);
  } finally {
    await api?.stop();
    await rt.close();
    await redis.stop();
  }
  return { requests: cases.length, fourxx, problems, statuses };
}

export async function runBadInput(opts: { files: number; progress?: (line: string) => void }): Promise<BadInputResult> {
  const files = await checkPolicyFiles(opts.files);
  const api = await checkApi();
  const problems = [...files.problems, ...api.problems];
  const lines = [
    `policy files: ${files.files} generated, ${files.refused} refused with file + field/line + reason, ${files.accepted} happened to be valid, ${files.problems.length} problem(s)`,
    ...files.samples.map((s) => `  e.g. ${s}`),
    `API requests: ${api.requests} malformed/forged, ${api.fourxx} answered 4xx (${Object.entries(api.statuses).map(([s, n]) => `${s}×${n}`).join(", ")}), ${api.problems.length} problem(s)`,
    ...problems.slice(0, 20).map((p) => `  problem: ${p}`),
  ];
  return { files: files.files, refused: files.refused, accepted: files.accepted, apiRequests: api.requests, api4xx: api.fourxx, problems, lines };
}
