/**
 * The rotation job's data: a versioned cursor and provider artifacts (ids, never values). A
 * payload that does not parse is unrecoverable (it was written by something else, or by a version
 * that no longer exists), not retried.
 */
import { z } from "zod";

export const STEPS = [
  "start",
  "issuing",
  "awaiting-human",
  "verifying",
  "promoting",
  "awaiting-confirmation",
  "revoking",
  "done",
] as const;
export type Step = (typeof STEPS)[number];

/**
 * `reconcile`: a rotation Redis forgot after its new value became current, queued again by
 * `rekey reconcile` so that consumers confirm that value and the previous credential is revoked.
 */
export const REASONS = ["scheduled", "manual", "leak", "offboarding", "reconcile"] as const;
export type Reason = (typeof REASONS)[number];

const Meta = z.record(z.string(), z.string());

/**
 * A compensation the failure path runs (undo.ts): ids only, never a value. Each names an action
 * that is idempotent, so one recorded before its action (the action may land without an answer)
 * or run twice (a clean-up interrupted half-way) does no harm.
 */
export const UndoEntry = z.discriminatedUnion("undo", [
  /** Revoke the credential version `versionId` holds (its value read back; nothing if the version is gone). */
  z.object({ undo: z.literal("revoke-stored"), versionId: z.string(), credentialId: z.string().optional(), meta: Meta.optional() }),
  /** Discard version `versionId` as AWSPENDING (nothing if it is not). */
  z.object({ undo: z.literal("discard-pending"), versionId: z.string() }),
  /** Remove the credentials this rotation issued that no version holds (a create whose answer was lost). */
  z.object({ undo: z.literal("cleanup-orphans") }),
]);
export type UndoEntry = z.infer<typeof UndoEntry>;

export const RotationJobData = z.object({
  v: z.literal(1),
  rotationId: z.uuid(),
  policyId: z.string().min(1),
  reason: z.enum(REASONS),
  /** Who asked: `scheduler`, `cli:<user>`, `api:admin`, … */
  actor: z.string().min(1),
  /** Scheduled slot (epoch ms). */
  slot: z.number().int().optional(),
  /** Offboarding: the member the new credential is issued for. */
  successor: z.string().optional(),
  /** Offboarding: the departed member. */
  member: z.string().optional(),
  /** Leak: the store version that holds the leaked value, where the value itself was given. */
  leakedVersionId: z.string().optional(),
  step: z.enum(STEPS),
  /** Store version that was AWSCURRENT when the rotation started: the credential to revoke. */
  oldVersionId: z.string().optional(),
  oldCredentialId: z.string().optional(),
  oldMeta: Meta.optional(),
  newCredentialId: z.string().optional(),
  newMeta: Meta.optional(),
  /** A reset provider was asked for a new value: the old one may be dead from here on. */
  issueStarted: z.boolean().optional(),
  /** When the last reset call was sent (epoch ms): a reset is never sent again before it could have landed. */
  issueStartedAt: z.number().int().optional(),
  /**
   * When a request of this rotation that creates a credential got no answer (timed out, the
   * connection failed): the provider may still carry it out. Leftovers are swept again once it no
   * longer can (engine: lostRequestSettleMs).
   */
  issueLostAt: z.number().int().optional(),
  /**
   * A create of this rotation was sent and no answer with its value was kept yet (set before the
   * call, cleared by the answer). Only where a credential whose value was lost cannot be found
   * again (Run.lostIsUnfindable: Snyk's client secrets): a failure before the
   * value was stored ends needs-attention naming the remedy (a leak rotation's replace).
   */
  issueUnanswered: z.boolean().optional(),
  /**
   * Issuing's sweep kept the AWSPREVIOUS version's credential (its rotation may have been forgotten
   * by Redis before it revoked it, I2): the last sweep, after the confirmations, must run.
   */
  keptPrevious: z.boolean().optional(),
  /** The old credential is revoked; only the final sweep is left (it waits for a lost create). */
  oldRevoked: z.boolean().optional(),
  /** The old credential was replaced by a compromise-mode call (it is already dead). */
  oldRevokedByReplace: z.boolean().optional(),
  startedAt: z.number().int(),
  promotedAt: z.number().int().optional(),
  humanRequestedAt: z.number().int().optional(),
  lastReminderAt: z.number().int().optional(),
  /** Set when the rotation was flagged needs-attention, so the alert is sent once. */
  attentionSince: z.number().int().optional(),
  /**
   * The failure path is under way (Run.fail), with the error that started it: an interrupted
   * clean-up resumes as clean-up, never as the step that failed.
   */
  failing: z.string().optional(),
  /**
   * The undo log (saga): what the failure path undoes, in reverse order, each entry removed once
   * done. Appended by the steps that change the outside world, before an action that may land
   * without an answer. Absent only in a job queued by an older rekey (undo.ts derives it once).
   */
  undo: z.array(UndoEntry).optional(),
  /** The failure that started the failure path needs a person (AttentionError): the rotation ends needs-attention. */
  failingAttention: z.boolean().optional(),
  /** The failure path was started by `rekey cancel`: a human step cancelled is not one that timed out. */
  failingCancelled: z.boolean().optional(),
});
export type RotationJobData = z.infer<typeof RotationJobData>;
