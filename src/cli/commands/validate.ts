/** `rekey validate`: checks policy files and reports every problem, each with file, line and field. */
import { type Command } from "commander";
import { formatPolicyIssue, type PolicyIssue } from "../../errors.ts";
import { loadPolicies, type LoadedPolicy } from "../../policy/loader.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc } from "../../util/terminal.ts";

interface ValidateOptions {
  json?: boolean;
}

export function register(program: Command, io: CliIo): void {
  program
    .command("validate")
    .description("check policy files: every problem with its file, line and field; exit 1 if there is any")
    .argument("[paths...]", "policy files or directories, searched recursively for .yaml, .yml and .json (default: $REKEY_POLICY_DIR, else policies)")
    .option("--json", "print a JSON report instead of text")
    .addHelpText(
      "after",
      `
Examples:
  rekey validate                        # the policy directory
  rekey validate policies/ld.yaml       # one file
  rekey validate --json policies | jq '.issues[]'
`,
    )
    .action(async (paths: string[], options: ValidateOptions) => {
      const targets = paths.length > 0 ? paths : [io.env.REKEY_POLICY_DIR || "policies"];
      const { policies, issues } = await loadPolicies(targets);
      const problemFiles = new Set(issues.map((i) => i.file)).size;
      const summary = summarize(policies.length, issues.length, problemFiles);

      if (options.json) {
        const report = {
          valid: issues.length === 0 && policies.length > 0,
          summary,
          policies: policies.map((p) => ({ file: p.file, id: p.policy.id, kind: p.policy.provider.kind })),
          issues,
        };
        io.stdout(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        for (const line of reportLines(policies, issues)) io.stdout(`${line}\n`);
        (policies.length === 0 && issues.length === 0 ? io.stderr : io.stdout)(`${summary}\n`);
      }
      if (issues.length > 0 || policies.length === 0) throw new CliExit(EXIT.failure);
    });
}

function summarize(valid: number, problems: number, files: number): string {
  const policies = `${valid} ${valid === 1 ? "policy" : "policies"} valid`;
  if (problems === 0) return valid === 0 ? "no policy files found" : policies;
  return `${problems} ${problems === 1 ? "problem" : "problems"} in ${files} ${files === 1 ? "file" : "files"} (${policies})`;
}

/** Per file, in file order: its valid policies, then its problems. */
function reportLines(policies: LoadedPolicy[], issues: PolicyIssue[]): string[] {
  const files = [...new Set([...policies.map((p) => p.file), ...issues.map((i) => i.file)])].sort();
  const lines: string[] = [];
  for (const file of files) {
    for (const p of policies) if (p.file === file) lines.push(`ok  ${esc(p.file)}  ${esc(p.policy.id)} (${esc(p.policy.provider.kind)})`);
    for (const i of issues) if (i.file === file) lines.push(esc(formatPolicyIssue(i)));
  }
  return lines;
}
