/**
 * A fast reader for the plain YAML that policy files are written in: block mappings and
 * sequences, plain and simply quoted scalars, `{ key: value }` flow mappings, comments.
 *
 * The `yaml` library costs about 0.3 ms per small file, which alone would exceed the budget for
 * loading ten thousand policies at start. This reader handles the common shape in a fraction of
 * that and returns {@link UNSUPPORTED} for anything it is not certain to read exactly as `yaml`
 * (YAML 1.2 core schema) would: anchors, tags, block scalars, multi-line or escaped scalars,
 * numbers, several documents, duplicate keys, tabs. The caller then falls back to `yaml`, which
 * also produces every error message, so the two never disagree about a file.
 */

export const UNSUPPORTED: unique symbol = Symbol("unsupported");

interface Line {
  indent: number;
  text: string;
}

class Unsupported extends Error {}

// eslint-disable-next-line no-control-regex -- these are exactly the characters to refuse
const ODD_CHARS = /\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;
const KEY = /^[A-Za-z_][A-Za-z0-9_.\-/]*$/;
const NULL = /^(?:~|[Nn]ull|NULL)?$/;
const BOOL_TRUE = /^(?:[Tt]rue|TRUE)$/;
const BOOL_FALSE = /^(?:[Ff]alse|FALSE)$/;
// Anything the core schema might read as a number is left to `yaml`.
const NUMBER_LIKE = /^[-+]?(?:\.?[0-9]|0x|0o|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)/;
const NUMBER = /^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
/** Characters that may not start a plain scalar here (YAML indicators), plus ones we leave to `yaml`. */
const BAD_START = new Set(["-", "?", ":", ",", "[", "]", "{", "}", "#", "&", "*", "!", "|", ">", "%", "@", "`"]);

/** Parses `text` if it is in the supported subset; otherwise returns {@link UNSUPPORTED}. */
export function fastYaml(text: string): unknown {
  // Tabs, a byte order mark, lone CRs and control characters have rules of their own in YAML.
  if (text.includes("\t") || text.charCodeAt(0) === 0xfeff || ODD_CHARS.test(text)) return UNSUPPORTED;
  const lines: Line[] = [];
  let sawContent = false;
  for (const rawLine of text.split("\n")) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    const trimmed = line.trimStart();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const indent = line.length - trimmed.length;
    if (indent === 0 && (trimmed.startsWith("---") || trimmed.startsWith("...") || trimmed.startsWith("%"))) {
      // A single leading `---` is common and harmless; any other marker means several documents.
      if (!sawContent && /^---\s*(?:#.*)?$/.test(trimmed)) {
        sawContent = true;
        continue;
      }
      return UNSUPPORTED;
    }
    sawContent = true;
    lines.push({ indent, text: trimmed.trimEnd() });
  }
  try {
    const reader = new Reader(lines);
    if (lines.length === 0) return null;
    const value = reader.node(lines[0]?.indent ?? 0);
    if (reader.pos !== lines.length) return UNSUPPORTED;
    return value;
  } catch (err) {
    if (err instanceof Unsupported) return UNSUPPORTED;
    throw err;
  }
}

class Reader {
  pos = 0;
  constructor(private readonly lines: Line[]) {}

  private peek(): Line | undefined {
    return this.lines[this.pos];
  }

  /** A block node whose first line is at `indent`. */
  node(indent: number): unknown {
    const line = this.peek();
    if (!line || line.indent !== indent) throw new Unsupported();
    if (isSeqItem(line.text)) return this.sequence(indent);
    if (splitKey(line.text)) return this.mapping(indent);
    // A lone scalar as a block node (e.g. a whole document that is text) is left to `yaml`.
    throw new Unsupported();
  }

  private mapping(indent: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (let line = this.peek(); line && line.indent >= indent; line = this.peek()) {
      if (line.indent > indent) throw new Unsupported();
      const kv = splitKey(line.text);
      if (!kv) throw new Unsupported();
      const [key, rest] = kv;
      if (Object.hasOwn(out, key)) throw new Unsupported(); // `yaml` reports duplicate keys
      this.pos++;
      if (rest !== "") {
        out[key] = scalarOrFlow(rest);
        continue;
      }
      const next = this.peek();
      if (next && next.indent > indent) out[key] = this.node(next.indent);
      // A sequence may sit at the same indentation as its key.
      else if (next && next.indent === indent && isSeqItem(next.text)) out[key] = this.sequence(indent);
      else out[key] = null;
    }
    return out;
  }

