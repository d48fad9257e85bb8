/**
 * A CrewAI AMP crew's bearer token rotated end to end on real Redis, the real AWS SDK against the
 * emulator and the CrewAI fake over HTTP. Nothing resets it by API, so this is the human step as
 * an owner lives it: instructions and link by webhook, callers warned of the cut-over first, the
 * owner pressing Reset and piping the token into `rekey submit`, rekey checking it with
 * GET /inputs. Also the human step's clock: reminders while it waits without holding a worker
 * slot, and the timeout that ends it as needs-attention.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { CrewAiFake } from "../fakes/crewai.ts";
import { apiSubmit, confirmVersion, type Receiver, runCli, startReceiver, statusOf, WEBHOOK_KEY, WEBHOOK_KEY_ENV, webhookTarget } from "../helpers/human.ts";
import { ADMIN_TOKEN, dumpRedis, REGION, type Stack, startStack } from "../helpers/stack.ts";

const CALLER_TOKEN = "crew-caller-token-abcdefghijklmnopqrstu";

function crewPolicy(id: string, crew: CrewAiFake, receiver: Receiver, human: PolicyInput["human"]): PolicyInput {
  return {
    id,
    owner: "owner@example.com",
    provider: { kind: "crewai-crew", crewUrl: crew.url },
    target: { secretId: `prod/${id}`, region: REGION },
    consumers: [{ id: "caller", confirm: "push", tokenHash: tokenHash(CALLER_TOKEN) }],
    acceptCutover: true,
    notify: [webhookTarget(receiver)],
    human,
  };
}

describe("CrewAI crew token rotation end to end", () => {
  let crew: CrewAiFake;
  let receiver: Receiver;
  let stack: Stack | undefined;

  beforeEach(async () => {
    crew = await new CrewAiFake().start();
    receiver = await startReceiver();
  });

  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await receiver.close();
    await crew.close();
  });

  it("instructions, a cut-over warning, refusals that change nothing, then the reset token verified with GET /inputs, stored and announced", async () => {
    const policy = crewPolicy("crew", crew, receiver, { timeout: "1h", remindEvery: "30m" });
    stack = await startStack({ policies: [policy], env: { [WEBHOOK_KEY_ENV]: WEBHOOK_KEY } });
    const ref = { secretId: "prod/crew", region: REGION };
    const oldToken = crew.token;
    await stack.store.create!(ref, oldToken);

    const req = await stack.rt.rotations.enqueue({ policyId: "crew", reason: "manual", actor: "cli:test" });
    await statusOf(stack, req.rotationId, ["awaiting-human"]);
    const asked = await receiver.waitFor("human.action-required", req.rotationId);
    if (asked.event !== "human.action-required") throw new Error("unexpected event");
    expect(asked.link).toBe("https://app.crewai.com/crewai_plus/deployments");
    expect(asked.instructions).toContain("Press Reset on the crew's Bearer Token");
    expect(asked.instructions).toContain(`rekey submit ${req.rotationId}`);
    expect(asked.message).toContain("submit it within 1h");
    await receiver.waitFor("rotation.cutover-pending", req.rotationId);
    expect(crew.isLive(oldToken)).toBe(true);

    const auditBefore = (await stack.rt.audit.history({ policyId: "crew", limit: 100 })).length;
    const versionsBefore = await stack.store.listVersions(ref);

    // A value on the command line is refused before anything is read or changed.
    const argv = await runCli(stack, [policy], ["submit", req.rotationId, oldToken]);
    expect(argv.code).toBe(2);
    expect((await stack.rt.audit.history({ policyId: "crew", limit: 100 })).length).toBe(auditBefore);

    // A wrong token and the current one are refused with their reasons.
    const wrong = await runCli(stack, [policy], ["submit", req.rotationId], "0123456789abcdef\n");
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("refused the submitted token");
    const same = await runCli(stack, [policy], ["submit", req.rotationId], oldToken);
    expect(same.code).toBe(1);
    expect(same.stderr).toContain("that is the current value");
    // Nothing changed: still waiting, no new version, the old token current.
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-human");
    expect(await stack.store.listVersions(ref)).toEqual(versionsBefore);
    expect((await stack.store.getCurrent(ref))?.value).toBe(oldToken);

    // The owner presses Reset and pipes the new token in.
    const resetAt = Date.now();
    const newToken = crew.resetToken();
    const ok = await runCli(stack, [policy], ["submit", req.rotationId], `${newToken}\n`);
    expect(ok.code).toBe(0);
    expect(crew.requests.filter((r) => r.method === "GET" && r.path === "/inputs" && r.status === 200 && r.at >= resetAt).length).toBeGreaterThanOrEqual(1);

    await statusOf(stack, req.rotationId, ["awaiting-confirmation"]);
    expect(await stack.store.getCurrent(ref)).toMatchObject({ versionId: req.rotationId, value: newToken });
    const told = await receiver.waitFor("rotation.awaiting-confirmation", req.rotationId);
    if (told.event === "rotation.awaiting-confirmation") expect(told.consumers).toEqual(["caller"]);
    // The warning came before the owner acted.
    expect(receiver.events.filter((e) => e.event.event === "rotation.cutover-pending").map((e) => e.receivedAt <= resetAt)).toEqual([true]);

    expect(await confirmVersion(stack, "crew", "caller", req.rotationId, CALLER_TOKEN)).toBe(200);
    await statusOf(stack, req.rotationId, ["completed"]);
    expect(crew.resetCount).toBe(1);

    const dump = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [oldToken, newToken]) {
      expect(dump).not.toContain(secret);
      expect(stack.logs.text()).not.toContain(secret);
      expect(receiver.raw()).not.toContain(secret);
    }
  });

  it("reminds the owner while waiting without holding a worker slot, and ends as needs-attention when the human timeout passes", async () => {
    const slow = crewPolicy("crew-slow", crew, receiver, { timeout: "5s", remindEvery: "1s" });
    const other = crewPolicy("crew-other", crew, receiver, { timeout: "1h", remindEvery: "30m" });
    // One worker slot: if a waiting human step held it, the second rotation could not start.
    stack = await startStack({ policies: [slow, other], concurrency: 1, env: { [WEBHOOK_KEY_ENV]: WEBHOOK_KEY } });
    const ref = { secretId: "prod/crew-slow", region: REGION };
    await stack.store.create!(ref, crew.token);
    await stack.store.create!({ secretId: "prod/crew-other", region: REGION }, crew.token);

    const a = await stack.rt.rotations.enqueue({ policyId: "crew-slow", reason: "manual", actor: "cli:test" });
    await statusOf(stack, a.rotationId, ["awaiting-human"]);
    const b = await stack.rt.rotations.enqueue({ policyId: "crew-other", reason: "manual", actor: "cli:test" });
    await statusOf(stack, b.rotationId, ["awaiting-human"]);

    const reminder = await receiver.waitFor("human.reminder", a.rotationId);
    if (reminder.event !== "human.reminder") throw new Error("unexpected event");
    expect(reminder.instructions).toContain(`rekey submit ${a.rotationId}`);
    expect(reminder.link).toBe("https://app.crewai.com/crewai_plus/deployments");

    expect(await statusOf(stack, a.rotationId, ["needs-attention", "failed", "completed"])).toBe("needs-attention");
    const alert = await receiver.waitFor("rotation.needs-attention", a.rotationId);
    expect(alert.message).toContain("no new value was submitted within 5s");
    // Reminders every second until the 5 s deadline: at least one, never more than four.
    const reminders = receiver.of("human.reminder", a.rotationId).length;
    expect(reminders).toBeGreaterThanOrEqual(1);
    expect(reminders).toBeLessThanOrEqual(4);
    const history = (await stack.rt.audit.history({ policyId: "crew-slow", limit: 100 })).map((h) => `${h.step}:${h.outcome}`);
    expect(history).toContain("awaiting-human:reminded");
    expect(history).toContain("awaiting-human:failed");

    // The policy is free again, nothing was stored, and a late value is refused.
    expect(await stack.rt.state.locks.inFlight("crew-slow")).toBeUndefined();
    expect(Object.values(await stack.store.stages(ref)).flat()).not.toContain("AWSPENDING");
    const late = await apiSubmit(stack, a.rotationId, crew.resetToken(), ADMIN_TOKEN);
    expect(late.status).toBe(409);

    // The other rotation is still waiting for its owner, unreminded and not timed out.
    expect((await stack.rt.state.records.get(b.rotationId))?.status).toBe("awaiting-human");
    expect(await stack.rt.state.locks.inFlight("crew-other")).toBe(b.rotationId);
    expect(receiver.of("human.reminder", b.rotationId)).toEqual([]);
  });
});
