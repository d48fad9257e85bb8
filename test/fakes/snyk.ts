/**
 * A Snyk API fake on HttpFake (real HTTP on 127.0.0.1): the REST API under `/rest`, the OAuth
 * token endpoint, and test hooks for what only Snyk's web UI can do (regenerate a user's API
 * token, create a personal access token).
 *
 * It keeps the rules rotation depends on: every REST call needs `?version=YYYY-MM-DD`, request
 * bodies must be `application/vnd.api+json`, answers are JSON:API with that content type, a
 * service account holds at most two client secrets and never zero, a client secret appears only
 * in the answer that created it, a regenerated user token kills the old one at once, at most three
 * active PATs of at most 90 days, and 429s without rate-limit headers until the window passes.
 *
 * Choices where Snyk's exact answer is not documented:
 * - A third `create`, deleting the last secret and deleting an unknown one answer 400 by default
 *   (a status the endpoint documents); `secretRefusals: "404/409"` answers 409, 409 and 404
 *   instead, so tests show that rekey decides from neither (it exchanges the secret at
 *   /oauth2/token to learn whether it still exists).
 * - `GET /rest/self` for an OAuth access token answers `type: "service_account"` with the
 *   account's id; for a user credential `type: "user"` with name, username and email.
 * - Access tokens stay valid until they expire, even after the secret they came from is deleted.
 * - Permission: a user may manage service accounts of the orgs and groups it is a member of (an
 *   org member of a group's org counts for that org only; a group member counts for its orgs too).
 */
import { randomUUID } from "node:crypto";
import { authHeader, HttpFake, mintSecret, type FakeReply, type FakeRequest } from "./http-fake.ts";

const JSONAPI = "application/vnd.api+json";
const VERSION = /^\d{4}-\d{2}-\d{2}(~(beta|experimental))?$/;
const DAY_MS = 86_400_000;

export type SnykAuthType = "api_key" | "access_token" | "oauth_client_secret" | "oauth_private_key_jwt";

export interface SnykFakeOptions {
  /**
   * Requests allowed per key (credential, or OAuth client id at `/oauth2/token`) per window
   * before 429. `true` = Snyk's 1,620. Default: off.
   */
  rateLimit?: boolean | number;
  /** Rate-limit window in ms. Default 60 000 (one minute). */
  rateWindowMs?: number;
  /**
   * Adds `Retry-After` (seconds) to 429 answers. Snyk documents no rate-limit headers, so this is
   * off by default; it exists to test that a client honours the header where one is sent.
   */
  retryAfterSeconds?: number;
  /** Lifetime of OAuth access tokens in seconds. Default 3600. */
  accessTokenTtlSeconds?: number;
  /** Clock in epoch ms (PAT expiry, access-token expiry, rate windows). Default Date.now. */
  now?: () => number;
  /**
   * Statuses of the refusals Snyk does not document (third create, delete of the last or of an
   * unknown secret): `400` (default, a status the endpoint lists) or `"404/409"` (409 for the
   * first two, 404 for the unknown secret).
   */
  secretRefusals?: 400 | "404/409";
}

export interface SnykUser {
  id: string;
  name: string;
  username: string;
  email: string;
  /** The user's one API token (regenerated only through `regenerateUserToken`). */
  apiToken: string;
  orgs: Set<string>;
  groups: Set<string>;
}

export interface SnykPat {
  id: string;
  userId: string;
  name: string;
  token: string;
  createdAt: number;
  expiresAt: number;
  deleted: boolean;
}

export interface SnykServiceAccount {
  id: string;
  name: string;
  scope: { kind: "org" | "group"; id: string };
  authType: SnykAuthType;
  clientId: string;
  /** Live client secrets (oauth_client_secret), oldest first. */
  secrets: string[];
  /** The account's API token (api_key). */
  apiKey?: string;
}

interface AccessToken {
  serviceAccountId: string;
  expiresAt: number;
}

type Principal = { kind: "user"; user: SnykUser } | { kind: "service_account"; account: SnykServiceAccount };

/** An answer served once instead of the real one (malformed-body tests). */
interface Override {
  route: string | RegExp;
  reply: FakeReply;
}

