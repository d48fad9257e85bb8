import { Writable } from "node:stream";
import { Queue, Worker, type JobsOptions } from "bullmq";
import { type Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { EVENT_TYPES, NotificationEvent } from "../../src/notify/events.ts";
import { createNotifyProcessor, enqueueNotification, notifyJobOptions, type NotificationInput } from "../../src/notify/outbox.ts";
import { slackMessage } from "../../src/notify/slack.ts";
import { verifySignature } from "../../src/notify/webhook.ts";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { createWebhookVerifier } from "../../src/consumers/webhook-verifier.ts";
import { type CredentialRef, Policy, type PolicyInput } from "../../src/policy/schema.ts";
import { HttpFake, type FakeReply, type FakeRequest } from "../fakes/http-fake.ts";
import { connect, deleteKeys, testPrefix } from "../helpers/redis.ts";

const SIGNING_KEY = "whsec-test-signing-key-9f8e7d6c5b4a";
const SLACK_PATH = "/services/T0001/B0001/slack-secret-path-abc123";
const FAST: JobsOptions = { ...notifyJobOptions, backoff: { type: "fixed", delay: 20 } };

let redis: Redis;
let workerConn: Redis;
let prefix: string;
let queue: Queue;
let worker: Worker | undefined;
let receiver: HttpFake;
let received: FakeRequest[];
let reply: (req: FakeRequest) => FakeReply;
let logLines: string[];
const T = Date.now();

beforeEach(async () => {
  redis = connect();
  workerConn = connect();
  prefix = testPrefix("notify");
  queue = new Queue("notify", { connection: redis, prefix });
  received = [];
  logLines = [];
  reply = () => ({ status: 200, body: "ok" });
  receiver = await new HttpFake(
    (req) => {
      received.push(req);
      return reply(req);
    },
    { rateLimited: () => ({ status: 429, headers: { "retry-after": "1" }, body: { message: "slow down" } }) },
  ).start();
});

afterEach(async () => {
  await worker?.close();
  worker = undefined;
  await queue.close();
  await receiver.close();
  await deleteKeys(redis, prefix);
  redis.disconnect();
  workerConn.disconnect();
});

function startWorker(): void {
  const env: Record<string, string> = { REKEY_HOOK_KEY: SIGNING_KEY, SLACK_URL: `${receiver.url}${SLACK_PATH}` };
  const log = createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString("utf8"));
        cb();
      },
    }),
  });
  const resolve = async (ref: CredentialRef) => {
    const v = "env" in ref ? env[ref.env] : undefined;
    if (v === undefined) throw new Error("no such credential");
    return v;
  };
  worker = new Worker("notify", createNotifyProcessor({ resolve, now: () => T, log }), { connection: workerConn, prefix, concurrency: 1 });
}

function policy(notify: PolicyInput["notify"]): Policy {
  return Policy.parse({
    id: "billing-ld",
    owner: "owner@example.com",
    provider: { kind: "launchdarkly", management: { env: "LD_ADMIN_TOKEN" } },
    target: { secretId: "prod/billing/launchdarkly" },
    notify,
  });
}

const webhookTarget = () => ({ kind: "webhook" as const, url: `${receiver.url}/hooks/rekey`, signingKey: { env: "REKEY_HOOK_KEY" } });
const slackTarget = { kind: "slack" as const, webhook: { env: "SLACK_URL" } };

const completed: NotificationInput = {
  type: "rotation.completed",
  rotationId: "5f0c1a9e-3b7d-4c2e-9a61-0d8e2f4b7c13",
  policyId: "billing-ld",
  reason: "scheduled",
  message: "billing-ld: rotation completed; old token deleted",
  versionId: "5f0c1a9e-3b7d-4c2e-9a61-0d8e2f4b7c13",
};

