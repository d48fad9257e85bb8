/**
 * The policies a process works with: the one policy source of the worker, the API and the
 * scheduler. Loaded from the policy folders and re-read when a file changes (watch) or on SIGHUP
 * (reload); whoever keeps state per policy (the scheduler) follows the changes (subscribe).
 *
 * A file with problems keeps the last good version of its policies and the problems are
 * reported, so a typo never unschedules a credential; a problem with a folder (unreadable,
 * unmounted) protects every file under it.
 */
import { type FSWatcher, statSync, watch } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import { formatPolicyIssue, type PolicyIssue } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type LoadResult, loadPolicies, loadPolicyFile } from "./loader.ts";
import type { Policy } from "./schema.ts";
import { StringPool } from "../util/string-pool.ts";

export interface ReloadReport {
  /** Policies added or updated. */
  upserted: number;
  /** Policies no longer in the set. */
  removed: number;
  /** Problems found; the files they name kept their last good version. */
  issues: PolicyIssue[];
}

/** What a reload changed: policies added or updated (a new object), and ids that left the set. */
export interface PolicyChange {
  upserted: Policy[];
  removed: string[];
}

export interface PolicyLoader {
  loadPolicies(paths: string[]): Promise<LoadResult>;
  loadPolicyFile(file: string): Promise<LoadResult>;
}

const POLICY_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

function isPolicyFileName(name: string): boolean {
  return POLICY_EXTENSIONS.has(extname(name)) && !name.startsWith(".") && !name.endsWith(".schema.json");
}

export class PolicySet {
  private byId = new Map<string, Policy>();
  /** Last good policies of each file (absolute path). */
  private readonly byFile = new Map<string, Policy[]>();
  /** Which file each policy id came from. */
  private readonly fileOf = new Map<string, string>();
  private readonly listeners = new Set<(change: PolicyChange) => void>();
  private chain: Promise<unknown> = Promise.resolve();
  /** consumerTokenHashes, worked out once per change of the set. */
  private tokenHashes: Set<string> | undefined;

  constructor(
    readonly paths: string[],
    private readonly loader: PolicyLoader = { loadPolicies, loadPolicyFile },
  ) {}

  static of(policies: Policy[]): PolicySet {
    const s = new PolicySet([]);
    s.replace(policies.map((policy) => ({ policy, file: "(memory)" })));
    return s;
  }

  get(policyId: string): Policy | undefined {
    return this.byId.get(policyId);
  }

  file(policyId: string): string | undefined {
    return this.fileOf.get(policyId);
  }

  all(): Policy[] {
    return [...this.byId.values()];
  }

  /** The token hashes of every push consumer of the set (the API refuses any other consumer token unread). */
  consumerTokenHashes(): ReadonlySet<string> {
    this.tokenHashes ??= consumerTokenHashesOf(this.byId.values());
    return this.tokenHashes;
  }

