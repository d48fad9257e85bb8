/**
 * A Snyk personal access token (`snyk-pat`): human issue, overlap. Snyk creates PATs only in the
 * web UI (at most 3 active, at most 90 days) but lists and deletes them by API, so the old PAT
 * keeps working until rekey deletes it after every consumer confirmed.
 *
 * Which PAT is a value? Snyk's list shows ids, names and dates, never the value, and does not say
 * which PAT made the call. So rekey asks the owner to name the new PAT `rekey-<first 8 characters
 * of the rotation id>-<policy id>`, and `identify` reads that name:
 * 1. the active PAT named for this rotation (the new value, once submitted);
 * 2. the only active PAT of the user;
 * 3. the only active PAT named by rekey for this policy (the value of the previous rotation);
 * 4. `provider.patId` (first rotation, when the user has several PATs with other names);
 * otherwise it refuses with the candidates' ids and names rather than guess, because a wrong guess
 * deletes a PAT that something else uses.
 *
 * `verify` insists that a PAT named for this rotation exists, so the submitted value is always
 * found by rule 1. The old value is identified when the rotation starts, before the owner is asked
 * for the new PAT, so rule 1 cannot claim it.
 */
import { z } from "zod";
import { PermanentError, VerificationError } from "../../errors.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { HttpStatusError } from "../http.ts";
import { type Provider, type ProviderContext } from "../types.ts";
import { belongsToSuccessor, snykClient, withAdvice, type SnykAuth, type SnykClient, type SnykDeps } from "./client.ts";

type Kind = "snyk-pat";
type Ctx = ProviderContext<Kind>;

/** Snyk's longest PAT lifetime, in days. */
const MAX_PAT_DAYS = 90;
const MAX_ACTIVE_PATS = 3;

const PatList = z.object({
  data: z.array(
    z.object({
      id: z.string().min(1),
      attributes: z.object({ name: z.string(), expires_at: z.string().nullish(), created_at: z.string().nullish() }),
    }),
  ),
});
type Pat = z.infer<typeof PatList>["data"][number];

/** The name rekey asks the owner to give the PAT of one rotation. */
export function patName(policyId: string, rotationId: string): string {
  return `rekey-${rotationId.slice(0, 8).toLowerCase()}-${policyId}`;
}

const sameName = (a: string, b: string): boolean => a.trim().toLowerCase() === b.trim().toLowerCase();

/** Named by rekey for this policy, in any rotation. */
function namedForPolicy(pat: Pat, policyId: string): boolean {
  const m = /^rekey-[0-9a-f]{8}-(.+)$/i.exec(pat.attributes.name.trim());
  return m?.[1]?.toLowerCase() === policyId.toLowerCase();
}

function describe(pats: Pat[]): string {
  return pats.map((p) => `${p.id} ("${p.attributes.name}")`).join(", ");
}

