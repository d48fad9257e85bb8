import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
// ajv is the validator fastify already brings; it checks the schema the way editors' validators do.
import { Ajv, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { policyJsonSchema } from "../../src/policy/json-schema.ts";
import { PROVIDER_KINDS } from "../../src/policy/schema.ts";

type Json = Record<string, unknown>;
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

let validate: ValidateFunction;
beforeAll(() => {
  // strict: an unknown keyword or format in the schema is an error, not silently ignored.
  const ajv = new Ajv({ strict: true, allErrors: true });
  addFormats(ajv);
  validate = ajv.compile(policyJsonSchema());
});

const minimal = { id: "x", owner: "a@example.com", provider: { kind: "launchdarkly", management: { secretId: "s" } }, target: { secretId: "t" } };

describe("policy JSON Schema", () => {
  it("is a draft-07 schema with a title and descriptions", () => {
    const schema = policyJsonSchema();
    expect(schema.$schema).toBe("http://json-schema.org/draft-07/schema#");
    expect(schema.title).toBe("rekey policy");
    expect(typeof schema.description).toBe("string");
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(["id", "owner", "provider", "target"]);
  });

  it("has one strict alternative per provider kind", () => {
    const provider = (policyJsonSchema().properties as Json).provider as Json;
    const options = provider.oneOf as Json[];
    const kinds = options.map((o) => ((o.properties as Json).kind as Json).const);
    expect(kinds).toEqual([...PROVIDER_KINDS]);
    for (const o of options) {
      expect(o.additionalProperties).toBe(false);
      expect(o.required).toContain("kind");
    }
  });

  it("describes what people write: durations as text with their defaults", () => {
    const confirmation = (policyJsonSchema().properties as Json).confirmation as Json;
    const timeout = (confirmation.properties as Json).timeout as Json;
    expect(timeout).toMatchObject({ type: "string", default: "1d" });
  });

  it("accepts every example policy", () => {
    const files = readdirSync("policies").filter((f) => f.endsWith(".yaml"));
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const f of files) {
      const ok = validate(parse(readFileSync(join("policies", f), "utf8")));
      expect(validate.errors ?? [], f).toEqual([]);
      expect(ok).toBe(true);
    }
  });

  it("accepts a minimal policy and rejects unknown keys, wrong kinds and missing fields", () => {
    expect(validate(minimal)).toBe(true);
    expect(validate({ ...minimal, colour: "red" })).toBe(false);
    expect(validate({ ...minimal, provider: { ...minimal.provider, userId: "u" } })).toBe(false);
    expect(validate({ ...minimal, provider: { kind: "nope" } })).toBe(false);
    const { target: _target, ...withoutTarget } = minimal;
    expect(validate(withoutTarget)).toBe(false);
    expect(validate({ ...minimal, schedule: { every: "thirty days" } })).toBe(false);
  });

  it("matches the committed policy.schema.json (regenerate with `rekey schema > policy.schema.json`)", () => {
    const committed = JSON.parse(readFileSync("policy.schema.json", "utf8")) as unknown;
    expect(committed).toEqual(policyJsonSchema());
  });
});
