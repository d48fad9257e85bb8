/**
 * A LaunchDarkly REST API fake for access tokens, on HttpFake (real HTTP on 127.0.0.1).
 *
 * It keeps LaunchDarkly's rules that rotation depends on: `Authorization: <token>` without a
 * Bearer prefix, the full secret only in the create and reset answers (elsewhere the last four
 * characters), a deleted token refused with 401 everywhere, personal tokens dying with their
 * member, `lastUsed` on every authenticated call, a per-account token limit, and 10-second
 * rate-limit windows whose `X-Ratelimit-Reset` is in epoch milliseconds.
 *
 * Choices where LaunchDarkly's exact answer is not documented:
 * - Lacking permission (a non-admin token acting on another member's token, listing with
 *   `showAll=true`, or creating an admin, service or custom-role token) answers 403 `forbidden`.
 * - Creating a token beyond the account's token limit answers 400 `invalid_request` (the real
 *   status code is unconfirmed; it may be 409).
 * - Service tokens record the member who created them in `memberId`, and caller-identity reports
 *   it too; they do not die when that member is removed.
 * - Resetting with `expiry` keeps the old secret working until then (the real service may not).
 */
import { randomBytes } from "node:crypto";
import { authHeader, HttpFake, mintSecret, type FakeReply, type FakeRequest } from "./http-fake.ts";

export type LdRole = "reader" | "writer" | "admin";

export interface LaunchDarklyFakeOptions {
  /** Live tokens the account may hold; creating one more fails with 400. Default 40. */
  tokenLimit?: number;
  /** Requests per token per 10-second window before 429. Default: no limit. */
  rateLimitPerWindow?: number;
  /** Largest page the list endpoints return, whatever `limit` asks for. Default 1000. */
  maxPageSize?: number;
  /** Clock in epoch ms (token dates, `lastUsed`, reset expiry, rate-limit windows). Default Date.now. */
  now?: () => number;
  /**
   * Headers of an injected 429 fault: `reset` (default true) sends `X-Ratelimit-Reset` at the end
   * of the current window; `retryAfterSeconds` adds `Retry-After` (IP limits).
   */
  injected429?: { reset?: boolean; retryAfterSeconds?: number };
}

export interface LdMember {
  id: string;
  email: string;
  role: "owner" | "admin" | "writer" | "reader";
  removed: boolean;
}

/** A token as the fake holds it, for tests' invariant checks (includes the secret). */
export interface LdTokenState {
  id: string;
  state: "live" | "deleted";
  name: string;
  description: string;
  memberId: string;
  serviceToken: boolean;
  role?: LdRole;
  customRoleIds: string[];
  inlineRole: unknown[];
  defaultApiVersion?: number;
  creationDate: number;
  lastModified: number;
  lastUsed?: number;
  /** The current secret. */
  value: string;
  /** The secret before the last reset, working until `until` (epoch ms). */
  previous?: { value: string; until: number };
}

export interface AddTokenInput {
  /** Owner (personal token) or creator (service token); default: the account owner. */
  memberId?: string;
  role?: LdRole;
  customRoleIds?: string[];
  inlineRole?: unknown[];
  serviceToken?: boolean;
  name?: string;
  description?: string;
  defaultApiVersion?: number;
}

const WINDOW_MS = 10_000;
const API = "/api/v2";

export class LaunchDarklyFake extends HttpFake {
  readonly accountId = hexId();
  /** The account owner, created with the fake; tokens added without a memberId are theirs. */
  readonly ownerMemberId: string;
  /** `LD-API-Version` of every request, in order (undefined where the header was missing). */
  readonly apiVersions: (string | undefined)[] = [];
  /** Headers an injected 429 fault carries; tests may change it between calls. */
  injected429: { reset: boolean; retryAfterSeconds?: number };
  tokenLimit: number;
  rateLimitPerWindow: number | undefined;

