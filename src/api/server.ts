/**
 * The HTTP API: consumer confirmations, operator triggers (rotate, submit, leak, offboard),
 * status, history, health and Prometheus metrics. Built on fastify for its request lifecycle,
 * body limits, and `inject()` for tests; bodies are validated with zod.
 *
 * Trust boundary (docs/security.md): every route but /healthz and /readyz names the scope it
 * needs (src/auth/guard.ts), checked in `onRequest`, before the body is read. A request without
 * valid credentials gets one 401 whatever ids it names, and writes nothing to Redis but, when it
 * presents a credential, its address's rate-limit counter (one small key with a TTL). Refusals are counted in metrics and
 * logged at most every few seconds; the audit holds authenticated actions only, plus one summary
 * per policy and minute of an authenticated consumer's refused confirmations. Consumers confirm a
 * version (POST /v1/confirmations) and report that they could not take one
 * (POST /v1/consumer-failures) with their own token.
 */
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { TlsOptions } from "node:tls";
import rateLimit, { normalizeIP } from "@fastify/rate-limit";
import type { Queue } from "bullmq";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { RedisClient } from "../redis-connection.ts";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { openLeakIncidents, stateMetrics } from "../observe/metrics.ts";
import { z } from "zod";
import { basicPasswordOf, bearerOf, closeUnread, Guard, routeOf, UNAUTHENTICATED } from "../auth/guard.ts";
import { actorOf, hasScope, type Identity } from "../auth/identity.ts";
import type { OidcVerifier } from "../auth/jwt.ts";
import { REFUSAL_REASONS, Refusals } from "../auth/refusals.ts";
import type { ApiTokens } from "../auth/tokens.ts";
import type { Audit } from "../audit/audit.ts";
import { FAILURE_STAGES } from "../consumers/rekey-client.ts";
import { errorMessage, RekeyError, TransientError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Policy } from "../policy/schema.ts";
import type { RekeyState } from "../rotation/state.ts";
import { RequestError, type Rotations } from "../rotation/requests.ts";
import { collectStatus, type JobView, type PolicyStatus } from "../rotation/status.ts";
import { persistedNextDue } from "../scheduler/next-due.ts";
import { type DashboardDeps, registerDashboard } from "./dashboard/routes.ts";
import { RateLimitCounters } from "./rate-limit-store.ts";
import { registerSubmitPage, type SubmitPageDeps } from "./submit-page.ts";
import { RedisKeys } from "../rotation/keys.ts";
import { ConsumerReports } from "../rotation/state/confirmations.ts";

declare module "fastify" {
  interface FastifyRequest {
    /**
     * The address's rate-limit count of a route that defers it (`config.deferAddressLimit`):
     * resolves to the seconds to wait when the address is over its limit. The route awaits it
     * before it answers anything but a refusal of a credential that cannot authenticate.
     */
    addressLimit: Promise<number | undefined> | null;
  }
  interface FastifyContextConfig {
    /** The route awaits `req.addressLimit` itself, beside its own round trips (see the address hook). */
    deferAddressLimit?: boolean;
  }
}

export interface ApiExtensions {
  /** Leak response (POST /v1/leaks): added by the leak module. */
  leak?: (body: unknown, actor: string) => Promise<unknown>;
  /** Offboarding (POST /v1/offboardings). */
  offboard?: (body: unknown, actor: string) => Promise<unknown>;
}

export interface ApiRateLimits {
  /**
   * The Redis the counters live in, shared by every API replica: a connection of the API's own,
   * auto-pipelined (what one turn of the event loop sends leaves in one write). A confirmation's
   * first reads go on it too, beside its counts.
   */
  redis: RedisClient;
  /** Key prefix (rekey's own): counters are `<prefix>:ratelimit:*`, each with a TTL of the window. */
  prefix: string;
  /** Requests per client address per window (REKEY_API_RATE_LIMIT). Default 1200. */
  perAddress?: number;
  /** Requests per authenticated identity per window (REKEY_API_IDENTITY_RATE_LIMIT). Default 600. */
  perIdentity?: number;
  /** The window, in ms. Default 60 s. */
  windowMs?: number;
}

