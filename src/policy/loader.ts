/**
 * Policy files -> validated policies. Every problem is reported, not just the first, each with
 * its file, the line of the field and what to do about it; a file with problems contributes no
 * policy. The happy path does the least work it can (no line bookkeeping), because a large
 * installation loads thousands of files at every scheduler start: lines are worked out by parsing
 * a file a second time, and only when there is something to report.
 */
import { readFileSync } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Document, type Node as YamlNode } from "yaml";
import { z } from "zod";
import { PolicyError, type PolicyIssue } from "../errors.ts";
import { capabilitiesOf } from "./capabilities.ts";
import { formatDuration, parseDuration } from "../util/duration.ts";
import { fastYaml, UNSUPPORTED } from "./fast-yaml.ts";
import { Policy, PROVIDER_KINDS, type ProviderConfig, type ProviderKind } from "./schema.ts";
import { looksLikeSecret, redactSecrets } from "./secret-like.ts";
import { StringPool } from "../util/string-pool.ts";

export interface LoadedPolicy {
  policy: Policy;
  /** The file the policy came from, as found from the given path (e.g. `policies/ld.yaml`). */
  file: string;
}

export interface LoadResult {
  /** Valid policies, in file order; a policy whose id an earlier file already used is left out. */
  policies: LoadedPolicy[];
  /** Every problem found, in file and line order. */
  issues: PolicyIssue[];
}

export interface LoadOptions {
  /**
   * Files read and validated between two turns of the event loop. Default: 100. Files are read
   * synchronously, in batches: for thousands of small files that is several times faster than
   * asynchronous reads, and the batches keep a running process responsive.
   */
  batchSize?: number;
}

type Path = readonly PropertyKey[];
/** A problem before its line is known: the field path into the document, and the message. */
export interface FieldProblem {
  path: Path;
  message: string;
}

const POLICY_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/**
 * Loads every policy file under the given paths (files, or directories searched recursively for
 * .yaml, .yml and .json; hidden entries, node_modules and `*.schema.json` are skipped).
 */
export async function loadPolicies(paths: string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const found = await findPolicyFiles(paths);
  const perFile: LoadResult[] = [];
  const batch = Math.max(1, opts.batchSize ?? 100);
  // One pool for the whole load: policies share the texts they have in common.
  const pool = new StringPool();
  for (let i = 0; i < found.files.length; i++) {
    if (i > 0 && i % batch === 0) await yieldToEventLoop();
    perFile.push(loadOne(found.files[i] as string, pool));
  }
  const issues = [...found.issues];
  const policies: LoadedPolicy[] = [];
  const firstById = new Map<string, LoadedPolicy>();
  const duplicates: Array<{ later: LoadedPolicy; first: LoadedPolicy }> = [];
  for (const result of perFile) {
    issues.push(...result.issues);
    for (const loaded of result.policies) {
      const first = firstById.get(loaded.policy.id);
      if (first) duplicates.push({ later: loaded, first });
      else {
        firstById.set(loaded.policy.id, loaded);
        policies.push(loaded);
      }
    }
  }
  for (const { later, first } of duplicates) {
    const [laterLine, firstLine] = await Promise.all([idLine(later), idLine(first)]);
    issues.push({
      file: later.file,
      line: laterLine,
      path: "id",
      message: `duplicate policy id "${later.policy.id}": also defined in ${firstLine ? `${first.file}:${firstLine}` : first.file}; give each policy its own id`,
    });
  }
  return { policies, issues: sortIssues(issues) };
}

/** Loads one policy file (the scheduler re-applies a single changed file with it). */
export async function loadPolicyFile(file: string): Promise<LoadResult> {
  const result = loadOne(file);
  return { policies: result.policies, issues: sortIssues(result.issues) };
}

/** Like {@link loadPolicies}, but any problem throws a PolicyError that lists all of them. */
export async function loadPoliciesOrThrow(paths: string[], opts?: LoadOptions): Promise<LoadedPolicy[]> {
  const { policies, issues } = await loadPolicies(paths, opts);
  if (issues.length > 0) throw new PolicyError(issues);
  return policies;
}

