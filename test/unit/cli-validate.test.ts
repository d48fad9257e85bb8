import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main, type CliIo } from "../../src/cli/main.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: (s) => void (stdout += s),
    stderr: (s) => void (stderr += s),
    stdin: Readable.from([]),
    env,
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rekey-cli-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): void {
  const file = join(dir, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
}

const base = (id: string, kind = "launchdarkly\n  management: { secretId: rekey/ld-admin }") => `id: ${id}
owner: ops@example.com
provider:
  kind: ${kind}
target:
  secretId: prod/${id}
`;

describe("rekey validate", () => {
  it("reports each mistake in a folder with file, line, field and reason, and exits 1", async () => {
    write("good.yaml", base("good"));
    write("cron.yaml", `${base("cron")}schedule:\n  cron: "0 3 * *"\n`);
    write("team/typo.yaml", `${base("typo")}notfy: []\n`);
    write("team/cutover.yaml", base("qstash", "qstash-token\n  email: ops@example.com\n  management: { env: UPSTASH_KEY }\n  userId: u-1"));
    write("broken.json", '{\n  "id": "broken",\n  "owner": \n}\n');

    const { code, stdout } = await run(["validate", dir]);
    expect(code).toBe(1);
    const lines = stdout.trimEnd().split("\n");
    expect(lines).toContain(`ok  ${join(dir, "good.yaml")}  good (launchdarkly)`);
    expect(lines).toContain(`${join(dir, "cron.yaml")}:9: schedule.cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4`);
    expect(lines).toContain(`${join(dir, "team/typo.yaml")}:8: notfy: unknown key "notfy" (did you mean "notify"?)`);
    const cutover = lines.find((l) => l.startsWith(`${join(dir, "team/cutover.yaml")}:4: provider.kind: qstash-token is a cut-over`));
    expect(cutover).toContain('Add "acceptCutover: true"');
    expect(lines.find((l) => l.startsWith(`${join(dir, "broken.json")}:4: invalid JSON`))).toBeDefined();
    expect(lines.at(-1)).toBe("4 problems in 4 files (1 policy valid)");
  });

  it("accepts the example policies and exits 0", async () => {
    const { code, stdout, stderr } = await run(["validate", "policies"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toContain("ok  policies/launchdarkly.yaml  ld-api-token (launchdarkly)\n");
    expect(stdout.trimEnd().split("\n")).toHaveLength(8);
    expect(stdout.endsWith("7 policies valid\n")).toBe(true);
  });

  it("defaults to REKEY_POLICY_DIR", async () => {
    write("one.yaml", base("one"));
    const { code, stdout } = await run(["validate"], { REKEY_POLICY_DIR: dir });
    expect(code).toBe(0);
    expect(stdout).toBe(`ok  ${join(dir, "one.yaml")}  one (launchdarkly)\n1 policy valid\n`);
  });

  it("prints a JSON report with --json", async () => {
    write("good.yaml", base("good"));
    write("bad.yaml", `${base("bad")}colour: red\n`);
    const { code, stdout } = await run(["validate", "--json", dir]);
    expect(code).toBe(1);
    const report = JSON.parse(stdout) as { valid: boolean; summary: string; policies: unknown[]; issues: unknown[] };
    expect(report.valid).toBe(false);
    expect(report.summary).toBe("1 problem in 1 file (1 policy valid)");
    expect(report.policies).toEqual([{ file: join(dir, "good.yaml"), id: "good", kind: "launchdarkly" }]);
    expect(report.issues).toEqual([{ file: join(dir, "bad.yaml"), line: 8, path: "colour", message: expect.stringMatching(/^unknown key "colour"/) as unknown }]);
  });

  it("fails when there is nothing to validate", async () => {
    const { code, stderr } = await run(["validate", dir]);
    expect(code).toBe(1);
    expect(stderr).toBe("no policy files found\n");
  });
});

describe("rekey command line", () => {
  it("prints the policy JSON Schema", async () => {
    const { code, stdout } = await run(["schema"]);
    expect(code).toBe(0);
    const schema = JSON.parse(stdout) as Record<string, unknown>;
    expect(schema.title).toBe("rekey policy");
    expect(schema.$schema).toBe("http://json-schema.org/draft-07/schema#");
  });

  it("exits 0 for --help on every command", async () => {
    for (const argv of [["--help"], ["validate", "--help"], ["schema", "--help"], ["help", "validate"]]) {
      const { code, stdout } = await run(argv);
      expect(code, argv.join(" ")).toBe(0);
      expect(stdout, argv.join(" ")).toMatch(/^Usage: rekey/);
    }
  });

  it("exits 2 on usage errors", async () => {
    const unknownCommand = await run(["valdate"]);
    expect(unknownCommand.code).toBe(2);
    expect(unknownCommand.stderr).toContain("unknown command 'valdate'");
    expect(unknownCommand.stderr).toContain("validate");
    expect((await run(["validate", "--bogus"])).code).toBe(2);
    expect((await run([])).code).toBe(2);
  });

  it("runs as the real `rekey` binary and exits with main()'s code", async () => {
    const missing = join(dir, "missing");
    // One run covers both outputs: the examples are valid, the missing path is a problem (exit 1).
    const failed = await promisify(execFile)(process.execPath, ["bin/rekey.js", "validate", "policies", missing], { timeout: 30_000 }).then(
      () => undefined,
      (err: unknown) => err as { code?: number; stdout?: string },
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stdout).toContain("ok  policies/snyk-pat.yaml  snyk-pat-deploy-bot (snyk-pat)\n");
    expect(failed?.stdout).toContain(`${missing}: cannot read: no such file or directory\n`);
    expect(failed?.stdout?.endsWith("1 problem in 1 file (7 policies valid)\n")).toBe(true);
  });
});
