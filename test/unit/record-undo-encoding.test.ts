/**
 * The undo log the start step writes to a rotation's record is kept short, so the record stays in
 * Redis's compact hash encoding (values up to 64 bytes): it reads back as the log it was.
 */
import { describe, expect, it } from "vitest";
import type { UndoEntry } from "../../src/rotation/job.ts";
import { parseRecord, toHash } from "../../src/rotation/state/records.ts";

const R = "0bc83264-62ba-412a-8a9e-c23dcddcb5a5";
const OTHER = "11111111-1111-4111-8111-111111111111";
const base = { rotationId: R, policyId: "p", reason: "manual", actor: "t", status: "running" as const, step: "issuing", jobId: "j", startedAt: 1, updatedAt: 2 };

describe("a record's undo log", () => {
  it("issuing's log fits a compact hash value and reads back whole", () => {
    const undo: UndoEntry[] = [{ undo: "cleanup-orphans" }, { undo: "discard-pending", versionId: R }, { undo: "revoke-stored", versionId: R }];
    const h = toHash({ ...base, undo });
    expect(h.undo).toBe("cleanup-orphans discard-pending revoke-stored");
    expect(Buffer.byteLength(h.undo!)).toBeLessThanOrEqual(64);
    expect(parseRecord(h)?.undo).toEqual(undo);
  });

  it("a patch without the rotation id is encoded against the id it is written to", () => {
    const h = toHash({ undo: [{ undo: "discard-pending", versionId: R }] }, R);
    expect(h.undo).toBe("discard-pending");
    expect(parseRecord({ ...toHash(base), ...h })?.undo).toEqual([{ undo: "discard-pending", versionId: R }]);
  });

  it("another version's entry names it; an entry with more than ids is kept as JSON", () => {
    const other: UndoEntry[] = [{ undo: "discard-pending", versionId: OTHER }];
    expect(parseRecord(toHash({ ...base, undo: other }))?.undo).toEqual(other);
    const withCredential: UndoEntry[] = [{ undo: "revoke-stored", versionId: R, credentialId: "cred-1", meta: { project: "p" } }];
    const h = toHash({ ...base, undo: withCredential });
    expect(h.undo?.startsWith("[")).toBe(true);
    expect(parseRecord(h)?.undo).toEqual(withCredential);
  });

  it("a value that is not an undo log is left out, not guessed", () => {
    expect(parseRecord({ ...toHash(base), undo: "rm -rf" })?.undo).toBeUndefined();
  });
});
