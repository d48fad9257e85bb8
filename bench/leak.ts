/**
 * Leak response at scale: one leak incident over `--credentials` policies spread over the
 * providers rekey rotates without a human (LaunchDarkly tokens, Snyk service-account secrets,
 * QStash tokens, QStash signing keys; CrewAI is a human step and is left out), against fakes that
 * enforce rate limits and the AWS emulator enforcing its write quota. Measures the time from the
 * leak request to the first and to the last old credential dying at its provider, and what those
 * limits allow: for every rate-limited key, the requests the run made there ÷ its rate; the
 * slowest key is the bound.
 *
 * Three roles in one file, each its own process:
 *   (default) the driver: fakes, Redis runtime, secrets, the leak request (leakResponseFor().start,
 *     what `rekey leak` and POST /v1/leaks call), polling, the figures (BENCH_RESULT line);
 *   --role fakes: the rate-limited fakes and the emulator (IPC, as bench/fakes-process.ts);
 *   --role worker --config <file>: a rotation worker process, as `rekey worker` runs one.
 *
 *   tsx bench/leak.ts --redis <url> [--credentials 1000] [--workers 2] [--concurrency 8]
 *     [--ld-limit 60] [--snyk-limit 1620] [--qstash-burst 10] [--aws-writes 50]
 */
import { fork, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { leakResponseFor } from "../src/leak/leak.ts";
import { createLogger } from "../src/log.ts";
import { Policy, type PolicyInput } from "../src/policy/schema.ts";
import { startRotationWorker } from "../src/processes.ts";
import { encodeSigningKeys } from "../src/providers/qstash/signing-keys.ts";
import { DEFAULT_WORKER_CONCURRENCY } from "../src/rotation/defaults.ts";
import { CLOCK_SKEW_MS } from "../src/rotation/pacing.ts";
import { createRuntime, type Runtime } from "../src/runtime.ts";
import { AwsSecretsManagerStore } from "../src/stores/aws-secrets-manager.ts";
import { type AwsEmulator, startAwsEmulator } from "../test/fakes/aws/emulator.ts";
import { authHeader, type FakeReply, type FakeRequest, type HttpFake } from "../test/fakes/http-fake.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../test/fakes/launchdarkly.ts";
import { QStashFake } from "../test/fakes/qstash.ts";
import { type SnykFake, startSnykFake } from "../test/fakes/snyk.ts";
import { benchFile, emitResult, progress, serveIpc, tsxExecArgv } from "./lib/child.ts";
import { FakesClient, pool, REGION } from "./lib/rig.ts";

const { values } = parseArgs({
  options: {
    role: { type: "string", default: "driver" },
    config: { type: "string" },
    redis: { type: "string" },
    credentials: { type: "string", default: "1000" },
    workers: { type: "string", default: "2" },
    concurrency: { type: "string", default: String(DEFAULT_WORKER_CONCURRENCY) },
    "ld-limit": { type: "string", default: "60" },
    "snyk-limit": { type: "string", default: "1620" },
    "qstash-burst": { type: "string", default: "10" },
    "aws-writes": { type: "string", default: "50" },
  },
});

const LD_WINDOW_MS = 10_000;
const SNYK_WINDOW_MS = 60_000;
const QSTASH_WINDOW_MS = 1_000;
const AWS_WINDOW_MS = 1_000;
const PER_LD_ACCOUNT = 20;
const FINGERPRINT_KEY = "bench-fingerprint-key-0123456789abcdef0123";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A label for a credential in the figures: never the credential. */
const label = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 8);

// ---- shared shapes ------------------------------------------------------------------------------

export type LeakKind = "launchdarkly" | "snyk-service-account" | "qstash-token" | "qstash-signing-keys";

export interface LeakSetupRequest {
  type: "setup";
  ld: number;
  ldLimit: number;
  snyk: number;
  snykLimit: number;
  qstashTokens: number;
  qstashSigning: number;
  qstashBurst: number;
  awsWrites: number;
}

