/**
 * The attacker of the attack run (bench/attack.ts), in its own process so that producing the
 * hostile requests does not share the event loop of the rekey under attack. Sends
 * `requests` hostile requests, at most `rate` a second and `concurrency` in flight, from
 * 127.0.0.2 … 127.0.0.(N+1), and
 * prints `BENCH_RESULT {byKind, failures, sent}`.
 *
 * Input: one JSON argument (AttackerInput).
 */
import { Agent, request } from "node:http";
import { setPriority } from "node:os";
import { ATTACK_SENDING, HOSTILE_VARIANTS } from "./lib/attack-protocol.ts";
import { emitResult, progress } from "./lib/child.ts";

export interface AttackerInput {
  apiUrl: string;
  requests: number;
  concurrency: number;
  /** Requests per second at most (0: as fast as `concurrency` allows). */
  rate: number;
  addresses: number;
  policyIds: string[];
  /** Versions of earlier rotations, for replayed confirmations. */
  oldVersions: string[];
  jobIds: string[];
  viewer: string;
  consumerToken: string;
  otherToken: string;
  /** Send only these variants (indices into the cycle of HOSTILE_VARIANTS), and no replays; default all. */
  only?: number[];
}

export interface AttackerResult {
  sent: number;
  elapsedMs: number;
  byKind: Record<string, Record<string, number>>;
  failures: string[];
}

export interface Sent {
  kind: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Send from the consumer's own address (a replay captured on the wire). */
  replay?: boolean;
}

function send(agent: Agent, base: URL, s: Sent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { agent, host: base.hostname, port: base.port, method: s.method, path: s.path, headers: { ...(s.body ? { "content-type": "application/json", "content-length": String(Buffer.byteLength(s.body)) } : {}), ...s.headers }, timeout: 15_000 },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (err: NodeJS.ErrnoException) => {
      // The server may answer (413, 401) and close before a big body is sent in full.
      if (err.code === "EPIPE" || err.code === "ECONNRESET") resolve(-1);
      else reject(err);
    });
    req.end(s.body);
  });
}

/** The oversized bodies' filler, made once: the attacker's own CPU shares the machine with rekey. */
const big = "x".repeat(120 * 1024);

