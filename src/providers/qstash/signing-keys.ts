/**
 * `qstash-signing-keys`: the pair of keys QStash signs deliveries with, which receivers use to
 * check the `Upstash-Signature` header. rekey stores the pair as one string, the JSON
 * `{"current":"…","next":"…"}`.
 *
 * Receivers accept a signature by either key, so a roll (`next` becomes `current`, a fresh
 * `next` is made) keeps every receiver that holds the previous pair working: the overlap is
 * built in. The old pair is retired by the next roll, never by a call here, and rolling twice
 * before receivers load the new pair would break every one of them. So `issue` reads the live
 * pair first and rolls only from the stored pair, and the engine holds the next roll until
 * every receiver confirmed.
 *
 * The keys body is a secret: it is never logged, and errors say which field is wrong, never what
 * it holds.
 */
import { PermanentError, VerificationError } from "../../errors.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { type IssuedCredential, type Provider, type ProviderContext } from "../types.ts";
import { bearer, createQStashHttp, endpoint, QSTASH_DATA_PLANE, SigningKeys, withAdvice, type QStashDeps } from "./client.ts";

type Ctx = ProviderContext<"qstash-signing-keys">;

const TOKEN_ADVICE = "QStash refused the token that provider.management points to: it must be a current (not read-only) QStash token of the region whose keys these are";

/** The stored form of a pair: one JSON string, keys in a fixed order so equal pairs are equal strings. */
export function encodeSigningKeys(keys: SigningKeys): string {
  return JSON.stringify({ current: keys.current, next: keys.next });
}

/** Parse a stored pair; `what` names it in the error ("the stored value", "the new value"). */
export function decodeSigningKeys(value: string, what: string): SigningKeys {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    throw new PermanentError(`qstash: ${what} is not a QStash signing-key pair: expected the JSON {"current":"…","next":"…"}, got text that is not JSON`);
  }
  const parsed = SigningKeys.safeParse(json);
  if (!parsed.success) {
    const at = parsed.error.issues[0]?.path.join(".") || "(document)";
    throw new PermanentError(`qstash: ${what} is not a QStash signing-key pair: expected the JSON {"current":"…","next":"…"}; ${at} is missing or not a non-empty string`);
  }
  return parsed.data;
}

function samePair(a: SigningKeys, b: SigningKeys): boolean {
  return a.current === b.current && a.next === b.next;
}

function sharesKey(a: SigningKeys, b: SigningKeys): boolean {
  const keys = new Set([b.current, b.next]);
  return keys.has(a.current) || keys.has(a.next);
}

export function createQStashSigningKeysProvider(deps: QStashDeps = {}): Provider<"qstash-signing-keys"> {
  const http = createQStashHttp(deps);

  const url = (ctx: Ctx, path: string) => endpoint(ctx.config.baseUrl ?? QSTASH_DATA_PLANE, path);

  async function call(ctx: Ctx, method: "GET" | "POST", path: string): Promise<SigningKeys> {
    const token = await ctx.resolve(ctx.config.management);
    try {
      return await http.json({ method, url: url(ctx, path), headers: { authorization: bearer(token) }, signal: ctx.signal }, SigningKeys);
    } catch (err) {
      throw withAdvice(err, TOKEN_ADVICE);
    }
  }

  const current = (ctx: Ctx) => call(ctx, "GET", "/v2/keys");
  const roll = (ctx: Ctx) => call(ctx, "POST", "/v2/keys/rotate");

  return {
    kind: "qstash-signing-keys",
    capabilities: (config) => capabilitiesOf(config),

    async identify(_ctx, value) {
      decodeSigningKeys(value, "the stored value");
      return {};
    },

    async issue(ctx, old): Promise<IssuedCredential> {
      let live = await current(ctx);
      if (!old) return { value: encodeSigningKeys(await roll(ctx)) };
      const stored = decodeSigningKeys(old.value, "the stored value");

      if (ctx.reason === "leak") {
        // Both leaked keys must go: one roll keeps the leaked `next` as the signing key, so roll
        // until the live pair shares no key with the stored one (at most twice). Receivers fail
        // until they load the new pair; a leak accepts that.
        for (let i = 0; i < 2 && sharesKey(live, stored); i++) live = await roll(ctx);
        return { value: encodeSigningKeys(live) };
      }

      if (samePair(live, stored)) return { value: encodeSigningKeys(await roll(ctx)) };
      // One roll past the stored pair (an earlier run of this rotation, or the console): receivers
      // holding the stored pair accept it, so store it rather than roll a second time.
      if (live.current === stored.next) return { value: encodeSigningKeys(live) };
      throw new PermanentError(
        `qstash GET /v2/keys: the live signing keys are neither the stored pair nor one roll past it: they were rolled more than once outside rekey, and receivers holding the stored pair already reject deliveries. Nothing was rolled; load the live pair into the secret and the receivers by hand, then rotate again`,
      );
    },

    async recoverIssued(ctx) {
      return { value: encodeSigningKeys(await current(ctx)) };
    },

    async verify(ctx, value) {
      const expected = decodeSigningKeys(value, "the new value");
      const live = await current(ctx);
      if (!samePair(live, expected)) {
        throw new VerificationError(
          `qstash GET /v2/keys: the live signing keys differ from the pair being stored; they were rolled again since it was issued (or provider.management is another region's token). Store the live pair before telling receivers`,
        );
      }
    },
  };
}
