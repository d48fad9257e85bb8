/**
 * LaunchDarkly REST API access tokens.
 *
 * Default strategy `create-delete`: LaunchDarkly has no clone endpoint, so rekey reads the old
 * token, creates a second one with the same role fields (role, customRoleIds, inlineRole,
 * serviceToken, defaultApiVersion) and deletes the old one only after every consumer confirmed.
 * Both work in between, so consumers see no outage. A token is created for the member whose
 * token makes the call, so a personal token comes back as a personal token of the management
 * token's member (service tokens stay service tokens).
 *
 * `reset-with-expiry` (opt-in) calls the legacy reset endpoint with an expiry for the old secret.
 * Whether LaunchDarkly keeps the old secret alive until then is unconfirmed, so rekey treats it as
 * a cut-over. The token keeps its id, so there is nothing separate to revoke, and `lastUsed`
 * cannot tell the old secret from the new one.
 *
 * Offboarding: the new token must outlive the departing member. With `successorManagement`, it
 * is created with the successor's credential (a personal token of the successor); without it, it
 * is created as a service token, which belongs to the account. Whatever the policy's strategy:
 * a reset keeps the token's id and owner, so under `reset-with-expiry` the reset token would stay
 * the departed member's personal token and die with the member. An offboarding therefore always
 * runs create-then-delete (rotationConfig): a new token for the successor, the old one deleted
 * once consumers confirmed.
 *
 * Every call sends `Authorization: <token>` (no Bearer prefix) and pins `LD-API-Version`.
 */
import { hash } from "node:crypto";
import { z } from "zod";
import { PermanentError, VerificationError } from "../errors.ts";
import { type ProviderConfigOf } from "../policy/schema.ts";
import { capabilitiesOf } from "../policy/capabilities.ts";
import { HttpStatusError, ProviderHttp, retryAfterHeader, type HttpRequest, type HttpResponse } from "./http.ts";
import { type CredentialHandle, type IssuedCredential, type OwnedCredential, type Provider, type ProviderContext } from "./types.ts";

export const LAUNCHDARKLY_DEFAULT_BASE_URL = "https://app.launchdarkly.com";
/** The API version rekey was written against; pinned so field shapes do not change under it. */
export const LAUNCHDARKLY_API_VERSION = "20240415";

type Ctx = ProviderContext<"launchdarkly">;
type Config = ProviderConfigOf<"launchdarkly">;

const Token = z.object({
  _id: z.string().min(1),
  memberId: z.string().nullish(),
  name: z.string().nullish(),
  description: z.string().nullish(),
  role: z.string().nullish(),
  customRoleIds: z.array(z.string()).nullish(),
  inlineRole: z.array(z.unknown()).nullish(),
  serviceToken: z.boolean().nullish(),
  defaultApiVersion: z.number().int().nullish(),
  lastUsed: z.number().nullish(),
});
type Token = z.infer<typeof Token>;

/** Create and reset answers: the only ones that carry the full secret. */
const TokenWithSecret = Token.extend({
  token: z.string().min(8, "expected the full token secret (create and reset answers carry it)"),
});

const CallerIdentity = z.object({
  tokenId: z.string().min(1),
  tokenName: z.string().nullish(),
  memberId: z.string().nullish(),
  serviceToken: z.boolean().nullish(),
});
type CallerIdentity = z.infer<typeof CallerIdentity>;

const Member = z.object({ _id: z.string().min(1), email: z.string() });

const page = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), totalCount: z.number().int().nonnegative() });

const ErrorBody = z.object({ message: z.string() });

/**
 * Description marker carrying the rotation id, so a later run of the same rotation finds tokens an
 * interrupted run created (cleanupOrphans).
 */
const marker = (ctx: Ctx) => `[rekey policy=${ctx.policyId} rotation=${ctx.rotationId}]`;
const MARKER_RE = /\s*\[rekey policy=[^\]\s]* rotation=[^\]\s]*\]/g;
const NAME_MARK_RE = /\s*\(rekey [0-9a-zA-Z-]{1,8}\)$/;

