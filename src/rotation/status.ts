/**
 * What `rekey status` and `GET /v1/status` show: per policy its last rotation and next due time,
 * and every rotation still in flight with the consumers it waits for.
 */
import type { Policy } from "../policy/schema.ts";
import type { RekeyState, RotationRecord } from "./state.ts";

export interface InFlight {
  rotationId: string;
  reason: string;
  status: string;
  step: string;
  startedAt: number;
  promotedAt?: number;
  message?: string;
  /** Required consumers that have not confirmed, with how each confirms. */
  waitingFor: { consumerId: string; confirm: string }[];
  confirmed: { consumerId: string; via: string; at: number }[];
  /** Failure reports of consumers still awaited (their latest each): why they have not confirmed. */
  consumerFailures: { consumerId: string; stage: string; message: string; at: number; versionId?: string }[];
}

export interface PolicyStatus {
  policyId: string;
  provider: string;
  owner: string;
  secretId: string;
  lastRotationId?: string;
  lastStatus?: string;
  lastCompletedAt?: number;
  nextDue?: number;
  inFlight?: InFlight;
}

export async function collectStatus(opts: {
  state: RekeyState;
  policies: Policy[];
  nextDue?: (policyId: string) => number | undefined;
}): Promise<PolicyStatus[]> {
  const active = new Map<string, RotationRecord>();
  for (const rec of await opts.state.activeRotations()) {
    if (rec.status !== "skipped") active.set(rec.policyId, rec);
  }
  const out: PolicyStatus[] = [];
  for (const p of opts.policies) {
    const summary = await opts.state.policySummary(p.id);
    const holder = await opts.state.inFlight(p.id);
    const rec = holder ? ((await opts.state.getRecord(holder)) ?? active.get(p.id)) : undefined;
    let inFlight: InFlight | undefined;
    if (rec && !["completed", "failed", "skipped"].includes(rec.status)) {
      const [confirmations, failures] = await Promise.all([opts.state.confirmations(rec.rotationId), opts.state.consumerFailures(rec.rotationId)]);
      inFlight = {
        rotationId: rec.rotationId,
        reason: rec.reason,
        status: rec.status,
        step: rec.step,
        startedAt: rec.startedAt,
        promotedAt: rec.promotedAt,
        message: rec.message,
        waitingFor: p.consumers.filter((c) => c.required && !confirmations.has(c.id)).map((c) => ({ consumerId: c.id, confirm: c.confirm })),
        confirmed: [...confirmations.values()].map((c) => ({ consumerId: c.consumerId, via: c.via, at: c.at })),
        consumerFailures: [...failures.values()].filter((f) => !confirmations.has(f.consumerId)).map((f) => ({ consumerId: f.consumerId, stage: f.stage, message: f.message, at: f.at, versionId: f.versionId })),
      };
    }
    out.push({
      policyId: p.id,
      provider: p.provider.kind,
      owner: p.owner,
      secretId: p.target.secretId,
      lastRotationId: summary.lastRotationId,
      lastStatus: summary.lastStatus,
      lastCompletedAt: summary.lastCompletedAt ? Number(summary.lastCompletedAt) : undefined,
      nextDue: opts.nextDue?.(p.id),
      inFlight,
    });
  }
  return out;
}
