/**
 * A push confirmation's path through the API, on real Redis and real HTTP: it waits for Redis
 * twice (the address's and the identity's rate-limit counts and the reads of the rotation it
 * confirms, together; then the confirmation's one script), because under attack every wait lets
 * the hostile requests queued meanwhile go first. Its limits still hold: the address's 429 comes
 * before any other answer, the identity's after authentication, both with Retry-After.
 */
import { randomUUID } from "node:crypto";
import { type AddressInfo, createServer, type Server, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { createLogger } from "../../src/log.ts";
import { Policy, type PolicyInput } from "../../src/policy/schema.ts";
import { startApiServer } from "../../src/processes.ts";
import { createRuntime, type Runtime } from "../../src/runtime.ts";
import type { RotationRecord } from "../../src/rotation/state/records.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { redisUrl } from "../helpers/redis.ts";
import { FINGERPRINT_KEY, LogCapture, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "path-consumer-token-abcdefghijklmnopq";
const OTHER_TOKEN = "path-other-consumer-token-abcdefghijk";
/** What the proxy adds to every answer of Redis: one round trip, in ms. */
const RTT_MS = 100;

function policy(ld: LaunchDarklyFake, id: string): PolicyInput {
  return {
    id,
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    target: { secretId: `prod/${id}`, region: REGION },
    consumers: [
      { id: "billing", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) },
      { id: "other", confirm: "push", tokenHash: tokenHash(OTHER_TOKEN), required: false },
    ],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
  };
}

/** A TCP proxy to Redis that holds each of its answers for `delayMs`: every round trip takes that long. */
async function slowProxy(target: URL, delayMs: number): Promise<{ url: string; writes(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let writes = 0;
  const server: Server = createServer((client) => {
    const upstream = new Socket();
    sockets.add(client).add(upstream);
    upstream.connect(Number(target.port), target.hostname);
    client.on("data", (chunk) => {
      writes++;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => setTimeout(() => client.destroyed || client.write(chunk), delayMs));
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on("error", () => b.destroy());
      a.on("close", () => setTimeout(() => b.destroy(), delayMs));
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    writes: () => writes,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

async function confirm(url: string, token: string, body: unknown): Promise<{ status: number; body: string; retryAfter: string | null; ms: number }> {
  const started = performance.now();
  const res = await fetch(`${url}/v1/confirmations`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text, retryAfter: res.headers.get("retry-after"), ms: performance.now() - started };
}

describe("a push confirmation's path", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  const policies: PolicyInput[] = [];
  const rotations: Record<string, string> = {};

  beforeAll(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    policies.push(policy(ld, "ld-path-a"), policy(ld, "ld-path-b"), policy(ld, "ld-path-c"));
    // The jobs linger while they wait (they hear a confirmation at once), so that a confirmation
    // does not also promote a parked job: its round trips are the API's own.
    stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value }, api: { rateLimit: { perAddress: 1_000_000, perIdentity: 1_000_000 } }, confirmationLingerMs: 120_000 });
    for (const p of policies) {
      await stack.store.create!({ secretId: `prod/${p.id}`, region: REGION }, ld.addToken({ name: p.id }).value);
      rotations[p.id] = (await stack.rt.rotations.enqueue({ policyId: p.id, reason: "manual", actor: "test" })).rotationId;
    }
    for (const p of policies) await until(`${p.id} awaiting confirmation`, async () => (await stack.rt.state.records.get(rotations[p.id]!))?.status === "awaiting-confirmation");
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await ld?.close();
  });

  it("waits for Redis twice: both counts and the reads together, then the confirmation's script", async () => {
    // A second API on the same Redis, through a proxy that makes each round trip take RTT_MS.
    const proxy = await slowProxy(new URL(redisUrl()), RTT_MS);
    const log = createLogger({ level: "warn", destination: new LogCapture() });
    let rt: Runtime | undefined;
    let api: Awaited<ReturnType<typeof startApiServer>> | undefined;
    try {
      rt = await createRuntime({ redisUrl: proxy.url, prefix: stack.prefix, policyPaths: [], log, fingerprintKey: FINGERPRINT_KEY, region: REGION, env: {}, store: stack.store });
      rt.policies.replace(policies.map((p) => ({ policy: Policy.parse(p), file: `${p.id}.yaml` })));
      const ready = rt.redis;
      await until("the proxied connection", () => ready.status === "ready");
      api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 1_000_000, perIdentity: 1_000_000 } });
      // Connections and scripts warmed up: a version no longer waited for is refused (409).
      const stale = await confirm(api.url, CONSUMER_TOKEN, { policyId: "ld-path-a", consumerId: "billing", versionId: "4b0c7e51-1d4a-4a8e-9a57-3d5e0c6f4b21" });
      expect(stale.status, stale.body).toBe(409);
      expect(stale.body).toContain(`rotation ${rotations["ld-path-a"]}`);
      // A stale version: both counts, the lock and that version's record (one round trip), then
      // the record of the rotation the lock names (the second). One after the other, four. The
      // fastest of five, so that a stall of a shared machine does not count.
      const stales: number[] = [];
      for (let i = 0; i < 5; i++) stales.push((await confirm(api.url, CONSUMER_TOKEN, { policyId: "ld-path-a", consumerId: "billing", versionId: `4b0c7e51-1d4a-4a8e-9a57-3d5e0c6f4b2${i}` })).ms);
      expect(Math.min(...stales)).toBeGreaterThanOrEqual(2 * RTT_MS);
      expect(Math.min(...stales)).toBeLessThan(3 * RTT_MS);
      // The version waited for: the counts, the lock and the record (one round trip), the
      // confirmation's script (the second). One after the other, five.
      const writesBefore = proxy.writes();
      const ok = await confirm(api.url, CONSUMER_TOKEN, { policyId: "ld-path-a", consumerId: "billing", versionId: rotations["ld-path-a"] });
      expect(ok.status, ok.body).toBe(200);
      // Two writes to Redis in all: both counts and the reads (the API's pipelined connection sends
      // what one turn of the event loop asks for in one write), then the confirmation's script.
      expect(proxy.writes() - writesBefore).toBeLessThanOrEqual(2);
      expect(ok.ms).toBeGreaterThanOrEqual(2 * RTT_MS);
      expect(ok.ms).toBeLessThan(3.5 * RTT_MS);
      // A named consumer token is looked up first (beside the address's count): three; one after
      // the other, six.
      const named = (await stack.rt.tokens.create({ name: "path-billing", scopes: ["consumer"], policyId: "ld-path-b", consumerId: "billing" }, "test")).token;
      const byName = await confirm(api.url, named, { policyId: "ld-path-b", consumerId: "billing", versionId: rotations["ld-path-b"] });
      expect(byName.status, byName.body).toBe(200);
      expect(byName.ms).toBeGreaterThanOrEqual(3 * RTT_MS);
      expect(byName.ms).toBeLessThan(4.5 * RTT_MS);
    } finally {
      await api?.stop();
      await rt?.close();
      await proxy.close();
    }
    await until("ld-path-a completed", async () => (await stack.rt.state.records.get(rotations["ld-path-a"]!))?.status === "completed");
  }, 60_000);

  it("checks the version against the rotation in flight, whatever shape the version id has", async () => {
    const c = rotations["ld-path-c"]!;
    const wrong = [rotations["ld-path-a"]!, c.toUpperCase(), `${c}:confirmed`, "not-a-version"];
    for (const versionId of wrong) {
      const r = await confirm(stack.apiUrl, CONSUMER_TOKEN, { policyId: "ld-path-c", consumerId: "billing", versionId });
      expect(r.status, versionId).toBe(409);
      expect(r.body).toContain(`is not the version rotation ${c} is waiting for`);
    }
    const none = await confirm(stack.apiUrl, CONSUMER_TOKEN, { policyId: "ld-path-a", consumerId: "billing", versionId: rotations["ld-path-a"] });
    expect(none.status).toBe(409);
    expect(none.body).toContain("no rotation of ld-path-a is waiting for confirmations");
    expect((await confirm(stack.apiUrl, CONSUMER_TOKEN, { policyId: "ld-path-c", consumerId: "billing", versionId: c })).status).toBe(200);
    // A repeat is answered from the same reads: already confirmed, or nothing waits any more.
    expect([200, 409]).toContain((await confirm(stack.apiUrl, CONSUMER_TOKEN, { policyId: "ld-path-c", consumerId: "billing", versionId: c })).status);
  }, 30_000);

  it("a confirmation whose rotation's record went between the API's reads and its write (Redis lost it) is refused and writes nothing", async () => {
    // What the API read before Redis lost the rotation: it was waiting for this consumer.
    const rotationId = randomUUID();
    const rec: RotationRecord = { rotationId, policyId: "ld-path-a", reason: "manual", actor: "test", status: "awaiting-confirmation", step: "awaiting-confirmation", jobId: `manual@ld-path-a@${rotationId}`, startedAt: Date.now(), updatedAt: Date.now(), promotedAt: Date.now() };
    // The newest audit entry now: entries after it are this test's (or a refusal summary another
    // test's 409s flush on its own timer, which names no rotation).
    const auditBefore = (await stack.rt.redis.xrevrange(`${stack.prefix}:audit`, "+", "-", "COUNT", 1))[0]?.[0] ?? "0";
    await expect(
      stack.rt.rotations.confirm({ policyId: "ld-path-a", consumerId: "billing", bearer: CONSUMER_TOKEN, versionId: rotationId, target: { policyId: "ld-path-a", rotationId, rec } }),
    ).rejects.toMatchObject({ status: 409, message: "no rotation of ld-path-a is waiting for confirmations" });
    // No confirmation (a key nothing would ever expire), no audit entry, no wake flag.
    expect(await stack.rt.redis.exists(stack.rt.state.keys.confirmations(rotationId), stack.rt.state.keys.wake(rotationId))).toBe(0);
    const added = await stack.rt.redis.xrange(`${stack.prefix}:audit`, `(${auditBefore}`, "+");
    expect(added.filter(([, fields]) => fields.includes(rotationId))).toEqual([]);
  });

  it("per address: over its limit, 429 with Retry-After before any other answer; a credential that cannot authenticate is refused without waiting for the count", async () => {
    const log = createLogger({ level: "warn", destination: new LogCapture() });
    const api = await startApiServer(stack.rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 3, perIdentity: 1_000_000, windowMs: 30_000 } });
    try {
      const counters = await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`);
      if (counters.length) await stack.rt.redis.del(...counters);
      const body = { policyId: "ld-path-b", consumerId: "billing", versionId: "not-waited-for" };
      for (let i = 0; i < 3; i++) expect((await confirm(api.url, CONSUMER_TOKEN, body)).status).toBe(409);
      // Over the limit: the right token, another consumer's token, a body that does not parse.
      for (const [token, b] of [[CONSUMER_TOKEN, body], [OTHER_TOKEN, body], [CONSUMER_TOKEN, "{not json"], [CONSUMER_TOKEN, { policyId: "ld-path-b" }]] as const) {
        const r = await confirm(api.url, token, b);
        expect(r.status, r.body).toBe(429);
        expect(Number(r.retryAfter)).toBeGreaterThan(0);
        expect(Number(r.retryAfter)).toBeLessThanOrEqual(30);
        expect(r.body).toContain("too many requests from this address");
      }
      // A credential no policy or token could match: the one 401, counted but not waited for.
      const forged = await confirm(api.url, "forged-token-0123456789", body);
      expect(forged.status).toBe(401);
      expect(JSON.parse(forged.body)).toEqual({ error: "unauthenticated: send a valid token (Authorization: Bearer <token>)" });
    } finally {
      await api.stop();
    }
  }, 30_000);

  it("per identity: a consumer over its own limit meets 429 with Retry-After, another consumer does not", async () => {
    const log = createLogger({ level: "warn", destination: new LogCapture() });
    const api = await startApiServer(stack.rt, { host: "127.0.0.1", port: 0, log, rateLimit: { perAddress: 1_000_000, perIdentity: 2, windowMs: 30_000 } });
    try {
      const counters = await stack.rt.redis.keys(`${stack.prefix}:ratelimit:*`);
      if (counters.length) await stack.rt.redis.del(...counters);
      const body = { policyId: "ld-path-b", consumerId: "billing", versionId: "not-waited-for" };
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await confirm(api.url, CONSUMER_TOKEN, body)).status);
      expect(statuses).toEqual([409, 409, 429, 429]);
      const limited = await confirm(api.url, CONSUMER_TOKEN, body);
      expect(limited.body).toContain("too many requests from consumer:billing");
      expect(Number(limited.retryAfter)).toBeGreaterThan(0);
      expect((await confirm(api.url, OTHER_TOKEN, { ...body, consumerId: "other" })).status).toBe(409);
    } finally {
      await api.stop();
    }
  }, 30_000);
});
