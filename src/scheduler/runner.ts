/**
 * Runs a Scheduler for a process: schedules the policies of the process's PolicySet, follows
 * its changes (the set re-reads files; a file with problems keeps its last good version, so a
 * typo never unschedules a credential), and ticks.
 *
 * The tick is a chain of timeouts rather than node-cron: the next tick is armed only when the
 * previous one has finished, so ticks never overlap, and the period is a plain millisecond
 * option. Slot times never depend on the timer; they come from each policy's schedule.
 */
import { errorMessage } from "../errors.ts";
import type { PolicySet } from "../policy/policy-set.ts";
import { Scheduler, type SchedulerDeps, type TickReport } from "./scheduler.ts";

export interface SchedulerRunnerOptions extends SchedulerDeps {
  /** The process's policies: scheduled as they are now, then as they change. */
  policies: Pick<PolicySet, "all" | "subscribe">;
  /** Time between the end of one tick and the start of the next, in ms. */
  tickMs: number;
}

export interface SchedulerHandle {
  readonly scheduler: Scheduler;
  /** Run a tick now (the timer keeps its own pace). */
  tick(): Promise<TickReport>;
  stop(): Promise<void>;
}

export function startScheduler(opts: SchedulerRunnerOptions): SchedulerHandle {
  const { log } = opts;
  const scheduler = new Scheduler(opts);
  scheduler.setPolicies(opts.policies.all());
  log.info({ policies: scheduler.size }, "policies scheduled");
  const unsubscribe = opts.policies.subscribe((change) => {
    for (const id of change.removed) scheduler.remove(id);
    for (const p of change.upserted) scheduler.upsert(p);
    log.info({ upserted: change.upserted.length, removed: change.removed.length }, "policy changes applied to the schedule");
  });

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<unknown> = Promise.resolve();
  const arm = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      ticking = scheduler
        .tick()
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, "scheduler tick failed"))
        .finally(arm);
    }, opts.tickMs);
  };
  arm();

  return {
    scheduler,
    tick: () => scheduler.tick(),
    async stop() {
      stopped = true;
      unsubscribe();
      clearTimeout(timer);
      await ticking;
    },
  };
}
