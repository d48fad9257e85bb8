/**
 * `rekey leak` by value while the secret store is down: the value cannot be ruled out, so the
 * answer is an error that says how many policies could not be checked and why, never "matches no
 * credential rekey manages" (which would send an incident responder away from a live leak).
 */
import { afterEach, describe, expect, it } from "vitest";
import { runLeak } from "../../src/cli/commands/leak.ts";
import { startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { ADMIN_TOKEN, REGION, startStack } from "../helpers/stack.ts";
import { captureIo } from "../helpers/human.ts";

const io = (stdin: string) => captureIo(stdin);

describe("leak by value with the store down", () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.reverse()) await c();
    closers.length = 0;
  });

  it("exits 1 with 'could not check N of M policies: <why>', queues nothing, never says 'not ours'", async () => {
    const ld = await startLaunchDarklyFake();
    closers.push(() => ld.close());
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    const tokens = [0, 1, 2].map((i) => ld.addToken({ name: `svc-${i}` }));
    const policies = [0, 1, 2].map((i) => ({
      id: `ld-d${i}`,
      owner: "alice@example.com",
      provider: { kind: "launchdarkly" as const, baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      target: { secretId: `prod/ld-d${i}`, region: REGION },
    }));
    const stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value }, worker: false });
    closers.push(() => stack.close());
    for (const i of [0, 1, 2]) await stack.store.create!({ secretId: `prod/ld-d${i}`, region: REGION }, tokens[i]!.value);

    // The AWS endpoint goes down (connection refused).
    await stack.emulator.close();

    const leaked = io(`${tokens[1]!.value}\n`);
    expect(await runLeak(stack.rt, leaked, { valueStdin: true, pollMs: 50, timeout: "5s" })).toBe(1);
    expect(leaked.err).toMatch(/^rekey leak: could not check 3 of 3 policies: .+/m);
    // The reason is the store's own (connection refused), and the policies are named.
    expect(leaked.err).toMatch(/ECONNREFUSED|connect/i);
    expect(leaked.err).toContain("ld-d0");
    expect(leaked.err).not.toContain("matches no credential");
    expect(leaked.err).not.toContain("rotate it by hand");
    expect(leaked.out).toBe("");
    expect(leaked.out + leaked.err).not.toContain(tokens[1]!.value);
    // Nothing was queued.
    expect(Object.values(await stack.rt.queue.getJobCounts("waiting", "prioritized", "delayed", "active")).every((n) => n === 0)).toBe(true);

    // The API says the same, as a 503 the caller may retry.
    const res = await fetch(`${stack.apiUrl}/v1/leaks`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ value: tokens[2]!.value }),
    });
    const body = (await res.json()) as { error: string };
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBeTruthy();
    expect(body.error).toMatch(/^could not check 3 of 3 policies: /);
    expect(body.error).not.toContain(tokens[2]!.value);
  });
});
