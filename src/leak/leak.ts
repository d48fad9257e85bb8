/**
 * Leak response: an operator names what leaked — policies, every policy of a provider kind, every
 * policy of an owner, or the leaked value itself — and rekey rotates each one as a leak: ahead of
 * scheduled work (BullMQ priority), old credential revoked as soon as the new one is promoted,
 * consumers told urgently (`rotation.leak`), their confirmations still tracked afterwards.
 *
 * One request is one incident with a deterministic job id per policy (`leak@<policy>@<incident>`),
 * so asking again for the same incident never queues a second rotation. A rotation already in
 * flight for a policy is taken over by the engine (the leak job merges into it), so no second new
 * credential is issued. The leaked value is compared in memory and dropped: only its keyed
 * fingerprint is ever looked up, nothing about it is stored, logged or audited.
 */
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import type { Audit } from "../audit/audit.ts";
import { fingerprint } from "../consumers/fingerprint.ts";
import { errorMessage, TransientError } from "../errors.ts";
import { PROVIDER_KINDS, type Policy } from "../policy/schema.ts";
import { engineDefaults } from "../rotation/defaults.ts";
import { providerScope, refOf } from "../rotation/scope.ts";
import { leakJobId } from "../rotation/job-ids.ts";
import { RequestError, type Rotations } from "../rotation/requests.ts";
import type { RekeyState } from "../rotation/state.ts";
import { leakHandOffDue, type RotationRecord } from "../rotation/state/records.ts";
import type { Runtime } from "../runtime.ts";
import type { SecretStore } from "../stores/types.ts";

export const LeakRequest = z
  .strictObject({
    policies: z.array(z.string().min(1).max(128)).max(10_000).optional(),
    provider: z.enum(PROVIDER_KINDS).optional(),
    owner: z.email().optional(),
    /** The leaked value: compared in memory, never kept. */
    value: z.string().min(1).max(65_536).optional(),
    /** Report on an existing incident (no targets), or name a new one (a retried request converges). */
    incident: z.uuid().optional(),
  })
  .refine((r) => r.incident || r.policies?.length || r.provider || r.owner || r.value, {
    message: "name what leaked: policies, provider, owner or value (or an incident to report on)",
  });
export type LeakRequest = z.infer<typeof LeakRequest>;

export interface LeakTarget {
  policyId: string;
  /** The leak job's rotation id. */
  rotationId: string;
  jobId: string;
  /** How the policy was found, e.g. `provider launchdarkly` or `value (fingerprint index)`. */
  matchedBy: string;
}

export interface Incident {
  incidentId: string;
  actor: string;
  createdAt: number;
  /** What was asked for, in words (never a value). */
  target: string;
  targets: LeakTarget[];
}

export type LeakState = "queued" | "running" | "awaiting-human" | "completed" | "failed" | "needs-attention";

export interface LeakTargetReport {
  policyId: string;
  provider: string;
  /** The rotation doing the work: the leak's own, or the in-flight one it took over. */
  rotationId: string;
  tookOver: boolean;
  state: LeakState;
  step?: string;
  /** The old credential is revoked (or died when the new one was issued). */
  oldRevoked: boolean;
  newVersionId?: string;
  message?: string;
  confirmed: string[];
  notConfirmed: string[];
  /**
   * Consumers that confirm by probe: rekey polls them until they confirm or the confirmation
   * timeout passes (after a leak's rotation ended too), and says when it last did.
   */
  probes: { consumerId: string; confirmed: boolean; lastPolledAt?: number }[];
}

export interface LeakReport {
  incidentId: string;
  actor: string;
  createdAt: number;
  target: string;
  total: number;
  completed: number;
  failed: number;
  awaitingHuman: number;
  inProgress: number;
  /** Nothing is queued or running any more (human steps may still wait). */
  settled: boolean;
  targets: LeakTargetReport[];
}

export interface LeakDeps {
  state: RekeyState;
  audit: Audit;
  rotations: Pick<Rotations, "enqueue">;
  policies: { all(): Policy[]; get(id: string): Policy | undefined };
  store: Pick<SecretStore, "getCurrent" | "getVersion">;
  fingerprintKey?: string;
  now(): number;
}

/**
 * A search for a leaked value that could not read every policy's values (the store is down or
 * refuses): the value may be one of those policies', so the answer is "could not check", never
 * "not ours". Transient: asking again once the store answers finishes the search.
 */
