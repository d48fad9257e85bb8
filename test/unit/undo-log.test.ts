/**
 * The failure path's undo log (src/rotation/undo.ts): the steps record in the job data what undoes
 * what they did, before an action that may land without an answer; the failure path runs exactly
 * what is recorded, last first, and an interrupted clean-up resumes with what is left. Rotations
 * run through RotationEngine.process on the in-memory fakes (rotation-sim.ts); what the tests read
 * is the job data as it was written, the calls that reached the provider and the store, and the
 * world they leave.
 */
import { describe, expect, it } from "vitest";
import { PermanentError, TransientError } from "../../src/errors.ts";
import type { RotationJobData, UndoEntry } from "../../src/rotation/job.ts";
import type { Policy } from "../../src/policy/schema.ts";
import { refOf } from "../../src/rotation/scope.ts";
import { AWSCURRENT, AWSPENDING } from "../../src/stores/types.ts";
import type { Fault } from "../fakes/memory-world.ts";
import { checkI1, runChecked } from "../helpers/invariants.ts";
import { cutoverPolicy, humanPolicy, overlapPolicy, Sim, type Tracked } from "../helpers/rotation-sim.ts";

/** What undoes something: the calls of the failure path's clean-up. */
const UNDO_OPS = new Set(["provider.revoke", "store.discardPending", "provider.cleanupOrphans"]);

/**
 * A store that cannot write AWSCURRENT in one call: the new value goes to AWSPENDING first and is
 * verified and promoted by the next steps, so a failure can find a stored, unpromoted version.
 */
function pendingOnly(sim: Sim): void {
  Object.defineProperty(sim.store, "putCurrent", { value: undefined });
}

interface Setup {
  policy: Policy;
  /** Before the rotation runs: faults, store tweaks. */
  before?: (sim: Sim) => void;
  /** The job's data as queued (an older rekey's job has no undo log). */
  data?: (d: RotationJobData) => RotationJobData;
  /** Called at every call that reaches the world (before it acts); may inject a fault. */
  onCall?: (sim: Sim, t: Tracked, op: string) => Fault | undefined;
}

async function rotate(s: Setup) {
  const sim = new Sim({ humanAfter: 20 * 60_000 });
  sim.addPolicy(s.policy);
  s.before?.(sim);
  const t = sim.enqueue(s.policy.id);
  if (s.data) t.job.data = s.data(t.job.data as RotationJobData);
  // The job data as written when each call of the world was made (the spy sees every call), and
  // the log the start step wrote to the record (the failure path's, while the job holds none).
  const seen: { op: string; data: RotationJobData; onRecord?: UndoEntry[] }[] = [];
  const random = sim.world.random;
  sim.world.random = (op) => {
    seen.push({ op, data: structuredClone(t.job.data) as RotationJobData, onRecord: structuredClone(sim.state.db.records.get(t.rotationId)?.undo) });
    return s.onCall?.(sim, t, op) ?? random?.(op);
  };
  const violations = await runChecked(sim);
  return { sim, t, violations, seen };
}

/** The clean-up calls the failure path made after the call that failed the rotation. */
function undoCallsAfter(sim: Sim, t: Tracked, failedOp: string): string[] {
  const calls = sim.world.calls.filter((c) => c.rotationId === undefined || c.rotationId === t.rotationId);
  const at = calls.findLastIndex((c) => c.op === failedOp && c.fault === "fail");
  expect(at, `${failedOp} failed`).toBeGreaterThanOrEqual(0);
  return calls.slice(at + 1).filter((c) => UNDO_OPS.has(c.op)).map((c) => c.op);
}

/** The undo log the failure path would have found when `op` was called: the job's, or while the job holds none, the record's. */
function undoWhen(seen: { op: string; data: RotationJobData; onRecord?: UndoEntry[] }[], op: string): UndoEntry[] | undefined {
  const s = seen.find((x) => x.op === op);
  return s?.data.undo?.length ? s.data.undo : s?.onRecord;
}

function record(sim: Sim, t: Tracked) {
  return sim.state.db.records.get(t.rotationId);
}

