/**
 * The dashboard (viewer scope) and its two actions (operator scope): rotate now, and report a
 * leak. Server-rendered HTML and one stylesheet (styles.ts), both served by rekey from its own code: nothing
 * is fetched from anywhere else, and the Content-Security-Policy forbids it (no script at all).
 * Each action is a GET that shows what will happen and a form, then a POST with the form token
 * (csrf.ts); the action is audited with the operator as actor by the code it calls. Access is the
 * API's guard (viewer scope to look, operator scope to act), as for every other route.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Audit } from "../../audit/audit.ts";
import type { Incident, LeakReport } from "../../leak/leak.ts";
import type { Logger } from "../../log.ts";
import type { OffboardReport } from "../../offboarding/offboarding.ts";
import type { Policy } from "../../policy/schema.ts";
import { RequestError, type Rotations } from "../../rotation/requests.ts";
import type { PolicyStatus } from "../../rotation/status.ts";
import { errorMessage } from "../../errors.ts";
import type { Guard } from "../../auth/guard.ts";
import { actorOf, hasScope } from "../../auth/identity.ts";
import { presentedCredential } from "./authorize.ts";
import { formToken, formTokenValid } from "./csrf.ts";
import type { Html } from "./html.ts";
import { DASHBOARD_CSS } from "./styles.ts";
import { BASE, confirmPage, errorPage, leakPage, offboardingPage, overviewPage, policyPage } from "./pages.ts";

export interface DashboardDeps {
  /** The API's guard: every page needs the viewer scope, every action the operator scope. */
  guard: Guard;
  audit: Pick<Audit, "history">;
  policies: { all(): Policy[]; get(id: string): Policy | undefined };
  rotations: Pick<Rotations, "enqueue">;
  /** The same status `GET /v1/status` and `rekey status --json` give. */
  status(): Promise<PolicyStatus[]>;
  leaks?: {
    recent(limit?: number): Promise<Incident[]>;
    report(incident: Incident): Promise<LeakReport>;
    incident(id: string): Promise<Incident | undefined>;
    handle(body: unknown, actor: string): Promise<{ incident: Incident; report: LeakReport }>;
  };
  offboarding?: {
    recent(limit?: number): Promise<{ member: string; lastRunAt: number }[]>;
    progress(member: string): Promise<OffboardReport>;
  };
  log: Logger;
  now?: () => number;
}