/** The policy files the given paths stand for, sorted, and a problem for each path that does not exist. */
export async function findPolicyFiles(paths: string[]): Promise<{ files: string[]; issues: PolicyIssue[] }> {
  const files: string[] = [];
  const issues: PolicyIssue[] = [];
  for (const p of paths) {
    let isDir: boolean;
    try {
      isDir = (await stat(p)).isDirectory();
    } catch (err) {
      issues.push({ file: p, path: "", message: `cannot read: ${fsReason(err)}` });
      continue;
    }
    if (isDir) await walk(p, files, issues);
    else files.push(p);
  }
  return { files: [...new Set(files)].sort(), issues };
}

async function walk(dir: string, files: string[], issues: PolicyIssue[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    issues.push({ file: dir, path: "", message: `cannot read directory: ${fsReason(err)}` });
    return;
  }
  for (const entry of entries) {
    if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
    const full = join(dir, entry.name);
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    if (entry.isSymbolicLink()) {
      try {
        const s = await stat(full);
        isDir = s.isDirectory();
        isFile = s.isFile();
      } catch {
        continue; // a dangling link is not a policy file
      }
    }
    if (isDir) await walk(full, files, issues);
    // An editor schema kept next to the policies (`rekey schema > policy.schema.json`) is not a policy.
    else if (isFile && POLICY_EXTENSIONS.has(extname(entry.name)) && !entry.name.endsWith(".schema.json")) files.push(full);
  }
}

function loadOne(file: string, pool?: StringPool): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    return { policies: [], issues: [{ file, path: "", message: `cannot read: ${fsReason(err)}` }] };
  }
  return parsePolicyText(text, file, pool);
}

/**
 * Parses and validates the text of one policy file. `file` names it in issues; a name ending in
 * .json is read as JSON, anything else as YAML (which may hold several `---` documents; a broken
 * document does not hide the problems of the others). The texts of the policies are copies from
 * `pool`, so a policy does not keep the file's text alive.
 */
export function parsePolicyText(text: string, file: string, pool: StringPool = new StringPool()): LoadResult {
  const docs = file.endsWith(".json") ? parseJson(text) : parseYaml(text);
  const policies: LoadedPolicy[] = [];
  const problems: Array<{ doc: number; issue: FieldProblem }> = [];
  const syntax: PolicyIssue[] = [];
  const seenIds = new Map<string, number>();
  let nonEmpty = 0;
  docs.forEach((d, doc) => {
    if ("syntax" in d) {
      nonEmpty++;
      syntax.push(...d.syntax.map((s) => ({ file, ...s })));
      return;
    }
    const raw = pool.detach(d.value);
    if (raw === null || raw === undefined) return;
    nonEmpty++;
    if (!isRecord(raw)) {
      problems.push({ doc, issue: { path: [], message: `expected a policy (a mapping with id, owner, provider and target), got ${describeValue(raw)}` } });
      return;
    }
    const parsed = Policy.safeParse(raw);
    if (!parsed.success) {
      const found = parsed.error.issues.flatMap((issue) => describeIssue(issue, raw));
      // Checks across fields run on the raw document too, so one pass shows every problem.
      const reported = new Set(found.map((f) => formatPath(f.path)));
      const cross = checkPolicy(raw).filter((c) => !reported.has(formatPath(c.path)));
      for (const issue of [...found, ...cross]) problems.push({ doc, issue });
      return;
    }
    const policy = parsed.data;
    const cross = checkPolicy(policy);
    const firstDoc = seenIds.get(policy.id);
    if (firstDoc !== undefined) {
      cross.push({ path: ["id"], message: `duplicate policy id "${policy.id}": also defined earlier in this file (document ${firstDoc + 1}); give each policy its own id` });
    }
    if (cross.length > 0) {
      for (const issue of cross) problems.push({ doc, issue });
      return;
    }
    seenIds.set(policy.id, doc);
    policies.push({ policy, file });
  });
  if (nonEmpty === 0) {
    return { policies, issues: [{ file, line: 1, path: "", message: "the file holds no policy (it is empty); remove it or write a policy" }] };
  }
  if (problems.length === 0) return { policies, issues: syntax };

  // Error path: parse once more, this time keeping track of lines.
  const located = new Locator(text);
  // A value in a credential field is never quoted back, however a message came to hold it, and
  // neither is anything else that looks like a secret (a token pasted into the wrong field).
  const credentials = docs.map((d) => ("value" in d ? credentialValues(d.value) : []));
  const issues = problems.map(({ doc, issue }) => ({
    file,
    line: located.line(doc, issue.path),
    path: formatPath(issue.path),
    message: redactSecrets(issue.message, credentials[doc]),
  }));
  return { policies, issues: sortIssues([...syntax.map((i) => ({ ...i, message: redactSecrets(i.message) })), ...issues]) };
}

