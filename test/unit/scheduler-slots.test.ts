import { describe, expect, it } from "vitest";
import { Schedule } from "../../src/policy/schema.ts";
import { everyOffset, latestSlot, nextSlots, repeatsEarlierWallClock } from "../../src/scheduler/slots.ts";

const H = 3_600_000;
const D = 24 * H;
const at = (iso: string) => Date.parse(iso);
const iso = (t: number) => new Date(t).toISOString();

function cron(expr: string, timezone = "UTC"): Schedule {
  return Schedule.parse({ cron: expr, timezone });
}

function wallClock(t: number, tz: string): string {
  return new Date(t).toLocaleString("sv-SE", { timeZone: tz });
}

/** Every slot in [from, to), via nextSlots. */
function slotsBetween(s: Schedule, from: number, to: number, id = "p"): number[] {
  return nextSlots(s, from - 1, 500, id).filter((t) => t < to);
}

describe("every", () => {
  const s = Schedule.parse({ every: "30d" });

  it("slots are anchored on a stable per-policy offset", () => {
    const off = everyOffset("billing-ld", 30 * D);
    expect(off).toBe(everyOffset("billing-ld", 30 * D));
    expect(off).toBeGreaterThanOrEqual(0);
    expect(off).toBeLessThan(30 * D);
    const now = at("2025-06-01T12:00:00Z");
    const latest = latestSlot(s, now, "billing-ld");
    expect(latest).toBeDefined();
    expect(latest!).toBeLessThanOrEqual(now);
    expect(now - latest!).toBeLessThan(30 * D);
    expect((latest! - off) % (30 * D)).toBe(0);
    expect(nextSlots(s, now, 3, "billing-ld")).toEqual([latest! + 30 * D, latest! + 60 * D, latest! + 90 * D]);
  });

  it("a slot is its own latest slot and not its own next slot", () => {
    const slot = latestSlot(s, at("2025-06-01T00:00:00Z"), "x")!;
    expect(latestSlot(s, slot, "x")).toBe(slot);
    expect(latestSlot(s, slot - 1, "x")).toBe(slot - 30 * D);
    expect(nextSlots(s, slot, 1, "x")).toEqual([slot + 30 * D]);
  });

  it("10,000 policies with the same interval spread over the interval", () => {
    const buckets = new Array<number>(30).fill(0);
    for (let i = 0; i < 10_000; i++) {
      const off = everyOffset(`policy-${i}`, 30 * D);
      buckets[Math.floor(off / D)]! += 1;
    }
    // Uniform would be 333 a day; a thundering herd would put them all in one.
    expect(Math.max(...buckets)).toBeLessThan(450);
    expect(Math.min(...buckets)).toBeGreaterThan(220);
  });
});

describe("cron in UTC", () => {
  it("latest includes the current instant, next is strictly after", () => {
    const s = cron("0 * * * *");
    const ten = at("2025-01-01T10:00:00Z");
    expect(latestSlot(s, ten, "p")).toBe(ten);
    expect(latestSlot(s, ten - 1, "p")).toBe(ten - H);
    expect(latestSlot(s, ten + 1, "p")).toBe(ten);
    expect(nextSlots(s, ten, 3, "p")).toEqual([ten + H, ten + 2 * H, ten + 3 * H]);
    expect(nextSlots(s, ten - 1, 1, "p")).toEqual([ten]);
  });

  it("a rare expression finds slots years apart", () => {
    const s = cron("0 0 29 2 *");
    const now = at("2025-06-01T00:00:00Z");
    expect(nextSlots(s, now, 2, "p").map(iso)).toEqual(["2028-02-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z"]);
    expect(iso(latestSlot(s, now, "p")!)).toBe("2024-02-29T00:00:00.000Z");
  });
});

