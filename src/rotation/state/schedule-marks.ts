/**
 * The scheduler's state in Redis: a marker per policy (the last slot handled, a pending claim)
 * advanced by one Lua script (a compare-and-set), and the stream of missed slots. See
 * scheduler/scheduler.ts for how replicas converge through them.
 */
import type { ChainableCommander, Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import type { RedisKeys } from "../keys.ts";

// The marker is a hash: last (slot), owner + until (a pending claim), sched (schedule key).
// Replies are {status, last, blockedUntil}: status 1 = done what was asked, 3 = first sight of
// this policy or schedule (marker set to the given slot, nothing to run), 0 = nothing to do;
// blockedUntil > 0 when another replica's claim on `last` is pending until then.
// `sync` is sent for a policy this process has not read yet: it initialises the marker when
// there is none (or when the schedule changed), and otherwise does ARGV[9] (claim or miss).
const SLOT_SCRIPT = `
local op = ARGV[1]
local slot = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local me = ARGV[4]
local sched = ARGV[6]
local h = redis.call('HMGET', KEYS[1], 'last', 'owner', 'until', 'sched')
local last = tonumber(h[1])
local owner = h[2] or ''
local untilT = tonumber(h[3]) or 0
local pending = owner ~= ''
local blockedUntil = 0
if pending and owner ~= me and untilT > now then blockedUntil = untilT end

if op == 'sync' then
  if not last then
    redis.call('HSET', KEYS[1], 'last', slot, 'sched', sched)
    return {3, slot, 0}
  end
  if h[4] ~= sched then
    redis.call('HSET', KEYS[1], 'sched', sched)
    if last < slot then
      redis.call('HSET', KEYS[1], 'last', slot)
      redis.call('HDEL', KEYS[1], 'owner', 'until')
      return {3, slot, 0}
    end
  end
  op = ARGV[9]
end

if op == 'claim' or op == 'miss' then
  if last and (last > slot or (last == slot and (not pending or blockedUntil > 0))) then
    return {0, last, blockedUntil}
  end
  redis.call('HSETNX', KEYS[1], 'sched', sched)
  if op == 'claim' then
    redis.call('HSET', KEYS[1], 'last', slot, 'owner', me, 'until', now + tonumber(ARGV[5]))
  else
    redis.call('HSET', KEYS[1], 'last', slot)
    redis.call('HDEL', KEYS[1], 'owner', 'until')
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'policyId', ARGV[7], 'slot', slot, 'detectedAt', now, 'lastHandled', h[1] or '')
  end
  return {1, slot, 0}
elseif op == 'done' then
  if last == slot and owner == me then
    redis.call('HDEL', KEYS[1], 'owner', 'until')
    return {1, slot, 0}
  end
  return {0, last or 0, 0}
end
return redis.error_reply('unknown op ' .. op)
`;

export type SlotOp = "claim" | "miss" | "done";
export type SlotReply = [status: number, last: number, blockedUntil: number];

/** One marker update: `sync` first initialises a marker this process has not read yet, then does `op`. */
export interface MarkerUpdate {
  policyId: string;
  /** The schedule's key (slots.ts scheduleKey): a changed schedule re-bases the marker. */
  sched: string;
  sync: boolean;
  op: SlotOp;
  slot: number;
}

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeySchedSlot(
      marker: string,
      stream: string,
      op: SlotOp | "sync",
      slot: number,
      now: number,
      owner: string,
      leaseMs: number,
      sched: string,
      policyId: string,
      maxLen: number,
      then: SlotOp | "",
    ): Result<SlotReply, Context>;
  }
}

export interface MissedSlot {
  /** Stream entry id. */
  id: string;
  policyId: string;
  slot: number;
  detectedAt: number;
  /** The slot handled before the missed one, if any. */
  lastHandled: number | undefined;
}

export class ScheduleMarks {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    private readonly opts: { owner: string; leaseMs: number; missedMaxLen: number },
  ) {
    defineScripts(redis, { rekeySchedSlot: { numberOfKeys: 2, lua: SLOT_SCRIPT } });
  }

  /**
   * Apply the updates in one pipeline; each reply, or the error of its update. Throws when Redis
   * cannot be reached at all.
   */
  async apply(updates: MarkerUpdate[], now: number): Promise<([Error, undefined] | [null, SlotReply])[]> {
    const pipe: ChainableCommander = this.redis.pipeline();
    for (const u of updates) {
      const [op, then] = u.sync ? (["sync", u.op] as const) : ([u.op, ""] as const);
      pipe.rekeySchedSlot(this.keys.scheduleMark(u.policyId), this.keys.scheduleMissed(), op, u.slot, now, this.opts.owner, this.opts.leaseMs, u.sched, u.policyId, this.opts.missedMaxLen, then);
    }
    const results = await pipe.exec();
    return updates.map((_, i) => {
      const [err, reply] = results?.[i] ?? [new Error("no reply"), undefined];
      return err ? [err, undefined] : [null, (reply as number[]).map(Number) as SlotReply];
    });
  }

  /** The most recent missed slots, newest first. */
  async missed(limit: number): Promise<MissedSlot[]> {
    const rows = await this.redis.xrevrange(this.keys.scheduleMissed(), "+", "-", "COUNT", limit);
    return rows.map(([id, fields]) => {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
      return {
        id,
        policyId: f.policyId ?? "",
        slot: Number(f.slot),
        detectedAt: Number(f.detectedAt),
        lastHandled: f.lastHandled ? Number(f.lastHandled) : undefined,
      };
    });
  }
}

/** Each policy's marker as last written: the last slot handled and the schedule it was for. */
export async function readScheduleMarks(redis: RedisClient, keys: RedisKeys, policyIds: string[]): Promise<Map<string, { last: number; sched: string | null }>> {
  const out = new Map<string, { last: number; sched: string | null }>();
  if (!policyIds.length) return out;
  const pipe = redis.pipeline();
  for (const id of policyIds) pipe.hmget(keys.scheduleMark(id), "last", "sched");
  const replies = (await pipe.exec()) ?? [];
  policyIds.forEach((id, i) => {
    const [err, reply] = replies[i] ?? [null, null];
    const [last, sched] = !err && Array.isArray(reply) ? (reply as (string | null)[]) : [null, null];
    if (last !== null && last !== undefined) out.set(id, { last: Number(last), sched: sched ?? null });
  });
  return out;
}
