/**
 * `rekey leak`: rotate leaked credentials now — by policy, provider kind, owner, or the leaked
 * value read from standard input — with progress while it runs and a report at the end.
 * `rekey offboard`: hand a departing member's credentials to their successor and say whether the
 * member can be removed.
 */
import { type Command, Option } from "commander";
import { errorMessage } from "../../errors.ts";
import { type LeakReport, type LeakResponse, leakResponseFor, type LeakRequest } from "../../leak/leak.ts";
import { type OffboardReport, type Offboarding, offboardingFor } from "../../offboarding/offboarding.ts";
import { PROVIDER_KINDS } from "../../policy/schema.ts";
import { RequestError } from "../../rotation/requests.ts";
import type { Runtime } from "../../runtime.ts";
import { parseDuration } from "../../util/duration.ts";
import { noteDirect, openRuntime, when } from "../context.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc, table } from "../../util/terminal.ts";

export interface LeakOptions {
  policy?: string[];
  provider?: string;
  owner?: string;
  valueStdin?: boolean;
  incident?: string;
  wait?: boolean;
  timeout?: string;
  json?: boolean;
  /** How often progress is polled (tests shorten it). Default 1 s. */
  pollMs?: number;
}

export interface OffboardOptions {
  successor?: string;
  wait?: boolean;
  timeout?: string;
  json?: boolean;
  pollMs?: number;
}


async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

function timeoutMs(text: string | undefined, fallback: number, what: string, io: CliIo): number {
  if (text === undefined) return fallback;
  const ms = parseDuration(text);
  if (ms === undefined) {
    io.stderr(`rekey ${what}: --timeout expects a duration such as 30m or 90s, got "${esc(text)}"\n`);
    throw new CliExit(EXIT.usage);
  }
  return ms;
}

function progressLine(r: LeakReport): string {
  const parts = [`${r.completed}/${r.total} done`];
  if (r.failed) parts.push(`${r.failed} failed`);
  if (r.awaitingHuman) parts.push(`${r.awaitingHuman} waiting for a human`);
  if (r.inProgress) parts.push(`${r.inProgress} in progress`);
  return `leak ${esc(r.incidentId)}: ${parts.join(", ")}\n`;
}

export function formatLeakReport(r: LeakReport): string {
  let out = `leak incident ${esc(r.incidentId)}: ${esc(r.target)}, requested by ${esc(r.actor)} at ${when(r.createdAt)}\n`;
  out += `  ${r.completed}/${r.total} rotated with the old credential revoked, ${r.failed} failed, ${r.awaitingHuman} waiting for a human, ${r.inProgress} in progress\n\n`;
  const rows = [["POLICY", "PROVIDER", "STATE", "OLD REVOKED", "NEW VERSION", "NOT CONFIRMED YET"]];
  for (const t of r.targets) {
    rows.push([t.policyId + (t.tookOver ? " *" : ""), t.provider, t.state, t.oldRevoked ? "yes" : "no", t.newVersionId ?? "-", t.notConfirmed.join(",") || "-"]);
  }
  out += table(rows);
  if (r.targets.some((t) => t.tookOver)) out += "  * took over the rotation already in flight (no second new credential)\n";
  const failed = r.targets.filter((t) => t.state === "failed" || t.state === "needs-attention");
  if (failed.length) {
    out += "\nfailed (the leaked credential may still be live — act on these first):\n";
    for (const t of failed) out += `  ${esc(t.policyId)}: ${esc(t.message ?? t.state)}\n`;
  }
  const human = r.targets.filter((t) => t.state === "awaiting-human");
  if (human.length) {
    out += "\nwaiting for a human (instructions went to the owner):\n";
    for (const t of human) out += `  ${esc(t.policyId)}: reset it as instructed, then: rekey submit ${esc(t.rotationId)} < new-value\n`;
  }
  const probed = r.targets.filter((t) => t.probes?.length);
  if (probed.length) {
    out += "\nprobe consumers (polled until they confirm or the confirmation timeout passes):\n";
    for (const t of probed) {
      for (const p of t.probes) out += `  ${esc(t.policyId)}: ${esc(p.consumerId)} ${p.confirmed ? "confirmed" : "not confirmed"}, last polled ${p.lastPolledAt ? when(p.lastPolledAt) : "never"}\n`;
    }
  }
  const unconfirmed = r.targets.filter((t) => t.oldRevoked && t.notConfirmed.length);
  if (unconfirmed.length) {
    out += "\nconsumers that have not confirmed the new value (they may be failing on the revoked one):\n";
    for (const t of unconfirmed) out += `  ${esc(t.policyId)}: ${t.notConfirmed.map(esc).join(", ")}\n`;
  }
  return out;
}

