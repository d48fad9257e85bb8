/**
 * `rekey cancel` on a rotation's record, against the engine's point of no return (the write that
 * makes its new version AWSCURRENT — issuing's, a submission's or promoting's — or a cut-over's
 * reset): each side decides in one script, so a cancel is either honoured before the rotation
 * commits or refused; never both, never lost. The only writer of the record's cancel and commit
 * fields.
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import type { RedisKeys } from "../keys.ts";

/** `rekey cancel` as the engine sees it: who asked, and why. */
export interface CancelRequest {
  by: string;
  reason?: string;
}

/** Where a rotation passed its point of no return: its promotion, or a cut-over's reset. */
export type CommitPoint = "promotion" | "reset";

/** What the failure path says of a cancelled rotation. */
export function cancelledMessage(c: CancelRequest): string {
  return `cancelled by ${c.by}${c.reason ? ` (${c.reason})` : ""}`;
}

// CANCEL: KEYS: record. ARGV: now, actor, reason. Returns "missing", "ended", "committed" or "ok".
const CANCEL_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('HEXISTS', KEYS[1], 'endedAt') == 1 then return 'ended' end
if redis.call('HEXISTS', KEYS[1], 'promotedAt') == 1 or redis.call('HEXISTS', KEYS[1], 'committedAt') == 1 then return 'committed' end
if redis.call('HEXISTS', KEYS[1], 'cancelRequestedAt') == 0 then
  redis.call('HSET', KEYS[1], 'cancelRequestedAt', ARGV[1], 'cancelledBy', ARGV[2], 'cancelReason', ARGV[3])
end
return 'ok'
`;

// COMMIT: the point of no return, unless a cancel came first; with a second key, the store's
// throttle gate (RateGates: epoch ms, or none) read too, for the store write that follows it: one
// round trip for both. KEYS: record [, gate]. ARGV: now, point.
// Returns {'c', actor, reason} (cancelled) or {'ok', gate}.
const COMMIT_LUA = `
local r = redis.call('HMGET', KEYS[1], 'cancelRequestedAt', 'committedAt', 'cancelledBy', 'cancelReason')
if r[1] then return {'c', r[3], r[4]} end
if not r[2] then redis.call('HSET', KEYS[1], 'committedAt', ARGV[1], 'commitPoint', ARGV[2]) end
if #KEYS > 1 then return {'ok', redis.call('GET', KEYS[2])} end
return {'ok'}
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyCancel(record: string, now: string, actor: string, reason: string): Result<"missing" | "ended" | "committed" | "ok", Context>;
    rekeyCommit(numberOfKeys: number, ...keysAndArgs: string[]): Result<(string | null)[], Context>;
  }
}

export class CancelRequests {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, {
      rekeyCancel: { numberOfKeys: 1, lua: CANCEL_LUA },
      // One key, or two where the store's gate is read too: given per call.
      rekeyCommit: { lua: COMMIT_LUA },
    });
  }

  /** Ask a started rotation to cancel: "ok" unless it is missing, ended or committed. */
  async request(rotationId: string, actor: string, reason: string, now: number): Promise<"missing" | "ended" | "committed" | "ok"> {
    return this.redis.rekeyCancel(this.keys.rotation(rotationId), String(now), actor, reason);
  }

  /** The engine passes its point of no return: undefined when it may go on, else the cancel that came first. */
  async commit(rotationId: string, now: number, point: CommitPoint): Promise<CancelRequest | undefined> {
    return (await this.pass([this.keys.rotation(rotationId)], now, point)).cancel;
  }

  /**
   * commit(), for a point of no return a store write follows: the throttle gate of the store's
   * scope (RateGates.until, 0 when open) is read in the same round trip.
   */
  commitBeforeWrite(rotationId: string, now: number, point: CommitPoint, storeScope: string): Promise<{ cancel?: CancelRequest; gateUntil: number }> {
    return this.pass([this.keys.rotation(rotationId), this.keys.gate(storeScope)], now, point);
  }

  private async pass(keys: string[], now: number, point: CommitPoint): Promise<{ cancel?: CancelRequest; gateUntil: number }> {
    const [kind, a, b] = await this.redis.rekeyCommit(keys.length, ...keys, String(now), point);
    if (kind === "c") return { cancel: { by: a ?? "unknown", reason: b || undefined }, gateUntil: 0 };
    return { gateUntil: Number(a ?? 0) };
  }

  /** Back before the point of no return (the promotion was refused by a throttle: nothing moved). */
  async uncommit(rotationId: string): Promise<void> {
    await this.redis.hdel(this.keys.rotation(rotationId), "committedAt", "commitPoint");
  }

  /** The cancel asked for, if any. */
  async requested(rotationId: string): Promise<CancelRequest | undefined> {
    const [by, reason] = await this.redis.hmget(this.keys.rotation(rotationId), "cancelledBy", "cancelReason");
    return by ? { by, reason: reason || undefined } : undefined;
  }
}