  private sequence(indent: number): unknown[] {
    const out: unknown[] = [];
    for (let line = this.peek(); line && line.indent === indent && isSeqItem(line.text); line = this.peek()) {
      const content = line.text.slice(1).trimStart();
      if (content === "" || content.startsWith("#")) {
        this.pos++;
        const next = this.peek();
        if (next && next.indent > indent) out.push(this.node(next.indent));
        else out.push(null);
        continue;
      }
      const column = indent + (line.text.length - content.length);
      if (isSeqItem(content) || splitKey(content)) {
        // Read "- key: value" as a mapping that starts at the key's column.
        this.lines[this.pos] = { indent: column, text: content };
        out.push(this.node(column));
      } else {
        this.pos++;
        out.push(scalarOrFlow(content));
      }
    }
    const after = this.peek();
    if (after && after.indent > indent) throw new Unsupported();
    return out;
  }
}

function isSeqItem(text: string): boolean {
  return text === "-" || text.startsWith("- ");
}

/** `key: rest` → [key, rest without its comment]; undefined when the line is not a simple key line. */
function splitKey(text: string): [string, string] | undefined {
  const colon = text.indexOf(":");
  if (colon <= 0) return undefined;
  const after = text.charAt(colon + 1);
  if (after !== "" && after !== " ") return undefined;
  const key = text.slice(0, colon);
  if (!KEY.test(key)) return undefined;
  if (NULL.test(key) || BOOL_TRUE.test(key) || BOOL_FALSE.test(key) || key === "__proto__") throw new Unsupported();
  return [key, text.slice(colon + 1).trim()];
}

function scalarOrFlow(text: string): unknown {
  if (text.startsWith("{")) return flowMap(text);
  if (text === "[]" || /^\[\]\s+#/.test(text)) return [];
  return scalar(text, false);
}

function flowMap(text: string): Record<string, unknown> {
  const end = text.indexOf("}");
  if (end < 0) throw new Unsupported();
  const tail = text.slice(end + 1).trim();
  if (tail !== "" && !tail.startsWith("#")) throw new Unsupported();
  const body = text.slice(1, end);
  if (/[[\]{}"'#]/.test(body)) throw new Unsupported();
  const out: Record<string, unknown> = {};
  if (body.trim() === "") return out;
  const parts = body.split(",");
  // `yaml` accepts one trailing comma.
  if (parts.length > 1 && parts[parts.length - 1]?.trim() === "") parts.pop();
  for (const part of parts) {
    const kv = splitKey(part.trim());
    if (!kv || kv[1] === "") throw new Unsupported();
    if (Object.hasOwn(out, kv[0])) throw new Unsupported();
    out[kv[0]] = scalar(kv[1], true);
  }
  return out;
}

function scalar(text: string, inFlow: boolean): unknown {
  const first = text.charAt(0);
  if (first === '"' || first === "'") return quoted(text, first);
  if (BAD_START.has(first)) throw new Unsupported();
  const hash = text.indexOf(" #");
  const value = (hash >= 0 ? text.slice(0, hash) : text).trimEnd();
  // "a: b" inside a value is an error for `yaml`; let it say so.
  if (value.includes(": ") || value.endsWith(":") || (inFlow && /[,[\]{}]/.test(value))) throw new Unsupported();
  if (NULL.test(value)) return null;
  if (BOOL_TRUE.test(value)) return true;
  if (BOOL_FALSE.test(value)) return false;
  if (NUMBER_LIKE.test(value) && NUMBER.test(value)) throw new Unsupported();
  return value;
}

function quoted(text: string, quote: string): string {
  let i = 1;
  let out = "";
  for (;;) {
    const close = text.indexOf(quote, i);
    if (close < 0) throw new Unsupported(); // multi-line: left to `yaml`
    if (quote === "'" && text.charAt(close + 1) === "'") {
      out += text.slice(i, close + 1);
      i = close + 2;
      continue;
    }
    out += text.slice(i, close);
    i = close + 1;
    break;
  }
  if (quote === '"' && out.includes("\\")) throw new Unsupported();
  const tail = text.slice(i).trim();
  if (tail !== "" && !tail.startsWith("#")) throw new Unsupported();
  if (tail.startsWith("#") && !/\s$/.test(text.slice(0, text.length - text.slice(i).trimStart().length))) throw new Unsupported();
  return out;
}
