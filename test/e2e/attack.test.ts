/**
 * The attack run, small (the full one, ≥ 10,000 hostile requests, is in `npm run chaos`): hostile
 * requests from other addresses while real rotations wait for their consumer. Nothing hostile
 * reaches the audit, Redis barely grows, every rotation completes with its old token alive until
 * the consumer confirmed, and the consumer is never refused.
 */
import { describe, expect, it } from "vitest";
import { attackViolations, formatAttackReport, runAttack } from "../../bench/attack.ts";

describe("attack run (small)", () => {
  it("1,500 hostile requests while rotations wait for their consumer: no audit entry, < 1 MB, every rotation completes", async () => {
    const r = await runAttack({ requests: 1_500, policies: 4, minRounds: 3, concurrency: 12, rate: 500, segments: 2, addresses: 4 });
    process.stdout.write(`${formatAttackReport(r).join("\n")}\n`);
    expect(r.hostile).toBe(1_500);
    expect(r.failures).toEqual([]);
    // Every kind of hostile request was refused: 401, 404 (no such route), 405 (read-only board),
    // 409 (a replay, for a version no longer waited for), 413; never 2xx.
    for (const [kind, statuses] of Object.entries(r.byKind)) {
      for (const status of Object.keys(statuses)) expect(["401", "404", "405", "409", "413", "closed early"], `${kind}: ${status}`).toContain(status);
    }
    expect(r.growthFromAttack).toBeLessThanOrEqual(1024 * 1024);
    expect(r.attackGrowth).toBeLessThanOrEqual(1024 * 1024);
    expect(r.unauthenticatedAuditEntries).toBe(0);
    expect(r.refusalSummaries).toBeLessThanOrEqual(4);
    expect(r.revokedEarly).toBe(0);
    expect(Object.keys(r.rotations.attack)).toEqual(["completed"]);
    expect(r.rotations.attack.completed).toBeGreaterThanOrEqual(12);
    expect(r.refusalLogLines).toBeLessThan(40);
    // The latency goal (p99 under attack ≤ 2 × quiet) needs the full run's samples; a dozen here
    // on a shared machine measure the machine. Reported above, judged by `npm run chaos`.
    expect(attackViolations(r).filter((v) => !v.startsWith("consumer p99"))).toEqual([]);
  }, 180_000);
});
