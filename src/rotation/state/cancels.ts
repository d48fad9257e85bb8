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

// COMMIT: KEYS: record. ARGV: now, point. Returns {} (committed) or the cancel's {actor, reason}.
const COMMIT_LUA = `
if redis.call('HEXISTS', KEYS[1], 'cancelRequestedAt') == 1 then return redis.call('HMGET', KEYS[1], 'cancelledBy', 'cancelReason') end
if redis.call('HSETNX', KEYS[1], 'committedAt', ARGV[1]) == 1 then redis.call('HSET', KEYS[1], 'commitPoint', ARGV[2]) end
return {}
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyCancel(record: string, now: string, actor: string, reason: string): Result<"missing" | "ended" | "committed" | "ok", Context>;
    rekeyCommit(record: string, now: string, point: string): Result<(string | null)[], Context>;
  }
}

export class CancelRequests {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, {
      rekeyCancel: { numberOfKeys: 1, lua: CANCEL_LUA },
      rekeyCommit: { numberOfKeys: 1, lua: COMMIT_LUA },
    });
  }

  /** Ask a started rotation to cancel: "ok" unless it is missing, ended or committed. */
  async request(rotationId: string, actor: string, reason: string, now: number): Promise<"missing" | "ended" | "committed" | "ok"> {
    return this.redis.rekeyCancel(this.keys.rotation(rotationId), String(now), actor, reason);
  }

  /** The engine passes its point of no return: undefined when it may go on, else the cancel that came first. */
  async commit(rotationId: string, now: number, point: CommitPoint): Promise<CancelRequest | undefined> {
    const [by, reason] = await this.redis.rekeyCommit(this.keys.rotation(rotationId), String(now), point);
    return by === undefined ? undefined : { by: by ?? "unknown", reason: reason || undefined };
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
