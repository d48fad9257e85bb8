/**
 * DESIGN.md's invariants I1–I6, read off the world a simulation (rotation-sim.ts) leaves: the
 * store's versions and stages, every credential the provider ever made (and when and by whom it
 * died), the consumers' confirmations, and everything rekey wrote or said. Each check returns
 * the violations it found, in words; none looks at which calls the steps made or in what order.
 */
import { AWSCURRENT } from "../../src/stores/types.ts";
import { refOf } from "../../src/rotation/scope.ts";
import type { Sim, Tracked } from "./rotation-sim.ts";

function stored(sim: Sim, t: Tracked): Set<string> {
  return new Set(sim.store.versions(refOf(t.policy)).map((v) => v.value));
}

function cutover(t: Tracked): boolean {
  return t.policy.provider.kind === "qstash-token";
}

/**
 * The documented exception to I1, as the fault matrix's checker (bench/chaos/checker.ts) grants
 * it: a credential rekey cannot remove (a Snyk client secret whose value was lost: it cannot be
 * listed, only `replace` drops it) may live outside the store while a rotation of the policy is
 * needs-attention and says why — its message names the remedy, `rekey leak --policy <id>`.
 */
export function alerted(sim: Sim, policyId: string): boolean {
  return sim.tracked.some((x) => {
    const r = sim.state.db.records.get(x.rotationId);
    return x.policy.id === policyId && r?.status === "needs-attention" && (r.message ?? "").includes(`rekey leak --policy ${policyId}`);
  });
}

/**
 * I1: every live credential the rotation issued is in some version of the policy's secret. Asked
 * once the rotation ended or made its value current: between a reset and its store write (a
 * window a crash can hold open until the job is resumed) the value exists at the provider only.
 * Allowed only where alerted (above).
 */
export function checkI1(sim: Sim, t: Tracked): string[] {
  const rec = sim.state.db.records.get(t.rotationId);
  if (rec?.endedAt === undefined && rec?.promotedAt === undefined) return [];
  const values = stored(sim, t);
  const lost = sim.creds.live(t.policy.id).filter((c) => c.issuedBy === t.rotationId && !values.has(c.value));
  if (!lost.length || alerted(sim, t.policy.id)) return [];
  return lost.map((c) => `I1 ${t.policy.id}: live credential ${c.credentialId} (issued by ${c.issuedBy}) is in no version of the secret, with no rotation of the policy needing attention for it`);
}

/**
 * I2: the credential that was current when a rotation started dies only after every required
 * consumer confirmed that rotation — except for a leak, a cut-over (declared: the reset kills
 * it), or `onTimeout: revoke` once the timeout passed.
 */
export function checkI2(sim: Sim, t: Tracked): string[] {
  if (cutover(t) || !t.before?.value) return [];
  const old = sim.creds.byValue(t.before.value);
  if (old?.diedAt === undefined) return [];
  const rec = sim.state.db.records.get(t.rotationId);
  if (t.reason === "leak" || rec?.leak || old.killedBy !== t.rotationId) return [];
  const confirmed = sim.state.db.confirmations.get(t.rotationId) ?? new Map();
  const { timeout, onTimeout } = t.policy.confirmation;
  if (onTimeout === "revoke" && rec?.promotedAt !== undefined && old.diedAt >= rec.promotedAt + timeout) return [];
  const late = t.policy.consumers.filter((c) => c.required && !((confirmed.get(c.id)?.at ?? Infinity) <= (old.diedAt ?? 0)));
  return late.length ? [`I2 ${t.policy.id}: old credential ${old.credentialId} died at ${old.diedAt} before ${late.map((c) => c.id).join(", ")} confirmed rotation ${t.rotationId}`] : [];
}

const ACTS = /^(provider\.(issue|revoke|sweep|cleanupOrphans|replaceAll)|store\.(putPending|putCurrent|promote|discardPending))$/;

/**
 * I3: per policy, the spans in which rotations changed the world (first act to their end) never
 * overlap. The simulated clock does not move within a moment, so spans are ordered by the
 * sequence of the world's calls, and a span that starts at the very moment another one ended
 * (a leak rotation queued by the end of the one before it) overlaps only if the earlier rotation
 * acted again after the later one's first act.
 */
export function checkI3(sim: Sim): string[] {
  const out: string[] = [];
  const spans = new Map<string, { t: Tracked; first: number; last: number; from: number; to: number }[]>();
  for (const t of sim.tracked) {
    const acts = sim.world.calls.flatMap((c, i) => (c.rotationId === t.rotationId && ACTS.test(c.op) ? [{ c, i }] : []));
    if (!acts.length) continue;
    const ended = sim.state.db.records.get(t.rotationId)?.endedAt;
    const list = spans.get(t.policy.id) ?? [];
    list.push({ t, first: acts[0]!.i, last: acts.at(-1)!.i, from: acts[0]!.c.at, to: Math.max(ended ?? Infinity, acts.at(-1)!.c.at) });
    spans.set(t.policy.id, list);
  }
  for (const [policyId, list] of spans) {
    for (const a of list)
      for (const b of list) if (a !== b && a.first < b.first && (b.from < a.to || a.last > b.first)) out.push(`I3 ${policyId}: rotations ${a.t.rotationId} and ${b.t.rotationId} were in flight at once`);
  }
  return out;
}