export class LeakSearchIncompleteError extends TransientError {
  override name = "LeakSearchIncompleteError";
  constructor(
    /** The policies whose values could not be read, with why. */
    readonly unchecked: { policyId: string; why: string }[],
    readonly total: number,
  ) {
    const sorted = [...unchecked].sort((a, b) => (a.policyId < b.policyId ? -1 : 1));
    const ids = sorted.slice(0, 5).map((u) => u.policyId).join(", ") + (sorted.length > 5 ? `, … (${sorted.length - 5} more)` : "");
    super(
      `could not check ${unchecked.length} of ${total} polic${total === 1 ? "y" : "ies"}: ${sorted[0]?.why ?? "unknown"}${sorted.length > 1 ? ` (and ${sorted.length - 1} more)` : ""}` +
        ` — the leaked value may belong to one of them (${ids}); nothing was rotated: retry when the secret store answers, or name the policy with --policy`,
    );
  }
}

/**
 * `items` reordered so each scope's items are spread evenly over the whole sequence: the k-th of a
 * scope's n items sits at (k + ½) / n of the way, the scopes with more items first on a tie. A
 * queue worked in this order keeps every scope (a provider's rate-limited key) busy at the share of
 * the work it holds from start to end, instead of working one key after another. Stable within a
 * scope; the result does not depend on the order the items came in across scopes.
 */
export function spreadByScope<T>(items: readonly T[], scopeOf: (item: T) => string): T[] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const scope = scopeOf(item);
    const g = groups.get(scope);
    if (g) g.push(item);
    else groups.set(scope, [item]);
  }
  const placed: { item: T; at: number; n: number; scope: string; k: number }[] = [];
  for (const [scope, g] of groups) g.forEach((item, k) => placed.push({ item, at: (k + 0.5) / g.length, n: g.length, scope, k }));
  placed.sort((a, b) => a.at - b.at || b.n - a.n || (a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : 0) || a.k - b.k);
  return placed.map((p) => p.item);
}

/** Reads of the store in parallel while looking for a leaked value among current values. */
const SCAN_PARALLELISM = 16;

export class LeakResponse {
  constructor(private readonly deps: LeakDeps) {}

