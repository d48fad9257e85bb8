/**
 * The cut-over outage: for a credential whose reset kills the old value, the time from the reset
 * (when the provider's fake replaced the token) to the moment AWSCURRENT holds the new value (when
 * the AWS emulator moved the label). Consumers that reload at once fail for exactly this long.
 */
import type { AwsEmulator } from "../../test/fakes/aws/emulator.ts";

export interface CutoverLane {
  /** Each reset at the provider: when the old value died, and the value that replaced it. */
  resets: { at: number; token: string }[];
  secretId: string;
  region?: string;
}

export interface CutoverFigures {
  /** Milliseconds from each reset to AWSCURRENT holding its value, ascending. */
  outagesMs: number[];
  /** Resets whose value never became AWSCURRENT (superseded, or the run ended first). */
  neverCurrent: number;
  p50?: number;
  p99?: number;
  max?: number;
}

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export function cutoverOutages(aws: AwsEmulator, lanes: CutoverLane[]): CutoverFigures {
  const outagesMs: number[] = [];
  let neverCurrent = 0;
  for (const lane of lanes) {
    const moves = aws.currentMoves(lane.secretId, lane.region);
    for (const r of lane.resets) {
      const current = moves.find((m) => m.value === r.token && m.at >= r.at);
      if (current) outagesMs.push(current.at - r.at);
      else neverCurrent++;
    }
  }
  outagesMs.sort((a, b) => a - b);
  return { outagesMs, neverCurrent, p50: percentile(outagesMs, 0.5), p99: percentile(outagesMs, 0.99), max: outagesMs.at(-1) };
}

/** One line for a report. */
export function formatCutover(f: CutoverFigures): string {
  if (f.outagesMs.length === 0) return `cut-over outage (reset → AWSCURRENT): no resets${f.neverCurrent ? `; ${f.neverCurrent} never current` : ""}`;
  return `cut-over outage (reset → AWSCURRENT, ${f.outagesMs.length} resets): p50 ${f.p50} ms, p99 ${f.p99} ms, max ${f.max} ms; resets never made current: ${f.neverCurrent}`;
}
