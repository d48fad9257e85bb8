/**
 * The policies a process works with, loaded from the policy folders and re-read on demand (the
 * worker and API reload on SIGHUP; the scheduler also watches files). A reload that finds
 * problems keeps the last good set and reports them: a typo never unschedules a credential.
 */
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

  /** Re-read every policy file. Returns the problems; with problems nothing changes. */
  async reload(): Promise<PolicyIssue[]> {
    const { policies, issues } = await loadPolicies(this.paths);
    if (issues.length === 0) this.replace(policies);
    return issues;
  }
}
