/**
 * The `rekey agent` configuration file (YAML): which secrets to watch, where to write them, how
 * to reload the app and check it is healthy, and how to reach rekey. Every problem is reported
 * with the file, the line and the field, like policy files.
 *
 * The file holds no secret: the consumer token, the webhook signing key and the fingerprint key
 * are references to an environment variable or a file (a mounted Kubernetes or compose secret),
 * so the file can live in a ConfigMap or a repository.
 */
import { readFileSync } from "node:fs";
import Mustache from "mustache";
import { isMap, isSeq, LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { Duration } from "../../policy/schema.ts";

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Where a credential comes from: an environment variable or a file (never the value itself). */
export const SecretRefConfig = z.union([
  z.strictObject({ env: z.string().regex(NAME, "expected an environment variable name") }),
  z.strictObject({ file: z.string().min(1) }),
]);
export type SecretRefConfig = z.infer<typeof SecretRefConfig>;

const HttpUrl = z.url({ protocol: /^https?$/, error: (iss) => (iss.input === undefined ? undefined : `expected an http(s) URL, got ${JSON.stringify(iss.input)}`) });

const Mode = z
  .union([z.string().regex(/^0?[0-7]{3}$/, 'expected an octal file mode such as "0600"'), z.number().int().min(0).max(0o777)])
  .transform((m) => (typeof m === "number" ? m : parseInt(m, 8)))
  .refine((m) => (m & 0o007) === 0, { message: "a file holding a secret must not be readable or writable by others (use 0600 or 0640)" });

const SecretSpec = z.strictObject({
  /** Secret name or ARN. */
  secretId: z.string().min(1),
  jsonKey: z.string().min(1).optional(),
  region: z.string().min(1).optional(),
  /** The rekey policy that rotates it. */
  policyId: z.string().min(1),
  /** This consumer's id in that policy (a push consumer). */
  consumerId: z.string().min(1),
});

const outputBase = {
  /** Where to write. The directory must exist; the file is replaced atomically. */
  path: z.string().min(1),
  /** File mode. Default 0600. */
  mode: Mode.default(0o600),
};

const Output = z.union([
  z.strictObject({ ...outputBase, secret: z.string().regex(NAME, "expected the name of a secret in `secrets`") }),
  z.strictObject({ ...outputBase, template: z.string().min(1) }),
  z.strictObject({ ...outputBase, templateFile: z.string().min(1) }),
  z.strictObject({
    ...outputBase,
    /** Environment file: variable name -> secret name. */
    env: z.record(z.string().regex(NAME, "expected an environment variable name"), z.string().regex(NAME, "expected the name of a secret in `secrets`")),
  }),
]);
export type OutputConfig = z.infer<typeof Output>;

const Listen = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. "0.0.0.0:8787"');

export const AgentConfig = z
  .strictObject({
    rekey: z.strictObject({
      /** rekey's API, e.g. http://rekey-api:8080. */
      url: HttpUrl,
      /** The consumer's bearer token. */
      token: SecretRefConfig,
      /** REKEY_FINGERPRINT_KEY: confirm by keyed fingerprint instead of version id. */
      fingerprintKey: SecretRefConfig.optional(),
    }),
    aws: z.strictObject({ region: z.string().min(1).optional() }).prefault({}),
    secrets: z.record(z.string().regex(NAME, "expected a name of letters, digits and _ (it is used in templates)"), SecretSpec).refine((r) => Object.keys(r).length > 0, { message: "list at least one secret" }),
    outputs: z.array(Output).min(1, "list at least one output"),
    reload: z
      .strictObject({
        /** Run with /bin/sh -c after the outputs changed. */
        command: z.string().min(1),
        timeout: Duration.prefault("60s"),
        /** Also run it after the first write at start. Default false (the app reads the files as it starts). */
        onStart: z.boolean().default(false),
      })
      .optional(),
    health: z
      .strictObject({
        url: HttpUrl.optional(),
        command: z.string().min(1).optional(),
        /** One attempt's budget. */
        timeout: Duration.prefault("5s"),
        /** Keep trying this long after the reload before it counts as failed. */
        within: Duration.prefault("60s"),
        interval: Duration.prefault("1s"),
      })
      .refine((h) => !!h.url !== !!h.command, { message: "give exactly one of url or command" })
      .optional(),
    webhook: z
      .strictObject({
        path: z.string().startsWith("/").default("/rekey/webhook"),
        /** The policy's webhook signing key; several while it changes. */
        signingKey: z.union([SecretRefConfig, z.array(SecretRefConfig).min(1)]),
        /** At most 5m. */
        tolerance: Duration.prefault("5m").refine((ms) => ms >= 1_000 && ms <= 300_000, { message: "expected between 1s and 5m" }),
      })
      .optional(),
    /** Read every secret again this often (webhooks make it sooner). */
    poll: Duration.prefault("60s"),
    /** Changes arriving within this long of each other cause one reload. */
    debounce: Duration.prefault("2s"),
    /** Wait before trying a failed reload or health check again (doubling up to the poll interval). */
    retry: Duration.prefault("15s"),
    /** Where the agent's HTTP server listens: the webhook, /healthz and /status (no secret). Default: no server. */
    listen: Listen.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.webhook && !c.listen) ctx.addIssue({ code: "custom", path: ["webhook"], message: 'a webhook needs the agent to listen: add listen: "0.0.0.0:8787" (host:port)' });
    const names = new Set(Object.keys(c.secrets));
    c.outputs.forEach((o, i) => {
      const used = "secret" in o ? [o.secret] : "env" in o ? Object.values(o.env) : "template" in o ? templateNames(o.template) : [];
      for (const n of used) {
        if (!names.has(n)) {
          const field = "secret" in o ? "secret" : "env" in o ? "env" : "template";
          ctx.addIssue({ code: "custom", path: ["outputs", i, field], message: `no secret named "${n}" in secrets (known: ${[...names].join(", ")})` });
        }
      }
    });
    const paths = new Map<string, number>();
    c.outputs.forEach((o, i) => {
      const first = paths.get(o.path);
      if (first !== undefined) ctx.addIssue({ code: "custom", path: ["outputs", i, "path"], message: `outputs[${first}] writes ${o.path} already` });
      else paths.set(o.path, i);
    });
  });
