/**
 * `qstash-token`: the QStash token of one region, rotated through the Upstash Developer API.
 *
 * A rotation is a cut-over: rotate-token kills the old token at once, so publishers fail until
 * they load the new value. The token can be read again by `GET /v2/qstash/users`, which is how
 * an interrupted rotation recovers the value a reset produced instead of resetting twice.
 * Nothing is revoked afterwards: the old token is already dead.
 *
 * The Developer API key is one per Upstash account, and its burst limit is what a leak over many
 * regions' tokens runs out of. So identify (the check before the reset) reads the users list once
 * for all the rotations of an account that start within IDENTIFY_LIST_TTL_MS, and the reset is
 * the only other request a rotation sends there. recoverIssued, which must see what a reset did,
 * always reads afresh.
 */
import { createHash } from "node:crypto";
import { PermanentError, VerificationError } from "../../errors.ts";
import { type ProviderConfigOf } from "../../policy/schema.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { HttpStatusError } from "../http.ts";
import { type CredentialHandle, type Provider, type ProviderContext } from "../types.ts";
import {
  basicAuth,
  bearer,
  createQStashHttp,
  endpoint,
  QSTASH_DATA_PLANE,
  QStashUser,
  QStashUsers,
  Topics,
  UPSTASH_DEVELOPER_API,
  withAdvice,
  type QStashDeps,
} from "./client.ts";

type Ctx = ProviderContext<"qstash-token">;
type Config = ProviderConfigOf<"qstash-token">;

/**
 * How long identify trusts a users list read for another rotation of the same account. It checks
 * only that the policy's user exists and that the stored token is not another user's: neither
 * changes within seconds but by a reconfiguration.
 */
export const IDENTIFY_LIST_TTL_MS = 5_000;

