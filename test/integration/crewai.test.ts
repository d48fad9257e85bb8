import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { PermanentError, TransientError, VerificationError } from "../../src/errors.ts";
import { CrewAiCrewProvider, type ProviderConfigOf } from "../../src/policy/schema.ts";
import { createCrewAiCrewProvider } from "../../src/providers/crewai.ts";
import { type ProviderContext } from "../../src/providers/types.ts";
import { CrewAiFake } from "../fakes/crewai.ts";
import { HttpFake } from "../fakes/http-fake.ts";
import { fakesClosedAfterEach } from "../helpers/fakes.ts";

const start = fakesClosedAfterEach();

function ctxFor(config: ProviderConfigOf<"crewai-crew">): ProviderContext<"crewai-crew"> {
  return {
    config,
    policyId: "crew-prod",
    rotationId: randomUUID(),
    signal: new AbortController().signal,
    resolve: async () => {
      throw new Error("test: the crew adapter needs no management credential");
    },
    now: Date.now,
    reason: "scheduled",
  };
}

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`non-Error thrown: ${String(err)}`, { cause: err });
  }
  throw new Error("expected the call to fail");
}

async function setup() {
  const fake = await start(new CrewAiFake({ inputs: ["topic", "audience"] }));
  const config = CrewAiCrewProvider.parse({ kind: "crewai-crew", crewUrl: fake.url, uiUrl: "https://app.crewai.com/crewai_plus/deployments/42" });
  return { fake, config, ctx: ctxFor(config) };
}

describe("crewai-crew", () => {
  it("is a human, cut-over provider with no issue or revoke call", () => {
    const provider = createCrewAiCrewProvider();
    const caps = provider.capabilities(CrewAiCrewProvider.parse({ kind: "crewai-crew", crewUrl: "https://my-crew.crewai.com" }));
    expect(caps.issue).toBe("human");
    expect(caps.oldSurvivesIssue).toBe(false);
    expect(provider.issue).toBeUndefined();
    expect(provider.revoke).toBeUndefined();
  });

  it("verifies the token the owner submits after pressing Reset, and rejects the old one", async () => {
    const { fake, ctx } = await setup();
    const provider = createCrewAiCrewProvider();
    const old = fake.token;
    const submitted = fake.resetToken();
    expect(fake.isLive(old)).toBe(false);

    await provider.verify(ctx, submitted, {});
    expect(fake.count("GET /inputs", 200)).toBe(1);

    const err = await caught(provider.verify(ctx, old, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).toContain("crewai GET /inputs: 401");
    expect(err.message).toContain("Invalid or missing bearer token");
    expect(err.message).toContain("Bearer Token");
    for (const s of [old, submitted]) expect(`${err.message}\n${err.stack ?? ""}`).not.toContain(s);
  });

  it("rejects a wrong value (the User Bearer Token, say) without echoing it", async () => {
    const { ctx } = await setup();
    const wrong = "user-bearer-token-9f8e7d6c5b4a";
    const err = await caught(createCrewAiCrewProvider().verify(ctx, wrong, {}));
    expect(err).toBeInstanceOf(VerificationError);
    expect(err.message).not.toContain(wrong);
  });

  it("a crew host answering 5xx is transient, not a failed verification", async () => {
    const { fake, ctx } = await setup();
    fake.faults.inject({ route: "GET /inputs", kind: "500" });
    const err = await caught(createCrewAiCrewProvider().verify(ctx, fake.token, {}));
    expect(err).toBeInstanceOf(TransientError);
    expect(err).not.toBeInstanceOf(PermanentError);
  });

  it("a malformed /inputs answer is a clear error naming the field", async () => {
    const odd = await start(new HttpFake(() => ({ status: 200, body: { fields: [] } })));
    const config = CrewAiCrewProvider.parse({ kind: "crewai-crew", crewUrl: odd.url });
    const err = await caught(createCrewAiCrewProvider().verify(ctxFor(config), "some-token-value", {}));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toContain("GET /inputs");
    expect(err.message).toContain("inputs");
    expect(err.message).not.toContain("some-token-value");
  });

  it("instructions give the link, the Reset step, the submit command on stdin and the successor", async () => {
    const { config } = await setup();
    const rotationId = randomUUID();
    const { text, link } = createCrewAiCrewProvider().instructions!(config, { policyId: "crew-prod", rotationId, successor: "bob@example.com" });
    expect(link).toBe(config.uiUrl);
    expect(text).toContain(config.uiUrl);
    expect(text).toContain(config.crewUrl);
    expect(text).toContain("Reset");
    expect(text).toContain(`rekey submit ${rotationId}`);
    expect(text).toContain("standard input");
    expect(text).toContain("bob@example.com");
    expect(text).toContain("crew-prod");

    const plain = createCrewAiCrewProvider().instructions!(config, { policyId: "crew-prod", rotationId });
    expect(plain.text).not.toContain("offboarding");
    expect(plain.text).toContain(`rekey submit ${rotationId}`);
  });

  it("the fake crew serves kickoff and status with the live token only", async () => {
    const { fake } = await setup();
    const call = (path: string, token: string, init: RequestInit = {}) =>
      fetch(`${fake.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" } });
    const kick = await call("/kickoff", fake.token, { method: "POST", body: JSON.stringify({ inputs: { topic: "rekey" } }) });
    expect(kick.status).toBe(200);
    const { kickoff_id } = (await kick.json()) as { kickoff_id: string };
    const status = await call(`/status/${kickoff_id}`, fake.token);
    expect(((await status.json()) as { state: string }).state).toBe("SUCCESS");
    const old = fake.token;
    fake.resetToken();
    const refused = await call(`/status/${kickoff_id}`, old);
    expect(refused.status).toBe(401);
    expect(fake.wasRetired(old)).toBe(true);
  });
});