type ParsedDoc = { value: unknown } | { syntax: Array<Omit<PolicyIssue, "file">> };

function parseYaml(text: string): ParsedDoc[] {
  const fast = fastYaml(text);
  if (fast !== UNSUPPORTED) return [{ value: fast }];
  // prettyErrors off: it would count lines for every file, and lines are only needed on errors.
  const docs = parseAllDocuments(text, { prettyErrors: false });
  if (!Array.isArray(docs)) return [];
  if (docs.every((d) => d.errors.length === 0)) return docs.map((d) => ({ value: d.toJS({ maxAliasCount: 100 }) as unknown }));
  const lines = new LineCounter();
  parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
  return docs.map((d) => {
    if (d.errors.length === 0) return { value: d.toJS({ maxAliasCount: 100 }) as unknown };
    return {
      syntax: d.errors.map((e) => {
        // An error at the very end (an unclosed bracket) belongs to the last line that has text.
        const { line, col } = lines.linePos(Math.min(e.pos[0], text.trimEnd().length));
        return { line, path: "", message: `invalid YAML (column ${col}): ${e.message}` };
      }),
    };
  });
}

function parseJson(text: string): ParsedDoc[] {
  try {
    return [{ value: JSON.parse(text) as unknown }];
  } catch (err) {
    // The engine's message may quote part of the file and rarely gives a position: keep its
    // first clause, and find the position with a scanner of our own.
    const message = err instanceof Error ? err.message : String(err);
    const reason = message
      .replace(/^(Unexpected token .+?), .*$/s, "$1")
      .replace(/ (?:in JSON )?at position \d+.*$/s, "")
      .replace(/,? ".*" is not valid JSON$/s, "");
    const offset = jsonErrorOffset(text);
    const lines = new LineCounter();
    for (let at = 0; at >= 0; at = text.indexOf("\n", at) + 1 || -1) lines.addNewLine(at);
    const { line, col } = lines.linePos(Math.min(offset, text.trimEnd().length));
    return [{ syntax: [{ line, path: "", message: `invalid JSON (column ${col}): ${reason}` }] }];
  }
}

/** Offset of the first character a JSON parser would refuse (text.length when the text ends early). */
function jsonErrorOffset(text: string): number {
  let i = 0;
  const fail = (): never => {
    throw new JsonStop(i);
  };
  const ws = (): void => {
    while (i < text.length && " \t\n\r".includes(text.charAt(i))) i++;
  };
  const string = (): void => {
    i++;
    while (i < text.length) {
      const c = text.charAt(i);
      if (c === '"') {
        i++;
        return;
      }
      if (c < " ") fail();
      i += c === "\\" ? 2 : 1;
    }
    fail();
  };
  const scalar = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
  const value = (): void => {
    ws();
    const c = text.charAt(i);
    if (c === '"') return string();
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      ws();
      if (text.charAt(i) === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === "{") {
          ws();
          if (text.charAt(i) !== '"') fail();
          string();
          ws();
          if (text.charAt(i) !== ":") fail();
          i++;
        }
        value();
        ws();
        if (text.charAt(i) === ",") i++;
        else if (text.charAt(i) === close) {
          i++;
          return;
        } else fail();
      }
    }
    scalar.lastIndex = i;
    if (!scalar.test(text)) fail();
    i = scalar.lastIndex;
  };
  try {
    value();
    ws();
    return i < text.length ? i : text.length;
  } catch (err) {
    if (err instanceof JsonStop) return err.offset;
    throw err;
  }
}

class JsonStop {
  constructor(readonly offset: number) {}
}

/** Finds the line of a field path in the documents of a file (JSON is YAML, so both work). */
class Locator {
  private readonly lines = new LineCounter();
  private readonly docs: Document.Parsed[];

  constructor(text: string) {
    const docs = parseAllDocuments(text, { lineCounter: this.lines, prettyErrors: false });
    this.docs = Array.isArray(docs) ? docs : [];
  }

