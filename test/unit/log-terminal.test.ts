/**
 * Log lines are read in terminals too: a C1 control or bidi override in a logged message (a
 * provider's error text, a consumer id) is written as its JSON escape, so the line stays the same
 * JSON for a program and shows nothing a terminal would act on.
 */
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";

describe("log lines in a terminal", () => {
  it("escape C1 controls, DEL and bidi characters; the JSON decodes to the exact text", () => {
    const lines: string[] = [];
    const logger = createLogger({ destination: { write: (s: string) => void lines.push(s) } });
    const hostile = "provider said: \u009b2J\u202eevil\u2066x\u2069\x7f\x1b[31m\nforged line";
    logger.warn({ consumerId: hostile }, hostile);
    expect(lines).toHaveLength(1);
    // Nothing a terminal acts on is written raw (C0 was already escaped by JSON; the rest now is).
    // eslint-disable-next-line no-control-regex -- the point of the check
    expect(lines[0]).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
    expect(lines[0]).toContain("\\u009b2J\\u202eevil");
    const record = JSON.parse(lines[0]!) as { msg: string; consumerId: string };
    expect(record.msg).toBe(hostile);
    expect(record.consumerId).toBe(hostile);
  });
});
