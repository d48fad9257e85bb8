/**
 * The API's trust boundary, tried as an attacker on the same network would, on real Redis and
 * real HTTP: nothing unauthenticated writes, one 401 for every unauthenticated request, limits at
 * the edge, scoped identities (named tokens, SSO JWTs), a read-only Bull Board, and CLI commands
 * that either go through the API with a token or say they act with direct Redis access.
 */
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { directActor } from "../../src/cli/context.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { createLogger } from "../../src/log.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { DEFERRED_FLUSH_MS } from "../../src/api/rate-limit-store.ts";
import { startApiServer } from "../../src/processes.ts";
import { LINGER_MS } from "../../src/util/linger-close.ts";
import type { Runtime } from "../../src/runtime.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { runCli } from "../helpers/human.ts";
import { ADMIN_TOKEN, dumpRedis, LogCapture, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "billing-consumer-token-abcdefghijklmnop";
const OTHER_TOKEN = "other-consumer-token-abcdefghijklmnopq";

function ldPolicy(ld: LaunchDarklyFake, id: string, secretId: string): PolicyInput {
  return {
    id,
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    target: { secretId, region: REGION },
    consumers: [
      { id: "billing", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) },
      { id: "other", confirm: "push", tokenHash: tokenHash(OTHER_TOKEN) },
    ],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
  };
}

/** Bytes Redis holds under a prefix (MEMORY USAGE of every key): immune to other tests' keys. */
async function prefixBytes(rt: Runtime, prefix: string): Promise<number> {
  let total = 0;
  let cursor = "0";
  do {
    const [next, keys] = await rt.redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    for (const k of keys) total += (await rt.redis.memory("USAGE", k)) ?? 0;
  } while (cursor !== "0");
  return total;
}

async function auditLengths(rt: Runtime, prefix: string, policyId: string): Promise<[number, number]> {
  return [await rt.redis.xlen(`${prefix}:audit`), await rt.redis.xlen(`${prefix}:audit:policy:${policyId}`)];
}

interface Answer {
  status: number;
  body: string;
  headers: Headers;
}

async function call(url: string, method: string, opts: { token?: string; basic?: string; body?: unknown; raw?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.basic) headers.authorization = `Basic ${Buffer.from(`x:${opts.basic}`).toString("base64")}`;
  if (opts.body !== undefined || opts.raw !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(url, { method, headers, body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)) });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

/**
 * POSTs a body of `total` bytes (declared in Content-Length) over a raw socket, writing as fast as
 * the server takes it, until the server closes the connection: what the client saw.
 */
function bigBodyRefusal(apiUrl: string, path: string, total: number, token?: string): Promise<{ answer: string; finAfterAnswer: boolean; bytesWritten: number; msFromAnswerToReset: number }> {
  const url = new URL(apiUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let answer = "";
    let answeredAt = 0;
    let fin = false;
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, "x");
    const done = () => resolve({ answer, finAfterAnswer: fin && answer.length > 0, bytesWritten: written, msFromAnswerToReset: performance.now() - answeredAt });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      answer += d;
      answeredAt ||= performance.now();
    });
    socket.on("end", () => {
      fin = true;
    });
    socket.on("error", (err: NodeJS.ErrnoException) => (err.code === "EPIPE" || err.code === "ECONNRESET" ? done() : reject(err)));
    socket.on("close", () => done());
    socket.on("connect", () => {
      const auth = token ? `authorization: Bearer ${token}\r\n` : "";
      socket.write(`POST ${path} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: ${total}\r\n${auth}\r\n`);
      const pump = () => {
        while (written < total && !socket.destroyed) {
          written += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
      };
      pump();
    });
  });
}

/** Runs `fn` over `items` with at most `n` at once. */
async function pool<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