const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function registerDashboard(app: FastifyInstance, deps: DashboardDeps): void {
  const now = deps.now ?? Date.now;

  app.register(async (scope) => {
    // Forms post as application/x-www-form-urlencoded; parsed by the standard URLSearchParams.
    scope.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string", bodyLimit: 8_192 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    scope.addHook("onSend", async (_req, reply, payload) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
      return payload;
    });

    const send = (reply: FastifyReply, page: Html, status = 200) => reply.code(status).type("text/html; charset=utf-8").send(page.text);
    const fail = (reply: FastifyReply, status: number, message: string) => send(reply, errorPage({ now: now(), status, message }), status);

    // Access: the API's guard, before anything else runs (a refusal writes nothing to Redis).
    // Browsers send the token as the HTTP Basic password.
    const viewer = { onRequest: deps.guard.requireScope("viewer", { basic: true }) };
    const operator = { onRequest: deps.guard.requireScope("operator", { basic: true }) };
    const principal = (req: FastifyRequest) => ({ actor: actorOf(req.identity!), canOperate: hasScope(req.identity!, "operator"), credential: presentedCredential(req) ?? "" });

    /**
     * A POST from another site is refused before the form token is even read. Sec-Fetch-Site is
     * set by the browser and cannot be forged by a page; without it, Origin must name this host.
     */
    const sameOrigin = (req: FastifyRequest): boolean => {
      const site = req.headers["sec-fetch-site"];
      if (site !== undefined) return site === "same-origin" || site === "none";
      const origin = req.headers.origin;
      if (origin === undefined) return true;
      try {
        return new URL(origin).host === req.headers.host;
      } catch {
        return false;
      }
    };

    scope.get(`${BASE}/static/dashboard.css`, async (_req, reply) => reply.type("text/css; charset=utf-8").header("cache-control", "public, max-age=300").send(DASHBOARD_CSS));

    scope.get(BASE, viewer, async (_req, reply) => {
      const [status, incidents, members] = await Promise.all([deps.status(), deps.leaks?.recent(20) ?? [], deps.offboarding?.recent(20) ?? []]);
      const leaks = await Promise.all(incidents.map((i) => deps.leaks!.report(i)));
      const offboardings = await Promise.all(members.map(async (m) => ({ ...m, report: await deps.offboarding!.progress(m.member) })));
      return send(reply, overviewPage({ now: now(), status, leaks, offboardings }));
    });

    const policyOr404 = (id: string, reply: FastifyReply): Policy | undefined => {
      const p = deps.policies.get(id);
      if (!p) void fail(reply, 404, `unknown policy "${id}"`);
      return p;
    };
    const statusOf = async (id: string): Promise<PolicyStatus> => (await deps.status()).find((s) => s.policyId === id)!;

    scope.get<{ Params: { id: string }; Querystring: { queued?: string } }>(`${BASE}/policies/:id`, viewer, async (req, reply) => {
      const who = principal(req);
      const policy = policyOr404(req.params.id, reply);
      if (!policy) return reply;
      const [status, history] = await Promise.all([statusOf(policy.id), deps.audit.history({ policyId: policy.id, limit: 200 })]);
      const queued = req.query.queued && UUID.test(req.query.queued) ? req.query.queued : undefined;
      return send(reply, policyPage({ now: now(), policy, status, history, queued, canOperate: who.canOperate }));
    });

    for (const action of ["rotate", "leak"] as const) {
      scope.get<{ Params: { id: string } }>(`${BASE}/policies/:id/${action}`, operator, async (req, reply) => {
        const who = principal(req);
        const policy = policyOr404(req.params.id, reply);
        if (!policy) return reply;
        if (action === "leak" && !deps.leaks) return fail(reply, 404, "leak response is not enabled in this process");
        return send(reply, confirmPage({ now: now(), policy, action, formToken: formToken(who.credential, action, policy.id), status: await statusOf(policy.id) }));
      });

      scope.post<{ Params: { id: string }; Body: Record<string, string> | undefined }>(`${BASE}/policies/:id/${action}`, operator, async (req, reply) => {
        const who = principal(req);
        const policy = policyOr404(req.params.id, reply);
        if (!policy) return reply;
        const body = req.body && typeof req.body === "object" ? req.body : {};
        if (!sameOrigin(req) || !formTokenValid(who.credential, action, policy.id, body.formToken)) {
          deps.log.warn({ policyId: policy.id, action }, "dashboard action refused: cross-site request or missing form token");
          return fail(reply, 403, "this action must be confirmed on rekey's own confirmation page (missing or wrong form token)");
        }
        try {
          if (action === "rotate") {
            const res = await deps.rotations.enqueue({ policyId: policy.id, reason: "manual", actor: who.actor });
            return reply.redirect(`${BASE}/policies/${encodeURIComponent(policy.id)}?queued=${res.rotationId}`, 303);
          }
          if (body.confirm !== policy.id) {
            const page = confirmPage({ now: now(), policy, action, formToken: formToken(who.credential, action, policy.id), status: await statusOf(policy.id), error: "the policy id you typed does not match; nothing was done" });
            return send(reply, page, 422);
          }
          const res = await deps.leaks!.handle({ policies: [policy.id] }, who.actor);
          return reply.redirect(`${BASE}/leaks/${res.incident.incidentId}`, 303);
        } catch (err) {
          if (err instanceof RequestError) return fail(reply, err.status, err.message);
          deps.log.error({ policyId: policy.id, action, err: errorMessage(err) }, "dashboard action failed");
          return fail(reply, 500, "the action failed (see the rekey api log); check the policy's timeline before trying again");
        }
      });
    }

    scope.get<{ Params: { id: string } }>(`${BASE}/leaks/:id`, viewer, async (req, reply) => {
      if (!deps.leaks) return fail(reply, 404, "leak response is not enabled in this process");
      const incident = UUID.test(req.params.id) ? await deps.leaks.incident(req.params.id) : undefined;
      if (!incident) return fail(reply, 404, `unknown leak incident "${req.params.id}"`);
      return send(reply, leakPage({ now: now(), report: await deps.leaks.report(incident) }));
    });

    scope.get<{ Params: { member: string } }>(`${BASE}/offboardings/:member`, viewer, async (req, reply) => {
      if (!deps.offboarding) return fail(reply, 404, "offboarding is not enabled in this process");
      const known = (await deps.offboarding.recent(1_000)).some((m) => m.member === req.params.member.toLowerCase());
      if (!known) return fail(reply, 404, `no offboarding of "${req.params.member}" has run`);
      return send(reply, offboardingPage({ now: now(), report: await deps.offboarding.progress(req.params.member) }));
    });
  });
}
