/**
 * Runs a Scheduler for a process: loads the policy files, ticks, watches the policy folders and
 * re-applies what changed. A file with problems keeps the last good version of its policies (and
 * the problems are logged), so a typo never unschedules a credential.
 *
 * The tick is a chain of timeouts rather than node-cron: the next tick is armed only when the
 * previous one has finished, so ticks never overlap, and the period is a plain millisecond
 * option. Slot times never depend on the timer; they come from each policy's schedule.
 */
import { watch, type FSWatcher } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import { formatPolicyIssue, errorMessage, type PolicyIssue } from "../errors.ts";
import { type LoadResult } from "../policy/loader.ts";
import { type Policy } from "../policy/schema.ts";
import { Scheduler, type SchedulerDeps, type TickReport } from "./scheduler.ts";

export interface SchedulerRunnerOptions extends SchedulerDeps {
  /** Policy files and folders (folders are searched recursively). */
  policyPaths: string[];
  /** Time between the end of one tick and the start of the next, in ms. */
  tickMs: number;
  loadPolicies: (paths: string[]) => Promise<LoadResult>;
  loadPolicyFile: (file: string) => Promise<LoadResult>;
  /** Watch the policy folders and re-apply changed files. Default true. */
  watch?: boolean;
  /** Quiet time (ms) after the last change to a file before it is re-read. Default 200. */
  debounceMs?: number;
}

export interface ReloadReport {
  /** Policies added or updated. */
  upserted: number;
  /** Policies no longer scheduled. */
  removed: number;
  /** Problems found; the files they name kept their last good version. */
  issues: PolicyIssue[];
}

export interface SchedulerHandle {
  readonly scheduler: Scheduler;
  /** Re-read every policy file and apply the difference (SIGHUP). */
  reload(): Promise<ReloadReport>;
  /** Re-read one changed (or removed) file; costs the same however many policies there are. */
  reloadFile(file: string): Promise<ReloadReport>;
  /** Run a tick now (the timer keeps its own pace). */
  tick(): Promise<TickReport>;
  stop(): Promise<void>;
}

const POLICY_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

function isPolicyFileName(name: string): boolean {
  return POLICY_EXTENSIONS.has(extname(name)) && !name.startsWith(".") && !name.endsWith(".schema.json");
}

