/** `rekey demo` keeps working: the README's quickstart runs it. */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { redisUrl } from "../helpers/redis.ts";

describe("rekey demo", () => {
  it("rotates a LaunchDarkly token end to end and says so", async () => {
    let out = "";
    let err = "";
    const code = await main(["demo", "--timeout", "45"], {
      stdout: (s) => void (out += s),
      stderr: (s) => void (err += s),
      stdin: new PassThrough(),
      env: { REDIS_URL: redisUrl() },
    });
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toContain("rotation completed");
    expect(out).toMatch(/AWSCURRENT\s+version [0-9a-f-]{36}, works at LaunchDarkly: true/);
    expect(out).toMatch(/old token\s+\w+ live: false/);
    expect(out).toContain("confirmation answered 200");
    // Printed in the order things happened: the consumer reacts to the steps printed before it,
    // and its confirmation's audit entry comes before its answer.
    const at = (re: RegExp) => {
      const i = out.split("\n").findIndex((l) => re.test(l));
      expect(i, `${re} in:\n${out}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    const order = [/^audit\s+start\s+ok/, /^audit\s+issuing\s+ok/, /^consumer\s+reloaded the secret/, /^audit\s+confirmation\s+ok/, /^consumer\s+confirmation answered 200/, /^rotation completed/].map(at);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(at(/^audit\s+revoking\s+ok/)).toBeLessThan(at(/^rotation completed/));
  });
});
