/**
 * The one way rekey calls a provider and writes the store, whoever calls (a rotation's steps, a
 * human's submission, offboarding's discovery): the provider context, pacing against the budgets
 * every worker shares (pacing.ts), the 429 gate that a refusal closes for every worker, the AWS
 * write pacing, and the work's time budget.
 */
import { RateLimitedError, SecretQuotaError } from "../errors.ts";
import type { Capabilities, Provider, ProviderContext, ProviderRegistry, RotationReason } from "../providers/types.ts";
import type { CredentialRef, Policy, ProviderConfig } from "../policy/schema.ts";
import { paceRequests } from "../providers/http.ts";
import type { SecretRef } from "../stores/types.ts";
import { engineDefaults } from "./defaults.ts";
import { AWS_WRITE_HOLD_MS, AWS_WRITE_POLL_MS, CLOCK_SKEW_MS, type ProviderRates, rateOf } from "./pacing.ts";
import { OPEN_ADMIT_MS, OpenAdmits, ProviderPacer } from "./provider-pacer.ts";
import type { GatePort, PaceLimiter } from "./ports.ts";
import { providerScope, refOf, storeScope } from "./scope.ts";

export interface GatewayDeps {
  /** The 429 gates every worker obeys (RekeyState.gates). */
  state: { gates: GatePort };
  /** The budgets every worker shares (pacing.ts RateLimiter on rekey's Redis). */
  limiter: PaceLimiter;
  providers: ProviderRegistry;
  resolve(ref: CredentialRef): Promise<string>;
  now(): number;
  sleep?: (ms: number) => Promise<void>;
  /** Per-kind overrides of the documented provider limits paced proactively (pacing.ts); null turns one off. */
  providerRates?: ProviderRates;
  /** AWS write pacing (per region, shared by all workers through Redis); default 50/s. */
  awsWritesPerSecond?: number;
}

/** One piece of work on one policy: a rotation's run, a submission, one offboarding call. */
export interface Work {
  /** The rotation the calls belong to (adapters name new credentials with it); a fresh id outside a rotation. */
  rotationId: string;
  reason: RotationReason;
  /** The successor member (offboarding rotations). */
  successor?: string;
  /** Aborts every call of the work (the job's lock lost, the worker stopping). */
  signal?: AbortSignal;
  /** The whole work's time budget (ms); none by default. */
  timeoutMs?: number;
  /**
   * Calls of a rotation run with the provider config for its reason (Provider.rotationConfig);
   * calls outside a rotation (discovery) with the policy's own. Default true.
   */
  rotation?: boolean;
}

export class ProviderGateway {
  private readonly sleep: (ms: number) => Promise<void>;
  /** What this process knows to be open without asking Redis, shared by every piece of work (pacing.ts). */
  private readonly admits = new OpenAdmits();

  constructor(private readonly deps: GatewayDeps) {
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  open(policy: Policy, work: Work): PolicyCalls {
    return new PolicyCalls(this.deps, this.deps.limiter, this.sleep, policy, work, this.admits);
  }
}

/** A policy's provider and store as one piece of work sees them. */
export class PolicyCalls {
  readonly provider: Provider;
  /** The policy's provider config, as the provider runs it for this work. */
  readonly config: ProviderConfig;
  readonly caps: Capabilities;
  readonly ref: SecretRef;
  /** Rate-limit scope of the provider (providerScope) and of the store (storeScope). */
  readonly pScope: string;
  readonly sScope: string;
  readonly signal: AbortSignal;
  /** Until when the store's throttle gate counts as open for this work (storeWrite). */
  private storeGateOpenUntil = 0;
  private readonly pacer: ProviderPacer;

  constructor(
    private readonly deps: GatewayDeps,
    private readonly limiter: PaceLimiter,
    private readonly sleep: (ms: number) => Promise<void>,
    readonly policy: Policy,
    private readonly work: Work,
    admits?: OpenAdmits,
  ) {
    this.provider = deps.providers[policy.provider.kind] as Provider;
    this.config = work.rotation === false ? policy.provider : (this.provider.rotationConfig?.(policy.provider as never, work.reason) ?? policy.provider);
    this.caps = this.provider.capabilities(this.config as never);
    this.ref = refOf(policy);
    this.pScope = providerScope(policy.provider);
    this.sScope = storeScope(this.ref);
    const budget = work.timeoutMs === undefined ? undefined : AbortSignal.timeout(work.timeoutMs);
    this.signal = budget && work.signal ? AbortSignal.any([work.signal, budget]) : (budget ?? work.signal ?? new AbortController().signal);
    // Every HTTP request a provider makes with this work's signal (ctx().signal) is paced against
    // the shared budgets (pacing.ts), so a mass rotation waits before a limit instead of
    // collecting 429s from requests already in flight.
    this.pacer = new ProviderPacer({ limiter, scope: this.pScope, rate: rateOf(policy.provider.kind, deps.providerRates), now: deps.now, sleep, signal: this.signal, open: admits });
    paceRequests(this.signal, this.pacer);
  }

