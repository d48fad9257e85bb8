/**
 * A Snyk user's API token (`snyk-user-token`): a human, cut-over provider. Snyk regenerates it
 * only in the web UI ("Revoke & Regenerate"), and the old token stops working at that moment, so
 * there is nothing to revoke afterwards. rekey sends the owner the steps, waits for the value on
 * `rekey submit`, checks it with `GET /rest/self`, and tells the consumers.
 */
import { VerificationError } from "../../errors.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { HttpStatusError } from "../http.ts";
import { type Provider } from "../types.ts";
import { belongsToSuccessor, snykClient, type SnykDeps } from "./client.ts";

export function createSnykUserTokenProvider(deps: SnykDeps = {}): Provider<"snyk-user-token"> {
  return {
    kind: "snyk-user-token",
    capabilities: (config) => capabilitiesOf(config),

    // One token per user and no token ids: nothing to record.
    async identify() {
      return {};
    },

    async verify(ctx, value) {
      let self;
      try {
        self = await snykClient(ctx.config, ctx, deps).self({ scheme: "token", value });
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 401) {
          throw new VerificationError(
            `${err.message}: Snyk refused the submitted token; copy the token shown right after "Revoke & Regenerate" and submit it again`,
            { cause: err },
          );
        }
        throw err;
      }
      if (self.type !== "user") {
        throw new VerificationError(`snyk GET /rest/self: the submitted token belongs to a ${self.type}, not a user; submit the user's API token`);
      }
      if (ctx.reason === "offboarding" && !belongsToSuccessor(ctx.successor, self.attributes?.email)) {
        throw new VerificationError(
          `snyk GET /rest/self: the submitted token belongs to ${self.attributes?.email ?? self.id}, not to the successor ${ctx.successor ?? ""}; the successor must sign in and regenerate their own token`,
        );
      }
    },

    instructions(config, { policyId, rotationId, successor }) {
      const who = successor ? `Sign in to Snyk as ${successor} (the successor who takes this credential over).` : "Sign in to Snyk as the user whose API token this is.";
      const text = [
        `rekey rotation ${rotationId} for policy ${policyId}: regenerate the Snyk API token.`,
        "",
        `1. ${who}`,
        `2. Open ${config.uiUrl} (Account settings → General → Auth Token).`,
        '3. Click "Revoke & Regenerate". The old token stops working at once: consumers fail until they load the new one.',
        "4. Copy the new token and hand it to rekey on standard input (never as an argument):",
        `     rekey submit ${rotationId}`,
        "   then paste the token and press Ctrl-D, or pipe it in, e.g. `pbpaste | rekey submit " + rotationId + "`.",
        "",
        "rekey checks the token, stores it and tells every consumer.",
      ].join("\n");
      return { text, link: config.uiUrl };
    },
  };
}

export const snykUserTokenProvider = createSnykUserTokenProvider();
