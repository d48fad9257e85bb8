/**
 * A human step done by its owner in a browser, without admin rights: the notification carries a
 * one-time link, the page behind it takes the new value in a form (headless Chromium, Debian's
 * chromium driven by playwright-core), rekey checks the value with the provider (the CrewAI fake)
 * and the rotation goes on. The link is stored only as a hash, works once, dies with the human
 * timeout, and a wrong link writes nothing. Screenshots are kept in test-artifacts/submit-link/.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium, type Page, type Request } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { CrewAiFake } from "../fakes/crewai.ts";
import { type Receiver, startReceiver, statusOf, WEBHOOK_KEY, WEBHOOK_KEY_ENV, webhookTarget } from "../helpers/human.ts";
import { dumpRedis, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const SHOTS = join(process.cwd(), "test-artifacts", "submit-link");
const CALLER_TOKEN = "link-caller-token-abcdefghijklmnopqrstu";

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

/**
 * Keys under the stack's prefix other than BullMQ's own (its workers write on their own schedule)
 * and the edge's per-address rate-limit counters (one per client address, whatever it asks).
 */
async function rekeyKeys(stack: Stack): Promise<string[]> {
  return (await stack.rt.redis.keys(`${stack.prefix}:*`)).filter((k) => !k.startsWith(`${stack.prefix}:bull`) && !k.startsWith(`${stack.prefix}:ratelimit:`)).sort();
}

async function submitUrlOf(receiver: Receiver, rotationId: string): Promise<string> {
  const asked = await receiver.waitFor("human.action-required", rotationId);
  if (asked.event !== "human.action-required" || !asked.submitUrl) throw new Error("the human step's notification carries no submit link");
  // The owner's instructions say it in words too.
  expect(asked.instructions).toContain(`one-time link (it works for one submission, until the human step times out): ${asked.submitUrl}`);
  return asked.submitUrl;
}