const permanent = (op: string) => (sim: Sim) => sim.world.next(op, { kind: "fail", error: () => new PermanentError(`${op} refused (injected)`) });

describe("the steps record their undo", () => {
  it("issuing records the orphan clean-up, the discard and the revoke before the issue is sent; the revoke names the credential once it is stored", async () => {
    const { sim, t, violations, seen } = await rotate({ policy: overlapPolicy("ld-api"), before: pendingOnly });
    expect(violations).toEqual([]);
    const v = t.rotationId;
    // Written before the create went out (to the record, with the start step's move to issuing):
    // a worker that died during it leaves it there.
    expect(undoWhen(seen, "provider.issue")).toEqual([{ undo: "cleanup-orphans" }, { undo: "discard-pending", versionId: v }, { undo: "revoke-stored", versionId: v }]);
    const issued = sim.creds.all.find((c) => c.issuedBy === v)!;
    // Issuing's outcome (the value stored as AWSPENDING) is written with the credential it holds.
    expect(undoWhen(seen, "store.promote")).toEqual([
      { undo: "cleanup-orphans" },
      { undo: "discard-pending", versionId: v },
      { undo: "revoke-stored", versionId: v, credentialId: issued.credentialId },
    ]);
    expect(record(sim, t)?.status).toBe("completed");
  });

  it("a cut-over records only the discard of its version: a reset's credential keeps the old one's place", async () => {
    const { t, violations, seen } = await rotate({ policy: cutoverPolicy("qstash-token") });
    expect(violations).toEqual([]);
    expect(undoWhen(seen, "provider.issue")).toEqual([{ undo: "discard-pending", versionId: t.rotationId }]);
  });

  it("the human step records the discard and the revoke of a submitted value before it asks for one", async () => {
    const { sim, t, violations, seen } = await rotate({ policy: humanPolicy("snyk-pat") });
    expect(violations).toEqual([]);
    const v = t.rotationId;
    const asked = sim.events.find((e) => e.type === "human.action-required")!;
    expect(asked).toBeDefined();
    // The first job write that holds the request holds the undo too; none holds the request without it.
    const written = t.job.history.map((h) => JSON.parse(h) as RotationJobData);
    expect(written.filter((d) => d.humanRequestedAt !== undefined).every((d) => d.undo?.some((e) => e.undo === "discard-pending"))).toBe(true);
    expect(undoWhen(seen, "store.getVersion")).toEqual([]);
    expect(written.find((d) => d.humanRequestedAt !== undefined)?.undo).toEqual([{ undo: "discard-pending", versionId: v }, { undo: "revoke-stored", versionId: v }]);
  });
});