/**
 * When a 429 ends: `X-Ratelimit-Reset` (epoch milliseconds, the end of LaunchDarkly's 10-second
 * window), else `Retry-After` (seconds, sent on IP limits).
 */
export function launchDarklyRetryAt(res: HttpResponse, now: number): number | undefined {
  const reset = res.headers.get("x-ratelimit-reset")?.trim();
  if (reset && /^\d+$/.test(reset)) {
    const at = Number(reset);
    // A reset already past (clock skew) says nothing useful: fall through to the other hints.
    if (at > now) return at;
  }
  return retryAfterHeader(res.headers, now);
}

export interface LaunchDarklyDeps {
  fetch?: typeof fetch;
  /** Clock for rate-limit fallbacks (epoch ms). Default Date.now. */
  now?: () => number;
  /** `limit` asked for per page when listing tokens and members. Default 100. */
  pageSize?: number;
}

/** Whose credential a call uses: decides what a 401/403 means. */
type Who = "management" | "successor" | "current" | "new";

export function createLaunchDarklyProvider(deps: LaunchDarklyDeps = {}): Provider<"launchdarkly"> {
  const http = new ProviderHttp({
    provider: "launchdarkly",
    retryAt: launchDarklyRetryAt,
    // LaunchDarkly windows are 10 s: without headers, one window is the wait.
    defaultBackoffMs: 10_000,
    errorText: (body) => {
      const r = ErrorBody.safeParse(body);
      return r.success ? r.data.message : undefined;
    },
    now: deps.now,
    fetch: deps.fetch,
  });
  const pageSize = deps.pageSize ?? 100;

  function request(ctx: Ctx, token: string, method: HttpRequest["method"], path: string, body?: unknown): HttpRequest {
    return {
      method,
      url: `${baseUrl(ctx.config)}${path}`,
      headers: { authorization: token, "ld-api-version": LAUNCHDARKLY_API_VERSION },
      body,
      signal: ctx.signal,
    };
  }

  async function call<T>(ctx: Ctx, who: Who, token: string, method: HttpRequest["method"], path: string, schema: z.ZodType<T>, body?: unknown): Promise<T> {
    try {
      return await http.json(request(ctx, token, method, path, body), schema);
    } catch (err) {
      throw explain(ctx, who, err);
    }
  }

  /** DELETE; true when deleted, false when it was already gone (404). */
  async function remove(ctx: Ctx, token: string, id: string): Promise<boolean> {
    try {
      await http.request(request(ctx, token, "DELETE", `/api/v2/tokens/${enc(id)}`));
      return true;
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return false;
      throw explain(ctx, "management", err);
    }
  }

  async function listAll<T>(ctx: Ctx, token: string, path: string, item: z.ZodType<T>): Promise<T[]> {
    const out: T[] = [];
    const schema = page(item);
    const sep = path.includes("?") ? "&" : "?";
    for (let offset = 0; ; ) {
      const p = await call(ctx, "management", token, "GET", `${path}${sep}limit=${pageSize}&offset=${offset}`, schema);
      out.push(...(p.items as T[]));
      offset += p.items.length;
      if (p.items.length === 0 || offset >= p.totalCount) return out;
    }
  }

  async function getToken(ctx: Ctx, mgmt: string, id: string): Promise<Token | undefined> {
    try {
      return await call(ctx, "management", mgmt, "GET", `/api/v2/tokens/${enc(id)}`, Token);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) return undefined;
      throw err;
    }
  }

  const identity = (ctx: Ctx, who: Who, token: string) => call(ctx, who, token, "GET", "/api/v2/caller-identity", CallerIdentity);

  // The management token's own id, by a hash of the token: a token value belongs to one token id
  // for good (a reset gives a new value), so it is asked once per process, not once per revoke.
  const selfIds = new Map<string, string>();
  async function selfId(ctx: Ctx, mgmt: string): Promise<string> {
    const key = hash("sha256", mgmt, "hex");
    let id = selfIds.get(key);
    if (id === undefined) {
      id = (await identity(ctx, "management", mgmt)).tokenId;
      if (selfIds.size >= 1_000) selfIds.clear();
      selfIds.set(key, id);
    }
    return id;
  }

  async function createToken(ctx: Ctx, mgmt: string, old: Token): Promise<z.infer<typeof TokenWithSecret>> {
    const offboarding = ctx.reason === "offboarding";
    let creator = mgmt;
    let who: Who = "management";
    let serviceToken = old.serviceToken ?? false;
    if (offboarding && ctx.config.successorManagement) {
      creator = await ctx.resolve(ctx.config.successorManagement);
      who = "successor";
      await checkSuccessor(ctx, mgmt, creator, old);
    } else if (offboarding) {
      // Offboarding: a service token belongs to the account and outlives the departing member.
      serviceToken = true;
    }
    const body: Record<string, unknown> = {
      name: `${(old.name ?? "token").replace(NAME_MARK_RE, "")} (rekey ${ctx.rotationId.slice(0, 8)})`,
      description: [(old.description ?? "").replace(MARKER_RE, "").trim(), marker(ctx)].filter(Boolean).join(" "),
      serviceToken,
    };
    if (old.customRoleIds?.length) body.customRoleIds = old.customRoleIds;
    if (old.inlineRole?.length) body.inlineRole = old.inlineRole;
    if (old.role && !old.customRoleIds?.length && !old.inlineRole?.length) body.role = old.role;
    if (old.defaultApiVersion) body.defaultApiVersion = old.defaultApiVersion;
    let created;
    try {
      created = await call(ctx, who, creator, "POST", "/api/v2/tokens", TokenWithSecret, body);
    } catch (err) {
      if (err instanceof HttpStatusError && (err.status === 400 || err.status === 409)) {
        throw new PermanentError(
          `${err.message} (policy ${ctx.policyId}): if the account reached its access-token limit, delete unused tokens in LaunchDarkly and retry`,
        );
      }
      throw err;
    }
    if (offboarding && !created.serviceToken && created.memberId && created.memberId === old.memberId) {
      // The new token would die with the member it is meant to outlive: undo and stop.
      await remove(ctx, mgmt, created._id);
      throw new PermanentError(
        `launchdarkly POST /api/v2/tokens (policy ${ctx.policyId}): the new token belongs to the departing member; successorManagement must be a token of the successor`,
      );
    }
    return created;
  }

  /** The successor's credential must really be the successor's: else offboarding hands the token to someone else. */
  async function checkSuccessor(ctx: Ctx, mgmt: string, successorToken: string, old: Token): Promise<void> {
    const who = await identity(ctx, "successor", successorToken);
    if (who.memberId && who.memberId === old.memberId) {
      throw new PermanentError(
        `launchdarkly GET /api/v2/caller-identity (policy ${ctx.policyId}): successorManagement is a token of the departing member; give a token of the successor`,
      );
    }
    if (!ctx.successor || !who.memberId) return;
    const member = await call(ctx, "management", mgmt, "GET", `/api/v2/members/${enc(who.memberId)}`, Member);
    if (member.email.toLowerCase() !== ctx.successor.toLowerCase()) {
      throw new PermanentError(
        `launchdarkly GET /api/v2/members/{id} (policy ${ctx.policyId}): successorManagement belongs to ${member.email}, not to the successor ${ctx.successor}; give a token of the successor`,
      );
    }
  }

  async function reset(ctx: Ctx, mgmt: string, id: string): Promise<IssuedCredential> {
    // A leak must not leave the exposed secret alive: reset without expiry kills it at once.
    const expiry = ctx.reason !== "leak" && ctx.config.resetExpiry ? ctx.now() + ctx.config.resetExpiry : undefined;
    const query = expiry === undefined ? "" : `?expiry=${expiry}`;
    let t;
    try {
      t = await call(ctx, "management", mgmt, "POST", `/api/v2/tokens/${enc(id)}/reset${query}`, TokenWithSecret);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) throw missingOld(ctx, id);
      throw err;
    }
    if (t._id !== id) {
      throw new PermanentError(`launchdarkly POST /api/v2/tokens/{id}/reset (policy ${ctx.policyId}): answered with token ${t._id} instead of ${id}`);
    }
    return { value: t.token, credentialId: t._id, meta: metaOf(t) };
  }

  /**
   * Delete every token whose description carries `mark`, except `keep`, tokens whose description
   * carries one of `keepMarks`, and the management token itself.
   */
  async function removeMarked(ctx: Ctx, mark: string, keep: string[], keepMarks: string[] = []): Promise<string[]> {
    const mgmt = await ctx.resolve(ctx.config.management);
    const all = await listAll(ctx, mgmt, "/api/v2/tokens?showAll=true", Token);
    const candidates = all.filter((t) => {
      const description = t.description ?? "";
      return !keep.includes(t._id) && description.includes(mark) && !keepMarks.some((k) => description.includes(k));
    });
    if (candidates.length === 0) return [];
    const self = await selfId(ctx, mgmt);
    const removed: string[] = [];
    for (const t of candidates) {
      if (t._id === self) continue;
      await remove(ctx, mgmt, t._id);
      removed.push(t._id);
    }
    return removed;
  }

  return {
    kind: "launchdarkly",

    capabilities: (config) => capabilitiesOf(config),

    rotationConfig: (config, reason) => (reason === "offboarding" && config.strategy === "reset-with-expiry" ? { ...config, strategy: "create-delete" } : config),

    async identify(ctx, value) {
      const who = await identity(ctx, "current", value);
      return { credentialId: who.tokenId, meta: identityMeta(who) };
    },

    async sweep(ctx, keep, opts) {
      if (ctx.config.strategy === "reset-with-expiry" || keep.length === 0) return [];
      return removeMarked(ctx, `[rekey policy=${ctx.policyId} rotation=`, keep, (opts?.keepRotations ?? []).map((r) => `rotation=${r}]`));
    },

    async isLive(ctx, value) {
      try {
        await identity(ctx, "current", value);
        return true;
      } catch (err) {
        // caller-identity answers 401 for a token that does not exist (deleted or expired).
        if (err instanceof HttpStatusError && err.status === 401) return false;
        throw err;
      }
    },

    async cleanupOrphans(ctx, keep) {
      // A reset keeps the token's id and makes nothing new: there is never an orphan to remove.
      if (ctx.config.strategy === "reset-with-expiry") return [];
      return removeMarked(ctx, `rotation=${ctx.rotationId}]`, keep?.credentialId ? [keep.credentialId] : []);
    },

    async issue(ctx, old) {
      if (!old?.value) {
        throw new PermanentError(
          `launchdarkly (policy ${ctx.policyId}): the secret holds no current token. rekey rotates an existing token by copying its role; put the current LaunchDarkly token in the secret first`,
        );
      }
      const oldId = old.credentialId ?? (await identity(ctx, "current", old.value)).tokenId;
      const mgmt = await ctx.resolve(ctx.config.management);
      if (ctx.config.strategy === "reset-with-expiry") return reset(ctx, mgmt, oldId);
      const current = await getToken(ctx, mgmt, oldId);
      if (!current) throw missingOld(ctx, oldId);
      const created = await createToken(ctx, mgmt, current);
      return { value: created.token, credentialId: created._id, meta: metaOf(created) };
    },

    async verify(ctx, value, expected) {
      const who = await identity(ctx, "new", value);
      if (expected.credentialId && who.tokenId !== expected.credentialId) {
        throw new VerificationError(
          `launchdarkly GET /api/v2/caller-identity (policy ${ctx.policyId}): the new value belongs to token ${who.tokenId}, expected ${expected.credentialId}; the value in the store is not the token rekey issued`,
        );
      }
    },

    revokesById: true,

    async revoke(ctx, old) {
      // A reset kept the id: deleting it would kill the new secret. The old one expires by itself.
      if (ctx.config.strategy === "reset-with-expiry") return;
      let id = old.credentialId;
      if (!id) {
        try {
          id = (await identity(ctx, "current", old.value)).tokenId;
        } catch (err) {
          if (err instanceof HttpStatusError && err.status === 401) return; // the value no longer works: already revoked
          throw err;
        }
      }
      const mgmt = await ctx.resolve(ctx.config.management);
      if ((await selfId(ctx, mgmt)) === id) {
        throw new PermanentError(
          `launchdarkly DELETE /api/v2/tokens/${id} (policy ${ctx.policyId}): this is the management token rekey itself uses; refusing to delete it. Use a separate admin token as management`,
        );
      }
      await remove(ctx, mgmt, id);
    },

    async listByOwner(ctx, member) {
      const mgmt = await ctx.resolve(ctx.config.management);
      const members = await listAll(ctx, mgmt, "/api/v2/members", Member);
      const m = members.find((x) => x.email.toLowerCase() === member.toLowerCase() || x._id === member);
      if (!m) {
        throw new PermanentError(`launchdarkly GET /api/v2/members (policy ${ctx.policyId}): no member ${member} in this account; check the email address`);
      }
      const tokens = await listAll(ctx, mgmt, "/api/v2/tokens?showAll=true", Token);
      return tokens
        .filter((t) => t.memberId === m._id)
        .map(
          (t): OwnedCredential => ({
            credentialId: t._id,
            name: t.name ?? "",
            owner: member,
            kind: t.serviceToken ? "service" : "personal",
            lastUsed: t.lastUsed ?? undefined,
          }),
        );
    },

    async lastUsed(ctx, handle: CredentialHandle) {
      if (!handle.credentialId) return undefined;
      const mgmt = await ctx.resolve(ctx.config.management);
      const t = await getToken(ctx, mgmt, handle.credentialId);
      return t?.lastUsed ?? undefined;
    },
  };
}