/** `rekey leak` against an open runtime; resolves to the exit code. */
export async function runLeak(rt: Pick<Runtime, "state" | "audit" | "rotations" | "policies" | "store" | "fingerprintKey">, io: CliIo, opts: LeakOptions, service?: LeakResponse): Promise<number> {
  const leaks = service ?? leakResponseFor(rt);
  const req: LeakRequest = { policies: opts.policy?.length ? opts.policy : undefined, provider: opts.provider as LeakRequest["provider"], owner: opts.owner, incident: opts.incident };
  if (opts.valueStdin) {
    if ((io.stdin as NodeJS.ReadStream).isTTY) io.stderr("paste the leaked value, then press Enter and Ctrl-D:\n");
    const text = (await readStdin(io.stdin)).trim();
    if (!text) {
      io.stderr("rekey leak: nothing was read from standard input\n");
      return EXIT.usage;
    }
    req.value = text;
  }
  let started;
  try {
    started = await leaks.handle(req, noteDirect(io, "leak"));
  } catch (err) {
    io.stderr(`rekey leak: ${esc(errorMessage(err))}\n`);
    return err instanceof RequestError && err.status === 400 ? EXIT.usage : EXIT.failure;
  } finally {
    req.value = undefined;
  }
  const { incident } = started;
  let report = started.report;
  if (opts.wait === false) {
    if (opts.json) io.stdout(`${JSON.stringify(report, null, 2)}\n`);
    else {
      io.stdout(`queued leak incident ${esc(incident.incidentId)}: ${report.total} rotation(s) (${esc(incident.target)})\n`);
      for (const t of incident.targets) io.stdout(`  ${esc(t.policyId)}  rotation ${esc(t.rotationId)}  (${esc(t.matchedBy)})\n`);
      io.stdout(`follow it with: rekey leak --incident ${esc(incident.incidentId)}\n`);
    }
    return EXIT.ok;
  }
  const deadline = Date.now() + timeoutMs(opts.timeout, 30 * 60_000, "leak", io);
  let last = "";
  for (;;) {
    const line = progressLine(report);
    if (line !== last) io.stderr(line);
    last = line;
    if (report.settled || Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1_000));
    report = await leaks.report(incident);
  }
  if (!report.settled) io.stderr(`rekey leak: still running after the timeout; follow it with: rekey leak --incident ${esc(incident.incidentId)}\n`);
  io.stdout(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatLeakReport(report));
  return report.completed === report.total ? EXIT.ok : EXIT.failure;
}

export function formatOffboardReport(r: OffboardReport): string {
  let out = `offboarding ${esc(r.member)}${r.successor ? ` (successor ${esc(r.successor)})` : ""}\n\n`;
  if (r.policies.length) {
    const rows = [["POLICY", "PROVIDER", "WHY", "SUCCESSOR", "STATE", "ROTATION"]];
    for (const p of r.policies) rows.push([p.policyId, p.provider, p.reason === "owner" ? "owner" : "their credential", p.successor ?? "-", p.state, p.rotationId ?? "-"]);
    out += table(rows);
  } else {
    out += "no policy is owned by this member or uses a credential in their name\n";
  }
  if (r.unmanaged.length) {
    out += "\nunmanaged credentials in their name (no policy rotates them; handle by hand):\n";
    for (const c of r.unmanaged) out += `  ${esc(c.account)}  ${esc(c.credentialId)}  "${esc(c.name)}"${c.kind ? ` (${esc(c.kind)})` : ""}  last used ${when(c.lastUsed)}\n`;
  }
  out += `\nsafe to remove ${esc(r.member)}: ${r.safeToRemove ? "yes" : "no"}\n`;
  for (const b of r.blockers) out += `  - ${esc(b)}\n`;
  return out;
}

