/**
 * The HTTP API: consumer confirmations, operator triggers (rotate, submit, leak, offboard),
 * status, history, health and Prometheus metrics. Built on fastify for its request lifecycle,
 * body limits, and `inject()` for tests; bodies are validated with zod.
 *
 * Authentication: consumers present their own bearer token (its sha256 is in the policy) to
 * confirm a version and to report that they could not take one (POST /v1/consumer-failures);
 * operator endpoints need the admin token (its sha256 is REKEY_ADMIN_TOKEN_HASH). Refusals are
 * 4xx, change nothing, and are audited.
 */
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { z } from "zod";
import type { Audit } from "../audit/audit.ts";
import { tokenMatches } from "../consumers/fingerprint.ts";
import { FAILURE_STAGES } from "../consumers/rekey-client.ts";
import { errorMessage, RekeyError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Policy } from "../policy/schema.ts";
import type { RekeyState } from "../rotation/state.ts";
import { RequestError, type Rotations } from "../rotation/requests.ts";
import { collectStatus } from "../rotation/status.ts";

export interface ApiExtensions {
  /** Leak response (POST /v1/leaks): added by the leak module. */
  leak?: (body: unknown, actor: string) => Promise<unknown>;
  /** Offboarding (POST /v1/offboardings). */
  offboard?: (body: unknown, actor: string) => Promise<unknown>;
}

export interface ApiDeps {
  /** Queues shown in Bull Board at /admin/queues (admin token as the HTTP Basic password). */
  boardQueues?: Queue[];
  rotations: Rotations;
  state: RekeyState;
  audit: Audit;
  policies: { all(): Policy[]; get(id: string): Policy | undefined };
  log: Logger;
  /** `sha256:<hex>` of the admin token; without it operator endpoints answer 403. */
  adminTokenHash?: string;
  nextDue?: (policyId: string) => number | undefined;
  queueCounts?: () => Promise<Record<string, number>>;
  /** Readiness (GET /readyz): rejects naming each dependency that does not answer. */
  ping?: () => Promise<void>;
  /** False while rekey's Redis connection is down: requests that need it get a 503 at once. */
  redisReady?: () => boolean;
  extensions?: ApiExtensions;
}

/** Answer without Redis: liveness, and readiness (which reports Redis itself). */
const WITHOUT_REDIS = new Set(["/healthz", "/readyz"]);

const ConfirmBody = z
  .strictObject({
    policyId: z.string().min(1),
    consumerId: z.string().min(1),
    versionId: z.string().min(1).max(64).optional(),
    fingerprint: z.string().regex(/^[0-9a-f]{64}$/, "expected 64 hex digits (HMAC-SHA256)").optional(),
  })
  .refine((b) => b.versionId || b.fingerprint, { message: "name the version you loaded: versionId or fingerprint" });

const FailureBody = z.strictObject({
  policyId: z.string().min(1),
  consumerId: z.string().min(1),
  versionId: z.string().min(1).max(64).optional(),
  stage: z.enum(FAILURE_STAGES),
  message: z.string().max(2_000),
});