interface LeakSetup {
  awsUrl: string;
  ld: { accounts: { url: string; admin: string }[]; tokens: { account: number; value: string }[] };
  snyk: { url: string; admin: string; org: string; accounts: { id: string; clientId: string; secret: string }[] };
  qstash: { url: string; email: string; apiKey: string; tokens: { userId: string; token: string }[]; signing: { token: string; keys: { current: string; next: string } }[] };
}

/** Requests at one rate-limited key (a provider credential, or the AWS region's write quota). */
export interface KeyFigure {
  fake: string;
  key: string;
  /** Requests the fake accepted (not answered 429) at this key. */
  accepted: number;
  limited: number;
  /** Most 429s this key got within any one window length. */
  max429PerWindow: number;
}

interface FakesFigures {
  keys: KeyFigure[];
  /** 429s per fake. */
  tooMany: Record<string, number>;
  /** Revocation time (epoch ms) of each credential's old value, by policy id. */
  revokedAt: Record<string, number>;
  /** Policies whose old credential is still live at its provider. */
  stillLive: string[];
  aws: { writes: number; throttles: number; maxWritesInAnySecond: number; firstWriteAt: number; lastWriteAt: number };
}

export interface ResourceBound {
  resource: string;
  /** Requests the run made at this key (accepted ones). */
  requests: number;
  limit: number;
  windowMs: number;
  /** requests ÷ (limit / window). */
  boundMs: number;
  keys: number;
  tooMany: number;
  max429PerWindow: number;
}

export interface LeakResult {
  credentials: number;
  mix: Record<LeakKind, number>;
  workers: number;
  concurrency: number;
  limits: { ldPerWindow: number; snykPerMinute: number; qstashBurstPerSecond: number; awsWritesPerSecond: number };
  /** rekey's AWS write pacing window (1 s + worker clock skew; each write counted from reservation to answer, then this long). */
  awsPacingWindowMs: number;
  enqueueMs: number;
  firstRevokedMs: number;
  allRevokedMs: number;
  /** Until rekey's own leak report shows every rotation completed. */
  reportedMs: number;
  revokedMs: { p50: number; p90: number; p99: number };
  completed: number;
  failed: number;
  stillLive: string[];
  resources: ResourceBound[];
  boundMs: number;
  boundResource: string;
  ratio: number;
  aws: FakesFigures["aws"];
  /** Achieved AWS write rate from the first to the last accepted write. */
  awsWritesPerSecondAchieved: number;
  /** First and last accepted AWS write, ms from the leak request. */
  firstWriteMs: number;
  lastWriteMs: number;
  /** The last credentials revoked (policy, ms from the leak request). */
  last: { policyId: string; ms: number }[];
}

// ---- role: fakes --------------------------------------------------------------------------------

