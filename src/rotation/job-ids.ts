/**
 * Queue job ids of rotations, in one place. Deterministic where a request may come twice — a
 * slot on every scheduler replica, a leak incident asked again, an offboarding re-run — so the
 * queue holds one job per request and adding it again is a no-op. BullMQ custom job ids may not
 * contain ':'; '@' cannot appear in a policy id.
 */

/** A scheduled slot (epoch ms) of a policy: the same id on every replica. */
export function scheduledJobId(policyId: string, slot: number): string {
  return `sched@${policyId}@${slot}`;
}

export function manualJobId(policyId: string, rotationId: string): string {
  return `manual@${policyId}@${rotationId}`;
}

/** A leak rotation of a policy: one per incident (or per rotation, for a leak asked without one). */
export function leakJobId(policyId: string, incidentOrRotationId: string): string {
  return `leak@${policyId}@${incidentOrRotationId}`;
}

/** The leak rotation owed by an ended rotation that a leak joined (leakHandOffDue): one per ended rotation. */
export function leakHandOffJobId(policyId: string, endedRotationId: string): string {
  return leakJobId(policyId, `retry-${endedRotationId}`);
}

/**
 * The rotation reconcile queues again for the version it made current (its id is the version id):
 * one job per version, however many passes find it.
 */
export function reconcileJobId(policyId: string, versionId: string): string {
  return `reconcile@${policyId}@${versionId}`;
}

/** One offboarding rotation per (member, policy) and attempt: a re-run finds the same job and never duplicates it. */
export function offboardJobId(member: string, policyId: string, attempt = 1): string {
  const first = `offboard@${member.toLowerCase()}@${policyId}`;
  return attempt === 1 ? first : `${first}@${attempt}`;
}