/** `rekey offboard` against an open runtime; resolves to the exit code (0: safe to remove). */
export async function runOffboard(rt: Pick<Runtime, "state" | "audit" | "rotations" | "policies" | "providers" | "store" | "gateway">, io: CliIo, member: string, opts: OffboardOptions, service?: Offboarding): Promise<number> {
  const offboarding = service ?? offboardingFor(rt);
  let report: OffboardReport;
  try {
    report = await offboarding.handle({ member, successor: opts.successor }, noteDirect(io, "offboard"));
  } catch (err) {
    io.stderr(`rekey offboard: ${esc(errorMessage(err))}\n`);
    return err instanceof RequestError && err.status === 400 ? EXIT.usage : EXIT.failure;
  }
  if (opts.wait !== false) {
    // Wait until every rotation has done what it can on its own (queued and running ones move on;
    // waiting for consumers or a human is where the operator takes over), then report again.
    const deadline = Date.now() + timeoutMs(opts.timeout, 5 * 60_000, "offboard", io);
    const ids = report.policies.map((p) => p.rotationId).filter((id): id is string => id !== undefined);
    let last = "";
    for (;;) {
      const recs = await Promise.all(ids.map((id) => rt.state.records.get(id)));
      const busy = recs.filter((r) => !r || r.status === "running").length;
      const line = `offboarding ${esc(member)}: ${ids.length - busy}/${ids.length} rotation(s) past their automatic steps\n`;
      if (line !== last) io.stderr(line);
      last = line;
      if (busy === 0 || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 1_000));
    }
    report = await offboarding.status(member, opts.successor);
  }
  io.stdout(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatOffboardReport(report));
  return report.safeToRemove ? EXIT.ok : EXIT.failure;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function register(program: Command, io: CliIo): void {
  program
    .command("leak")
    .description("rotate leaked credentials now: top priority, old credential revoked at once, consumers told urgently")
    .argument("[value]", "refused: a leaked value on the command line lands in shell history; use --value-stdin")
    .option("--policy <id>", "a policy whose credential leaked (repeatable)", collect)
    .addOption(new Option("--provider <kind>", "every policy of this provider kind").choices([...PROVIDER_KINDS]))
    .option("--owner <email>", "every policy this member owns")
    .option("--value-stdin", "read the leaked value from standard input and find its policy by fingerprint")
    .addOption(new Option("--value <value>", "refused (see --value-stdin)").hideHelp())
    .option("--incident <id>", "report on an earlier leak incident (with targets: add them to it)")
    .option("--no-wait", "queue the rotations and return")
    .option("--timeout <duration>", "stop waiting after this long (the rotations go on)", "30m")
    .option("--json", "print the report as JSON")
    .action(async (value: string | undefined, opts: LeakOptions & { value?: string }) => {
      if (value !== undefined || opts.value !== undefined) {
        io.stderr("rekey leak: refusing a value given as an argument (it would land in shell history and the process list); pipe it in with --value-stdin (to name a policy, use --policy <id>)\n");
        throw new CliExit(EXIT.usage);
      }
      if (!opts.policy?.length && !opts.provider && !opts.owner && !opts.valueStdin && !opts.incident) {
        io.stderr("rekey leak: name what leaked: --policy <id>, --provider <kind>, --owner <email> or --value-stdin\n");
        throw new CliExit(EXIT.usage);
      }
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      let code: number;
      try {
        code = await runLeak(rt, io, opts);
      } finally {
        await rt.close();
      }
      if (code !== EXIT.ok) throw new CliExit(code);
    });

  program
    .command("offboard")
    .description("rotate every credential a departing member owns to their successor; report whether the member can be removed")
    .argument("<member>", "email of the departing member")
    .option("--successor <email>", "who receives the credentials (default: each policy's offboarding.successor)")
    .option("--no-wait", "queue the rotations and report at once")
    .option("--timeout <duration>", "how long to wait for the automatic steps", "5m")
    .option("--json", "print the report as JSON")
    .action(async (member: string, opts: OffboardOptions) => {
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      let code: number;
      try {
        code = await runOffboard(rt, io, member, opts);
      } finally {
        await rt.close();
      }
      if (code !== EXIT.ok) throw new CliExit(code);
    });
}