  /** The line of the deepest part of `path` that exists: a missing field points at its parent. */
  line(doc: number, path: Path): number | undefined {
    const d = this.docs[doc];
    if (!d) return undefined;
    let node: unknown = d.contents;
    let offset = rangeStart(node);
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : p.key) === String(seg));
        if (!pair) break;
        offset = rangeStart(pair.key) ?? offset;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === "number") {
        node = node.items[seg];
        offset = rangeStart(node) ?? offset;
      } else break;
    }
    return offset === undefined ? undefined : this.lines.linePos(offset).line;
  }
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as YamlNode | null | undefined)?.range;
  return range ? range[0] : undefined;
}

/**
 * Checks that need more than one field. Runs on a policy that passed the schema, and on the raw
 * document of one that did not (so reads every field defensively). Exported for the API, which
 * validates a policy sent to it the same way.
 */
export function checkPolicy(policy: Policy | Record<string, unknown>): FieldProblem[] {
  const issues: FieldProblem[] = [];
  const doc = policy as Record<string, unknown>;
  const provider = isRecord(doc.provider) ? doc.provider : {};
  const kind = (PROVIDER_KINDS as readonly unknown[]).includes(provider.kind) ? (provider.kind as ProviderKind) : undefined;
  // Only `kind` and `strategy` decide capabilities; a raw document may lack the rest.
  const caps = kind ? capabilitiesOf({ ...provider, kind, strategy: provider.strategy ?? "create-delete" } as ProviderConfig) : undefined;
  const strategy = provider.strategy ?? "create-delete";

  const consumers = Array.isArray(doc.consumers) ? (doc.consumers as unknown[]) : [];
  const firstIndex = new Map<string, number>();
  consumers.forEach((c, i) => {
    if (!isRecord(c)) return;
    if (typeof c.id === "string") {
      const first = firstIndex.get(c.id);
      if (first !== undefined) {
        issues.push({ path: ["consumers", i, "id"], message: `duplicate consumer id "${c.id}" (also consumers[${first}]); give each consumer its own id` });
      } else firstIndex.set(c.id, i);
    }
    if (c.confirm === "usage" && caps && !caps.reportsLastUse) {
      issues.push({
        path: ["consumers", i, "confirm"],
        message: `confirm: usage needs a provider that reports when a credential was last used, and ${kind} does not; use push or probe`,
      });
    }
  });

  // I2 cannot hold for a cut-over credential, so the policy has to say it knows.
  if (kind && caps && !caps.oldSurvivesIssue && doc.acceptCutover !== true) {
    const fix = kind === "launchdarkly" ? ', or use strategy "create-delete", which keeps the old token until consumers confirm' : "";
    issues.push({
      path: doc.acceptCutover === undefined ? ["provider", "kind"] : ["acceptCutover"],
      message:
        `${kind} is a cut-over: the old credential dies when the new one is issued, so consumers fail until they reload the new value. ` +
        `Add "acceptCutover: true" to the policy to accept this${fix}`,
    });
  }

  if (kind === "launchdarkly" && provider.resetExpiry !== undefined && strategy !== "reset-with-expiry") {
    issues.push({ path: ["provider", "resetExpiry"], message: 'resetExpiry only applies with strategy "reset-with-expiry"; remove it or set that strategy' });
  }

  const confirmation = isRecord(doc.confirmation) ? doc.confirmation : {};
  if (kind === "qstash-signing-keys" && confirmation.onTimeout === "revoke") {
    issues.push({
      path: ["confirmation", "onTimeout"],
      message:
        "qstash-signing-keys cannot revoke on timeout: the old key is revoked by the next roll, and a roll before every receiver loaded the new pair breaks every receiver; use keep-old",
    });
  }

  const schedule = isRecord(doc.schedule) ? doc.schedule : {};
  const every = toMs(schedule.every);
  const window = toMs(schedule.window);
  if (every !== undefined && window !== undefined && window >= every) {
    issues.push({
      path: ["schedule", "window"],
      message: `window (${formatDuration(window)}) must be shorter than every (${formatDuration(every)}), or a late slot would overlap the next one`,
    });
  }

  // A token pasted where its reference's name belongs parses (an env name is any identifier):
  // say so without repeating it.
  const refs: Array<[Path, unknown]> = [
    ...["management", "successorManagement"].map((k): [Path, unknown] => [["provider", k], provider[k]]),
    ...(Array.isArray(doc.notify) ? (doc.notify as unknown[]) : []).flatMap((t, i): Array<[Path, unknown]> =>
      isRecord(t) ? [[["notify", i, "signingKey"], t.signingKey], [["notify", i, "webhook"], t.webhook]] : [],
    ),
  ];
  for (const [path, ref] of refs) {
    if (!isRecord(ref)) continue;
    for (const key of ["env", "secretId"] as const) {
      const name = ref[key];
      if (typeof name === "string" && looksLikeSecret(name)) {
        issues.push({
          path: [...path, key],
          message: `this looks like a credential's value (not shown), not ${key === "env" ? "the name of an environment variable" : "a secret's name"}: put the value in ${key === "env" ? "an environment variable" : "the secret store"} and name it here`,
        });
      }
    }
  }

  const successor = isRecord(doc.offboarding) ? doc.offboarding.successor : undefined;
  if (typeof successor === "string" && typeof doc.owner === "string" && successor.toLowerCase() === doc.owner.toLowerCase()) {
    issues.push({ path: ["offboarding", "successor"], message: "the successor is the owner; name the member who takes the credential over" });
  }
  return issues;
}

