/**
 * The outside world of a fault-matrix run, all in the harness process on 127.0.0.1: the AWS
 * Secrets Manager emulator, LaunchDarkly accounts, a Snyk organisation with OAuth service
 * accounts, QStash accounts, and a probe endpoint for consumers that confirm by probe. Each
 * policy gets a seeded credential that is AWSCURRENT before the run starts.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type AwsEmulator, startAwsEmulator } from "../../test/fakes/aws/emulator.ts";
import type { FaultKind, HttpFake } from "../../test/fakes/http-fake.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../../test/fakes/launchdarkly.ts";
import { QStashFake } from "../../test/fakes/qstash.ts";
import { type SnykFake, startSnykFake } from "../../test/fakes/snyk.ts";

export const REGION = "us-east-1";
export const CONSUMER_TOKEN = "chaos-consumer-token-0123456789abcdef";
export const FINGERPRINT_KEY = "chaos-fingerprint-key-0123456789abcdef0123";
/** LaunchDarkly policies per account (fake instance): each account is its own rate-limit scope. */
const LD_PER_ACCOUNT = 10;

export type ProviderKind = "launchdarkly" | "snyk" | "qstash";

export interface PolicyWorld {
  id: string;
  kind: ProviderKind;
  secretId: string;
  /** Required consumers: `app` (push) always, `edge` (probe) on some policies. */
  consumers: string[];
  /** The old credential survives issue (create-then-delete); false for QStash's reset. */
  overlap: boolean;
  /** Would the provider accept this value right now? */
  isLive(value: string): boolean;
  /** Every credential the provider holds for this policy now (values). */
  liveValues(): string[];
  seed: string;
  /** Provider-side detail for the double-issue check: live credentials by the rotation that made them. */
  liveByRotation(): Map<string, number>;
}

export interface World {
  aws: AwsEmulator;
  fakes: HttpFake[];
  ld: LaunchDarklyFake[];
  snyk?: SnykFake;
  qstash: QStashFake[];
  policies: PolicyWorld[];
  inputs: PolicyInput[];
  env: Record<string, string>;
  /** Values that must never appear in Redis, logs or audit, besides every stored value. */
  managementSecrets: string[];
  probeUrl: string;
  /** Version each probe consumer reports, by policy id. */
  probeLoaded: Map<string, string>;
  /** Probe requests answered. */
  probeHits(): number;
  setFaults(rate: number, delayMs: number): void;
  faultCounts(): Record<FaultKind, number>;
  requestCount(): number;
  close(): Promise<void>;
}

export interface WorldOptions {
  ld: number;
  snyk: number;
  qstash: number;
  /** Every n-th LaunchDarkly policy also has a probe consumer (0: none). */
  probeEvery: number;
}

