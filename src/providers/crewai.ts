/**
 * `crewai-crew`: the bearer token of a crew deployed on CrewAI AMP.
 *
 * No API or CLI resets it: the crew's page in the CrewAI web UI has a Reset button, and the old
 * token dies at once. So this is a human step with a cut-over: rekey sends the owner the steps
 * and the link, the owner pastes the new token into `rekey submit` (standard input), and rekey
 * checks it with `GET /inputs` on the crew's own host before storing it. Nothing is revoked
 * afterwards.
 */
import { z } from "zod";
import { VerificationError } from "../errors.ts";
import { capabilitiesOf } from "../policy/capabilities.ts";
import { HttpStatusError, ProviderHttp, retryAfterHeader } from "./http.ts";
import { type Provider } from "./types.ts";

/** Narrow dependencies of the CrewAI adapter. */
export interface CrewAiDeps {
  /** Default: global fetch. */
  fetch?: typeof fetch;
  /** Epoch ms clock. Default: Date.now. */
  now?: () => number;
}

/** `GET /inputs`: the crew's declared inputs. */
const CrewInputs = z.object({ inputs: z.array(z.unknown()) });

function crewErrorText(body: unknown): string | undefined {
  if (body && typeof body === "object") {
    for (const k of ["error", "detail", "message"] as const) {
      const v = (body as Record<string, unknown>)[k];
      if (typeof v === "string") return v.slice(0, 300);
    }
  }
  if (typeof body === "string" && body.trim() && !body.trimStart().startsWith("<")) return body.trim().slice(0, 300);
  return undefined;
}

export function createCrewAiCrewProvider(deps: CrewAiDeps = {}): Provider<"crewai-crew"> {
  const http = new ProviderHttp({
    provider: "crewai",
    // No rate-limit headers are documented; honour Retry-After where a gateway sends one.
    retryAt: (res, now) => retryAfterHeader(res.headers, now),
    defaultBackoffMs: 60_000,
    errorText: crewErrorText,
    fetch: deps.fetch,
    now: deps.now,
  });

  return {
    kind: "crewai-crew",
    capabilities: (config) => capabilitiesOf(config),

    // The crew token has no id of its own: the crew's host identifies it.
    async identify() {
      return {};
    },

    instructions(config, { policyId, rotationId, successor }) {
      const crew = new URL(config.crewUrl).host;
      const lines = [
        `rekey needs a new bearer token for the CrewAI crew ${crew} (policy ${policyId}, rotation ${rotationId}).`,
      ];
      if (successor) {
        lines.push(
          `This rotation is part of an offboarding: ${successor} takes over this credential. ${successor} (or another admin of the crew) should do these steps, not the departing member.`,
        );
      }
      lines.push(
        "",
        `1. Open ${config.uiUrl} and open the deployment of the crew served at ${config.crewUrl}.`,
        "2. Press Reset on the crew's Bearer Token (not your personal User Bearer Token). The old token stops working at once: callers of the crew fail until they load the new one, so do steps 3 and 4 right away.",
        "3. Copy the new token.",
        `4. Run \`rekey submit ${rotationId}\` and paste the token on standard input when asked. Never pass it as an argument: arguments end up in shell history and process lists.`,
        "",
        `rekey checks the token with GET ${config.crewUrl.replace(/\/+$/, "")}/inputs before storing it, then tells the crew's callers to load it.`,
      );
      return { text: lines.join("\n"), link: config.uiUrl };
    },

    async verify(ctx, value) {
      const url = `${ctx.config.crewUrl.replace(/\/+$/, "")}/inputs`;
      try {
        await http.json({ method: "GET", url, headers: { authorization: `Bearer ${value}` }, signal: ctx.signal }, CrewInputs);
      } catch (err) {
        if (err instanceof HttpStatusError && (err.status === 401 || err.status === 403)) {
          throw new VerificationError(
            `${err.message}: the crew at ${new URL(url).host} refused the submitted token; copy the crew's Bearer Token (not the User Bearer Token) from its page and submit it again`,
            { cause: err },
          );
        }
        throw err;
      }
    },
  };
}
