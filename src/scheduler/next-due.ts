/**
 * Next due times without a scheduler in this process (the standalone `api`, `rekey status`): read
 * from the scheduler's per-policy marker in Redis (the last slot it handled), so a slot the
 * scheduler has not acted on yet shows as due — in the past when it is overdue — exactly as the
 * scheduler itself would report it.
 */
import type { RedisClient } from "../redis-connection.ts";
import type { Policy } from "../policy/schema.ts";
import { RedisKeys } from "../rotation/keys.ts";
import { readScheduleMarks } from "../rotation/state/schedule-marks.ts";
import { nextSlots, scheduleKey, slotSource } from "./slots.ts";

export async function persistedNextDue(redis: RedisClient, prefix: string, policies: Policy[], now: number): Promise<(policyId: string) => number | undefined> {
  const scheduled = policies.filter((p) => p.schedule);
  const marks = await readScheduleMarks(redis, new RedisKeys(prefix), scheduled.map((p) => p.id));
  const due = new Map<string, number>();
  for (const p of scheduled) {
    const schedule = p.schedule!;
    const mark = marks.get(p.id);
    // A marker of another schedule (the policy's schedule changed) is re-based by the scheduler.
    const next = mark && mark.sched === scheduleKey(schedule) ? slotSource(schedule, p.id).next(mark.last) : nextSlots(schedule, now, 1, p.id)[0];
    if (next !== undefined) due.set(p.id, next);
  }
  return (id) => due.get(id);
}