describe("trust boundary", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let managed: { id: string; value: string };
  let rotation: { rotationId: string; jobId: string };
  const policies: PolicyInput[] = [];
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    managed = ld.addToken({ name: "billing-service", customRoleIds: ["billing"] });
    const other = ld.addToken({ name: "billing-2", customRoleIds: ["billing"] });
    policies.push(ldPolicy(ld, "ld-tb", "prod/ld-tb"), ldPolicy(ld, "ld-tb2", "prod/ld-tb2"));
    stack = await startStack({
      policies,
      env: { LD_ADMIN_TOKEN: admin.value },
      // Limits out of the way here; their own test below runs replicas with small ones.
      api: { rateLimit: { perAddress: 1_000_000, perIdentity: 1_000_000 }, refusalAuditWindowMs: 500 },
    });
    await stack.store.create!({ secretId: "prod/ld-tb", region: REGION }, managed.value);
    await stack.store.create!({ secretId: "prod/ld-tb2", region: REGION }, other.value);
    rotation = await stack.rt.rotations.enqueue({ policyId: "ld-tb", reason: "manual", actor: "test" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(rotation.rotationId))?.status === "awaiting-confirmation");
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await ld?.close();
  });

  it("a flood of unauthenticated and forged confirmations writes nothing: the audit keeps the real history", async () => {
    const before = await auditLengths(stack.rt, stack.prefix, "ld-tb");
    const historyBefore = await stack.rt.audit.history({ policyId: "ld-tb", limit: 100 });
    const logLinesBefore = stack.logs.lines.filter((l) => l.includes("api request refused")).length;
    const kinds = [
      {}, // no token at all
      { token: "not-the-token" },
      { token: `rk_${"A".repeat(43)}` }, // shaped like a rekey token, unknown
      { token: OTHER_TOKEN }, // a real consumer's token, naming another consumer
      { token: CONSUMER_TOKEN, consumerId: "ghost" },
      { token: CONSUMER_TOKEN, policyId: "no-such-policy" },
      { token: CONSUMER_TOKEN, consumerId: "app\n\u001b[2J revoking ok by worker: old credential 0000 revoked" },
      { token: "x", consumerId: "app\n\u001b[2J revoking ok by worker: old credential 0000 revoked" },
    ];
    const started = Date.now();
    const answers = await pool(Array.from({ length: 1_100 }, (_, i) => kinds[i % kinds.length]!), 40, (k) =>
      call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: k.token, body: { policyId: k.policyId ?? "ld-tb", consumerId: k.consumerId ?? "billing", versionId: rotation.rotationId } }),
    );
    expect(await auditLengths(stack.rt, stack.prefix, "ld-tb")).toEqual(before);
    // 401 for all; 400 only for the id that breaks the grammar (checked before any lookup), sent
    // with a token that could authenticate: a credential that cannot is refused before the body
    // is read.
    for (const [i, a] of answers.entries()) {
      const k = kinds[i % kinds.length]!;
      expect(a.status).toBe(k.consumerId?.includes("\n") && k.token === CONSUMER_TOKEN ? 400 : 401);
    }
    // `rekey history ld-tb` still shows the rotation, not "confirmation refused".
    const history = await stack.rt.audit.history({ policyId: "ld-tb", limit: 100 });
    expect(history).toEqual(historyBefore);
    expect(history.some((h) => h.step === "manual.requested")).toBe(true);
    // Counted in metrics, logged at most a line every few seconds per route and reason.
    const metrics = (await call(`${stack.apiUrl}/metrics`, "GET", { token: ADMIN_TOKEN })).body;
    const refused = /rekey_api_refusals_total\{route="\/v1\/confirmations",reason="unauthenticated"\} (\d+)/.exec(metrics);
    expect(Number(refused?.[1])).toBeGreaterThanOrEqual(answers.filter((a) => a.status === 401).length);
    // At most one line per route and reason (two reasons here) every 10 s, plus the first.
    const logLines = stack.logs.lines.filter((l) => l.includes("api request refused")).length - logLinesBefore;
    expect(logLines).toBeGreaterThanOrEqual(1);
    expect(logLines).toBeLessThanOrEqual(2 * (Math.floor((Date.now() - started) / 10_000) + 1));
    expect(stack.logs.text()).not.toContain(OTHER_TOKEN);
    // Sanitized: nothing a caller sent reaches a log line but its address.
    expect(stack.logs.text()).not.toMatch(/\\u001b|revoking ok by worker/);
    expect(stack.logs.text()).not.toContain(String.fromCharCode(27));
  }, 60_000);

  it("oversized bodies are refused at the edge: 400 bodies of 120 KB grow rekey's keys by less than 1 MB", async () => {
    const bytesBefore = await prefixBytes(stack.rt, stack.prefix);
    const big = "x".repeat(120 * 1024);
    const shapes = [
      { url: "/v1/confirmations", token: CONSUMER_TOKEN, body: { policyId: "ld-tb", consumerId: big, versionId: "v" } },
      { url: "/v1/confirmations", token: undefined, body: { policyId: big, consumerId: "billing", versionId: "v" } },
      { url: "/v1/rotations", token: ADMIN_TOKEN, body: { policyId: big } },
      { url: "/v1/offboardings", token: ADMIN_TOKEN, body: { member: `${big}@example.com` } },
    ];
    const answers = await pool(Array.from({ length: 400 }, (_, i) => shapes[i % shapes.length]!), 20, (s) => call(`${stack.apiUrl}${s.url}`, "POST", { token: s.token, body: s.body }));
    const growth = (await prefixBytes(stack.rt, stack.prefix)) - bytesBefore;
    expect(growth).toBeLessThan(1024 * 1024);
    // Too large for the route (413), or refused before the body is read (401): never stored.
    for (const [i, a] of answers.entries()) expect(shapes[i % shapes.length]!.token ? 413 : 401).toBe(a.status);
  }, 60_000);

  it("a refused big body is not read: the answer arrives whole, the connection is closed for writing, and closed for good only after a delay", async () => {
    // 64 MB declared and sent as fast as the server takes it: the kernel's buffers hold a few MB,
    // so a server that read the body on would take it all.
    const total = 64 * 1024 * 1024;
    for (const [token, status] of [[undefined, 401], [CONSUMER_TOKEN, 413]] as const) {
      const r = await bigBodyRefusal(stack.apiUrl, "/v1/confirmations", total, token);
      expect(r.answer).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
      expect(r.answer.toLowerCase()).toContain("connection: close");
      // The whole answer, then the server's FIN: the client read it before anything was reset.
      expect(r.answer).toMatch(/\r\n\r\n\{"error":"[^"]+"\}$/);
      expect(r.finAfterAnswer).toBe(true);
      // The body was not drained: what the client could hand over is what the kernels buffer.
      expect(r.bytesWritten).toBeLessThan(total / 2);
      // The reset comes only once the connection has lingered (LINGER_MS), not with the answer.
      expect(r.msFromAnswerToReset).toBeGreaterThanOrEqual(LINGER_MS / 2);
    }
  }, 30_000);

  it("one 401 for anything unauthenticated, whether the ids exist or not", async () => {
    const requests: [string, string, unknown?][] = [
      ["POST", "/v1/confirmations", { policyId: "ld-tb", consumerId: "billing", versionId: "v1" }],
      ["POST", "/v1/confirmations", { policyId: "ld-tb", consumerId: "nobody", versionId: "v1" }],
      ["POST", "/v1/confirmations", { policyId: "no-such-policy", consumerId: "billing", versionId: "v1" }],
      ["POST", "/v1/consumer-failures", { policyId: "ld-tb", consumerId: "billing", stage: "reload", message: "x" }],
      ["POST", "/v1/consumer-failures", { policyId: "no-such-policy", consumerId: "billing", stage: "reload", message: "x" }],
      ["GET", "/v1/policies/ld-tb/history"],
      ["GET", "/v1/policies/no-such-policy/history"],
      ["POST", `/v1/rotations/${rotation.rotationId}/submit`, { value: "x" }],
      ["POST", "/v1/rotations/00000000-0000-4000-8000-000000000000/submit", { value: "x" }],
      ["POST", "/v1/rotations", { policyId: "ld-tb" }],
      ["POST", "/v1/rotations", { policyId: "no-such-policy" }],
      ["GET", "/v1/status"],
      ["GET", "/metrics"],
      ["POST", "/v1/leaks", { policies: ["ld-tb"] }],
      ["POST", "/v1/offboardings", { member: "alice@example.com" }],
    ];
    const seen = new Set<string>();
    for (const token of [undefined, "wrong-token", `rk_${"B".repeat(43)}`, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.x"]) {
      for (const [method, path, body] of requests) {
        const a = await call(`${stack.apiUrl}${path}`, method, { token, body });
        seen.add(`${a.status} ${a.body}`);
      }
    }
    expect([...seen]).toEqual([`401 ${JSON.stringify({ error: "unauthenticated: send a valid token (Authorization: Bearer <token>)" })}`]);
  });

  it("ids are checked against their grammar and length before any lookup", async () => {
    const long = await call(`${stack.apiUrl}/v1/policies/${"a".repeat(200)}/history`, "GET", { token: ADMIN_TOKEN });
    expect(long.status).toBe(400);
    expect(long.body).toContain("at most 128 characters");
    const ctl = await call(`${stack.apiUrl}/v1/policies/ld%1b%5b2Jtb/history`, "GET", { token: ADMIN_TOKEN });
    expect(ctl.status).toBe(400);
    expect(ctl.body).toContain("expected a policy id");
    const rot = await call(`${stack.apiUrl}/v1/rotations/..%2f..%2fetc/submit`, "POST", { token: ADMIN_TOKEN, body: { value: "x" } });
    expect(rot.status).toBe(400);
    expect(rot.body).toContain("expected a rotation id");
    const conf = await call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: CONSUMER_TOKEN, body: { policyId: "LD-TB", consumerId: "billing", versionId: "v" } });
    expect(conf.status).toBe(400);
    expect(conf.body).toContain("policyId: expected a policy id");
  });

  it("named tokens: printed once, stored as hashes, scoped, revocable; the audit names them", async () => {
    const create = async (name: string, ...args: string[]) => {
      const r = await runCli(stack, policies, ["token", "create", name, ...args]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain("direct Redis access");
      tokens[name] = r.stdout.trim();
      expect(tokens[name]).toMatch(/^rk_[A-Za-z0-9_-]{43}$/);
    };
    await create("ops", "--scope", "operator");
    await create("view", "--scope", "viewer");
    await create("bill", "--scope", "consumer", "--policy", "ld-tb", "--consumer", "billing");
    await create("alice-sub", "--scope", "submitter", "--owner", "alice@example.com");
    await create("bob-sub", "--scope", "submitter", "--owner", "bob@example.com");
    const dup = await runCli(stack, policies, ["token", "create", "ops", "--scope", "viewer"]);
    expect(dup.code).toBe(2);
    expect(dup.stderr).toContain("a token named ops exists already");
    const bad = await runCli(stack, policies, ["token", "create", "sub", "--scope", "submitter"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("a submitter token needs --owner");

    // Only hashes in Redis; `token list` shows names and scopes, never a token.
    const dump = await dumpRedis(stack.rt, stack.prefix);
    const list = await runCli(stack, policies, ["token", "list"]);
    for (const t of Object.values(tokens)) {
      expect(dump).not.toContain(t);
      expect(list.stdout).not.toContain(t);
      expect(dump).toContain(tokenHash(t));
    }
    expect(list.stdout).toMatch(/^bill {2}consumer as ld-tb\/billing {2}created /m);
    expect(list.stdout).toMatch(/^view {2}viewer {2}created .* by redis-direct:/m);

    // viewer reads; it does not act.
    expect((await call(`${stack.apiUrl}/v1/status`, "GET", { token: tokens.view })).status).toBe(200);
    expect((await call(`${stack.apiUrl}/metrics`, "GET", { token: tokens.view })).status).toBe(200);
    const viewerRotates = await call(`${stack.apiUrl}/v1/rotations`, "POST", { token: tokens.view, body: { policyId: "ld-tb2" } });
    expect(viewerRotates.status).toBe(403);
    expect(viewerRotates.body).toContain("token:view does not hold the operator scope");
    // operator acts, and the audit names the token.
    const rotated = await call(`${stack.apiUrl}/v1/rotations`, "POST", { token: tokens.ops, body: { policyId: "ld-tb2" } });
    expect(rotated.status).toBe(202);
    const history = await stack.rt.audit.history({ policyId: "ld-tb2", limit: 20 });
    expect(history.find((h) => h.step === "manual.requested")?.actor).toBe("token:ops");
    // A consumer token confirms as its one consumer only; it is not an operator.
    expect((await call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: tokens.bill, body: { policyId: "ld-tb", consumerId: "other", versionId: rotation.rotationId } })).status).toBe(401);
    expect((await call(`${stack.apiUrl}/v1/status`, "GET", { token: tokens.bill })).status).toBe(403);
    // A submitter submits for its owner's policies only (this rotation waits for consumers, not a value).
    const alice = await call(`${stack.apiUrl}/v1/rotations/${rotation.rotationId}/submit`, "POST", { token: tokens["alice-sub"], body: { value: "new-value" } });
    expect(alice.status).toBe(409);
    expect(alice.body).toContain("is not waiting for a value");
    const bob = await call(`${stack.apiUrl}/v1/rotations/${rotation.rotationId}/submit`, "POST", { token: tokens["bob-sub"], body: { value: "new-value" } });
    expect(bob.status).toBe(403);
    expect(bob.body).toContain("submits for the policies of bob@example.com only");
    // Revoked: refused from the next request on.
    const revoke = await runCli(stack, policies, ["token", "revoke", "view"]);
    expect(revoke.code).toBe(0);
    expect((await call(`${stack.apiUrl}/v1/status`, "GET", { token: tokens.view })).status).toBe(401);
    const audit = await stack.rt.audit.history({ limit: 200 });
    expect(audit.find((a) => a.step === "token.revoked")).toMatchObject({ actor: directActor(), message: "token view" });
    expect(audit.filter((a) => a.step === "token.created").map((a) => a.message)).toContain("token bob-sub (submitter for bob@example.com)");
  }, 60_000);

  it("a CLI command that changes state goes through the API with a token, or says it acts with direct Redis access (the actor is the OS account, not $USER)", async () => {
    const direct = await runCli(stack, policies, ["rotate", "ld-tb2"], "", { USER: "mallory" });
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.stderr).toContain(`acting with direct Redis access (REDIS_URL), audited as ${directActor()}`);
    const viaApi = await runCli(stack, policies, ["rotate", "ld-tb2", "--json"], "", { USER: "mallory", REKEY_API_URL: stack.apiUrl, REKEY_TOKEN: tokens.ops! });
    expect(viaApi.code, viaApi.stderr).toBe(0);
    expect(viaApi.stderr).toBe("");
    const viaApiId = (JSON.parse(viaApi.stdout) as { rotationId: string }).rotationId;
    const history = await stack.rt.audit.history({ policyId: "ld-tb2", limit: 50 });
    const requested = history.filter((h) => h.step === "manual.requested");
    expect(requested.find((h) => h.rotationId === viaApiId)?.actor).toBe("token:ops");
    expect(requested.some((h) => h.actor === directActor())).toBe(true);
    expect(history.some((h) => h.actor.includes("mallory"))).toBe(false);
    // A token without the scope is refused by the API, and the command says so.
    const refused = await runCli(stack, policies, ["rotate", "ld-tb2"], "", { REKEY_API_URL: stack.apiUrl, REKEY_TOKEN: tokens.bill! });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("the API refused (403)");
  }, 60_000);

  it("Bull Board is read-only: the edit-and-promote that skipped the wait for consumers is refused (I2)", async () => {
    const job = await stack.rt.queue.getJob(rotation.jobId);
    expect(job).toBeDefined();
    const base = `${stack.apiUrl}/admin/queues/api/queues/rotations/${encodeURIComponent(rotation.jobId)}`;
    const edit = await call(`${base}/update-data`, "PATCH", { basic: ADMIN_TOKEN, body: { jobData: { ...job!.data, step: "revoking" } } });
    expect(edit.status).toBe(405);
    const promote = await call(`${base}/promote`, "PUT", { basic: ADMIN_TOKEN });
    expect(promote.status).toBe(405);
    const clean = await call(`${base}/clean`, "PUT", { basic: ADMIN_TOKEN });
    expect(clean.status).toBe(405);
    // Nothing changed: the job still waits with its own step, the old token is alive.
    const after = await stack.rt.queue.getJob(rotation.jobId);
    expect(after?.data.step).toBe(job!.data.step);
    await new Promise((r) => setTimeout(r, 500));
    expect((await stack.rt.state.records.get(rotation.rotationId))?.status).toBe("awaiting-confirmation");
    expect(ld.isLive(managed.value)).toBe(true);
    const history = await stack.rt.audit.history({ policyId: "ld-tb", limit: 100 });
    expect(history.some((h) => h.step === "revoking")).toBe(false);
    // Reading stays open to a viewer (an operator here), and closed to everyone else.
    expect((await call(`${stack.apiUrl}/admin/queues`, "GET")).status).toBe(401);
    expect((await call(`${stack.apiUrl}/admin/queues`, "GET", { basic: tokens.ops })).status).toBe(200);
    // A rotation awaiting confirmation lingers in the worker for a moment before it parks.
    await until("the rotation parked", async () => (await (await stack.rt.queue.getJob(rotation.jobId))?.isDelayed()) === true, 10_000);
    const jobs = await call(`${stack.apiUrl}/admin/queues/api/queues?activeQueue=rotations&status=delayed&page=1`, "GET", { basic: tokens.ops });
    expect(jobs.status).toBe(200);
    expect(jobs.body).toContain(rotation.rotationId);
  });

  it("an authenticated consumer's refused confirmations reach the audit as one summary; its real confirmation completes the rotation", async () => {
    const [before] = await auditLengths(stack.rt, stack.prefix, "ld-tb");
    for (let i = 0; i < 5; i++) {
      const r = await call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: tokens.bill, body: { policyId: "ld-tb", consumerId: "billing", versionId: `wrong-${i}` } });
      expect(r.status).toBe(409);
    }
    await until("the refusal summary", async () => (await auditLengths(stack.rt, stack.prefix, "ld-tb"))[0] > before, 5_000);
    await new Promise((r) => setTimeout(r, 700));
    expect((await auditLengths(stack.rt, stack.prefix, "ld-tb"))[0] - before).toBe(1);
    const [added] = await stack.rt.audit.history({ limit: 1 });
    expect(added).toMatchObject({ policyId: "ld-tb", step: "confirmation", outcome: "refused", actor: "api", message: "5 refused confirmations for ld-tb in the last 0.5 s" });
    // The real consumers confirm (one with a named token, one with its policy token) and the rotation ends.
    expect((await call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: tokens.bill, body: { policyId: "ld-tb", consumerId: "billing", versionId: rotation.rotationId } })).status).toBe(200);
    expect((await call(`${stack.apiUrl}/v1/confirmations`, "POST", { token: OTHER_TOKEN, body: { policyId: "ld-tb", consumerId: "other", versionId: rotation.rotationId } })).status).toBe(200);
    await until("completed", async () => (await stack.rt.state.records.get(rotation.rotationId))?.status === "completed", 30_000);
    expect(ld.isLive(managed.value)).toBe(false);
    const history = await stack.rt.audit.history({ policyId: "ld-tb", limit: 50 });
    expect(history.filter((h) => h.step === "confirmation" && h.outcome === "ok").map((h) => h.actor).sort()).toEqual(["consumer:other", "token:bill"]);
  }, 60_000);

  it("rate limits hold across API replicas: per client address, then per identity, 429 with Retry-After", async () => {
    const log = createLogger({ level: "warn", destination: new LogCapture() });
    const opts = { host: "127.0.0.1", port: 0, adminTokenHash: tokenHash(ADMIN_TOKEN), log, rateLimit: { perAddress: 20, perIdentity: 1_000 } };
    // A fresh window: the counters of this test's earlier requests go.
    const old = await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`);
    if (old.length) await stack.rt.redis.del(...old);
    const a = await startApiServer(stack.rt, opts);
    const b = await startApiServer(stack.rt, opts);
    try {
      // A request without any credential is refused by the guard without a Redis round trip, so
      // it is not counted either: a flood of them writes nothing at all.
      for (let i = 0; i < 30; i++) expect((await call(`${[a, b][i % 2]!.url}/v1/status`, "GET")).status).toBe(401);
      expect(await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`)).toEqual([]);
      const statuses: number[] = [];
      for (let i = 0; i < 15; i++) {
        for (const api of [a, b]) statuses.push((await call(`${api.url}/v1/status`, "GET", { token: `forged-${i}` })).status);
      }
      // A forged credential is refused (401) whatever its address's count, but counted: the 30
      // forged requests use up this address's budget of 20, counted together by both replicas
      // (each sends the counts nobody waits for within DEFERRED_FLUSH_MS), so even a right token
      // from it now meets the limit.
      expect(statuses.filter((s) => s === 401)).toHaveLength(30);
      const counted = async () => Number(await stack.rt.redis.get((await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`))[0] ?? "none"));
      await until("both replicas' counts of the forged requests", async () => (await counted()) >= 30, 20 * DEFERRED_FLUSH_MS, 5);
      expect(await counted()).toBe(30);
      const limited = await call(`${b.url}/v1/status`, "GET", { token: ADMIN_TOKEN });
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(Number(limited.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      // Health checks are never limited.
      expect((await call(`${a.url}/healthz`, "GET")).status).toBe(200);
    } finally {
      await a.stop();
      await b.stop();
    }
    // Per identity: a token over its own limit, whichever replica and address it comes from.
    const perId = { ...opts, rateLimit: { perAddress: 1_000_000, perIdentity: 6 }, adminTokenHash: undefined };
    const c = await startApiServer(stack.rt, perId);
    const d = await startApiServer(stack.rt, perId);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) for (const api of [c, d]) statuses.push((await call(`${api.url}/v1/status`, "GET", { token: tokens.ops })).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
      // Another identity is not held back by it.
      expect((await call(`${c.url}/v1/status`, "GET", { token: tokens["alice-sub"] })).status).toBe(403);
    } finally {
      await c.stop();
      await d.stop();
    }
    // The counters are bounded: one key per address or identity, each expiring with its window.
    const keys = await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.length).toBeLessThanOrEqual(6);
    for (const k of keys) expect(await stack.rt.redis.pttl(k)).toBeGreaterThan(0);
  }, 60_000);
});

describe("SSO: bearer JWTs of an OIDC issuer, verified against its JWKS", () => {
  let jwks: Server;
  let jwksUrl: string;
  let key: CryptoKey;
  let otherKey: CryptoKey;
  let ld: LaunchDarklyFake;
  let stack: Stack;
  const ISSUER = "https://sso.example.test";

  beforeAll(async () => {
    const pair = await generateKeyPair("ES256");
    key = pair.privateKey;
    otherKey = (await generateKeyPair("ES256")).privateKey;
    const publicKey = pair.publicKey;
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    jwks = createServer((req, res) => {
      res.writeHead(req.url === "/jwks.json" ? 200 : 404, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, "127.0.0.1", () => r()));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    ld = await startLaunchDarklyFake();
    stack = await startStack({
      policies: [ldPolicy(ld, "ld-sso", "prod/ld-sso")],
      worker: false,
      api: { oidc: { issuer: ISSUER, audience: "rekey", jwksUrl, claim: "groups", scopeMap: { sre: "operator", auditors: "viewer" } } },
    });
    // Without a worker nothing else waits for Redis: the API answers 503 until it is connected.
    await stack.rt.redis.ping();
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await ld?.close();
    await new Promise((r) => jwks?.close(r));
  });

  const jwt = (claims: Record<string, unknown>, opts: { signWith?: CryptoKey; aud?: string; iss?: string; exp?: string; kid?: string } = {}) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: opts.kid ?? "k1" })
      .setIssuer(opts.iss ?? ISSUER)
      .setAudience(opts.aud ?? "rekey")
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? "5m")
      .sign(opts.signWith ?? key);

  it("maps claims to scopes, names the subject in the audit, and refuses every JWT that does not verify", async () => {
    const sre = await jwt({ sub: "alice@example.com", groups: ["staff", "sre"] });
    const auditor = await jwt({ sub: "carol@example.com", groups: ["auditors"] });
    const status = await call(`${stack.apiUrl}/v1/status`, "GET", { token: auditor });
    expect(status.status, status.body).toBe(200);
    expect((await call(`${stack.apiUrl}/v1/rotations`, "POST", { token: auditor, body: { policyId: "ld-sso" } })).status).toBe(403);
    const off = await call(`${stack.apiUrl}/v1/offboardings`, "POST", { token: sre, body: { member: "nobody@example.com" } });
    expect(off.status).toBe(202);
    const audit = await stack.rt.audit.history({ limit: 20 });
    expect(audit.find((a) => a.step === "offboarding.run")?.actor).toBe("jwt:alice@example.com");

    const refused = [
      await jwt({ sub: "alice@example.com", groups: ["sre"] }, { aud: "someone-else" }),
      await jwt({ sub: "alice@example.com", groups: ["sre"] }, { iss: "https://evil.example.test" }),
      await jwt({ sub: "alice@example.com", groups: ["sre"] }, { exp: "-1m" }),
      await jwt({ sub: "alice@example.com", groups: ["sre"] }, { signWith: otherKey }),
      await jwt({ sub: "alice@example.com", groups: ["sre"] }, { signWith: otherKey, kid: "made-up" }),
      await jwt({ sub: "mallory@example.com", groups: ["staff"] }),
      // alg "none": never accepted.
      `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${Buffer.from(JSON.stringify({ sub: "m", iss: ISSUER, aud: "rekey", groups: ["sre"] })).toString("base64url")}.x`,
    ];
    for (const t of refused) {
      const r = await call(`${stack.apiUrl}/v1/status`, "GET", { token: t });
      expect(r.status).toBe(401);
    }
  });
});
