/**
 * The invariant checker of the fault matrix. It reads the fakes' final state (which credentials
 * live, when each was deleted), the store (every version of every secret, in the emulator), and
 * Redis (rotation records, confirmations with their times, audit streams, job data), and counts
 * violations:
 * - I1  a live credential of a policy whose value is in no version of the policy's secret;
 * - I2  an old credential revoked before every required consumer confirmed (LaunchDarkly: the
 *       deletion time against the confirmation times; every overlap provider: the old credential
 *       checked alive by the consumer just before it confirmed);
 * - I3  two rotations of one policy in flight at once (from `start` in the audit to the end of
 *       the record);
 * - I4  a credential issued twice by one rotation, both left live;
 * - I5  a secret value in Redis (every key and value of every type), a log line or the audit;
 * - I6  a rotation that failed before promotion with the old credential no longer current or no
 *       longer working (checked by the driver the moment the failure shows).
 */
import { type RedisClient, scanKeys } from "../../src/redis-connection.ts";
import type { Runtime } from "../../src/runtime.ts";
import { REGION, type World } from "./world.ts";

export interface Tracked {
  rotationId: string;
  policyId: string;
  kind: string;
  /** A second request for a policy with a rotation in flight: must end skipped. */
  duplicate: boolean;
  enqueuedAt: number;
  status: string;
  step?: string;
  confirming?: boolean;
  confirmedAt?: number;
  /** The other of two requests made for the policy at once (one of them must be skipped). */
  partner?: Tracked;
  /** Ended (or parked needing attention, which is alerted): no longer watched. */
  closed?: boolean;
  /** Requested before Redis was wiped (wipe runs): its record is gone. */
  lost?: boolean;
  /** Queued again by reconcile after a wipe (its id is the version it made current). */
  recreated?: boolean;
  /** The API's last answer to its consumer's confirmation (status and the start of the body). */
  lastAnswer?: string;
  /** The version it revokes, where it is not the one the harness last saw completed (re-queued). */
  oldVersionId?: string;
}

export interface Violations {
  I1: string[];
  I2: string[];
  I3: string[];
  I4: string[];
  I5: string[];
  I6: string[];
}

export interface CheckInput {
  world: World;
  rt: Runtime;
  prefix: string;
  tracked: Tracked[];
  /** Worker and harness logs. */
  texts: string[];
  i2Early: string[];
  i6Broken: string[];
  notes: string[];
  /**
   * Wipe runs: by when every worker still running a job Redis forgot has lost its lock and
   * stopped (the wipe plus the lock duration). A forgotten rotation whose record ended nowhere
   * (it was wiped) counts as in flight until then.
   */
  forgottenUntil?: number;
}

