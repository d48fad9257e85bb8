/**
 * What `rekey agent` writes: a secret's raw value, a rendered mustache template, or an env file,
 * each replaced atomically (written to a temporary file in the same directory with the final
 * mode, flushed, then renamed over the old one), so a reader never sees half a file or a file
 * with looser permissions.
 */
import { randomBytes } from "node:crypto";
import { chmod, open, readFile, rename, unlink } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import Mustache from "mustache";
import type { OutputConfig } from "./config.ts";

/** An output that cannot be rendered or written; the message names the output, never a value. */
export class OutputError extends Error {
  override name = "OutputError";
}

const BARE = /^[A-Za-z0-9_\-.:/+=@%,]*$/;

/** `NAME=value` lines; a value with other characters is single-quoted (sh, systemd and dotenv read it). */
export function envFile(vars: Record<string, string>, values: Record<string, string>, path: string): string {
  const lines: string[] = [];
  for (const [name, secret] of Object.entries(vars)) {
    const v = values[secret];
    if (v === undefined) throw new OutputError(`${path}: no value for secret ${secret}`);
    if (/[\r\n\0]/.test(v)) throw new OutputError(`${path}: secret ${secret} holds a line break or NUL, which an env file cannot hold; write it with a template or as a file of its own`);
    lines.push(`${name}=${BARE.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The content of one output for the current values. */
export function renderOutput(o: OutputConfig, values: Record<string, string>): string {
  if ("secret" in o) {
    const v = values[o.secret];
    if (v === undefined) throw new OutputError(`${o.path}: no value for secret ${o.secret}`);
    return v;
  }
  if ("env" in o) return envFile(o.env, values, o.path);
  let template: string;
  if ("template" in o) template = o.template;
  else {
    try {
      template = readFileSync(o.templateFile, "utf8");
    } catch (err) {
      throw new OutputError(`${o.path}: cannot read templateFile ${o.templateFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
    }
  }
  try {
    // Values go in as they are: HTML escaping would corrupt a token holding & or /.
    return Mustache.render(template, values, {}, { escape: (s: string) => s });
  } catch (err) {
    throw new OutputError(`${o.path}: template: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Replace `path` with `content` (mode `mode`) atomically. Returns false, writing nothing, when
 * the file already holds exactly that content (its mode is still set).
 */
export async function writeAtomic(path: string, content: string, mode: number): Promise<boolean> {
  const existing = await readFile(path, "utf8").catch(() => undefined);
  if (existing === content) {
    await chmod(path, mode);
    return false;
  }
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.rekey-${randomBytes(6).toString("hex")}`);
  try {
    // Created with the final mode ('wx': never through an existing file or link).
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(content, "utf8");
      await fh.sync();
    } finally {
      await fh.close();
    }
    // The umask may have narrowed the mode; a 0640 meant for a group must be 0640.
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new OutputError(`cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : "error")}`);
  }
  // The rename is durable once the directory is flushed too.
  const d = await open(dir, "r").catch(() => undefined);
  await d?.sync().catch(() => undefined);
  await d?.close();
  return true;
}
