/**
 * What happens to a refused request: a metric, a log line at most every few seconds per route
 * and reason, and — only for refused confirmations of an authenticated consumer — one aggregated
 * audit entry per policy per minute. Nothing here writes to Redis per request: a flood of
 * refusals cannot trim the audit stream or fill Redis.
 */
import type { Counter } from "prom-client";
import type { Audit } from "../audit/audit.ts";
import type { Logger } from "../log.ts";

export const REFUSAL_REASONS = ["unauthenticated", "forbidden", "rate-limited", "bad-request", "too-large", "not-found", "conflict", "method"] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface RefusalOptions {
  counter: Counter<"route" | "reason">;
  log: Logger;
  audit: Pick<Audit, "record">;
  now?: () => number;
  /** How often refused confirmations are summed into the audit, in ms. Default 60 s. */
  auditWindowMs?: number;
  /** At most one log line per route and reason this often, in ms. Default 10 s. */
  logEveryMs?: number;
}

/** Control characters and anything past 200 characters removed: safe for a log line. */
export function sanitize(s: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export class Refusals {
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();
  private readonly confirmations = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(private readonly opts: RefusalOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Counts and (rate-limited) logs a refusal. `route` is the route's template, never the raw URL. */
  note(reason: RefusalReason, route: string, ctx: { ip: string; identity?: string; detail?: string }): void {
    this.opts.counter.inc({ route, reason });
    const key = `${route} ${reason}`;
    const now = this.now();
    const last = this.lastLogged.get(key);
    if (last && now - last.at < (this.opts.logEveryMs ?? 10_000)) {
      last.suppressed++;
      return;
    }
    this.lastLogged.set(key, { at: now, suppressed: 0 });
    this.opts.log.warn(
      { route, reason, ip: sanitize(ctx.ip, 64), identity: ctx.identity ? sanitize(ctx.identity, 140) : undefined, detail: ctx.detail ? sanitize(ctx.detail) : undefined, suppressedSinceLastLine: last?.suppressed ?? 0 },
      "api request refused",
    );
  }

  /** An authenticated consumer's confirmation was refused: summed into the audit once a window. */
  confirmationRefused(policyId: string): void {
    this.confirmations.set(policyId, (this.confirmations.get(policyId) ?? 0) + 1);
    if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.opts.auditWindowMs ?? 60_000);
      this.timer.unref();
    }
  }

  /** Writes one entry per policy with refused confirmations since the last flush. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const counts = [...this.confirmations];
    this.confirmations.clear();
    const window = this.opts.auditWindowMs ?? 60_000;
    const span = window === 60_000 ? "minute" : window % 60_000 === 0 ? `${window / 60_000} minutes` : `${+(window / 1000).toFixed(1)} s`;
    await Promise.all(
      counts.map(([policyId, n]) =>
        this.opts.audit
          .record({ policyId, step: "confirmation", outcome: "refused", actor: "api", message: `${n} refused confirmation${n === 1 ? "" : "s"} for ${policyId} in the last ${span}` })
          .catch((err: unknown) => this.opts.log.warn({ err: String(err) }, "could not write the refused-confirmation summary")),
      ),
    );
  }

  async close(): Promise<void> {
    await this.flush();
  }
}
