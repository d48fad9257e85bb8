/** The order a leak queues its rotations in: each provider key's share spread over the incident. */
import { describe, expect, it } from "vitest";
import { spreadByScope } from "../../src/leak/leak.ts";

const scopeOf = (id: string) => id.charAt(0);

describe("spreadByScope", () => {
  it("spreads every scope's items evenly over the sequence, the larger scope first on a tie", () => {
    const items = ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "c0"];
    expect(spreadByScope(items, scopeOf)).toEqual(["a0", "a1", "b0", "a2", "c0", "a3", "a4", "b1", "a5"]);
  });

  it("does not depend on the order the scopes came in, and keeps each scope's own order", () => {
    const grouped = [...Array.from({ length: 5 }, (_, k) => `q${k}`), ...Array.from({ length: 20 }, (_, k) => `l${k}`), "s0", "s1"];
    const interleaved = ["s0", ...grouped.filter((x) => x.startsWith("l")), "s1", ...grouped.filter((x) => x.startsWith("q"))];
    const out = spreadByScope(grouped, scopeOf);
    expect(spreadByScope(interleaved, scopeOf)).toEqual(out);
    expect(out.filter((x) => x.startsWith("q"))).toEqual(["q0", "q1", "q2", "q3", "q4"]);
    // No scope waits for another: the 5 q-items sit one in each fifth of the 27.
    const at = out.flatMap((x, i) => (x.startsWith("q") ? [Math.floor((i * 5) / out.length)] : []));
    expect(at).toEqual([0, 1, 2, 3, 4]);
  });
});