  /** Hear every change of the set from now on. Returns a function that stops listening. */
  subscribe(listener: (change: PolicyChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Replace the whole set (tests, `of`). */
  replace(loaded: { policy: Policy; file: string }[]): void {
    const next = new Map<string, Policy[]>();
    for (const { policy, file } of loaded) next.set(file, [...(next.get(file) ?? []), policy]);
    this.apply(next);
  }

  /** Re-read every policy file and apply the difference. */
  reload(): Promise<ReloadReport> {
    return this.serial(async () => {
      const loaded = await this.loader.loadPolicies(this.paths);
      const bad = loaded.issues.map((i) => resolve(i.file));
      const isBad = (file: string) => bad.some((b) => file === b || file.startsWith(b + sep));
      const next = new Map<string, Policy[]>();
      // The paths are kept as long as the policies: one flat copy per file rather than the
      // pieces resolve() assembled it from.
      const paths = new StringPool();
      for (const { policy, file } of loaded.policies) {
        const abs = paths.intern(resolve(file));
        if (isBad(abs)) continue;
        next.set(abs, [...(next.get(abs) ?? []), policy]);
      }
      const fresh = new Set([...next.values()].flat().map((p) => p.id));
      for (const [file, policies] of this.byFile) {
        if (next.has(file) || !isBad(file)) continue;
        // Kept from the last good read, unless a good file now defines the same id.
        const kept = policies.filter((p) => !fresh.has(p.id));
        if (kept.length) next.set(file, kept);
      }
      const change = this.apply(next);
      return { upserted: [...next.values()].flat().length, removed: change.removed.length, issues: loaded.issues };
    });
  }

  /** Re-read one changed (or removed) file; costs the same however many policies there are. */
  reloadFile(file: string): Promise<ReloadReport> {
    return this.serial(async () => {
      const abs = resolve(file);
      let isFile = false;
      try {
        isFile = (await stat(abs)).isFile();
      } catch {
        // removed
      }
      if (!isFile) return this.setFile(abs, [], []);
      const loaded = await this.loader.loadPolicyFile(abs);
      const issues = [...loaded.issues];
      for (const { policy } of loaded.policies) {
        const owner = this.fileOf.get(policy.id);
        if (owner !== undefined && owner !== abs) {
          issues.push({ file: abs, path: "id", message: `duplicate policy id "${policy.id}": also defined in ${owner}; give each policy its own id` });
        }
      }
      if (issues.length) return { upserted: 0, removed: 0, issues };
      return this.setFile(
        abs,
        loaded.policies.map((l) => l.policy),
        issues,
      );
    });
  }

  /**
   * Re-read what changes under the policy paths (debounced per file), so every process follows
   * edits without a restart. `onReload` hears each outcome. A Kubernetes ConfigMap or Secret
   * volume, which changes by swapping its `..data` link, and folders moved in or out are re-read
   * in full. Returns a function that stops watching.
   */
  watch(onReload: (report: ReloadReport) => void, debounceMs = 200): () => void {
    const watchers: FSWatcher[] = [];
    const debounces = new Map<string, NodeJS.Timeout>();
    let stopped = false;
    const later = (key: string, fn: () => Promise<ReloadReport | undefined>) => {
      clearTimeout(debounces.get(key));
      debounces.set(
        key,
        setTimeout(() => {
          debounces.delete(key);
          if (stopped) return;
          fn().then(
            (report) => report && onReload(report),
            (err: unknown) => onReload({ upserted: 0, removed: 0, issues: [{ file: this.paths.join(", "), path: "", message: String(err) }] }),
          );
        }, debounceMs),
      );
    };
    const full = () => this.reload();
    // A folder moved in or out: only a full read sees what it held. Other files (editor swap and
    // probe files) are ignored.
    const reloadIfFolder = async (path: string) => {
      let isDir: boolean;
      try {
        isDir = (await stat(path)).isDirectory();
      } catch {
        isDir = [...this.byFile.keys()].some((f) => f.startsWith(path + sep));
      }
      return isDir ? this.reload() : undefined;
    };
    const onChange = (dir: string, only: string | undefined) => (_event: string, filename: string | Buffer | null) => {
      if (filename === null) return later("*", full);
      const name = filename.toString();
      if (only !== undefined && name !== only) return;
      const path = resolve(join(dir, name));
      // A ConfigMap or Secret volume: the visible files (links through `..data`) see no event of their own.
      if (basename(name) === "..data") return later("*", full);
      if (name.split(/[\\/]/).some((part) => part.startsWith(".") || part === "node_modules")) return;
      if (isPolicyFileName(basename(name))) later(path, () => this.reloadFile(path));
      else later(`?${path}`, () => reloadIfFolder(path));
    };
    for (const p of this.paths) {
      try {
        const isDir = statSync(p).isDirectory();
        const dir = isDir ? p : dirname(p);
        const w = watch(dir, { recursive: isDir }, onChange(dir, isDir ? undefined : basename(p)));
        w.on("error", (err) => onReload({ upserted: 0, removed: 0, issues: [{ file: p, path: "", message: `watching policy files failed (SIGHUP still reloads): ${String(err)}` }] }));
        watchers.push(w);
      } catch {
        // A path that does not exist yet cannot be watched; SIGHUP still reloads it.
      }
    }
    return () => {
      stopped = true;
      for (const t of debounces.values()) clearTimeout(t);
      debounces.clear();
      for (const w of watchers) w.close();
    };
  }

  // Reloads run one at a time: a file event during a full reload waits for it.
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** One file's policies are now `policies` (none: the file is gone); the rest of the set is untouched. */
  private setFile(file: string, policies: Policy[], issues: PolicyIssue[]): ReloadReport {
    const ids = new Set(policies.map((p) => p.id));
    const removed: string[] = [];
    for (const old of this.byFile.get(file) ?? []) {
      if (ids.has(old.id) || this.fileOf.get(old.id) !== file) continue;
      this.fileOf.delete(old.id);
      this.byId.delete(old.id);
      removed.push(old.id);
    }
    if (policies.length) this.byFile.set(file, policies);
    else this.byFile.delete(file);
    for (const p of policies) {
      this.fileOf.set(p.id, file);
      this.byId.set(p.id, p);
    }
    this.notify({ upserted: policies, removed });
    return { upserted: policies.length, removed: removed.length, issues };
  }

  /** Make `next` (file → policies) the set; tell the listeners what changed. */
  private apply(next: Map<string, Policy[]>): PolicyChange {
    const before = this.byId;
    this.byFile.clear();
    this.fileOf.clear();
    this.byId = new Map();
    for (const [file, policies] of next) {
      this.byFile.set(file, policies);
      for (const p of policies) {
        this.fileOf.set(p.id, file);
        this.byId.set(p.id, p);
      }
    }
    const change: PolicyChange = {
      upserted: [...this.byId.values()].filter((p) => before.get(p.id) !== p),
      removed: [...before.keys()].filter((id) => !this.byId.has(id)),
    };
    this.notify(change);
    return change;
  }

  private notify(change: PolicyChange): void {
    this.tokenHashes = undefined;
    if (change.upserted.length || change.removed.length) for (const l of this.listeners) l(change);
  }
}

/** Log a reload's outcome: each problem (its file keeps its last good policies), or what it applied. */
export function logReload(log: Pick<Logger, "info" | "error">, set: PolicySet, report: ReloadReport): void {
  for (const i of report.issues) log.error({ file: i.file, line: i.line, path: i.path }, `${formatPolicyIssue(i)} (its policies keep their last good version)`);
  if (!report.issues.length) log.info({ policies: set.all().length, upserted: report.upserted, removed: report.removed }, "policies reloaded");
}

/** The token hashes of the push consumers of `policies`. */
export function consumerTokenHashesOf(policies: Iterable<Policy>): Set<string> {
  return new Set([...policies].flatMap((p) => p.consumers.flatMap((c) => (c.confirm === "push" ? [c.tokenHash] : []))));
}
