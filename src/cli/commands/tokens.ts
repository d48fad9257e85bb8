/**
 * `rekey token create | list | revoke`: named API tokens with scopes. These act with direct Redis
 * access (creating the first token cannot go through an API that needs one) and say so; the
 * token is printed once, at creation, and Redis keeps only its sha256.
 */
import { type Command, Option } from "commander";
import { SCOPES, type Scope } from "../../auth/identity.ts";
import { TokenError } from "../../auth/tokens.ts";
import { noteDirect, openRuntime, when } from "../context.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc } from "../../util/terminal.ts";

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function register(program: Command, io: CliIo): void {
  const token = program.command("token").description("named API tokens with scopes (admin, operator, viewer, submitter, consumer)");

  token
    .command("create")
    .description("create a token and print it once (Redis keeps only its hash)")
    .argument("<name>", "the token's name: the audit actor of what it does (e.g. deploy-bot)")
    .addOption(new Option("--scope <scope>", "a scope (repeatable for admin, operator, viewer)").choices([...SCOPES]).argParser(collect))
    .option("--owner <email>", "submitter: the owner whose policies' human steps it may submit values for")
    .option("--policy <id>", "consumer: the policy it confirms for")
    .option("--consumer <id>", "consumer: the consumer it confirms as")
    .option("--json", "print the token and its record as JSON")
    .action(async (name: string, opts: { scope?: string[]; owner?: string; policy?: string; consumer?: string; json?: boolean }) => {
      const actor = noteDirect(io, "token create");
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const { token: value, record } = await rt.tokens.create({ name, scopes: (opts.scope ?? []) as Scope[], owner: opts.owner, policyId: opts.policy, consumerId: opts.consumer }, actor);
        await rt.audit.record({ policyId: record.policyId, step: "token.created", outcome: "ok", actor, message: `token ${record.name} (${record.scopes.join(", ")}${record.owner ? ` for ${record.owner}` : ""}${record.consumerId ? ` as ${record.policyId}/${record.consumerId}` : ""})` });
        if (opts.json) io.stdout(`${JSON.stringify({ token: value, ...record })}\n`);
        else {
          io.stdout(`${value}\n`);
          io.stderr(`token ${esc(record.name)} created (${record.scopes.map(esc).join(", ")}); it is shown this once: store it now (rekey keeps only its hash)\n`);
        }
      } catch (err) {
        if (err instanceof TokenError) {
          io.stderr(`rekey token create: ${esc(err.message)}\n`);
          throw new CliExit(EXIT.usage);
        }
        throw err;
      } finally {
        await rt.close();
      }
    });

  token
    .command("list")
    .description("list tokens: name, scopes, created when and by whom (never the tokens themselves)")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        const all = await rt.tokens.list();
        if (opts.json) {
          io.stdout(`${JSON.stringify(all, null, 2)}\n`);
          return;
        }
        if (!all.length) io.stdout("no tokens (create one with: rekey token create <name> --scope <scope>)\n");
        for (const t of all) {
          const limit = t.owner ? ` for ${esc(t.owner)}` : t.consumerId ? ` as ${esc(t.policyId)}/${esc(t.consumerId)}` : "";
          io.stdout(`${esc(t.name)}  ${t.scopes.map(esc).join(",")}${limit}  created ${when(t.createdAt)} by ${esc(t.createdBy)}\n`);
        }
      } finally {
        await rt.close();
      }
    });

  token
    .command("revoke")
    .description("revoke a token by name: it is refused from the next request on")
    .argument("<name>", "the token's name")
    .action(async (name: string) => {
      const actor = noteDirect(io, "token revoke");
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        if (!(await rt.tokens.revoke(name))) {
          io.stderr(`rekey token revoke: no token named ${esc(JSON.stringify(name.slice(0, 80)))}\n`);
          throw new CliExit(EXIT.failure);
        }
        await rt.audit.record({ step: "token.revoked", outcome: "ok", actor, message: `token ${name}` });
        io.stdout(`revoked token ${esc(name)}\n`);
      } finally {
        await rt.close();
      }
    });
}