async function fakesRole(): Promise<void> {
  const lds: LaunchDarklyFake[] = [];
  let snyk: SnykFake | undefined;
  let qstash: QStashFake | undefined;
  let aws: AwsEmulator | undefined;
  const perKey = new Map<string, { fake: string; key: string; accepted: number; limited: number[]; windowMs: number }>();
  const tooMany: Record<string, number> = {};
  interface Watch {
    policyId: string;
    dead(): boolean;
    at?: number;
  }
  const watches = new Map<string, Watch>();
  const watch = (trigger: string, w: Watch) => watches.set(trigger, w);
  const settle = (trigger: string) => {
    const w = watches.get(trigger);
    if (w && w.at === undefined && w.dead()) w.at = Date.now();
  };

  /** Counts every request a fake's handler answers, by rate-limit key, and sees revocations. */
  function instrument(fake: HttpFake, name: string, windowMs: number, keyOf: (req: FakeRequest) => string, after: (req: FakeRequest, status: number) => void): void {
    const inner = Reflect.get(fake, "handler") as (req: FakeRequest) => FakeReply | Promise<FakeReply>;
    Reflect.set(fake, "handler", async (req: FakeRequest): Promise<FakeReply> => {
      const reply = await inner(req);
      const key = `${name}:${keyOf(req)}`;
      let k = perKey.get(key);
      if (!k) perKey.set(key, (k = { fake: name, key, accepted: 0, limited: [], windowMs }));
      if (reply.status === 429) {
        k.limited.push(Date.now());
        tooMany[name] = (tooMany[name] ?? 0) + 1;
      } else k.accepted++;
      if (reply.status >= 200 && reply.status < 300 && req.method !== "GET") after(req, reply.status);
      return reply;
    });
  }

  const byAuth = (req: FakeRequest) => label(authHeader(req) ?? "anonymous");

  async function setup(req: LeakSetupRequest): Promise<LeakSetup> {
    aws = await startAwsEmulator({ writesPerSecond: req.awsWrites });
    const out: LeakSetup = { awsUrl: aws.url, ld: { accounts: [], tokens: [] }, snyk: { url: "", admin: "", org: "", accounts: [] }, qstash: { url: "", email: "", apiKey: "", tokens: [], signing: [] } };
    // LaunchDarkly: accounts of PER_LD_ACCOUNT tokens, one admin token each (the rate-limited key).
    for (let a = 0; a * PER_LD_ACCOUNT < req.ld; a++) {
      const ld = await startLaunchDarklyFake({ rateLimitPerWindow: req.ldLimit, tokenLimit: 4 * PER_LD_ACCOUNT + 10 });
      lds.push(ld);
      const admin = ld.addToken({ role: "admin", name: "rekey management" });
      out.ld.accounts.push({ url: ld.url, admin: admin.value });
      for (let k = 0; k < PER_LD_ACCOUNT && a * PER_LD_ACCOUNT + k < req.ld; k++) {
        const t = ld.addToken({ name: `service-${a}-${k}`, role: "reader" });
        out.ld.tokens.push({ account: a, value: t.value });
        watch(`ld:${a}:${t.id}`, { policyId: `leak-ld-${a * PER_LD_ACCOUNT + k}`, dead: () => !ld.isLive(t.value) });
      }
      instrument(ld, "launchdarkly", LD_WINDOW_MS, byAuth, (r) => {
        const m = /^\/api\/v2\/tokens\/([^/]+)$/.exec(r.path);
        if (r.method === "DELETE" && m) settle(`ld:${a}:${m[1]}`);
      });
    }
    // Snyk: one org, one admin API token (the rate-limited key), service accounts with a secret each.
    if (req.snyk > 0) {
      const s = await startSnykFake({ rateLimit: req.snykLimit, rateWindowMs: SNYK_WINDOW_MS });
      snyk = s;
      const org = s.addOrg();
      const admin = s.addUser({ orgs: [org] });
      out.snyk = { url: s.url, admin: admin.apiToken, org, accounts: [] };
      for (let i = 0; i < req.snyk; i++) {
        const sa = s.addServiceAccount({ orgId: org, name: `sa-${i}` });
        const old = sa.secrets[0] as string;
        out.snyk.accounts.push({ id: sa.id, clientId: sa.clientId, secret: old });
        watch(`snyk:${sa.id}`, { policyId: `leak-snyk-${i}`, dead: () => !s.secretsOf(sa.id).includes(old) });
      }
      instrument(
        s,
        "snyk",
        SNYK_WINDOW_MS,
        (r) => (r.path === "/oauth2/token" ? `client:${new URLSearchParams(r.text).get("client_id") ?? ""}` : byAuth(r)),
        (r) => {
          const m = /\/service_accounts\/([^/]+)\/secrets$/.exec(r.path);
          if (m) settle(`snyk:${m[1]}`);
        },
      );
    }
    // QStash: one Upstash account (its Developer API key is the rate-limited key of token
    // rotations); one region (QStash user) per token policy, and one more per signing-key policy,
    // whose own QStash token reads and rolls its keys.
    if (req.qstashTokens + req.qstashSigning > 0) {
      const regions = Array.from({ length: req.qstashTokens + req.qstashSigning }, (_, i) => `r${i}`);
      const q = await new QStashFake({ regions, burstLimit: req.qstashBurst, burstWindowMs: QSTASH_WINDOW_MS }).start();
      qstash = q;
      out.qstash = { url: q.url, email: q.email, apiKey: q.apiKey, tokens: [], signing: [] };
      const sigRegion = new Map<string, string>();
      for (let i = 0; i < req.qstashTokens; i++) {
        const region = `r${i}`;
        const old = q.token(region);
        const userId = q.userId(region);
        out.qstash.tokens.push({ userId, token: old });
        watch(`qtok:${userId}`, { policyId: `leak-qstash-${i}`, dead: () => q.wasRetired(old) && !q.isLive(old) });
      }
      for (let i = 0; i < req.qstashSigning; i++) {
        const region = `r${req.qstashTokens + i}`;
        const keys = q.keys(region);
        const token = q.token(region);
        sigRegion.set(`Bearer ${token}`, region);
        out.qstash.signing.push({ token, keys });
        watch(`qsig:${region}`, {
          policyId: `leak-qsig-${i}`,
          dead: () => {
            const live = q.keys(region);
            return ![live.current, live.next].includes(keys.current) && ![live.current, live.next].includes(keys.next);
          },
        });
      }
      instrument(q, "qstash", QSTASH_WINDOW_MS, byAuth, (r) => {
        const m = /^\/v2\/qstash\/rotate-token\/([^/]+)$/.exec(r.path);
        if (m) settle(`qtok:${decodeURIComponent(m[1] ?? "")}`);
        const region = r.path === "/v2/keys/rotate" ? sigRegion.get(authHeader(r) ?? "") : undefined;
        if (region) settle(`qsig:${region}`);
      });
    }
    return out;
  }

  function maxInWindow(times: number[], windowMs: number): number {
    const t = [...times].sort((a, b) => a - b);
    let best = 0;
    for (let i = 0, j = 0; i < t.length; i++) {
      while ((t[i] as number) - (t[j] as number) >= windowMs) j++;
      best = Math.max(best, i - j + 1);
    }
    return best;
  }

  function figures(): FakesFigures {
    const keys: KeyFigure[] = [...perKey.values()].map((k) => ({ fake: k.fake, key: k.key, accepted: k.accepted, limited: k.limited.length, max429PerWindow: maxInWindow(k.limited, k.windowMs) }));
    const revokedAt: Record<string, number> = {};
    const stillLive: string[] = [];
    for (const w of watches.values()) {
      if (w.at === undefined && w.dead()) w.at = Date.now(); // dead without a request seen: should not happen
      if (w.at === undefined) stillLive.push(w.policyId);
      else revokedAt[w.policyId] = w.at;
    }
    const writes = (aws?.calls ?? []).filter((c) => c.status === 200 && ["PutSecretValue", "UpdateSecretVersionStage", "UpdateSecret"].includes(c.operation)).map((c) => c.at);
    const throttles = (aws?.calls ?? []).filter((c) => c.errorType === "ThrottlingException").length;
    return {
      keys,
      tooMany: { ...tooMany },
      revokedAt,
      stillLive,
      aws: { writes: writes.length, throttles, maxWritesInAnySecond: maxInWindow(writes, AWS_WINDOW_MS), firstWriteAt: Math.min(...writes), lastWriteAt: Math.max(...writes) },
    };
  }

  /** Forget everything seen so far (setup traffic: the secrets' creation). */
  function reset(): void {
    perKey.clear();
    for (const k of Object.keys(tooMany)) delete tooMany[k];
    for (const f of [...lds, snyk, qstash]) if (f) f.requests.length = 0;
    if (aws) {
      aws.calls.length = 0;
      aws.requests.length = 0;
    }
  }

  serveIpc(async (msg: { id: number; type: string } & Record<string, unknown>): Promise<unknown> => {
    switch (msg.type) {
      case "setup":
        return setup(msg as unknown as LeakSetupRequest);
      case "reset":
        reset();
        return { ok: true };
      case "progress":
        return { revoked: [...watches.values()].filter((w) => w.at !== undefined).length, total: watches.size };
      case "figures":
        return figures();
      case "stop":
        await Promise.allSettled([...lds.map((l) => l.close()), snyk?.close(), qstash?.close(), aws?.close()]);
        return { stopped: true };
      default:
        throw new Error(`unknown request ${msg.type}`);
    }
  });
}

