/**
 * Slot arithmetic: when is a policy due? A slot is the epoch-millisecond instant at which a
 * scheduled rotation should start. Everything here is a pure function of its arguments (the clock
 * is an argument); the only state is a memo of computed cron slots, which never changes a result.
 *
 * Cron schedules evaluate in the policy's time zone. On a fall-back day a wall-clock time occurs
 * twice; only its first occurrence is a slot, so `0 * * * *` or `30 2 * * *` never fires twice for
 * the same local time. On a spring-forward day a wall-clock time that does not exist is handled
 * the way cron-parser's forward search handles it (a daily `30 2` runs at 03:30 that day, an
 * hourly `0 *` has no 02:00).
 *
 * `every` schedules are anchored on a per-policy offset derived from a hash of the policy id, so
 * thousands of policies with the same interval spread over the whole interval instead of firing
 * at the same instant.
 */
import { createHash } from "node:crypto";
import { CronExpressionParser, type CronExpression } from "cron-parser";
import { type Schedule } from "../policy/schema.ts";

/** Slot computation for one schedule of one policy. */
export interface SlotSource {
  /** The latest slot at or before `now`, or undefined when there is none. */
  latest(now: number): number | undefined;
  /** The first slot strictly after `after`, or undefined when there is none. */
  next(after: number): number | undefined;
}

/** The latest slot at or before `now` (epoch ms). `policyId` anchors `every` schedules. */
export function latestSlot(schedule: Schedule, now: number, policyId: string): number | undefined {
  return slotSource(schedule, policyId).latest(now);
}

/** Up to `count` slots strictly after `from` (epoch ms), oldest first: what `rekey plan` shows. */
export function nextSlots(schedule: Schedule, from: number, count: number, policyId: string): number[] {
  const src = slotSource(schedule, policyId);
  const out: number[] = [];
  let t = from;
  while (out.length < count) {
    const n = src.next(t);
    if (n === undefined) break;
    out.push(n);
    t = n;
  }
  return out;
}

/** A stable label for a schedule: equal labels mean equal slots (reloads skip unchanged ones). */
export function scheduleKey(schedule: Schedule): string {
  return "cron" in schedule ? `cron:${schedule.cron.trim()}@${schedule.timezone}` : `every:${schedule.every}`;
}

export function slotSource(schedule: Schedule, policyId: string): SlotSource {
  if ("cron" in schedule) return cronSource(schedule.cron.trim(), schedule.timezone);
  return new EverySlots(schedule.every, everyOffset(policyId, schedule.every));
}

/**
 * The offset (0 ≤ offset < periodMs) of a policy's `every` slots from the Unix epoch. Derived
 * from sha256 of the id, so it is the same on every replica and after every restart.
 */
export function everyOffset(policyId: string, periodMs: number): number {
  const digest = createHash("sha256").update(policyId).digest();
  // 48 bits are exact in a double and plenty to spread any period of a few years. Whole
  // seconds (whole minutes for periods of an hour or more) keep due times readable.
  const grain = periodMs >= 3_600_000 ? 60_000 : periodMs >= 60_000 ? 1_000 : 1;
  return (digest.readUIntBE(0, 6) % Math.max(1, Math.floor(periodMs / grain))) * grain;
}

/** A class rather than closures: the scheduler holds one per `every` policy, thousands of them. */
class EverySlots implements SlotSource {
  constructor(
    private readonly period: number,
    private readonly offset: number,
  ) {}

  latest(now: number): number {
    return now - mod(now - this.offset, this.period);
  }

  next(after: number): number {
    return this.latest(after) + this.period;
  }
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

// cron-parser's next() costs ~0.1 ms in a non-UTC zone; thousands of policies usually share a few
// expressions, so computed runs of consecutive slots are shared between them.
const SEGMENT_MAX = 256;
const SOURCES_MAX = 20_000;
const cronSources = new Map<string, SlotSource>();

function cronSource(expr: string, tz: string): SlotSource {
  const key = `${expr}@${tz}`;
  let src = cronSources.get(key);
  if (!src) {
    if (cronSources.size >= SOURCES_MAX) {
      const oldest = cronSources.keys().next().value;
      if (oldest !== undefined) cronSources.delete(oldest);
    }
    src = new CronSlots(expr, tz);
    cronSources.set(key, src);
  }
  return src;
}

class CronSlots implements SlotSource {
  private readonly expr: CronExpression;
  /** Every slot in (from, slots[last]] is in `slots`, in order. */
  private from = Number.NaN;
  private slots: number[] = [];

