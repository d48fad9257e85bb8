/**
 * rekey's Prometheus metrics, registered into a prom-client Registry that the process serves
 * (the API's /metrics, or the role server of a worker or scheduler process).
 *
 * Labels are bounded: `policy` (a policy id), `provider` (a provider kind), `step` (a rotation
 * step), `status` and `state` (fixed sets). Never a value, a rotation id or a consumer's token.
 * The step-duration histogram is labelled by provider and step only: one series per policy and
 * bucket would multiply the series count by the bucket count for no question an operator asks.
 *
 * Two kinds:
 * - what happened in this process (a worker's step durations and failures): counters and a
 *   histogram, summed across processes by Prometheus;
 * - what is true now (credential age, consumers pending, overlap, needs-attention, open leak
 *   incidents): gauges read from Redis when scraped, the same in every process that serves
 *   them — alert rules take `max by (policy)`.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Policy } from "../policy/schema.ts";
import { capabilitiesOf } from "../policy/capabilities.ts";
import type { Incident, LeakReport } from "../leak/leak.ts";
import { collectStatus, type PolicyStatus } from "../rotation/status.ts";
import type { RekeyState } from "../rotation/state.ts";
import { nextSlots } from "../scheduler/slots.ts";

/** What a worker reports as it runs rotation steps (the engine calls these). */
export interface RotationObserver {
  /** A step ran to its end (it may have parked the job to wait), in seconds; a step that threw is a failure instead. */
  stepDone(policyId: string, provider: string, step: string, seconds: number): void;
  /** A step failed with an error that is retried or ends the rotation (a rate limit is not one). */
  stepFailed(policyId: string, provider: string, step: string): void;
}