/** The hostile request number `i`: a cycle through every kind. */
function hostile(i: number, ids: AttackerInput): Sent {
  const policyId = ids.policyIds[i % ids.policyIds.length]!;
  const confirm = (body: unknown, headers?: Record<string, string>) => ({ method: "POST", path: "/v1/confirmations", headers, body: JSON.stringify(body) });
  const kinds: (() => Sent)[] = [
    () => ({ kind: "flood: confirmation without a token", ...confirm({ policyId, consumerId: "app", versionId: "00000000-0000-4000-8000-000000000000" }) }),
    () => ({ kind: "flood: confirmation without a token", ...confirm({ policyId: `no-such-${i}`, consumerId: "app", versionId: "v" }) }),
    () => ({ kind: "forged token", ...confirm({ policyId, consumerId: "app", versionId: "v" }, { authorization: `Bearer forged-${i}` }) }),
    () => ({ kind: "forged token", ...confirm({ policyId, consumerId: "app", versionId: "v" }, { authorization: `Bearer rk_${Buffer.from(String(i).padStart(32, "0")).toString("base64url").slice(0, 43)}` }) }),
    () => ({ kind: "forged JWT", method: "GET", path: "/v1/status", headers: { authorization: `Bearer ${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(`{"sub":"root${i}","groups":["admin"]}`).toString("base64url")}.` } }),
    () => ({ kind: "mismatched: another consumer's token", ...confirm({ policyId, consumerId: "app", versionId: "v" }, { authorization: `Bearer ${ids.otherToken}` }) }),
    () => ({ kind: "mismatched: consumer that does not exist", ...confirm({ policyId, consumerId: `ghost-${i % 50}`, versionId: "v" }, { authorization: `Bearer ${ids.consumerToken}x` }) }),
    () => ({ kind: "oversized body", ...confirm({ policyId, consumerId: big, versionId: "v" }, { authorization: `Bearer forged-${i}` }) }),
    () => ({ kind: "oversized body", method: "POST", path: "/v1/rotations", headers: { authorization: `Bearer forged-${i}` }, body: JSON.stringify({ policyId: big }) }),
    () => ({ kind: "control characters", ...confirm({ policyId, consumerId: "app\n\u001b[2J revoking ok by worker: old credential 0000 revoked\r", versionId: "v\u0007" }) }),
    () => ({ kind: "control characters", method: "GET", path: `/v1/policies/${encodeURIComponent(`${policyId}\u001b[31m`)}/history` }),
    () => ({ kind: "path tricks", method: "GET", path: ["/v1/rotations/../../etc/passwd", "/v1/policies/..%2f..%2f..%2fetc%2fpasswd/history", "//v1/status", "/v1/status%00", "/admin/queues/../../v1/status", "/v1/policies/%2e%2e/history", "/.env"][i % 7]! }),
    () => ({ kind: "wrong method", method: ["DELETE", "PUT", "GET", "PATCH"][i % 4]!, path: ["/v1/confirmations", "/v1/status", "/v1/rotations", "/metrics"][i % 4]!, body: "{}" }),
    () => ({ kind: "Bull Board write", method: "PATCH", path: `/admin/queues/api/queues/rotations/${encodeURIComponent(ids.jobIds[i % Math.max(1, ids.jobIds.length)] ?? "x")}/update-data`, headers: { authorization: `Basic ${Buffer.from(`admin:${ids.viewer}`).toString("base64")}` }, body: JSON.stringify({ jobData: { step: "revoking" } }) }),
    () => ({ kind: "Bull Board write", method: "PUT", path: `/admin/queues/api/queues/rotations/${encodeURIComponent(ids.jobIds[i % Math.max(1, ids.jobIds.length)] ?? "x")}/promote`, headers: { authorization: `Basic ${Buffer.from(`admin:guess-${i}`).toString("base64")}` } }),
  ];
  // Every 50th: a replay of an earlier real confirmation, token and all (no TLS on this test
  // network), for a version no longer waited for.
  if (kinds.length !== HOSTILE_VARIANTS) throw new Error(`HOSTILE_VARIANTS is ${HOSTILE_VARIANTS}, the cycle holds ${kinds.length}`);
  if (ids.only) return kinds[ids.only[i % ids.only.length]!]!();
  if (i % 50 === 49 && ids.oldVersions.length) {
    return { kind: "replayed confirmation (captured consumer token)", replay: true, ...confirm({ policyId, consumerId: "app", versionId: ids.oldVersions[i % ids.oldVersions.length] }, { authorization: `Bearer ${ids.consumerToken}` }) };
  }
  return kinds[i % kinds.length]!();
}

async function main(input: AttackerInput): Promise<AttackerResult> {
  // A real attacker runs on its own hosts. Sharing this machine, it takes the CPU only when rekey
  // (and the rest) do not want it, so its own cost is not counted as rekey's (it reports the rate
  // it reached).
  setPriority(19);
  const base = new URL(input.apiUrl);
  const attackers = Array.from({ length: input.addresses }, (_, i) => new Agent({ keepAlive: true, maxSockets: Math.ceil(input.concurrency / input.addresses) + 1, localAddress: `127.0.0.${i + 2}` }));
  const byKind: Record<string, Record<string, number>> = {};
  const failures: string[] = [];
  let sent = 0;
  // The orchestrator measures its consumer "under attack" from this line on, not during this
  // process's start (tsx compiling it takes the CPU for a moment, and is no part of the attack).
  progress(ATTACK_SENDING);
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: input.concurrency }, async (_, w) => {
      while (sent < input.requests) {
        const i = sent++;
        // Paced: request i leaves no earlier than i / rate seconds after the start.
        const due = input.rate > 0 ? t0 + (i * 1000) / input.rate : 0;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        const s = hostile(i, input);
        const agent = s.replay ? attackers[0]! : attackers[(i + w) % attackers.length]!;
        let status: number;
        try {
          status = await send(agent, base, s);
        } catch (err) {
          failures.push(`${s.kind} ${s.method} ${s.path.slice(0, 80)}: ${String(err)}`);
          continue;
        }
        const k = (byKind[s.kind] ??= {});
        const label = status === -1 ? "closed early" : String(status);
        k[label] = (k[label] ?? 0) + 1;
        if (status >= 500) failures.push(`${s.kind} ${s.method} ${s.path.slice(0, 80)}: ${status}`);
        if (i > 0 && i % 2_000 === 0) progress(`attack: ${i} hostile requests sent`);
      }
    }),
  );
  for (const a of attackers) a.destroy();
  return { sent, elapsedMs: Date.now() - t0, byKind, failures };
}

emitResult(await main(JSON.parse(process.argv[2] ?? "{}") as AttackerInput));
