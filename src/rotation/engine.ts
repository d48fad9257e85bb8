/**
 * The rotation protocol: one BullMQ job per rotation, a step cursor in its data, and steps that
 * each read the outside truth (store version stages, the provider) before acting, so a step re-run
 * after a crash or a lost lock changes nothing the first run already did.
 *
 *   start -> issuing | awaiting-human -> verifying -> promoting -> awaiting-confirmation
 *         -> revoking -> done
 *   failure before promotion: the new credential is cleaned up; the old one stays current (I6)
 *   failure after promotion: needs-attention, the old credential kept alive, retried later
 *
 * The engine decides; providers and the store act. Invariants are enforced where marked (I1–I6).
 *
 * The steps, one file each, form a table (steps/index.ts); the processor (processor.ts) runs them
 * from the job's cursor; a Run (run.ts) is what they share within one execution of a job.
 */
import type { RedisBatch } from "../util/redis-batch.ts";
import type { Logger } from "../log.ts";
import type { RotationObserver } from "../observe/metrics.ts";
import type { NotificationInput } from "../notify/outbox.ts";
import type { CredentialRef, Policy } from "../policy/schema.ts";
import type { ProviderRegistry } from "../providers/types.ts";
import type { SecretStore } from "../stores/types.ts";
import type { ProviderGateway } from "./gateway.ts";
import type { AuditLog, RotationJob, RotationState } from "./ports.ts";
import { type Linger, processRotation } from "./processor.ts";

/** What a step reports to the notification outbox (which adds provider, secret and time). */
export type EngineEvent = NotificationInput;

export interface PolicySource {
  get(policyId: string): Policy | undefined;
}

/** Points where fault-injection tests kill the worker (see workers/rotation-worker.ts). */
export type CrashPoint = "after-issue" | "after-store" | "after-promote";

/**
 * What the engine works with. `Tx` is the state's transaction (ports.ts): a Redis MULTI in
 * production (RekeyState, Audit), an in-memory one in the unit tests.
 */
export interface EngineDeps<Tx = RedisBatch> {
  state: RotationState<Tx>;
  audit: AuditLog<Tx>;
  store: SecretStore;
  providers: ProviderRegistry;
  policies: PolicySource;
  resolve(ref: CredentialRef): Promise<string>;
  notify(policy: Policy, event: EngineEvent): Promise<void>;
  /** Wake a delayed job (another rotation taken over by a leak). */
  wake(jobId: string): Promise<void>;
  /**
   * Queue a leak rotation of the policy for rotation `endedRotationId`, which a leak joined and
   * which ended without finishing the leak's work (state/records.ts, leakHandOffDue). Idempotent per
   * ended rotation; resolves to the new rotation's id.
   */
  requeueLeak(policyId: string, endedRotationId: string): Promise<string>;
  now(): number;
  log: Logger;
  /** REKEY_FINGERPRINT_KEY: fingerprints for confirmations and the leaked-value index. */
  fingerprintKey?: string;
  fetch?: typeof fetch;
  /**
   * How long a provider may still carry out a create that went unanswered here; leftovers are
   * swept again after it. Default: 4 × the request budget, at most engineDefaults.resetSettleMs.
   */
  lostRequestSettleMs?: number;
  /** Every provider call and store write goes through it: context, pacing, 429 gate (gateway.ts). */
  gateway: ProviderGateway;
  crashAt?: (point: CrashPoint) => void;
  sleep?: (ms: number) => Promise<void>;
  /** Step durations and failures for the metrics (src/observe/metrics.ts). */
  observer?: RotationObserver;
}

export class RotationEngine<Tx = RedisBatch> {
  private readonly sleep: (ms: number) => Promise<void>;
  /** Set by the worker that runs this engine (processes.ts): jobs linger before parking for confirmations. */
  linger: Linger | undefined;

  constructor(private readonly deps: EngineDeps<Tx>) {
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** The BullMQ processor. */
  readonly process = (job: RotationJob, token?: string, signal?: AbortSignal): Promise<{ status: string }> => processRotation(this.deps, this.sleep, job, token, signal, this.linger);
}
