/**
 * Optional SSO: bearer JWTs issued by an OIDC provider, verified with `jose` against the
 * issuer's JWKS (signature, issuer, audience, expiry), their claims mapped to rekey scopes by
 * configuration. rekey never issues JWTs; it only reads them.
 */
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";
import { z } from "zod";
import { ConfigError } from "../errors.ts";
import { type Identity, SCOPES, type Scope } from "./identity.ts";

export interface OidcOptions {
  /** `iss` every token must carry (REKEY_OIDC_ISSUER). */
  issuer: string;
  /** `aud` every token must carry (REKEY_OIDC_AUDIENCE). */
  audience: string;
  /**
   * Where the issuer publishes its keys (REKEY_OIDC_JWKS_URL). Default: the `jwks_uri` of
   * `<issuer>/.well-known/openid-configuration`, read once at the first JWT.
   */
  jwksUrl?: string;
  /** Claim holding the caller's groups or roles (REKEY_OIDC_CLAIM). Default: `groups`. */
  claim: string;
  /** Claim value → rekey scope (REKEY_OIDC_SCOPE_MAP, e.g. `sre=operator,platform=admin`). */
  scopeMap: Record<string, Scope>;
  /** Accepted signature algorithms (asymmetric only). */
  algorithms?: string[];
  fetch?: typeof fetch;
}

const DEFAULT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
/** A subject printed in audit records and logs: printable, no spaces, bounded. */
const SUBJECT = /^[\x21-\x7e]{1,128}$/;

/** Parses REKEY_OIDC_SCOPE_MAP (`value=scope,value=scope`); consumer scopes are tokens only. */
export function parseScopeMap(text: string): Record<string, Scope> {
  const map: Record<string, Scope> = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.lastIndexOf("=");
    const value = part.slice(0, eq).trim();
    const scope = part.slice(eq + 1).trim() as Scope;
    if (eq <= 0 || !value) throw new ConfigError(`REKEY_OIDC_SCOPE_MAP: expected claim-value=scope pairs separated by commas, got "${part.slice(0, 60)}"`);
    if (!SCOPES.includes(scope) || scope === "consumer") throw new ConfigError(`REKEY_OIDC_SCOPE_MAP: "${scope.slice(0, 40)}" for ${value.slice(0, 60)} is not a scope a JWT can carry (admin, operator, viewer, submitter)`);
    map[value] = scope;
  }
  if (!Object.keys(map).length) throw new ConfigError("REKEY_OIDC_SCOPE_MAP: map at least one claim value to a scope (e.g. sre=operator)");
  return map;
}

const Discovery = z.object({ issuer: z.string(), jwks_uri: z.string().url() });

export class OidcVerifier {
  private jwks?: ReturnType<typeof createRemoteJWKSet>;

  constructor(private readonly opts: OidcOptions) {}

  private async keys(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    let url = this.opts.jwksUrl;
    if (!url) {
      const res = await (this.opts.fetch ?? fetch)(`${this.opts.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(5_000) });
      if (!res.ok) throw new ConfigError(`OIDC discovery at ${this.opts.issuer} answered ${res.status}`);
      const doc = Discovery.safeParse(await res.json());
      if (!doc.success) throw new ConfigError(`OIDC discovery at ${this.opts.issuer}: no jwks_uri in its openid-configuration`);
      url = doc.data.jwks_uri;
    }
    // jose caches the keys, refetches on an unknown key id at most every 30 s (a flood of tokens
    // with made-up key ids costs no more than that), and gives up on the JWKS after 5 s.
    this.jwks = createRemoteJWKSet(new URL(url), { timeoutDuration: 5_000, cooldownDuration: 30_000 });
    return this.jwks;
  }

  /** The identity a JWT stands for, or undefined when it does not verify or maps to no scope. */
  async identify(token: string): Promise<Identity | undefined> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, await this.keys(), { issuer: this.opts.issuer, audience: this.opts.audience, algorithms: this.opts.algorithms ?? DEFAULT_ALGORITHMS }));
    } catch {
      return undefined;
    }
    const sub = payload.sub;
    if (typeof sub !== "string" || !SUBJECT.test(sub)) return undefined;
    const raw = payload[this.opts.claim];
    const values = Array.isArray(raw) ? raw.filter((v): v is string => typeof v === "string") : typeof raw === "string" ? raw.split(/\s+/) : [];
    const scopes = [...new Set(values.map((v) => this.opts.scopeMap[v]).filter((s): s is Scope => s !== undefined))];
    if (!scopes.length) return undefined;
    const email = typeof payload.email === "string" && /^[^@\s]+@[^@\s]+$/.test(payload.email) ? payload.email : undefined;
    // A submitter submits for the policies its verified email owns; without one it is no submitter.
    const usable = scopes.filter((s) => s !== "submitter" || (email && payload.email_verified !== false));
    if (!usable.length) return undefined;
    return { name: sub, via: "jwt", scopes: usable, owner: usable.includes("submitter") ? email : undefined };
  }
}

/** Looks like a JWS compact serialization (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token) && token.length <= 8_192;
}
