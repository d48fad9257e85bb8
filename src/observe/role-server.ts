/**
 * The health server of a long-running role (worker, scheduler, api, or all in `rekey run`), on
 * its own port when REKEY_HEALTH_PORT is set:
 *
 * - `GET /healthz`: liveness. 200 while the process serves HTTP at all; it needs nothing else, so
 *   an unreachable Redis never gets a pod restarted (the role reconnects by itself).
 * - `GET /readyz`: readiness. 200 when every check passes (Redis answers PING, the secret store
 *   answers a metadata read), else 503 naming each failed check. Never a secret: checks report
 *   error names and addresses only.
 * - `GET /metrics`: the Prometheus registry the role passes in.
 *
 * fastify for the request lifecycle and clean close; the routes are three.
 */
import Fastify from "fastify";
import type { Registry } from "prom-client";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { withTimeout } from "../util/timeout.ts";

export interface ReadinessCheck {
  /** Key in the /readyz body, e.g. `redis`, `secretStore`. */
  name: string;
  /**
   * Resolves when the dependency answers (optionally with a note, e.g. what was checked); rejects
   * with what is wrong. `signal` aborts when the check's budget is spent.
   */
  run(signal: AbortSignal): Promise<string | void>;
}

export type CheckResult = { ok: true; note?: string } | { ok: false; error: string };

export interface Readiness {
  ok: boolean;
  checks: Record<string, CheckResult>;
}

/** Budget of one readiness check (ms): below the probe timeouts in deploy/ and docker-compose.yml. */
export const READINESS_CHECK_MS = 3_000;

/** Runs every check side by side, each within `timeoutMs`. */
export async function runReadiness(checks: readonly ReadinessCheck[], timeoutMs = READINESS_CHECK_MS): Promise<Readiness> {
  const results = await Promise.all(
    checks.map(async (c): Promise<[string, CheckResult]> => {
      const budget = new AbortController();
      try {
        const note = await withTimeout(c.run(budget.signal), timeoutMs, `no answer within ${timeoutMs} ms`);
        return [c.name, note ? { ok: true, note } : { ok: true }];
      } catch (err) {
        return [c.name, { ok: false, error: errorMessage(err) }];
      } finally {
        budget.abort();
      }
    }),
  );
  return { ok: results.every(([, r]) => r.ok), checks: Object.fromEntries(results) };
}

export interface RoleServerOptions {
  /** The role(s) this process runs, reported in /healthz: `worker`, `scheduler`, `scheduler+worker+api`. */
  role: string;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Served at /metrics. */
  registry: Registry;
  checks: readonly ReadinessCheck[];
  log: Logger;
  /** Budget of one readiness check in ms. Default READINESS_CHECK_MS. */
  checkTimeoutMs?: number;
}

export interface RoleServer {
  /** `http://host:port` */
  url: string;
  stop(): Promise<void>;
}

export async function startRoleServer(opts: RoleServerOptions): Promise<RoleServer> {
  const app = Fastify({ logger: false });
  app.get("/healthz", async () => ({ ok: true, role: opts.role }));
  app.get("/readyz", async (_req, reply) => {
    const readiness = await runReadiness(opts.checks, opts.checkTimeoutMs);
    return reply.code(readiness.ok ? 200 : 503).send({ role: opts.role, ...readiness });
  });
  app.get("/metrics", async (_req, reply) => reply.type(opts.registry.contentType).send(await opts.registry.metrics()));
  app.setNotFoundHandler(async (req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split("?")[0]}` }));
  const url = await app.listen({ host: opts.host, port: opts.port });
  opts.log.info({ address: url, role: opts.role }, "health server listening (/healthz, /readyz, /metrics)");
  return { url, stop: () => app.close() };
}
