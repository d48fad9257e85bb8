/**
 * Guard.mayAuthenticate decides without Redis whether a presented credential could authenticate:
 * the API refuses any other one before reading the body or waiting for its rate-limit counter.
 * A consumer token must be known the moment its policy is loaded, and forgotten when it goes.
 */
import { describe, expect, it } from "vitest";
import { Guard } from "../../src/auth/guard.ts";
import type { Refusals } from "../../src/auth/refusals.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { Policy } from "../../src/policy/schema.ts";
import { PolicySet } from "../../src/policy/policy-set.ts";
import { ldPolicy } from "../helpers/stack.ts";

const policy = (id: string, token: string) =>
  Policy.parse(ldPolicy({ url: "http://127.0.0.1:9" }, id, { consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(token) }] }));

describe("Guard.mayAuthenticate", () => {
  const set = new PolicySet([]);
  set.replace([{ policy: policy("ld-a", "consumer-token-of-a-0123456789"), file: "a.yaml" }]);
  const guard = (opts: { oidc?: boolean; tokens?: boolean } = {}) =>
    new Guard({
      refusals: {} as Refusals,
      adminTokenHash: tokenHash("admin-token-0123456789"),
      consumerTokenKnown: (h) => set.consumerTokenHashes().has(h),
      tokens: opts.tokens ? { identify: async () => undefined } : undefined,
      oidc: opts.oidc ? { identify: async () => undefined } : undefined,
    });

  it("lets through what could authenticate: a loaded policy's consumer token, the admin token, a named token's shape, a JWT where an issuer is set", () => {
    const g = guard({ tokens: true, oidc: true });
    expect(g.mayAuthenticate("consumer-token-of-a-0123456789")).toBe(true);
    expect(g.mayAuthenticate("admin-token-0123456789")).toBe(true);
    expect(g.mayAuthenticate(`rk_${"A".repeat(43)}`)).toBe(true);
    expect(g.mayAuthenticate("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")).toBe(true);
  });

  it("refuses what cannot: a forged token, an empty one, a JWT or named token with nothing to check it against, one over the length limit", () => {
    const g = guard();
    expect(g.mayAuthenticate("forged-1")).toBe(false);
    expect(g.mayAuthenticate(undefined)).toBe(false);
    expect(g.mayAuthenticate("")).toBe(false);
    expect(g.mayAuthenticate("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")).toBe(false);
    expect(g.mayAuthenticate(`rk_${"A".repeat(43)}`)).toBe(false);
    expect(g.mayAuthenticate("x".repeat(10_000))).toBe(false);
  });

  it("follows the policy set: a policy loaded later is known at once, a removed one is forgotten", () => {
    const g = guard();
    expect(g.mayAuthenticate("consumer-token-of-b-0123456789")).toBe(false);
    set.replace([
      { policy: policy("ld-a", "consumer-token-of-a-0123456789"), file: "a.yaml" },
      { policy: policy("ld-b", "consumer-token-of-b-0123456789"), file: "b.yaml" },
    ]);
    expect(g.mayAuthenticate("consumer-token-of-b-0123456789")).toBe(true);
    set.replace([{ policy: policy("ld-b", "consumer-token-of-b-0123456789"), file: "b.yaml" }]);
    expect(g.mayAuthenticate("consumer-token-of-a-0123456789")).toBe(false);
  });
});
