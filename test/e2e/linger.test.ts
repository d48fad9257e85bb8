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
    // The promotion names the worker process's wake channel on the record, and the process is
    // subscribed to it; a moment more for the run to begin its linger (the same activation, a few
    // ms), well inside the linger.
    const rec = await stack.rt.state.records.get(req.rotationId);
    expect(rec?.listener).toBe(stack.rt.state.wake.listenerId);
    const channel = stack.rt.state.keys.wakeChannel(rec!.listener!);
    expect(Number(((await stack.rt.redis.pubsub("NUMSUB", channel)) as [string, number])[1])).toBe(1);
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

  const confirmOverHttp = async (rotationId: string) => {
    const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
      body: JSON.stringify({ policyId: "ld-linger", consumerId: "app", versionId: rotationId }),
    });
    expect(res.status).toBe(200);
  };

  const parked = async (req: { rotationId: string; jobId: string }) => {
    await until("parked", async () => (await (await stack.rt.queue.getJob(req.jobId))?.isDelayed()) === true, 10_000, 10);
    // The park took this process's wake channel off the record: wakes go to the flag from now on.
    expect((await stack.rt.state.records.get(req.rotationId))?.listener).toBeUndefined();
  };

  it("a wake that reaches the worker process after its run stopped listening still resumes the parked job at once", async () => {
    await start(300);
    const req = await rotateToAwaiting();
    await parked(req);
    // As if the confirmation crossed the park: the record still names this process's channel, so
    // the API's wake is heard by the process (the API promotes nothing), not by the run.
    await stack.rt.redis.hset(stack.rt.state.keys.rotation(req.rotationId), "listener", stack.rt.state.wake.listenerId);
    await confirmOverHttp(req.rotationId);
    // Long before the 30 s re-check: the process raised the flag and promoted the job itself.
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 10_000, 10);
    expect(ld.isLive(old.value)).toBe(false);
    expect((await stack.rt.queue.getJob(req.jobId))?.attemptsStarted).toBe(2);
  });

  it("a record naming the channel of a worker process that is gone: the wake reaches nobody, so the API promotes the parked job", async () => {
    await start(300);
    const req = await rotateToAwaiting();
    await parked(req);
    await stack.rt.redis.hset(stack.rt.state.keys.rotation(req.rotationId), "listener", "00000000-0000-4000-8000-000000000000");
    await confirmOverHttp(req.rotationId);
    await until("completed", async () => (await stack.rt.state.records.get(req.rotationId))?.status === "completed", 10_000, 10);
    expect(ld.isLive(old.value)).toBe(false);
    expect((await stack.rt.queue.getJob(req.jobId))?.attemptsStarted).toBe(2);
  });
});
