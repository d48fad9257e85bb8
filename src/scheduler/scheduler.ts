/**
 * The scheduler turns policy schedules into rotation requests. It keeps each scheduled policy's
 * next check time in a min-heap, so a tick looks only at the policies that are due.
 *
 * Replicas and restarts converge through two things:
 * - the job id of a slot is deterministic (rotation/job-ids.ts, scheduledJobId), so the queue holds
 *   at most one job per slot;
 * - a marker per policy in Redis records the last slot handled, advanced by one Lua script (a
 *   compare-and-set), so of several replicas ticking at once exactly one enqueues a slot, and a
 *   slot whose job was already removed by retention is not enqueued again.
 *
 * Enqueueing is a claim (marker = slot, pending, owned by this replica for `claimLeaseMs`) followed
 * by `done`. A replica that dies between the two leaves a pending claim that another replica takes
 * over once the lease has run out; the deterministic job id makes that second enqueue harmless.
 *
 * A policy seen for the first time (no marker in Redis) does not fire its past slots: its marker
 * starts at its latest slot. The same holds when its schedule changes: the new schedule counts
 * from its latest slot, so an edit never reports slots of the new schedule as missed.
 */
import { randomUUID } from "node:crypto";
import type { RedisClient } from "../redis-connection.ts";
import { type Logger } from "../log.ts";
import { type Policy } from "../policy/schema.ts";
import { errorMessage } from "../errors.ts";
import { DueHeap } from "./due-heap.ts";
import { scheduleKey, slotSource, type SlotSource } from "./slots.ts";
import { scheduledJobId } from "../rotation/job-ids.ts";
import { RedisKeys } from "../rotation/keys.ts";
import { type MissedSlot, ScheduleMarks, type SlotOp, type SlotReply } from "../rotation/state/schedule-marks.ts";

export interface EnqueueRequest {
  policyId: string;
  /** The slot (epoch ms) this rotation belongs to. */
  slot: number;
  /** The queue job id (scheduledJobId), identical on every replica: the enqueue must use it. */
  jobId: string;
}

export interface SchedulerDeps {
  redis: RedisClient;
  /** Key prefix shared by every replica (on a Redis cluster, hash-tag it: `{rekey}`). */
  prefix: string;
  now: () => number;
  /** Adds the rotation job with `req.jobId` as its id (adding an existing id must be a no-op). */
  enqueue: (req: EnqueueRequest) => Promise<void>;
  log: Logger;
  /** How late (ms) a slot may still start when the policy sets no `schedule.window`. Default 3,600,000 (1 h). */
  defaultWindowMs?: number;
  /** How long (ms) a replica's claim on a slot keeps other replicas from enqueueing it. Default 30,000. */
  claimLeaseMs?: number;
  /** Approximate maximum number of entries in the missed-slot stream. Default 10,000. */
  missedMaxLen?: number;
  /** How many enqueue calls a tick runs at once. Default 32. */
  enqueueConcurrency?: number;
  /** Names this replica in slot claims. Default: a random UUID. */
  instanceId?: string;
}

export interface ScheduleStatus {
  policyId: string;
  /** `cron:<expr>@<zone>` or `every:<ms>`. */
  schedule: string;
  /** The next slot this scheduler will act on (epoch ms); in the past while it is being caught up. */
  nextDue: number | undefined;
  /** The last slot handled (enqueued or recorded as missed), once read from Redis. */
  lastSlot: number | undefined;
}

export interface TickReport {
  enqueued: EnqueueRequest[];
  missed: { policyId: string; slot: number }[];
  failed: { policyId: string; slot: number; error: string }[];
}

interface Entry {
  policy: Policy;
  key: string;
  src: SlotSource;
  windowMs: number;
  /** Last slot known handled; undefined until read from Redis. */
  last: number | undefined;
  /** A slot to try again (our enqueue failed, or another replica's claim may have died). */
  retrySlot: number | undefined;
  gen: number;
}

interface SlotAction {
  e: Entry;
  /** `sync` first initialises a marker this process has not read yet, then does `op`. */
  sync: boolean;
  op: SlotOp;
  slot: number;
}

