/**
 * Bad input, generated: a few hundred malformed policy files (wrong types, missing fields, bad
 * cron, unknown keys, broken YAML and JSON, bad durations, enums and consumers) are each refused
 * with the file, a field path or line, and a reason, without crashing the loader; malformed and
 * forged API requests (bad JSON, wrong types, huge bodies, bad or missing tokens, unknown routes,
 * wrong versions and methods) each get a 4xx, never a 5xx, and change nothing (the audit included)
 * but the rate-limit counters.
 */
import { describe, expect, it } from "vitest";
import { checkApi, checkPolicyFiles } from "../../bench/chaos/bad-input.ts";

describe("bad input", () => {
  it("300 malformed policy files: each refused with file, field or line, and reason; no crash", async () => {
    const r = await checkPolicyFiles(300);
    expect(r.problems).toEqual([]);
    // A mutation may leave a valid policy now and then (an optional field dropped): few, not most.
    expect(r.refused).toBeGreaterThanOrEqual(280);
    expect(r.refused + r.accepted).toBe(300);
  });

  it("malformed and forged API requests: 4xx, never 5xx, nothing changed", async () => {
    const r = await checkApi();
    expect(r.problems).toEqual([]);
    expect(r.fourxx).toBe(r.requests);
    expect(r.requests).toBeGreaterThan(100);
  });
});
