/**
 * Metrics an operator alerts on: per-credential gauges read from Redis, a worker's step
 * durations and failures, bounded labels; the alert rules pass `promtool test rules`; the Grafana
 * dashboard parses and asks only for metrics rekey serves.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { Registry } from "prom-client";
import { parse as parseYaml } from "yaml";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildApi } from "../../src/api/server.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { createLogger } from "../../src/log.ts";
import { openLeakIncidents, rotationMetrics, stateMetrics } from "../../src/observe/metrics.ts";
import { auditSinkMetrics } from "../../src/audit/sink.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { leakResponseFor } from "../../src/leak/leak.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER = "metrics-consumer-token-0123456789";
const PROMTOOL = "/usr/bin/promtool";

/** Every metric name a process of each role can serve. */
async function servedNames(): Promise<Set<string>> {
  const registry = new Registry();
  rotationMetrics(registry);
  const noState = { records: { active: async () => [], policySummary: async () => ({}) }, locks: { inFlight: async () => undefined }, gates: { until: async () => 0 } } as never;
  stateMetrics(registry, { state: noState, policies: { all: () => [] }, openLeakIncidents: async () => 0 });
  auditSinkMetrics(registry, async () => 0);
  // The API's own (requests, confirmations, queue jobs) on a registry of its own.
  const api = new Registry();
  buildApi({ registry: api, state: noState, audit: {} as never, rotations: {} as never, policies: { all: () => [], get: () => undefined, consumerTokenHashes: () => new Set() }, log: createLogger({ level: "silent" }) });
  const names = new Set<string>();
  for (const r of [registry, api]) {
    for (const m of await r.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m.name + s);
    }
  }
  return names;
}

function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\brekey_[a-z_]+\b/g)].map((m) => m[0]);
}

describe("alert rules and the Grafana dashboard", () => {
  it("pass promtool's rule check and unit tests", () => {
    const opts = { cwd: "deploy/prometheus", encoding: "utf8" as const, stdio: "pipe" as const };
    expect(execFileSync(PROMTOOL, ["check", "rules", "rekey-alerts.yml"], opts)).toContain("SUCCESS: 6 rules found");
    expect(execFileSync(PROMTOOL, ["test", "rules", "rekey-alerts.test.yml"], opts)).toContain("SUCCESS");
  });

  it("refer only to metrics rekey serves", async () => {
    const names = await servedNames();
    const rules = parseYaml(readFileSync("deploy/prometheus/rekey-alerts.yml", "utf8")) as { groups: { rules: { alert: string; expr: string }[] }[] };
    const ruleExprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
    expect(ruleExprs.length).toBe(6);
    const dashboard = JSON.parse(readFileSync("deploy/grafana/rekey-dashboard.json", "utf8")) as { panels: { title: string; targets: { expr: string }[] }[] };
    expect(dashboard.panels.length).toBeGreaterThan(8);
    for (const panel of dashboard.panels) expect(panel.targets.length, panel.title).toBeGreaterThan(0);
    const exprs = [...ruleExprs, ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr))];
    for (const e of exprs) {
      expect(metricNames(e).length, e).toBeGreaterThan(0);
      for (const n of metricNames(e)) expect(names, `${n} in ${e}`).toContain(n);
    }
  });
});

describe("rekey's metrics on a live rotation", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let worker: Registry;
  let api: Registry;
  let managed: { id: string; value: string };

  beforeEach(async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin" });
    managed = ld.addToken({ role: "writer", name: "metrics" });
    worker = new Registry();
    const policy: PolicyInput = {
      id: "ld-metrics",
      owner: "ops@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { every: "7d" },
      target: { secretId: "prod/ld-metrics", region: REGION },
      consumers: [{ id: "web", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
    };
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: admin.value }, observer: rotationMetrics(worker) });
    await stack.store.create!({ secretId: "prod/ld-metrics", region: REGION }, managed.value);
    api = new Registry();
    stateMetrics(api, { state: stack.rt.state, policies: stack.rt.policies, openLeakIncidents: () => openLeakIncidents(leakResponseFor(stack.rt)) });
  });

  afterEach(async () => {
    await stack.close();
    await ld.close();
  });

  const value = async (r: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> => {
    const m = (await r.getMetricsAsJSON()).find((x) => x.name === name);
    const v = (m?.values as { value: number; labels: Record<string, string | number>; metricName?: string }[] | undefined)?.find(
      (x) => Object.entries(labels).every(([k, want]) => String(x.labels[k]) === want) && (x.metricName === undefined || x.metricName === name || labels.__name === x.metricName),
    );
    return v?.value;
  };

  it("credential age, pending consumers, overlap, step durations and failures, with bounded labels", async () => {
    // Not rotated by rekey yet: no age, nothing pending.
    expect(await value(api, "rekey_credential_age_seconds", { policy: "ld-metrics" })).toBeUndefined();
    expect(await value(api, "rekey_credential_max_age_seconds", { policy: "ld-metrics" })).toBe(7 * 86_400 + 3_600);

    ld.faults.inject({ route: "POST /api/v2/tokens", kind: "500", times: 1 });
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-metrics", reason: "manual", actor: "test" });
    await until("awaiting", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation", 30_000);
    expect(await value(worker, "rekey_rotation_failures_total", { policy: "ld-metrics", provider: "launchdarkly", step: "issuing" })).toBe(1);
    expect(await value(api, "rekey_consumers_pending", { policy: "ld-metrics" })).toBe(1);
    expect(await value(api, "rekey_overlap_seconds", { policy: "ld-metrics", provider: "launchdarkly" })).toBeGreaterThanOrEqual(0);
    expect(await value(api, "rekey_rotations_in_flight", { status: "awaiting-confirmation" })).toBe(1);
    const age = await value(api, "rekey_credential_age_seconds", { policy: "ld-metrics" });
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(60);

    await stack.rt.rotations.confirm({ policyId: "ld-metrics", consumerId: "web", bearer: CONSUMER, versionId: req.rotationId });
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 30_000);
    expect(await value(api, "rekey_consumers_pending", { policy: "ld-metrics" })).toBe(0);
    expect(await value(api, "rekey_overlap_seconds", { policy: "ld-metrics" })).toBe(0);
    expect(await value(api, "rekey_rotation_needs_attention", { policy: "ld-metrics" })).toBe(0);
    const success = await value(api, "rekey_last_rotation_success_timestamp_seconds", { policy: "ld-metrics" });
    expect(Math.abs(success! - Date.now() / 1_000)).toBeLessThan(60);
    const text = (await worker.metrics()) + (await api.metrics());
    // The failed attempt counts as a failure; the retry that ran to its end, as a duration.
    expect(text).toMatch(/rekey_rotation_step_duration_seconds_count\{provider="launchdarkly",step="issuing"\} 1/);
    expect(text).toMatch(/rekey_rotation_step_duration_seconds_count\{provider="launchdarkly",step="revoking"\} 1/);
    // Bounded labels: no rotation id, no credential value, no consumer token anywhere.
    for (const secret of [req.rotationId, managed.value, CONSUMER]) expect(text).not.toContain(secret);
    expect(await value(api, "rekey_leak_incidents_open")).toBe(0);
  });
});
