/**
 * The processor does not write the outcome of a step that only reads the outside truth (start,
 * verifying: a re-run finds the same): one Redis round trip less. An undo entry is never left to
 * that skip. No step of the table records one there today, so verifying is given one here — as a
 * step that came to change the world would — and the job must hold it before the next step acts.
 */
import { describe, expect, it, vi } from "vitest";
import type { RotationJobData } from "../../src/rotation/job.ts";
import type { StepFn } from "../../src/rotation/run.ts";
import { overlapPolicy, Sim } from "../helpers/rotation-sim.ts";

vi.mock("../../src/rotation/steps/verifying.ts", async (importOriginal) => {
  const real = await importOriginal<{ verifying: StepFn }>();
  const { record } = await import("../../src/rotation/undo.ts");
  return {
    verifying: (async (run) => {
      const out = await real.verifying(run);
      record(run, [{ undo: "discard-pending", versionId: "recorded-by-verifying" }]);
      return { ...out, data: { ...out.data, undo: run.data.undo } };
    }) satisfies StepFn,
  };
});

describe("the processor's write of a rereadable step's outcome", () => {
  it("is not skipped when the step recorded an undo entry", async () => {
    const sim = new Sim();
    const policy = sim.addPolicy(overlapPolicy("ld-api"));
    // AWSPENDING first, so verifying runs (and promoting after it).
    Object.defineProperty(sim.store, "putCurrent", { value: undefined });
    const t = sim.enqueue(policy.id);
    let atPromote: RotationJobData | undefined;
    sim.world.random = (op) => {
      if (op === "store.promote" && !atPromote) atPromote = structuredClone(t.job.data) as RotationJobData;
      return undefined;
    };
    await sim.run();
    expect(sim.state.db.records.get(t.rotationId)?.status).toBe("completed");
    expect(atPromote?.undo).toContainEqual({ undo: "discard-pending", versionId: "recorded-by-verifying" });
    expect(atPromote?.step).toBe("promoting");
  });
});