/** A duration from a parsed policy (ms) or a raw document (text). */
function toMs(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  return typeof v === "string" ? parseDuration(v) : undefined;
}

// ---------------------------------------------------------------------------------------------
// zod issues -> messages that say what to do

/**
 * zod's own wording of an issue (its locale text), or undefined. A schema field with a message
 * of its own says more than a generic type complaint, so that message is kept; only zod's
 * default is replaced with rekey's clearer one. Compared with what zod itself would say for
 * this issue and value, not with a guessed prefix of its text.
 */
function zodOwnMessage(issue: z.core.$ZodIssue, input: unknown): string | undefined {
  const own = z.config().localeError?.({ ...issue, input } as unknown as z.core.$ZodRawIssue);
  return typeof own === "string" ? own : own?.message;
}

function describeIssue(issue: z.core.$ZodIssue, root: unknown, prefix: Path = []): FieldProblem[] {
  const path = [...prefix, ...issue.path];
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((key) => ({ path: [...path, key], message: unknownKeyMessage(path, key, root) }));
    case "invalid_union": {
      if (typeof issue.discriminator === "string") {
        const options = ("options" in issue ? (issue.options ?? []) : []).map(String);
        const value = valueAt(root, path);
        if (value === undefined) return [{ path, message: `missing ${issue.discriminator}: expected one of ${options.join(", ")}` }];
        if (hidden(value, [...path, issue.discriminator])) return [{ path, message: `unknown ${issue.discriminator}, ${describeValue(value, [...path, issue.discriminator])}: expected one of ${options.join(", ")}` }];
        return [{ path, message: `unknown ${issue.discriminator} ${JSON.stringify(value)}${suggest(String(value), options)}: expected one of ${options.join(", ")}` }];
      }
      const value = valueAt(root, path);
      const exclusive = EXCLUSIVE_KEYS.find(([a, b]) => isRecord(value) && a in value && b in value);
      if (exclusive) return [{ path, message: `give either ${exclusive[0]} or ${exclusive[1]}, not both` }];
      if (value !== undefined && !isRecord(value) && isCredentialPath(path)) {
        return [{ path, message: `expected a credential reference, { secretId: <name in the secret store> } or { env: <VARIABLE_NAME> }, got ${describeValue(value, path)}; a credential's value never goes in a policy file: store it and reference it here` }];
      }
      if (value !== undefined && !isRecord(value)) return [{ path, message: `expected a mapping, got ${describeValue(value, path)}` }];
      // Report the alternative that came closest; listing every alternative's complaints confuses.
      const best = [...issue.errors].sort((a, b) => weight(a) - weight(b))[0] ?? [];
      if (best.length === 0) return [{ path, message: issue.message }];
      return best.flatMap((i) => describeIssue(i, root, path));
    }
    case "invalid_type": {
      if (valueAt(root, path) === undefined) return [{ path, message: "required field is missing" }];
      const got = valueAt(root, path);
      if (issue.message === zodOwnMessage(issue, got)) {
        const quote = issue.expected === "string" && (typeof got === "number" || typeof got === "boolean") ? ` (put it in quotes: "${String(got)}")` : "";
        return [{ path, message: `expected ${issue.expected === "string" ? "text" : issue.expected}, got ${describeValue(got, path)}${quote}` }];
      }
      return [{ path, message: issue.message }];
    }
    case "invalid_value": {
      const got = valueAt(root, path);
      const values = issue.values.map((v) => String(v));
      if (hidden(got, path)) return [{ path, message: `expected one of ${values.join(", ")}, got ${describeValue(got, path)}` }];
      return [{ path, message: `expected one of ${values.join(", ")}, got ${JSON.stringify(got)}${suggest(String(got), values)}` }];
    }
    case "too_small":
      if (issue.origin === "string" && Number(issue.minimum) === 1) return [{ path, message: "must not be empty" }];
      return [{ path, message: issue.message }];
    default:
      return [{ path, message: issue.message }];
  }
}