async function settle(jobId: string): Promise<"completed" | "failed"> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const state = await queue.getJobState(jobId);
    if (state === "completed" || state === "failed") return state;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${state}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("webhook notifications", () => {
  it("POSTs the event with a signature a receiver can verify", async () => {
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([webhookTarget()]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("completed");

    expect(received).toHaveLength(1);
    const req = received[0]!;
    expect(req.method).toBe("POST");
    expect(req.path).toBe("/hooks/rekey");
    expect(req.headers["x-rekey-event"]).toBe("rotation.completed");
    expect(req.headers["x-rekey-timestamp"]).toBe(String(Math.floor(T / 1000)));
    expect(req.headers["x-rekey-delivery"]).toBe(jobId);
    expect(req.headers["x-rekey-signature"]).toMatch(/^sha256=[0-9a-f]{64}$/);

    const event = NotificationEvent.parse(req.json);
    expect(event).toMatchObject({
      schemaVersion: 1,
      event: "rotation.completed",
      rotationId: completed.rotationId,
      policyId: "billing-ld",
      provider: "launchdarkly",
      secretId: "prod/billing/launchdarkly",
      versionId: completed.versionId,
      reason: "scheduled",
      at: new Date(T).toISOString(),
    });

    expect(verifySignature(req.text, req.headers, SIGNING_KEY, T)).toBe(true);
    expect(verifySignature(req.text.replace("billing-ld", "billing-lx"), req.headers, SIGNING_KEY, T)).toBe(false);
    expect(verifySignature(req.text, req.headers, "another-key", T)).toBe(false);
    expect(verifySignature(req.text, req.headers, SIGNING_KEY, T + 301_000)).toBe(false);
    expect(verifySignature(req.text, { ...req.headers, "x-rekey-timestamp": String(Math.floor(T / 1000) + 1) }, SIGNING_KEY, T)).toBe(false);
    expect(verifySignature(req.text, new Headers(req.headers as Record<string, string>), SIGNING_KEY, T + 299_000)).toBe(true);
  });

  it("signs in the Standard Webhooks format, which the standardwebhooks library and rekey/consumer verify", async () => {
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([webhookTarget()]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("completed");
    const req = received[0]!;
    expect(req.headers["webhook-id"]).toBe(jobId);
    expect(req.headers["webhook-timestamp"]).toBe(String(Math.floor(T / 1000)));
    expect(req.headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    const headers = { "webhook-id": req.headers["webhook-id"] as string, "webhook-timestamp": req.headers["webhook-timestamp"] as string, "webhook-signature": req.headers["webhook-signature"] as string };
    // The reference library, keyed with the raw bytes of a key that is not in whsec_ form.
    const reference = new Webhook(new Uint8Array(Buffer.from(SIGNING_KEY, "utf8")), { format: "raw" });
    expect(reference.verify(req.text, headers)).toMatchObject({ event: "rotation.completed", policyId: "billing-ld" });
    expect(() => reference.verify(req.text.replace("billing-ld", "billing-lx"), headers)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(new Uint8Array(Buffer.from("another-key")), { format: "raw" }).verify(req.text, headers)).toThrow(WebhookVerificationError);

    const verifier = createWebhookVerifier({ signingKey: SIGNING_KEY, now: () => T });
    expect(verifier.verify(req.text, req.headers).rotationId).toBe(completed.rotationId);
    // The same delivery again is a replay.
    expect(() => verifier.verify(req.text, req.headers)).toThrow(expect.objectContaining({ reason: "replayed", status: 409 }));
  });

  it("signs with a whsec_ key as Standard Webhooks libraries in any language decode it", async () => {
    const key = `whsec_${Buffer.from("0123456789abcdef0123456789abcdef").toString("base64")}`;
    const env: Record<string, string> = { WHSEC_KEY: key };
    worker = new Worker("notify", createNotifyProcessor({ resolve: async (ref) => ("env" in ref ? env[ref.env] ?? "" : ""), now: () => T, log: createLogger({ level: "silent" }) }), { connection: workerConn, prefix, concurrency: 1 });
    const [jobId] = await enqueueNotification(queue, policy([{ ...webhookTarget(), signingKey: { env: "WHSEC_KEY" } }]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("completed");
    const req = received[0]!;
    expect(new Webhook(key).verify(req.text, req.headers as Record<string, string>)).toMatchObject({ event: "rotation.completed" });
  });

  it("a whsec_ key that is not base64 fails the delivery at once, naming the target and not the key", async () => {
    const env: Record<string, string> = { BAD_KEY: "whsec_not*base64!" };
    worker = new Worker("notify", createNotifyProcessor({ resolve: async (ref) => ("env" in ref ? env[ref.env] ?? "" : ""), now: () => T, log: createLogger({ level: "silent" }) }), { connection: workerConn, prefix, concurrency: 1 });
    const [jobId] = await enqueueNotification(queue, policy([{ ...webhookTarget(), signingKey: { env: "BAD_KEY" } }]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("failed");
    const job = await queue.getJob(jobId!);
    expect(job!.attemptsMade).toBe(1);
    expect(job!.failedReason).toMatch(/webhook http:\/\/127\.0\.0\.1:\d+\/hooks\/rekey of policy billing-ld: .*not base64/);
    expect(job!.failedReason).not.toContain("not*base64!");
    expect(received).toHaveLength(0);
  });

  it("retries a 500 and delivers once", async () => {
    receiver.faults.inject({ route: "POST /hooks/rekey", kind: "500" });
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([webhookTarget()]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("completed");
    expect(receiver.count("POST /hooks/rekey", 500)).toBe(1);
    expect(receiver.count("POST /hooks/rekey", 200)).toBe(1);
    expect(receiver.count("POST /hooks/rekey")).toBe(2);
  });

  it("waits out a 429 without using an attempt", async () => {
    receiver.faults.inject({ route: "POST /hooks/rekey", kind: "429" });
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([webhookTarget()]), completed, () => T, { ...FAST, attempts: 1 });
    expect(await settle(jobId!)).toBe("completed");
    expect(receiver.count("POST /hooks/rekey", 429)).toBe(1);
    expect(receiver.count("POST /hooks/rekey", 200)).toBe(1);
  });

  it("does not retry a 400 and says why", async () => {
    reply = () => ({ status: 400, body: { error: "unknown event" } });
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([webhookTarget()]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("failed");
    const job = await queue.getJob(jobId!);
    expect(job?.attemptsMade).toBe(1);
    expect(job?.failedReason).toContain(`webhook ${receiver.url}/hooks/rekey answered 400`);
    expect(job?.failedReason).toContain("not retried");
    expect(received).toHaveLength(1);
  });

  it("the same step enqueued twice (a re-run after a crash) is delivered once", async () => {
    startWorker();
    const p = policy([webhookTarget()]);
    const [a] = await enqueueNotification(queue, p, completed, () => T, FAST);
    const [b] = await enqueueNotification(queue, p, completed, () => T + 5_000, FAST);
    expect(b).toBe(a);
    expect(await settle(a!)).toBe("completed");
    expect(received).toHaveLength(1);
  });
});

describe("Slack notifications", () => {
  it("sends a Slack message with text and blocks", async () => {
    startWorker();
    const input: NotificationInput = {
      type: "human.action-required",
      rotationId: completed.rotationId,
      policyId: "billing-ld",
      reason: "scheduled",
      message: "owner@example.com: a new credential is needed for billing-ld",
      instructions: "Open Account settings, regenerate the token, then run `rekey submit billing-ld`.",
      link: "https://app.snyk.io/account",
    };
    const [jobId] = await enqueueNotification(queue, policy([slackTarget]), input, () => T, FAST);
    expect(await settle(jobId!)).toBe("completed");
    expect(received).toHaveLength(1);
    const req = received[0]!;
    expect(req.path).toBe(SLACK_PATH);
    expect(req.headers["content-type"]).toBe("application/json");
    const body = req.json as { text: unknown; blocks: { type: string; elements?: { url?: string }[]; text?: { text: string } }[] };
    expect(typeof body.text).toBe("string");
    expect(body.text).toContain("billing-ld");
    expect(body.blocks[0]?.type).toBe("header");
    expect(body.blocks.every((b) => ["header", "section", "actions", "context"].includes(b.type))).toBe(true);
    expect(body.blocks.find((b) => b.type === "actions")?.elements?.[0]?.url).toBe("https://app.snyk.io/account");
    expect(JSON.stringify(body.blocks)).toContain("regenerate the token");
  });

  it("renders every event type", () => {
    for (const type of EVENT_TYPES) {
      const event = NotificationEvent.parse({
        schemaVersion: 1,
        event: type,
        rotationId: "r1",
        policyId: "billing-ld",
        provider: "snyk-pat",
        secretId: "prod/<snyk>",
        reason: "leak",
        message: "a & b",
        at: new Date(T).toISOString(),
      });
      const msg = slackMessage(event);
      expect(msg.text).toContain("billing-ld");
      expect(msg.blocks.length).toBeGreaterThanOrEqual(3);
      expect(JSON.stringify(msg.blocks)).toContain("prod/&lt;snyk&gt;");
    }
    const leak = slackMessage(NotificationEvent.parse({ schemaVersion: 1, event: "rotation.leak", rotationId: "r1", policyId: "p", provider: "snyk-pat", secretId: "s", reason: "leak", message: "m", at: new Date(T).toISOString(), consumers: ["api"] }));
    expect(leak.text).toContain("reload now");
    expect(JSON.stringify(leak.blocks)).toContain("`api`");
  });

  it("a Slack 4xx fails without naming the webhook URL", async () => {
    reply = () => ({ status: 404, body: "no_service" });
    startWorker();
    const [jobId] = await enqueueNotification(queue, policy([slackTarget]), completed, () => T, FAST);
    expect(await settle(jobId!)).toBe("failed");
    const job = await queue.getJob(jobId!);
    expect(job?.failedReason).toContain("slack (target 0) answered 404 (no_service)");
    expect(job?.failedReason).not.toContain("slack-secret-path");
  });
});

describe("no secret in the outbox", () => {
  it("job data, Redis and logs hold references, never the signing key or the Slack URL", async () => {
    startWorker();
    const ids = await enqueueNotification(queue, policy([webhookTarget(), slackTarget]), { ...completed, type: "rotation.awaiting-confirmation", consumers: ["checkout-api"] }, () => T, FAST);
    expect(ids).toHaveLength(2);
    for (const id of ids) expect(await settle(id)).toBe("completed");
    expect(received).toHaveLength(2);

    for (const id of ids) {
      const job = await queue.getJob(id);
      const data = JSON.stringify(job?.data);
      expect(data).toMatch(/"env":"(REKEY_HOOK_KEY|SLACK_URL)"/);
      expect(data).not.toContain(SIGNING_KEY);
      expect(data).not.toContain("slack-secret-path");
    }
    let cursor = "0";
    const dump: string[] = [];
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      for (const key of keys) {
        dump.push(key);
        if ((await redis.type(key)) === "hash") dump.push(JSON.stringify(await redis.hgetall(key)));
      }
    } while (cursor !== "0");
    const all = dump.join("\n");
    expect(all).toContain("checkout-api");
    expect(all).not.toContain(SIGNING_KEY);
    expect(all).not.toContain("slack-secret-path");
    const logs = logLines.join("");
    expect(logs).toContain("notification delivered");
    expect(logs).not.toContain(SIGNING_KEY);
    expect(logs).not.toContain("slack-secret-path");
  });

  it("an event refuses fields it does not know, such as a value", () => {
    const base = { schemaVersion: 1, event: "rotation.started", rotationId: "r", policyId: "p", provider: "launchdarkly", secretId: "s", reason: "manual", message: "m", at: new Date(T).toISOString() };
    expect(NotificationEvent.safeParse(base).success).toBe(true);
    expect(NotificationEvent.safeParse({ ...base, value: "api-0123456789" }).success).toBe(false);
  });
});
