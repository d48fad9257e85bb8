/**
 * What a process does besides its own work while a run measures it, per side of the attack run
 * (bench/attack.ts: "attack" segments and "quiet" ones): its event loop's lag, its garbage-
 * collection pauses, the times the kernel took a core from it, and its CPU. The attack run keeps
 * one in the process that serves the API: its own (everything in one process, as `rekey run`) or
 * the API's own process (bench/api-process.ts, as `rekey api` is deployed).
 */
import { constants as perfConstants, createHistogram, PerformanceObserver } from "node:perf_hooks";

export type Side = "attack" | "quiet";

/** A garbage-collection pause, in epoch ms (comparable across processes). */
export interface Pause {
  start: number;
  end: number;
}

export interface SideFigures {
  /** Event-loop lag, p99 and max (ms), sampled every LAG_TICK_MS. */
  loopP99Ms: number;
  loopMaxMs: number;
  gcMs: number;
  gcMaxMs: number;
  majorGcs: number;
  /** Times the kernel took a core from the process (it waited for one). */
  involuntarySwitches: number;
  /** CPU time (user + system), ms. */
  cpuMs: number;
}

export interface MeterReport {
  quiet: SideFigures;
  attack: SideFigures;
  /** Every GC pause while the meter ran, on either side or neither. */
  pauses: Pause[];
}

/** How often the meter samples the event loop's lag, in ms. */
const LAG_TICK_MS = 5;

export class ProcessMeter {
  private side: Side | undefined;
  private readonly loop = { attack: createHistogram(), quiet: createHistogram() };
  private readonly figures: Record<Side, Omit<SideFigures, "loopP99Ms" | "loopMaxMs">> = {
    quiet: { gcMs: 0, gcMaxMs: 0, majorGcs: 0, involuntarySwitches: 0, cpuMs: 0 },
    attack: { gcMs: 0, gcMaxMs: 0, majorGcs: 0, involuntarySwitches: 0, cpuMs: 0 },
  };
  private readonly pauses: Pause[] = [];
  private lastTick = performance.now();
  private entered?: { switches: number; cpu: NodeJS.CpuUsage };
  private readonly ticker: NodeJS.Timeout;
  // Entries arrive a little after the pause: one at a side's edge may count on the other.
  private readonly gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      this.pauses.push({ start: performance.timeOrigin + e.startTime, end: performance.timeOrigin + e.startTime + e.duration });
      if (!this.side) continue;
      const f = this.figures[this.side];
      f.gcMs += e.duration;
      f.gcMaxMs = Math.max(f.gcMaxMs, e.duration);
      if ((e as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) f.majorGcs++;
    }
  });

  constructor() {
    this.gcs.observe({ entryTypes: ["gc"] });
    this.ticker = setInterval(() => {
      const now = performance.now();
      if (this.side) this.loop[this.side].record(Math.max(1, Math.round((now - this.lastTick - LAG_TICK_MS) * 1000)));
      this.lastTick = now;
    }, LAG_TICK_MS).unref();
  }

  /** What follows is measured as `side`, until leave(). */
  enter(side: Side): void {
    this.leave();
    this.side = side;
    this.lastTick = performance.now();
    this.entered = { switches: process.resourceUsage().involuntaryContextSwitches, cpu: process.cpuUsage() };
  }

  leave(): void {
    if (this.side && this.entered) {
      const f = this.figures[this.side];
      f.involuntarySwitches += process.resourceUsage().involuntaryContextSwitches - this.entered.switches;
      const cpu = process.cpuUsage(this.entered.cpu);
      f.cpuMs += (cpu.user + cpu.system) / 1000;
    }
    this.side = undefined;
    this.entered = undefined;
  }

  report(): MeterReport {
    const side = (s: Side): SideFigures => ({ loopP99Ms: this.loop[s].count ? this.loop[s].percentile(99) / 1e3 : 0, loopMaxMs: this.loop[s].count ? this.loop[s].max / 1e3 : 0, ...this.figures[s] });
    return { quiet: side("quiet"), attack: side("attack"), pauses: [...this.pauses] };
  }

  stop(): void {
    this.leave();
    clearInterval(this.ticker);
    this.gcs.disconnect();
  }
}