describe("a failure runs exactly the recorded undos, last first", () => {
  it.each([
    // [the call that fails for good, the undo calls expected, what the outcome says was undone]
    ["provider.issue", ["store.discardPending", "provider.cleanupOrphans"], []],
    ["provider.verify", ["provider.revoke", "store.discardPending", "provider.cleanupOrphans"], ["revoked", "pending version discarded"]],
    ["store.promote", ["provider.revoke", "store.discardPending", "provider.cleanupOrphans"], ["revoked", "pending version discarded"]],
  ])("overlap, %s fails: %j", async (op, calls, said) => {
    const { sim, t, violations } = await rotate({ policy: overlapPolicy("ld-api"), before: (s) => (pendingOnly(s), permanent(op)(s)) });
    expect(violations).toEqual([]);
    expect(undoCallsAfter(sim, t, op)).toEqual(calls);
    const rec = record(sim, t)!;
    expect(rec.status).toBe("failed");
    for (const s of said) expect(rec.message).toContain(s);
    // Nothing this rotation issued is live; the old credential is current and alone.
    expect(sim.creds.live(t.policy.id)).toHaveLength(1);
    expect(sim.store.holder(refOf(t.policy), AWSCURRENT)?.value).toBe(t.before?.value);
    expect(sim.store.holder(refOf(t.policy), AWSPENDING)).toBeUndefined();
    // The log is empty once run.
    expect((t.job.data as RotationJobData).undo).toEqual([]);
  });

  it("overlap, the issue's answer is lost and the next run fails before it issues: the orphan is removed once it can no longer land", async () => {
    // The create acts at the provider but its answer never comes; the next run's sweep reads the
    // stages first, and that read is refused for good.
    const op = "store.stages";
    const { sim, t, violations } = await rotate({
      policy: overlapPolicy("ld-api"),
      before: (s) => {
        s.world.next("provider.issue", { kind: "lose" });
        s.world.next(op, { kind: "fail", error: () => new PermanentError(`${op} refused (injected)`) }, 1);
      },
    });
    expect(violations).toEqual([]);
    expect(checkI1(sim, t)).toEqual([]);
    expect(undoCallsAfter(sim, t, op)).toEqual(["store.discardPending", "provider.cleanupOrphans"]);
    const own = sim.creds.all.filter((c) => c.issuedBy === t.rotationId);
    expect(own).toHaveLength(1);
    expect(own[0]!.diedAt).toBeDefined();
    expect(record(sim, t)?.message).toContain(`removed ${own[0]!.credentialId} (issued by this rotation, never stored)`);
  });

  it("a cut-over cancelled before its reset discards its version only, and ends failed: the old value is current", async () => {
    let cancelled = false;
    const { sim, t, violations } = await rotate({
      policy: cutoverPolicy("qstash-token"),
      // `rekey cancel` while start reads the current credential: the reset meets it (Run.commit).
      onCall: (s, tr, op) => {
        if (op === "provider.identify" && !cancelled) cancelled = s.cancel(tr.rotationId) === "ok";
        return undefined;
      },
    });
    expect(cancelled).toBe(true);
    expect(violations).toEqual([]);
    expect(sim.world.calls.some((c) => c.op === "provider.issue")).toBe(false);
    expect(sim.world.calls.filter((c) => UNDO_OPS.has(c.op)).map((c) => c.op)).toEqual(["store.discardPending"]);
    expect(record(sim, t)?.status).toBe("failed");
    expect(sim.store.holder(refOf(t.policy), AWSCURRENT)?.value).toBe(t.before?.value);
    expect(sim.creds.byValue(t.before!.value!)?.diedAt).toBeUndefined();
  });

  it("a human step that times out discards nothing it was not given and revokes nothing", async () => {
    const sim = new Sim({ humanAfter: undefined });
    const policy = sim.addPolicy(humanPolicy("snyk-pat"));
    const t = sim.enqueue(policy.id);
    expect(await runChecked(sim)).toEqual([]);
    const calls = sim.world.calls.filter((c) => UNDO_OPS.has(c.op)).map((c) => c.op);
    expect(calls).toEqual(["store.discardPending"]);
    expect(record(sim, t)?.status).toBe("needs-attention");
  });
});

