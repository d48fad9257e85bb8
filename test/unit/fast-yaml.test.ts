import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { fastYaml, UNSUPPORTED } from "../../src/policy/fast-yaml.ts";

/** Inputs the fast reader must read, exactly as `yaml` does. */
const SUPPORTED: string[] = [
  "a: b\n",
  "a: b\r\nc: d\r\n",
  "---\na: b\n",
  "# c\n---  # start\na: b # trailing\n",
  "a:\n  b:\n    c: d\n  e: f\n",
  "a:\n- x\n- y\nb: z\n",
  "a:\n  - x\n  -   y\n",
  "list:\n  - id: one\n    confirm: push\n  - id: two\n    nested:\n      k: v\n",
  "a: 'it''s' # c\nb: \"plain # not a comment\"\n",
  "a: https://example.com/x#frag\nb: a:b\nc: value with spaces  \n",
  "a: { env: FOO }\nb: {secretId: x, region: eu-west-1,}\nc: {}\nd: []\n",
  "a: true\nb: False\nc: ~\nd: null\ne:\nf: TRUE\n",
  "a: 2024-10-15\nb: 30d\nc: 1h30m\nd: 0b101\ne: 1_000\nf: 1.2.3\ng: .foo\nh: on\n",
  'cron: "0 3 * * 1"\ntz: Europe/Berlin\n',
  "a:\n  -\n    b: c\n  - d\n",
  "seq:\n- - a\n  - b\n- c\n",
  "a: ''\nb: \"\"\n",
  "description: ünïcødé, [brackets] {braces} and, commas\n",
];

/** Inputs the fast reader must leave to `yaml` (they use features it does not read). */
const LEFT_TO_YAML: string[] = [
  "a: &x 1\nb: *x\n",
  "a: !!str 1\n",
  "a: |\n  text\n",
  "a: >\n  text\n",
  "a: 1\n",
  "a: -1\n",
  "a: 0x1F\n",
  "a: .5\n",
  "a: .inf\n",
  "a: 1e3\n",
  "a: plain\n  continued\n",
  'a: "multi\n  line"\n',
  'a: "esc\\n"\n',
  "a: b\na: c\n",
  "a: b\n---\nc: d\n",
  "a: b\n...\n",
  "%YAML 1.2\n---\na: b\n",
  "a:\tb\n",
  "\uFEFFa: b\n",
  "a: [1, 2]\n",
  "a: { b: [c] }\n",
  "a: { b: 'c' }\n",
  "a: b: c\n",
  "a: - b\n",
  '"quoted key": v\n',
  "? complex\n: v\n",
  "true: v\n",
  "<<: { a: b }\n",
  "just a scalar\n",
  "a: b\n  c: d\n",
  "- a\n  - b\n",
  "a:\n  - b\n   c: d\n",
  "a: 'unterminated\n",
  "a: x\rb: y\n",
];

describe("fastYaml", () => {
  it.each(SUPPORTED)("reads %j exactly as yaml does", (text) => {
    const fast = fastYaml(text);
    expect(fast).not.toBe(UNSUPPORTED);
    expect(fast).toEqual(parse(text));
  });

  it.each(LEFT_TO_YAML)("leaves %j to yaml", (text) => {
    expect(fastYaml(text)).toBe(UNSUPPORTED);
  });

  it("reads every example policy (so loading them takes the fast path), exactly as yaml does", () => {
    const files = readdirSync("policies").filter((f) => f.endsWith(".yaml"));
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const f of files) {
      const text = readFileSync(join("policies", f), "utf8");
      const fast = fastYaml(text);
      expect(fast, f).not.toBe(UNSUPPORTED);
      expect(fast, f).toEqual(parse(text));
    }
  });

  it("treats an empty or comment-only text as an empty document", () => {
    expect(fastYaml("")).toBeNull();
    expect(fastYaml("# only a comment\n")).toBe(parse("# only a comment\n"));
  });
});
