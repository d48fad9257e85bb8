/**
 * docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file against
 * the Compose Specification's JSON Schema (vendored in test/schemas/, see its README), plus what a
 * deployment relies on: a healthcheck for every service, on readiness.
 */
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { NODE_FLAGS } from "../../src/node-flags.ts";

// ajv-formats is CommonJS with a default export; under NodeNext its type is the module object.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");

interface ComposeService {
  image?: string;
  command?: string[];
  read_only?: boolean;
  healthcheck?: { test?: string[]; interval?: string; timeout?: string };
}

describe("docker-compose.yml", () => {
  let validate: ValidateFunction;
  // Compose resolves YAML merge keys (`<<: *rekey`) before it validates; so does this test.
  const compose = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, ComposeService> };

  beforeAll(() => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    addFormats(ajv);
    // The schema names its meta-schema by the https address of draft-07; ajv knows it by http.
    ajv.addMetaSchema({ ...JSON.parse(read("node_modules/ajv/dist/refs/json-schema-draft-07.json")), $id: "https://json-schema.org/draft-07/schema" });
    validate = ajv.compile(JSON.parse(read("test/schemas/compose-spec.json")));
  });

  it("is valid under the Compose Specification's JSON Schema", () => {
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it("the schema check catches a broken file (it is not vacuous)", () => {
    const broken = structuredClone(compose);
    (broken.services.worker as Record<string, unknown>).healthcheck = { test: ["CMD", "true"], intervall: "10s" };
    (broken.services.api as Record<string, unknown>).restart = 3;
    expect(validate(broken)).toBe(false);
    const paths = (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
    expect(paths).toContain("/services/worker/healthcheck must NOT have additional properties");
    expect(paths).toContain("/services/api/restart must be string");
  });

  it("gives every service a healthcheck, and every rekey role one on /readyz", () => {
    const services = Object.entries(compose.services);
    expect(services.map(([name]) => name).sort()).toEqual(["api", "redis", "scheduler", "worker"]);
    for (const [name, svc] of services) {
      expect(svc.healthcheck?.test?.length, name).toBeGreaterThan(1);
      if (name === "redis") continue;
      expect(svc.image, name).toBe("rekey:local");
      expect(svc.read_only, name).toBe(true);
      expect(svc.healthcheck?.test?.join(" "), name).toMatch(/http:\/\/127\.0\.0\.1:(9090|8080)\/readyz/);
    }
    expect(compose.services.worker?.command).toEqual(["worker"]);
    expect(compose.services.scheduler?.command).toEqual(["scheduler"]);
  });
});

describe("Dockerfile", () => {
  const dockerfile = read("Dockerfile");
  const stages = dockerfile.split(/^FROM /m).slice(1);
  const final = stages.at(-1) ?? "";

  it("builds in stages on Node 24 slim, and the final stage holds production dependencies and dist/ only", () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24-[a-z]+-slim$/m);
    expect(stages.map((s) => s.split("\n")[0])).toEqual(["${NODE_IMAGE} AS build", "${NODE_IMAGE} AS deps", "${NODE_IMAGE}"]);
    expect(stages[1]).toMatch(/npm ci --omit=dev/);
    expect(final).toContain("COPY --from=deps /app/node_modules ./node_modules");
    expect(final).toContain("COPY --from=build /src/dist/src ./dist/src");
    expect(final).not.toMatch(/COPY (src|test|workers)\b/);
    expect(final).not.toMatch(/tsx|tsc/);
  });

  it("runs as a non-root user with the health port on", () => {
    expect(final).toMatch(/^USER 1000:1000$/m);
    expect(final).toMatch(/REKEY_HEALTH_PORT=9090/);
    expect(final).toMatch(/REKEY_HEALTH_HOST=0\.0\.0\.0/);
  });

  it("starts Node with rekey's flags (src/node-flags.ts)", () => {
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(final)?.[1];
    expect(entrypoint && JSON.parse(entrypoint)).toEqual(["node", ...NODE_FLAGS, "bin/rekey.js"]);
  });
});