export class Scheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly heap = new DueHeap();
  private gen = 0;
  private inFlight: Promise<TickReport> | undefined;
  private readonly defaultWindowMs: number;
  private readonly leaseMs: number;
  private readonly concurrency: number;
  private readonly marks: ScheduleMarks;

  constructor(private readonly deps: SchedulerDeps) {
    this.defaultWindowMs = deps.defaultWindowMs ?? 3_600_000;
    this.leaseMs = deps.claimLeaseMs ?? 30_000;
    this.concurrency = deps.enqueueConcurrency ?? 32;
    this.marks = new ScheduleMarks(deps.redis, new RedisKeys(deps.prefix), {
      owner: deps.instanceId ?? randomUUID(),
      leaseMs: this.leaseMs,
      missedMaxLen: deps.missedMaxLen ?? 10_000,
    });
  }

  /** Replace the whole policy set; unchanged policies keep their state. */
  setPolicies(policies: readonly Policy[]): void {
    const ids = new Set<string>();
    for (const p of policies) {
      ids.add(p.id);
      this.upsert(p);
    }
    for (const id of [...this.entries.keys()]) if (!ids.has(id)) this.remove(id);
  }

  /** Add or update one policy. A policy without a schedule is not scheduled. */
  upsert(policy: Policy): void {
    const schedule = policy.schedule;
    if (!schedule) {
      this.remove(policy.id);
      return;
    }
    const key = scheduleKey(schedule);
    const windowMs = schedule.window ?? this.defaultWindowMs;
    const old = this.entries.get(policy.id);
    if (old && old.key === key) {
      old.policy = policy;
      old.windowMs = windowMs;
      return;
    }
    // A changed schedule is re-read from Redis, where `init` re-bases its marker.
    const entry: Entry = { policy, key, src: slotSource(schedule, policy.id), windowMs, last: undefined, retrySlot: undefined, gen: ++this.gen };
    this.entries.set(policy.id, entry);
    this.push(entry, this.deps.now());
  }

  /** Stop scheduling a policy. Its Redis marker stays, so re-adding it does not replay old slots. */
  remove(policyId: string): void {
    this.entries.delete(policyId);
    this.compactHeap();
  }

  has(policyId: string): boolean {
    return this.entries.has(policyId);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The next slot this scheduler will act on for a policy (epoch ms), if it is scheduled. */
  nextDue(policyId: string): number | undefined {
    const e = this.entries.get(policyId);
    return e ? this.dueOf(e) : undefined;
  }

  status(): ScheduleStatus[] {
    const out: ScheduleStatus[] = [];
    for (const e of this.entries.values()) out.push({ policyId: e.policy.id, schedule: e.key, nextDue: this.dueOf(e), lastSlot: e.last });
    return out.sort((a, b) => (a.nextDue ?? Infinity) - (b.nextDue ?? Infinity) || a.policyId.localeCompare(b.policyId));
  }

  /** The most recent missed slots, newest first. */
  missed(limit = 50): Promise<MissedSlot[]> {
    return this.marks.missed(limit);
  }

  /**
   * Enqueue every due slot, record slots too late to run as missed. Concurrent calls share one
   * run, so a slow tick is never overlapped by the next.
   */
  tick(): Promise<TickReport> {
    this.inFlight ??= this.runTick().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async runTick(): Promise<TickReport> {
    const now = this.deps.now();
    const report: TickReport = { enqueued: [], missed: [], failed: [] };
    const due: Entry[] = [];
    for (let top = this.heap.peek(); top && top.at <= now; top = this.heap.peek()) {
      this.heap.pop();
      const e = this.entries.get(top.id);
      if (e && e.gen === top.gen) due.push(e);
    }
    if (due.length === 0) return report;

    const actions: SlotAction[] = [];
    const idle: Entry[] = [];
    for (const e of due) {
      const latest = e.src.latest(now);
      if (latest === undefined) {
        // No slot has ever passed: nothing to run or to mark yet.
        const first = e.src.next(now);
        if (first !== undefined) this.push(e, first);
        continue;
      }
      const retry = e.retrySlot === latest;
      if (e.last !== undefined && latest <= e.last && !retry) {
        e.retrySlot = undefined;
        idle.push(e);
        continue;
      }
      // A claimed slot whose enqueue failed (here or on a replica that died) is retried until its
      // window closes (at least two leases, so a short window still survives one takeover), then
      // reported as missed instead of retried forever.
      const late = now - latest;
      const op = late <= e.windowMs || (retry && late <= 2 * this.leaseMs) ? "claim" : "miss";
      actions.push({ e, sync: e.last === undefined, op, slot: latest });
    }

    const replies = actions.length ? await this.script(actions, now) : [];
    const claimed: { e: Entry; slot: number }[] = [];
    actions.forEach((a, i) => {
      const r = replies[i];
      const e = a.e;
      if (!r) {
        this.push(e, now);
        return;
      }
      const [status, last, blockedUntil] = r;
      e.last = last;
      e.retrySlot = undefined;
      if (status === 3) {
        this.deps.log.debug({ policyId: e.policy.id, slot: iso(last) }, "new schedule starts after its latest slot; past slots are not run");
      } else if (status === 1 && a.op === "claim") {
        claimed.push({ e, slot: a.slot });
        return;
      } else if (status === 1 && a.op === "miss") {
        report.missed.push({ policyId: e.policy.id, slot: a.slot });
        this.deps.log.warn({ policyId: e.policy.id, slot: iso(a.slot), windowMs: e.windowMs }, "scheduled slot missed: it is past its window, so it is recorded and not run");
      }
      if (blockedUntil > 0) {
        // Another replica holds a claim on this slot: look again when its lease runs out.
        e.retrySlot = last;
        this.push(e, blockedUntil);
        return;
      }
      idle.push(e);
    });
    for (const e of idle) this.schedule(e);

    const done: SlotAction[] = [];
    await this.pool(claimed, async ({ e, slot }) => {
      const req: EnqueueRequest = { policyId: e.policy.id, slot, jobId: scheduledJobId(e.policy.id, slot) };
      try {
        await this.deps.enqueue(req);
        report.enqueued.push(req);
        done.push({ e, sync: false, op: "done", slot });
        this.deps.log.info({ policyId: req.policyId, slot: iso(slot), jobId: req.jobId }, "scheduled rotation enqueued");
        if (this.entries.get(e.policy.id) === e) this.schedule(e);
      } catch (err) {
        // The claim is ours: the next tick claims it again and retries.
        e.retrySlot = slot;
        report.failed.push({ policyId: req.policyId, slot, error: errorMessage(err) });
        this.deps.log.error({ policyId: req.policyId, slot: iso(slot), err: errorMessage(err) }, "enqueueing a scheduled rotation failed; retrying next tick");
        if (this.entries.get(e.policy.id) === e) this.push(e, now);
      }
    });
    if (done.length) await this.script(done, now);
    return report;
  }

  /** Apply each action to its policy's marker in one round trip; a failed reply is undefined. */
  private async script(actions: SlotAction[], now: number): Promise<(SlotReply | undefined)[]> {
    let results: Awaited<ReturnType<ScheduleMarks["apply"]>>;
    try {
      results = await this.marks.apply(
        actions.map((a) => ({ policyId: a.e.policy.id, sched: a.e.key, sync: a.sync, op: a.op, slot: a.slot })),
        now,
      );
    } catch (err) {
      this.deps.log.error({ err: errorMessage(err) }, "scheduler could not reach Redis; retrying next tick");
      return actions.map(() => undefined);
    }
    return actions.map((a, i) => {
      const [err, reply] = results[i]!;
      if (err) {
        this.deps.log.error({ policyId: a.e.policy.id, err: errorMessage(err) }, "scheduler marker update failed; retrying next tick");
        return undefined;
      }
      return reply;
    });
  }

  private async pool<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
    let i = 0;
    const worker = async () => {
      while (i < items.length) {
        const item = items[i++] as T;
        await fn(item);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, items.length) }, worker));
  }

  private dueOf(e: Entry): number | undefined {
    if (e.retrySlot !== undefined) return e.retrySlot;
    return e.src.next(e.last ?? this.deps.now());
  }

  /** Put an entry back in the heap at its next slot. */
  private schedule(e: Entry): void {
    const next = e.src.next(e.last ?? this.deps.now());
    if (next !== undefined) this.push(e, next);
  }

  private push(e: Entry, at: number): void {
    e.gen = ++this.gen;
    this.heap.push({ at, id: e.policy.id, gen: e.gen });
  }

  private compactHeap(): void {
    if (this.heap.size > 2 * this.entries.size + 1024) {
      this.heap.rebuild((item) => this.entries.get(item.id)?.gen === item.gen);
    }
  }
}

function iso(t: number): string {
  return new Date(t).toISOString();
}