/** Key pairs of which a mapping holds exactly one (they select an alternative of a union). */
const EXCLUSIVE_KEYS: ReadonlyArray<readonly [string, string]> = [
  ["cron", "every"],
  ["secretId", "env"],
];

function weight(issues: readonly z.core.$ZodIssue[]): number {
  return issues.reduce((n, i) => n + (i.code === "unrecognized_keys" ? i.keys.length : 1), 0);
}

function unknownKeyMessage(objectPath: Path, key: string, root: unknown): string {
  const where = keysAt(objectPath, root);
  const base = `unknown key "${key}"`;
  if (!where) return base;
  const owners = where.elsewhere.get(key);
  if (owners && where.discriminator) {
    const current = valueAt(root, [...objectPath, where.discriminator]);
    return `${base} for ${where.discriminator} ${String(current)}: it is a field of ${where.discriminator} ${owners.join(" or ")}`;
  }
  const hint = suggest(key, where.known);
  return hint ? `${base}${hint}` : `${base}: expected one of ${where.known.join(", ")}`;
}

type AnySchema = z.core.$ZodType;
interface KeysAt {
  known: string[];
  /** With a discriminated union: keys of the other alternatives, and which discriminator values have them. */
  elsewhere: Map<string, string[]>;
  discriminator?: string;
}

/** The keys the schema allows for the object at `path`, choosing union alternatives by the data. */
function keysAt(path: Path, root: unknown): KeysAt | undefined {
  let schema: AnySchema = Policy;
  let data: unknown = root;
  for (const seg of path) {
    const s = pickAlternative(unwrap(schema), data);
    const def = s._zod.def;
    if (def.type === "object") {
      const next = (def as z.core.$ZodObjectDef).shape[String(seg)];
      if (!next) return undefined;
      schema = next;
    } else if (def.type === "array") {
      schema = (def as z.core.$ZodArrayDef).element;
    } else return undefined;
    data = isRecord(data) || Array.isArray(data) ? (data as Record<PropertyKey, unknown>)[seg as string] : undefined;
  }
  const u = unwrap(schema);
  const chosen = pickAlternative(u, data);
  const known = objectKeys(chosen);
  if (!known) return undefined;
  const elsewhere = new Map<string, string[]>();
  const def = u._zod.def as z.core.$ZodDiscriminatedUnionDef;
  const discriminator = def.type === "union" && typeof def.discriminator === "string" ? def.discriminator : undefined;
  if (discriminator) {
    for (const option of def.options) {
      if (option === chosen) continue;
      const value = literalOf(option, discriminator);
      for (const k of objectKeys(option) ?? []) {
        if (known.includes(k) || value === undefined) continue;
        elsewhere.set(k, [...(elsewhere.get(k) ?? []), value]);
      }
    }
  }
  return { known, elsewhere, discriminator };
}

function unwrap(schema: AnySchema): AnySchema {
  let s = schema;
  for (;;) {
    const def = s._zod.def as { type: string; innerType?: AnySchema; in?: AnySchema };
    if (def.innerType) s = def.innerType;
    else if (def.type === "pipe" && def.in) s = def.in;
    else return s;
  }
}

