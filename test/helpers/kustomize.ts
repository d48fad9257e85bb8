/**
 * Renders a kustomization the way `kubectl apply -k` would, for the subset of kustomize that
 * deploy/kubernetes uses: resources (files and bases), namespace, labels, images,
 * configMapGenerator (files; behavior create/replace; a content-hash name suffix, with the
 * Deployments' references renamed) and patches (strategic merge: maps merged, lists of named
 * items merged by name, a patch matched by kind and name or by `target.kind`). Anything else in
 * a kustomization fails loudly, so a new feature cannot pass untested. No kustomize binary or
 * cluster runs here; the hash suffix is not kustomize's exact one.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { parseAllDocuments } from "yaml";

export interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

interface Kustomization {
  apiVersion?: string;
  kind?: string;
  namespace?: string;
  resources?: string[];
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean }[];
  images?: { name: string; newName?: string; newTag?: string }[];
  configMapGenerator?: { name: string; behavior?: "create" | "replace"; files: string[] }[];
  patches?: { path: string; target?: { kind: string } }[];
}

const KNOWN = new Set(["apiVersion", "kind", "namespace", "resources", "labels", "images", "configMapGenerator", "patches"]);

export function readYamlDocs(file: string): Resource[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0]?.message}`);
    return d.toJS() as Resource;
  });
}

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Strategic merge for the shapes used here: lists of objects with `name` merge by name. */
export function strategicMerge(base: Json, patch: Json): Json {
  if (isObject(base) && isObject(patch)) {
    const out: Record<string, Json> = { ...base };
    for (const [k, v] of Object.entries(patch)) out[k] = v === null ? undefined : k in base ? strategicMerge(base[k], v) : v;
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch) && [...base, ...patch].every((i) => isObject(i) && typeof i.name === "string")) {
    const out = base.map((b) => {
      const p = patch.find((x) => (x as { name: string }).name === (b as { name: string }).name);
      return p ? strategicMerge(b, p) : b;
    });
    for (const p of patch) if (!base.some((b) => (b as { name: string }).name === (p as { name: string }).name)) out.push(p);
    return out;
  }
  return patch;
}

function podSpecs(r: Resource): Record<string, Json>[] {
  const spec = (r.spec as { template?: { spec?: Record<string, Json> } } | undefined)?.template?.spec;
  return r.kind === "Deployment" && spec ? [spec] : [];
}

export function renderKustomization(dir: string): Resource[] {
  const k = readYamlDocs(join(dir, "kustomization.yaml"))[0] as unknown as Kustomization;
  for (const key of Object.keys(k)) if (!KNOWN.has(key)) throw new Error(`${dir}/kustomization.yaml: "${key}" is not supported by the test renderer`);
  let out: Resource[] = [];
  for (const r of k.resources ?? []) {
    const path = join(dir, r);
    out.push(...(statSync(path).isDirectory() ? renderKustomization(path) : readYamlDocs(path)));
  }
  for (const g of k.configMapGenerator ?? []) {
    const data = Object.fromEntries(g.files.map((f) => [basename(f), readFileSync(join(dir, f), "utf8")]));
    const existing = out.find((r) => r.kind === "ConfigMap" && r.metadata.annotations?.["test/generated-from"] === g.name);
    if (g.behavior === "replace") {
      // The base's ConfigMap keeps what the base did to it (labels); its data is replaced.
      if (!existing) throw new Error(`${dir}: configMapGenerator ${g.name} replaces a ConfigMap no base generates`);
      existing.data = data;
    } else if (existing) throw new Error(`${dir}: configMapGenerator ${g.name} exists already (use behavior: replace)`);
    else out.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name, annotations: { "test/generated-from": g.name } }, data });
  }
  for (const p of k.patches ?? []) {
    const patch = readYamlDocs(join(dir, p.path))[0] as Resource;
    const targets = out.filter((r) => (p.target ? r.kind === p.target.kind : r.kind === patch.kind && r.metadata.name === patch.metadata.name));
    if (!targets.length) throw new Error(`${dir}: patch ${p.path} matches no resource`);
    out = out.map((r) => (targets.includes(r) ? (strategicMerge(r, p.target ? { ...patch, metadata: {} } : patch) as Resource) : r));
  }
  for (const img of k.images ?? []) {
    for (const spec of out.flatMap(podSpecs)) {
      for (const c of spec.containers as { image: string }[]) {
        const [name, tag] = c.image.split(":");
        if (name === img.name) c.image = `${img.newName ?? name}:${img.newTag ?? tag}`;
      }
    }
  }
  for (const l of k.labels ?? []) for (const r of out) r.metadata.labels = { ...r.metadata.labels, ...l.pairs };
  if (k.namespace) for (const r of out) r.metadata.namespace = k.namespace;
  return out;
}

/** The final step of `kubectl apply -k`: generated ConfigMaps get a content-hash suffix, and references follow. */
export function finalize(resources: Resource[]): Resource[] {
  const renamed = new Map<string, string>();
  const out = resources.map((r) => {
    const from = r.metadata.annotations?.["test/generated-from"];
    if (!from) return r;
    const hash = createHash("sha256").update(JSON.stringify(r.data)).digest("hex").slice(0, 10);
    renamed.set(from, `${from}-${hash}`);
    const { annotations: _generated, ...metadata } = r.metadata;
    return { ...r, metadata: { ...metadata, name: `${from}-${hash}` } };
  });
  for (const spec of out.flatMap(podSpecs)) {
    for (const v of (spec.volumes ?? []) as { configMap?: { name: string } }[]) if (v.configMap && renamed.has(v.configMap.name)) v.configMap.name = renamed.get(v.configMap.name)!;
  }
  return out;
}
