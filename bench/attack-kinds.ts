/**
 * What each kind of hostile request of the attack run costs `rekey api`: the attacker
 * (bench/attack-process.ts) sends one variant at a time, and this process — the API alone, on a
 * private redis-server, with the attack run's policies loaded — measures its own CPU per request.
 * The attacker is another process, so its work is not counted.
 *
 *   npx tsx bench/attack-kinds.ts                      # every variant, 2,000 requests each
 *   ATTACK_KINDS_REQUESTS=4000 ATTACK_KINDS_ONLY=2,3 npx tsx bench/attack-kinds.ts
 *   ATTACK_KINDS_PROFILE=/tmp/api.cpuprofile npx tsx bench/attack-kinds.ts   # and a CPU profile
 *
 * The rate limits are lifted (a variant's requests would otherwise meet the per-address limit and
 * measure the 429), the counters still run: their round trip is part of what a request costs.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { tokenHash } from "../src/consumers/fingerprint.ts";
import { createLogger } from "../src/log.ts";
import { Policy } from "../src/policy/schema.ts";
import { startApiServer } from "../src/processes.ts";
import { createRuntime } from "../src/runtime.ts";
import { AwsSecretsManagerStore } from "../src/stores/aws-secrets-manager.ts";
import { startAwsEmulator } from "../test/fakes/aws/emulator.ts";
import { startRedisServer } from "../test/helpers/redis-server.ts";
import type { AttackerInput, AttackerResult } from "./attack-process.ts";
import { ATTACK_SENDING, HOSTILE_VARIANTS } from "./lib/attack-protocol.ts";
import { runChild } from "./lib/child.ts";

const REGION = "us-east-1";
const CONSUMER_TOKEN = "attack-consumer-token-0123456789abcdef";
const OTHER_TOKEN = "attack-other-consumer-token-0123456789";

const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const requests = num("ATTACK_KINDS_REQUESTS", 2_000);
const rate = num("ATTACK_KINDS_RATE", 1_000);
const only = process.env.ATTACK_KINDS_ONLY ? process.env.ATTACK_KINDS_ONLY.split(",").map(Number) : Array.from({ length: HOSTILE_VARIANTS }, (_, i) => i);

const redisServer = await startRedisServer();
const emulator = await startAwsEmulator({ writesPerSecond: Infinity });
const log = createLogger({ level: "warn", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const store = new AwsSecretsManagerStore({ region: REGION, clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: emulator.url, credentials: { accessKeyId: "a", secretAccessKey: "a" }, maxAttempts: 1 }) });
const rt = await createRuntime({ redisUrl: redisServer.url, prefix: "attack", policyPaths: [], log, fingerprintKey: "attack-fingerprint-key-0123456789abcdef0123", region: REGION, env: { LD_ADMIN_TOKEN: "x" }, store });
const policyIds = Array.from({ length: 5 }, (_, i) => `ld-attack-${i}`);
rt.policies.replace(
  policyIds.map((id) => ({
    policy: Policy.parse({
      id,
      owner: "owner@example.com",
      provider: { kind: "launchdarkly", baseUrl: "http://127.0.0.1:9", management: { env: "LD_ADMIN_TOKEN" } },
      target: { secretId: `attack/${id}`, region: REGION },
      consumers: [
        { id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) },
        { id: "other", confirm: "push", tokenHash: tokenHash(OTHER_TOKEN), required: false },
      ],
    }),
    file: `${id}.yaml`,
  })),
);
const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 1e9, perIdentity: 1e9 } });
const viewer = (await rt.tokens.create({ name: "attack-viewer", scopes: ["viewer"] }, "attack kinds")).token;

const profile = process.env.ATTACK_KINDS_PROFILE;
const session = profile ? new Session() : undefined;
if (session) {
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 100 });
}

/** This process's CPU while nothing is sent (timers, Redis pings), per ms: subtracted from each variant's. */
let idleCpuPerMs = 0;

const attack = async (variants: number[], n: number): Promise<{ cpuMs: number; result: AttackerResult }> => {
  const input: AttackerInput = { apiUrl: api.url, requests: n, concurrency: 32, rate, addresses: 16, policyIds, oldVersions: [], jobIds: [], viewer, consumerToken: CONSUMER_TOKEN, otherToken: OTHER_TOKEN, only: variants };
  let before = process.cpuUsage();
  let started = performance.now();
  const child = runChild<AttackerResult>("attack-process.ts", [JSON.stringify(input)], {
    timeoutMs: 10 * 60_000,
    label: "attacker",
    onLine: (line) => {
      if (line !== ATTACK_SENDING) return;
      before = process.cpuUsage();
      started = performance.now();
    },
  });
  const result = await child;
  const cpu = process.cpuUsage(before);
  return { cpuMs: (cpu.user + cpu.system) / 1000 - idleCpuPerMs * (performance.now() - started), result };
};

try {
  // Warm-up (JIT, connections, compiled schemas): every variant, not measured.
  await attack(only, 50 * only.length);
  const idleFrom = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 3_000));
  const idle = process.cpuUsage(idleFrom);
  idleCpuPerMs = (idle.user + idle.system) / 1000 / 3_000;
  if (session) await session.post("Profiler.start");
  const rows: string[] = [];
  let total = 0;
  let sent = 0;
  for (const v of only) {
    const { cpuMs, result } = await attack([v], requests);
    total += cpuMs;
    sent += result.sent;
    const [kind, statuses] = Object.entries(result.byKind)[0] ?? ["?", {}];
    const answered = Object.entries(statuses).map(([s, c]) => `${s}×${c}`).join(" ");
    rows.push(`${String(v).padStart(2)}  ${(cpuMs / result.sent).toFixed(3)} ms  ${String(Math.round(result.sent / (result.elapsedMs / 1000))).padStart(5)}/s  ${kind} (${answered})${result.failures.length ? ` FAILURES ${result.failures.length}` : ""}`);
  }
  if (session) {
    const { profile: p } = await session.post("Profiler.stop");
    writeFileSync(profile!, JSON.stringify(p));
  }
  console.log(`rekey api CPU per hostile request, ${requests} requests per variant at ≤ ${rate}/s (idle CPU ${(idleCpuPerMs * 1000).toFixed(1)} ms/s subtracted):`);
  for (const r of rows) console.log(r);
  console.log(`all variants: ${(total / sent).toFixed(3)} ms per request`);
} finally {
  session?.disconnect();
  await api.stop();
  await rt.close();
  await emulator.close();
  await redisServer.stop();
}
