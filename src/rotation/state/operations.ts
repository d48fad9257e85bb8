/**
 * Records of operators' requests that span policies: leak incidents and offboardings. Each
 * names the rotations it queued; the rotations' own records say how they went.
 */
import type { RedisClient } from "../../redis-connection.ts";
import type { RedisKeys } from "../keys.ts";

export class LeakIncidents {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Write an incident (kept `ttlSec`) and list it by `createdAt`; incidents older than the TTL leave the list. */
  async put(incident: { incidentId: string; createdAt: number }, now: number, ttlSec: number): Promise<void> {
    const index = this.keys.leakIncidents();
    await this.redis
      .multi()
      .set(this.keys.leakIncident(incident.incidentId), JSON.stringify(incident), "EX", ttlSec)
      // The dashboard lists incidents from this index; entries leave it when their record expires.
      .zadd(index, incident.createdAt, incident.incidentId)
      .zremrangebyscore(index, 0, now - ttlSec * 1_000)
      .exec();
  }

  async get<T>(incidentId: string): Promise<T | undefined> {
    const raw = await this.redis.get(this.keys.leakIncident(incidentId));
    return raw ? (JSON.parse(raw) as T) : undefined;
  }

  /** Ids of the most recent incidents, newest first. */
  async recentIds(limit: number): Promise<string[]> {
    return this.redis.zrevrange(this.keys.leakIncidents(), 0, limit - 1);
  }
}

export class OffboardRecords {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** The rotation an offboarding queued for one of the member's policies (replaces an earlier one). */
  async setEntry(member: string, policyId: string, entry: object): Promise<void> {
    await this.redis.hset(this.keys.offboard(member), policyId, JSON.stringify(entry));
  }

  /** The member's offboarding ran at `at` (the recent list's order). */
  async ran(member: string, at: number): Promise<void> {
    await this.redis.multi().hset(this.keys.offboard(member), "_member", member).zadd(this.keys.offboards(), at, member).exec();
  }

  /** Policy id → the entry setEntry wrote. */
  async entries<T>(member: string): Promise<Map<string, T>> {
    const h = await this.redis.hgetall(this.keys.offboard(member));
    const out = new Map<string, T>();
    for (const [k, v] of Object.entries(h)) if (!k.startsWith("_")) out.set(k, JSON.parse(v) as T);
    return out;
  }

  /** Members offboarded most recently, newest first, with when their offboarding last ran. */
  async recent(limit: number): Promise<{ member: string; lastRunAt: number }[]> {
    const flat = await this.redis.zrevrange(this.keys.offboards(), 0, limit - 1, "WITHSCORES");
    const out: { member: string; lastRunAt: number }[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) out.push({ member: flat[i]!, lastRunAt: Number(flat[i + 1]) });
    return out;
  }
}

export class ReconcileMarks {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Claim this period's pass for this replica (one replica per period); false when another has it. */
  async claimPass(now: number, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.keys.reconcilePass(), String(now), "PX", ttlMs, "NX")) === "OK";
  }

  /** What the last pass observed, whichever replica made it: policy id → JSON. */
  async seen(): Promise<Record<string, string>> {
    return this.redis.hgetall(this.keys.reconcileSeen());
  }

  /** Replace the last pass's observations with this pass's. */
  async replaceSeen(observations: Record<string, string>): Promise<void> {
    const k = this.keys.reconcileSeen();
    const m = this.redis.multi().del(k);
    if (Object.keys(observations).length) m.hset(k, observations);
    await m.exec();
  }
}
