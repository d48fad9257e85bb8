/**
 * Next due times without a scheduler in this process (the standalone `api`, `rekey status`): read
 * from the scheduler's per-policy marker in Redis (the last slot it handled), so a slot the
 * scheduler has not acted on yet shows as due — in the past when it is overdue — exactly as the
 * scheduler itself would report it.
 */
import type { RedisClient } from "../redis-connection.ts";
import type { Policy } from "../policy/schema.ts";
import { RedisKeys } from "../rotation/keys.ts";
import { nextSlots, scheduleKey, slotSource } from "./slots.ts";

export async function persistedNextDue(redis: RedisClient, prefix: string, policies: Policy[], now: number): Promise<(policyId: string) => number | undefined> {
  const scheduled = policies.filter((p) => p.schedule);
  const keys = new RedisKeys(prefix);
  const pipe = redis.pipeline();
  for (const p of scheduled) pipe.hmget(keys.scheduleMark(p.id), "last", "sched");
  const replies = scheduled.length ? ((await pipe.exec()) ?? []) : [];
  const due = new Map<string, number>();
  scheduled.forEach((p, i) => {
    const schedule = p.schedule!;
    const [err, reply] = replies[i] ?? [null, null];
    const [last, sched] = !err && Array.isArray(reply) ? (reply as (string | null)[]) : [null, null];
    // A marker of another schedule (the policy's schedule changed) is re-based by the scheduler.
    const next = last !== null && sched === scheduleKey(schedule) ? slotSource(schedule, p.id).next(Number(last)) : nextSlots(schedule, now, 1, p.id)[0];
    if (next !== undefined) due.set(p.id, next);
  });
  return (id) => due.get(id);
}
