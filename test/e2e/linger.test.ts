/**
 * Lingering for confirmations: a job that reaches awaiting-confirmation waits in the worker for a
 * push confirmation (heard on the rotation's wake channel) before it parks. A confirmation heard
 * then ends the rotation in the same activation; one whose message is lost is still found through
 * the wake flag when the job parks. Real Redis, the LaunchDarkly fake and the API over HTTP.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "linger-consumer-token-abcdefghijklmnop";

describe("a rotation awaiting confirmation lingers before it parks", () => {
  let ld: LaunchDarklyFake;
  let stack: Stack;
  let old: { id: string; value: string };

  const start = async (lingerMs: number) => {
    ld = await startLaunchDarklyFake();
    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    old = ld.addToken({ name: "app-service" });
    stack = await startStack({
      confirmationLingerMs: lingerMs,
      env: { LD_ADMIN_TOKEN: admin.value },
      policies: [
        {
          id: "ld-linger",
          owner: "alice@example.com",
          provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
          schedule: { cron: "0 3 * * 1" },
          target: { secretId: "prod/ld-linger", region: REGION },
          consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
          confirmation: { timeout: "1h", onTimeout: "keep-old" },
        },
      ],
    });
    await stack.store.create!({ secretId: "prod/ld-linger", region: REGION }, old.value);
  };

  const rotateToAwaiting = async () => {
    const req = await stack.rt.rotations.enqueue({ policyId: "ld-linger", reason: "manual", actor: "test" });
    await until("awaiting-confirmation", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "awaiting-confirmation", 10_000, 5);
    return req;
  };

  beforeEach(() => {
    ld = undefined as unknown as LaunchDarklyFake;
    stack = undefined as unknown as Stack;
  });
  afterEach(async () => {
    await stack?.close();
    await ld?.close();
  });

  it("a push confirmation during the linger revokes the old token in the same activation: never parked", async () => {
    await start(20_000);
    const req = await rotateToAwaiting();
    const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
      body: JSON.stringify({ policyId: "ld-linger", consumerId: "app", versionId: req.rotationId }),
    });
    expect(res.status).toBe(200);
    // Well inside the 20 s linger: the confirmation was heard, not found at a re-check.
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 5_000, 10);
    expect(ld.isLive(old.value)).toBe(false);
    const job = await stack.rt.queue.getJob(req.jobId);
    // One activation: the job was not parked and promoted back.
    expect(job?.attemptsStarted).toBe(1);
    const history = (await stack.rt.audit.history({ policyId: "ld-linger", limit: 20 })).map((e) => `${e.step} ${e.outcome}`);
    expect(history).toEqual(expect.arrayContaining(["confirmation ok", "awaiting-confirmation ok", "revoking ok"]));
  });

  it("a confirmation whose message is lost is found through the wake flag when the job parks after the linger", async () => {
    await start(1_500);
    const req = await rotateToAwaiting();
    // The job subscribes to its wake channel, then reads the confirmations, then lingers: a
    // confirmation written before that read would end the rotation at once, without the flag.
    // Subscribed, and a moment for the read (the same activation, a few ms), well inside the linger.
    const channel = stack.rt.state.keys.wake(req.rotationId);
    await until("lingering", async () => Number(((await stack.rt.redis.pubsub("NUMSUB", channel)) as [string, number])[1]) > 0, 10_000, 5);
    await new Promise((r) => setTimeout(r, 250));
    // The confirmation and the wake flag, but no message on the wake channel.
    await stack.rt.state.consumers.confirmAndList(req.rotationId, { consumerId: "app", at: Date.now(), via: "push", versionId: req.rotationId });
    await stack.rt.redis.set(stack.rt.state.keys.wake(req.rotationId), "1", "EX", 3_600);
    // Long before the 30 s re-check: the park takes the flag and promotes the job at once.
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 10_000, 10);
    expect(ld.isLive(old.value)).toBe(false);
    const job = await stack.rt.queue.getJob(req.jobId);
    expect(job?.attemptsStarted).toBe(2);
  });
});
