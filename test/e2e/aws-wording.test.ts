/**
 * The AWS store decides from exception names and DescribeSecret, and names AWSCURRENT on every
 * read of the current value: LaunchDarkly rotations run end to end (real Redis, the real SDK, the
 * LaunchDarkly fake over HTTP) against an emulator that words every error message otherwise and
 * answers a read without a stage with a stale version. Before, the first "version missing" read
 * stopped every rotation with "create it first".
 */
import { afterEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { confirmVersion, statusOf } from "../helpers/human.ts";
import { REGION, type Stack, startStack } from "../helpers/stack.ts";

const CONSUMER = "aws-wording-consumer-token-0123456789abc";

describe("AWS store under other error wordings and a stale default read", () => {
  let ld: LaunchDarklyFake | undefined;
  let stack: Stack | undefined;

  afterEach(async () => {
    await stack?.close();
    await ld?.close();
    stack = undefined;
    ld = undefined;
  });

  it("two rotations in a row complete, each deleting the token that was current", async () => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    const managed = ld.addToken({ role: "writer", name: "svc" });
    const policy: PolicyInput = {
      id: "ld-wording",
      owner: "owner@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN" } },
      target: { secretId: "prod/ld-wording", region: REGION },
      consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
    };
    stack = await startStack({ policies: [policy], env: { LD_ADMIN: admin.value }, emulator: { messages: "other", staleDefault: true } });
    const ref = { secretId: "prod/ld-wording", region: REGION };
    await stack.store.create!(ref, managed.value);
    let previous = managed.value;
    for (let round = 0; round < 2; round++) {
      const req = await stack.rt.rotations.enqueue({ policyId: "ld-wording", reason: "manual", actor: "test" });
      await statusOf(stack, req.rotationId, ["awaiting-confirmation"]);
      const current = await stack.store.getCurrent(ref);
      expect(current?.versionId).toBe(req.rotationId);
      expect(await confirmVersion(stack, "ld-wording", "app", req.rotationId, CONSUMER)).toBe(200);
      await statusOf(stack, req.rotationId, ["completed"]);
      expect(ld.isLive(previous)).toBe(false);
      expect(ld.isLive(current!.value)).toBe(true);
      previous = current!.value;
    }
    // A read of a version that does not exist (a rotation reads one back only after a lost answer
    // or on a later run) gets the reworded ResourceNotFoundException and still means "missing".
    expect(await stack.store.getVersion(ref, "00000000-0000-4000-8000-000000000000")).toBeUndefined();
    expect(stack.emulator.calls.some((c) => c.operation === "GetSecretValue" && c.errorType === "ResourceNotFoundException")).toBe(true);
  });
});
