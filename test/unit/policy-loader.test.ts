import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PolicyError, type PolicyIssue } from "../../src/errors.ts";
import { isCutover } from "../../src/policy/capabilities.ts";
import { loadPolicies, loadPoliciesOrThrow, loadPolicyFile, parsePolicyText } from "../../src/policy/loader.ts";
import { PROVIDER_KINDS } from "../../src/policy/schema.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rekey-policies-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = join(dir, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** A valid LaunchDarkly policy; `extra` lines are appended at the top level. */
function ldPolicy(id: string, extra = ""): string {
  return `id: ${id}
owner: dana@example.com
provider:
  kind: launchdarkly
  management:
    secretId: rekey/ld-admin
target:
  secretId: prod/ld
${extra}`;
}

function only(issues: PolicyIssue[]): PolicyIssue {
  expect(issues).toHaveLength(1);
  return issues[0] as PolicyIssue;
}

describe("example policies", () => {
  it("loads every file in policies/ without a problem, one per provider kind", async () => {
    const { policies, issues } = await loadPolicies(["policies"]);
    expect(issues).toEqual([]);
    expect(policies.map((p) => p.policy.provider.kind).sort()).toEqual([...PROVIDER_KINDS].sort());
    expect(policies.map((p) => p.file).sort()).toEqual(
      [
        "crewai-crew.yaml",
        "launchdarkly.yaml",
        "qstash-signing-keys.yaml",
        "qstash-token.yaml",
        "snyk-pat.yaml",
        "snyk-service-account.yaml",
        "snyk-user-token.yaml",
      ].map((f) => join("policies", f)),
    );
    const confirmKinds = new Set(policies.flatMap((p) => p.policy.consumers.map((c) => c.confirm)));
    expect([...confirmKinds].sort()).toEqual(["probe", "push", "usage"]);
    for (const { policy } of policies) {
      expect(policy.notify.length).toBeGreaterThan(0);
      expect(policy.offboarding?.successor).toMatch(/@/);
      expect(policy.acceptCutover === true).toBe(isCutover(policy.provider));
    }
  });
});

describe("syntax errors", () => {
  it("reports broken YAML with line and column", async () => {
    const file = write("broken.yaml", "id: a\nowner: a@example.com\nprovider:\n  kind: launchdarkly: x\ntarget: {}\n");
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue.file).toBe(file);
    expect(issue.line).toBe(4);
    expect(issue.message).toMatch(/^invalid YAML \(column 9\): Nested mappings are not allowed/);
  });

  it("reports broken JSON with line and column", async () => {
    const file = write("broken.json", '{\n  "id": "a",\n  "owner": "a@example.com",,\n}\n');
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue.line).toBe(3);
    expect(issue.message).toMatch(/^invalid JSON \(column 28\)/);
  });

  it("reports an empty file", async () => {
    const file = write("empty.yaml", "# nothing here yet\n");
    expect(only((await loadPolicyFile(file)).issues).message).toMatch(/holds no policy/);
  });

  it("reports a document that is not a mapping", async () => {
    const file = write("list.yaml", "- id: a\n- id: b\n");
    expect(only((await loadPolicyFile(file)).issues).message).toMatch(/expected a policy .* got a list/);
  });
});