export async function check(input: CheckInput): Promise<Violations> {
  const { world, rt, tracked } = input;
  const v: Violations = { I1: [], I2: [...input.i2Early], I3: [], I4: [], I5: [], I6: [...input.i6Broken] };

  // ---- I1 and I4: the providers' live credentials against the store -------------------------
  let live = 0;
  // A policy whose rotation ended needs-attention has sent an alert naming what is left (e.g. a
  // Snyk client secret whose create answer was lost: only `replace`, an outage, removes it). Such
  // a live credential outside the store is reported, but as alerted rather than silent.
  const alerted = new Set(tracked.filter((t) => t.status === "needs-attention").map((t) => t.policyId));
  for (const p of world.policies) {
    const secret = world.aws.inspect(p.secretId, REGION);
    const stored = new Set((secret?.versions ?? []).map((x) => x.value).filter((x): x is string => x !== undefined));
    for (const value of p.liveValues()) {
      live++;
      if (stored.has(value)) continue;
      const line = `${p.id}: a live credential (…${value.slice(-4)}) is in no version of ${p.secretId}`;
      if (alerted.has(p.id)) input.notes.push(`I1, alerted (a rotation of the policy needs attention and says why): ${line}`);
      else v.I1.push(line);
    }
    for (const [rotationId, n] of p.liveByRotation()) if (n > 1) v.I4.push(`${p.id}: rotation ${rotationId} left ${n} live credentials`);
  }
  const extra = live - world.policies.length;
  if (extra > 0) input.notes.push(`${extra} live credential(s) beyond one per policy (old ones kept alive by rotations that need attention, or leftovers)`);

  // ---- I2 (LaunchDarkly, exact): deletion time of each old token against the confirmations ---
  const ldByValue = new Map<string, { state: string; lastModified: number }>();
  for (const fake of world.ld) for (const t of fake.tokens()) ldByValue.set(t.value, t);
  const consumersOf = new Map(world.policies.map((p) => [p.id, p.consumers]));
  const secretOf = new Map(world.policies.map((p) => [p.id, p.secretId]));
  for (const t of tracked) {
    if (t.duplicate || t.kind !== "launchdarkly" || t.status !== "completed") continue;
    const rec = await rt.state.records.get(t.rotationId);
    if (!rec?.oldVersionId) continue;
    const old = world.aws.inspect(secretOf.get(t.policyId) ?? "", REGION)?.versions.find((x) => x.versionId === rec.oldVersionId)?.value;
    const token = old === undefined ? undefined : ldByValue.get(old);
    if (!token || token.state !== "deleted") continue;
    const confirmed = await rt.state.consumers.confirmations(t.rotationId);
    for (const c of consumersOf.get(t.policyId) ?? []) {
      const at = confirmed.get(c)?.at;
      if (at === undefined) v.I2.push(`${t.rotationId} (${t.policyId}): old token deleted, ${c} never confirmed`);
      else if (token.lastModified < at) v.I2.push(`${t.rotationId} (${t.policyId}): old token deleted ${at - token.lastModified} ms before ${c} confirmed`);
    }
  }

  // ---- I3: rotations of one policy in flight at the same time --------------------------------
  const byPolicy = new Map<string, Tracked[]>();
  for (const t of tracked) byPolicy.set(t.policyId, [...(byPolicy.get(t.policyId) ?? []), t]);
  for (const [policyId, list] of byPolicy) {
    const starts = await auditStarts(rt.redis, rt.state.keys.audit(policyId));
    const spans: { id: string; from: number; to: number }[] = [];
    const seen = new Set<string>();
    for (const t of list) {
      const from = starts.get(t.rotationId);
      // One span a rotation (after a wipe, reconcile queues a forgotten one again under its id).
      if (from === undefined || seen.has(t.rotationId)) continue;
      seen.add(t.rotationId);
      const rec = await rt.state.records.get(t.rotationId);
      const forgotten = t.lost && !t.recreated && rec?.endedAt === undefined ? input.forgottenUntil : undefined;
      spans.push({ id: t.rotationId, from, to: rec?.endedAt ?? forgotten ?? Number.POSITIVE_INFINITY });
    }
    spans.sort((a, b) => a.from - b.from);
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1];
      const cur = spans[i];
      if (prev && cur && cur.from < prev.to) v.I3.push(`${policyId}: ${cur.id} started while ${prev.id} was in flight`);
    }
    // Of two requests made while one was in flight, one must have been turned away — unless the
    // second one's job started only after the first had ended: rekey turns a request away while
    // another rotation holds the policy, not because it was made earlier (I3 is about rotations in
    // flight at once). A pair without both spans (a wipe took a record) still counts as both ran.
    const spanOf = new Map(spans.map((s) => [s.id, s]));
    const apart = (a: string, b: string) => {
      const x = spanOf.get(a);
      const y = spanOf.get(b);
      return x !== undefined && y !== undefined && (x.to <= y.from || y.to <= x.from);
    };
    for (const t of list) {
      if (!t.partner || t.status === "lost" || t.partner.status === "lost" || t.rotationId >= t.partner.rotationId || t.status === "skipped" || t.partner.status === "skipped") continue;
      if (!apart(t.rotationId, t.partner.rotationId)) v.I3.push(`${policyId}: ${t.rotationId} and ${t.partner.rotationId} both ran (${t.status}, ${t.partner.status})`);
    }
  }

  // ---- I5: no secret value in Redis, logs or audit ----------------------------------------------
  const secrets = new Set<string>([...world.managementSecrets, ...world.aws.allValues()]);
  for (const fake of world.ld) for (const t of fake.tokens()) secrets.add(t.value);
  for (const p of world.policies) for (const value of p.liveValues()) secrets.add(value);
  const dump = await dumpRedis(rt.redis, input.prefix);
  const places: [string, string][] = [["redis", dump], ...input.texts.map((text, i): [string, string] => [i === 0 ? "worker logs" : "harness logs", text])];
  for (const s of secrets) {
    if (s.length < 12) continue;
    for (const [where, text] of places) if (text.includes(s)) v.I5.push(`a secret value (…${s.slice(-4)}) appears in ${where}`);
  }
  return v;
}

/** First `start ok` audit entry of each rotation: when it held the policy. */
async function auditStarts(redis: RedisClient, key: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const rows = await redis.xrange(key, "-", "+");
  for (const [, flat] of rows) {
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
    if (f.step === "start" && f.outcome === "ok" && f.rotationId && !out.has(f.rotationId)) out.set(f.rotationId, Number(f.at));
  }
  return out;
}

/** Every key under the prefix and its value, whatever the type (BullMQ's keys included). */
export async function dumpRedis(redis: RedisClient, prefix: string): Promise<string> {
  const out: string[] = [];
  const all = await scanKeys(redis, `${prefix}*`);
  for (let at = 0; at < all.length; at += 1000) {
    const keys = all.slice(at, at + 1000);
    const types = await Promise.all(keys.map((k) => redis.type(k)));
    const values = await Promise.all(
      keys.map(async (k, i) => {
        switch (types[i]) {
          case "string":
            return (await redis.get(k)) ?? "";
          case "hash":
            return JSON.stringify(await redis.hgetall(k));
          case "list":
            return JSON.stringify(await redis.lrange(k, 0, -1));
          case "set":
            return JSON.stringify(await redis.smembers(k));
          case "zset":
            return JSON.stringify(await redis.zrange(k, 0, "-1", "WITHSCORES"));
          case "stream":
            return JSON.stringify(await redis.xrange(k, "-", "+"));
          default:
            return "";
        }
      }),
    );
    keys.forEach((k, i) => out.push(k, values[i] ?? ""));
  }
  return out.join("\n");
}
