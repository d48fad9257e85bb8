/**
 * `rekey validate` names the field and what is wrong, and never prints the value of a credential
 * field or any text that looks like a secret: a token pasted into a policy file by mistake must
 * not end up in a terminal's scrollback or a CI log as well.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main, type CliIo } from "../../src/cli/main.ts";
import { looksLikeSecret, redactSecrets } from "../../src/policy/secret-like.ts";

const LD_TOKEN = "api-5f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b";
const SLACK_URL = "https://hooks.slack.com/services/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";
const RANDOM = "Qm9vdHN0cmFwU2VjcmV0S2V5MTIzNDU2Nzg5MA";
const HEX_KEY = "whsec_9f8e7d6c5b4a39281706f5e4d3c2b1a0";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rekey-secrets-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function validate(...extra: string[]): Promise<{ code: number; out: string }> {
  let out = "";
  const io: CliIo = { stdout: (s) => void (out += s), stderr: (s) => void (out += s), stdin: Readable.from([]), env: {} };
  const code = await main(["validate", ...extra, dir], io);
  return { code, out };
}

/** Neither the value nor any 8 characters of it in a row. */
function expectNotShown(out: string, secret: string): void {
  for (let i = 0; i + 8 <= secret.length; i++) expect(out, `"${secret.slice(i, i + 8)}" of a secret was printed`).not.toContain(secret.slice(i, i + 8));
}

const policy = (provider: string, extra = "") => `id: p1
owner: ops@example.com
provider:
${provider}
target:
  secretId: prod/p1
${extra}`;

describe("rekey validate never prints a secret", () => {
  it("a token pasted into a credential-reference field: names the field and what is wrong, not the token", async () => {
    writeFileSync(join(dir, "ld.yaml"), policy(`  kind: launchdarkly\n  management: ${LD_TOKEN}`));
    for (const args of [[], ["--json"]]) {
      const { code, out } = await validate(...args);
      expect(code).toBe(1);
      expect(out).toContain("provider.management");
      expect(out).toMatch(/expected a credential reference.*secretId.*env/);
      expect(out).toContain("40 characters (not shown");
      expectNotShown(out, LD_TOKEN);
    }
  });

  it("a Slack webhook URL in a notify webhook, a key as an env name, a token under an unknown key", async () => {
    writeFileSync(
      join(dir, "notify.yaml"),
      policy(
        `  kind: launchdarkly\n  management: { secretId: rekey/ld, token: "${RANDOM}" }`,
        `notify:\n  - kind: slack\n    webhook: ${SLACK_URL}\n  - kind: webhook\n    url: https://hooks.example.com/rekey\n    signingKey: { env: ${HEX_KEY} }\n`,
      ),
    );
    const { code, out } = await validate();
    expect(code).toBe(1);
    expect(out).toContain("notify[0].webhook: expected a credential reference");
    expect(out).toContain("notify[1].signingKey.env: this looks like a credential's value (not shown)");
    expect(out).toContain('provider.management.token: unknown key "token"');
    for (const s of [SLACK_URL, HEX_KEY, RANDOM]) expectNotShown(out, s);
  });

  it("a token in an ordinary field (enum, email, URL, provider kind) is named, not quoted", async () => {
    writeFileSync(join(dir, "a.yaml"), policy(`  kind: launchdarkly\n  management: { env: LD_ADMIN }\n  strategy: ${LD_TOKEN}`));
    writeFileSync(join(dir, "b.yaml"), policy(`  kind: ${RANDOM}`).replace("id: p1", "id: p2").replace("ops@example.com", `${HEX_KEY}`));
    writeFileSync(join(dir, "c.yaml"), policy(`  kind: launchdarkly\n  management: { env: LD_ADMIN }\n  baseUrl: "ftp://${RANDOM}.example.com"`).replace("id: p1", "id: p3"));
    const { code, out } = await validate();
    expect(code).toBe(1);
    expect(out).toContain("a.yaml:6: provider.strategy: expected one of create-delete, reset-with-expiry, got text of 40 characters (not shown: it looks like a secret)");
    expect(out).toContain("b.yaml:4: provider.kind: unknown kind, text of 38 characters (not shown: it looks like a secret)");
    expect(out).toContain("b.yaml:2: owner:");
    expect(out).toContain("c.yaml:6: provider.baseUrl:");
    for (const s of [LD_TOKEN, RANDOM, HEX_KEY]) expectNotShown(out, s);
  });

  it("harmless values are still quoted, with suggestions", async () => {
    writeFileSync(join(dir, "a.yaml"), policy(`  kind: launchdarkly\n  management: { env: LD_ADMIN_TOKEN_2024 }\n  strategy: create-delet`));
    const { code, out } = await validate();
    expect(code).toBe(1);
    expect(out).toContain('provider.strategy: expected one of create-delete, reset-with-expiry, got "create-delet" (did you mean "create-delete"?)');
    expect(out).not.toContain("not shown");
  });
});

describe("looksLikeSecret", () => {
  it("recognises tokens, and not ids, names, URLs, ARNs, UUIDs or variable names", () => {
    for (const s of [LD_TOKEN, SLACK_URL, RANDOM, HEX_KEY, "AKIAIOSFODNN7EXAMPLE", "ghp_0123456789abcdefghijABCDEFGHIJ012345", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "xoxb-1234567890-abcdefghij", "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"]) {
      expect(looksLikeSecret(s), s).toBe(true);
    }
    for (const s of [
      "launchdarkly-billing-prod-eu-west-1",
      "5f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
      "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/ld-AbCdEf",
      "LD_ADMIN_TOKEN_2024_PROD",
      "https://support-triage.crewai.com/rekey/version",
      "snyk_service_account_payments_eu",
      "0 3 * * 1",
      "ops@example.com",
    ]) {
      expect(looksLikeSecret(s), s).toBe(false);
    }
    expect(redactSecrets(`got "${LD_TOKEN}" and "${RANDOM.slice(0, 40)}…"`)).toBe('got "[not shown: looks like a secret]" and "[not shown: looks like a secret]…"');
  });
});