describe("cron across DST changes", () => {
  const cases = [
    { tz: "Europe/Berlin", spring: "2025-03-30", fall: "2025-10-26", repeated: "02", missing: "02" },
    { tz: "America/New_York", spring: "2025-03-09", fall: "2025-11-02", repeated: "01", missing: "02" },
  ] as const;

  for (const c of cases) {
    describe(c.tz, () => {
      // The local day, as UTC instants (generous bounds, filtered by local date).
      const localDay = (s: Schedule, day: string) =>
        slotsBetween(s, at(`${day}T00:00:00Z`) - 14 * H, at(`${day}T00:00:00Z`) + 38 * H).filter((t) => wallClock(t, c.tz).startsWith(day));

      it("fall back: an hourly slot fires once per wall-clock hour", () => {
        const slots = localDay(cron("0 * * * *", c.tz), c.fall);
        const clocks = slots.map((t) => wallClock(t, c.tz));
        expect(new Set(clocks).size).toBe(clocks.length);
        expect(clocks).toHaveLength(24);
        expect(clocks.filter((w) => w.includes(` ${c.repeated}:00`))).toHaveLength(1);
      });

      it("fall back: a daily slot in the repeated hour fires once, at its first occurrence", () => {
        const s = cron(`30 ${c.repeated} * * *`, c.tz);
        const slots = localDay(s, c.fall);
        expect(slots).toHaveLength(1);
        const only = slots[0]!;
        expect(repeatsEarlierWallClock(only, c.tz)).toBe(false);
        expect(repeatsEarlierWallClock(only + H, c.tz)).toBe(true);
        // latestSlot agrees: an hour later (the repeat) the latest slot is still the first one.
        expect(latestSlot(s, only + H + 1, "p")).toBe(only);
      });

      it("fall back: a half-hourly schedule never repeats a wall-clock time", () => {
        const clocks = localDay(cron("*/30 * * * *", c.tz), c.fall).map((t) => wallClock(t, c.tz));
        expect(new Set(clocks).size).toBe(clocks.length);
        expect(clocks).toHaveLength(48);
      });

      it("spring forward: a daily slot in the missing hour fires once that day", () => {
        const s = cron(`30 ${c.missing} * * *`, c.tz);
        const slots = localDay(s, c.spring);
        expect(slots).toHaveLength(1);
        expect(latestSlot(s, slots[0]! + 1, "p")).toBe(slots[0]);
        // The days around it keep their own slot.
        const before = at(`${c.spring}T00:00:00Z`) - 2 * D;
        const week = slotsBetween(s, before, before + 5 * D);
        expect(new Set(week.map((t) => wallClock(t, c.tz).slice(0, 10))).size).toBe(week.length);
      });

      it("spring forward: an hourly slot skips the missing hour and repeats nothing", () => {
        const clocks = localDay(cron("0 * * * *", c.tz), c.spring).map((t) => wallClock(t, c.tz));
        expect(new Set(clocks).size).toBe(clocks.length);
        expect(clocks).toHaveLength(23);
        expect(clocks.some((w) => w.includes(` ${c.missing}:00`))).toBe(false);
      });

      // The probed expressions are spelled differently from the reference one, so latestSlot does
      // not start from slots that nextSlots already computed.
      for (const [label, expr] of [["ascending", "*/20 */1 * * *"], ["descending", "*/20 0-23 * * *"]] as const) {
        it(`latestSlot matches the nextSlots sequence on both DST days (${label})`, () => {
          const s = cron(expr, c.tz);
          for (const day of [c.spring, c.fall]) {
            const from = at(`${day}T00:00:00Z`) - 6 * H;
            const seq = slotsBetween(cron("*/20 * * * *", c.tz), from, from + 36 * H);
            const probes: number[] = [];
            for (let t = from + H; t < from + 35 * H; t += 7 * 60_000) probes.push(t);
            if (label === "descending") probes.reverse();
            for (const t of probes) {
              const expected = seq.filter((x) => x <= t).at(-1);
              expect(latestSlot(s, t, "p"), `at ${iso(t)}`).toBe(expected);
            }
          }
        });
      }
    });
  }
});
