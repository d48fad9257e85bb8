/**
 * The failure path's undo log (a saga). The steps that change the outside world record in the job
 * data (job.ts, `undo`) what undoes it — before an action that may land without an answer (a
 * create that times out, a store write whose answer is lost), so every entry is idempotent — and
 * Run.fail runs what is recorded, last first, each entry removed from the log once done: a clean-up
 * interrupted half-way resumes with what is left. Ids only: a value is read back when it is undone.
 */
import type { StoredVersion } from "../stores/types.ts";
import type { UndoEntry } from "./job.ts";
import type { Data, Run } from "./run.ts";

function same(a: UndoEntry, b: UndoEntry): boolean {
  return a.undo === b.undo && (a.undo === "cleanup-orphans" || a.versionId === (b as { versionId?: string }).versionId);
}

/** `log` with the entries it does not hold yet appended (the same array where none is new). */
export function withEntries(log: UndoEntry[] | undefined, entries: UndoEntry[]): UndoEntry[] {
  const held = log ?? [];
  const add = entries.filter((e) => !held.some((x) => same(x, e)));
  return add.length ? [...held, ...add] : held;
}

/** Append to the run's log the entries it does not hold yet; true where it grew. */
export function record<Tx>(run: Run<Tx>, entries: UndoEntry[]): boolean {
  const log = run.data.undo ?? [];
  const undo = withEntries(log, entries);
  if (undo === log) return false;
  run.data = { ...run.data, undo };
  return true;
}

/**
 * Record the compensation of an action that may land without an answer, and write it to the job
 * before the action is sent (a worker that dies during the call leaves it on the job).
 */
export async function intend<Tx>(run: Run<Tx>, entries: UndoEntry[]): Promise<void> {
  if (record(run, entries)) await run.job.updateData(run.data);
}

/** A leak's issue replaces every credential at once (compromise mode, Provider.replaceAll). */
export function leakReplaces<Tx>(run: Run<Tx>): boolean {
  return run.data.reason === "leak" && run.caps.leakReplace === true && run.provider.replaceAll !== undefined;
}

/** A new credential stored under the rotation's version can be revoked (a reset's keeps the old one's id). */
function revocable<Tx>(run: Run<Tx>): boolean {
  return run.caps.issue !== "reset" && run.caps.revoke === "api" && run.provider.revoke !== undefined;
}

/**
 * What an issue and the store write after it undo, recorded before the issue is sent: the
 * credentials a create whose answer was lost left (overlap), the pending version, and the
 * credential it holds. After a replace (a leak's compromise mode) the new credential is the only
 * live one: it is never revoked, and there are no orphans to look for.
 */
export function issueUndo<Tx>(run: Run<Tx>, replace: boolean): UndoEntry[] {
  const versionId = run.data.rotationId;
  const out: UndoEntry[] = [];
  if (!replace && run.caps.issue === "overlap" && run.provider.cleanupOrphans) out.push({ undo: "cleanup-orphans" });
  out.push({ undo: "discard-pending", versionId });
  if (!replace && revocable(run)) out.push({ undo: "revoke-stored", versionId });
  return out;
}

/** What a human's submission (written under the rotation's version at any time once asked) undoes. */
export function humanUndo<Tx>(run: Run<Tx>): UndoEntry[] {
  const versionId = run.data.rotationId;
  return [{ undo: "discard-pending", versionId }, ...(revocable(run) ? [{ undo: "revoke-stored", versionId } as const] : [])];
}

/** The new credential is stored: its revoke names it by id from here on. */
export function storedAs<Tx>(run: Run<Tx>, credentialId: string | undefined, meta: Record<string, string> | undefined): void {
  const log = run.data.undo;
  if (!log || !credentialId) return;
  run.data = { ...run.data, undo: log.map((e) => (e.undo === "revoke-stored" && e.versionId === run.data.rotationId ? { ...e, credentialId, meta } : e)) };
}

/**
 * The log of a job whose data holds none: the one the start step wrote to the record, or for a job
 * queued by an older rekey, which kept none, derived once from its fields, as that rekey's
 * failure path worked it out. Something may have been issued once a run got past
 * start — the cursor or the record (start's outcome is not written to the job) says so.
 */
export async function legacyUndo<Tx>(run: Run<Tx>, d: Data): Promise<UndoEntry[]> {
  const rec = d.step === "start" ? await run.deps.state.records.get(d.rotationId) : undefined;
  // The start step wrote the log to the record with its move to issuing (the job may not hold it yet).
  if (rec?.undo) return rec.undo;
  const pastStart = d.step !== "start" || rec?.step !== "start";
  if (!pastStart) return [];
  if (run.caps.issue === "human") return humanUndo(run);
  return issueUndo(run, d.oldRevokedByReplace === true);
}

/**
 * Run the log, last entry first; each is removed from it — and the job data written — once done.
 * `mine`: the rotation's version as the failure path read it. Pushes what was undone, in words,
 * to `done`; an undo that throws leaves itself and the entries before it in the log.
 */
export async function runUndo<Tx>(run: Run<Tx>, mine: StoredVersion | undefined, done: string[]): Promise<void> {
  for (let log = run.data.undo ?? []; log.length; log = run.data.undo ?? []) {
    const text = await undoOne(run, log[log.length - 1]!, mine);
    if (text) done.push(text);
    run.data = { ...run.data, undo: log.slice(0, -1) };
    await run.job.updateData(run.data);
  }
}

async function undoOne<Tx>(run: Run<Tx>, entry: UndoEntry, mine: StoredVersion | undefined): Promise<string | undefined> {
  const d = run.data;
  const { provider } = run;
  switch (entry.undo) {
    case "revoke-stored": {
      const stored = entry.versionId === d.rotationId ? mine : await run.readVersion(entry.versionId);
      // Never stored: what was issued is revoked by the step (its value was in memory) or found by the orphan clean-up.
      if (!stored || !provider.revoke) return undefined;
      const credentialId = entry.credentialId ?? d.newCredentialId;
      await run.providerCall(() => provider.revoke!(run.ctx(), { value: stored.value, credentialId, meta: entry.meta ?? d.newMeta }));
      return `new credential${credentialId ? ` ${credentialId}` : ""} revoked`;
    }
    case "discard-pending": {
      await run.storeWrite(() => run.deps.store.discardPending(run.ref, entry.versionId, run.signal));
      return entry.versionId === d.rotationId && mine ? "pending version discarded" : undefined;
    }
    case "cleanup-orphans": {
      if (!provider.cleanupOrphans) return undefined;
      // A create whose answer was lost (dropped after the provider acted) left a credential no
      // version holds: before promotion nothing this rotation issued may stay live (I1).
      const removed = await run.providerCall(() => provider.cleanupOrphans!(run.ctx(), undefined));
      return removed.length ? `removed ${removed.join(", ")} (issued by this rotation, never stored)` : undefined;
    }
  }
}

/** The log's entries in the order they run, in words (what a clean-up interrupted half-way left). */
export function describeUndo(log: UndoEntry[] | undefined): string {
  return [...(log ?? [])].reverse().map((e) => (e.undo === "cleanup-orphans" ? e.undo : `${e.undo} ${e.versionId}`)).join(", ") || "nothing";
}
