/**
 * The outside world of a rotation, in memory, for the step-table unit tests: a clock, a fault
 * plan and a secret store that keeps AWS Secrets Manager's version stages (the providers are in
 * memory-providers.ts). Every call goes through World.call, which applies the fault plan: fail
 * the call, act and lose the answer, or kill the process before or after it acts (a crash: every
 * later call of the runs in flight fails too, as in a dead worker).
 */
import { uniformFloat64 } from "pure-rand/distribution/uniformFloat64";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";
import { PermanentError, TransientError, UnansweredError } from "../../src/errors.ts";
import { AWSCURRENT, AWSPENDING, AWSPREVIOUS, type SecretRef, type SecretStore, type StoredVersion, type VersionInfo } from "../../src/stores/types.ts";

/** A seeded generator of numbers in [0, 1): a fault schedule is reproduced from its seed. */
export function rng(seed: number): () => number {
  const g = xoroshiro128plus(seed);
  return () => uniformFloat64(g);
}

/** The process running the steps died (injected). */
export class Crash extends Error {
  override name = "Crash";
}

export type FaultKind = "fail" | "lose" | "crash-before" | "crash-after";
export interface Fault {
  kind: FaultKind;
  /** For "fail": the error thrown (default: a TransientError, as a 5xx). */
  error?: () => Error;
}

export class Clock {
  constructor(public t = Date.UTC(2026, 0, 5, 3, 0, 0)) {}
  readonly now = (): number => this.t;
  readonly sleep = async (ms: number): Promise<void> => {
    this.t += Math.max(0, Math.ceil(ms));
  };
}

/** One call that reached the world, in order: what the fault plan and the checks look at. */
export interface CallRecord {
  op: string;
  at: number;
  rotationId?: string;
  fault?: FaultKind;
}

export class World {
  readonly clock = new Clock();
  /** Queued faults per operation ("provider.issue", "store.promote", "state.commit", …). */
  private readonly queued = new Map<string, { skip: number; fault: Fault }[]>();
  /** Asked for every call that has no queued fault (seeded random schedules). */
  random: ((op: string) => Fault | undefined) | undefined;
  readonly calls: CallRecord[] = [];
  /** Every secret value that ever existed here: none may leak into state, logs or errors (I5). */
  readonly secrets = new Set<string>();
  dead = false;
  /** The runs in flight (their signals): a crash aborts them all. */
  readonly runs = new Set<AbortController>();
  private n = 0;

  constructor(readonly random01: () => number = rng(1)) {}

  /** Queue `fault` for the next call of `op` (after `skip` calls that go through). */
  next(op: string, fault: Fault, skip = 0): void {
    const list = this.queued.get(op) ?? [];
    list.push({ skip, fault });
    this.queued.set(op, list);
  }

  pending(): number {
    let n = 0;
    for (const l of this.queued.values()) n += l.length;
    return n;
  }

  clearFaults(): void {
    this.queued.clear();
    this.random = undefined;
  }

  /** A fresh id (credential ids, secret values). */
  id(prefix: string): string {
    this.n++;
    const hex = Math.floor(this.random01() * 2 ** 48).toString(16).padStart(12, "0");
    return `${prefix}${this.n}${hex}`;
  }

  /** A v4-shaped UUID from the seeded generator. */
  uuid(): string {
    const h = Array.from({ length: 32 }, () => Math.floor(this.random01() * 16).toString(16));
    h[12] = "4";
    h[16] = "8";
    const s = h.join("");
    return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
  }

  secret(): string {
    const v = this.id("sk-live-");
    this.secrets.add(v);
    return v;
  }

  /** Throws when the process is dead (a crash) or the caller's run was aborted. */
  alive(signal?: AbortSignal): void {
    if (this.dead) throw new Crash("the worker process is dead");
    signal?.throwIfAborted();
  }

  crash(): never {
    this.dead = true;
    for (const c of this.runs) c.abort(new Crash("the worker process died"));
    throw new Crash("the worker process died");
  }

  /** The process is back (another worker resumes the stalled jobs). */
  revive(): void {
    this.dead = false;
    this.runs.clear();
  }

  async call<T>(op: string, act: () => T | Promise<T>, opts: { signal?: AbortSignal; rotationId?: string } = {}): Promise<T> {
    this.alive(opts.signal);
    const fault = this.take(op);
    this.calls.push({ op, at: this.clock.t, rotationId: opts.rotationId, fault: fault?.kind });
    if (fault?.kind === "fail") throw fault.error?.() ?? new TransientError(`${op}: 503 (injected)`);
    if (fault?.kind === "crash-before") this.crash();
    const out = await act();
    if (fault?.kind === "lose") throw new UnansweredError(`${op}: no answer (injected)`);
    if (fault?.kind === "crash-after") this.crash();
    return out;
  }

  private take(op: string): Fault | undefined {
    const list = this.queued.get(op);
    const head = list?.[0];
    if (!head) return this.random?.(op);
    if (head.skip > 0) {
      head.skip--;
      return undefined;
    }
    list?.shift();
    return head.fault;
  }
}

// ---- the secret store ---------------------------------------------------------------------------