  private readonly members = new Map<string, LdMember>();
  private readonly tokenMap = new Map<string, LdTokenState>();
  private readonly windows = new Map<string, { start: number; count: number }>();
  private readonly overrides: { route: string | RegExp; reply: FakeReply }[] = [];
  private readonly clock: () => number;
  private readonly maxPageSize: number;

  constructor(opts: LaunchDarklyFakeOptions = {}) {
    super((req) => this.withRateHeaders(this.route(req)), {
      rateLimited: () => this.rateLimitReply(this.injected429.reset, this.injected429.retryAfterSeconds),
      serverError: () => errorReply(500, "internal_server_error", "injected fault"),
    });
    this.clock = opts.now ?? Date.now;
    this.tokenLimit = opts.tokenLimit ?? 40;
    this.rateLimitPerWindow = opts.rateLimitPerWindow;
    this.maxPageSize = opts.maxPageSize ?? 1000;
    this.injected429 = { reset: opts.injected429?.reset ?? true, retryAfterSeconds: opts.injected429?.retryAfterSeconds };
    this.ownerMemberId = this.addMember("owner@example.com", "owner");
  }

  // ---- seeding and inspection -------------------------------------------------------------

  addMember(email: string, role: LdMember["role"] = "writer"): string {
    const id = hexId();
    this.members.set(id, { id, email, role, removed: false });
    return id;
  }

  /** Removing a member invalidates their personal tokens (service tokens survive). */
  removeMember(id: string): void {
    const m = this.members.get(id);
    if (m) m.removed = true;
  }

  addToken(input: AddTokenInput = {}): { id: string; value: string } {
    const t = this.createToken({
      memberId: input.memberId ?? this.ownerMemberId,
      name: input.name ?? "token",
      description: input.description ?? "",
      role: input.role ?? (input.customRoleIds?.length || input.inlineRole?.length ? undefined : "reader"),
      customRoleIds: input.customRoleIds ?? [],
      inlineRole: input.inlineRole ?? [],
      serviceToken: input.serviceToken ?? false,
      defaultApiVersion: input.defaultApiVersion,
    });
    return { id: t.id, value: t.value };
  }

  /** Every token ever made, deleted ones included (copies). */
  tokens(): LdTokenState[] {
    return [...this.tokenMap.values()].map((t) => structuredClone(t));
  }

  liveTokens(): LdTokenState[] {
    return this.tokens().filter((t) => this.tokenUsable(t));
  }

  /** Would LaunchDarkly accept this secret right now? */
  isLive(value: string): boolean {
    return this.authenticate(value) !== undefined;
  }

  /** The next request whose `"METHOD path"` matches gets this reply instead (malformed bodies, odd answers). */
  overrideNext(route: string | RegExp, reply: FakeReply): void {
    this.overrides.push({ route, reply });
  }

  // ---- request handling -------------------------------------------------------------------

