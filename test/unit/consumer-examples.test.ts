/**
 * examples/: the agent configs parse as `rekey agent` reads them, the Kubernetes manifest is
 * valid against the API schemas (kubernetes-models) and wires the sidecar the way the docs say,
 * and the compose file starts the app only once the agent is ready.
 */
import { readFileSync } from "node:fs";
import { Deployment } from "kubernetes-models/apps/v1";
import { ConfigMap, Service } from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseAgentConfig } from "../../src/consumers/agent/config.ts";
import { readYamlDocs } from "../helpers/kustomize.ts";

const EXAMPLES = new URL("../../examples/", import.meta.url).pathname;

describe("consumer examples", () => {
  it("the Python service's agent config is valid", () => {
    const c = parseAgentConfig(readFileSync(`${EXAMPLES}python-service/agent.yaml`, "utf8"), "agent.yaml");
    expect(c.outputs[0]).toMatchObject({ path: "/run/rekey/upstream-token", mode: 0o600 });
    expect(c.reload?.command).toContain("kill -HUP");
  });

  it("the Kubernetes manifest is valid and runs the agent as a native sidecar the app waits for", () => {
    const docs = readYamlDocs(`${EXAMPLES}kubernetes/python-service.yaml`);
    const cm = docs.find((d) => d.kind === "ConfigMap")!;
    const deploy = docs.find((d) => d.kind === "Deployment")!;
    const svc = docs.find((d) => d.kind === "Service")!;
    new ConfigMap(cm as never).validate();
    new Deployment(deploy as never).validate();
    new Service(svc as never).validate();
    const config = parseAgentConfig((cm as unknown as { data: Record<string, string> }).data["agent.yaml"]!, "configmap agent.yaml");
    const spec = (deploy.spec as { replicas: number; template: { spec: Record<string, unknown> } });
    const pod = spec.template.spec as { shareProcessNamespace: boolean; initContainers: { restartPolicy: string; startupProbe: { httpGet: { path: string } }; args: string[] }[]; volumes: { name: string; emptyDir?: { medium?: string } }[] };
    expect(spec.replicas).toBe(1);
    expect(pod.shareProcessNamespace).toBe(true);
    expect(pod.initContainers[0]).toMatchObject({ restartPolicy: "Always", args: ["agent", "--config", "/etc/rekey/agent.yaml"], startupProbe: { httpGet: { path: "/healthz" } } });
    expect(pod.volumes.find((v) => v.name === "rekey-run")?.emptyDir?.medium).toBe("Memory");
    expect(config.listen).toBe("0.0.0.0:8787");
  });

  it("the compose sidecar starts the app after the agent is healthy, in the agent's process namespace", () => {
    const compose = parse(readFileSync(`${EXAMPLES}compose-sidecar/docker-compose.yml`, "utf8")) as { services: Record<string, Record<string, unknown>> };
    expect(compose.services.agent!.command).toEqual(["agent", "--config", "/etc/rekey/agent.yaml"]);
    expect(compose.services.app!.pid).toBe("service:agent");
    expect(compose.services.app!.depends_on).toEqual({ agent: { condition: "service_healthy" } });
  });
});
