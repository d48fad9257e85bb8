/**
 * The fault matrix's wipe case (`npm run chaos -- --wipe`): Redis restarts empty in the middle of
 * the load (every record, lock, job, confirmation and audit entry gone), and `rekey reconcile`'s
 * passes run until every policy is whole again. This module runs those passes and measures:
 * rotations Redis forgot, rotations reconcile queued again, the time until every policy is whole,
 * live credentials that are neither AWSCURRENT nor AWSPREVIOUS (orphans), and policies with more
 * than one live credential once their consumers confirmed.
 */
import type { Policy } from "../../src/policy/schema.ts";
import { type Finding, type Observation, type ReconcileDeps, reconcileAll } from "../../src/reconcile/reconcile.ts";
import { REGION, type World } from "./world.ts";

export interface WipeFigures {
  /** How long the run had been writing to Redis when it was wiped: all of that is lost. */
  writesLostMs: number;
  /** Rotations in flight when Redis was wiped (their records, jobs and locks gone). */
  lostRotations: number;
  /** Rotations reconcile queued again (a current version whose previous credential was live). */
  recreated: number;
  passes: number;
  /** Findings of every pass, by kind. */
  findings: Record<string, number>;
  /** From the wipe until a pass found every policy whole (and the re-queued rotations ended); undefined when it never did. */
  wholeAfterMs?: number;
  /** Then: live credentials that are neither AWSCURRENT nor AWSPREVIOUS of their policy. */
  orphanedLive: number;
  /**
   * Of those: credentials of a provider that cannot list them, whose value rekey never received
   * (a Snyk client secret whose create answer was lost; the rotation that met it was alerted
   * needs-attention with the remedy, `rekey leak`). No reconcile can find them.
   */
  unlistable: number;
  /** Then: policies with more than one live credential (their consumers had confirmed). */
  multiLive: string[];
  /** Policies not yet found whole, each with what the last pass that could look at it found. */
  notWhole: string[];
}

/** Nothing for reconcile to do on the policy. */
const SETTLED = new Set(["whole", "skipped"]);

export class WipeRepair {
  readonly figures: WipeFigures;
  private previous?: Map<string, Observation>;
  private lastPassAt = 0;
  /**
   * Per policy: what the last pass that could look at it (no error) found, and whether that was
   * nothing to do.
   */
  private readonly lastSeen = new Map<string, { settled: boolean; findings: string }>();

  constructor(
    private readonly deps: ReconcileDeps,
    private readonly policies: () => Policy[],
    private readonly opts: { settleMs: number; everyMs: number; wipedAt: number; startedAt: number; lostRotations: number },
  ) {
    this.figures = { writesLostMs: opts.wipedAt - opts.startedAt, lostRotations: opts.lostRotations, recreated: 0, passes: 0, findings: {}, orphanedLive: 0, unlistable: 0, multiLive: [], notWhole: [] };
  }

  /**
   * One reconcile pass when one is due. Returns the rotations it queued again, and whether every
   * policy has been found whole (no repair made, none pending, nothing unsettled) by the last
   * pass that could look at it: with provider faults on, a pass that sees every policy without
   * an error is rare, and an error says nothing about the policy.
   */
  async step(now: number): Promise<{ recreated: Finding[]; whole: boolean; line: string } | undefined> {
    if (now - this.lastPassAt < this.opts.everyMs) return undefined;
    this.lastPassAt = now;
    const r = await reconcileAll(this.deps, this.policies(), { dryRun: false, settleMs: this.opts.settleMs, previous: this.previous });
    this.previous = r.observations;
    this.figures.passes++;
    for (const f of r.findings) this.figures.findings[f.kind] = (this.figures.findings[f.kind] ?? 0) + 1;
    const recreated = r.findings.filter((f) => f.kind === "re-created");
    this.figures.recreated += recreated.length;
    const byPolicy = new Map<string, Finding[]>();
    for (const f of r.findings) byPolicy.set(f.policyId, [...(byPolicy.get(f.policyId) ?? []), f]);
    for (const [id, fs] of byPolicy) {
      if (fs.some((f) => f.kind === "error")) continue;
      this.lastSeen.set(id, { settled: fs.every((f) => SETTLED.has(f.kind)), findings: fs.map((f) => `${f.kind}: ${f.message.slice(0, 140)}`).join("; ") });
    }
    const notWhole = this.policies().filter((p) => this.lastSeen.get(p.id)?.settled !== true);
    this.figures.notWhole = notWhole.map((p) => `${p.id} (${this.lastSeen.get(p.id)?.findings ?? "no pass without an error yet"})`);
    const open = notWhole.length;
    return { recreated, whole: open === 0, line: `reconcile pass ${this.figures.passes} (${((Date.now() - now) / 1000).toFixed(1)} s): ${open} polic(ies) not yet whole; ${countKinds(r.findings)}` };
  }

  /** Every policy whole: measure what is live against the store's labels. */
  finish(world: World, now: number): void {
    this.figures.wholeAfterMs = now - this.opts.wipedAt;
    const f = liveAgainstLabels(world);
    this.figures.orphanedLive = f.orphanedLive;
    this.figures.unlistable = f.unlistable;
    this.figures.multiLive = f.multiLive;
  }
}

/** Live credentials outside AWSCURRENT and AWSPREVIOUS, and policies with more than one live. */
export function liveAgainstLabels(world: World): { orphanedLive: number; unlistable: number; multiLive: string[] } {
  let orphanedLive = 0;
  let unlistable = 0;
  const multiLive: string[] = [];
  for (const p of world.policies) {
    const versions = world.aws.inspect(p.secretId, REGION)?.versions ?? [];
    const labelled = new Set(versions.filter((v) => v.stages.includes("AWSCURRENT") || v.stages.includes("AWSPREVIOUS")).map((v) => v.value));
    const stored = new Set(versions.map((v) => v.value));
    const live = p.liveValues();
    const outside = live.filter((v) => !labelled.has(v));
    orphanedLive += outside.length;
    // Snyk client secrets cannot be listed: one rekey never received is invisible to it.
    const hidden = p.kind === "snyk" ? outside.filter((v) => !stored.has(v)).length : 0;
    unlistable += hidden;
    if (live.length - hidden > 1) multiLive.push(p.id);
  }
  return { orphanedLive, unlistable, multiLive };
}

function countKinds(findings: Finding[]): string {
  const n: Record<string, number> = {};
  for (const f of findings) n[f.kind] = (n[f.kind] ?? 0) + 1;
  return Object.entries(n)
    .map(([k, c]) => `${k} ${c}`)
    .join(", ");
}

export function formatWipe(w: WipeFigures): string {
  const kinds = Object.entries(w.findings)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
  return (
    `Redis wiped after ${(w.writesLostMs / 1000).toFixed(1)} s of writes (all lost), ${w.lostRotations} rotation(s) in flight forgotten; ` +
    `reconcile: ${w.passes} passes (${kinds}), ${w.recreated} rotation(s) queued again; ` +
    (w.wholeAfterMs === undefined
      ? `NOT every policy whole by the end: ${w.notWhole.slice(0, 5).join(" | ")}`
      : `every policy whole ${(w.wholeAfterMs / 1000).toFixed(1)} s after the wipe, with ${w.orphanedLive - w.unlistable} orphaned live credential(s)` +
        `${w.unlistable ? ` (and ${w.unlistable} Snyk client secret(s) whose create answer was lost: never received, not listable, alerted)` : ""}` +
        ` and ${w.multiLive.length} polic(ies) with more than one live credential${w.multiLive.length ? ` (${w.multiLive.slice(0, 5).join(", ")})` : ""}`)
  );
}