export function createSnykPatProvider(deps: SnykDeps = {}): Provider<Kind> {
  /** The user's PATs that still work (not expired), read with `auth`. */
  async function activePats(ctx: Ctx, client: SnykClient, auth: SnykAuth): Promise<Pat[]> {
    const list = await client.rest("GET", "/self/personal_access_tokens", auth, PatList);
    const now = ctx.now();
    return list.data.filter((p) => {
      const exp = p.attributes.expires_at ? Date.parse(p.attributes.expires_at) : Number.NaN;
      return Number.isNaN(exp) || exp > now;
    });
  }

  return {
    kind: "snyk-pat",
    capabilities: (config) => capabilitiesOf(config),

    async identify(ctx, value) {
      const client = snykClient(ctx.config, ctx, deps);
      let pats: Pat[];
      try {
        pats = await activePats(ctx, client, { scheme: "token", value });
      } catch (err) {
        // A PAT Snyk refuses (expired, deleted) has nothing left to revoke; the rotation must still
        // be able to replace it.
        if (err instanceof HttpStatusError && err.status === 401) return {};
        throw err;
      }
      const expected = patName(ctx.policyId, ctx.rotationId);
      const thisRotation = pats.filter((p) => sameName(p.attributes.name, expected));
      const policyPats = pats.filter((p) => namedForPolicy(p, ctx.policyId) && !thisRotation.includes(p));
      const configured = pats.find((p) => p.id === ctx.config.patId);
      const pick =
        thisRotation.length === 1 ? thisRotation[0]
        : thisRotation.length > 1 ? undefined
        : pats.length === 1 ? pats[0]
        : policyPats.length === 1 ? policyPats[0]
        : configured;
      if (!pick) {
        throw new PermanentError(
          `snyk GET /rest/self/personal_access_tokens: cannot tell which of the user's ${pats.length} active PATs the value is (${describe(pats) || "none"}); ` +
            `Snyk does not show PAT values. Set provider.patId to the right id, or delete the PATs nothing uses`,
        );
      }
      return { credentialId: pick.id, meta: { name: pick.attributes.name } };
    },

    async verify(ctx, value) {
      const client = snykClient(ctx.config, ctx, deps);
      const auth: SnykAuth = { scheme: "token", value };
      let self;
      try {
        self = await client.self(auth);
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 401) {
          throw new VerificationError(`${err.message}: Snyk refused the submitted PAT; copy the value shown when the PAT was created and submit it again`, { cause: err });
        }
        throw err;
      }
      if (self.type !== "user") {
        throw new VerificationError(`snyk GET /rest/self: the submitted token belongs to a ${self.type}, not a user; submit a personal access token`);
      }
      if (ctx.reason === "offboarding" && !belongsToSuccessor(ctx.successor, self.attributes?.email)) {
        throw new VerificationError(
          `snyk GET /rest/self: the submitted PAT belongs to ${self.attributes?.email ?? self.id}, not to the successor ${ctx.successor ?? ""}; the successor must create it`,
        );
      }
      const expected = patName(ctx.policyId, ctx.rotationId);
      const pats = await activePats(ctx, client, auth);
      if (!pats.some((p) => sameName(p.attributes.name, expected))) {
        throw new VerificationError(
          `snyk GET /rest/self/personal_access_tokens: the user has no active PAT named "${expected}" (found: ${describe(pats) || "none"}); ` +
            `rekey finds the new PAT by that name. Create a PAT with exactly that name, submit its value, and delete the misnamed one`,
        );
      }
    },

    async revoke(ctx, old) {
      const id = old.credentialId;
      const client = snykClient(ctx.config, ctx, deps);
      if (!id) {
        // identify() records no id for a PAT that was already refused; one that still works needs its id.
        try {
          await client.self({ scheme: "token", value: old.value });
        } catch (err) {
          if (err instanceof HttpStatusError && err.status === 401) return;
          throw err;
        }
        throw new PermanentError(`snyk-pat: no PAT id was recorded for the credential to revoke (policy ${ctx.policyId}), so rekey cannot tell which PAT to delete; delete it in the Snyk UI`);
      }
      const viaManagement = ctx.config.management !== undefined;
      const auth: SnykAuth = { scheme: "token", value: ctx.config.management ? await ctx.resolve(ctx.config.management) : old.value };
      const advice = "the credential used to delete the old PAT (provider.management) was refused: it must be a live token of the same Snyk user";
      try {
        const pats = await activePats(ctx, client, auth);
        // Read first: a PAT already gone (or expired) is revoked, and a repeated step changes nothing.
        if (!pats.some((p) => p.id === id)) return;
        await client.restRaw("DELETE", `/self/personal_access_tokens/${encodeURIComponent(id)}`, auth);
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 404) return;
        // Without provider.management the old PAT deletes itself; once it is refused, it no longer
        // works anywhere, which is what revoking it is for.
        if (!viaManagement && err instanceof HttpStatusError && err.status === 401) return;
        throw viaManagement ? withAdvice(err, advice) : err;
      }
    },

    instructions(config, { policyId, rotationId, successor }) {
      const name = patName(policyId, rotationId);
      const who = successor ? `Sign in to Snyk as ${successor} (the successor who takes this credential over).` : "Sign in to Snyk as the user whose PAT this is.";
      const text = [
        `rekey rotation ${rotationId} for policy ${policyId}: create a new Snyk personal access token.`,
        "",
        `1. ${who}`,
        `2. Open ${config.uiUrl} and create a token named exactly:`,
        `     ${name}`,
        "   rekey finds the new PAT by this name.",
        `3. Expiry: at most ${MAX_PAT_DAYS} days, and longer than this policy's rotation interval.`,
        `   A user can hold at most ${MAX_ACTIVE_PATS} active PATs: if you already have ${MAX_ACTIVE_PATS}, delete one that nothing uses first (not the current one).`,
        "4. Copy the token and hand it to rekey on standard input (never as an argument):",
        `     rekey submit ${rotationId}`,
        "   then paste the token and press Ctrl-D, or pipe it in, e.g. `pbpaste | rekey submit " + rotationId + "`.",
        "",
        "Do not delete the old PAT: it keeps working until every consumer loaded the new one, then rekey deletes it.",
      ].join("\n");
      return { text, link: config.uiUrl };
    },
  };
}

export const snykPatProvider = createSnykPatProvider();
