/**
 * What a command talks to. Commands never touch `process` directly, so tests run `main()` in
 * the same process and read what it printed.
 */
export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Secret values (e.g. `rekey submit`) are read from here, never from argv. */
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
}

export function processIo(): CliIo {
  return {
    stdout: (s) => void process.stdout.write(s),
    stderr: (s) => void process.stderr.write(s),
    stdin: process.stdin,
    env: process.env,
  };
}

/** Exit codes of `rekey`. */
export const EXIT = {
  ok: 0,
  /** The command ran and found a problem (invalid policy, failed rotation, …) or failed. */
  failure: 1,
  /** The command line itself was wrong: unknown command or option, missing argument. */
  usage: 2,
} as const;

/**
 * Thrown by a command to end with a given exit code after it printed what it had to say
 * (commander ignores what an action returns).
 */
export class CliExit extends Error {
  override name = "CliExit";
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
