/**
 * deploy/kubernetes, checked without a cluster: every overlay is rendered the way
 * `kubectl apply -k` would (test/helpers/kustomize.ts), every manifest is validated against the
 * Kubernetes API schemas shipped by the kubernetes-models package, and what a deployment relies
 * on is asserted: probes on the health port, resource requests, a non-root read-only container,
 * policies from a ConfigMap that rekey's loader accepts, credentials from files, a
 * PodDisruptionBudget and NetworkPolicies for every role.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Deployment } from "kubernetes-models/apps/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Service, ServiceAccount } from "kubernetes-models/v1";
import { afterAll, describe, expect, it } from "vitest";
import { loadPolicies } from "../../src/policy/loader.ts";
import { strictProblems } from "../helpers/k8s-types.ts";
import { finalize, readYamlDocs, renderKustomization, type Resource } from "../helpers/kustomize.ts";

const ROOT = new URL("../../deploy/kubernetes/", import.meta.url).pathname;
const OVERLAYS = readdirSync(join(ROOT, "overlays"));
const ROLES = ["api", "worker", "scheduler"] as const;

/** The kubernetes-models class that validates each apiVersion/kind rekey ships. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
  "v1/ConfigMap": ConfigMap,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

function validate(r: Resource): void {
  const Model = MODELS[`${r.apiVersion}/${r.kind}`];
  if (!Model) throw new Error(`no schema for ${r.apiVersion} ${r.kind} (${r.metadata.name}): add it to MODELS`);
  new Model(r as never).validate();
}

interface Container {
  name: string;
  image: string;
  args: string[];
  ports?: { name: string; containerPort: number }[];
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
}
interface PodSpec {
  serviceAccountName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
  volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[];
}
const podSpec = (d: Resource) => (d.spec as { template: { spec: PodSpec } }).template.spec;
const podLabels = (d: Resource) => (d.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);

describe("Kubernetes manifests (deploy/kubernetes)", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("has the overlays the docs describe", () => {
    expect(OVERLAYS.sort()).toEqual(["eks", "static-credentials"]);
  });

  it("every file under base/ and overlays/ is valid under the Kubernetes schemas, patches included", () => {
    let checked = 0;
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (e.isDirectory()) {
          if (e.name !== "policies") walk(path);
        } else if (e.name.endsWith(".yaml") && e.name !== "kustomization.yaml") {
          for (const r of readYamlDocs(path)) {
            // A patch is a partial object: validated after it is applied (below), by kind here.
            if (dir.includes("overlays")) expect(Object.keys(MODELS), path).toContain(`${r.apiVersion}/${r.kind}`);
            else expect(() => validate(r), path).not.toThrow();
            checked++;
          }
        }
      }
    };
    walk(ROOT);
    expect(checked).toBeGreaterThanOrEqual(14);
  });

  it("the schema check catches a broken manifest (it is not vacuous)", () => {
    const [deployment] = finalize(renderKustomization(join(ROOT, "overlays", "eks"))).filter((r) => r.kind === "Deployment");
    const broken = structuredClone(deployment!) as Resource & { spec: Record<string, unknown> };
    broken.spec.replicas = "three";
    expect(() => validate(broken)).toThrow(/replicas must be integer/);
    const noSelector = structuredClone(deployment!) as Resource & { spec: Record<string, unknown> };
    delete noSelector.spec.selector;
    expect(() => validate(noSelector)).toThrow(/must have required property selector/);
    // Unknown fields pass those validators; the strict check (typed literals) refuses them.
    const typo = structuredClone(deployment!) as Resource & { spec: { template: { spec: { containers: Record<string, unknown>[] } } } };
    typo.spec.template.spec.containers[0]!.readinesProbe = { httpGet: { path: "/readyz", port: "health" } };
    expect(() => validate(typo)).not.toThrow();
    expect(strictProblems([typo]).join("\n")).toMatch(/^Deployment rekey-api: Object literal may only specify known properties, and '"readinesProbe"' does not exist in type 'IContainer'/);
  });

  describe.each(OVERLAYS)("overlay %s", (overlay) => {
    const resources = finalize(renderKustomization(join(ROOT, "overlays", overlay)));
    const of = (kind: string) => resources.filter((r) => r.kind === kind);
    const deployments = of("Deployment");

    it("renders to valid manifests, all in the overlay's namespace, with no field Kubernetes does not define", () => {
      expect(strictProblems(resources)).toEqual([]);
      for (const r of resources) {
        expect(() => validate(r), `${r.kind} ${r.metadata.name}`).not.toThrow();
        expect(r.metadata.namespace, `${r.kind} ${r.metadata.name}`).toBe("rekey");
        expect(r.metadata.labels?.["app.kubernetes.io/name"]).toBe("rekey");
      }
      expect(deployments.map((d) => d.metadata.name).sort()).toEqual(["rekey-api", "rekey-scheduler", "rekey-worker"]);
    });

    it.each(ROLES)("the %s Deployment: probes, requests, non-root read-only container, credentials from files", (role) => {
      const d = deployments.find((x) => x.metadata.name === `rekey-${role}`)!;
      const spec = podSpec(d);
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
      expect(spec.serviceAccountName).toBe("rekey");
      expect(spec.containers).toHaveLength(1);
      const c = spec.containers[0]!;
      expect(c.args).toEqual([role]);
      expect(c.image).not.toBe("rekey:0.1.0"); // the overlay's image
      expect(c.ports?.find((p) => p.name === "health")?.containerPort).toBe(9090);
      if (role === "api") expect(c.ports?.find((p) => p.name === "http")?.containerPort).toBe(8080);
      expect(c.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "health" });
      expect(c.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "health" });
      expect(Object.keys(c.resources?.requests ?? {}).sort()).toEqual(["cpu", "memory"]);
      expect(c.resources?.limits?.memory).toBeDefined();
      expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      // Secret settings come from the mounted Secret, as *_FILE; none is a plain value.
      const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
      expect(env.REDIS_URL).toBeUndefined();
      expect(env.REDIS_URL_FILE).toBe("/run/secrets/rekey/redis-url");
      expect(env.REKEY_FINGERPRINT_KEY_FILE).toBe("/run/secrets/rekey/fingerprint-key");
      if (role === "api") expect(env.REKEY_ADMIN_TOKEN_HASH_FILE).toBe("/run/secrets/rekey/admin-token-hash");
      expect(c.volumeMounts).toContainEqual({ name: "secrets", mountPath: "/run/secrets/rekey", readOnly: true });
      expect(c.volumeMounts).toContainEqual({ name: "policies", mountPath: "/app/policies", readOnly: true });
      expect(spec.volumes?.find((v) => v.name === "secrets")?.secret?.secretName).toBe("rekey");
      // The policies volume names the generated ConfigMap (with its hash suffix).
      const cm = spec.volumes?.find((v) => v.name === "policies")?.configMap?.name;
      expect(of("ConfigMap").map((m) => m.metadata.name)).toContain(cm);
      expect(cm).toMatch(/^rekey-policies-[0-9a-f]{10}$/);
      // Each role has a PodDisruptionBudget and an ingress NetworkPolicy selecting its pods.
      const pdbs = of("PodDisruptionBudget").filter((p) => matches((p.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, podLabels(d)));
      expect(pdbs, `PDB for ${role}`).toHaveLength(1);
      const ingress = of("NetworkPolicy").filter((n) => {
        const spec = n.spec as { policyTypes: string[]; podSelector: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; values: string[] }[] } };
        const sel = spec.podSelector;
        const byLabels = sel.matchLabels ? matches(sel.matchLabels, podLabels(d)) : true;
        const byExpr = (sel.matchExpressions ?? []).every((e) => e.values.includes(podLabels(d)[e.key] ?? ""));
        return spec.policyTypes.includes("Ingress") && byLabels && byExpr;
      });
      expect(ingress, `ingress NetworkPolicy for ${role}`).toHaveLength(1);
    });

    it("restricts egress of every pod to DNS, Redis and HTTPS", () => {
      const egress = of("NetworkPolicy").filter((n) => (n.spec as { policyTypes: string[] }).policyTypes.includes("Egress"));
      expect(egress).toHaveLength(1);
      const ports = (egress[0]!.spec as { egress: { ports: { port: number }[] }[] }).egress.flatMap((e) => e.ports.map((p) => p.port));
      expect([...new Set(ports)].sort((a, b) => a - b)).toEqual([53, 443, 6379]);
    });

    it("ships policies in its ConfigMap that rekey loads from the volume Kubernetes mounts", async () => {
      const [cm] = of("ConfigMap");
      const data = (cm as unknown as { data: Record<string, string> }).data;
      expect(Object.keys(data).length).toBeGreaterThan(0);
      // The kubelet's layout: the files are links into a timestamped folder behind `..data`.
      const dir = mkdtempSync(join(tmpdir(), "rekey-cm-"));
      dirs.push(dir);
      mkdirSync(join(dir, "..2026_12_02_00_00_00.000000001"));
      for (const [name, text] of Object.entries(data)) writeFileSync(join(dir, "..2026_12_02_00_00_00.000000001", name), text);
      symlinkSync("..2026_12_02_00_00_00.000000001", join(dir, "..data"));
      for (const name of Object.keys(data)) symlinkSync(join("..data", name), join(dir, name));
      const { policies, issues } = await loadPolicies([dir]);
      expect(issues).toEqual([]);
      expect(policies.length).toBe(Object.keys(data).length);
    });
  });

  it("eks: AWS credentials by workload identity (the ServiceAccount's IAM role), no AWS key anywhere", () => {
    const resources = finalize(renderKustomization(join(ROOT, "overlays", "eks")));
    const sa = resources.find((r) => r.kind === "ServiceAccount")!;
    expect(sa.metadata.annotations?.["eks.amazonaws.com/role-arn"]).toMatch(/^arn:aws:iam::\d{12}:role\//);
    expect(JSON.stringify(resources)).not.toMatch(/AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SHARED_CREDENTIALS_FILE/);
    expect((resources.find((r) => r.metadata.name === "rekey-worker")!.spec as { replicas: number }).replicas).toBe(3);
  });

  it("static-credentials: every Deployment reads AWS credentials from the mounted Secret rekey-aws", () => {
    const deployments = finalize(renderKustomization(join(ROOT, "overlays", "static-credentials"))).filter((r) => r.kind === "Deployment");
    for (const d of deployments) {
      const spec = podSpec(d);
      const c = spec.containers[0]!;
      expect(c.env).toContainEqual({ name: "AWS_SHARED_CREDENTIALS_FILE", value: "/run/secrets/aws/credentials" });
      expect(c.volumeMounts).toContainEqual({ name: "aws-credentials", mountPath: "/run/secrets/aws", readOnly: true });
      expect(spec.volumes?.find((v) => v.name === "aws-credentials")?.secret?.secretName).toBe("rekey-aws");
      // The base's env is kept, not replaced, by the patch.
      expect(c.env?.map((e) => e.name)).toContain("REDIS_URL_FILE");
    }
  });
});
