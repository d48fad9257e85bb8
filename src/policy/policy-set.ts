/**
 * The policies a process works with, loaded from the policy folders and re-read on demand (the
 * worker and API reload on SIGHUP; the scheduler also watches files). A reload that finds
 * problems keeps the last good set and reports them: a typo never unschedules a credential.
 */
import { type FSWatcher, watch } from "node:fs";
import type { PolicyIssue } from "../errors.ts";
import { loadPolicies } from "./loader.ts";
import type { Policy } from "./schema.ts";

export class PolicySet {
  private byId = new Map<string, Policy>();
  private fileOf = new Map<string, string>();

  constructor(readonly paths: string[]) {}

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

  replace(loaded: { policy: Policy; file: string }[]): void {
    this.byId = new Map(loaded.map((l) => [l.policy.id, l.policy]));
    this.fileOf = new Map(loaded.map((l) => [l.policy.id, l.file]));
  }

  /**
   * Re-read the policies whenever a file under the policy paths changes (debounced), so workers
   * and the API follow edits without a restart, as the scheduler does. `onReload` hears the
   * outcome (problems keep the last good set). Returns a function that stops watching.
   */
  watch(onReload: (issues: PolicyIssue[]) => void, debounceMs = 200): () => void {
    const watchers: FSWatcher[] = [];
    let timer: NodeJS.Timeout | undefined;
    const trigger = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        void this.reload().then(onReload, (err: unknown) => onReload([{ file: this.paths.join(", "), path: "", message: String(err) }]));
      }, debounceMs);
    };
    for (const p of this.paths) {
      try {
        watchers.push(watch(p, { recursive: true }, trigger));
      } catch {
        // A path that does not exist yet cannot be watched; SIGHUP still reloads it.
      }
    }
    return () => {
      if (timer) clearTimeout(timer);
      for (const w of watchers) w.close();
    };
  }

  /** Re-read every policy file. Returns the problems; with problems nothing changes. */
  async reload(): Promise<PolicyIssue[]> {
    const { policies, issues } = await loadPolicies(this.paths);
    if (issues.length === 0) this.replace(policies);
    return issues;
  }
}