export type AgentConfig = z.infer<typeof AgentConfig>;

/** Variable names a mustache template refers to (sections included). */
export function templateNames(template: string): string[] {
  const out: string[] = [];
  const walk = (tokens: unknown[][]): void => {
    for (const t of tokens) {
      const [type, name] = t as [string, string];
      if (["name", "&", "{", "#", "^"].includes(type)) out.push(name.split(".")[0]!);
      if (Array.isArray(t[4])) walk(t[4] as unknown[][]);
    }
  };
  walk(Mustache.parse(template) as unknown as unknown[][]);
  return out;
}

export class AgentConfigError extends Error {
  override name = "AgentConfigError";
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

/** Parse and validate a config file's text; every problem as `file:line: path: message`. */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length) {
    throw new AgentConfigError(doc.errors.map((e) => `${file}:${e.linePos?.[0]?.line ?? "?"}: ${e.message.split("\n")[0]}`));
  }
  const data: unknown = doc.toJS();
  const r = AgentConfig.safeParse(data);
  if (r.success) {
    // A template that does not parse is named here rather than at the first rotation.
    const problems: string[] = [];
    r.data.outputs.forEach((o, i) => {
      if ("template" in o) {
        try {
          Mustache.parse(o.template);
        } catch (err) {
          problems.push(`${file}:${lineOf(doc, lines, ["outputs", i, "template"]) ?? "?"}: outputs[${i}].template: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    });
    if (problems.length) throw new AgentConfigError(problems);
    return r.data;
  }
  throw new AgentConfigError(
    r.error.issues.map((i) => {
      const path = i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "");
      const line = lineOf(doc, lines, i.path as (string | number)[]);
      const message = i.code === "invalid_type" && i.input === undefined ? "required" : i.code === "unrecognized_keys" ? `unknown field(s) ${i.keys.join(", ")}` : i.message;
      return `${file}${line ? `:${line}` : ""}: ${path || "(top level)"}: ${message}`;
    }),
  );
}

export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new AgentConfigError([`${file}: cannot read the agent config: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return parseAgentConfig(text, file);
}

/** The line of the deepest node on `path` that exists in the document. */
function lineOf(doc: ReturnType<typeof parseDocument>, lines: LineCounter, path: (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === "object" && node.range) return lines.linePos(node.range[0]).line;
    if (n === 0 && (isMap(doc.contents) || isSeq(doc.contents))) return 1;
  }
  return undefined;
}

/** Read a credential reference. The value is returned, never logged; errors name the reference only. */
export function readRef(ref: SecretRefConfig, env: NodeJS.ProcessEnv, what: string): string {
  if ("env" in ref) {
    const v = env[ref.env];
    if (!v) throw new AgentConfigError([`${what}: environment variable ${ref.env} is not set`]);
    return v;
  }
  let v: string;
  try {
    v = readFileSync(ref.file, "utf8").trim();
  } catch (err) {
    throw new AgentConfigError([`${what}: cannot read ${ref.file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`]);
  }
  if (!v) throw new AgentConfigError([`${what}: ${ref.file} is empty`]);
  return v;
}

/** Environment variables the config names as credentials: kept out of the commands the agent runs. */
export function credentialEnvNames(c: AgentConfig): string[] {
  const refs: SecretRefConfig[] = [c.rekey.token];
  if (c.rekey.fingerprintKey) refs.push(c.rekey.fingerprintKey);
  if (c.webhook) refs.push(...(Array.isArray(c.webhook.signingKey) ? c.webhook.signingKey : [c.webhook.signingKey]));
  return refs.flatMap((r) => ("env" in r ? [r.env] : []));
}