/**
 * I4: a rotation leaves at most one live credential of its own; one that completed leaves exactly
 * one, and it is the current value.
 */
export function checkI4(sim: Sim, t: Tracked): string[] {
  const own = sim.creds.live(t.policy.id).filter((c) => c.issuedBy === t.rotationId);
  const out = own.length > 1 ? [`I4 ${t.policy.id}: rotation ${t.rotationId} left ${own.length} live credentials`] : [];
  if (sim.state.db.records.get(t.rotationId)?.status === "completed") {
    const current = sim.store.holder(refOf(t.policy), AWSCURRENT);
    if (own.length !== 1 || own[0]?.value !== current?.value) out.push(`I4 ${t.policy.id}: completed rotation ${t.rotationId} does not leave its one credential current`);
  }
  return out;
}

/** I5: no secret value in job data, rekey's state, the audit, notifications, logs or errors. */
export function checkI5(sim: Sim): string[] {
  const s = sim.state.db;
  const texts: [string, string][] = [
    ...sim.tracked.flatMap((t) => t.job.history.map((h): [string, string] => [`job ${t.job.id} data`, h])),
    ["records", JSON.stringify([...s.records.values()])],
    ["policy summaries", JSON.stringify([...s.policies.entries()])],
    ["fingerprint index", JSON.stringify([...s.fingerprints.entries()])],
    ["confirmations", JSON.stringify([...s.confirmations.entries()].map(([k, v]) => [k, [...v.values()]]))],
    ["gates and locks", JSON.stringify([...s.gates.entries(), ...s.locks.entries()])],
    ["audit", JSON.stringify(sim.audit.rows)],
    ["notifications", JSON.stringify(sim.events)],
    ["logs", sim.logs.join("\n")],
    ["errors", sim.errors.map((e) => (e instanceof Error ? `${e.name} ${e.message} ${e.stack ?? ""}` : String(e))).join("\n")],
  ];
  const out: string[] = [];
  for (const v of sim.world.secrets) for (const [where, text] of texts) if (text.includes(v)) out.push(`I5: a secret value appears in ${where}`);
  return out;
}

/**
 * I6: a rotation that ended without its value becoming current leaves the old credential
 * current and working, and no credential of its own alive (a cut-over whose reset already ran
 * is exempt: the old value died at the reset, by declaration). One whose value became current
 * undid nothing: whatever a rotation ended with, the current value works.
 */
export function checkI6(sim: Sim, t: Tracked): string[] {
  const rec = sim.state.db.records.get(t.rotationId);
  if (rec?.endedAt === undefined || rec.status === "skipped") return [];
  const current = sim.store.holder(refOf(t.policy), AWSCURRENT);
  // A leak's replace (Snyk) killed every credential by declaration, like a reset: one that could
  // not store its new value ends needs-attention saying the old one may be dead.
  const replaced = (t.job.data as { oldRevokedByReplace?: boolean }).oldRevokedByReplace === true && rec.status === "needs-attention";
  if (current && !replaced && sim.creds.byValue(current.value)?.diedAt !== undefined) return [`I6 ${t.policy.id}: rotation ${t.rotationId} ended ${rec.status} with a dead credential in the current version ${current.versionId}`];
  if (rec.status === "completed" || current?.versionId === t.rotationId) return [];
  const out: string[] = [];
  const issued = sim.creds.all.some((c) => c.issuedBy === t.rotationId);
  if ((cutover(t) && issued) || replaced) return [];
  if (current?.versionId !== t.before?.versionId) out.push(`I6 ${t.policy.id}: rotation ${t.rotationId} failed and version ${t.before?.versionId} is no longer current`);
  const old = t.before?.value === undefined ? undefined : sim.creds.byValue(t.before.value);
  if (old?.diedAt !== undefined) out.push(`I6 ${t.policy.id}: rotation ${t.rotationId} failed and the old credential no longer works`);
  const values = stored(sim, t);
  // One whose value is in no version is I1's concern (allowed while alerted), not undone here.
  for (const c of sim.creds.live(t.policy.id)) if (c.issuedBy === t.rotationId && (values.has(c.value) || !alerted(sim, t.policy.id))) out.push(`I6 ${t.policy.id}: rotation ${t.rotationId} failed and its new credential ${c.credentialId} is still live`);
  return out;
}


/**
 * Run the simulation and check it: I1, I4 and I6 for each rotation the moment it ends (later
 * rotations change the world), I1 again for every policy at the end, I2, I3 and I5 over the whole
 * history. Returns the violations, in words.
 */
export async function runChecked(sim: Sim, opts: { horizonMs?: number } = {}): Promise<string[]> {
  const found: string[] = [];
  await sim.run({ ...opts, afterBatch: (ended) => found.push(...ended.flatMap((t) => [...checkI1(sim, t), ...checkI4(sim, t), ...checkI6(sim, t)])) });
  found.push(...sim.tracked.flatMap((t) => [...checkI1(sim, t), ...checkI2(sim, t)]), ...checkI3(sim), ...checkI5(sim));
  return [...new Set(found)];
}
