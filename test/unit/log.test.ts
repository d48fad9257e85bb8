import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";

function capture(level?: string) {
  const lines: string[] = [];
  const logger = createLogger({ level, name: "test", destination: { write: (s: string) => void lines.push(s) } });
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines, records };
}

const SECRET = "sk-live-7f3a9c1e5b2d4f60";

describe("createLogger", () => {
  it("redacts secret-shaped fields at the top level, nested and in arrays", () => {
    const { logger, lines, records } = capture();
    logger.info(
      {
        value: SECRET,
        token: SECRET,
        policyId: "ld-api-token",
        provider: { clientSecret: SECRET, apiKey: SECRET, response: { token: SECRET } },
        request: { headers: { authorization: `Bearer ${SECRET}`, Authorization: SECRET, "x-api-key": SECRET } },
        aws: { input: { SecretString: SECRET } },
        steps: [{ issued: { value: SECRET } }],
        deep: { a: { b: { c: { password: SECRET } } } },
      },
      "issued a credential",
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain(SECRET);
    const [record] = records();
    expect(record).toMatchObject({
      name: "test",
      msg: "issued a credential",
      policyId: "ld-api-token",
      value: "[redacted]",
      token: "[redacted]",
      provider: { clientSecret: "[redacted]", apiKey: "[redacted]", response: { token: "[redacted]" } },
      request: { headers: { authorization: "[redacted]", Authorization: "[redacted]", "x-api-key": "[redacted]" } },
      aws: { input: { SecretString: "[redacted]" } },
      steps: [{ issued: { value: "[redacted]" } }],
      deep: { a: { b: { c: { password: "[redacted]" } } } },
    });
  });

  it("keeps only name, message and stack of an error", () => {
    const { logger, lines, records } = capture();
    const err = Object.assign(new TypeError("provider answered 500"), { response: { body: SECRET }, config: { headers: { cookie: SECRET } } });
    logger.error({ err }, "step failed");
    logger.error(err, "step failed again");
    expect(lines.join("")).not.toContain(SECRET);
    for (const record of records()) {
      expect(Object.keys(record.err as object).sort()).toEqual(["message", "name", "stack"]);
      expect(record.err).toMatchObject({ name: "TypeError", message: "provider answered 500" });
    }
  });

  it("honours the level", () => {
    const { logger, lines } = capture("warn");
    logger.info("quiet");
    logger.warn("loud");
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(["loud"]);
  });
});