export function rotationMetrics(registry: Registry): RotationObserver {
  const failures = new Counter({
    name: "rekey_rotation_failures_total",
    help: "Rotation steps that failed (retried or ending the rotation); rate limits are waited out and not counted",
    labelNames: ["policy", "provider", "step"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "rekey_rotation_step_duration_seconds",
    help: "Time a worker spent running one rotation step (waits for consumers or humans are parked, not counted)",
    labelNames: ["provider", "step"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  return {
    stepDone: (policy, provider, step, seconds) => duration.observe({ provider, step }, seconds),
    stepFailed: (policy, provider, step) => failures.inc({ policy, provider, step }),
  };
}

export interface StateSources {
  state: RekeyState;
  policies: { all(): Policy[] };
  /** Next due times (the scheduler's, or read from its markers). */
  nextDue?: () => Promise<(policyId: string) => number | undefined>;
  /** Leak incidents, newest first, and whether each is settled. */
  openLeakIncidents?: () => Promise<number>;
  now?: () => number;
}

/**
 * The longest time a credential may be current under its schedule: the longest gap between two
 * of its next slots, plus the window in which a late slot still runs (default 1 h). Undefined
 * for a policy without a schedule.
 */
export function allowedAge(p: Policy, now: number): number | undefined {
  if (!p.schedule) return undefined;
  const slots = nextSlots(p.schedule, now, 6, p.id);
  let gap = 0;
  for (let i = 1; i < slots.length; i++) gap = Math.max(gap, slots[i]! - slots[i - 1]!);
  return gap ? gap + (p.schedule.window ?? 3_600_000) : undefined;
}

/** The gauges read from Redis at scrape time. */
export function stateMetrics(registry: Registry, src: StateSources): void {
  const now = src.now ?? Date.now;
  // prom-client collects every metric of a scrape at once: they share one status read.
  let pending: Promise<PolicyStatus[]> | undefined;
  const rows = (): Promise<PolicyStatus[]> => {
    pending ??= (async () => {
      const policies = src.policies.all();
      return collectStatus({ state: src.state, policies, nextDue: src.nextDue ? await src.nextDue() : undefined, now: now() });
    })().finally(() => {
      setImmediate(() => (pending = undefined));
    });
    return pending;
  };
  const policyOf = () => new Map(src.policies.all().map((p) => [p.id, p]));
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, rows: PolicyStatus[], policies: Map<string, Policy>, t: number) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        const r = await rows();
        this.reset();
        fill(this, r, policyOf(), now());
      },
    });

  gauge("rekey_credential_age_seconds", "Seconds since the current credential became current (its last promotion by rekey); absent until rekey rotated it", ["policy", "provider"], (g, rs, _p, t) => {
    for (const s of rs) if (s.currentSince) g.set({ policy: s.policyId, provider: s.provider }, (t - s.currentSince) / 1_000);
  });
  gauge("rekey_credential_max_age_seconds", "Oldest the credential may get under its schedule: the longest gap between slots plus the late-start window", ["policy", "provider"], (g, rs, ps, t) => {
    for (const s of rs) {
      const p = ps.get(s.policyId);
      const max = p ? allowedAge(p, t) : undefined;
      if (max) g.set({ policy: s.policyId, provider: s.provider }, max / 1_000);
    }
  });
  gauge("rekey_last_rotation_success_timestamp_seconds", "When the policy's last rotation completed (Unix seconds)", ["policy", "provider"], (g, rs) => {
    for (const s of rs) if (s.lastCompletedAt) g.set({ policy: s.policyId, provider: s.provider }, s.lastCompletedAt / 1_000);
  });
  gauge("rekey_next_due_timestamp_seconds", "When the policy's next scheduled rotation is due (Unix seconds; in the past while it is overdue)", ["policy"], (g, rs) => {
    for (const s of rs) if (s.nextDue) g.set({ policy: s.policyId }, s.nextDue / 1_000);
  });
  gauge("rekey_consumers_pending", "Required consumers that have not confirmed the new value of the rotation in flight", ["policy"], (g, rs) => {
    for (const s of rs) g.set({ policy: s.policyId }, s.inFlight?.waitingFor.length ?? 0);
  });
  gauge("rekey_overlap_seconds", "Seconds the old and the new credential have both been live (promoted, old not revoked yet); 0 without such a rotation", ["policy", "provider"], (g, rs, ps, t) => {
    for (const s of rs) {
      const p = ps.get(s.policyId);
      const both = s.inFlight?.promotedAt !== undefined && p !== undefined && capabilitiesOf(p.provider).oldSurvivesIssue;
      g.set({ policy: s.policyId, provider: s.provider }, both ? (t - s.inFlight!.promotedAt!) / 1_000 : 0);
    }
  });
  gauge("rekey_confirmation_timeout_seconds", "How long the policy waits for its consumers (confirmation.timeout): the overlap an operator expects at most", ["policy"], (g, rs, ps) => {
    for (const s of rs) {
      const p = ps.get(s.policyId);
      if (p) g.set({ policy: s.policyId }, p.confirmation.timeout / 1_000);
    }
  });
  gauge("rekey_rotation_needs_attention", "1 while the policy needs attention (its rotation in flight, or its last one, ended needing a person)", ["policy", "provider"], (g, rs) => {
    for (const s of rs) g.set({ policy: s.policyId, provider: s.provider }, s.remedy && (s.inFlight?.status ?? s.lastStatus) === "needs-attention" ? 1 : 0);
  });
  gauge("rekey_rotations_in_flight", "Rotations in flight, by status", ["status"], (g, rs) => {
    const counts = new Map<string, number>();
    for (const s of rs) if (s.inFlight) counts.set(s.inFlight.status, (counts.get(s.inFlight.status) ?? 0) + 1);
    for (const [status, n] of counts) g.set({ status }, n);
  });
  if (src.openLeakIncidents) {
    const open = src.openLeakIncidents;
    new Gauge({
      name: "rekey_leak_incidents_open",
      help: "Leak incidents of the last 30 days whose rotations have not all completed",
      registers: [registry],
      async collect() {
        this.set(await open());
      },
    });
  }
}

/** Leak incidents of the last 30 days whose rotations have not all completed. */
export async function openLeakIncidents(leaks: { recent(limit?: number): Promise<Incident[]>; report(i: Incident): Promise<LeakReport> }): Promise<number> {
  const reports = await Promise.all((await leaks.recent(1_000)).map((i) => leaks.report(i)));
  return reports.filter((r) => r.completed < r.total).length;
}