/** The default instance (global fetch, system clock). */
export const launchDarkly: Provider<"launchdarkly"> = createLaunchDarklyProvider();

function baseUrl(config: Config): string {
  return (config.baseUrl ?? LAUNCHDARKLY_DEFAULT_BASE_URL).replace(/\/+$/, "");
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

function identityMeta(who: CallerIdentity): Record<string, string> {
  const meta: Record<string, string> = { serviceToken: String(who.serviceToken ?? false) };
  if (who.memberId) meta.memberId = who.memberId;
  if (who.tokenName) meta.tokenName = who.tokenName;
  return meta;
}

function metaOf(t: Token): Record<string, string> {
  const meta: Record<string, string> = { serviceToken: String(t.serviceToken ?? false) };
  if (t.memberId) meta.memberId = t.memberId;
  if (t.name) meta.tokenName = t.name;
  return meta;
}

function missingOld(ctx: Ctx, id: string): PermanentError {
  return new PermanentError(
    `launchdarkly GET /api/v2/tokens/${id} (policy ${ctx.policyId}): 404: the current token no longer exists in LaunchDarkly; put a live token in the secret and retry`,
  );
}

/** 401/403 mean different things depending on whose token made the call. */
function explain(ctx: Ctx, who: Who, err: unknown): unknown {
  if (!(err instanceof HttpStatusError) || (err.status !== 401 && err.status !== 403)) return err;
  const where = `${err.message} (policy ${ctx.policyId})`;
  switch (who) {
    case "management":
      return new PermanentError(`${where}: the management token is invalid or lacks admin rights; give rekey an admin-role LaunchDarkly access token`);
    case "successor":
      return new PermanentError(
        `${where}: the successorManagement token is invalid or may not create this token's role; give a live token of the successor with enough rights`,
      );
    case "current":
      // Keep the HttpStatusError class for 401 so revoke can tell "already dead" apart.
      return err.status === 401
        ? new HttpStatusError(401, `${where}: the current value in the secret is not a live LaunchDarkly token; put the current token in the secret`, err.response)
        : new PermanentError(`${where}: the current token may not read its own identity`);
    case "new":
      return new VerificationError(`${where}: LaunchDarkly refused the new token`);
  }
}
