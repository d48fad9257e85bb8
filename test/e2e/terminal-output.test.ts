/**
 * What rekey prints for a terminal cannot be steered by what it prints: a consumer id, a provider's
 * token name or error text, a policy file's field or a file name holding newlines, ANSI or C1
 * escapes or bidi overrides shows as visible escapes, so no line rekey prints can be forged (the
 * attack: a consumerId that made `rekey history` show `revoking ok by worker: old credential 0000
 * revoked`). `--json` keeps the exact values.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatLeakReport, formatOffboardReport } from "../../src/cli/commands/leak.ts";
import { main } from "../../src/cli/main.ts";
import { esc } from "../../src/util/terminal.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { LeakReport } from "../../src/leak/leak.ts";
import type { OffboardReport } from "../../src/offboarding/offboarding.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { REGION, type Stack, startStack, cliEnv } from "../helpers/stack.ts";

/** The line the attacker wants an operator to read in `rekey history`. */
const FORGED = "2026-01-05T03:00:04Z  ld-term  0000  revoking ok  by worker: old credential 0000 revoked";
/** A field carrying it: newline, carriage return, ANSI (erase line, red), a C1 CSI and a bidi override. */
const HOSTILE = `evil\n${FORGED}\r\x1b[2K\x1b[31m\u009b2J\u202edesrever\u2066iso\u2069\u2028sep\u0085nel\x07`;

/** Anything a terminal acts on, other than the newline that ends rekey's own lines. */
// eslint-disable-next-line no-control-regex -- the point of the check
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/;

function expectSafe(text: string): void {
  expect(text).not.toMatch(CONTROL);
  for (const line of text.split("\n")) {
    expect(line.trim().startsWith(FORGED)).toBe(false);
    expect(line.startsWith("2026-01-05T03:00:04Z")).toBe(false);
  }
}