/** For a union, the alternative the data means: by discriminator, else by the most matching keys. */
function pickAlternative(schema: AnySchema, data: unknown): AnySchema {
  const def = schema._zod.def as z.core.$ZodDiscriminatedUnionDef;
  if (def.type !== "union") return schema;
  const options = def.options.map(unwrap);
  if (typeof def.discriminator === "string") {
    const value = isRecord(data) ? data[def.discriminator] : undefined;
    return options.find((o) => literalOf(o, def.discriminator) === value) ?? schema;
  }
  const keys = isRecord(data) ? Object.keys(data) : [];
  let best = options[0] ?? schema;
  let bestScore = -1;
  for (const o of options) {
    const allowed = objectKeys(o) ?? [];
    const score = keys.filter((k) => allowed.includes(k)).length;
    if (score > bestScore) {
      best = o;
      bestScore = score;
    }
  }
  return best;
}

function objectKeys(schema: AnySchema): string[] | undefined {
  const def = unwrap(schema)._zod.def;
  return def.type === "object" ? Object.keys((def as z.core.$ZodObjectDef).shape) : undefined;
}

function literalOf(schema: AnySchema, key: string): string | undefined {
  const def = unwrap(schema)._zod.def;
  if (def.type !== "object") return undefined;
  const field = (def as z.core.$ZodObjectDef).shape[key];
  const fdef = field ? (unwrap(field)._zod.def as { type: string; values?: unknown[] }) : undefined;
  return fdef?.type === "literal" && fdef.values?.[0] !== undefined ? String(fdef.values[0]) : undefined;
}

/** ` (did you mean "region"?)` when a known word is a likely typo of `word`, else "". */
function suggest(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = c.toLowerCase() === word.toLowerCase() ? 0 : editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.floor(word.length / 3));
  return best !== undefined && bestDistance <= limit ? ` (did you mean "${best}"?)` : "";
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

// ---------------------------------------------------------------------------------------------

function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg as string];
  }
  return v;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** How a found value is named in a message: text in a credential field, or that looks like a secret, is not quoted. */
function describeValue(v: unknown, path: Path = []): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string" && hidden(v, path)) return `text of ${v.length} characters (not shown: ${isCredentialPath(path) ? "this field refers to a credential" : "it looks like a secret"})`;
  if (typeof v === "string") return `the text ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

/** Fields whose content refers to a credential ({ secretId } or { env }); a value there is never quoted. */
const CREDENTIAL_FIELDS = new Set(["management", "successorManagement", "signingKey", "webhook"]);

function isCredentialPath(path: Path): boolean {
  return path.some((seg) => typeof seg === "string" && CREDENTIAL_FIELDS.has(seg));
}

function hidden(value: unknown, path: Path): boolean {
  return typeof value === "string" && (isCredentialPath(path) || looksLikeSecret(value));
}

/**
 * The texts of a raw document that must not be quoted back: what stands in a credential field
 * other than a reference's own parts (a pasted value, an unknown key's value).
 */
function credentialValues(doc: unknown, inside = false, out: string[] = []): string[] {
  if (typeof doc === "string") {
    if (inside) out.push(doc);
  } else if (Array.isArray(doc)) {
    for (const item of doc) credentialValues(item, inside, out);
  } else if (isRecord(doc)) {
    for (const [key, value] of Object.entries(doc)) {
      // A reference's name (secret id, variable name, region) is not a secret unless it looks like one.
      if (inside && REFERENCE_KEYS.has(key) && typeof value === "string" && !looksLikeSecret(value)) continue;
      credentialValues(value, inside || CREDENTIAL_FIELDS.has(key), out);
    }
  }
  return out;
}

const REFERENCE_KEYS = new Set(["secretId", "region", "jsonKey", "env"]);

/** `consumers[1].url` */
export function formatPath(path: Path): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out;
}

function sortIssues(issues: PolicyIssue[]): PolicyIssue[] {
  return issues.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : (a.line ?? 0) - (b.line ?? 0)));
}

async function idLine(loaded: LoadedPolicy): Promise<number | undefined> {
  try {
    const text = await readFile(loaded.file, "utf8");
    const docs = parseAllDocuments(text, { prettyErrors: false });
    const index = Array.isArray(docs) ? docs.findIndex((d) => (d.toJS() as { id?: unknown } | null)?.id === loaded.policy.id) : -1;
    return index < 0 ? undefined : new Locator(text).line(index, ["id"]);
  } catch {
    return undefined;
  }
}

function fsReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOENT") return "no such file or directory";
  if (code === "EACCES") return "permission denied";
  return err instanceof Error ? err.message : String(err);
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
