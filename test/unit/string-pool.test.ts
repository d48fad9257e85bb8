import { describe, expect, it } from "vitest";
import { StringPool } from "../../src/util/string-pool.ts";

describe("StringPool", () => {
  it("replaces the strings of a parsed document in place and keeps everything else", () => {
    const doc = { id: "billing-ld", n: null, on: true, list: ["a", { url: "https://example.com/v" }, []], nested: { tz: "Europe/Berlin" } };
    const copy = structuredClone(doc);
    const pool = new StringPool();
    expect(pool.detach(doc)).toBe(doc);
    expect(doc).toEqual(copy);
    expect(pool.detach("text")).toBe("text");
    expect(pool.detach(null)).toBeNull();
  });

  it("leaves an own __proto__ key alone instead of setting the prototype", () => {
    const doc = JSON.parse('{"__proto__": {"polluted": "yes"}, "a": "b"}') as Record<string, unknown>;
    new StringPool().detach(doc);
    expect(Object.getPrototypeOf(doc)).toBe(Object.prototype);
    expect(Object.hasOwn(doc, "__proto__")).toBe(true);
    expect(doc.a).toBe("b");
  });
});
