/**
 * The in-memory state the step-table unit tests run on (test/fakes/memory.ts) means what
 * RekeyState's Redis scripts mean: the same sequence of lock, leak, record, cancel, confirmation,
 * wake and gate operations gives the same answers on both (real Redis here), so the unit tests cannot pass on
 * a fake that drifted from the real thing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Redis } from "ioredis";
import type { RotationState } from "../../src/rotation/ports.ts";
import { RekeyState } from "../../src/rotation/state.ts";
import type { RotationRecord } from "../../src/rotation/state/records.ts";
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
  log("A takes the lock", await s.locks.begin(rec(A)));
  log("B finds A holding it", await s.locks.begin(rec(B)));
  log("A resumed keeps it", await s.locks.begin({ ...rec(A), status: "failed" }));
  log("A's record is the first one written", (await s.records.get(A))?.status);
  log("a takeover of a holder that is not stale", await s.locks.takeOver("p1", B, C));
  log("a leak cannot join B", await s.locks.mergeLeak("p1", B));
  log("a leak joins A", await s.locks.mergeLeak("p1", A));
  log("leak flag", await s.records.leakAndEnded(A));
  let tx = s.transaction();
  s.records.claimPolicy(tx, { rotationId: A, policyId: "p1", startedAt: NOW });
  await s.records.update(A, { step: "promoting", policyId: "p1", updatedAt: NOW + 3 }, tx);
  await s.commit(tx);
  log("a cancel before the point of no return", await s.cancels.request(A, "ops", "", NOW + 3));
  log("the cancel asked for", await s.cancels.requested(A));
  log("the point of no return meets it", await s.cancels.commit(A, NOW + 4, "promotion"));
  log("a cancel of a missing rotation", await s.cancels.request(C, "ops", "why", NOW + 4));
  log("a cancel of a rotation never asked to", await s.cancels.requested(B));
  log("B passes its point of no return", await s.cancels.commit(B, NOW + 4, "reset"));
  log("a cancel after it", await s.cancels.request(B, "ops", "too late", NOW + 4));
  log("passing it again keeps the first time", [await s.cancels.commit(B, NOW + 6, "promotion"), (await s.records.get(B))?.committedAt, (await s.records.get(B))?.commitPoint]);
  log("a commit before a store write reads its gate too", await s.cancels.commitBeforeWrite(B, NOW + 6, "promotion", "scope"));
  log("and meets a cancel as commit does", await s.cancels.commitBeforeWrite(A, NOW + 6, "promotion", "scope"));
  await s.cancels.uncommit(B);
  log("back before it (a refused promotion)", [(await s.records.get(B))?.committedAt, await s.cancels.request(B, "ops", "now", NOW + 7), await s.cancels.requested(B)]);
  tx = s.transaction();
  s.records.readBeforePromotion(tx, A);
  await s.records.update(A, { step: "awaiting-confirmation", status: "awaiting-confirmation", promotedAt: NOW + 5, policyId: "p1", updatedAt: NOW + 5 }, tx);
  await s.fingerprints.index("fp-a", { policyId: "p1", versionId: A }, tx);
  log("the leak flag read with the promotion", (await s.commit(tx))[0]);
  log("a cancel after promotion", await s.cancels.request(A, "ops", "late", NOW + 6));
  log("a leak after promotion owes a follow-up", await s.locks.mergeLeak("p1", A, undefined));
  log("a leak naming A's version owes one too", await s.locks.mergeLeak("p1", A, A));
  log("first confirmation", await s.consumers.confirm(A, { consumerId: "c1", at: NOW + 7, via: "push", versionId: A }));
  log("the same again", await s.consumers.confirm(A, { consumerId: "c1", at: NOW + 9, via: "push" }));
  await s.consumers.markProbed(A, ["probe-1"], NOW + 9, 60);
  await s.wake.raise(A);
  const seen = await s.consumers.confirmationState(A);
  log("confirmation state", [seen.rec?.step, seen.rec?.promotedAt, seen.rec?.leak, [...seen.confirmed.values()]]);
  log("the wake flag was taken with the read", await s.wake.take(A));
  await s.wake.raise(A);
  log("a raised wake flag", [await s.wake.take(A), await s.wake.take(A)]);
  log(
    "the end's leak flags",
    await s.records.end({ rotationId: A, policyId: "p1" }, "completed", "done", NOW + 10, 60, {
      release: true,
      policy: { currentVersionId: A, currentCredentialId: "cred-a", currentMeta: JSON.stringify({ project: "p" }), cleanAfter: A },
    }),
  );
  tx = s.transaction();
  s.records.markLeakRetry(tx, A, C);
  await s.commit(tx);
  log("ended", await s.records.leakAndEnded(A));
  log("a cancel of an ended rotation", await s.cancels.request(A, "ops", "", NOW + 11));
  log("a leak cannot join an ended rotation", await s.locks.mergeLeak("p1", A));
  log("the record", await s.records.get(A));
  log("the lock is free again, and comes with the policy's facts", await s.locks.claim(rec(C)));
  log("a stale holder is taken over", await s.locks.takeOver("p1", C, B));
  await s.records.end({ rotationId: B, policyId: "p1" }, "skipped", undefined, NOW + 11, 60);
  log("skipped", await s.records.get(B));
  await s.records.put({ ...rec(C), status: "skipped", message: "another rotation holds p1" }, { claimsPolicy: false });
  log("a record put", await s.records.get(C));
  const D = "44444444-4444-4444-8444-444444444444";
  // A worker Redis forgot patches its record after a wipe: fields without the record's id.
  await s.records.update(D, { step: "revoking", endedAt: NOW + 12, updatedAt: NOW + 12 });
  log("fields without a record are no record", await s.records.get(D));
  log("the rotation queued again finds the policy held", await s.locks.begin({ ...rec(D), reason: "reconcile" }));
  log("and writes its own record over the fields", await s.records.get(D));
  await s.gates.close("scope", NOW + 1_000);
  await s.gates.close("scope", NOW + 500);
  log("an earlier gate does not shorten a later one", await s.gates.until("scope"));
  log("no gate", await s.gates.until("other"));
  log("a commit before a store write reads a closed gate", (await s.cancels.commitBeforeWrite(C, NOW + 13, "promotion", "scope")).gateUntil);
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