describe("schema problems", () => {
  it("names the field, its line and what was expected for a bad cron", async () => {
    const file = write("ld.yaml", ldPolicy("ld", 'schedule:\n  cron: "0 3 * *"\n'));
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue).toEqual({
      file,
      line: 10,
      path: "schedule.cron",
      message: "expected 5 fields (minute hour day-of-month month day-of-week), got 4",
    });
  });

  it("reports a cron field out of range", async () => {
    const file = write("ld.yaml", ldPolicy("ld", 'schedule:\n  cron: "61 3 * * *"\n'));
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue.path).toBe("schedule.cron");
    expect(issue.message).toMatch(/^invalid cron expression "61 3 \* \* \*"/);
  });

  it("reports an unknown time zone", async () => {
    const file = write("ld.yaml", ldPolicy("ld", 'schedule:\n  cron: "0 3 * * *"\n  timezone: Europe/Berln\n'));
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue).toMatchObject({ line: 11, path: "schedule.timezone" });
    expect(issue.message).toContain('unknown time zone "Europe/Berln"');
  });

  it("names an unknown key and suggests the known one it resembles", async () => {
    const file = write("ld.yaml", ldPolicy("ld", "confirmation:\n  timout: 1d\n"));
    expect(only((await loadPolicyFile(file)).issues)).toMatchObject({
      line: 10,
      path: "confirmation.timout",
      message: 'unknown key "timout" (did you mean "timeout"?)',
    });
  });

  it("lists the allowed keys when nothing is close", async () => {
    const file = write("ld.yaml", ldPolicy("ld", "colour: blue\n"));
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue.path).toBe("colour");
    expect(issue.message).toMatch(/^unknown key "colour": expected one of id, description, owner, provider/);
  });

  it("says which provider kind a misplaced field belongs to", async () => {
    const text = ldPolicy("ld").replace("  kind: launchdarkly\n", "  kind: launchdarkly\n  userId: u-1\n");
    const file = write("ld.yaml", text);
    expect(only((await loadPolicyFile(file)).issues)).toMatchObject({
      line: 5,
      path: "provider.userId",
      message: 'unknown key "userId" for kind launchdarkly: it is a field of kind qstash-token',
    });
  });

  it("suggests the provider kind that was probably meant", async () => {
    const file = write("ld.yaml", ldPolicy("ld").replace("kind: launchdarkly", "kind: launchdarkley"));
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue).toMatchObject({ line: 4, path: "provider.kind" });
    expect(issue.message).toMatch(/^unknown kind "launchdarkley" \(did you mean "launchdarkly"\?\): expected one of launchdarkly, snyk-service-account/);
  });

  it("points a missing required field at its parent's line", async () => {
    const file = write("ld.yaml", ldPolicy("ld").replace("  secretId: prod/ld\n", "  region: eu-west-1\n"));
    expect(only((await loadPolicyFile(file)).issues)).toMatchObject({ line: 7, path: "target.secretId", message: "required field is missing" });
  });

  it("reports each bad consumer with its index", async () => {
    const file = write(
      "ld.yaml",
      ldPolicy(
        "ld",
        `consumers:
  - id: api
    confirm: push
    tokenHash: sha256:abc
  - id: worker
    confirm: probe
    url: ftp://worker.example.com/version
  - id: cron
    confirm: pull
`,
      ),
    );
    const issues = (await loadPolicyFile(file)).issues;
    expect(issues.map((i) => [i.line, i.path])).toEqual([
      [12, "consumers[0].tokenHash"],
      [15, "consumers[1].url"],
      [17, "consumers[2].confirm"],
    ]);
    expect(issues[1]?.message).toBe('expected an http(s) URL, got "ftp://worker.example.com/version"');
    expect(issues[2]?.message).toBe('unknown confirm "pull": expected one of push, probe, usage');
  });

  it("asks for quotes when a number stands where text belongs", async () => {
    const text = `id: snyk
owner: a@example.com
provider:
  kind: snyk-pat
  apiVersion: 20240101
target:
  secretId: s
`;
    const issue = only((await loadPolicyFile(write("snyk.yaml", text))).issues);
    expect(issue).toMatchObject({ line: 5, path: "provider.apiVersion", message: 'expected text, got number 20240101 (put it in quotes: "20240101")' });
  });

  it("says a schedule takes cron or every, not both", async () => {
    const file = write("ld.yaml", ldPolicy("ld", 'schedule:\n  cron: "0 3 * * *"\n  every: 30d\n'));
    expect(only((await loadPolicyFile(file)).issues)).toMatchObject({ line: 9, path: "schedule", message: "give either cron or every, not both" });
  });

  it("finds lines in JSON files too", async () => {
    const json = JSON.stringify(
      { id: "j", owner: "j@example.com", provider: { kind: "launchdarkly", management: { env: "LD_ADMIN" } }, target: { secretId: "t" }, schedule: { every: "ten days" } },
      null,
      2,
    );
    const file = write("j.json", json);
    const issue = only((await loadPolicyFile(file)).issues);
    expect(issue.path).toBe("schedule.every");
    expect(issue.line).toBe(json.split("\n").findIndex((l) => l.includes('"every"')) + 1);
    expect(issue.message).toContain('"ten days"');
  });

  it("rejects a bad duration with an example of a good one", async () => {
    const file = write("ld.yaml", ldPolicy("ld", "confirmation:\n  timeout: 5\n"));
    expect(only((await loadPolicyFile(file)).issues).message).toMatch(/^expected a duration such as "30d"/);
  });
});