describe("one-time submit link for a human step", () => {
  let browser: Browser;
  let crew: CrewAiFake;
  let receiver: Receiver;
  let stack: Stack | undefined;

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
    await receiver?.close();
    await crew?.close();
  });

  async function openPage(): Promise<{ page: Page; requests: Request[] }> {
    const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
    const page = await context.newPage();
    const requests: Request[] = [];
    page.on("request", (r) => requests.push(r));
    return { page, requests };
  }

  it("the owner submits in a browser: wrong value refused with the reason, right value accepted, the link then dead", { timeout: 90_000 }, async () => {
    crew = await new CrewAiFake().start();
    receiver = await startReceiver();
    const policy = crewPolicy("crew-link", crew, receiver, { timeout: "1h", remindEvery: "30m" });
    stack = await startStack({ policies: [policy], env: { [WEBHOOK_KEY_ENV]: WEBHOOK_KEY }, submitLinks: true });
    const ref = { secretId: "prod/crew-link", region: REGION };
    const oldToken = crew.token;
    await stack.store.create!(ref, oldToken);

    const req = await stack.rt.rotations.enqueue({ policyId: "crew-link", reason: "manual", actor: "cli:test" });
    await statusOf(stack, req.rotationId, ["awaiting-human"]);
    const link = await submitUrlOf(receiver, req.rotationId);
    expect(link).toMatch(new RegExp(`^${stack.apiUrl}/submit/[A-Za-z0-9_-]{43}$`));
    const token = link.split("/").pop()!;

    // Stored only as a hash: the token is in no Redis key or value (job data included) and no log.
    const dump = await dumpRedis(stack.rt, stack.prefix);
    expect(dump).not.toContain(token);
    expect(stack.logs.text()).not.toContain(token);

    // Wrong links only read: nothing is written to Redis for them.
    const before = await rekeyKeys(stack);
    for (const wrong of [`${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`, "x".repeat(43), "short", "..%2f..%2fadmin"]) {
      expect((await fetch(`${stack.apiUrl}/submit/${wrong}`)).status).toBe(404);
      const post = await fetch(`${stack.apiUrl}/submit/${wrong}`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "value=abc" });
      expect(post.status).toBe(404);
    }
    expect(await rekeyKeys(stack)).toEqual(before);

    // A post from another site is refused before the value is looked at.
    const forged = await fetch(link, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: "http://attacker.example", "sec-fetch-site": "cross-site" }, body: "value=abc" });
    expect(forged.status).toBe(403);
    const json = await fetch(link, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ value: "abc" }) });
    expect(json.status).toBe(415);
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-human");

    const { page, requests } = await openPage();
    const first = await page.goto(link);
    expect(first?.status()).toBe(200);
    const headers = first!.headers();
    expect(headers["content-security-policy"]).toMatch(/default-src 'none'/);
    expect(headers["content-security-policy"]).toMatch(/form-action 'self'/);
    expect(headers["content-security-policy"]).toMatch(/frame-ancestors 'none'/);
    expect(headers["cache-control"]).toBe("no-store");
    expect(headers["referrer-policy"]).toBe("same-origin");
    await expect(page.locator("h1").textContent()).resolves.toBe("Submit the new credential");
    await expect(page.locator("main").textContent()).resolves.toContain("crew-link");
    await expect(page.locator("main").textContent()).resolves.toContain("Press Reset");
    expect(await page.locator("script, link, img, iframe").count()).toBe(0);
    await page.screenshot({ path: join(SHOTS, "01-form.png"), fullPage: true });

    // A wrong value: refused with the provider's reason, the form shown again, nothing changed.
    const wrongValue = "wrong-crew-token-0123456789abcdef";
    await page.fill("#value", wrongValue);
    const [refused] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    expect(refused?.status()).toBe(422);
    await expect(page.locator(".error").textContent()).resolves.toContain("Not accepted");
    await page.screenshot({ path: join(SHOTS, "02-refused.png"), fullPage: true });
    expect((await stack.rt.state.records.get(req.rotationId))?.status).toBe("awaiting-human");
    expect(await page.locator("#value").inputValue()).toBe("");

    // The owner presses Reset and submits the new token: accepted, the rotation goes on.
    const newToken = crew.resetToken();
    await page.fill("#value", newToken);
    const [accepted] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    expect(accepted?.status()).toBe(200);
    await expect(page.locator(".ok").textContent()).resolves.toContain(`stored as version ${req.rotationId}`);
    await page.screenshot({ path: join(SHOTS, "03-accepted.png"), fullPage: true });
    await statusOf(stack, req.rotationId, ["awaiting-confirmation"]);
    expect(await stack.store.getCurrent(ref)).toMatchObject({ versionId: req.rotationId, value: newToken });
    const history = await stack.rt.audit.history({ policyId: "crew-link", limit: 100 });
    expect(history.some((h) => h.step === "submit" && h.outcome === "ok" && h.actor === "submit-link:owner@example.com")).toBe(true);
    expect(history.some((h) => h.step === "submit" && h.outcome === "refused" && h.actor === "submit-link:owner@example.com")).toBe(true);

    // Every request the page made went to rekey's own origin, and no value was ever in a URL.
    const origin = new URL(stack.apiUrl).origin;
    expect(requests.length).toBeGreaterThanOrEqual(3);
    for (const r of requests) {
      expect(new URL(r.url()).origin).toBe(origin);
      expect(r.url()).not.toContain(wrongValue);
      expect(r.url()).not.toContain(newToken);
    }
    expect(requests.filter((r) => r.method() === "POST").map((r) => r.postData()?.startsWith("value="))).toEqual([true, true]);

    // Used once: the link no longer works, in the browser or by hand.
    const again = await page.goto(link);
    expect(again?.status()).toBe(404);
    await expect(page.locator("h1").textContent()).resolves.toBe("Link not valid");
    await page.screenshot({ path: join(SHOTS, "04-used.png"), fullPage: true });
    const replay = await fetch(link, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `value=${encodeURIComponent(newToken)}` });
    expect(replay.status).toBe(404);
    expect((await rekeyKeys(stack)).filter((k) => k.includes(":submit-link"))).toEqual([]);
    await page.context().close();

    // No value anywhere it must not be.
    const after = await dumpRedis(stack.rt, stack.prefix);
    for (const secret of [oldToken, newToken, wrongValue]) {
      expect(after).not.toContain(secret);
      expect(stack.logs.text()).not.toContain(secret);
    }
  });

  it("two submissions at once through the same link: exactly one is accepted", { timeout: 60_000 }, async () => {
    crew = await new CrewAiFake().start();
    receiver = await startReceiver();
    const policy = crewPolicy("crew-race", crew, receiver, { timeout: "1h", remindEvery: "30m" });
    stack = await startStack({ policies: [policy], env: { [WEBHOOK_KEY_ENV]: WEBHOOK_KEY }, submitLinks: true });
    await stack.store.create!({ secretId: "prod/crew-race", region: REGION }, crew.token);
    const req = await stack.rt.rotations.enqueue({ policyId: "crew-race", reason: "manual", actor: "cli:test" });
    const link = await submitUrlOf(receiver, req.rotationId);
    const value = crew.resetToken();
    const post = () => fetch(link, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `value=${encodeURIComponent(value)}` }).then((r) => r.status);
    const statuses = await Promise.all([post(), post(), post()]);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.every((s) => s === 200 || s === 409 || s === 404)).toBe(true);
    const submits = (await stack.rt.audit.history({ policyId: "crew-race", limit: 100 })).filter((h) => h.step === "submit" && h.outcome === "ok");
    expect(submits).toHaveLength(1);
  });

  it("the link expires with the human timeout", { timeout: 60_000 }, async () => {
    crew = await new CrewAiFake().start();
    receiver = await startReceiver();
    const policy = crewPolicy("crew-short", crew, receiver, { timeout: "4s", remindEvery: "1h" });
    stack = await startStack({ policies: [policy], env: { [WEBHOOK_KEY_ENV]: WEBHOOK_KEY }, submitLinks: true });
    await stack.store.create!({ secretId: "prod/crew-short", region: REGION }, crew.token);
    const req = await stack.rt.rotations.enqueue({ policyId: "crew-short", reason: "manual", actor: "cli:test" });
    const link = await submitUrlOf(receiver, req.rotationId);
    const deadline = (await stack.rt.state.records.get(req.rotationId))!.humanDeadline!;
    expect(deadline).toBeGreaterThan(Date.now());
    expect((await fetch(link)).status).toBe(200);

    await until("the deadline passed", () => Date.now() > deadline + 200, 10_000, 100);
    const { page } = await openPage();
    const dead = await page.goto(link);
    expect(dead?.status()).toBe(404);
    await page.screenshot({ path: join(SHOTS, "05-expired.png"), fullPage: true });
    await page.context().close();
    const post = await fetch(link, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `value=${encodeURIComponent(crew.resetToken())}` });
    expect(post.status).toBe(404);
    // Redis let the hash go at the deadline too.
    expect((await rekeyKeys(stack)).filter((k) => k.includes(":submit-link:"))).toEqual([]);
    expect(await statusOf(stack, req.rotationId, ["needs-attention"])).toBe("needs-attention");
  });
});