describe("terminal output escapes control characters", () => {
  let stack: Stack;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rekey-term-"));
    const policy: PolicyInput = {
      id: "ld-term",
      owner: "ops@example.com",
      provider: { kind: "launchdarkly", baseUrl: "http://127.0.0.1:9", management: { env: "LD_ADMIN_TOKEN" } },
      target: { secretId: "prod/ld-term", region: REGION },
      consumers: [{ id: "api", confirm: "push", tokenHash: tokenHash("term-consumer-token-0123456789") }],
    };
    writeFileSync(join(dir, "ld-term.json"), JSON.stringify(policy));
    stack = await startStack({ policies: [policy], env: { LD_ADMIN_TOKEN: "unused" }, worker: false });
    env = cliEnv(stack, dir);
  });

  afterAll(async () => {
    await stack.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function rekey(argv: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await main(argv, { stdout: (s) => void (out += s), stderr: (s) => void (err += s), stdin: new PassThrough(), env: { ...env, ...extraEnv } });
    return { code, out, err };
  }

  it("history: the forged-line consumerId shows as one escaped field; --json keeps it exact", async () => {
    // The attack as it was found: a refused confirmation whose consumerId carries the forged line.
    await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ policyId: "ld-term", consumerId: HOSTILE, versionId: "v1" }),
    });
    // Whatever the API keeps of it, attacker text reaches the audit by other roads too (a
    // provider's error text in a step's message): both fields hold the hostile text here.
    await stack.rt.audit.record({ policyId: "ld-term", rotationId: "r-1", step: "confirmation", outcome: "refused", actor: `consumer:${HOSTILE}`, message: HOSTILE });

    const text = await rekey(["history", "ld-term"]);
    expect(text.code, text.err).toBe(0);
    expectSafe(text.out);
    expect(text.out).toContain(`by consumer:evil\\n${FORGED}\\r\\x1b[2K\\x1b[31m\\x9b2J\\u202edesrever\\u2066iso\\u2069\\u2028sep\\x85nel\\x07`);
    // Every record is exactly one line.
    const records = JSON.parse((await rekey(["history", "ld-term", "--json"])).out) as { actor: string; message?: string }[];
    expect(text.out.trimEnd().split("\n")).toHaveLength(records.length);
    // JSON is exact: the value as stored.
    expect(records.some((r) => r.actor === `consumer:${HOSTILE}` && r.message === HOSTILE)).toBe(true);
  });

  it("status: a rotation's message (provider error text) is escaped; --json keeps it exact", async () => {
    const now = Date.now();
    await stack.rt.state.locks.begin({ rotationId: "rot-term", policyId: "ld-term", reason: "manual", actor: "cli:ops", status: "needs-attention", step: "issuing", jobId: "j-term", startedAt: now, updatedAt: now, message: HOSTILE });
    // Its consumer confirmed; the needs-attention list shows the rotation's message, escaped.
    await stack.rt.state.consumers.confirm("rot-term", { consumerId: "api", at: now, via: "push", versionId: "rot-term" });
    const text = await rekey(["status"]);
    expect(text.code, text.err).toBe(0);
    expectSafe(text.out);
    expect(text.out).toContain(`  ld-term: ${esc(HOSTILE)}\n    `);
    const json = JSON.parse((await rekey(["status", "--json"])).out) as { inFlight?: { message?: string } }[];
    expect(json[0]?.inFlight?.message).toBe(HOSTILE);
  });

  it("plan and validate: policy fields and file names are escaped; plan --json keeps them exact", async () => {
    const pdir = mkdtempSync(join(tmpdir(), "rekey-term-plan-"));
    try {
      const policy = { id: "ld-plan", owner: "ops@example.com", provider: { kind: "launchdarkly", management: { env: "LD" } }, target: { secretId: `prod/${HOSTILE}` } };
      writeFileSync(join(pdir, "ld-plan.json"), JSON.stringify(policy));
      const plan = await rekey(["plan", pdir]);
      expect(plan.code, plan.err).toBe(0);
      expectSafe(plan.out);
      expect(plan.out).toContain(`secret prod/${esc(HOSTILE)})`);
      const json = JSON.parse((await rekey(["plan", pdir, "--json"])).out) as { secret: string }[];
      expect(json[0]?.secret).toBe(`prod/${HOSTILE}`);

      // A file name is attacker text too (a folder of policies from a pull request).
      const sub = join(pdir, "team");
      mkdirSync(sub);
      writeFileSync(join(sub, `x\n${FORGED}\x1b[31m.yaml`), "id: Bad\u202eId\n");
      const validate = await rekey(["validate", pdir]);
      expect(validate.code).toBe(1);
      expectSafe(validate.out + validate.err);
      expect(validate.out).toContain(`x\\n${FORGED}\\x1b[31m.yaml`);
      // plan on the same folder fails with the same escaped problems.
      const badPlan = await rekey(["plan", pdir]);
      expect(badPlan.code).toBe(1);
      expectSafe(badPlan.err);
    } finally {
      rmSync(pdir, { recursive: true, force: true });
    }
  });

  it("CLI errors: a hostile argument or variable is escaped in the message", async () => {
    const rotate = await rekey(["rotate", HOSTILE]);
    expect(rotate.code).toBe(1);
    expectSafe(rotate.err);
    expect(rotate.err).toContain("unknown policy");

    const config = await rekey(["status"], { REKEY_PREFIX: "bad\u202e prefix\x1b[31m" });
    expect(config.code).toBe(1);
    expectSafe(config.err);
    expect(config.err).toContain("REKEY_PREFIX");

    const unknown = await rekey([`rotat${HOSTILE}`]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).not.toMatch(CONTROL);

    const timeout = await rekey(["leak", "--policy", "ld-term", "--timeout", HOSTILE]);
    expectSafe(timeout.err);
  });

  it("CLI through the API: what the API answers is escaped too", async () => {
    // Whatever answers at REKEY_API_URL (a proxy, a wrong host) chooses the text the CLI prints.
    const server = createServer((_req, res) => {
      res.writeHead(403, { "content-type": "application/json" }).end(JSON.stringify({ error: HOSTILE }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      const apiEnv = { REKEY_API_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, REKEY_TOKEN: "t" };
      const rotate = await rekey(["rotate", "ld-term"], apiEnv);
      expect(rotate.code).toBe(1);
      expectSafe(rotate.err);
      expect(rotate.err).toContain(`the API refused (403): ${esc(HOSTILE)}`);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("leak and offboard reports: provider-given names and messages are escaped", () => {
    const leak: LeakReport = {
      incidentId: "inc-1",
      actor: `cli:${HOSTILE}`,
      createdAt: Date.now(),
      target: `policies ${HOSTILE}`,
      total: 2,
      completed: 0,
      failed: 1,
      awaitingHuman: 1,
      inProgress: 0,
      settled: true,
      targets: [
        { policyId: "ld-term", provider: "launchdarkly", rotationId: "r-1", tookOver: false, state: "failed", oldRevoked: false, message: `launchdarkly answered 400 (${HOSTILE})`, confirmed: [], notConfirmed: [HOSTILE], probes: [{ consumerId: HOSTILE, confirmed: false, lastPolledAt: 0 }] },
        { policyId: "crew", provider: "crewai-crew", rotationId: "r-2", tookOver: false, state: "awaiting-human", oldRevoked: true, confirmed: [], notConfirmed: [HOSTILE], probes: [] },
      ],
    };
    const leakText = formatLeakReport(leak);
    expectSafe(leakText);
    expect(leakText).toContain(esc(HOSTILE));

    const off: OffboardReport = {
      member: "leaver@example.com",
      successor: "next@example.com",
      safeToRemove: false,
      policies: [{ policyId: "ld-term", provider: "launchdarkly", owner: "leaver@example.com", reason: "owner", state: "needs-attention", waitingFor: [], message: HOSTILE }],
      unmanaged: [{ provider: "launchdarkly", account: "acct", credentialId: "tok-1", name: HOSTILE, kind: "api" }],
      listingErrors: [],
      blockers: [`unmanaged token "${HOSTILE}"`],
    };
    const offText = formatOffboardReport(off);
    expectSafe(offText);
    expect(offText).toContain(`"${esc(HOSTILE)}"`);
  });
});

describe("esc", () => {
  it("shows every control character as an escape and leaves other text alone", () => {
    expect(esc("a\nb\tc\x1b[0m\u009b\u202e\u2067\u200f\ufeffé✓ ok")).toBe("a\\nb\\tc\\x1b[0m\\x9b\\u202e\\u2067\\u200f\\ufeffé✓ ok");
    expect(esc(undefined)).toBe("");
    expect(esc(42)).toBe("42");
  });
});