  private get now(): number {
    return this.deps.now();
  }

  ctx(): ProviderContext {
    return {
      config: this.config,
      policyId: this.policy.id,
      rotationId: this.work.rotationId,
      signal: this.signal,
      resolve: this.deps.resolve,
      now: this.deps.now,
      reason: this.work.reason,
      successor: this.work.successor,
    };
  }

  /**
   * ctx(), for calls that check a credential this work issued a moment ago: their requests with it
   * skip the budget read no one can have written yet (ProviderPacer.fresh).
   */
  freshCtx(): ProviderContext {
    const signal = AbortSignal.any([this.signal]);
    paceRequests(signal, this.pacer.fresh());
    return { ...this.ctx(), signal };
  }

  /** A provider call (paced: see the constructor); a 429 closes the gate for every worker. */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RateLimitedError) {
        await this.deps.state.gates.close(this.pScope, err.retryAt);
        throw new RateLimitedError(this.pScope, err.retryAt, err.message);
      }
      throw err;
    }
  }

  /**
   * The store's throttle gate as read a moment ago with another request (the commit before a
   * write): open, it counts as open for OPEN_ADMIT_MS, as storeWrite's own read would.
   */
  storeGateRead(until: number): void {
    if (until <= this.now) this.storeGateOpenUntil = this.now + OPEN_ADMIT_MS;
  }

  /**
   * A store call behind the AWS write pacing and the shared throttle gate. `writes` is how many
   * quota-counted requests the call makes (promote: move AWSCURRENT, then drop AWSPENDING).
   * `reserved` is called once the call has its slots, right before it is sent (hedge's armOnSent).
   */
  async storeWrite<T>(fn: () => Promise<T>, writes = 1, reserved?: () => void): Promise<T> {
    const perSec = this.deps.awsWritesPerSecond ?? engineDefaults.awsWritesPerSecond;
    const limiter = this.limiter;
    // A sliding window (AWS counts any second, not calendar seconds) in which each write counts
    // from its reservation until its answer, then for the window: it reached AWS in between, so
    // network delay needs no margin (pacing.ts reserveHeld); only worker clock skew does.
    const rate = { limit: perSec, windowMs: 1_000 + CLOCK_SKEW_MS };
    let held: string[] = [];
    for (;;) {
      // The shared throttle gate, read again at most every OPEN_ADMIT_MS within a work (a
      // rotation's two writes come milliseconds apart); this work's own throttling resets it.
      if (this.storeGateOpenUntil <= this.now) {
        const until = await this.deps.state.gates.until(this.sScope);
        if (until > this.now) {
          if (until - this.now > 2_000) throw new RateLimitedError(this.sScope, until);
          await this.sleep(until - this.now);
          continue;
        }
        this.storeGateOpenUntil = this.now + OPEN_ADMIT_MS;
      }
      if (!Number.isFinite(perSec)) break;
      const r = await limiter.reserveHeld(this.sScope, writes, rate, this.now, AWS_WRITE_HOLD_MS);
      if ("held" in r) {
        held = r.held;
        break;
      }
      // Longer than the window: the slot is held by a write still in flight, which settles sooner.
      await this.sleep(r.waitMs > rate.windowMs + 1 ? AWS_WRITE_POLL_MS : r.waitMs);
    }
    reserved?.();
    try {
      return await fn();
    } catch (err) {
      // A throttle closes the region's gate for every worker; one secret's own quota closes nothing.
      if (err instanceof RateLimitedError && !(err instanceof SecretQuotaError)) {
        this.storeGateOpenUntil = 0;
        await this.deps.state.gates.close(this.sScope, err.retryAt);
      }
      throw err;
    } finally {
      await limiter.settle(this.sScope, held, this.now).catch(() => undefined);
    }
  }
}