export async function startScheduler(opts: SchedulerRunnerOptions): Promise<SchedulerHandle> {
  const { log } = opts;
  const scheduler = new Scheduler(opts);
  /** Last good policies of each file (absolute path). */
  const byFile = new Map<string, Policy[]>();
  /** Which file each policy id came from. */
  const fileOf = new Map<string, string>();
  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;

  // Reloads run one at a time: a file event during a full reload waits for it.
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn, fn);
    chain = run.catch(() => undefined);
    return run;
  };

  const logIssues = (issues: PolicyIssue[]) => {
    for (const i of issues) log.error({ file: i.file, line: i.line, path: i.path }, `${formatPolicyIssue(i)} (its policies keep their last good version)`);
  };

  const setFile = (file: string, policies: Policy[], report: ReloadReport) => {
    const ids = new Set(policies.map((p) => p.id));
    for (const old of byFile.get(file) ?? []) {
      if (ids.has(old.id) || fileOf.get(old.id) !== file) continue;
      fileOf.delete(old.id);
      scheduler.remove(old.id);
      report.removed += 1;
    }
    if (policies.length) byFile.set(file, policies);
    else byFile.delete(file);
    for (const p of policies) {
      fileOf.set(p.id, file);
      scheduler.upsert(p);
      report.upserted += 1;
    }
  };

  const reloadFile = (file: string): Promise<ReloadReport> =>
    serial(async () => {
      const abs = resolve(file);
      const report: ReloadReport = { upserted: 0, removed: 0, issues: [] };
      let isFile = false;
      try {
        isFile = (await stat(abs)).isFile();
      } catch {
        // removed
      }
      if (!isFile) {
        setFile(abs, [], report);
        if (report.removed) log.info({ file: abs, removed: report.removed }, "policy file removed; its policies are no longer scheduled");
        return report;
      }
      const loaded = await opts.loadPolicyFile(abs);
      report.issues = [...loaded.issues];
      for (const { policy } of loaded.policies) {
        const owner = fileOf.get(policy.id);
        if (owner !== undefined && owner !== abs) {
          report.issues.push({ file: abs, path: "id", message: `duplicate policy id "${policy.id}": also defined in ${owner}; give each policy its own id` });
        }
      }
      if (report.issues.length) {
        logIssues(report.issues);
        return report;
      }
      setFile(abs, loaded.policies.map((l) => l.policy), report);
      log.info({ file: abs, upserted: report.upserted, removed: report.removed }, "policy file applied");
      return report;
    });

  const reload = (): Promise<ReloadReport> =>
    serial(async () => {
      const loaded = await opts.loadPolicies(opts.policyPaths);
      const bad = loaded.issues.map((i) => resolve(i.file));
      // A problem with a folder (unreadable, unmounted) protects every file under it, too.
      const isBad = (file: string) => bad.some((b) => file === b || file.startsWith(b + sep));
      const next = new Map<string, Policy[]>();
      for (const { policy, file } of loaded.policies) {
        const abs = resolve(file);
        if (isBad(abs)) continue;
        const list = next.get(abs) ?? [];
        list.push(policy);
        next.set(abs, list);
      }
      const fresh = new Set([...next.values()].flat().map((p) => p.id));
      for (const [file, policies] of byFile) {
        if (next.has(file) || !isBad(file)) continue;
        // Kept from the last good read, unless a good file now defines the same id.
        const kept = policies.filter((p) => !fresh.has(p.id));
        if (kept.length) next.set(file, kept);
      }
      const report: ReloadReport = { upserted: 0, removed: 0, issues: loaded.issues };
      const all = [...next.values()].flat();
      const before = new Set(fileOf.keys());
      scheduler.setPolicies(all);
      byFile.clear();
      fileOf.clear();
      for (const [file, policies] of next) {
        byFile.set(file, policies);
        for (const p of policies) fileOf.set(p.id, file);
      }
      report.upserted = all.length;
      for (const id of before) if (!fileOf.has(id)) report.removed += 1;
      logIssues(loaded.issues);
      log.info({ policies: all.length, removed: report.removed, problems: loaded.issues.length }, "policies loaded");
      return report;
    });

  await reload();

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

  const watchers: FSWatcher[] = [];
  const debounces = new Map<string, NodeJS.Timeout>();
  const debounceMs = opts.debounceMs ?? 200;
  const later = (key: string, fn: () => Promise<unknown>) => {
    clearTimeout(debounces.get(key));
    debounces.set(
      key,
      setTimeout(() => {
        debounces.delete(key);
        if (!stopped) fn().catch((err: unknown) => log.error({ err: errorMessage(err) }, "policy reload failed"));
      }, debounceMs),
    );
  };
  const onChange = (dir: string, only: string | undefined) => (_event: string, filename: string | Buffer | null) => {
    if (filename === null) {
      later("*", reload);
      return;
    }
    const name = filename.toString();
    if (only !== undefined && name !== only) return;
    const full = resolve(join(dir, name));
    // A Kubernetes ConfigMap or Secret volume changes by swapping its `..data` link to a new
    // folder: the visible files (links through `..data`) see no event of their own.
    if (basename(name) === "..data") {
      later("*", reload);
      return;
    }
    if (name.split(/[\\/]/).some((part) => part.startsWith(".") || part === "node_modules")) return;
    if (isPolicyFileName(basename(name))) later(full, () => reloadFile(full));
    else later(`?${full}`, () => reloadIfFolder(full));
  };
  // A folder moved in or out: only a full read sees what it held. Other files (editor swap and
  // probe files) are ignored.
  const reloadIfFolder = async (full: string) => {
    let isDir: boolean;
    try {
      isDir = (await stat(full)).isDirectory();
    } catch {
      isDir = [...byFile.keys()].some((f) => f.startsWith(full + sep));
    }
    if (isDir) await reload();
  };
  if (opts.watch ?? true) {
    for (const p of opts.policyPaths) {
      try {
        const isDir = (await stat(p)).isDirectory();
        const dir = isDir ? p : dirname(p);
        const w = watch(dir, { recursive: isDir }, onChange(dir, isDir ? undefined : basename(p)));
        w.on("error", (err) => log.error({ path: p, err: errorMessage(err) }, "watching policy files failed; SIGHUP still reloads"));
        watchers.push(w);
      } catch (err) {
        log.warn({ path: p, err: errorMessage(err) }, "cannot watch policy path; SIGHUP still reloads");
      }
    }
  }

  return {
    scheduler,
    reload,
    reloadFile,
    tick: () => scheduler.tick(),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      for (const t of debounces.values()) clearTimeout(t);
      debounces.clear();
      for (const w of watchers) w.close();
      await ticking;
      await chain;
    },
  };
}
