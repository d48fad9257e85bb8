/**
 * Every Redis key rekey uses, in one place: what each holds, and nothing else names them. All
 * live under the install's prefix, so one Redis can host several installs (and a Cluster, with a
 * hash-tagged prefix, keeps each install's keys in one slot). Keys hold ids, policy ids, consumer
 * ids and keyed fingerprints — never a secret value.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  private k(...parts: string[]): string {
    return [this.prefix, ...parts].join(":");
  }

  // ---- rotations -----------------------------------------------------------------------------

  /** I3: the policy's in-flight lock; holds the id of the rotation that holds the policy. */
  inflight(policyId: string): string {
    return this.k("inflight", policyId);
  }

  /** A rotation's record (hash; `rekey status`, the dashboard). */
  rotation(rotationId: string): string {
    return this.k("rot", rotationId);
  }

  /** A rotation's consumer confirmations (hash: consumer id → JSON). */
  confirmations(rotationId: string): string {
    return this.k("rot", rotationId, "confirmed");
  }

  /** When each probe consumer of a rotation was last polled (hash: consumer id → epoch ms). */
  probed(rotationId: string): string {
    return this.k("rot", rotationId, "probed");
  }

  /** Consumers' failure reports for a rotation (hash: consumer id → JSON). */
  consumerFailures(rotationId: string): string {
    return this.k("rot", rotationId, "failures");
  }

  /** Rotations not ended yet (sorted set scored by start). */
  active(): string {
    return this.k("active");
  }

  /**
   * The policy's summary: its last rotation, status, start, promotion and end, and what its last
   * completed rotation left for the next one (CurrentFacts: state/records.ts) (hash).
   */
  policy(policyId: string): string {
    return this.k("policy", policyId);
  }

  /** Wake flag: a parked rotation has something new to look at (a confirmation, a leak). */
  wake(rotationId: string): string {
    return this.k("wake", rotationId);
  }

  /**
   * The pub/sub channel of one worker process's lingering rotations (state/signals.ts), named by
   * the process's listener id; a rotation's record names the channel its wakes go to
   * (`listener`). A channel, not a key: it holds nothing.
   */
  wakeChannel(listenerId: string): string {
    return this.wakeChannels() + listenerId;
  }

  /** What every process wake channel's name starts with (the scripts that publish add the id). */
  wakeChannels(): string {
    return this.k("wakes", "");
  }

  /** The leaked-value index: a keyed fingerprint → the policy and version that hold it (a string: JSON). */
  fingerprint(fingerprint: string): string {
    return this.k("fpi", fingerprint);
  }

  /** The same index as rekey wrote it before (a hash); read until its entries expire (400 days). */
  fingerprintHash(fingerprint: string): string {
    return this.k("fp", fingerprint);
  }

  // ---- rate limits shared by every worker ----------------------------------------------------

  /** A throttle gate: closed (epoch ms) after a 429 from the provider or store of this scope. */
  gate(scope: string): string {
    return this.k("gate", scope);
  }

  /** Sliding-window reservations of a pacing scope (sorted set). */
  paceSliding(name: string): string {
    return this.k("pace", "sliding", name);
  }

  /** Reservations held until their request is answered (sorted set). */
  paceHeld(name: string): string {
    return this.k("pace", "held", name);
  }

  /** The counter that numbers a pacing log's entries (paceSliding, paceHeld). */
  sequence(log: string): string {
    return `${log}:seq`;
  }

  /** A provider's last announced budget (remaining, reset). */
  paceBudget(name: string): string {
    return this.k("pace", "budget", name);
  }

  // ---- human submissions ---------------------------------------------------------------------

  /** A one-time submit link (by the hash of its token). */
  submitLink(tokenHash: string): string {
    return this.k("submit-link", tokenHash);
  }

  /** The hashes of a rotation's submit links (set). */
  submitLinks(rotationId: string): string {
    return this.k("submit-links", rotationId);
  }

  /** A submission of a rotation's value in progress (short claim). */
  submitClaim(rotationId: string): string {
    return this.k("submit-claim", rotationId);
  }

  // ---- leaks and offboarding -----------------------------------------------------------------

  /** A leak incident's record (JSON). */
  leakIncident(incidentId: string): string {
    return this.k("leak", incidentId);
  }

  /** Leak incidents by creation time (sorted set; the dashboard's list). */
  leakIncidents(): string {
    return this.k("leaks");
  }

  /** A member's offboarding record (hash: policy id → JSON entry, `_member`). */
  offboard(member: string): string {
    return this.k("offboard", member);
  }

  /** Offboarded members by when their offboarding last ran (sorted set). */
  offboards(): string {
    return this.k("offboards");
  }

  // ---- scheduling and reconciliation ---------------------------------------------------------

  /** The last scheduled slot handled for a policy (hash: last, sched). */
  scheduleMark(policyId: string): string {
    return this.k("sched", "last", policyId);
  }

  /** Missed schedule slots (stream). */
  scheduleMissed(): string {
    return this.k("sched", "missed");
  }

  /** One reconcile pass per period across replicas (claim with expiry). */
  reconcilePass(): string {
    return this.k("reconcile", "pass");
  }

  /** What the last reconcile pass observed (hash: policy id → JSON). */
  reconcileSeen(): string {
    return this.k("reconcile", "seen");
  }

  // ---- audit and API -------------------------------------------------------------------------

  /** The audit trail (stream), or one policy's slice of it. */
  audit(policyId?: string): string {
    return policyId ? this.k("audit", "policy", policyId) : this.k("audit");
  }

  /** The audit sink's checkpoint (hash: last id, sequence, chain hash). */
  auditSink(): string {
    return this.k("audit", "sink");
  }

  /** The audit sink's lease (one shipper at a time). */
  auditSinkLease(): string {
    return this.k("audit", "sink", "lease");
  }

  /** API tokens by hash (hash: token hash → record JSON). */
  apiTokens(): string {
    return this.k("auth", "tokens");
  }

  /** API token names → their hash (hash). */
  apiTokenNames(): string {
    return this.k("auth", "token-names");
  }

  /** The API's rate-limit counters (the rate-limit plugin appends its own key). */
  apiRateLimitNamespace(): string {
    return `${this.k("ratelimit")}:`;
  }

  /** BullMQ's own keys (queues, jobs) live under this prefix. */
  queues(): string {
    return this.k("bull");
  }
}