  /** The API and CLI entry: a new incident (or the same one again), or a report on one. */
  async handle(body: unknown, actor: string): Promise<{ incident: Incident; report: LeakReport }> {
    const parsed = LeakRequest.safeParse(body);
    if (!parsed.success) {
      // zod echoes no input here, but the path and message only: a value never reaches a message.
      throw new RequestError(400, parsed.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`).join("; "));
    }
    const req = parsed.data;
    const hasTargets = Boolean(req.policies?.length || req.provider || req.owner || req.value);
    if (req.incident && !hasTargets) {
      const incident = await this.incident(req.incident);
      if (!incident) throw new RequestError(404, `unknown leak incident ${req.incident}`);
      return { incident, report: await this.report(incident) };
    }
    const incident = await this.start(req, actor);
    return { incident, report: await this.report(incident) };
  }

  /** Find the policies, queue a leak rotation for each, record the incident and audit it. */
  async start(req: LeakRequest, actor: string): Promise<Incident> {
    const incidentId = req.incident ?? randomUUID();
    const existing = await this.incident(incidentId);
    // Queued in an order that spreads each rate-limit scope over the whole incident (spreadByScope):
    // the policies of one provider key do not queue behind each other, waiting on that key's
    // budget in worker slots while the store's write quota, which ends every rotation, idles.
    const found = spreadByScope(await this.resolveTargets(req), (t) => {
      const p = this.deps.policies.get(t.policyId);
      return p ? providerScope(p.provider) : "";
    });
    const words = describe(req);
    const targets: LeakTarget[] = existing ? [...existing.targets] : [];
    for (const { policyId, matchedBy, versionId } of found) {
      if (targets.some((t) => t.policyId === policyId)) continue;
      const res = await this.deps.rotations.enqueue({ policyId, reason: "leak", actor, jobId: leakJobId(policyId, incidentId), leakedVersionId: versionId });
      targets.push({ policyId, rotationId: res.rotationId, jobId: res.jobId, matchedBy });
      if (res.added) {
        await this.deps.audit.record({ rotationId: res.rotationId, policyId, step: "leak.target", outcome: "ok", actor, message: `incident ${incidentId}: ${matchedBy}` });
      }
    }
    const incident: Incident = { incidentId, actor: existing?.actor ?? actor, createdAt: existing?.createdAt ?? this.deps.now(), target: existing ? `${existing.target}; ${words}` : words, targets };
    await this.deps.state.incidents.put(incident, this.deps.now(), engineDefaults.recordTtlSec);
    await this.deps.audit.record({ step: "leak.incident", outcome: "ok", actor, message: `incident ${incidentId}: ${words}: ${found.length} polic${found.length === 1 ? "y" : "ies"} (${found.map((f) => f.policyId).join(", ")})` });
    return incident;
  }

  /** The most recent incidents, newest first (the dashboard). */
  async recent(limit = 20): Promise<Incident[]> {
    const ids = await this.deps.state.incidents.recentIds(limit);
    const found = await Promise.all(ids.map((id) => this.incident(id)));
    return found.filter((i): i is Incident => i !== undefined);
  }

  async incident(incidentId: string): Promise<Incident | undefined> {
    return this.deps.state.incidents.get<Incident>(incidentId);
  }

  /**
   * The policies a request names. `versionId`: the store version holding the leaked value, where a
   * value was given (a rotation in flight then knows whether its new value is the leaked one).
   */
  async resolveTargets(req: LeakRequest): Promise<{ policyId: string; matchedBy: string; versionId?: string }[]> {
    const all = this.deps.policies.all();
    const out = new Map<string, string>();
    for (const id of req.policies ?? []) {
      if (!this.deps.policies.get(id)) throw new RequestError(404, `unknown policy "${id}"`);
      out.set(id, "named policy");
    }
    if (req.provider) {
      const hits = all.filter((p) => p.provider.kind === req.provider);
      if (!hits.length) throw new RequestError(404, `no loaded policy uses provider ${req.provider}`);
      for (const p of hits) if (!out.has(p.id)) out.set(p.id, `provider ${req.provider}`);
    }
    if (req.owner) {
      const owner = req.owner.toLowerCase();
      const hits = all.filter((p) => p.owner.toLowerCase() === owner);
      if (!hits.length) throw new RequestError(404, `no loaded policy is owned by ${req.owner}`);
      for (const p of hits) if (!out.has(p.id)) out.set(p.id, `owner ${req.owner}`);
    }
    let hit: { policyId: string; matchedBy: string; versionId: string } | undefined;
    if (req.value) {
      hit = await this.matchValue(req.value);
      if (!out.has(hit.policyId)) out.set(hit.policyId, hit.matchedBy);
    }
    return [...out].map(([policyId, matchedBy]) => ({ policyId, matchedBy, versionId: hit?.policyId === policyId ? hit.versionId : undefined }));
  }

  /**
   * Which policy holds this value: first the fingerprint index (every value rekey stored), then
   * the current value of every policy and the old value of every rotation in flight (credentials
   * rekey has not rotated yet). Compared as hashes in constant time; the value is not kept.
   */
  async matchValue(value: string): Promise<{ policyId: string; matchedBy: string; versionId: string }> {
    const v = value.trim();
    const { state, policies, store, fingerprintKey } = this.deps;
    if (fingerprintKey) {
      const hit = await state.fingerprints.lookup(fingerprint(fingerprintKey, v));
      if (hit && policies.get(hit.policyId)) return { policyId: hit.policyId, matchedBy: `value (fingerprint index: version ${hit.versionId})`, versionId: hit.versionId };
    }
    const want = digest(v);
    const all = policies.all();
    let found: { policyId: string; matchedBy: string; versionId: string } | undefined;
    // A policy whose values could not be read may hold the leaked value: "not ours" is only said
    // when every policy was checked (a store outage in an incident must not send people away).
    const unchecked: { policyId: string; why: string }[] = [];
    for (let i = 0; i < all.length && !found; i += SCAN_PARALLELISM) {
      const batch = all.slice(i, i + SCAN_PARALLELISM);
      const results = await Promise.all(
        batch.map(async (p) => {
          const ref = refOf(p);
          try {
            const cur = await store.getCurrent(ref);
            if (cur && sameDigest(digest(cur.value), want)) return { policyId: p.id, matchedBy: `value (current version ${cur.versionId})`, versionId: cur.versionId };
            const holder = await state.locks.inFlight(p.id);
            const rec = holder ? await state.records.get(holder) : undefined;
            if (rec?.oldVersionId) {
              const old = await store.getVersion(ref, rec.oldVersionId);
              if (old && sameDigest(digest(old.value), want)) return { policyId: p.id, matchedBy: `value (version ${old.versionId}, being replaced by rotation ${rec.rotationId})`, versionId: old.versionId };
            }
          } catch (err) {
            unchecked.push({ policyId: p.id, why: errorMessage(err) });
          }
          return undefined;
        }),
      );
      found = results.find((r) => r !== undefined);
    }
    if (!found && unchecked.length) throw new LeakSearchIncompleteError(unchecked, all.length);
    if (!found) {
      throw new RequestError(404, `the leaked value matches no credential rekey manages (checked the fingerprint index${fingerprintKey ? "" : " — not configured: REKEY_FINGERPRINT_KEY is unset"} and the current value of ${all.length} policies); rotate it by hand at its provider`);
    }
    return found;
  }

  async report(incident: Incident): Promise<LeakReport> {
    const targets = await Promise.all(incident.targets.map((t) => this.targetReport(t)));
    const count = (s: LeakState) => targets.filter((t) => t.state === s).length;
    const inProgress = count("queued") + count("running");
    return {
      incidentId: incident.incidentId,
      actor: incident.actor,
      createdAt: incident.createdAt,
      target: incident.target,
      total: targets.length,
      completed: count("completed"),
      failed: count("failed") + count("needs-attention"),
      awaitingHuman: count("awaiting-human"),
      inProgress,
      settled: inProgress === 0,
      targets,
    };
  }

  private async targetReport(t: LeakTarget): Promise<LeakTargetReport> {
    const { state } = this.deps;
    const policy = this.deps.policies.get(t.policyId);
    // Follow the work: a leak job that joined a rotation in flight reports that rotation; one
    // that ended before promotion handed the leak to a rotation queued in its place (leakRetry),
    // which may in turn have joined another. Bounded: each hop is a rotation that really ran.
    let rotationId = t.rotationId;
    let rec: RotationRecord | undefined = await state.records.get(rotationId);
    let tookOver = false;
    for (let hops = 0; rec && hops < 10; hops++) {
      const next = rec.mergedInto ?? rec.leakRetry;
      if (!next) break;
      // Took over: the rotation doing the work was already in flight (not one queued for the leak).
      tookOver = Boolean(rec.mergedInto);
      rotationId = next;
      rec = await state.records.get(next);
    }
    const [confirmations, probedAt] = await Promise.all([state.consumers.confirmations(rotationId), state.consumers.probedAt(rotationId)]);
    const required = (policy?.consumers ?? []).filter((c) => c.required).map((c) => c.id);
    // Ended, but a leak rotation is still owed (between the end and its queueing): not done yet.
    const leakState = rec && leakHandOffDue(rec) ? "queued" : stateOf(rec);
    return {
      policyId: t.policyId,
      provider: policy?.provider.kind ?? "(policy no longer loaded)",
      rotationId,
      tookOver,
      state: leakState,
      step: rec?.step,
      oldRevoked: leakState === "completed",
      newVersionId: rec?.promotedAt ? rotationId : undefined,
      message: rec?.message,
      confirmed: [...confirmations.keys()],
      notConfirmed: required.filter((c) => !confirmations.has(c)),
      probes: (policy?.consumers ?? [])
        .filter((c) => c.confirm === "probe")
        .map((c) => ({ consumerId: c.id, confirmed: confirmations.has(c.id), lastPolledAt: probedAt.get(c.id) })),
    };
  }
}

function stateOf(rec: RotationRecord | undefined): LeakState {
  if (!rec) return "queued";
  switch (rec.status) {
    case "completed":
      return "completed";
    case "failed":
    case "skipped":
      return "failed";
    case "needs-attention":
      return "needs-attention";
    case "awaiting-human":
      return "awaiting-human";
    default:
      return "running";
  }
}

function describe(req: LeakRequest): string {
  const parts: string[] = [];
  if (req.policies?.length) parts.push(`policies ${req.policies.join(", ")}`);
  if (req.provider) parts.push(`provider ${req.provider}`);
  if (req.owner) parts.push(`owner ${req.owner}`);
  if (req.value) parts.push("a leaked value");
  return parts.join(" + ") || "(no new targets)";
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The leak responder of a runtime (API and CLI). */
export function leakResponseFor(rt: Pick<Runtime, "state" | "audit" | "rotations" | "policies" | "store" | "fingerprintKey">, now: () => number = Date.now): LeakResponse {
  return new LeakResponse({ state: rt.state, audit: rt.audit, rotations: rt.rotations, policies: rt.policies, store: rt.store, fingerprintKey: rt.fingerprintKey, now });
}