export async function startWorld(opts: WorldOptions): Promise<World> {
  const aws = await startAwsEmulator({ writesPerSecond: Infinity });
  const env: Record<string, string> = {};
  const managementSecrets: string[] = [];
  const policies: PolicyWorld[] = [];
  const inputs: PolicyInput[] = [];
  const ld: LaunchDarklyFake[] = [];
  const qstash: QStashFake[] = [];
  const probeLoaded = new Map<string, string>();
  let probeHits = 0;
  const probe: Server = createServer((req, res) => {
    probeHits++;
    const id = decodeURIComponent((req.url ?? "").replace(/^\/p\//, ""));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ versionId: probeLoaded.get(id) ?? "none" }));
  });
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", () => resolve()));
  const probeUrl = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
  const push = { id: "app", confirm: "push" as const, tokenHash: tokenHash(CONSUMER_TOKEN) };
  const common = (id: string) => ({
    owner: "chaos@example.com",
    target: { secretId: `chaos/${id}`, region: REGION },
    confirmation: { timeout: "1h", onTimeout: "keep-old" as const },
  });

  for (let i = 0; i < opts.ld; i++) {
    const a = Math.floor(i / LD_PER_ACCOUNT);
    if (!ld[a]) {
      const fake = await startLaunchDarklyFake({ tokenLimit: 100_000 });
      ld[a] = fake;
      const admin = fake.addToken({ role: "admin", name: "rekey management" });
      env[`LD_ADMIN_${a}`] = admin.value;
      managementSecrets.push(admin.value);
    }
    const fake = ld[a];
    const id = `chaos-ld-${i}`;
    const seed = fake.addToken({ role: "writer", name: id });
    const probed = opts.probeEvery > 0 && i % opts.probeEvery === 0;
    const mine = () => fake.tokens().filter((t) => t.name === id || t.name.startsWith(`${id} (rekey`));
    inputs.push({
      id,
      ...common(id),
      provider: { kind: "launchdarkly", baseUrl: fake.url, management: { env: `LD_ADMIN_${a}` } },
      consumers: probed ? [push, { id: "edge", confirm: "probe", url: `${probeUrl}/p/${id}`, interval: "1s" }] : [push],
    });
    policies.push({
      id,
      kind: "launchdarkly",
      secretId: `chaos/${id}`,
      consumers: probed ? ["app", "edge"] : ["app"],
      overlap: true,
      isLive: (v) => fake.isLive(v),
      liveValues: () => mine().filter((t) => fake.isLive(t.value)).map((t) => t.value),
      seed: seed.value,
      liveByRotation: () => {
        const out = new Map<string, number>();
        for (const t of mine()) {
          const rot = /rotation=([^\]\s]+)/.exec(t.description)?.[1];
          if (rot && fake.isLive(t.value)) out.set(rot, (out.get(rot) ?? 0) + 1);
        }
        return out;
      },
    });
  }

  let snyk: SnykFake | undefined;
  if (opts.snyk > 0) {
    // Snyk documents no rate-limit headers (rekey then waits 60 s); the e2e tests cover that. Here
    // the fake names a one-second Retry-After so a 429 costs seconds, not minutes.
    snyk = await startSnykFake({ retryAfterSeconds: 1 });
    const org = snyk.addOrg();
    const admin = snyk.addUser({ email: "admin@example.com", orgs: [org] });
    env.SNYK_ADMIN = admin.apiToken;
    managementSecrets.push(admin.apiToken);
    const s = snyk;
    for (let i = 0; i < opts.snyk; i++) {
      const id = `chaos-snyk-${i}`;
      const account = s.addServiceAccount({ orgId: org, name: id });
      inputs.push({
        id,
        ...common(id),
        provider: { kind: "snyk-service-account", baseUrl: s.url, management: { env: "SNYK_ADMIN" }, orgId: org, serviceAccountId: account.id, clientId: account.clientId },
        consumers: [push],
      });
      policies.push({
        id,
        kind: "snyk",
        secretId: `chaos/${id}`,
        consumers: ["app"],
        overlap: true,
        isLive: (v) => s.secretsOf(account.id).includes(v),
        liveValues: () => s.secretsOf(account.id),
        seed: s.secretsOf(account.id)[0] ?? "",
        liveByRotation: () => new Map(),
      });
    }
  }

  for (let i = 0; i < opts.qstash; i++) {
    const fake = await new QStashFake({ injected429ResetSec: 1 }).start();
    qstash.push(fake);
    const id = `chaos-qstash-${i}`;
    env[`UPSTASH_KEY_${i}`] = fake.apiKey;
    managementSecrets.push(fake.apiKey);
    inputs.push({
      id,
      ...common(id),
      provider: { kind: "qstash-token", baseUrl: fake.url, managementUrl: fake.url, email: fake.email, management: { env: `UPSTASH_KEY_${i}` }, userId: fake.userId() },
      consumers: [push],
      acceptCutover: true,
    });
    policies.push({
      id,
      kind: "qstash",
      secretId: `chaos/${id}`,
      consumers: ["app"],
      overlap: false,
      isLive: (v) => fake.isLive(v),
      liveValues: () => [fake.token()],
      seed: fake.token(),
      liveByRotation: () => new Map(),
    });
  }

  const fakes: HttpFake[] = [...ld, ...(snyk ? [snyk] : []), ...qstash];
  const all = (): { faults: HttpFake["faults"]; requests: HttpFake["requests"] }[] => [...fakes, aws];
  return {
    aws,
    fakes,
    ld,
    snyk,
    qstash,
    policies,
    inputs,
    env,
    managementSecrets,
    probeUrl,
    probeLoaded,
    probeHits: () => probeHits,
    setFaults(rate, delayMs) {
      for (const f of all()) {
        f.faults.clear();
        if (rate > 0) f.faults.random({ rate, kinds: ["500", "429", "delay", "drop", "drop-after"], delayMs });
      }
    },
    faultCounts() {
      const out: Record<FaultKind, number> = { "500": 0, "429": 0, delay: 0, drop: 0, "drop-after": 0 };
      for (const f of all()) for (const r of f.requests) if (r.fault) out[r.fault]++;
      return out;
    },
    requestCount: () => all().reduce((n, f) => n + f.requests.length, 0),
    async close() {
      await Promise.allSettled([...fakes.map((f) => f.close()), aws.close(), new Promise<void>((r) => probe.close(() => r()))]);
    },
  };
}