// ---- role: worker -------------------------------------------------------------------------------

interface WorkerConfig {
  redisUrl: string;
  prefix: string;
  awsUrl: string;
  awsWrites: number;
  env: Record<string, string>;
  policies: PolicyInput[];
  concurrency: number;
}

async function runtimeFor(c: WorkerConfig): Promise<Runtime> {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const log = createLogger({ level: "info", destination: process.env.BENCH_LEAK_LOG ? process.stderr : sink });
  const store = new AwsSecretsManagerStore({
    region: REGION,
    clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: c.awsUrl, credentials: { accessKeyId: "bench", secretAccessKey: "bench" }, maxAttempts: 3 }),
  });
  const rt = await createRuntime({ redisUrl: c.redisUrl, prefix: c.prefix, policyPaths: [], log, fingerprintKey: FINGERPRINT_KEY, region: REGION, env: c.env, store, awsWritesPerSecond: c.awsWrites });
  rt.policies.replace(c.policies.map((p) => ({ policy: Policy.parse(p), file: `${p.id}.yaml` })));
  return rt;
}

async function workerRole(file: string): Promise<void> {
  const c = JSON.parse(readFileSync(file, "utf8")) as WorkerConfig;
  const rt = await runtimeFor(c);
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const worker = startRotationWorker(rt, { concurrency: c.concurrency, log: createLogger({ level: "warn", destination: process.env.BENCH_LEAK_LOG ? process.stderr : sink }) });
  await worker.worker.waitUntilReady();
  const stop = async () => {
    await worker.stop().catch(() => undefined);
    await rt.close().catch(() => undefined);
    process.exit(0);
  };
  process.on("message", (m: { type?: string }) => {
    if (m.type === "stop") void stop();
  });
  process.on("disconnect", () => void stop());
  process.send?.({ ready: true });
}

