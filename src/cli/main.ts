/**
 * The `rekey` command line. entry.ts (what bin/rekey.js runs, compiled) calls main() and exits
 * with what it returns; tests call it in-process with their own CliIo.
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { ConfigError, errorMessage, formatPolicyIssue, PolicyError } from "../errors.ts";
import * as agent from "./commands/agent.ts";
import * as audit from "./commands/audit.ts";
import * as cancel from "./commands/cancel.ts";
import * as demo from "./commands/demo.ts";
import * as leak from "./commands/leak.ts";
import * as operate from "./commands/operate.ts";
import * as reconcile from "./commands/reconcile.ts";
import * as roles from "./commands/roles.ts";
import * as schema from "./commands/schema.ts";
import * as tokens from "./commands/tokens.ts";
import * as validate from "./commands/validate.ts";
import { CliExit, EXIT, processIo, type CliIo } from "./io.ts";
import { esc, escLines } from "../util/terminal.ts";

export { CliExit, EXIT, type CliIo } from "./io.ts";

export interface CommandModule {
  register(program: Command, io: CliIo): void;
}

/**
 * Every command of `rekey`, in the order `rekey --help` lists them. A command is one module
 * under ./commands/ exporting `register(program, io)`: to add one, import it above and list it
 * here. All modules load on every run, so a module keeps heavy dependencies (Redis, BullMQ, the
 * AWS SDK) inside its action with `await import(…)`: `rekey validate` should not pay for them.
 */
const COMMANDS: readonly CommandModule[] = [
  validate,
  schema,
  operate,
  cancel,
  reconcile,
  leak,
  roles,
  agent,
  tokens,
  audit,
  demo,
];

/** rekey's package.json: two folders up from src/cli/, three from the compiled dist/src/cli/. */
function version(): string {
  for (const path of ["../../package.json", "../../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8")) as { name?: unknown; version?: unknown };
      if (pkg.name === "rekey" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // not at this level: try the next
    }
  }
  return "0.0.0";
}

export function buildProgram(io: CliIo): Command {
  const program = new Command("rekey")
    .description("Policy-driven secret rotation: rotate API tokens on a schedule, on a leak and on offboarding, without outages.")
    .version(version(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .showSuggestionAfterError(true)
    // Set before commands are added: subcommands copy these settings when they are created.
    .exitOverride()
    // Commander's messages quote the command line back (an unknown option, a bad argument).
    .configureOutput({ writeOut: (s) => io.stdout(escLines(s)), writeErr: (s) => io.stderr(escLines(s)) });
  for (const command of COMMANDS) command.register(program, io);
  return program;
}

/**
 * An error for the terminal. Its lines are rekey's own where rekey wrote them (a configuration
 * error quotes each bad value as JSON; a policy error is one line per problem); any other message
 * is one escaped field.
 */
function terminalMessage(err: unknown): string {
  if (err instanceof PolicyError) return err.issues.map((i) => esc(formatPolicyIssue(i))).join("\n");
  if (err instanceof ConfigError) return escLines(err.message);
  return esc(errorMessage(err));
}

/** Runs `rekey` with the arguments after the program name; resolves to the exit code. */
export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: "user" });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CliExit) return err.code;
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return EXIT.ok;
      // `rekey help <command>` exits 0; help shown because no command was given exits 1 here.
      if (err.code === "commander.help") return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      // program.error() from a command carries the code the command chose.
      if (err.code === "commander.error") return err.exitCode;
      // Everything else (unknown command or option, missing argument, no command at all) is a usage error.
      return EXIT.usage;
    }
    io.stderr(`rekey: ${terminalMessage(err)}\n`);
    return EXIT.failure;
  }
}
