/**
 * The order a mass leak works in, end to end on real Redis, BullMQ and the providers over HTTP:
 * a leak rotation that waits out a rate limit does not go back behind the leak's whole backlog.
 */
import { afterEach, describe, expect, it } from "vitest";
import { leakResponseFor } from "../../src/leak/leak.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ldPolicy, REGION, startStack, until } from "../helpers/stack.ts";

describe("leak order", () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.reverse()) await c();
    closers.length = 0;
  });

  it("a leak rotation parked by a 429 resumes ahead of the leak rotations not started yet", { timeout: 60_000 }, async () => {
    // Two LaunchDarkly accounts: "slow" holds the backlog (each token creation takes 150 ms, one
    // worker slot), "limited" answers its one rotation's first creation with a 429 for 1 s.
    const slow = await startLaunchDarklyFake({ tokenLimit: 200 });
    const limited = await startLaunchDarklyFake({ injected429: { reset: false, retryAfterSeconds: 1 } });
    closers.push(() => slow.close(), () => limited.close());
    const slowAdmin = slow.addToken({ role: "admin", name: "rekey management" });
    const limitedAdmin = limited.addToken({ role: "admin", name: "rekey management" });
    const policies: PolicyInput[] = [];
    const seeds: { id: string; value: string }[] = [];
    for (let i = 0; i < 36; i++) {
      const id = `slow-${i}`;
      policies.push({ ...ldPolicy(slow, id), provider: { kind: "launchdarkly", baseUrl: slow.url, management: { env: "LD_SLOW" } } });
      seeds.push({ id, value: slow.addToken({ name: id, role: "reader" }).value });
    }
    const leaked = limited.addToken({ name: "limited", role: "reader" });
    policies.push({ ...ldPolicy(limited, "limited"), provider: { kind: "launchdarkly", baseUrl: limited.url, management: { env: "LD_LIMITED" } } });
    seeds.push({ id: "limited", value: leaked.value });

    const stack = await startStack({ policies, env: { LD_SLOW: slowAdmin.value, LD_LIMITED: limitedAdmin.value }, concurrency: 1 });
    closers.push(() => stack.close());
    for (const s of seeds) await stack.store.create!({ secretId: `prod/${s.id}`, region: REGION }, s.value);
    slow.faults.inject({ route: "POST /api/v2/tokens", kind: "delay", delayMs: 150, times: Infinity });
    limited.faults.inject({ route: "POST /api/v2/tokens", kind: "429" });

    const leaks = leakResponseFor(stack.rt);
    const incident = await leaks.start({ policies: policies.map((p) => p.id) }, "test");
    await until("every leak rotation settled", async () => (await leaks.report(incident)).settled, 50_000, 100);
    const report = await leaks.report(incident);
    expect(report.completed).toBe(37);
    expect(limited.count("POST /api/v2/tokens", 429)).toBe(1);
    expect(limited.isLive(leaked.value)).toBe(false);

    // When the limited rotation revoked its leaked token, the slow account's backlog was not done:
    // it went ahead of the rotations still waiting to start (spreadByScope queued it mid-way, so
    // about 18 were; its 1 s wait lets at most about 7 of them through one 150 ms slot).
    const revokedAt = (requests: { method: string; path: string; status: number; at: number }[]) => requests.filter((r) => r.method === "DELETE" && r.path.startsWith("/api/v2/tokens/") && r.status < 300).map((r) => r.at);
    const [limitedRevokedAt] = revokedAt(limited.requests);
    const slowRevoked = revokedAt(slow.requests);
    expect(slowRevoked).toHaveLength(36);
    expect(limitedRevokedAt).toBeDefined();
    const after = slowRevoked.filter((at) => at > limitedRevokedAt!).length;
    expect(after, "slow-account revocations after the limited one's").toBeGreaterThanOrEqual(5);
  });
});