describe("an interrupted clean-up resumes with what is left", () => {
  it("the discard fails after the revoke: the next run discards and cleans up, and revokes nothing twice", async () => {
    const { sim, t, violations } = await rotate({
      policy: overlapPolicy("ld-api"),
      before: (s) => {
        pendingOnly(s);
        permanent("provider.verify")(s);
        s.world.next("store.discardPending", { kind: "fail", error: () => new TransientError("store.discardPending: 503 (injected)") });
      },
    });
    expect(violations).toEqual([]);
    expect(undoCallsAfter(sim, t, "provider.verify")).toEqual(["provider.revoke", "store.discardPending", "store.discardPending", "provider.cleanupOrphans"]);
    // The job as the interrupted clean-up left it: the revoke done and gone from the log.
    const written = t.job.history.map((h) => JSON.parse(h) as RotationJobData).filter((d) => d.failing);
    const v = t.rotationId;
    expect(written.map((d) => d.undo?.length)).toEqual([3, 2, 2, 1, 0]);
    expect(written[1]!.undo).toEqual([{ undo: "cleanup-orphans" }, { undo: "discard-pending", versionId: v }]);
    // The interrupted run said what it undid; the run that finished says what it did.
    const said = sim.audit.rows.filter((r) => r.rotationId === v && r.outcome === "cleanup").map((r) => r.message);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/new credential \S+ revoked; the clean-up stopped .* with discard-pending \S+, cleanup-orphans left/);
    const rec = record(sim, t)!;
    expect(rec.status).toBe("failed");
    expect(rec.message).toContain("pending version discarded");
    expect(rec.message).not.toContain("revoked");
    expect(sim.creds.live(t.policy.id)).toHaveLength(1);
    expect(sim.store.holder(refOf(t.policy), AWSPENDING)).toBeUndefined();
  });

  it("an undo refused on every attempt ends the rotation needs-attention, naming what is not undone", async () => {
    const { sim, t, violations } = await rotate({
      policy: overlapPolicy("ld-api"),
      before: (s) => {
        pendingOnly(s);
        permanent("provider.verify")(s);
        for (let i = 0; i < 8; i++) permanent("provider.revoke")(s);
      },
    });
    const v = t.rotationId;
    // The credential the refused revoke names is left live: that is what the alert is about.
    expect(violations).toEqual([expect.stringMatching(new RegExp(`^I6 .*rotation ${v} failed and its new credential \\S+ is still live$`))]);
    const rec = record(sim, t)!;
    expect(rec.status).toBe("needs-attention");
    expect(rec.message).toContain(`revoke it by hand (not undone: revoke-stored ${v}, discard-pending ${v}, cleanup-orphans)`);
    expect(sim.world.calls.filter((c) => UNDO_OPS.has(c.op)).map((c) => c.op)).toEqual(Array(8).fill("provider.revoke"));
  });
});

describe("a job queued by an older rekey (no undo log)", () => {
  const legacy = (d: RotationJobData): RotationJobData => {
    const { undo: _none, ...old } = d;
    return old;
  };

  it("that fails after storing its value derives the log once and undoes what it did", async () => {
    const op = "provider.verify";
    let handedOver = false;
    const { sim, t, violations } = await rotate({
      policy: overlapPolicy("ld-api"),
      data: legacy,
      before: (s) => (pendingOnly(s), permanent(op)(s)),
      // The older rekey ran start and issuing (the value is AWSPENDING, the cursor at verifying)
      // and its worker died: this one resumes the job from the data that rekey wrote.
      onCall: (_s, tr, o) => {
        const d = tr.job.data as RotationJobData;
        if (handedOver || o !== "store.getVersion" || d.step !== "verifying") return undefined;
        handedOver = true;
        tr.job.data = legacy(d);
        return { kind: "crash-before" };
      },
    });
    expect(handedOver).toBe(true);
    expect(violations).toEqual([]);
    expect(undoCallsAfter(sim, t, op)).toEqual(["provider.revoke", "store.discardPending", "provider.cleanupOrphans"]);
    const failing = t.job.history.map((h) => JSON.parse(h) as RotationJobData).filter((d) => d.failing);
    // Derived once, written with the failure marker, as the older failure path worked it out.
    expect(failing[0]!.undo).toEqual([{ undo: "cleanup-orphans" }, { undo: "discard-pending", versionId: t.rotationId }, { undo: "revoke-stored", versionId: t.rotationId }]);
    const rec = record(sim, t)!;
    expect(rec.status).toBe("failed");
    expect(rec.message).toContain("revoked; pending version discarded");
    expect(sim.creds.live(t.policy.id)).toHaveLength(1);
    expect(sim.store.holder(refOf(t.policy), AWSPENDING)).toBeUndefined();
  });

  it("that fails at start, before anything was issued, undoes nothing", async () => {
    const op = "provider.identify";
    const { sim, t, violations } = await rotate({ policy: overlapPolicy("ld-api"), before: permanent(op), data: legacy });
    expect(violations).toEqual([]);
    expect(record(sim, t)?.status).toBe("failed");
    expect(undoCallsAfter(sim, t, op)).toEqual([]);
    expect(t.job.history.map((h) => JSON.parse(h) as RotationJobData).find((d) => d.failing)?.undo).toEqual([]);
  });
});