export interface ApiDeps {
  /** Queues shown read-only in Bull Board at /admin/queues (viewer scope; token as HTTP Basic password). */
  boardQueues?: Queue[];
  rotations: Rotations;
  state: RekeyState;
  audit: Audit;
  /** A PolicySet, or what the API needs of one. */
  policies: { all(): Policy[]; get(id: string): Policy | undefined; consumerTokenHashes(): ReadonlySet<string> };
  log: Logger;
  /** `sha256:<hex>` of the bootstrap admin token (REKEY_ADMIN_TOKEN_HASH). */
  adminTokenHash?: string;
  /** Named API tokens (`rekey token create`). */
  tokens?: Pick<ApiTokens, "identify">;
  /** SSO: bearer JWTs of an OIDC issuer. */
  oidc?: Pick<OidcVerifier, "identify">;
  /** Rate limits across replicas; without them (unit tests) nothing is rate-limited. */
  rateLimits?: ApiRateLimits;
  /** How often an authenticated consumer's refused confirmations are summed into the audit (ms). */
  refusalAuditWindowMs?: number;
  /** The scheduler's next due times, where it runs in this process; else read from its markers in Redis. */
  nextDue?: (policyId: string) => number | undefined;
  /** The rotation queue's job reader (status: what a rotation waits for). */
  jobs?: (jobId: string) => Promise<JobView | undefined>;
  /**
   * The process's metrics registry, served at /metrics, with the state gauges already registered
   * (src/observe/metrics.ts). Without it the API makes its own and registers them.
   */
  registry?: Registry;
  /** Leak incidents and offboardings for the dashboard (GET /ui). */
  dashboard?: Pick<DashboardDeps, "leaks" | "offboarding">;
  queueCounts?: () => Promise<Record<string, number>>;
  /** Readiness (GET /readyz): rejects naming each dependency that does not answer. */
  ping?: () => Promise<void>;
  /** False while rekey's Redis connection is down: requests that need it get a 503 at once. */
  redisReady?: () => boolean;
  extensions?: ApiExtensions;
  /** The one-time submit link page at /submit/:token (human steps without admin rights). */
  submitPage?: Omit<SubmitPageDeps, "rotations" | "policies" | "log">;
  /** Serve HTTPS with these options (see ./tls.ts); without them, plain HTTP. */
  https?: TlsOptions;
}

/** Answer without Redis, without credentials and without a rate limit: liveness and readiness. */
const OPEN = new Set(["/healthz", "/readyz"]);

/** The grammar of policy ids (src/policy/schema.ts) and consumer ids, checked before any lookup. */
const PolicyId = z.string().max(128, "expected at most 128 characters").regex(/^[a-z0-9][a-z0-9._-]*$/, "expected a policy id: lower-case letters, digits, '.', '_' or '-'");
const ConsumerId = z.string().max(128, "expected at most 128 characters").regex(/^[a-z0-9][a-z0-9._-]*$/, "expected a consumer id: lower-case letters, digits, '.', '_' or '-'");
const RotationId = z.uuid("expected a rotation id (a UUID)");

const ConfirmBody = z
  .strictObject({
    policyId: PolicyId,
    consumerId: ConsumerId,
    versionId: z.string().min(1).max(64).optional(),
    fingerprint: z.string().regex(/^[0-9a-f]{64}$/, "expected 64 hex digits (HMAC-SHA256)").optional(),
  })
  .refine((b) => b.versionId || b.fingerprint, { message: "name the version you loaded: versionId or fingerprint" });

const FailureBody = z.strictObject({
  policyId: PolicyId,
  consumerId: ConsumerId,
  versionId: z.string().min(1).max(64).optional(),
  stage: z.enum(FAILURE_STAGES),
  message: z.string().max(2_000),
});