  private route(req: FakeRequest): FakeReply {
    const version = header(req, "ld-api-version");
    this.apiVersions.push(version);
    const key = `${req.method} ${req.path}`;
    const o = this.overrides.findIndex((r) => (typeof r.route === "string" ? key.includes(r.route) : r.route.test(key)));
    if (o >= 0) {
      const [hit] = this.overrides.splice(o, 1);
      if (hit) return hit.reply;
    }
    if (version !== undefined && !/^(\d{8}|beta)$/.test(version)) {
      return errorReply(400, "invalid_request", "LD-API-Version must be a date such as 20240415 or beta");
    }

    const auth = authHeader(req);
    if (!auth) return errorReply(401, "unauthorized", "Missing Authorization header");
    if (/^bearer\s/i.test(auth)) {
      return errorReply(401, "unauthorized", "Invalid access token: send the token itself in Authorization, without a Bearer prefix");
    }
    const caller = this.authenticate(auth);
    if (!caller) return errorReply(401, "unauthorized", "Invalid access token");
    caller.lastUsed = this.clock();
    const limited = this.countRequest(caller.id);
    if (limited) return limited;

    const seg = req.path.startsWith(`${API}/`) ? req.path.slice(API.length + 1).split("/") : [];
    const [a, b, c] = seg;
    if (req.method === "GET" && a === "caller-identity" && seg.length === 1) return this.callerIdentity(caller);
    if (a === "tokens") {
      if (seg.length === 1 && req.method === "GET") return this.listTokens(caller, req);
      if (seg.length === 1 && req.method === "POST") return this.postToken(caller, req);
      if (b && seg.length === 2 && req.method === "GET") return this.withToken(caller, b, (t) => ({ status: 200, body: this.render(t, false) }));
      if (b && seg.length === 2 && req.method === "DELETE") return this.withToken(caller, b, (t) => this.deleteToken(t));
      if (b && c === "reset" && seg.length === 3 && req.method === "POST") return this.withToken(caller, b, (t) => this.resetToken(t, req));
    }
    if (a === "members" && req.method === "GET") {
      if (seg.length === 1) return this.page(req, [...this.members.values()].filter((m) => !m.removed).map((m) => this.renderMember(m)), `${API}/members`);
      const m = b ? this.members.get(b) : undefined;
      if (seg.length === 2) return m && !m.removed ? { status: 200, body: this.renderMember(m) } : errorReply(404, "not_found", "Unknown member");
    }
    return errorReply(404, "not_found", `No route for ${req.method} ${req.path}`);
  }

  private callerIdentity(caller: LdTokenState): FakeReply {
    return {
      status: 200,
      body: {
        accountId: this.accountId,
        tokenId: caller.id,
        tokenName: caller.name,
        tokenKind: "auth",
        authKind: "token",
        memberId: caller.memberId,
        serviceToken: caller.serviceToken,
      },
    };
  }

  private listTokens(caller: LdTokenState, req: FakeRequest): FakeReply {
    const showAll = req.query.get("showAll") === "true";
    if (showAll && !isAdmin(caller)) return errorReply(403, "forbidden", "Only admin tokens may list other members' tokens (showAll=true)");
    const visible = [...this.tokenMap.values()]
      .filter((t) => t.state === "live" && (showAll || t.memberId === caller.memberId))
      .sort((x, y) => x.creationDate - y.creationDate || x.id.localeCompare(y.id))
      .map((t) => this.render(t, false));
    return this.page(req, visible, `${API}/tokens`);
  }

  private postToken(caller: LdTokenState, req: FakeRequest): FakeReply {
    const parsed = parseCreate(req.json);
    if (typeof parsed === "string") return errorReply(400, "invalid_request", parsed);
    if (!isAdmin(caller)) {
      const asks = parsed.serviceToken || parsed.role === "admin" || parsed.customRoleIds.length > 0 || parsed.inlineRole.length > 0;
      if (asks || (parsed.role === "writer" && caller.role !== "writer")) {
        return errorReply(403, "forbidden", "This token may not create admin, service or custom-role tokens, nor tokens above its own role");
      }
    }
    const live = [...this.tokenMap.values()].filter((t) => t.state === "live").length;
    if (live >= this.tokenLimit) {
      return errorReply(400, "invalid_request", `Token limit reached: the account already has ${live} access tokens; delete unused tokens first`);
    }
    const t = this.createToken({ ...parsed, memberId: caller.memberId });
    return { status: 201, body: this.render(t, true) };
  }

  private withToken(caller: LdTokenState, id: string, act: (t: LdTokenState) => FakeReply): FakeReply {
    const t = this.tokenMap.get(id);
    if (!t || t.state === "deleted") return errorReply(404, "not_found", "Unknown access token");
    if (t.memberId !== caller.memberId && !isAdmin(caller)) return errorReply(403, "forbidden", "Only admin tokens may act on other members' tokens");
    return act(t);
  }

  private deleteToken(t: LdTokenState): FakeReply {
    t.state = "deleted";
    t.lastModified = this.clock();
    return { status: 204 };
  }

