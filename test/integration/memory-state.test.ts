/**
 * The in-memory state the step-table unit tests run on (test/fakes/memory.ts) means what
 * RekeyState's Redis scripts mean: the same sequence of lock, leak, record, confirmation and gate
 * operations gives the same answers on both (real Redis here), so the unit tests cannot pass on
 * a fake that drifted from the real thing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Redis } from "ioredis";
import type { RotationState } from "../../src/rotation/ports.ts";
import { RekeyState, type RotationRecord } from "../../src/rotation/state.ts";
import { World } from "../fakes/memory-world.ts";
import { MemoryState } from "../fakes/memory.ts";
import { connect, deleteKeys, testPrefix } from "../helpers/redis.ts";

// Near the real time: Redis expires the gate key by the wall clock.
const NOW = Date.now();
const [A, B, C] = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"];

function rec(rotationId: string, reason = "manual"): RotationRecord {
  return { rotationId, policyId: "p1", reason, actor: "test", status: "running", step: "start", jobId: `job-${rotationId}`, startedAt: NOW, updatedAt: NOW };
}

/** One history of the operations the steps use; every answer, in order. */
async function history<Tx>(s: RotationState<Tx>): Promise<unknown[]> {
  const out: unknown[] = [];
  const log = (label: string, v: unknown) => out.push([label, v]);
  log("A takes the lock", await s.begin(rec(A)));
  log("B finds A holding it", await s.begin(rec(B)));
  log("A resumed keeps it", await s.begin({ ...rec(A), status: "failed" }));
  log("A's record is the first one written", (await s.getRecord(A))?.status);
  log("a takeover of a holder that is not stale", await s.takeOver("p1", B, C));
  log("a leak cannot join B", await s.mergeLeak("p1", B));
  log("a leak joins A", await s.mergeLeak("p1", A));
  log("leak flag", await s.leakAndEnded(A));
  let tx = s.multi();
  await s.updateRecord(A, { step: "awaiting-confirmation", status: "awaiting-confirmation", promotedAt: NOW + 5, policyId: "p1", updatedAt: NOW + 5 }, tx);
  s.patchPolicy("p1", { lastPromotedAt: String(NOW + 5) }, tx);
  await s.indexFingerprint("fp-a", { policyId: "p1", versionId: A }, tx);
  await s.commit(tx);
  log("a leak after promotion owes a follow-up", await s.mergeLeak("p1", A, undefined));
  log("a leak naming A's version owes one too", await s.mergeLeak("p1", A, A));
  log("first confirmation", await s.confirm(A, { consumerId: "c1", at: NOW + 7, via: "push", versionId: A }));
  log("the same again", await s.confirm(A, { consumerId: "c1", at: NOW + 9, via: "push" }));
  await s.raiseWakeFlag(A);
  const seen = await s.confirmationState(A);
  log("confirmation state", [seen.rec?.step, seen.rec?.promotedAt, seen.rec?.leak, [...seen.confirmed.values()]]);
  log("the wake flag was taken with the read", await s.takeWakeFlag(A));
  await s.raiseWakeFlag(A);
  log("a raised wake flag", [await s.takeWakeFlag(A), await s.takeWakeFlag(A)]);
  tx = s.multi();
  await s.endRecord({ rotationId: A, policyId: "p1" }, "completed", "done", NOW + 10, 60, { release: true, pipe: tx });
  s.noteLeakRetry(A, C, tx);
  log("the end's leak flags", (await s.commit(tx))[0]);
  log("ended", await s.leakAndEnded(A));
  log("a leak cannot join an ended rotation", await s.mergeLeak("p1", A));
  log("the record", await s.getRecord(A));
  log("the lock is free again", await s.begin(rec(C)));
  log("a stale holder is taken over", await s.takeOver("p1", C, B));
  await s.endRecord({ rotationId: B, policyId: "p1" }, "skipped", undefined, NOW + 11, 60);
  log("skipped", await s.getRecord(B));
  await s.closeGate("scope", NOW + 1_000);
  await s.closeGate("scope", NOW + 500);
  log("an earlier gate does not shorten a later one", await s.gate("scope"));
  log("no gate", await s.gate("other"));
  return out;
}

describe("the in-memory state of the unit tests", () => {
  let redis: Redis;
  const prefix = testPrefix("memstate");
  beforeAll(() => {
    redis = connect();
  });
  afterAll(async () => {
    await deleteKeys(redis, prefix);
    redis.disconnect();
  });

  it("answers as RekeyState on Redis does", async () => {
    const inMemory = await history(new MemoryState(new World()));
    const onRedis = await history(new RekeyState(redis, prefix));
    expect(inMemory).toEqual(onRedis);
  });
});