const RotateBody = z.strictObject({ policyId: z.string().min(1) });
const SubmitBody = z.strictObject({ value: z.string().min(1).max(65_536) });

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h);
  return m?.[1]?.trim();
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`).join("; ");
    throw new RequestError(400, msg);
  }
  return r.data;
}

export function buildApi(deps: ApiDeps): FastifyInstance {
  // fastify's own logger is off: rekey logs through its redacting pino instance below.
  const app = Fastify({ logger: false, bodyLimit: 128 * 1024 });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "rekey_api_" });
  const confirmations = new Counter({ name: "rekey_confirmations_total", help: "Push confirmations received, by outcome", labelNames: ["outcome"], registers: [registry] });
  const consumerFailures = new Counter({ name: "rekey_consumer_failures_total", help: "Consumer failure reports received, by stage", labelNames: ["stage"], registers: [registry] });
  const requests = new Counter({ name: "rekey_api_requests_total", help: "API requests by route and status class", labelNames: ["route", "status"], registers: [registry] });
  new Gauge({
    name: "rekey_rotations_in_flight",
    help: "Rotations in flight, by status",
    labelNames: ["status"],
    registers: [registry],
    async collect() {
      this.reset();
      const counts = new Map<string, number>();
      for (const r of await deps.state.activeRotations()) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
      for (const [status, n] of counts) this.set({ status }, n);
    },
  });
  new Gauge({
    name: "rekey_queue_jobs",
    help: "Rotation jobs in the queue, by state",
    labelNames: ["state"],
    registers: [registry],
    async collect() {
      this.reset();
      const counts = (await deps.queueCounts?.()) ?? {};
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });

  app.addHook("onResponse", async (req, reply) => {
    requests.inc({ route: req.routeOptions.url ?? "unknown", status: `${Math.floor(reply.statusCode / 100)}xx` });
  });

  // Without Redis a request would wait in the client's offline queue until it reconnects (a
  // consumer's confirmation, a leak request): refuse it at once, so the caller retries.
  app.addHook("onRequest", async (req, reply) => {
    if (!deps.redisReady || deps.redisReady() || WITHOUT_REDIS.has(req.url.split("?")[0] ?? "")) return;
    return reply.code(503).header("retry-after", "5").send({ error: "rekey cannot reach its Redis right now; nothing was done; retry shortly" });
  });

  app.setErrorHandler(async (err: unknown, req, reply) => {
    if (err instanceof RequestError) return reply.code(err.status).send({ error: err.message });
    const status = (err as { statusCode?: number }).statusCode;
    if (status && status >= 400 && status < 500) return reply.code(status).send({ error: errorMessage(err) });
    deps.log.error({ route: req.routeOptions.url, err: errorMessage(err) }, "api request failed");
    return reply.code(500).send({ error: err instanceof RekeyError ? err.message : "internal error (see the rekey api log)" });
  });
  app.setNotFoundHandler(async (req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split("?")[0]}` }));

  const admin = async (req: FastifyRequest, reply: FastifyReply): Promise<string | undefined> => {
    if (!deps.adminTokenHash) {
      reply.code(403).send({ error: "operator API disabled: set REKEY_ADMIN_TOKEN_HASH to enable it" });
      return undefined;
    }
    const token = bearer(req);
    if (!token || !tokenMatches(token, deps.adminTokenHash)) {
      await deps.audit.record({ step: `api ${req.method} ${req.routeOptions.url}`, outcome: "refused", actor: "api:unauthenticated", message: "bad or missing admin token" });
      reply.code(401).send({ error: "bad or missing admin bearer token" });
      return undefined;
    }
    return "api:admin";
  };

  app.get("/healthz", async () => ({ ok: true }));
  app.get("/readyz", async (_req, reply) => {
    try {
      await deps.ping?.();
      return { ok: true };
    } catch (err) {
      // ping() names the dependency that failed ("redis: …", "secretStore: …").
      return reply.code(503).send({ ok: false, error: errorMessage(err) });
    }
  });
  app.get("/metrics", async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  app.post("/v1/confirmations", async (req, reply) => {
    try {
      const body = parse(ConfirmBody, req.body);
      const res = await deps.rotations.confirm({ ...body, bearer: bearer(req) });
      confirmations.inc({ outcome: res.alreadyConfirmed ? "repeat" : "accepted" });
      return reply.code(200).send(res);
    } catch (err) {
      if (err instanceof RequestError) {
        confirmations.inc({ outcome: "refused" });
        if (err.status === 400) {
          await deps.audit.record({ step: "confirmation", outcome: "refused", actor: "consumer:unknown", message: err.message });
        }
      }
      throw err;
    }
  });

  app.post("/v1/consumer-failures", async (req, reply) => {
    try {
      const body = parse(FailureBody, req.body);
      const res = await deps.rotations.reportFailure({ ...body, bearer: bearer(req) });
      consumerFailures.inc({ stage: body.stage });
      return reply.code(200).send(res);
    } catch (err) {
      if (err instanceof RequestError && err.status === 400) {
        await deps.audit.record({ step: "consumer-failure", outcome: "refused", actor: "consumer:unknown", message: err.message });
      }
      throw err;
    }
  });

  app.post("/v1/rotations", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    const body = parse(RotateBody, req.body);
    const res = await deps.rotations.enqueue({ policyId: body.policyId, reason: "manual", actor });
    return reply.code(202).send(res);
  });

  app.post<{ Params: { id: string } }>("/v1/rotations/:id/submit", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    const body = parse(SubmitBody, req.body);
    const res = await deps.rotations.submit({ rotationId: req.params.id, value: body.value, actor });
    return reply.code(200).send(res);
  });

  app.get("/v1/status", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    return collectStatus({ state: deps.state, policies: deps.policies.all(), nextDue: deps.nextDue });
  });

  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>("/v1/policies/:id/history", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    if (!deps.policies.get(req.params.id)) throw new RequestError(404, `unknown policy "${req.params.id}"`);
    const limit = Math.min(1_000, Math.max(1, Number(req.query.limit ?? 100) || 100));
    return deps.audit.history({ policyId: req.params.id, limit });
  });

  app.post("/v1/leaks", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    if (!deps.extensions?.leak) throw new RequestError(404, "leak response is not enabled in this process");
    return reply.code(202).send(await deps.extensions.leak(req.body, actor));
  });

  app.post("/v1/offboardings", async (req, reply) => {
    const actor = await admin(req, reply);
    if (!actor) return reply;
    if (!deps.extensions?.offboard) throw new RequestError(404, "offboarding is not enabled in this process");
    return reply.code(202).send(await deps.extensions.offboard(req.body, actor));
  });

  if (deps.boardQueues?.length) mountBoard(app, deps.boardQueues, deps.adminTokenHash);

  return app;
}

/**
 * Bull Board: the queues in a browser. Browsers cannot send a bearer header, so the board asks
 * for HTTP Basic credentials and takes the admin token as the password. Job data holds ids and
 * step cursors only, so the board shows no secret.
 */
function mountBoard(app: FastifyInstance, queues: Queue[], adminTokenHash: string | undefined): void {
  const basePath = "/admin/queues";
  const adapter = new FastifyAdapter();
  adapter.setBasePath(basePath);
  createBullBoard({ queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: false })), serverAdapter: adapter });
  void app.register(async (scope) => {
    scope.addHook("onRequest", async (req, reply) => {
      const m = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? "");
      const password = m?.[1] ? Buffer.from(m[1], "base64").toString("utf8").split(":").slice(1).join(":") : "";
      if (!adminTokenHash || !password || !tokenMatches(password, adminTokenHash)) {
        return reply.code(401).header("www-authenticate", 'Basic realm="rekey queues"').send({ error: adminTokenHash ? "admin token required (HTTP Basic password)" : "operator API disabled: set REKEY_ADMIN_TOKEN_HASH" });
      }
    });
    await scope.register(adapter.registerPlugin(), { prefix: basePath });
  });
}
