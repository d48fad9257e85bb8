/**
 * The agent's config file (errors name file, line and field), its outputs (atomic 0600 writes,
 * templates, env files), its commands (no credential in the child's environment) and the
 * webhook verifier's replay window.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AgentConfigError, credentialEnvNames, parseAgentConfig } from "../../src/consumers/agent/config.ts";
import { runShell } from "../../src/consumers/agent/commands.ts";
import { envFile, renderOutput, writeAtomic } from "../../src/consumers/agent/outputs.ts";
import { createWebhookVerifier } from "../../src/consumers/webhook-verifier.ts";
import { standardHeaders } from "../../src/notify/standard-webhooks.ts";

const VALID = `
rekey:
  url: http://rekey:8080
  token: { env: REKEY_CONSUMER_TOKEN }
listen: 0.0.0.0:8787
webhook:
  signingKey: { file: /run/secrets/hook-key }
secrets:
  ld:
    secretId: prod/ld
    policyId: ld-api
    consumerId: checkout
outputs:
  - path: /run/secrets/ld
    secret: ld
  - path: /run/app/config.json
    template: '{"token": "{{ ld }}"}'
    mode: "0640"
reload:
  command: kill -HUP 1
health:
  url: http://127.0.0.1:8080/healthz
`;

function problems(text: string): string[] {
  try {
    parseAgentConfig(text, "agent.yaml");
  } catch (err) {
    if (err instanceof AgentConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("agent config", () => {
  it("parses a valid file with defaults in milliseconds", () => {
    const c = parseAgentConfig(VALID, "agent.yaml");
    expect(c.outputs[0]!.mode).toBe(0o600);
    expect(c.outputs[1]!.mode).toBe(0o640);
    expect(c.reload).toMatchObject({ timeout: 60_000, onStart: false });
    expect(c.health).toMatchObject({ timeout: 5_000, within: 60_000, interval: 1_000 });
    expect(c).toMatchObject({ poll: 60_000, debounce: 2_000, retry: 15_000 });
    expect(credentialEnvNames(c)).toEqual(["REKEY_CONSUMER_TOKEN"]);
  });

  it("names the file, line and field of each problem", () => {
    expect(problems(VALID.replace("http://rekey:8080", "rekey:8080"))).toEqual(['agent.yaml:3: rekey.url: expected an http(s) URL, got "rekey:8080"']);
    expect(problems(VALID.replace("    consumerId: checkout\n", ""))).toEqual(["agent.yaml:10: secrets.ld.consumerId: required"]);
    expect(problems(VALID.replace('mode: "0640"', 'mode: "0644"'))).toEqual([
      "agent.yaml:18: outputs[1].mode: a file holding a secret must not be readable or writable by others (use 0600 or 0640)",
    ]);
    expect(problems(VALID.replace("command: kill -HUP 1", "command: kill -HUP 1\n  timout: 5s"))).toEqual(["agent.yaml:20: reload: unknown field(s) timout"]);
    expect(problems(VALID.replace("  url: http://127.0.0.1:8080/healthz", "  url: http://127.0.0.1:8080/healthz\n  command: 'true'"))).toEqual(["agent.yaml:22: health: give exactly one of url or command"]);
    expect(problems(VALID.replace("secret: ld", "secret: ldx"))).toEqual(['agent.yaml:15: outputs[0].secret: no secret named "ldx" in secrets (known: ld)']);
    expect(problems(VALID.replace("{{ ld }}", "{{ other }}"))).toEqual(['agent.yaml:17: outputs[1].template: no secret named "other" in secrets (known: ld)']);
    expect(problems(VALID.replace("listen: 0.0.0.0:8787\n", ""))).toEqual(['agent.yaml:6: webhook: a webhook needs the agent to listen: add listen: "0.0.0.0:8787" (host:port)']);
    expect(problems(VALID.replace("token: { env: REKEY_CONSUMER_TOKEN }", "token: abc"))[0]).toMatch(/^agent\.yaml:4: rekey\.token: /);
    expect(problems("rekey: [unclosed")[0]).toMatch(/^agent\.yaml:1: /);
  });
});

describe("agent outputs", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "rekey-out-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes atomically with the mode asked for, and leaves an unchanged file alone", async () => {
    const path = join(dir, "token");
    writeFileSync(path, "old", { mode: 0o644 });
    expect(await writeAtomic(path, "new-value", 0o600)).toBe(true);
    expect(readFileSync(path, "utf8")).toBe("new-value");
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const inode = statSync(path).ino;
    expect(await writeAtomic(path, "new-value", 0o600)).toBe(false);
    expect(statSync(path).ino).toBe(inode);
    expect(await writeAtomic(path, "newer", 0o640)).toBe(true);
    // Replaced by rename: a new file, never one rewritten in place; no temporary file left over.
    expect(statSync(path).ino).not.toBe(inode);
    expect(statSync(path).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir)).toEqual(["token"]);
  });

  it("fails with the path and reason, never the value, and leaves nothing behind", async () => {
    await expect(writeAtomic(join(dir, "missing-dir", "token"), "s3cret-value", 0o600)).rejects.toThrow(/cannot write .*missing-dir\/token: ENOENT/);
    await expect(writeAtomic(join(dir, "missing-dir", "token"), "s3cret-value", 0o600)).rejects.not.toThrow(/s3cret/);
  });

  it("renders templates without HTML escaping and env files with quoting", () => {
    const values = { ld: "a&b/c<d>", db: "it's $x" };
    expect(renderOutput({ path: "/x", mode: 0o600, template: "T={{ ld }} D={{db}}" }, values)).toBe("T=a&b/c<d> D=it's $x");
    expect(envFile({ LD_TOKEN: "ld", DB: "db" }, { ld: "api-123_abc.def", db: "it's $x" }, "/x")).toBe("LD_TOKEN=api-123_abc.def\nDB='it'\\''s $x'\n");
    expect(() => envFile({ K: "ld" }, { ld: "line1\nline2" }, "/x")).toThrow(/line break/);
    expect(() => envFile({ K: "ld" }, { ld: "line1\nline2" }, "/x")).not.toThrow(/line1/);
  });
});

describe("agent commands", () => {
  it("runs through /bin/sh without the variables it is told to keep out, and times out", async () => {
    const r = await runShell('echo "token=${REKEY_CONSUMER_TOKEN:-unset} path=${PATH:+set}"; exit 4', { env: { PATH: process.env.PATH }, timeoutMs: 5_000, scrub: (t) => t });
    expect(r).toMatchObject({ ok: false, code: 4, timedOut: false, output: "token=unset path=set" });
    const slow = await runShell("sleep 5", { env: { PATH: process.env.PATH }, timeoutMs: 200, scrub: (t) => t });
    expect(slow).toMatchObject({ ok: false, timedOut: true });
    const scrubbed = await runShell("echo the value is hunter2-secret", { env: { PATH: process.env.PATH }, timeoutMs: 5_000, scrub: (t) => t.replaceAll("hunter2-secret", "[redacted]") });
    expect(scrubbed.output).toBe("the value is [redacted]");
  });
});

describe("webhook verifier", () => {
  const key = `whsec_${Buffer.from("unit-test-key-unit-test-key-0123").toString("base64")}`;
  const body = JSON.stringify({ schemaVersion: 1, event: "rotation.completed", rotationId: "r1", policyId: "p", secretId: "s" });
  const now = 1_800_000_000_000;
  // The standardwebhooks package checks its own 5-minute tolerance on the system clock.
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(now);
  });
  afterEach(() => vi.useRealTimers());

  it("accepts a signed webhook once, refuses replays, stale timestamps and other keys", () => {
    const v = createWebhookVerifier({ signingKey: ["whsec_b2xkLWtleS1vbGQta2V5LW9sZC1rZXktMDEyMw==", key], now: () => now, toleranceSeconds: 60 });
    const h = standardHeaders(key, "msg-1", now / 1000, body);
    expect(v.verify(body, h).rotationId).toBe("r1");
    expect(() => v.verify(body, h)).toThrow(expect.objectContaining({ reason: "replayed", status: 409 }));
    expect(() => v.verify(body, standardHeaders(key, "msg-2", now / 1000 - 61, body))).toThrow(expect.objectContaining({ reason: "bad-timestamp", status: 401 }));
    expect(() => v.verify(body, standardHeaders("whsec_b3RoZXI=", "msg-3", now / 1000, body))).toThrow(expect.objectContaining({ reason: "bad-signature" }));
    expect(() => v.verify(body, { "webhook-id": "x" })).toThrow(expect.objectContaining({ reason: "missing-headers" }));
    expect(() => v.verify("not json", standardHeaders(key, "msg-4", now / 1000, "not json"))).toThrow(expect.objectContaining({ reason: "bad-payload", status: 400 }));
  });

  it("forgets ids once their timestamp is out of tolerance (they are refused as stale then)", () => {
    let t = now;
    const v = createWebhookVerifier({ signingKey: key, now: () => t, toleranceSeconds: 10, rememberIds: 2 });
    v.verify(body, standardHeaders(key, "a", t / 1000, body));
    t += 11_000;
    expect(() => v.verify(body, standardHeaders(key, "a", now / 1000, body))).toThrow(expect.objectContaining({ reason: "bad-timestamp" }));
    expect(v.verify(body, standardHeaders(key, "a", t / 1000, body)).event).toBe("rotation.completed");
  });
});