const RotateBody = z.strictObject({ policyId: PolicyId });
const SubmitBody = z.strictObject({ value: z.string().min(1).max(65_536) });
const CancelBody = z.strictObject({ reason: z.string().max(500, "expected at most 500 characters").optional() });

/** How long POST /v1/rotations/:id/cancel waits for the worker's clean-up before answering 202. */
const CANCEL_WAIT_MS = 15_000;

/**
 * Body limits per route, in bytes: a confirmation is tiny; a submitted or leaked value is at most
 * 64 KiB (the schemas' limit) plus JSON framing.
 */
export const BODY_LIMITS = {
  default: 4 * 1024,
  confirmation: 1024,
  consumerFailure: 4 * 1024,
  rotate: 1024,
  cancel: 1024,
  offboard: 2 * 1024,
  submit: 80 * 1024,
  leak: 80 * 1024,
} as const;

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
  // maxParamLength: an over-long id gets the 400 naming the limit below, not a bare 414.
  // With `https` the server is an https.Server; the routes and hooks are the same either way.
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMITS.default, routerOptions: { maxParamLength: 1_024 }, ...(deps.https ? { https: deps.https } : {}) }) as unknown as FastifyInstance;
  const status = async (): Promise<PolicyStatus[]> => {
    const policies = deps.policies.all();
    return collectStatus({ state: deps.state, policies, nextDue: await nextDueReader(), jobs: deps.jobs });
  };
  const nextDueReader = async () => deps.nextDue ?? (await persistedNextDue(deps.state.redis, deps.state.prefix, deps.policies.all(), Date.now()));
  // A registry of the process (shared with other roles) already has the state gauges; one made
  // here gets them too.
  let registry = deps.registry;
  if (!registry) {
    registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: "rekey_api_" });
    stateMetrics(registry, { state: deps.state, policies: deps.policies, nextDue: nextDueReader, openLeakIncidents: deps.dashboard?.leaks ? () => openLeakIncidents(deps.dashboard!.leaks!) : undefined });
  }
  const metrics = registry;
  const confirmations = new Counter({ name: "rekey_confirmations_total", help: "Push confirmations received, by outcome", labelNames: ["outcome"], registers: [registry] });
  const consumerFailures = new Counter({ name: "rekey_consumer_failures_total", help: "Consumer failure reports received, by stage", labelNames: ["stage"], registers: [registry] });
  const requests = new Counter({ name: "rekey_api_requests_total", help: "API requests by route and status class", labelNames: ["route", "status"], registers: [registry] });
  const refusalCounter = new Counter({ name: "rekey_api_refusals_total", help: `API requests refused, by route and reason (${REFUSAL_REASONS.join(", ")})`, labelNames: ["route", "reason"], registers: [registry] });
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

  const refusals = new Refusals({ counter: refusalCounter, log: deps.log, audit: deps.audit, auditWindowMs: deps.refusalAuditWindowMs });
  app.addHook("onClose", async () => refusals.close());

  const limits = deps.rateLimits;
  const windowMs = limits?.windowMs ?? 60_000;
  // Counters in Redis, so every replica counts the same client (./rate-limit-store.ts: the
  // plugin's fixed window, plus counts nobody waits for, sent together).
  const counters = limits ? new RateLimitCounters(limits.redis, new RedisKeys(limits.prefix).apiRateLimitNamespace()) : undefined;
  // A confirmation's reads, sent with its counts in one write (the connection is pipelined).
  const confirmationReads = limits ? new ConsumerReports(limits.redis, new RedisKeys(limits.prefix)) : undefined;
  if (limits && counters) {
    // `global: false`: the hooks below decide the order (the address's limit before
    // authentication, the identity's after).
    void app.register(rateLimit, { global: false, store: counters.store(), skipOnError: true });
    app.addHook("onClose", async () => counters.close());
  }
  let byAddress: ReturnType<FastifyInstance["createRateLimit"]> | undefined;
  let byIdentity: ReturnType<FastifyInstance["createRateLimit"]> | undefined;
  // One counter per client address (the plugin's own key: IPv6 grouped by /64), one per identity:
  // a token's name, a JWT's subject, a policy consumer (policy/consumer).
  const addressKey = (req: FastifyRequest) => normalizeIP(req.ip);
  const identityKey = (req: FastifyRequest) => `id:${req.identity ? `${req.identity.via}:${req.identity.name}` : "none"}`;

  const guard = new Guard({
    tokens: deps.tokens,
    oidc: deps.oidc,
    adminTokenHash: deps.adminTokenHash,
    refusals,
    consumerTokenKnown: (hash) => deps.policies.consumerTokenHashes().has(hash),
    limitIdentity: limits
      ? async (req) => {
          byIdentity ??= app.createRateLimit({ keyGenerator: identityKey, max: limits.perIdentity ?? 600, timeWindow: windowMs });
          const r = await byIdentity(req);
          return !r.isAllowed && r.isExceeded ? Math.max(1, r.ttlInSeconds) : undefined;
        }
      : undefined,
  });
  app.decorate("guard", guard);
  app.decorateRequest("identity", null);
  app.decorateRequest("addressLimit", null);

  app.addHook("onResponse", async (req, reply) => {
    requests.inc({ route: routeOf(req), status: `${Math.floor(reply.statusCode / 100)}xx` });
  });

  // Without Redis a request would wait in the client's offline queue until it reconnects (a
  // consumer's confirmation, a leak request): refuse it at once, so the caller retries.
  app.addHook("onRequest", async (req, reply) => {
    if (!deps.redisReady || deps.redisReady() || OPEN.has(req.url.split("?")[0] ?? "")) return;
    return reply.code(503).header("retry-after", "5").send({ error: "rekey cannot reach its Redis right now; nothing was done; retry shortly" });
  });

  // Per client address, before any credential is checked. A request refused next without a look
  // at its credential is not counted: one with no credential at all (the guard's 401) or a write
  // to the read-only queue board (405). Its refusal touches no Redis, which is cheaper than the
  // counter's round trip, and a flood of them writes nothing. A submit link's credential is in its
  // path, so those are counted.
  app.addHook("onRequest", async (req, reply) => {
    if (!limits || OPEN.has(req.url.split("?")[0] ?? "")) return;
    if (req.headers.authorization === undefined && !req.url.startsWith("/submit/")) return;
    if (boardWrite(req)) return;
    // A credential that cannot authenticate (Guard.mayAuthenticate) is refused next whatever the
    // counter says, so the request is counted without waiting for Redis: a flood of forged tokens
    // costs no round trip, and still uses up the address's budget, so a right guess from an
    // address over its limit meets the 429 below.
    if (!req.url.startsWith("/submit/") && !guard.mayAuthenticate(bearerOf(req) ?? basicPasswordOf(req))) {
      counters?.defer(addressKey(req), windowMs);
      return;
    }
    const counted = countAddress(req);
    // A route that defers the count awaits it beside its own round trips (the confirmation).
    if (req.routeOptions.config?.deferAddressLimit) {
      req.addressLimit = counted;
      return;
    }
    const wait = await counted;
    if (wait !== undefined) return tooManyFromAddress(req, reply, wait);
  });
  /** Counts the request against its address's limit: the seconds to wait when it is over it. */
  const countAddress = async (req: FastifyRequest): Promise<number | undefined> => {
    byAddress ??= app.createRateLimit({ keyGenerator: addressKey, max: limits!.perAddress ?? 1_200, timeWindow: windowMs });
    // skipOnError: a counter Redis cannot keep limits nothing.
    const r = await byAddress(req).catch(() => undefined);
    return r && !r.isAllowed && r.isExceeded ? Math.max(1, r.ttlInSeconds) : undefined;
  };
  const tooManyFromAddress = (req: FastifyRequest, reply: FastifyReply, wait: number) => {
    refusals.note("rate-limited", routeOf(req), { ip: req.ip });
    return reply.code(429).header("retry-after", String(wait)).send({ error: `too many requests from this address; retry in ${wait} s` });
  };
  /** For a route that defers its address's count: answers its 429 when the address is over its limit. */
  const overAddressLimit = async (req: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    if (!req.addressLimit) return false;
    const wait = await req.addressLimit;
    if (wait === undefined || wait === null) return false;
    tooManyFromAddress(req, reply, wait);
    return true;
  };

  app.setErrorHandler(async (err: unknown, req, reply) => {
    // A route that defers its address's count answers its 429 before any refusal of what was sent
    // (a body that does not parse, one too large).
    if (await overAddressLimit(req, reply)) return reply;
    if (err instanceof RequestError) {
      refusals.note(err.status === 400 ? "bad-request" : err.status === 404 ? "not-found" : err.status === 409 || err.status === 422 ? "conflict" : err.status === 401 ? "unauthenticated" : "forbidden", routeOf(req), { ip: req.ip, identity: req.identity ? actorOf(req.identity) : undefined });
      return reply.code(err.status).send({ error: err.message });
    }
    const status = (err as { statusCode?: number }).statusCode;
    if (status && status >= 400 && status < 500) {
      refusals.note(status === 413 ? "too-large" : status === 404 ? "not-found" : status === 405 ? "method" : "bad-request", routeOf(req), { ip: req.ip });
      if (status === 413) closeUnread(req, reply);
      return reply.code(status).send({ error: errorMessage(err) });
    }
    // Retrying can help (the secret store is down): say so, with the reason, as a 503.
    if (err instanceof TransientError) return reply.code(503).header("retry-after", "30").send({ error: err.message });
    deps.log.error({ route: req.routeOptions.url, err: errorMessage(err) }, "api request failed");
    return reply.code(500).send({ error: err instanceof RekeyError ? err.message : "internal error (see the rekey api log)" });
  });
  app.setNotFoundHandler(async (req, reply) => {
    refusals.note("not-found", "unknown", { ip: req.ip });
    return reply.code(404).send({ error: `no route ${req.method} ${req.url.split("?")[0]!.slice(0, 200)}` });
  });

  const viewer = guard.requireScope("viewer");
  const operator = guard.requireScope("operator");

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
  app.get("/metrics", { onRequest: viewer }, async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));

  // A consumer proves itself with its own token: a named token of scope consumer for exactly this
  // policy and consumer, or the token whose sha256 the policy holds. Without a bearer that could
  // be either (Guard.mayAuthenticate: no named token's shape, no consumer token of any loaded
  // policy) the body is not even read.
  const consumerBearer = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!guard.mayAuthenticate(bearerOf(req))) return guard.refuse(req, reply, 401, "unauthenticated", UNAUTHENTICATED);
  };
  /** The consumer a request authenticates as, for the policy and consumer its body names. */
  const consumerIdentity = async (req: FastifyRequest, body: { policyId: string; consumerId: string }): Promise<Identity | undefined> => {
    const bearer = bearerOf(req)!;
    const named = await guard.identify(bearer);
    if (named) return hasScope(named, "consumer") && named.consumer?.policyId === body.policyId && named.consumer.consumerId === body.consumerId ? named : undefined;
    return deps.rotations.authenticateConsumer(body.policyId, body.consumerId, bearer)
      ? { name: `${body.policyId}/${body.consumerId}`, via: "policy-consumer-token", scopes: ["consumer"], consumer: { policyId: body.policyId, consumerId: body.consumerId } }
      : undefined;
  };
  // Each round trip a confirmation waits for lets the requests queued meanwhile go first, so its
  // reads share one: the address's count (deferred by the address hook, already under way while
  // the body is read), the identity's count and the rotation the confirmation is checked against
  // are awaited together, the last two sent in one write on the API's pipelined connection; then
  // the confirmation's one script. The address's 429 comes before any other answer, as where the
  // hook awaits it; the identity's count is taken even when the address is over its limit (it is
  // that identity's request all the same).
  app.post("/v1/confirmations", { bodyLimit: BODY_LIMITS.confirmation, onRequest: consumerBearer, config: { deferAddressLimit: true } }, async (req, reply) => {
    // A refusal thrown here reaches the error handler, which answers the address's 429 first.
    const body = parse(ConfirmBody, req.body);
    const identity = await consumerIdentity(req, body);
    if (!identity) {
      if (await overAddressLimit(req, reply)) return reply;
      confirmations.inc({ outcome: "refused" });
      return guard.refuse(req, reply, 401, "unauthenticated", UNAUTHENTICATED);
    }
    req.identity = identity;
    const [addressWait, identityWait, target] = await Promise.all([req.addressLimit, guard.identityLimit(req, identity), deps.rotations.confirmationTarget(body.policyId, body.versionId, confirmationReads)]);
    if (addressWait !== undefined && addressWait !== null) return tooManyFromAddress(req, reply, addressWait);
    if (identityWait !== undefined) return guard.tooMany(req, reply, identity, identityWait);
    try {
      const res = await deps.rotations.confirm({ ...body, consumer: identity.consumer, actor: actorOf(identity), target });
      confirmations.inc({ outcome: res.alreadyConfirmed ? "repeat" : "accepted" });
      return reply.code(200).send(res);
    } catch (err) {
      if (err instanceof RequestError) {
        confirmations.inc({ outcome: "refused" });
        // I1-style bound: an authenticated consumer's refusals reach the audit as one summary a minute.
        refusals.confirmationRefused(body.policyId);
      }
      throw err;
    }
  });

  app.post("/v1/consumer-failures", { bodyLimit: BODY_LIMITS.consumerFailure, onRequest: consumerBearer }, async (req, reply) => {
    const body = parse(FailureBody, req.body);
    const identity = await consumerIdentity(req, body);
    if (!identity) return guard.refuse(req, reply, 401, "unauthenticated", UNAUTHENTICATED);
    req.identity = identity;
    if (await guard.overLimit(req, reply, identity)) return reply;
    const res = await deps.rotations.reportFailure({ ...body, consumer: identity.consumer, actor: actorOf(identity) });
    consumerFailures.inc({ stage: body.stage });
    return reply.code(200).send(res);
  });

  app.post("/v1/rotations", { bodyLimit: BODY_LIMITS.rotate, onRequest: operator }, async (req, reply) => {
    const body = parse(RotateBody, req.body);
    const res = await deps.rotations.enqueue({ policyId: body.policyId, reason: "manual", actor: actorOf(req.identity!) });
    return reply.code(202).send(res);
  });

  // rekey cancel: before the rotation's point of no return only (src/rotation/cancel.ts). 200 once
  // it has ended (the worker cleaned up), 202 while the clean-up goes on, 409 past that point.
  app.post<{ Params: { id: string } }>("/v1/rotations/:id/cancel", { bodyLimit: BODY_LIMITS.cancel, onRequest: operator }, async (req, reply) => {
    const rotationId = parse(RotationId, req.params.id);
    const body = parse(CancelBody, req.body ?? {});
    const res = await deps.rotations.cancel({ rotationId, actor: actorOf(req.identity!), reason: body.reason, waitMs: CANCEL_WAIT_MS });
    return reply.code(res.outcome === "cancelled" ? 200 : 202).send(res);
  });

  // The human step: an operator, or a submitter for the policies of the owner it names.
  const submitter = guard.requireScope(["operator", "submitter"]);
  app.post<{ Params: { id: string } }>("/v1/rotations/:id/submit", { bodyLimit: BODY_LIMITS.submit, onRequest: submitter }, async (req, reply) => {
    const rotationId = parse(RotationId, req.params.id);
    const body = parse(SubmitBody, req.body);
    const identity = req.identity!;
    if (!hasScope(identity, "operator")) {
      const rec = await deps.state.records.get(rotationId);
      const owner = rec ? deps.policies.get(rec.policyId)?.owner : undefined;
      if (!owner || owner !== identity.owner) throw new RequestError(403, `${actorOf(identity)} submits for the policies of ${identity.owner ?? "no owner"} only, and rotation ${rotationId} is not one of theirs`);
    }
    const res = await deps.rotations.submit({ rotationId, value: body.value, actor: actorOf(identity) });
    return reply.code(200).send(res);
  });

  app.get("/v1/status", { onRequest: viewer }, async () => status());

  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>("/v1/policies/:id/history", { onRequest: viewer }, async (req) => {
    const policyId = parse(PolicyId, req.params.id);
    if (!deps.policies.get(policyId)) throw new RequestError(404, `unknown policy "${policyId}"`);
    const limit = Math.min(1_000, Math.max(1, Number(req.query.limit ?? 100) || 100));
    return deps.audit.history({ policyId, limit });
  });

  app.post("/v1/leaks", { bodyLimit: BODY_LIMITS.leak, onRequest: operator }, async (req, reply) => {
    if (!deps.extensions?.leak) throw new RequestError(404, "leak response is not enabled in this process");
    return reply.code(202).send(await deps.extensions.leak(req.body, actorOf(req.identity!)));
  });

  app.post("/v1/offboardings", { bodyLimit: BODY_LIMITS.offboard, onRequest: operator }, async (req, reply) => {
    if (!deps.extensions?.offboard) throw new RequestError(404, "offboarding is not enabled in this process");
    return reply.code(202).send(await deps.extensions.offboard(req.body, actorOf(req.identity!)));
  });

  registerDashboard(app, {
    guard,
    audit: deps.audit,
    policies: deps.policies,
    rotations: deps.rotations,
    status,
    leaks: deps.dashboard?.leaks,
    offboarding: deps.dashboard?.offboarding,
    log: deps.log,
  });

  if (deps.submitPage) {
    registerSubmitPage(app, { ...deps.submitPage, rotations: deps.rotations, policies: deps.policies, log: deps.log, refused: (reason, req) => refusals.note(reason, routeOf(req), { ip: req.ip }) });
  }

  if (deps.boardQueues?.length) mountBoard(app, deps.boardQueues, guard);

  return app;
}

