/**
 * What consumers report on a rotation: confirmations (push, probe, usage), when probe consumers
 * were last polled, and failure reports. Confirmations are the only thing that lets the old
 * credential be revoked (I2).
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import type { RedisKeys } from "../keys.ts";
import { execOrThrow } from "../../util/redis-exec.ts";
import { parseRecord, type RotationRecord } from "./records.ts";
import { PUBLISH_WAKE_LUA, WAKE_CONFIRMED, WAKE_TTL_SEC } from "./signals.ts";

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

/**
 * A rotation id's shape (randomUUID). Only a version id of this shape names a record key to read
 * beside the in-flight lock: no other key under `rot:` has it.
 */
const ROTATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** How long a rotation's consumer-failure reports are kept (its record is kept as long or less). */
const FAILURES_TTL_SEC = 30 * 86_400;

function parseConfirmations(h: Record<string, string>): Map<string, Confirmation> {
  return new Map(Object.entries(h).map(([id, json]) => [id, JSON.parse(json) as Confirmation]));
}

// A push confirmation, in one round trip: the confirmation (only a consumer's first counts) and,
// when it is new, its audit entry in every stream given and the rotation's wake published as
// `confirmed:<consumerId>` (signals.ts WAKE_CONFIRMED, PUBLISH_WAKE_LUA: to the worker process
// lingering on it); where no worker heard it, the wake flag is raised for its job to find
// (WakeFlags.raise). Returns {added, listeners that heard the wake, every confirmation of the
// rotation}; {-1, 0, {}} and nothing written where the rotation's record is gone (Redis lost it
// after the API read it: the rotation is not waiting for anything now).
// KEYS: confirmations, wake flag, the whole audit trail, the policy's audit stream, the record.
// ARGV: consumerId, confirmation JSON, wake TTL (s), the two streams' length bounds, the wake
// message's prefix, the process channels' prefix, the rotation id, the audit entry's fields.
const CONFIRM_PUSH_LUA = `
if redis.call('EXISTS', KEYS[5]) == 0 then return {-1, 0, {}} end
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local heard = 0
if added == 1 then
  for i = 1, 2 do redis.call('XADD', KEYS[2 + i], 'MAXLEN', '~', ARGV[3 + i], '*', unpack(ARGV, 9)) end
  local flag, record, channels, rotationId, message = KEYS[2], KEYS[5], ARGV[7], ARGV[8], ARGV[6] .. ARGV[1]
  ${PUBLISH_WAKE_LUA}
  if heard == 0 then redis.call('SET', KEYS[2], '1', 'EX', ARGV[3]) end
end
return {added, heard, redis.call('HGETALL', KEYS[1])}
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyConfirmPush(confirmations: string, wake: string, trail: string, policyTrail: string, record: string, ...args: string[]): Result<[number, number, string[]], Context>;
  }
}

export class ConsumerReports {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, { rekeyConfirmPush: { numberOfKeys: 5, lua: CONFIRM_PUSH_LUA } });
  }

  /**
   * A push confirmation: confirmAndList(), and when it is new, its audit entry (`audit`: the
   * streams and fields Audit.appendArgs gives for an entry that names its policy) and the wake
   * flag raised (WakeFlags.raise), all in one script. `heard`: a lingering job heard the wake.
   * `gone`: the rotation's record no longer exists (Redis lost it between the API's reads and
   * this write): nothing was written, no confirmation, no audit entry, no key without an expiry.
   */
  async confirmPush(
    rotationId: string,
    c: Confirmation,
    audit: { streams: { key: string; maxLen: string }[]; fields: string[] },
  ): Promise<{ added: boolean; heard: boolean; confirmed: Map<string, Confirmation>; gone: boolean }> {
    const [trail, policyTrail] = audit.streams;
    if (!trail || !policyTrail || audit.streams.length !== 2) throw new Error("a push confirmation's audit entry names its policy: two streams");
    const [added, heard, flat] = await this.redis.rekeyConfirmPush(
      this.keys.confirmations(rotationId),
      this.keys.wake(rotationId),
      trail.key,
      policyTrail.key,
      this.keys.rotation(rotationId),
      c.consumerId,
      JSON.stringify(c),
      String(WAKE_TTL_SEC),
      trail.maxLen,
      policyTrail.maxLen,
      WAKE_CONFIRMED,
      this.keys.wakeChannels(),
      rotationId,
      ...audit.fields,
    );
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i] as string] = flat[i + 1] as string;
    return { added: added === 1, heard: heard > 0, confirmed: parseConfirmations(h), gone: added === -1 };
  }

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

  /**
   * What a push confirmation for `policyId` is checked against: the rotation holding the policy
   * (I3's in-flight lock) and its record. A consumer names the version it loaded, and a version id
   * is its rotation's id, so when `versionId` has a rotation id's shape its record is read beside
   * the lock, in one round trip; it is the answer when the lock names it (the consumer confirms
   * what is waited for), else the record of the rotation the lock names is read next.
   */
  async waitingRotation(policyId: string, versionId: string | undefined): Promise<{ rotationId?: string; rec?: RotationRecord }> {
    const inflight = this.keys.inflight(policyId);
    if (versionId === undefined || !ROTATION_ID.test(versionId)) return this.recordOf(await this.redis.get(inflight));
    const [rotationId, h] = (await execOrThrow(this.redis.pipeline().get(inflight).hgetall(this.keys.rotation(versionId)))) as [string | null, Record<string, string>];
    if (rotationId !== versionId) return this.recordOf(rotationId);
    return { rotationId, rec: parseRecord(h) };
  }

  private async recordOf(rotationId: string | null): Promise<{ rotationId?: string; rec?: RotationRecord }> {
    if (!rotationId) return {};
    return { rotationId, rec: parseRecord(await this.redis.hgetall(this.keys.rotation(rotationId))) };
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