  private resetToken(t: LdTokenState, req: FakeRequest): FakeReply {
    const raw = req.query.get("expiry");
    let until = 0;
    if (raw !== null) {
      if (!/^\d+$/.test(raw)) return errorReply(400, "invalid_request", "expiry must be epoch milliseconds");
      until = Number(raw);
    }
    t.previous = until > this.clock() ? { value: t.value, until } : undefined;
    t.value = mintSecret("api-", 32);
    t.lastModified = this.clock();
    return { status: 200, body: this.render(t, true) };
  }

  // ---- helpers ------------------------------------------------------------------------------

  private createToken(fields: Omit<LdTokenState, "id" | "state" | "creationDate" | "lastModified" | "value">): LdTokenState {
    const now = this.clock();
    const t: LdTokenState = { ...fields, id: hexId(), state: "live", creationDate: now, lastModified: now, value: mintSecret("api-", 32) };
    this.tokenMap.set(t.id, t);
    return t;
  }

  private tokenUsable(t: LdTokenState): boolean {
    if (t.state !== "live") return false;
    if (t.serviceToken) return true;
    return this.members.get(t.memberId)?.removed !== true;
  }

  private authenticate(value: string): LdTokenState | undefined {
    const now = this.clock();
    for (const t of this.tokenMap.values()) {
      if (t.value === value || (t.previous?.value === value && t.previous.until > now)) return this.tokenUsable(t) ? t : undefined;
    }
    return undefined;
  }

  private countRequest(tokenId: string): FakeReply | undefined {
    if (this.rateLimitPerWindow === undefined) return undefined;
    const start = Math.floor(this.clock() / WINDOW_MS) * WINDOW_MS;
    const w = this.windows.get(tokenId);
    const current = w && w.start === start ? w : { start, count: 0 };
    current.count += 1;
    this.windows.set(tokenId, current);
    // As LaunchDarkly does, every counted answer says what is left of the caller's window.
    const left = String(Math.max(0, this.rateLimitPerWindow - current.count));
    this.rateHeaders = { "X-Ratelimit-Global-Remaining": left, "X-Ratelimit-Route-Remaining": left, "X-Ratelimit-Reset": String(start + WINDOW_MS) };
    return current.count > this.rateLimitPerWindow ? this.rateLimitReply(true) : undefined;
  }

  /** Headers of the request being answered (route() is synchronous, so nothing interleaves). */
  private rateHeaders: Record<string, string> | undefined;

  private withRateHeaders(reply: FakeReply): FakeReply {
    const headers = this.rateHeaders;
    this.rateHeaders = undefined;
    return headers ? { ...reply, headers: { ...headers, ...reply.headers } } : reply;
  }

  private rateLimitReply(withReset: boolean, retryAfterSeconds?: number): FakeReply {
    const headers: Record<string, string> = { "X-Ratelimit-Global-Remaining": "0", "X-Ratelimit-Route-Remaining": "0" };
    if (withReset) headers["X-Ratelimit-Reset"] = String(Math.floor(this.clock() / WINDOW_MS) * WINDOW_MS + WINDOW_MS);
    if (retryAfterSeconds !== undefined) headers["Retry-After"] = String(retryAfterSeconds);
    return { ...errorReply(429, "rate_limited", "You've exceeded the API rate limit. Try again later."), headers };
  }

  private page(req: FakeRequest, all: unknown[], path: string): FakeReply {
    const limit = Math.min(positiveInt(req.query.get("limit")) ?? 25, this.maxPageSize);
    const offset = positiveInt(req.query.get("offset")) ?? 0;
    const items = all.slice(offset, offset + limit);
    const links: Record<string, { href: string; type: string }> = { self: { href: `${path}?limit=${limit}&offset=${offset}`, type: "application/json" } };
    if (offset + limit < all.length) links.next = { href: `${path}?limit=${limit}&offset=${offset + limit}`, type: "application/json" };
    return { status: 200, body: { items, totalCount: all.length, _links: links } };
  }