// ---- role: driver -------------------------------------------------------------------------------

function mixOf(n: number): Record<LeakKind, number> {
  const ld = Math.round(n * 0.6);
  const snyk = Math.round(n * 0.25);
  const qstashTokens = Math.round(n * 0.1);
  return { launchdarkly: ld, "snyk-service-account": snyk, "qstash-token": qstashTokens, "qstash-signing-keys": n - ld - snyk - qstashTokens };
}

function policiesFor(s: LeakSetup): { policies: PolicyInput[]; env: Record<string, string>; values: Map<string, string> } {
  const policies: PolicyInput[] = [];
  const env: Record<string, string> = {};
  const values = new Map<string, string>();
  const target = (id: string) => ({ secretId: `bench/${id}`, region: REGION });
  s.ld.accounts.forEach((a, k) => (env[`LD_ADMIN_${k}`] = a.admin));
  s.ld.tokens.forEach((t, i) => {
    const id = `leak-ld-${i}`;
    policies.push({ id, owner: "bench@example.com", provider: { kind: "launchdarkly", baseUrl: s.ld.accounts[t.account]?.url, management: { env: `LD_ADMIN_${t.account}` } }, target: target(id) });
    values.set(id, t.value);
  });
  env.SNYK_ADMIN = s.snyk.admin;
  s.snyk.accounts.forEach((sa, i) => {
    const id = `leak-snyk-${i}`;
    policies.push({ id, owner: "bench@example.com", provider: { kind: "snyk-service-account", baseUrl: s.snyk.url, management: { env: "SNYK_ADMIN" }, orgId: s.snyk.org, serviceAccountId: sa.id, clientId: sa.clientId }, target: target(id) });
    values.set(id, sa.secret);
  });
  env.QSTASH_KEY = s.qstash.apiKey;
  s.qstash.tokens.forEach((t, i) => {
    const id = `leak-qstash-${i}`;
    policies.push({ id, owner: "bench@example.com", provider: { kind: "qstash-token", baseUrl: s.qstash.url, managementUrl: s.qstash.url, email: s.qstash.email, management: { env: "QSTASH_KEY" }, userId: t.userId }, target: target(id), acceptCutover: true });
    values.set(id, t.token);
  });
  s.qstash.signing.forEach((q, i) => {
    const id = `leak-qsig-${i}`;
    env[`QSTASH_TOKEN_SIG_${i}`] = q.token;
    policies.push({ id, owner: "bench@example.com", provider: { kind: "qstash-signing-keys", baseUrl: s.qstash.url, management: { env: `QSTASH_TOKEN_SIG_${i}` } }, target: target(id) });
    values.set(id, encodeSigningKeys(q.keys));
  });
  return { policies, env, values };
}

