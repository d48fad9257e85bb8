/**
 * Everything rekey prints for a person at a terminal goes through here. Fields come from places
 * an attacker can reach — a consumer id in a refused request, a provider's token name or error
 * text, a policy file, a file name — and a terminal acts on what it is sent: a newline inside a
 * field starts a line that looks like one of rekey's own (`revoking ok by worker: …`), ANSI and
 * C1 escapes recolour, move the cursor or retitle the window, bidi overrides reorder what is shown.
 *
 * So every field is escaped with {@link esc} before it is put into a line: control characters
 * become visible escapes (`\n`, `\x1b`, `\u202e`) and the line structure is rekey's alone. `--json`
 * output does not come here: JSON is exact, and a program reading it gets the real values. Log
 * lines (JSON) go through {@link escJsonLine}, which keeps them the same JSON.
 */

/**
 * C0 controls (newline, tab, ESC …), DEL, C1 controls (CSI 0x9b acts like ESC [), the Arabic
 * letter mark, zero-width and directional marks, line and paragraph separators, bidi embeddings,
 * overrides and isolates, and the byte-order mark.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;
// eslint-disable-next-line no-control-regex -- the same, less the newline that ends a line
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** One field for a terminal line: every control character shown as an escape, newlines included. */
export function esc(value: unknown): string {
  const text = typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  return text.replace(UNSAFE, escapeChar);
}

/**
 * Text of several lines whose line breaks are meant (commander's messages, an error message of
 * several lines): everything but the newline escaped.
 */
export function escLines(text: string): string {
  return text.replace(UNSAFE_BUT_NEWLINE, escapeChar);
}

/**
 * A JSON log line safe for a terminal and still the same JSON: JSON.stringify escapes C0 controls
 * but leaves DEL, C1 controls and bidi characters raw; inside a JSON string each becomes its
 * `\uXXXX` escape, which a JSON reader decodes to the same character.
 */
const RAW_IN_JSON = /[\u007f-\u009f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;

export function escJsonLine(line: string): string {
  return line.replace(RAW_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Columns padded to their widest cell; every cell escaped (so widths count what is shown). */
export function table(rows: readonly (readonly unknown[])[]): string {
  const cells = rows.map((r) => r.map((c) => esc(c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + "\n";
}
