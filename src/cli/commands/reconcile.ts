/** `rekey reconcile`: compare Redis's records with the store and the providers; repair what is safe. */
import { type Command, Option } from "commander";
import { ConfigError } from "../../errors.ts";
import { workerDefaults } from "../../rotation/defaults.ts";
import { parseDuration } from "../../util/duration.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { openRuntime } from "../context.ts";
import { esc } from "../../util/terminal.ts";

export function register(program: Command, io: CliIo): void {
  program
    .command("reconcile")
    .description(
      "compare Redis's records with the secret store and the providers after Redis forgot writes (a failover, a wipe): end rotations whose job was lost and free their lock, remove credentials rekey issued that are neither AWSCURRENT nor AWSPREVIOUS or that a forgotten rotation left pending, and queue again a forgotten rotation whose previous credential is still live (it waits for the consumers, then revokes it); every repair is audited",
    )
    .option("--policy <id...>", "only these policies")
    .option("--dry-run", "report what would be repaired, change nothing")
    .addOption(new Option("--settle <duration>", "a policy must stay idle this long before its orphans are removed (a worker still running a forgotten job has stopped by then)").default(`${Math.round((workerDefaults.lockDuration + 15_000) / 1000)}s`))
    .option("--json", "print JSON")
    .action(async (opts: { policy?: string[]; dryRun?: boolean; settle: string; json?: boolean }) => {
      const settleMs = parseDuration(opts.settle);
      if (settleMs === undefined || settleMs > 3_600_000) throw new ConfigError(`--settle: expected a duration up to 1h, such as "75s" (got ${JSON.stringify(opts.settle)})`);
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const { reconcileAll } = await import("../../reconcile/reconcile.ts");
        const policies = rt.policies.all().filter((p) => !opts.policy || opts.policy.includes(p.id));
        const unknown = (opts.policy ?? []).filter((id) => !rt.policies.get(id));
        if (unknown.length) {
          io.stderr(`rekey reconcile: unknown policy ${unknown.map((u) => JSON.stringify(esc(u))).join(", ")}\n`);
          throw new CliExit(EXIT.failure);
        }
        const deps = { state: rt.state, audit: rt.audit, store: rt.store, providers: rt.providers, queue: rt.queue, resolve: rt.resolve, now: Date.now };
        // Two passes `settle` apart: orphans are removed only for a policy idle in both.
        const first = await reconcileAll(deps, policies, { dryRun: opts.dryRun === true, settleMs });
        if (settleMs > 0 && !opts.json) io.stdout(`looked at ${policies.length} polic${policies.length === 1 ? "y" : "ies"}; looking again in ${Math.round(settleMs / 1000)} s\n`);
        await new Promise((r) => setTimeout(r, settleMs));
        const second = await reconcileAll(deps, policies, { dryRun: opts.dryRun === true, settleMs, previous: first.observations });
        const findings = [...first.findings.filter((f) => f.repaired), ...second.findings];
        if (opts.json) io.stdout(`${JSON.stringify({ findings })}\n`);
        else for (const f of findings) io.stdout(`${esc(f.policyId)}\t${f.kind}\t${f.repaired ? "repaired: " : ""}${esc(f.message)}\n`);
        if (findings.some((f) => f.kind === "error")) throw new CliExit(EXIT.failure);
      } finally {
        await rt.close();
      }
    });
}
