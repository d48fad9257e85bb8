/**
 * Strict check of Kubernetes manifests: each one is compiled as an object literal typed with the
 * kubernetes-models interface of its kind, so TypeScript's excess-property check reports any
 * field the Kubernetes API does not define (a misspelt `readinessProbe`, `replicaz`), which the
 * package's JSON-schema validators let through, as `kubectl apply` would refuse it.
 */
import { join } from "node:path";
import ts from "typescript";
import type { Resource } from "./kustomize.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** apiVersion/kind -> [module, interface] in kubernetes-models. */
const TYPES: Record<string, [string, string]> = {
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "IDeployment"],
  "v1/Service": ["kubernetes-models/v1/Service", "IService"],
  "v1/ServiceAccount": ["kubernetes-models/v1/ServiceAccount", "IServiceAccount"],
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "IConfigMap"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1/PodDisruptionBudget", "IPodDisruptionBudget"],
  "networking.k8s.io/v1/NetworkPolicy": ["kubernetes-models/networking.k8s.io/v1/NetworkPolicy", "INetworkPolicy"],
};

/** The problems TypeScript finds, each prefixed with the resource's kind and name. */
export function strictProblems(resources: Resource[]): string[] {
  const file = join(ROOT, "__k8s_manifests__.ts");
  const lines: string[] = [];
  const names: string[] = [];
  resources.forEach((r, i) => {
    const t = TYPES[`${r.apiVersion}/${r.kind}`];
    if (!t) throw new Error(`no type for ${r.apiVersion} ${r.kind}`);
    lines.push(`import type { ${t[1]} as T${i} } from "${t[0]}";`);
  });
  resources.forEach((r, i) => {
    names.push(`${r.kind} ${r.metadata.name}`);
    lines.push(`export const r${i}: T${i} = ${JSON.stringify(r, null, 1)};`);
  });
  const source = lines.join("\n");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, " ");
    if (!d.file || d.start === undefined) return text;
    const before = d.file.text.slice(0, d.start);
    const at = before.lastIndexOf("export const r");
    const index = at < 0 ? -1 : Number(/^export const r(\d+)/.exec(before.slice(at))?.[1]);
    return `${names[index] ?? "?"}: ${text}`;
  });
}
