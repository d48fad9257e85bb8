/**
 * Structured logging (pino, JSON lines). Secret values must never reach a log line (I5); code is
 * written not to log them, and redaction is the second line of defence: any field whose name
 * says it holds a secret is replaced by "[redacted]", at the top level and nested up to five
 * levels deep, including inside arrays.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from "pino";
import { escJsonLine } from "./util/terminal.ts";

export type Logger = PinoLogger;

/** Field names that hold secret values wherever they appear. */
export const SECRET_FIELDS = [
  "value",
  "secret",
  "secretValue",
  "SecretString",
  "SecretBinary",
  "token",
  "accessToken",
  "access_token",
  "refreshToken",
  "password",
  "authorization",
  "Authorization",
  "apiKey",
  "api_key",
  "clientSecret",
  "client_secret",
  "privateKey",
  "newValue",
  "oldValue",
  "cookie",
] as const;

/** Header names with characters that need bracket notation in a redact path. */
const SECRET_HEADERS = ["x-api-key", "set-cookie", "proxy-authorization"] as const;

const MAX_DEPTH = 5;

function redactPaths(): string[] {
  const paths: string[] = [];
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    const prefix = "*.".repeat(depth);
    for (const field of SECRET_FIELDS) paths.push(`${prefix}${field}`);
    for (const header of SECRET_HEADERS) paths.push(`${depth === 0 ? "" : prefix.slice(0, -1)}["${header}"]`);
  }
  return paths;
}

/** Keeps what helps debugging and drops the rest: an error's own fields may carry request data. */
function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return { name: err.name, message: err.message, stack: err.stack };
}

export interface LoggerOptions {
  /** pino level (fatal, error, warn, info, debug, trace, silent). Default: `info`. */
  level?: string;
  /** Where lines go. Default: standard output. */
  destination?: DestinationStream;
  /** Added to every line as `name`, e.g. `worker` or `scheduler`. Default: none. */
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const options = {
    level: opts.level ?? "info",
    ...(opts.name ? { name: opts.name } : {}),
    redact: { paths: redactPaths(), censor: "[redacted]" },
    serializers: { err: serializeError, error: serializeError },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // Logs are read in terminals too (`rekey run`, `docker compose logs`): a C1 control or bidi
  // override in a logged message (a provider's error text) is written as its JSON escape.
  const destination = opts.destination ?? pino.destination({ dest: 1 });
  return pino(options, { write: (line: string) => destination.write(escJsonLine(line)) });
}