  constructor(
    source: string,
    private readonly tz: string,
  ) {
    this.expr = CronExpressionParser.parse(source, { tz });
  }

  next(after: number): number | undefined {
    const s = this.slots;
    const last = s[s.length - 1];
    if (last !== undefined && after >= this.from) {
      if (after < last) return s[firstAbove(s, after)];
      const n = this.rawNext(last);
      if (n === undefined) return undefined;
      if (n > after) {
        s.push(n);
        if (s.length > SEGMENT_MAX) this.from = s.shift() ?? this.from;
        return n;
      }
    }
    const n = this.rawNext(after);
    if (n !== undefined) {
      this.from = after;
      this.slots = [n];
    }
    return n;
  }

  latest(now: number): number | undefined {
    const s = this.slots;
    const first = s[0];
    const last = s[s.length - 1];
    if (first !== undefined && last !== undefined && now >= first && now < last) {
      return s[firstAbove(s, now) - 1];
    }
    // prev() finds a slot that really exists at or before now, but it can disagree with next()
    // about DST-shifted slots. next() is the single definition of the sequence, so walk forward
    // from prev()'s candidate to the last slot at or before now.
    let candidate = this.rawPrev(now);
    if (candidate === undefined) return undefined;
    for (;;) {
      const n = this.next(candidate);
      if (n === undefined) return candidate;
      if (n > now) {
        // Keep [candidate, n] in the memo so the next caller at this time finds it. Slots are whole
        // seconds, so nothing lies between candidate - 1 ms and candidate.
        if (!(this.from < candidate)) {
          this.from = candidate - 1;
          this.slots = [candidate, n];
        }
        return candidate;
      }
      candidate = n;
    }
  }

  /** cron-parser's next after `after`, skipping the second occurrence of a repeated local time. */
  private rawNext(after: number): number | undefined {
    try {
      this.expr.reset(new Date(after));
      for (let i = 0; i < 8; i++) {
        const t = this.expr.next().getTime();
        if (!repeatsEarlierWallClock(t, this.tz)) return t;
      }
    } catch {
      // An expression that never matches (e.g. 31 February) has no slots.
    }
    return undefined;
  }

  private rawPrev(now: number): number | undefined {
    try {
      // prev() is strict and works in whole seconds; +1 makes `now` itself eligible.
      this.expr.reset(new Date(now + 1));
      for (let i = 0; i < 8; i++) {
        const t = this.expr.prev().getTime();
        if (t <= now && !repeatsEarlierWallClock(t, this.tz)) return t;
      }
    } catch {
      // No earlier slot.
    }
    return undefined;
  }
}

/** Index of the first element greater than `t` in an ascending array. */
function firstAbove(a: number[], t: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] ?? Infinity) <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const HOUR = 3_600_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Offset of local time from UTC at instant `t`, in ms (Berlin in winter: +3,600,000). */
export function zoneOffset(t: number, tz: string): number {
  if (tz === "UTC" || tz === "Etc/UTC") return 0;
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(tz, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(new Date(t))) if (part.type !== "literal") p[part.type] = Number(part.value);
  const wall = Date.UTC(p.year ?? 1970, (p.month ?? 1) - 1, p.day ?? 1, p.hour ?? 0, p.minute ?? 0, p.second ?? 0);
  return wall - (t - mod(t, 1000));
}

/**
 * True when the local wall-clock time of `t` already occurred earlier (the repeated hour after
 * clocks go back). Transitions are months apart, so looking three hours back sees at most one.
 */
export function repeatsEarlierWallClock(t: number, tz: string): boolean {
  if (tz === "UTC" || tz === "Etc/UTC") return false;
  const off = zoneOffset(t, tz);
  const shift = zoneOffset(t - 3 * HOUR, tz) - off;
  if (shift <= 0 || shift > 3 * HOUR) return false;
  return zoneOffset(t - shift, tz) - off === shift;
}
