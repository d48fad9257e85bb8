/**
 * The cut-over outage under faults: QStash tokens (rotate-token kills the old token at once) are
 * rotated again and again while 20 % of the requests to QStash and to AWS Secrets Manager answer
 * 500, 429 (the real headers) or time out. From the moment the fake replaced a token to the
 * moment AWSCURRENT holds the new one, every publisher fails: that time must stay ≤ 2 s at p99.
 * Before the fix a fault after the reset waited out the queue's back-off (5 s, 10 s, …).
 */
import { afterEach, describe, expect, it } from "vitest";
import { cutoverOutages, formatCutover } from "../../bench/chaos/cutover.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { QStashFake } from "../fakes/qstash.ts";
import { confirmVersion } from "../helpers/human.ts";
import { REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const PUBLISHER = "cutover-publisher-token-0123456789abcdef";
const LANES = 10;
const ROUNDS = 10;
const REQUEST_TIMEOUT_MS = 1_000;

describe("cut-over outage under 20 % faults", () => {
  const fakes: QStashFake[] = [];
  let stack: Stack | undefined;

  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });

  it("reset → AWSCURRENT ≤ 2 s at p99 with 5xx, 429 and timeouts on QStash and AWS", async () => {
    const policies: PolicyInput[] = [];
    const env: Record<string, string> = {};
    for (let i = 0; i < LANES; i++) {
      const fake = await new QStashFake({ injected429ResetSec: 1 }).start();
      fakes.push(fake);
      env[`UPSTASH_KEY_${i}`] = fake.apiKey;
      policies.push({
        id: `cut-${i}`,
        owner: "owner@example.com",
        provider: { kind: "qstash-token", baseUrl: fake.url, managementUrl: fake.url, email: fake.email, management: { env: `UPSTASH_KEY_${i}` }, userId: fake.userId() },
        target: { secretId: `prod/cut-${i}`, region: REGION },
        consumers: [{ id: "publisher", confirm: "push", tokenHash: tokenHash(PUBLISHER) }],
        acceptCutover: true,
      });
    }
    stack = await startStack({ policies, env, concurrency: LANES, requestTimeoutMs: REQUEST_TIMEOUT_MS });
    const s = stack;
    for (let i = 0; i < LANES; i++) await s.store.create!({ secretId: `prod/cut-${i}`, region: REGION }, fakes[i]!.token());

    const faults = { rate: 0.2, kinds: ["500", "429", "delay"] as ("500" | "429" | "delay")[], delayMs: REQUEST_TIMEOUT_MS * 2 + 500 };
    for (const f of [...fakes, s.emulator]) f.faults.random(faults);

    const ended: Record<string, number> = {};
    await Promise.all(
      policies.map(async (p) => {
        for (let k = 0; k < ROUNDS; k++) {
          const r = await s.rt.rotations.enqueue({ policyId: p.id, reason: "manual", actor: "test" });
          // A fault before the reset is retried by the queue's own back-off (5 s doubling), so a
          // rotation unlucky four times in a row takes 75 s; the deadline leaves room for six.
          let seen = "no record yet";
          const status = await until(`rotation ${k} of ${p.id}`, async () => {
            const rec = await s.rt.state.records.get(r.rotationId);
            const job = await s.rt.queue.getJob(rec?.jobId ?? r.rotationId);
            if (rec) seen = `${rec.status} at ${rec.step}, attempts ${job?.attemptsMade ?? "?"}, ${rec.message ?? "no message"}`;
            if (rec?.status === "awaiting-confirmation") {
              await confirmVersion(s, p.id, "publisher", r.rotationId, PUBLISHER);
              return undefined;
            }
            return rec && ["completed", "failed", "needs-attention", "skipped"].includes(rec.status) ? rec.status : undefined;
          }, 330_000, 100).catch((err: unknown) => {
            throw new Error(`${String(err)}; last seen: ${seen}`);
          });
          ended[status] = (ended[status] ?? 0) + 1;
        }
      }),
    );
    for (const f of [...fakes, s.emulator]) f.faults.clear();

    const figures = cutoverOutages(
      s.emulator,
      fakes.map((f, i) => ({ resets: f.rotationLog(), secretId: `prod/cut-${i}`, region: REGION })),
    );
    const summary = `${formatCutover(figures)}; outcomes ${JSON.stringify(ended)}; faults ${[...fakes, s.emulator].reduce((n, f) => n + f.requests.filter((q) => q.fault).length, 0)}`;
    process.stdout.write(`${summary}\n`);
    expect(ended.completed, summary).toBe(LANES * ROUNDS);
    expect(figures.neverCurrent, summary).toBe(0);
    expect(figures.outagesMs.length, summary).toBeGreaterThanOrEqual(LANES * ROUNDS);
    expect(figures.p99!, summary).toBeLessThanOrEqual(2_000);
  }, 900_000);
});
