/**
 * The one place the API decides who a caller is and whether they may do what they ask.
 *
 * `guard.requireScope("operator")` is a fastify `onRequest` hook: it runs before the body is
 * read, so an unauthenticated request costs no body parsing and no Redis write. Every refusal is
 * the same for an id that exists and one that does not: 401 without valid credentials, 403 for
 * an identity that lacks the scope. Routes added later (a dashboard, submit links) take the same
 * hook: `app.guard.requireScope("viewer")`.
 */
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from "fastify";
import { tokenHash, tokenMatches } from "../consumers/fingerprint.ts";
import { actorOf, hasScope, type Identity, type Scope } from "./identity.ts";
import { looksLikeJwt, type OidcVerifier } from "./jwt.ts";
import type { RefusalReason, Refusals } from "./refusals.ts";
import { type ApiTokens, looksLikeApiToken } from "./tokens.ts";
import { lingerOnClose } from "../util/linger-close.ts";

declare module "fastify" {
  interface FastifyRequest {
    /** Set by Guard.requireScope once the caller is authenticated. */
    identity: Identity | null;
  }
  interface FastifyInstance {
    guard: Guard;
  }
}

/** The one answer to every request without valid credentials. */
export const UNAUTHENTICATED = "unauthenticated: send a valid token (Authorization: Bearer <token>)";

/** Longest credential looked at; anything longer is refused unread. */
const MAX_CREDENTIAL = 8_192;

export interface GuardOptions {
  tokens?: Pick<ApiTokens, "identify">;
  oidc?: Pick<OidcVerifier, "identify">;
  /** `sha256:<hex>` of the bootstrap admin token (REKEY_ADMIN_TOKEN_HASH). */
  adminTokenHash?: string;
  refusals: Refusals;
  /** Whether `sha256:<hex>` is the token hash of a push consumer of a loaded policy. */
  consumerTokenKnown?: (hash: string) => boolean;
  /**
   * Per-identity rate limit, applied after authentication (keys bounded by the number of
   * identities). Resolves to the seconds to wait when the identity is over its limit.
   */
  limitIdentity?: (req: FastifyRequest, identity: Identity) => Promise<number | undefined>;
}

export function bearerOf(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h || h.length > MAX_CREDENTIAL + 10) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

/** The password of HTTP Basic credentials (browsers cannot send a bearer header to Bull Board). */
export function basicPasswordOf(req: FastifyRequest): string | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.headers.authorization ?? "");
  if (!m?.[1] || m[1].length > MAX_CREDENTIAL * 2) return undefined;
  const decoded = Buffer.from(m[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon >= 0 ? decoded.slice(colon + 1) || undefined : undefined;
}

/** Bodies larger than this that a refusal leaves unread are not drained: the connection closes instead. */
const DRAIN_AT_MOST = 4 * 1024;

/**
 * A refusal answered before the body was read (or a 413) would otherwise make Node read and drop
 * the rest of a large body to keep the connection alive: close it instead, in stages and without
 * reading on (src/util/linger-close.ts), so a flood of big bodies costs rekey little more than
 * their headers, and the client still reads the answer.
 */
export function closeUnread(req: FastifyRequest, reply: FastifyReply): void {
  const length = Number(req.headers["content-length"] ?? 0);
  if (req.raw.complete || (length <= DRAIN_AT_MOST && req.headers["transfer-encoding"] === undefined)) return;
  reply.header("connection", "close");
  lingerOnClose(req.raw.socket);
}

export function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? "unknown";
}

export class Guard {
  constructor(private readonly opts: GuardOptions) {}

  /** The identity behind a presented credential, or undefined. Reads Redis at most once; never writes. */
  async identify(credential: string | undefined): Promise<Identity | undefined> {
    if (!credential || credential.length > MAX_CREDENTIAL) return undefined;
    if (looksLikeJwt(credential)) return this.opts.oidc?.identify(credential);
    if (this.opts.adminTokenHash && tokenMatches(credential, this.opts.adminTokenHash)) return { name: "admin", via: "admin-token-hash", scopes: ["admin"] };
    return this.opts.tokens?.identify(credential);
  }

  /**
   * Whether `credential` could authenticate at all, decided without Redis: a named token's shape
   * (looked up next), a JWT where an issuer is configured, the admin token, or the token of a
   * loaded policy's push consumer (its hash is in the policy). A credential that cannot is refused
   * without a Redis round trip and, on the confirmation routes, without reading the body.
   */
  mayAuthenticate(credential: string | undefined): boolean {
    if (!credential || credential.length > MAX_CREDENTIAL) return false;
    if (looksLikeJwt(credential)) return this.opts.oidc !== undefined;
    if (looksLikeApiToken(credential)) return this.opts.tokens !== undefined;
    if (this.opts.adminTokenHash && tokenMatches(credential, this.opts.adminTokenHash)) return true;
    return this.opts.consumerTokenKnown?.(tokenHash(credential)) ?? false;
  }

  /** Counts, logs (rate-limited) and answers a refusal. */
  refuse(req: FastifyRequest, reply: FastifyReply, status: 401 | 403, reason: RefusalReason, message: string, identity?: Identity): FastifyReply {
    this.opts.refusals.note(reason, routeOf(req), { ip: req.ip, identity: identity ? actorOf(identity) : undefined });
    closeUnread(req, reply);
    if (status === 401 && !reply.hasHeader("www-authenticate")) reply.header("www-authenticate", 'Bearer realm="rekey"');
    return reply.code(status).send({ error: message });
  }

  /** Counts the request against the identity's own limit: the seconds to wait when it is over it. */
  async identityLimit(req: FastifyRequest, identity: Identity): Promise<number | undefined> {
    return this.opts.limitIdentity?.(req, identity);
  }

  /** Counts and answers an identity's request over its limit: 429 with Retry-After. */
  tooMany(req: FastifyRequest, reply: FastifyReply, identity: Identity, wait: number): FastifyReply {
    this.opts.refusals.note("rate-limited", routeOf(req), { ip: req.ip, identity: actorOf(identity) });
    return reply.code(429).header("retry-after", String(wait)).send({ error: `too many requests from ${actorOf(identity)}; retry in ${wait} s` });
  }

  /** Answers 429 with Retry-After when the identity is over its own limit; true when it did. */
  async overLimit(req: FastifyRequest, reply: FastifyReply, identity: Identity): Promise<boolean> {
    const wait = await this.identityLimit(req, identity);
    if (wait === undefined) return false;
    this.tooMany(req, reply, identity, wait);
    return true;
  }

  /**
   * A hook that lets a request through only with an identity holding `scope` (or one of several;
   * admin holds every scope, operator holds viewer). `basic`: also take the token as an HTTP Basic
   * password. The identity is then `req.identity`.
   */
  requireScope(scope: Scope | Scope[], opts: { basic?: boolean } = {}): onRequestAsyncHookHandler {
    const anyOf = Array.isArray(scope) ? scope : [scope];
    return async (req, reply) => {
      const credential = bearerOf(req) ?? (opts.basic ? basicPasswordOf(req) : undefined);
      const identity = await this.identify(credential);
      if (!identity) {
        if (opts.basic) reply.header("www-authenticate", 'Basic realm="rekey"');
        return this.refuse(req, reply, 401, "unauthenticated", UNAUTHENTICATED);
      }
      if (!anyOf.some((s) => hasScope(identity, s))) return this.refuse(req, reply, 403, "forbidden", `${actorOf(identity)} does not hold the ${anyOf.join(" or ")} scope`, identity);
      req.identity = identity;
      if (await this.overLimit(req, reply, identity)) return reply;
    };
  }
}