/** What identify needs of a user: never the token itself, only its hash (the other-region check). */
interface ListedUser {
  id: string;
  region?: string;
  tokenHash: string;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

const KEY_ADVICE = "the Upstash Developer API refused the account email and API key: check provider.email and the key that provider.management points to (console.upstash.com > Account > Management API)";

export function createQStashTokenProvider(deps: QStashDeps = {}): Provider<"qstash-token"> {
  const http = createQStashHttp(deps);

  const mgmtUrl = (c: Config, path: string) => endpoint(c.managementUrl ?? UPSTASH_DEVELOPER_API, path);

  async function managementHeaders(ctx: Ctx): Promise<Record<string, string>> {
    const key = await ctx.resolve(ctx.config.management);
    return { authorization: basicAuth(ctx.config.email, key) };
  }

  async function listUsers(ctx: Ctx, headers: Record<string, string>): Promise<QStashUser[]> {
    try {
      return await http.json({ method: "GET", url: mgmtUrl(ctx.config, "/v2/qstash/users"), headers, signal: ctx.signal }, QStashUsers);
    } catch (err) {
      throw withAdvice(err, KEY_ADVICE);
    }
  }

  /** Users lists by account (the management URL and a hash of its credentials), as identify reads them. */
  const lists = new Map<string, { at: number; users: Promise<ListedUser[]> }>();

  /**
   * The account's users for identify: one read shared by the rotations that start within
   * IDENTIFY_LIST_TTL_MS. A shared read that failed is not reused: the caller reads itself (its
   * own pacing, its own abort signal, its own error).
   */
  async function listForIdentify(ctx: Ctx, headers: Record<string, string>): Promise<ListedUser[]> {
    const key = `${mgmtUrl(ctx.config, "/")}|${sha256(headers.authorization ?? "")}`;
    const hit = lists.get(key);
    if (hit && ctx.now() - hit.at < IDENTIFY_LIST_TTL_MS) {
      try {
        return await hit.users;
      } catch {
        // read below
      }
    }
    const users = listUsers(ctx, headers).then((list) => list.map((u) => ({ id: u.id, region: u.region, tokenHash: sha256(u.token) })));
    if (lists.size >= 1_000) lists.clear();
    lists.set(key, { at: ctx.now(), users });
    users.catch(() => {
      if (lists.get(key)?.users === users) lists.delete(key);
    });
    return users;
  }

  function pick<U extends { id: string; region?: string }>(ctx: Ctx, users: U[]): U {
    const user = users.find((u) => u.id === ctx.config.userId);
    if (!user) {
      const known = users.map((u) => `${u.id}${u.region ? ` (${u.region})` : ""}`).join(", ") || "none";
      throw new PermanentError(
        `qstash: no QStash user ${ctx.config.userId} on this Upstash account (users: ${known}); set provider.userId to the user of the region whose token this policy rotates`,
      );
    }
    return user;
  }

  function handleOf(user: { id: string; region?: string }): CredentialHandle {
    return user.region ? { credentialId: user.id, meta: { region: user.region } } : { credentialId: user.id };
  }

  /**
   * The older path names no user: it resets the account's own QStash user. It is used only where
   * that cannot be another region's user, i.e. the account has exactly the policy's user.
   */
  async function legacyRotate(ctx: Ctx, headers: Record<string, string>): Promise<QStashUser> {
    const users = await listUsers(ctx, headers);
    pick(ctx, users);
    if (users.length !== 1) {
      throw new PermanentError(
        `qstash POST /v2/qstash/rotate-token/${ctx.config.userId}: 404, and the older POST /v2/qstash/user/rotatetoken cannot name a user: this account has ${users.length} QStash users (regions), so it could reset the wrong one. Nothing was reset; check that provider.managementUrl is the current Upstash Developer API, or reset the token in the Upstash console and update the secret by hand`,
      );
    }
    try {
      return await http.json({ method: "POST", url: mgmtUrl(ctx.config, "/v2/qstash/user/rotatetoken"), headers, signal: ctx.signal }, QStashUser);
    } catch (err) {
      throw withAdvice(err, KEY_ADVICE);
    }
  }

  return {
    kind: "qstash-token",
    capabilities: (config) => capabilitiesOf(config),

    async identify(ctx, value) {
      const users = await listForIdentify(ctx, await managementHeaders(ctx));
      const user = pick(ctx, users);
      // A token that belongs to another region means provider.userId is wrong: a reset would kill
      // that region's token and store it where this one belongs.
      const valueHash = sha256(value);
      const other = users.find((u) => u.id !== user.id && u.tokenHash === valueHash);
      if (other) {
        throw new PermanentError(
          `qstash: the stored token belongs to QStash user ${other.id}${other.region ? ` (${other.region})` : ""}, not to provider.userId ${user.id}; fix provider.userId (or the policy's target) before rotating`,
        );
      }
      return handleOf(user);
    },

    async issue(ctx) {
      const headers = await managementHeaders(ctx);
      const path = `/v2/qstash/rotate-token/${encodeURIComponent(ctx.config.userId)}`;
      let user: QStashUser;
      try {
        user = await http.json({ method: "POST", url: mgmtUrl(ctx.config, path), headers, signal: ctx.signal }, QStashUser);
      } catch (err) {
        if (!(err instanceof HttpStatusError && err.status === 404)) throw withAdvice(err, KEY_ADVICE);
        user = await legacyRotate(ctx, headers);
      }
      if (user.id !== ctx.config.userId) {
        throw new PermanentError(
          `qstash POST ${path}: answered for QStash user ${user.id} instead of ${ctx.config.userId}; that user's token may have been reset: check it in the Upstash console`,
        );
      }
      return { value: user.token, ...handleOf(user) };
    },

    async recoverIssued(ctx) {
      // The token is readable again: whatever the users list holds now is what a reset produced
      // (or the unchanged token, which the engine tells apart by comparing with the stored value).
      const user = pick(ctx, await listUsers(ctx, await managementHeaders(ctx)));
      return { value: user.token, ...handleOf(user) };
    },

    async verify(ctx, value) {
      const base = ctx.config.baseUrl ?? QSTASH_DATA_PLANE;
      try {
        await http.json({ method: "GET", url: endpoint(base, "/v2/topics"), headers: { authorization: bearer(value) }, signal: ctx.signal }, Topics);
      } catch (err) {
        if (err instanceof HttpStatusError && (err.status === 401 || err.status === 403)) {
          throw new VerificationError(
            `${err.message}: the data plane at ${new URL(base).host} refused the new token; check that provider.baseUrl is the region of QStash user ${ctx.config.userId}`,
            { cause: err },
          );
        }
        throw err;
      }
    },
  };
}