  private render(t: LdTokenState, withSecret: boolean): Record<string, unknown> {
    const m = this.members.get(t.memberId);
    return {
      _id: t.id,
      ownerId: t.memberId,
      memberId: t.memberId,
      _member: m ? { _id: m.id, email: m.email, role: m.role } : undefined,
      name: t.name,
      description: t.description,
      creationDate: t.creationDate,
      lastModified: t.lastModified,
      role: t.role,
      customRoleIds: t.customRoleIds,
      inlineRole: t.inlineRole,
      serviceToken: t.serviceToken,
      defaultApiVersion: t.defaultApiVersion,
      lastUsed: t.lastUsed,
      token: withSecret ? t.value : t.value.slice(-4),
      _links: { self: { href: `${API}/tokens/${t.id}`, type: "application/json" } },
    };
  }

  private renderMember(m: LdMember): Record<string, unknown> {
    return { _id: m.id, email: m.email, role: m.role, _links: { self: { href: `${API}/members/${m.id}`, type: "application/json" } } };
  }
}

/** Starts a LaunchDarkly fake on 127.0.0.1 with a random port; `close()` it after the test. */
export async function startLaunchDarklyFake(opts: LaunchDarklyFakeOptions = {}): Promise<LaunchDarklyFake> {
  return new LaunchDarklyFake(opts).start();
}

function isAdmin(t: LdTokenState): boolean {
  return t.role === "admin";
}

function errorReply(status: number, code: string, message: string): FakeReply {
  return { status, body: { code, message, id: randomBytes(8).toString("hex") } };
}

function hexId(): string {
  return randomBytes(12).toString("hex");
}

function header(req: FakeRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function positiveInt(v: string | null): number | undefined {
  if (v === null || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

type CreateFields = Pick<LdTokenState, "name" | "description" | "role" | "customRoleIds" | "inlineRole" | "serviceToken" | "defaultApiVersion">;

/** Validates a POST /api/v2/tokens body; a string is the 400 message. */
function parseCreate(body: unknown): CreateFields | string {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "Request body must be a JSON object";
  const b = body as Record<string, unknown>;
  const known = new Set(["name", "description", "role", "customRoleIds", "inlineRole", "serviceToken", "defaultApiVersion"]);
  const unknownKey = Object.keys(b).find((k) => !known.has(k));
  if (unknownKey) return `Unknown field ${unknownKey}`;
  if (b.name !== undefined && typeof b.name !== "string") return "name must be a string";
  if (b.description !== undefined && typeof b.description !== "string") return "description must be a string";
  if (b.role !== undefined && b.role !== "reader" && b.role !== "writer" && b.role !== "admin") return "role must be reader, writer or admin";
  if (b.customRoleIds !== undefined && !(Array.isArray(b.customRoleIds) && b.customRoleIds.every((x) => typeof x === "string"))) {
    return "customRoleIds must be an array of strings";
  }
  if (b.inlineRole !== undefined && !Array.isArray(b.inlineRole)) return "inlineRole must be an array of policy statements";
  if (b.serviceToken !== undefined && typeof b.serviceToken !== "boolean") return "serviceToken must be a boolean";
  if (b.defaultApiVersion !== undefined && !Number.isInteger(b.defaultApiVersion)) return "defaultApiVersion must be an integer such as 20240415";
  const customRoleIds = (b.customRoleIds as string[] | undefined) ?? [];
  const inlineRole = (b.inlineRole as unknown[] | undefined) ?? [];
  if (b.role !== undefined && (customRoleIds.length > 0 || inlineRole.length > 0)) return "Give either role or customRoleIds/inlineRole, not both";
  return {
    name: (b.name as string | undefined) ?? "",
    description: (b.description as string | undefined) ?? "",
    role: (b.role as LdRole | undefined) ?? (customRoleIds.length || inlineRole.length ? undefined : "reader"),
    customRoleIds,
    inlineRole,
    serviceToken: (b.serviceToken as boolean | undefined) ?? false,
    defaultApiVersion: b.defaultApiVersion as number | undefined,
  };
}
