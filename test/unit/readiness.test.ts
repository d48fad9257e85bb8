/** What /readyz checks of the secret store: one metadata read per region, reused briefly when it succeeded. */
import { describe, expect, it } from "vitest";
import { secretStoreCheck } from "../../src/observe/readiness.ts";
import { runReadiness } from "../../src/observe/role-server.ts";
import type { SecretRef } from "../../src/stores/types.ts";

function fakeStore(fail: () => Error | undefined) {
  const probes: SecretRef[] = [];
  return {
    probes,
    store: {
      async probe(ref: SecretRef) {
        probes.push(ref);
        await new Promise((r) => setTimeout(r, 5));
        const err = fail();
        if (err) throw err;
      },
    },
  };
}

describe("secret store readiness", () => {
  const targets = [
    { secretId: "a", region: "eu-central-1" },
    { secretId: "b", region: "eu-central-1" },
    { secretId: "c", region: "us-east-1" },
  ];

  it("reads one secret per region, reuses a success for 30 s, and shares one read between concurrent probes", async () => {
    let now = 0;
    const { store, probes } = fakeStore(() => undefined);
    const check = secretStoreCheck({ store, targets: () => targets, now: () => now });
    const [first, second] = await Promise.all([runReadiness([check]), runReadiness([check])]);
    expect(first).toEqual({ ok: true, checks: { secretStore: { ok: true, note: "answered in eu-central-1, us-east-1" } } });
    expect(second).toEqual(first);
    expect(probes).toEqual([
      { secretId: "a", region: "eu-central-1" },
      { secretId: "c", region: "us-east-1" },
    ]);
    now = 29_999;
    await runReadiness([check]);
    expect(probes).toHaveLength(2);
    now = 30_001;
    await runReadiness([check]);
    expect(probes).toHaveLength(4);
  });

  it("never reuses a failure: the next probe reads again and sees the recovery", async () => {
    let down = true;
    const { store, probes } = fakeStore(() => (down ? new Error("DescribeSecret on secret a in eu-central-1 got no answer") : undefined));
    const check = secretStoreCheck({ store, targets: () => targets.slice(0, 1), now: () => 0 });
    expect(await runReadiness([check])).toEqual({ ok: false, checks: { secretStore: { ok: false, error: "DescribeSecret on secret a in eu-central-1 got no answer" } } });
    down = false;
    expect((await runReadiness([check])).ok).toBe(true);
    expect(probes).toHaveLength(2);
  });

  it("passes without reading when no policy names a secret, and gives up on a read past its budget", async () => {
    const { store, probes } = fakeStore(() => undefined);
    expect(await runReadiness([secretStoreCheck({ store, targets: () => [] })])).toEqual({ ok: true, checks: { secretStore: { ok: true, note: "not checked: no policy names a secret yet" } } });
    expect(probes).toEqual([]);
    const hanging = secretStoreCheck({ store: { probe: () => new Promise<void>(() => undefined) }, targets: () => targets });
    expect(await runReadiness([hanging], 50)).toEqual({ ok: false, checks: { secretStore: { ok: false, error: "no answer within 50 ms" } } });
  });
});