/**
 * The policy ids in no particular order (a shuffle with a fixed seed): a leak names policies as
 * they come, not grouped by provider or by the management key whose limit they share.
 */
function shuffled(policies: PolicyInput[]): string[] {
  let seed = 0x5eed;
  const random = () => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const ids = policies.map((p) => p.id);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [ids[i], ids[j]] = [ids[j] as string, ids[i] as string];
  }
  return ids;
}

function startWorker(file: string): Promise<ChildProcess> {
  const child = fork(benchFile("leak.ts"), ["--role", "worker", "--config", file], { execArgv: tsxExecArgv(), stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("leak worker did not start within 30 s")), 30_000);
    child.once("message", () => {
      clearTimeout(timer);
      resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`leak worker exited (${code}) before it was ready`)));
  });
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.send({ type: "stop" });
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

function pctile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1] ?? Number.NaN;
}

async function driver(): Promise<LeakResult> {
  const redisUrl = values.redis ?? "";
  if (!redisUrl) throw new Error("usage: leak.ts --redis <url> [--credentials n] [--workers n] [--concurrency n]");
  const n = Number(values.credentials);
  const workers = Math.max(1, Math.min(8, Number(values.workers)));
  const concurrency = Number(values.concurrency);
  const limits = { ldPerWindow: Number(values["ld-limit"]), snykPerMinute: Number(values["snyk-limit"]), qstashBurstPerSecond: Number(values["qstash-burst"]), awsWritesPerSecond: Number(values["aws-writes"]) };
  const mix = mixOf(n);
  const fakes = await FakesClient.start("leak.ts", ["--role", "fakes"]);
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), "rekey-bench-leak-"));
  let rt: Runtime | undefined;
  try {
    const setup = await fakes.call<LeakSetup>({
      type: "setup",
      ld: mix.launchdarkly,
      ldLimit: limits.ldPerWindow,
      snyk: mix["snyk-service-account"],
      snykLimit: limits.snykPerMinute,
      qstashTokens: mix["qstash-token"],
      qstashSigning: mix["qstash-signing-keys"],
      qstashBurst: limits.qstashBurstPerSecond,
      awsWrites: limits.awsWritesPerSecond,
    } satisfies LeakSetupRequest);
    const { policies, env, values: seeds } = policiesFor(setup);
    const config: WorkerConfig = { redisUrl, prefix: `rekey-bench-leak-${process.pid}-${Date.now()}`, awsUrl: setup.awsUrl, awsWrites: limits.awsWritesPerSecond, env, policies, concurrency };
    const file = join(dir, "worker.json");
    writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
    rt = await runtimeFor(config);
    await pool([...seeds], 16, async ([id, value]) => {
      await rt?.store.create?.({ secretId: `bench/${id}`, region: REGION }, value);
    });
    for (let w = 0; w < workers; w++) children.push(await startWorker(file));
    await fakes.call({ type: "reset" });
    progress(`leak: ${n} credentials (${Object.entries(mix).map(([k, v]) => `${v} ${k}`).join(", ")}), ${workers} worker process(es) × concurrency ${concurrency}`);

    const ids = shuffled(policies);
    const t0 = Date.now();
    const incident = await leakResponseFor(rt).start({ policies: ids }, "bench");
    const enqueueMs = Date.now() - t0;
    const leaks = leakResponseFor(rt);
    // Generous: the bound is about a minute at 1,000 credentials; a run past this has hung.
    const deadline = t0 + Math.max(180_000, n * 600);
    let lastLine = 0;
    for (;;) {
      const p = await fakes.call<{ revoked: number; total: number }>({ type: "progress" });
      if (p.revoked >= p.total) break;
      if (Date.now() > deadline) throw new Error(`leak: ${p.revoked}/${p.total} old credentials revoked before the deadline`);
      if (Date.now() - lastLine > 10_000) {
        lastLine = Date.now();
        const r = await leaks.report(incident);
        progress(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: ${p.revoked}/${p.total} revoked; rekey: ${r.completed} completed, ${r.failed} failed, ${r.inProgress} in progress`);
        if (r.settled && r.failed > 0) break;
      }
      await sleep(100);
    }
    let report = await leaks.report(incident);
    for (let k = 0; k < 600 && !report.settled; k++) {
      await sleep(100);
      report = await leaks.report(incident);
    }
    const reportedMs = Date.now() - t0;
    const f = await fakes.call<FakesFigures>({ type: "figures" });
    const times = Object.values(f.revokedAt).map((at) => at - t0);
    const resources: ResourceBound[] = [];
    const busiest = (fake: string, resource: string, limit: number, windowMs: number) => {
      const ks = f.keys.filter((k) => k.fake === fake);
      if (!ks.length) return;
      const top = ks.reduce((a, b) => (b.accepted > a.accepted ? b : a));
      resources.push({
        resource: `${resource} (busiest of ${ks.length} keys)`,
        requests: top.accepted,
        limit,
        windowMs,
        boundMs: (top.accepted * windowMs) / limit,
        keys: ks.length,
        tooMany: f.tooMany[fake] ?? 0,
        max429PerWindow: Math.max(0, ...ks.map((k) => k.max429PerWindow)),
      });
    };
    resources.push({ resource: `AWS Secrets Manager writes, ${REGION}`, requests: f.aws.writes, limit: limits.awsWritesPerSecond, windowMs: AWS_WINDOW_MS, boundMs: (f.aws.writes * AWS_WINDOW_MS) / limits.awsWritesPerSecond, keys: 1, tooMany: f.aws.throttles, max429PerWindow: 0 });
    busiest("launchdarkly", "LaunchDarkly, per token", limits.ldPerWindow, LD_WINDOW_MS);
    busiest("snyk", "Snyk, per key", limits.snykPerMinute, SNYK_WINDOW_MS);
    busiest("qstash", "QStash, per credential", limits.qstashBurstPerSecond, QSTASH_WINDOW_MS);
    const slowest = resources.reduce((a, b) => (b.boundMs > a.boundMs ? b : a));
    const allRevokedMs = Math.max(...times);
    return {
      credentials: n,
      mix,
      workers,
      concurrency,
      limits,
      awsPacingWindowMs: 1_000 + CLOCK_SKEW_MS,
      enqueueMs,
      firstRevokedMs: Math.min(...times),
      allRevokedMs,
      reportedMs,
      revokedMs: { p50: pctile(times, 50), p90: pctile(times, 90), p99: pctile(times, 99) },
      completed: report.completed,
      failed: report.failed,
      stillLive: f.stillLive,
      resources,
      boundMs: slowest.boundMs,
      boundResource: slowest.resource,
      ratio: allRevokedMs / slowest.boundMs,
      aws: f.aws,
      awsWritesPerSecondAchieved: (f.aws.writes * 1000) / Math.max(1, f.aws.lastWriteAt - f.aws.firstWriteAt),
      firstWriteMs: f.aws.firstWriteAt - t0,
      lastWriteMs: f.aws.lastWriteAt - t0,
      last: Object.entries(f.revokedAt)
        .map(([policyId, at]) => ({ policyId, ms: at - t0 }))
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 10),
    };
  } finally {
    await Promise.allSettled(children.map(stopWorker));
    await rt?.close().catch(() => undefined);
    await fakes.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.role === "fakes") await fakesRole();
else if (values.role === "worker") await workerRole(values.config ?? "");
else {
  emitResult(await driver());
  // A BullMQ or HTTP keep-alive handle must not keep a finished child alive.
  process.exit(0);
}