describe("checks across fields", () => {
  it("rejects duplicate consumer ids", async () => {
    const consumers = `consumers:
  - id: api
    confirm: usage
  - id: api
    confirm: probe
    url: https://api.example.com/version
`;
    const issue = only((await loadPolicyFile(write("ld.yaml", ldPolicy("ld", consumers)))).issues);
    expect(issue).toMatchObject({ line: 12, path: "consumers[1].id", message: 'duplicate consumer id "api" (also consumers[0]); give each consumer its own id' });
  });

  it("requires acceptCutover for a cut-over provider and says why and how", async () => {
    const text = `id: qstash
owner: a@example.com
provider:
  kind: qstash-token
  email: a@example.com
  management: { env: UPSTASH_KEY }
  userId: u-1
target:
  secretId: q
`;
    const issue = only((await loadPolicyFile(write("q.yaml", text))).issues);
    expect(issue).toMatchObject({ line: 4, path: "provider.kind" });
    expect(issue.message).toContain("the old credential dies when the new one is issued");
    expect(issue.message).toContain("consumers fail until they reload");
    expect(issue.message).toContain('"acceptCutover: true"');

    const refused = only((await loadPolicyFile(write("q2.yaml", `${text}acceptCutover: false\n`))).issues);
    expect(refused).toMatchObject({ line: 10, path: "acceptCutover" });

    const accepted = await loadPolicyFile(write("q3.yaml", `${text}acceptCutover: true\n`));
    expect(accepted.issues).toEqual([]);
    expect(accepted.policies[0]?.policy.acceptCutover).toBe(true);
  });

  it("treats LaunchDarkly's reset strategy as a cut-over and create-delete as not", async () => {
    const reset = ldPolicy("ld").replace("  management:", "  strategy: reset-with-expiry\n  resetExpiry: 1h\n  management:");
    const issue = only((await loadPolicyFile(write("reset.yaml", reset))).issues);
    expect(issue.path).toBe("provider.kind");
    expect(issue.message).toContain('use strategy "create-delete"');
    expect((await loadPolicyFile(write("create.yaml", ldPolicy("ld")))).issues).toEqual([]);
  });

  it("allows confirm: usage only where the provider reports last use", async () => {
    const usage = "consumers:\n  - id: api\n    confirm: usage\n";
    expect((await loadPolicyFile(write("ld.yaml", ldPolicy("ld", usage)))).issues).toEqual([]);
    const snyk = `id: snyk
owner: a@example.com
provider:
  kind: snyk-pat
target:
  secretId: s
${usage}`;
    const issue = only((await loadPolicyFile(write("snyk.yaml", snyk))).issues);
    expect(issue).toMatchObject({ line: 9, path: "consumers[0].confirm" });
    expect(issue.message).toContain("snyk-pat does not");
  });

  it("refuses onTimeout: revoke for QStash signing keys", async () => {
    const text = `id: keys
owner: a@example.com
provider:
  kind: qstash-signing-keys
  management: { secretId: q }
target:
  secretId: k
confirmation:
  onTimeout: revoke
`;
    const issue = only((await loadPolicyFile(write("keys.yaml", text))).issues);
    expect(issue).toMatchObject({ line: 9, path: "confirmation.onTimeout" });
    expect(issue.message).toContain("breaks every receiver");
  });

  it("requires a schedule window shorter than the interval", async () => {
    const bad = only((await loadPolicyFile(write("a.yaml", ldPolicy("ld", "schedule:\n  every: 1d\n  window: 1d\n")))).issues);
    expect(bad).toMatchObject({ line: 11, path: "schedule.window", message: "window (1d) must be shorter than every (1d), or a late slot would overlap the next one" });
    expect((await loadPolicyFile(write("b.yaml", ldPolicy("ld", "schedule:\n  every: 1d\n  window: 23h\n")))).issues).toEqual([]);
  });

  it("reports cross-field problems together with schema problems", async () => {
    const consumers = `consumers:
  - id: api
    confirm: push
    tokenHash: nope
  - id: api
    confirm: usage
owner: dup@example.com
`;
    const issues = (await loadPolicyFile(write("ld.yaml", ldPolicy("ld", consumers).replace("owner: dana@example.com\n", "")))).issues;
    expect(issues.map((i) => i.path)).toEqual(["consumers[0].tokenHash", "consumers[1].id"]);
  });
});