export class SnykFake extends HttpFake {
  readonly users = new Map<string, SnykUser>();
  readonly pats = new Map<string, SnykPat>();
  readonly serviceAccounts = new Map<string, SnykServiceAccount>();
  /** org id → its group id (if any). */
  readonly orgs = new Map<string, string | undefined>();
  readonly groups = new Set<string>();
  private readonly accessTokens = new Map<string, AccessToken>();
  private readonly windows = new Map<string, { start: number; count: number }>();
  private readonly overrides: Override[] = [];
  private readonly now: () => number;

  constructor(private readonly options: SnykFakeOptions = {}) {
    super((req) => this.route(req), {
      rateLimited: () => this.tooManyRequests(),
      serverError: () => jsonApiError(500, "Internal server error (injected)"),
    });
    this.now = options.now ?? Date.now;
  }

  // ---- seeding -------------------------------------------------------------------------------

  addGroup(id: string = randomUUID()): string {
    this.groups.add(id);
    return id;
  }

  addOrg(opts: { id?: string; groupId?: string } = {}): string {
    const id = opts.id ?? randomUUID();
    if (opts.groupId) this.groups.add(opts.groupId);
    this.orgs.set(id, opts.groupId);
    return id;
  }

  addUser(opts: { name?: string; email?: string; orgs?: string[]; groups?: string[] } = {}): SnykUser {
    const id = randomUUID();
    const username = opts.email?.split("@")[0] ?? `user-${id.slice(0, 8)}`;
    const user: SnykUser = {
      id,
      name: opts.name ?? username,
      username,
      email: opts.email ?? `${username}@example.com`,
      apiToken: randomUUID(),
      orgs: new Set(opts.orgs ?? []),
      groups: new Set(opts.groups ?? []),
    };
    this.users.set(id, user);
    return user;
  }

  /** A service account under an org or a group; oauth_client_secret accounts start with one secret. */
  addServiceAccount(opts: { orgId?: string; groupId?: string; name?: string; authType?: SnykAuthType }): SnykServiceAccount {
    const scope = opts.orgId ? { kind: "org" as const, id: opts.orgId } : opts.groupId ? { kind: "group" as const, id: opts.groupId } : undefined;
    if (!scope) throw new Error("addServiceAccount: give orgId or groupId");
    if (scope.kind === "org" && !this.orgs.has(scope.id)) this.addOrg({ id: scope.id });
    if (scope.kind === "group") this.groups.add(scope.id);
    const authType = opts.authType ?? "oauth_client_secret";
    const account: SnykServiceAccount = {
      id: randomUUID(),
      name: opts.name ?? "rotation-test",
      scope,
      authType,
      clientId: randomUUID(),
      secrets: authType === "oauth_client_secret" ? [mintSecret("snyk_cs_")] : [],
      apiKey: authType === "api_key" ? randomUUID() : undefined,
    };
    this.serviceAccounts.set(account.id, account);
    return account;
  }

  /** What the UI's "Revoke & Regenerate" does: a new API token, the old one dies at once. */
  regenerateUserToken(userId: string): string {
    const user = this.users.get(userId);
    if (!user) throw new Error(`regenerateUserToken: unknown user ${userId}`);
    user.apiToken = randomUUID();
    return user.apiToken;
  }

  /** What the UI's "Create token" does for a PAT (at most 3 active, at most 90 days). */
  createPat(userId: string, opts: { name: string; expiresInDays?: number }): SnykPat {
    if (!this.users.has(userId)) throw new Error(`createPat: unknown user ${userId}`);
    const days = opts.expiresInDays ?? 30;
    if (days < 1 || days > 90) throw new Error(`createPat: expiry must be 1-90 days, got ${days}`);
    if (this.activePats(userId).length >= 3) throw new Error("createPat: a user can hold at most 3 active personal access tokens");
    const now = this.now();
    const pat: SnykPat = {
      id: randomUUID(),
      userId,
      name: opts.name,
      token: mintSecret("snyk_pat_", 32),
      createdAt: now,
      expiresAt: now + days * DAY_MS,
      deleted: false,
    };
    this.pats.set(pat.id, pat);
    return pat;
  }

  /** Serve `reply` once instead of the real answer to the next request matching `"METHOD path"`. */
  respondOnce(route: string | RegExp, reply: FakeReply): void {
    this.overrides.push({ route, reply });
  }

