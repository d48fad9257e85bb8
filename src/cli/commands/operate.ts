/** `rekey rotate | status | history | plan | submit`: operator commands. */
import { type Command, Option } from "commander";
import { errorMessage, formatPolicyIssue } from "../../errors.ts";
import { loadPolicies } from "../../policy/loader.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { RequestError } from "../../rotation/requests.ts";
import { collectStatus, jobViewer } from "../../rotation/status.ts";
import { persistedNextDue } from "../../scheduler/next-due.ts";
import { nextSlots } from "../../scheduler/slots.ts";
import { formatDuration } from "../../util/duration.ts";
import { apiTarget, callApi } from "../api-client.ts";
import { noteDirect, openRuntime, when } from "../context.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc, table } from "../../util/terminal.ts";

const json = new Option("--json", "print JSON");

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

export function register(program: Command, io: CliIo): void {
  program
    .command("rotate")
    .description("rotate a policy's credential now (normal confirmation semantics)")
    .argument("<policy>", "policy id")
    .addOption(json)
    .action(async (policyId: string, opts: { json?: boolean }) => {
      const api = apiTarget(io);
      if (api) {
        const { status, json } = await callApi(api, "POST", "/v1/rotations", { policyId });
        if (status !== 202) {
          io.stderr(`rekey rotate: the API refused (${status}): ${esc(json.error ?? "no reason given")}\n`);
          throw new CliExit(EXIT.failure);
        }
        const res = json as unknown as { rotationId: string; jobId: string; added: boolean };
        if (opts.json) io.stdout(`${JSON.stringify(res)}\n`);
        else io.stdout(res.added ? `queued rotation ${esc(res.rotationId)} of ${esc(policyId)} (job ${esc(res.jobId)})\n` : `rotation ${esc(res.rotationId)} of ${esc(policyId)} is already queued\n`);
        return;
      }
      const actor = noteDirect(io, "rotate");
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const res = await rt.rotations.enqueue({ policyId, reason: "manual", actor });
        if (opts.json) io.stdout(`${JSON.stringify(res)}\n`);
        else io.stdout(res.added ? `queued rotation ${esc(res.rotationId)} of ${esc(policyId)} (job ${esc(res.jobId)})\n` : `rotation ${esc(res.rotationId)} of ${esc(policyId)} is already queued\n`);
      } catch (err) {
        if (err instanceof RequestError) {
          io.stderr(`rekey rotate: ${esc(err.message)}\n`);
          throw new CliExit(EXIT.failure);
        }
        throw err;
      } finally {
        await rt.close();
      }
    });

  program
    .command("status")
    .description("each policy's last rotation and next due time, and every rotation waiting on consumers")
    .addOption(json)
    .action(async (opts: { json?: boolean }) => {
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const status = await collectStatus({
          state: rt.state,
          policies: rt.policies.all(),
          nextDue: await persistedNextDue(rt.redis, rt.prefix, rt.policies.all(), Date.now()),
          jobs: jobViewer(rt.queue),
        });
        if (opts.json) {
          io.stdout(`${JSON.stringify(status, null, 2)}\n`);
          return;
        }
        const rows = [["POLICY", "PROVIDER", "LAST", "STATUS", "NEXT DUE"]];
        for (const s of status) rows.push([s.policyId, s.provider, when(s.lastCompletedAt), s.inFlight?.status ?? s.lastStatus ?? "never", when(s.nextDue)]);
        io.stdout(table(rows));
        const waiting = status.filter((s) => s.inFlight);
        if (waiting.length) {
          io.stdout("\nin flight:\n");
          for (const s of waiting) {
            const f = s.inFlight!;
            io.stdout(`  ${esc(`${s.policyId}  ${f.rotationId}  ${f.reason}  ${f.status}  waiting for ${f.waitsFor.text}`)}\n`);
            for (const x of f.consumerFailures) {
              io.stdout(`    ! ${esc(x.consumerId)} failed (${esc(x.stage)}) at ${when(x.at)}: ${esc(x.message)}\n`);
            }
          }
        }
        const attention = status.filter((s) => s.remedy);
        if (attention.length) {
          io.stdout("\nneeds attention:\n");
          for (const s of attention) {
            // The rotation's own message says what went wrong; the remedy says what to do about it.
            const message = s.inFlight?.message;
            io.stdout(`  ${esc(s.policyId)}: ${message ? `${esc(message)}\n    ` : ""}${esc(s.remedy)}\n`);
          }
        }
      } finally {
        await rt.close();
      }
    });

  program
    .command("history")
    .description("the audit trail of a policy (or of everything), newest first")
    .argument("[policy]", "policy id (default: all)")
    .option("-n, --limit <n>", "entries", "50")
    .addOption(json)
    .action(async (policyId: string | undefined, opts: { limit: string; json?: boolean }) => {
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        if (policyId && !rt.policies.get(policyId)) io.stderr(`note: ${esc(policyId)} is not in the loaded policies; showing its stored history\n`);
        const rows = await rt.audit.history({ policyId, limit: Number(opts.limit) || 50 });
        if (opts.json) {
          io.stdout(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (!rows.length) io.stdout("no audit records\n");
        for (const r of rows) {
          io.stdout(`${esc(`${when(r.at)}  ${r.policyId ?? "-"}  ${r.rotationId ?? "-"}  ${r.step} ${r.outcome}  by ${r.actor}${r.message ? `: ${r.message}` : ""}`)}\n`);
        }
      } finally {
        await rt.close();
      }
    });

  program
    .command("plan")
    .description("per policy: next three due times, strategy (overlap or cut-over), consumers and how each confirms")
    .argument("[paths...]", "policy files or folders (default REKEY_POLICY_DIR or policies/)")
    .addOption(json)
    .action(async (paths: string[], opts: { json?: boolean }) => {
      const dir = paths.length ? paths : [io.env.REKEY_POLICY_DIR ?? "policies"];
      const { policies, issues } = await loadPolicies(dir);
      if (issues.length) {
        for (const i of issues) io.stderr(`${esc(formatPolicyIssue(i))}\n`);
        throw new CliExit(EXIT.failure);
      }
      const now = Date.now();
      const plan = policies.map(({ policy: p }) => {
        const caps = capabilitiesOf(p.provider);
        return {
          policyId: p.id,
          provider: p.provider.kind,
          owner: p.owner,
          secret: p.target.secretId + (p.target.jsonKey ? `#${p.target.jsonKey}` : ""),
          next: p.schedule ? nextSlots(p.schedule, now, 3, p.id) : [],
          strategy: caps.oldSurvivesIssue ? "overlap" : "cut-over",
          issue: caps.issue,
          consumerImpact: caps.consumerImpact,
          consumers: p.consumers.map((c) => ({ id: c.id, confirm: c.confirm, required: c.required, ...(c.confirm === "probe" ? { url: c.url } : {}) })),
          timeout: formatDuration(p.confirmation.timeout),
          onTimeout: p.confirmation.onTimeout,
        };
      });
      if (opts.json) {
        io.stdout(`${JSON.stringify(plan, null, 2)}\n`);
        return;
      }
      for (const p of plan) {
        io.stdout(`${esc(p.policyId)}  (${esc(p.provider)}, owner ${esc(p.owner)}, secret ${esc(p.secret)})\n`);
        io.stdout(`  next due:  ${p.next.length ? p.next.map((t) => when(t)).join(", ") : "no schedule (manual, leak and offboarding only)"}\n`);
        io.stdout(`  strategy:  ${esc(p.strategy)}${p.issue === "human" ? " (human step)" : ""} — ${esc(p.consumerImpact)}\n`);
        io.stdout(`  consumers: ${p.consumers.length ? p.consumers.map((c) => `${esc(c.id)} (${esc(c.confirm)}${c.required ? "" : ", optional"})`).join(", ") : "none"}; timeout ${esc(p.timeout)}, then ${esc(p.onTimeout)}\n\n`);
      }
    });

  program
    .command("submit")
    .description("give a human-step rotation its new value, read from standard input (never as an argument)")
    .argument("<rotation-id>", "the rotation waiting for a value (from the notification or `rekey status`)")
    .argument("[value]", "refused: a value on the command line lands in shell history")
    .action(async (rotationId: string, value: string | undefined) => {
      if (value !== undefined) {
        io.stderr("rekey submit: refusing a value given as an argument (it would land in shell history and the process list); pipe or paste it on standard input\n");
        throw new CliExit(EXIT.usage);
      }
      if ((io.stdin as NodeJS.ReadStream).isTTY) io.stderr("paste the new value, then press Enter and Ctrl-D:\n");
      const text = (await readStdin(io.stdin)).trim();
      if (!text) {
        io.stderr("rekey submit: nothing was read from standard input\n");
        throw new CliExit(EXIT.usage);
      }
      const api = apiTarget(io);
      if (api) {
        const { status, json } = await callApi(api, "POST", `/v1/rotations/${encodeURIComponent(rotationId)}/submit`, { value: text });
        if (status !== 200) {
          io.stderr(`rekey submit: the API refused (${status}): ${esc(json.error ?? "no reason given")}\n`);
          throw new CliExit(EXIT.failure);
        }
        io.stdout(`accepted: the value passed the check and is stored as version ${esc(json.versionId)} of ${esc(json.policyId)}; the rotation goes on\n`);
        return;
      }
      const actor = noteDirect(io, "submit");
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const res = await rt.rotations.submit({ rotationId, value: text, actor });
        io.stdout(`accepted: the value passed the check and is stored as version ${esc(res.versionId)} of ${esc(res.policyId)}; the rotation goes on\n`);
      } catch (err) {
        io.stderr(`rekey submit: ${esc(errorMessage(err))}\n`);
        throw new CliExit(EXIT.failure);
      } finally {
        await rt.close();
      }
    });
}