interface Version {
  versionId: string;
  value: string;
  stages: string[];
  createdAt: number;
}

/** AWS Secrets Manager's version stages in memory (no jsonKey: the secret holds the credential). */
export class MemoryStore implements SecretStore {
  readonly secrets = new Map<string, Version[]>();

  constructor(private readonly world: World) {}

  versions(ref: SecretRef): Version[] {
    let v = this.secrets.get(ref.secretId);
    if (!v) this.secrets.set(ref.secretId, (v = []));
    return v;
  }

  /** The version holding `stage`, if any. */
  holder(ref: SecretRef, stage: string): Version | undefined {
    return this.versions(ref).find((v) => v.stages.includes(stage));
  }

  private read(v: Version | undefined): StoredVersion | undefined {
    return v && { versionId: v.versionId, value: v.value, stages: [...v.stages] };
  }

  /** Move `stage` to `to` (AWS: a label is on one version at most); AWSCURRENT takes AWSPREVIOUS along. */
  private label(ref: SecretRef, to: Version, stage: string): void {
    const from = this.holder(ref, stage);
    if (from === to) return;
    if (from) from.stages = from.stages.filter((s) => s !== stage);
    to.stages.push(stage);
    if (stage === AWSCURRENT && from) {
      const prev = this.holder(ref, AWSPREVIOUS);
      if (prev) prev.stages = prev.stages.filter((s) => s !== AWSPREVIOUS);
      to.stages = to.stages.filter((s) => s !== AWSPREVIOUS);
      from.stages.push(AWSPREVIOUS);
    }
  }

  private put(ref: SecretRef, token: string, value: string, stage: string): { version: Version; created: boolean } {
    const existing = this.versions(ref).find((v) => v.versionId === token);
    if (existing) {
      if (existing.value !== value) throw new PermanentError(`secret ${ref.secretId}: version ${token} exists with another value`);
      return { version: existing, created: false };
    }
    const version: Version = { versionId: token, value, stages: [], createdAt: this.world.clock.t };
    this.versions(ref).push(version);
    this.label(ref, version, stage);
    return { version, created: true };
  }

  /** A write by another process (`rekey submit`): not through the fault plan. */
  putPendingNow(ref: SecretRef, token: string, value: string): void {
    this.put(ref, token, value, AWSPENDING);
  }

  getCurrent(ref: SecretRef, signal?: AbortSignal): Promise<StoredVersion | undefined> {
    return this.world.call("store.getCurrent", () => this.read(this.holder(ref, AWSCURRENT)), { signal });
  }

  getVersion(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<StoredVersion | undefined> {
    return this.world.call("store.getVersion", () => this.read(this.versions(ref).find((v) => v.versionId === versionId)), { signal });
  }

  stages(ref: SecretRef, signal?: AbortSignal): Promise<Record<string, string[]>> {
    return this.world.call("store.stages", () => Object.fromEntries(this.versions(ref).filter((v) => v.stages.length).map((v) => [v.versionId, [...v.stages]])), { signal });
  }

  listVersions(ref: SecretRef, opts: { signal?: AbortSignal } = {}): Promise<VersionInfo[]> {
    return this.world.call("store.listVersions", () => this.versions(ref).map((v) => ({ versionId: v.versionId, stages: [...v.stages], createdAt: v.createdAt })), { signal: opts.signal });
  }

  putPending(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string }> {
    return this.world.call("store.putPending", () => ({ versionId: this.put(ref, token, value, AWSPENDING).version.versionId }), { signal, rotationId: token });
  }

  putCurrent(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string; current: boolean }> {
    return this.world.call(
      "store.putCurrent",
      () => {
        const { version } = this.put(ref, token, value, AWSCURRENT);
        return { versionId: version.versionId, current: version.stages.includes(AWSCURRENT) };
      },
      { signal, rotationId: token },
    );
  }

  promote(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<{ previousVersionId?: string }> {
    return this.world.call(
      "store.promote",
      () => {
        const to = this.versions(ref).find((v) => v.versionId === versionId);
        if (!to) throw new PermanentError(`secret ${ref.secretId} has no version ${versionId}`);
        const from = this.holder(ref, AWSCURRENT);
        this.label(ref, to, AWSCURRENT);
        to.stages = to.stages.filter((s) => s !== AWSPENDING);
        return { previousVersionId: from === to ? this.holder(ref, AWSPREVIOUS)?.versionId : from?.versionId };
      },
      { signal, rotationId: versionId },
    );
  }

  discardPending(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<void> {
    return this.world.call(
      "store.discardPending",
      () => {
        const v = this.versions(ref).find((x) => x.versionId === versionId);
        if (v) v.stages = v.stages.filter((s) => s !== AWSPENDING);
      },
      { signal, rotationId: versionId },
    );
  }

  /** Set-up: the secret's first version, AWSCURRENT (not through the fault plan). */
  seed(ref: SecretRef, versionId: string, value: string): void {
    const v: Version = { versionId, value, stages: [], createdAt: this.world.clock.t };
    this.versions(ref).push(v);
    this.label(ref, v, AWSCURRENT);
  }
}