  // ---- inspection ----------------------------------------------------------------------------

  activePats(userId: string): SnykPat[] {
    const now = this.now();
    return [...this.pats.values()].filter((p) => p.userId === userId && !p.deleted && p.expiresAt > now);
  }

  secretsOf(serviceAccountId: string): string[] {
    return [...(this.serviceAccounts.get(serviceAccountId)?.secrets ?? [])];
  }

  /** Does this value authenticate anything (user token, PAT, API key, client secret, access token)? */
  isLive(value: string): boolean {
    if (this.accessTokens.has(value)) return (this.accessTokens.get(value)?.expiresAt ?? 0) > this.now();
    if ([...this.serviceAccounts.values()].some((a) => a.secrets.includes(value) || a.apiKey === value)) return true;
    return this.principalOf(`token ${value}`) !== undefined;
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private route(req: FakeRequest): FakeReply {
    const key = `${req.method} ${req.path}`;
    const i = this.overrides.findIndex((o) => (typeof o.route === "string" ? key.includes(o.route) : o.route.test(key)));
    if (i >= 0) {
      const [o] = this.overrides.splice(i, 1);
      if (o) return o.reply;
    }
    if (req.path === "/oauth2/token") return this.oauthToken(req);
    if (req.path === "/rest" || req.path.startsWith("/rest/")) return this.rest(req, req.path.slice("/rest".length));
    return jsonApiError(404, `no route for ${req.method} ${req.path}`);
  }

  private rest(req: FakeRequest, path: string): FakeReply {
    const version = req.query.get("version");
    if (!version) return jsonApiError(400, "The version query parameter is required (e.g. ?version=2024-10-15)");
    if (!VERSION.test(version)) return jsonApiError(400, `Invalid version "${version}": expected YYYY-MM-DD`);

    const auth = authHeader(req);
    const limited = this.rateLimit(auth ?? "anonymous");
    if (limited) return limited;
    const principal = auth ? this.principalOf(auth) : undefined;
    if (!principal) return jsonApiError(401, "Unauthorized: the credential is missing, invalid or expired");

    if (req.method === "POST" || req.method === "PATCH" || req.method === "PUT") {
      const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
      if (type !== JSONAPI) return jsonApiError(400, `Content-Type must be ${JSONAPI}, got "${type ?? ""}"`);
      if (req.json === undefined) return jsonApiError(400, "Request body is not valid JSON");
    }

    if (path === "/self" && req.method === "GET") return this.self(principal);
    if (path === "/self/personal_access_tokens" && req.method === "GET") return this.listPats(principal);
    const patMatch = /^\/self\/personal_access_tokens\/([^/]+)$/.exec(path);
    if (patMatch && req.method === "DELETE") return this.deletePat(principal, decodeURIComponent(patMatch[1] ?? ""));

    const sa = /^\/(orgs|groups)\/([^/]+)\/service_accounts(?:\/([^/]+)(\/secrets)?)?$/.exec(path);
    if (sa) {
      const scope = { kind: sa[1] === "orgs" ? ("org" as const) : ("group" as const), id: decodeURIComponent(sa[2] ?? "") };
      const id = sa[3] === undefined ? undefined : decodeURIComponent(sa[3]);
      return this.serviceAccountRoute(req, principal, scope, id, sa[4] !== undefined);
    }
    return jsonApiError(404, `no route for ${req.method} /rest${path}`);
  }

  private self(p: Principal): FakeReply {
    if (p.kind === "service_account") {
      return ok({ data: { type: "service_account", id: p.account.id, attributes: { name: p.account.name } } });
    }
    const u = p.user;
    return ok({ data: { type: "user", id: u.id, attributes: { name: u.name, username: u.username, email: u.email } } });
  }

  private listPats(p: Principal): FakeReply {
    if (p.kind !== "user") return jsonApiError(403, "Only users have personal access tokens");
    const data = [...this.pats.values()]
      .filter((t) => t.userId === p.user.id && !t.deleted)
      .map((t) => ({
        type: "personal_access_token",
        id: t.id,
        attributes: { name: t.name, created_at: new Date(t.createdAt).toISOString(), expires_at: new Date(t.expiresAt).toISOString() },
      }));
    return ok({ data, links: { self: "/self/personal_access_tokens" } });
  }

  private deletePat(p: Principal, id: string): FakeReply {
    if (p.kind !== "user") return jsonApiError(403, "Only users have personal access tokens");
    const pat = this.pats.get(id);
    if (!pat || pat.deleted || pat.userId !== p.user.id) return jsonApiError(404, `Personal access token ${id} not found`);
    pat.deleted = true;
    return { status: 204 };
  }

  private serviceAccountRoute(req: FakeRequest, p: Principal, scope: SnykServiceAccount["scope"], id: string | undefined, secrets: boolean): FakeReply {
    if (scope.kind === "org" ? !this.orgs.has(scope.id) : !this.groups.has(scope.id)) return jsonApiError(404, `${scope.kind} ${scope.id} not found`);
    if (!this.mayManage(p, scope)) return jsonApiError(403, `Forbidden: no permission to manage service accounts of ${scope.kind} ${scope.id}`);
    const inScope = [...this.serviceAccounts.values()].filter((a) => a.scope.kind === scope.kind && a.scope.id === scope.id);
    if (id === undefined) {
      if (req.method !== "GET") return jsonApiError(405, "Method not allowed");
      return ok({ data: inScope.map((a) => accountResource(a)), links: {} });
    }
    const account = inScope.find((a) => a.id === id);
    if (!account) return jsonApiError(404, `Service account ${id} not found in ${scope.kind} ${scope.id}`);
    if (!secrets) {
      if (req.method !== "GET") return jsonApiError(405, "Method not allowed");
      return ok({ data: accountResource(account) });
    }
    if (req.method !== "POST") return jsonApiError(405, "Method not allowed");
    return this.manageSecrets(req, account);
  }

  private manageSecrets(req: FakeRequest, account: SnykServiceAccount): FakeReply {
    const body = req.json as { data?: { type?: unknown; attributes?: { mode?: unknown; secret?: unknown } } } | undefined;
    if (body?.data?.type !== "service_account") return jsonApiError(400, 'data.type must be "service_account"');
    const mode = body.data.attributes?.mode;
    if (account.authType !== "oauth_client_secret") return jsonApiError(400, `Service account ${account.id} has auth_type ${account.authType}: it has no client secrets`);
    switch (mode) {
      case "create": {
        if (account.secrets.length >= 2) {
          return jsonApiError(this.refusal(409), "The service account already has the maximum of 2 client secrets; delete one before creating another");
        }
        const secret = mintSecret("snyk_cs_");
        account.secrets.push(secret);
        return ok({ data: accountResource(account, secret) }, 201);
      }
      case "delete": {
        const secret = body.data.attributes?.secret;
        if (typeof secret !== "string" || !secret) return jsonApiError(400, "data.attributes.secret is required for mode delete");
        const at = account.secrets.indexOf(secret);
        if (at < 0) return jsonApiError(this.refusal(404), "The secret matches no active secret of this service account");
        if (account.secrets.length === 1) return jsonApiError(this.refusal(409), "The last client secret of a service account cannot be deleted");
        account.secrets.splice(at, 1);
        return ok({ data: accountResource(account) });
      }
      case "replace": {
        const secret = mintSecret("snyk_cs_");
        account.secrets = [secret];
        return ok({ data: accountResource(account, secret) });
      }
      default:
        return jsonApiError(400, 'data.attributes.mode must be one of "create", "delete", "replace"');
    }
  }

  /** The status of an undocumented refusal: 400 unless the fake was asked for 404/409. */
  private refusal(legacy: 404 | 409): number {
    return this.options.secretRefusals === "404/409" ? legacy : 400;
  }

  private oauthToken(req: FakeRequest): FakeReply {
    if (req.method !== "POST") return oauthError(405, "invalid_request", "use POST");
    const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
    if (type !== "application/x-www-form-urlencoded") return oauthError(400, "invalid_request", "expected a form body (application/x-www-form-urlencoded)");
    const form = new URLSearchParams(req.text);
    const clientId = form.get("client_id") ?? "";
    const limited = this.rateLimit(`client:${clientId}`);
    if (limited) return limited;
    if (form.get("grant_type") !== "client_credentials") return oauthError(400, "unsupported_grant_type", "grant_type must be client_credentials");
    const account = [...this.serviceAccounts.values()].find((a) => a.clientId === clientId);
    const secret = form.get("client_secret") ?? "";
    if (!account || !account.secrets.includes(secret)) return oauthError(401, "invalid_client", "Client authentication failed");
    const ttl = this.options.accessTokenTtlSeconds ?? 3600;
    const token = mintSecret("snyk_at_", 32);
    this.accessTokens.set(token, { serviceAccountId: account.id, expiresAt: this.now() + ttl * 1000 });
    return { status: 200, headers: { "content-type": "application/json" }, body: { access_token: token, expires_in: ttl, token_type: "bearer", scope: "" } };
  }

  // ---- helpers -------------------------------------------------------------------------------

  private principalOf(header: string): Principal | undefined {
    const m = /^(token|bearer)\s+(\S+)$/i.exec(header.trim());
    if (!m) return undefined;
    const scheme = m[1]?.toLowerCase();
    const value = m[2] ?? "";
    const now = this.now();
    if (scheme === "bearer") {
      const at = this.accessTokens.get(value);
      const account = at && at.expiresAt > now ? this.serviceAccounts.get(at.serviceAccountId) : undefined;
      return account ? { kind: "service_account", account } : undefined;
    }
    for (const user of this.users.values()) if (user.apiToken === value) return { kind: "user", user };
    for (const pat of this.pats.values()) {
      if (pat.token === value && !pat.deleted && pat.expiresAt > now) {
        const user = this.users.get(pat.userId);
        if (user) return { kind: "user", user };
      }
    }
    for (const account of this.serviceAccounts.values()) if (account.apiKey === value) return { kind: "service_account", account };
    return undefined;
  }

  private mayManage(p: Principal, scope: SnykServiceAccount["scope"]): boolean {
    if (p.kind === "service_account") {
      const s = p.account.scope;
      if (s.kind === scope.kind && s.id === scope.id) return true;
      return s.kind === "group" && scope.kind === "org" && this.orgs.get(scope.id) === s.id;
    }
    if (scope.kind === "group") return p.user.groups.has(scope.id);
    const group = this.orgs.get(scope.id);
    return p.user.orgs.has(scope.id) || (group !== undefined && p.user.groups.has(group));
  }

  /** Fixed one-minute windows per key; a 429 has no rate-limit headers, as Snyk documents none. */
  private rateLimit(key: string): FakeReply | undefined {
    const limit = this.options.rateLimit === true ? 1_620 : this.options.rateLimit || undefined;
    if (limit === undefined) return undefined;
    const windowMs = this.options.rateWindowMs ?? 60_000;
    const now = this.now();
    let w = this.windows.get(key);
    if (!w || now >= w.start + windowMs) {
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count += 1;
    return w.count > limit ? this.tooManyRequests() : undefined;
  }

  private tooManyRequests(): FakeReply {
    const reply = jsonApiError(429, "Too many requests: the rate limit for this API key was exceeded");
    if (this.options.retryAfterSeconds !== undefined) reply.headers = { ...reply.headers, "retry-after": String(this.options.retryAfterSeconds) };
    return reply;
  }
}

function accountResource(a: SnykServiceAccount, clientSecret?: string) {
  const attributes: Record<string, unknown> = { name: a.name, auth_type: a.authType };
  if (a.authType === "oauth_client_secret") attributes.client_id = a.clientId;
  if (clientSecret !== undefined) attributes.client_secret = clientSecret;
  return { type: "service_account", id: a.id, attributes };
}

function ok(body: Record<string, unknown>, status = 200): FakeReply {
  return { status, headers: { "content-type": JSONAPI }, body: { jsonapi: { version: "1.0" }, ...body } };
}

export function jsonApiError(status: number, detail: string): FakeReply {
  return { status, headers: { "content-type": JSONAPI }, body: { jsonapi: { version: "1.0" }, errors: [{ status: String(status), detail }] } };
}

function oauthError(status: number, error: string, description: string): FakeReply {
  return { status, headers: { "content-type": "application/json" }, body: { error, error_description: description } };
}

/** Starts a Snyk fake on 127.0.0.1 (a free port); close it with `close()`. */
export async function startSnykFake(opts: SnykFakeOptions = {}): Promise<SnykFake> {
  return new SnykFake(opts).start();
}
