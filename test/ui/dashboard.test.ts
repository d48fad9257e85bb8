/**
 * The dashboard in a real browser (Debian's headless Chromium driven by playwright-core) against
 * a live rekey: real Redis, the AWS emulator, the LaunchDarkly fake. The pages load with no
 * request leaving rekey, show what `rekey status --json` says, escape hostile text, and the two
 * operator actions work through their confirmation step. Screenshots are kept in
 * test-artifacts/dashboard/ (REKEY_DOCS_SCREENSHOT=<path> also writes the overview there).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { PassThrough } from "node:stream";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { offboardingFor } from "../../src/offboarding/offboarding.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import type { PolicyStatus } from "../../src/rotation/status.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { redisUrl } from "../helpers/redis.ts";
import { ADMIN_TOKEN, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"];
const ARTIFACTS = join(process.cwd(), "test-artifacts", "dashboard");
const CONSUMER = "dashboard-consumer-token-0123456789";

function ld(fake: LaunchDarklyFake, id: string, extra: Partial<PolicyInput> = {}): PolicyInput {
  return {
    id,
    owner: `${id.split("-")[0]}-team@example.com`,
    provider: { kind: "launchdarkly", baseUrl: fake.url, management: { env: "LD_ADMIN_TOKEN" } },
    schedule: { cron: "0 3 * * 1", timezone: "Europe/Berlin" },
    target: { secretId: `prod/${id}`, region: REGION },
    consumers: [],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
    ...extra,
  };
}

describe("the dashboard in Chromium", () => {
  let fake: LaunchDarklyFake;
  let stack: Stack;
  let browser: Browser;
  let dir: string;
  const tokens = new Map<string, { id: string; value: string }>();
  const rotations = new Map<string, string>();
  /** Requests the browser made to anything but rekey. */
  const outside: string[] = [];

  async function confirmPush(policyId: string, consumerId: string, versionId: string): Promise<void> {
    const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER}` },
      body: JSON.stringify({ policyId, consumerId, versionId }),
    });
    expect(res.status).toBe(200);
  }

  async function cli(...argv: string[]): Promise<string> {
    let out = "";
    let err = "";
    const env = { REDIS_URL: redisUrl(), REKEY_PREFIX: stack.prefix, REKEY_POLICY_DIR: dir, AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url, AWS_REGION: REGION, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", LOG_LEVEL: "silent" };
    const code = await main(argv, { stdout: (s) => void (out += s), stderr: (s) => void (err += s), stdin: new PassThrough(), env });
    expect(code, err).toBe(0);
    return out;
  }

  async function page(password = ADMIN_TOKEN): Promise<Page> {
    const ctx = await browser.newContext({ httpCredentials: { username: "operator", password }, viewport: { width: 1440, height: 1000 } });
    const p = await ctx.newPage();
    p.on("request", (r) => {
      if (!r.url().startsWith(stack.apiUrl)) outside.push(r.url());
    });
    return p;
  }

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    fake = await startLaunchDarklyFake();
    const admin = fake.addToken({ role: "admin", name: "rekey management" });
    const policies: PolicyInput[] = [
      ld(fake, "demo-checkout-ld", {
        description: "The checkout service's LaunchDarkly API token",
        owner: "alice@example.com",
        consumers: [{ id: "checkout", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
      }),
      ld(fake, "billing-ld", { consumers: [{ id: "billing-api", confirm: "push", tokenHash: tokenHash(CONSUMER) }] }),
      ld(fake, "search-ld", {
        consumers: [{ id: "search-indexer", confirm: "push", tokenHash: tokenHash(CONSUMER) }],
        confirmation: { timeout: "2s", onTimeout: "keep-old" },
      }),
      ld(fake, "analytics-ld", { schedule: undefined }),
      ld(fake, "reports-ld"),
      ld(fake, "dana-batch-ld", { owner: "dana@example.com", offboarding: { successor: "sam@example.com" } }),
    ];
    dir = mkdtempSync(join(tmpdir(), "rekey-ui-"));
    for (const p of policies) writeFileSync(join(dir, `${p.id}.json`), JSON.stringify(p));
    stack = await startStack({ policies, env: { LD_ADMIN_TOKEN: admin.value }, concurrency: 4 });
    const dana = fake.addMember("dana@example.com", "writer");
    for (const p of policies) {
      const t = fake.addToken({ role: "writer", name: p.id, memberId: p.owner === "dana@example.com" ? dana : undefined });
      tokens.set(p.id, t);
      await stack.store.create!({ secretId: `prod/${p.id}`, region: REGION }, t.value);
    }
    for (const id of ["demo-checkout-ld", "billing-ld", "search-ld"]) {
      rotations.set(id, (await stack.rt.rotations.enqueue({ policyId: id, reason: "manual", actor: "cli:alice" })).rotationId);
    }
    const state = (id: string) => stack.rt.state.records.get(rotations.get(id)!);
    await until("billing awaiting confirmation", async () => (await state("billing-ld"))?.status === "awaiting-confirmation");
    await confirmPush("billing-ld", "billing-api", rotations.get("billing-ld")!);
    await until("billing completed", async () => (await state("billing-ld"))?.status === "completed");
    await until("demo awaiting confirmation", async () => (await state("demo-checkout-ld"))?.status === "awaiting-confirmation");
    await until("search needs attention", async () => (await state("search-ld"))?.status === "needs-attention", 30_000);
    // Dana leaves: her policy's credential is handed to her successor.
    await offboardingFor(stack.rt).run({ member: "dana@example.com" }, "cli:hr");
    await until("offboarding rotation completed", async () => {
      const h = await stack.rt.audit.history({ policyId: "dana-batch-ld" });
      return h.some((e) => e.step === "revoking" && e.outcome === "ok");
    });
    // Hostile text, as a provider error message or a forged consumer id could carry it.
    await stack.rt.audit.record({ policyId: "demo-checkout-ld", step: "confirmation", outcome: "refused", actor: 'consumer:<b id="x">x</b>', message: `<img src=x onerror="document.title='owned'"><script>document.title='owned'</script>` });
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await fake?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows every policy, rotation in flight and needs-attention exactly as `rekey status --json` does", async () => {
    const status = JSON.parse(await cli("status", "--json")) as PolicyStatus[];
    const p = await page();
    const res = await p.goto(`${stack.apiUrl}/ui`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()["content-security-policy"]).toContain("default-src 'none'");
    // rekey's own stylesheet loaded under that policy.
    expect(await p.locator("header").evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor)).toBe("rgb(17, 24, 39)");
    await p.screenshot({ path: join(ARTIFACTS, "overview.png"), fullPage: true });

    expect(status).toHaveLength(6);
    for (const s of status) {
      const row = p.locator(`#policies tr[data-policy="${s.policyId}"]`);
      expect(await row.locator('[data-field="owner"]').innerText()).toBe(s.owner);
      expect(await row.locator('[data-field="provider"]').innerText()).toBe(s.provider);
      expect(await row.locator('[data-field="strategy"]').innerText()).toBe(s.strategy);
      expect(await row.locator('[data-field="nextDue"]').getAttribute("data-at")).toBe(s.nextDue ? new Date(s.nextDue).toISOString().replace(/\.\d{3}Z$/, "Z") : "");
      expect(await row.locator('[data-field="lastStatus"]').getAttribute("data-status")).toBe(s.lastStatus ?? "");
      expect(await row.locator('[data-field="age"]').getAttribute("data-since")).toBe(s.currentSince ? new Date(s.currentSince).toISOString().replace(/\.\d{3}Z$/, "Z") : "");
    }
    // The never-scheduled policy says so; the rotated ones have an age.
    expect(status.find((s) => s.policyId === "analytics-ld")?.nextDue).toBeUndefined();
    expect(status.find((s) => s.policyId === "billing-ld")?.currentSince).toBeGreaterThan(0);

    const inFlight = status.filter((s) => s.inFlight);
    expect(inFlight.map((s) => s.policyId).sort()).toEqual(["demo-checkout-ld", "search-ld"]);
    expect(await p.locator("#in-flight tbody tr").count()).toBe(inFlight.length);
    for (const s of inFlight) {
      const row = p.locator(`#in-flight tr[data-policy="${s.policyId}"]`);
      expect(await row.getAttribute("data-rotation")).toBe(s.inFlight!.rotationId);
      expect(await row.locator('[data-field="waitsFor"]').getAttribute("data-kind")).toBe(s.inFlight!.waitsFor.kind);
      // The next re-check moves on as time passes: the words before it must match.
      expect(await row.locator('[data-field="waitsFor"]').innerText()).toContain(s.inFlight!.waitsFor.text.split(";")[0]);
      expect(await row.locator("[data-consumer]").evaluateAll((els) => els.map((e) => e.getAttribute("data-consumer")))).toEqual(s.inFlight!.waitingFor.map((w) => w.consumerId));
    }
    // What they wait for is their real state: consumers, and the one past its timeout too.
    expect(inFlight.find((s) => s.policyId === "demo-checkout-ld")?.inFlight?.waitsFor.kind).toBe("consumers");
    const search = inFlight.find((s) => s.policyId === "search-ld")!;
    expect(search.inFlight?.status).toBe("needs-attention");
    expect(search.inFlight?.waitingFor).toEqual([{ consumerId: "search-indexer", confirm: "push" }]);

    const attention = p.locator('#attention tr[data-policy="search-ld"] [data-field="remedy"]');
    expect(await attention.innerText()).toBe(search.remedy);
    expect(search.remedy).toContain("search-indexer");
    expect(await p.locator('[data-stat="attention"] b').innerText()).toBe(String(status.filter((s) => s.remedy).length));
    // The offboarding with its progress, and its page.
    expect(await p.locator('#offboardings tr[data-member="dana@example.com"] [data-field="progress"]').innerText()).toContain("1/1 credentials handed over");
    await p.click('#offboardings a[href="/ui/offboardings/dana%40example.com"]');
    expect(await p.locator('tr[data-policy="dana-batch-ld"] [data-field="state"]').innerText()).toBe("completed");
    expect(await p.locator(".blockers").innerText()).toContain("still names dana@example.com as owner");
    expect(outside).toEqual([]);
  });

  it("shows a policy's audit timeline with hostile text as text", async () => {
    const p = await page();
    await p.goto(`${stack.apiUrl}/ui/policies/demo-checkout-ld`);
    const history = JSON.parse(await cli("history", "demo-checkout-ld", "--json")) as { id: string; step: string }[];
    expect(await p.locator("#timeline li").evaluateAll((els) => els.map((e) => e.getAttribute("data-entry")))).toEqual(history.map((h) => h.id));
    const refused = p.locator("#timeline li", { hasText: "onerror" });
    expect(await refused.locator(".msg").innerText()).toBe(`<img src=x onerror="document.title='owned'"><script>document.title='owned'</script>`);
    expect(await refused.locator(".actor").innerText()).toBe('by consumer:<b id="x">x</b>');
    expect(await p.locator("main img, main script, #x").count()).toBe(0);
    expect(await p.title()).toBe("Policy demo-checkout-ld — rekey");
    await p.screenshot({ path: join(ARTIFACTS, "policy.png"), fullPage: true });
  });

  it("rotates a policy now after a confirmation step, audited as the operator", async () => {
    const p = await page();
    await p.goto(`${stack.apiUrl}/ui/policies/analytics-ld`);
    await p.click('[data-action="rotate"]');
    expect(p.url()).toBe(`${stack.apiUrl}/ui/policies/analytics-ld/rotate`);
    // Nothing happens until the operator confirms.
    expect(await stack.rt.state.locks.inFlight("analytics-ld")).toBeUndefined();
    await p.screenshot({ path: join(ARTIFACTS, "confirm-rotate.png") });
    await p.click('[data-submit="rotate"]');
    const queued = await p.locator('[data-notice="queued"] .mono').innerText();
    expect(queued).toMatch(/^[0-9a-f-]{36}$/);
    await until("rotation completed", async () => (await stack.rt.state.records.get(queued))?.status === "completed");
    const history = await stack.rt.audit.history({ policyId: "analytics-ld" });
    expect(history.find((h) => h.step === "manual.requested")).toMatchObject({ rotationId: queued, actor: "api:admin" });
    const old = tokens.get("analytics-ld")!;
    expect(fake.isLive(old.value)).toBe(false);
  });

  it("reports a leak after the operator types the policy id, and shows the incident's progress", async () => {
    const p = await page();
    await p.goto(`${stack.apiUrl}/ui/policies/reports-ld/leak`);
    await p.fill('input[name="confirm"]', "reports-l");
    await p.click('[data-submit="leak"]');
    expect(await p.locator("[data-error]").innerText()).toContain("does not match");
    expect(await stack.rt.state.locks.inFlight("reports-ld")).toBeUndefined();

    await p.fill('input[name="confirm"]', "reports-ld");
    await p.click('[data-submit="leak"]');
    expect(p.url()).toMatch(/\/ui\/leaks\/[0-9a-f-]{36}$/);
    const incidentId = p.url().split("/").pop()!;
    await until("leak completed", async () => {
      await p.reload();
      return (await p.locator('tr[data-policy="reports-ld"] [data-field="state"]').innerText()) === "completed";
    });
    expect(await p.locator('[data-field="oldRevoked"]').innerText()).toBe("yes");
    expect(fake.isLive(tokens.get("reports-ld")!.value)).toBe(false);
    await p.screenshot({ path: join(ARTIFACTS, "leak.png"), fullPage: true });
    await p.goto(`${stack.apiUrl}/ui`);
    await p.screenshot({ path: join(ARTIFACTS, "overview-after-leak.png"), fullPage: true });
    if (process.env.REKEY_DOCS_SCREENSHOT) {
      mkdirSync(dirname(process.env.REKEY_DOCS_SCREENSHOT), { recursive: true });
      await p.screenshot({ path: process.env.REKEY_DOCS_SCREENSHOT, fullPage: true });
    }
    expect(await p.locator(`#leaks tr[data-incident="${incidentId}"] [data-field="progress"]`).innerText()).toContain("1/1 done");
    const audit = await stack.rt.audit.history({ limit: 500 });
    expect(audit.find((a) => a.step === "leak.incident")?.actor).toBe("api:admin");
    expect(outside).toEqual([]);
  });

  it("a viewer token sees the pages but cannot act; outsiders and cross-site forms change nothing", async () => {
    const { token: viewerToken } = await stack.rt.tokens.create({ name: "dash-viewer", scopes: ["viewer"] }, "test");
    const p = await page(viewerToken);
    expect((await p.goto(`${stack.apiUrl}/ui/policies/reports-ld`))?.status()).toBe(200);
    expect(await p.locator('[data-action="rotate"]').count()).toBe(0);
    expect((await p.goto(`${stack.apiUrl}/ui/policies/reports-ld/rotate`))?.status()).toBe(403);

    const before = await stack.rt.redis.xlen(`${stack.prefix}:audit`);
    const inFlightBefore = await stack.rt.state.locks.inFlight("reports-ld");
    const anonymous = await fetch(`${stack.apiUrl}/ui`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toContain("Basic");
    const basic = (t: string) => `Basic ${Buffer.from(`x:${t}`).toString("base64")}`;
    const form = { "content-type": "application/x-www-form-urlencoded" };
    // A viewer's form token would be valid for the viewer, but the scope is missing.
    const viewerPost = await fetch(`${stack.apiUrl}/ui/policies/reports-ld/rotate`, { method: "POST", headers: { authorization: basic(viewerToken), ...form }, body: "" });
    expect(viewerPost.status).toBe(403);
    const forged = await fetch(`${stack.apiUrl}/ui/policies/reports-ld/rotate`, {
      method: "POST",
      headers: { authorization: basic(ADMIN_TOKEN), ...form, origin: "https://evil.example" },
      body: "formToken=" + "0".repeat(64),
    });
    expect(forged.status).toBe(403);
    const noToken = await fetch(`${stack.apiUrl}/ui/policies/reports-ld/rotate`, { method: "POST", headers: { authorization: basic(ADMIN_TOKEN), ...form }, body: "" });
    expect(noToken.status).toBe(403);
    const wrong = await fetch(`${stack.apiUrl}/ui/policies/reports-ld/rotate`, { method: "POST", headers: { authorization: basic("nope"), ...form }, body: "" });
    expect(wrong.status).toBe(401);
    expect(await stack.rt.redis.xlen(`${stack.prefix}:audit`)).toBe(before);
    expect(await stack.rt.state.locks.inFlight("reports-ld")).toBe(inFlightBefore);
  });
});
