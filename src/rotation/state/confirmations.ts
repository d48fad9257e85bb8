/**
 * What consumers report on a rotation: confirmations (push, probe, usage), when probe consumers
 * were last polled, and failure reports. Confirmations are the only thing that lets the old
 * credential be revoked (I2).
 */
import type { RedisClient } from "../../redis-connection.ts";
import type { RedisKeys } from "../keys.ts";
import { execOrThrow } from "../../util/redis-exec.ts";
import { parseRecord, type RotationRecord } from "./records.ts";

export interface Confirmation {
  consumerId: string;
  at: number;
  via: "push" | "probe" | "usage";
  versionId?: string;
}

/** A consumer's report that it could not take a rotation's new version (POST /v1/consumer-failures). */
export interface ConsumerFailure {
  consumerId: string;
  /** fetch, write, reload, health, handler or confirm. */
  stage: string;
  /** What the consumer said (control characters removed, at most 500 characters). */
  message: string;
  at: number;
  versionId?: string;
}

/** How long a rotation's consumer-failure reports are kept (its record is kept as long or less). */
const FAILURES_TTL_SEC = 30 * 86_400;

function parseConfirmations(h: Record<string, string>): Map<string, Confirmation> {
  return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as Confirmation]));
}

export class ConsumerReports {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  async confirm(rotationId: string, c: Confirmation): Promise<boolean> {
    const added = await this.redis.hsetnx(this.keys.confirmations(rotationId), c.consumerId, JSON.stringify(c));
    return added === 1;
  }

  /** confirm(), and every confirmation the rotation now holds, in one round trip. */
  async confirmAndList(rotationId: string, c: Confirmation): Promise<{ added: boolean; confirmed: Map<string, Confirmation> }> {
    const k = this.keys.confirmations(rotationId);
    const [added, h] = (await execOrThrow(this.redis.multi().hsetnx(k, c.consumerId, JSON.stringify(c)).hgetall(k))) as [number, Record<string, string>];
    return { added: added === 1, confirmed: parseConfirmations(h) };
  }

  async confirmations(rotationId: string): Promise<Map<string, Confirmation>> {
    return parseConfirmations(await this.redis.hgetall(this.keys.confirmations(rotationId)));
  }

  /**
   * What a rotation waiting for confirmations reads, in one round trip: its record and its
   * confirmations. The wake flag is cleared first, so a confirmation that lands after these reads
   * sets it again and wakes the job when it parks (parkJob).
   */
  async confirmationState(rotationId: string): Promise<{ rec: RotationRecord | undefined; confirmed: Map<string, Confirmation> }> {
    const [, h, c] = (await execOrThrow(
      this.redis.pipeline().del(this.keys.wake(rotationId)).hgetall(this.keys.rotation(rotationId)).hgetall(this.keys.confirmations(rotationId)),
    )) as [number, Record<string, string>, Record<string, string>];
    return { rec: parseRecord(h), confirmed: parseConfirmations(c) };
  }

  /** When rekey last polled these probe consumers of a rotation (reports show it); kept as long as records. */
  async markProbed(rotationId: string, consumerIds: string[], at: number, ttlSec: number): Promise<void> {
    if (!consumerIds.length) return;
    const k = this.keys.probed(rotationId);
    await execOrThrow(this.redis.multi().hset(k, Object.fromEntries(consumerIds.map((c) => [c, String(at)]))).expire(k, ttlSec));
  }

  /** Probe consumer id → when it was last polled (epoch ms). */
  async probedAt(rotationId: string): Promise<Map<string, number>> {
    const h = await this.redis.hgetall(this.keys.probed(rotationId));
    return new Map(Object.entries(h).map(([c, at]) => [c, Number(at)]));
  }

  /** Keep a consumer's latest failure report for a rotation (one per consumer; a later one replaces it). */
  async recordFailure(rotationId: string, f: ConsumerFailure): Promise<void> {
    const k = this.keys.consumerFailures(rotationId);
    await execOrThrow(this.redis.multi().hset(k, f.consumerId, JSON.stringify(f)).expire(k, FAILURES_TTL_SEC));
  }

  async failures(rotationId: string): Promise<Map<string, ConsumerFailure>> {
    const h = await this.redis.hgetall(this.keys.consumerFailures(rotationId));
    return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as ConsumerFailure]));
  }
}