describe("several files", () => {
  it("names both files when two policies share an id", async () => {
    write("a.yaml", ldPolicy("shared"));
    write("sub/b.yaml", `# second copy\n${ldPolicy("shared")}`);
    const { policies, issues } = await loadPolicies([dir]);
    expect(policies.map((p) => p.file)).toEqual([join(dir, "a.yaml")]);
    expect(only(issues)).toEqual({
      file: join(dir, "sub/b.yaml"),
      line: 2,
      path: "id",
      message: `duplicate policy id "shared": also defined in ${join(dir, "a.yaml")}:1; give each policy its own id`,
    });
  });

  it("reports every mistake in a folder, not just the first", async () => {
    write("ok.yaml", ldPolicy("fine"));
    write("cron.yaml", ldPolicy("cron", 'schedule:\n  cron: "* * *"\n'));
    write("nested/typo.yml", ldPolicy("typo", "notfy: []\n"));
    write("nested/deeper/syntax.json", "{ nope");
    write("tz.yaml", ldPolicy("tz", 'schedule:\n  cron: "0 0 * * *"\n  timezone: Moon/Base\n'));
    write("README.md", "not a policy");
    write(".hidden/bad.yaml", "id: [");
    write("policy.schema.json", "{}");
    const { policies, issues } = await loadPolicies([dir]);
    expect(policies.map((p) => p.policy.id)).toEqual(["fine"]);
    expect(issues.map((i) => [i.file.slice(dir.length + 1), i.path])).toEqual([
      ["cron.yaml", "schedule.cron"],
      ["nested/deeper/syntax.json", ""],
      ["nested/typo.yml", "notfy"],
      ["tz.yaml", "schedule.timezone"],
    ]);
    expect(issues[2]?.message).toBe('unknown key "notfy" (did you mean "notify"?)');
  });

  it("reads several documents from one YAML file, and reports a broken one without hiding the others", async () => {
    const file = write("multi.yaml", `${ldPolicy("one")}---\n${ldPolicy("two")}---\n${ldPolicy("one")}`);
    const { policies, issues } = await loadPolicyFile(file);
    expect(policies.map((p) => p.policy.id)).toEqual(["one", "two"]);
    expect(only(issues)).toMatchObject({ line: 19, path: "id" });

    const broken = write("broken.yaml", `${ldPolicy("three", "colour: red\n")}---\nid: [\n`);
    const result = await loadPolicyFile(broken);
    expect(result.issues.map((i) => [i.line, i.path])).toEqual([
      [9, "colour"],
      [11, ""],
    ]);
  });

  it("reports a path that does not exist", async () => {
    const missing = join(dir, "nope");
    expect(only((await loadPolicies([missing])).issues)).toEqual({ file: missing, path: "", message: "cannot read: no such file or directory" });
  });

  it("throws one PolicyError listing every problem", async () => {
    write("a.yaml", ldPolicy("a", "colour: red\n"));
    write("b.yaml", ldPolicy("b", 'schedule:\n  cron: "0 0 * *"\n'));
    const err = await loadPoliciesOrThrow([dir]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyError);
    const policyError = err as PolicyError;
    expect(policyError.issues).toHaveLength(2);
    expect(policyError.message).toBe(
      [`${join(dir, "a.yaml")}:9: colour: unknown key "colour": expected one of id, description, owner, provider, schedule, target, consumers, confirmation, acceptCutover, notify, human, offboarding`, `${join(dir, "b.yaml")}:10: schedule.cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4`].join("\n"),
    );
  });

  it("returns valid policies with defaults applied", async () => {
    write("a.yaml", ldPolicy("a", "consumers:\n  - id: api\n    confirm: probe\n    url: https://api.example.com/v\n"));
    const [loaded] = await loadPoliciesOrThrow([dir]);
    expect(loaded?.policy.confirmation).toEqual({ timeout: 86_400_000, onTimeout: "keep-old" });
    expect(loaded?.policy.consumers).toEqual([{ id: "api", confirm: "probe", url: "https://api.example.com/v", interval: 30_000, required: true }]);
    expect(loaded?.policy.provider).toMatchObject({ kind: "launchdarkly", strategy: "create-delete" });
  });

  it("keeps none of the files' text with the policies it loaded", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    // 200 files of 20 kB (a long comment): 4 MB of text. Every value is long enough that V8 would
    // keep it as a view into its file's text.
    const comment = `# ${"x".repeat(78)}\n`.repeat(250);
    const policy = (i: number) => comment + ldPolicy(`policy-number-${i}`, `description: the policy with the number ${i}\n`);
    for (let i = 0; i < 200; i++) write(`team/p-${i}.yaml`, policy(i));
    // The first load compiles what a first load compiles; it stays referenced, so the second
    // is measured beside it rather than in the space the first one left.
    const first = await loadPolicies([dir]);
    gc();
    const before = process.memoryUsage().heapUsed;
    const { policies } = await loadPolicies([dir]);
    gc();
    const held = process.memoryUsage().heapUsed - before;
    expect(first.policies).toHaveLength(200);
    expect(policies).toHaveLength(200);
    expect(policies.find((p) => p.policy.id === "policy-number-7")?.policy.description).toBe("the policy with the number 7");
    // The policies themselves take some 200 kB.
    expect(held).toBeLessThan(1_500_000);
  });
});

describe("parsePolicyText", () => {
  it("validates text that is not in a file (the API uses it)", () => {
    const { policies, issues } = parsePolicyText(ldPolicy("from-api", "schedule:\n  every: 30d\n"), "request.yaml");
    expect(issues).toEqual([]);
    expect(policies[0]?.policy.schedule).toEqual({ every: 30 * 86_400_000 });
  });
});