/**
 * Bull Board: the queues in a browser, read-only. Browsers cannot send a bearer header, so the
 * board takes a viewer token as the HTTP Basic password. Job data holds ids and step cursors
 * only, so the board shows no secret.
 *
 * I2: editing a parked job's data or promoting it from the board could skip the wait for
 * consumers (the board does not know the protocol). Every intervention goes through rekey's own
 * commands and endpoints, which check scope and audit the actor; the board only reads. Bull
 * Board's `readOnlyMode` refuses its write routes, and anything but GET/HEAD is refused here
 * before the board sees it.
 */
const BOARD = "/admin/queues";

/** A request the read-only board refuses (405) whoever sends it. */
function boardWrite(req: FastifyRequest): boolean {
  return req.method !== "GET" && req.method !== "HEAD" && (req.url === BOARD || req.url.startsWith(`${BOARD}/`) || req.url.startsWith(`${BOARD}?`));
}

function mountBoard(app: FastifyInstance, queues: Queue[], guard: Guard): void {
  const basePath = BOARD;
  const adapter = new FastifyAdapter();
  adapter.setBasePath(basePath);
  createBullBoard({ queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: true, allowRetries: false })), serverAdapter: adapter });
  const viewer = guard.requireScope("viewer", { basic: true });
  void app.register(async (scope) => {
    scope.addHook("onRequest", async (req, reply) => {
      if (boardWrite(req)) {
        return reply.code(405).header("allow", "GET, HEAD").send({ error: "the queue board is read-only: use rekey's commands (rotate, cancel, leak, offboard, submit) to act on a rotation" });
      }
      return viewer.call(scope, req, reply);
    });
    await scope.register(adapter.registerPlugin(), { prefix: basePath });
  });
}
