/** `rekey audit verify | head`: prove an audit sink file whole, and show where the shipper stands. */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { verifyChain } from "../../audit/chain.ts";
import { errorMessage } from "../../errors.ts";
import { esc } from "../../util/terminal.ts";
import { openRuntime } from "../context.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";

export function register(program: Command, io: CliIo): void {
  const audit = program.command("audit").description("the audit trail's durable sink: verify its hash chain, show the shipper's head");

  audit
    .command("verify")
    .description("prove audit sink files whole: every line unaltered, none removed, inserted or reordered (files in chain order, oldest first)")
    .argument("<files...>", "sink files, e.g. audit.jsonl.000000001000 audit.jsonl")
    .option("--head <hash>", "the hash the chain must end with (from `rekey audit head`): proves nothing was cut from the end")
    .option("--json", "print JSON")
    .action((files: string[], opts: { head?: string; json?: boolean }) => {
      const inputs: { name: string; text: string }[] = [];
      for (const name of files) {
        try {
          inputs.push({ name, text: readFileSync(name, "utf8") });
        } catch (err) {
          io.stderr(`rekey audit verify: cannot read ${esc(name)}: ${esc(errorMessage(err))}\n`);
          throw new CliExit(EXIT.failure);
        }
      }
      const res = verifyChain(inputs);
      if (opts.head && res.head !== opts.head) {
        res.ok = false;
        res.problems.push({ file: files.at(-1)!, line: 0, problem: `the chain ends with ${res.head ?? "nothing"}, not with the expected head ${opts.head}: lines are missing at the end` });
      }
      if (opts.json) io.stdout(`${JSON.stringify(res, null, 2)}\n`);
      else if (res.ok) {
        io.stdout(`ok: ${res.entries} entries, seq ${res.firstSeq}..${res.lastSeq}${res.repeats ? ` (${res.repeats} repeated deliveries)` : ""}\n`);
        io.stdout(`starts after ${res.startsAfter === "0".repeat(64) ? "nothing (the chain's first entry)" : res.startsAfter}\nhead ${res.head}\n`);
      } else {
        for (const p of res.problems) io.stdout(`${esc(p.file)}:${p.line}: ${esc(p.problem)}\n`);
        io.stdout(`NOT OK: ${res.problems.length} problem(s) in ${res.entries} entries\n`);
      }
      if (!res.ok) throw new CliExit(EXIT.failure);
    });

  audit
    .command("head")
    .description("the last entry the audit sink has (seq and hash), to compare with a sink file's last line")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const h = await rt.redis.hgetall(rt.state.keys.auditSink());
        const head = { seq: Number(h.seq ?? 0), hash: h.hash, lastId: h.lastId };
        if (opts.json) io.stdout(`${JSON.stringify(head)}\n`);
        else io.stdout(head.hash ? `seq ${head.seq}\nhead ${head.hash}\n` : "nothing shipped yet (no process runs with REKEY_AUDIT_SINK)\n");
      } finally {
        await rt.close();
      }
    });
}
