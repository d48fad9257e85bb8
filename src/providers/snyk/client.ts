/**
 * What the three Snyk adapters share: the REST client (version pinned on every call, JSON:API
 * bodies), the OAuth token exchange, and the response schemas. Snyk documents no rate-limit
 * headers, so a 429 is waited out for about a minute unless the answer carries Retry-After.
 */
import { z } from "zod";
import { PermanentError, VerificationError } from "../../errors.ts";
import { HttpStatusError, ProviderHttp, retryAfterHeader, type HttpResponse } from "../http.ts";

/** Default API host (`api.us.snyk.io`, `api.eu.snyk.io`, `api.au.snyk.io` are set with `baseUrl`). */
export const SNYK_API = "https://api.snyk.io";
export const JSONAPI = "application/vnd.api+json";

/** Narrow dependencies of the Snyk adapters (tests inject fetch or a clock). */
export interface SnykDeps {
  /** Default: global fetch. */
  fetch?: typeof fetch;
  /** Epoch ms clock for rate-limit arithmetic. Default: the rotation context's clock. */
  now?: () => number;
  /** How long to wait after a 429 without Retry-After, in ms. Default 60 000 (Snyk's one-minute window). */
  defaultBackoffMs?: number;
}

/** Where the calls go and which REST version they pin. */
export interface SnykEndpoint {
  baseUrl?: string;
  apiVersion: string;
}

/** How a call authenticates: API tokens and PATs use `token`, OAuth access tokens `bearer`. */
export type SnykAuth = { scheme: "token" | "bearer"; value: string };

const JsonApiErrors = z.object({
  errors: z.array(z.object({ status: z.string().optional(), title: z.string().optional(), detail: z.string().optional() })).min(1),
});
const OAuthError = z.object({ error: z.string(), error_description: z.string().optional() });

/** Snyk's error text: JSON:API `errors[0].detail` (or title), or an OAuth error's description. */
export function snykErrorText(body: unknown): string | undefined {
  const api = JsonApiErrors.safeParse(body);
  if (api.success) {
    const first = api.data.errors[0];
    const text = first?.detail ?? first?.title;
    if (text) return text.slice(0, 300);
  }
  const oauth = OAuthError.safeParse(body);
  if (oauth.success) return (oauth.data.error_description ? `${oauth.data.error}: ${oauth.data.error_description}` : oauth.data.error).slice(0, 300);
  if (typeof body === "string" && body.trim() && !body.trimStart().startsWith("<")) return body.trim().slice(0, 300);
  return undefined;
}

/** Retry-After where a 429 carries one; otherwise undefined, so the client backs off `defaultBackoffMs`. */
export function snykRetryAt(res: HttpResponse, now: number): number | undefined {
  return retryAfterHeader(res.headers, now);
}

/** `GET /rest/self`: the user or service account behind the credential. */
export const SelfResponse = z.object({
  data: z.object({
    type: z.string().min(1),
    id: z.string().min(1),
    attributes: z
      .object({ name: z.string().nullish(), username: z.string().nullish(), email: z.string().nullish() })
      .optional(),
  }),
});
export type SelfResponse = z.infer<typeof SelfResponse>;

/** `POST /oauth2/token` (client credentials). */
export const AccessTokenResponse = z.object({
  access_token: z.string().min(1),
  expires_in: z.number().optional(),
  token_type: z.string().min(1),
});

export class SnykClient {
  private readonly http: ProviderHttp;
  private readonly base: string;

  constructor(
    private readonly endpoint: SnykEndpoint,
    private readonly signal: AbortSignal,
    deps: SnykDeps & { now: () => number },
  ) {
    this.http = new ProviderHttp({
      provider: "snyk",
      retryAt: snykRetryAt,
      errorText: snykErrorText,
      defaultBackoffMs: deps.defaultBackoffMs ?? 60_000,
      fetch: deps.fetch,
      now: deps.now,
    });
    this.base = (endpoint.baseUrl ?? SNYK_API).replace(/\/+$/, "");
  }

  /** `/rest<path>?version=…` plus extra query parameters. */
  restUrl(path: string, query: Record<string, string> = {}): string {
    const q = new URLSearchParams({ version: this.endpoint.apiVersion, ...query });
    return `${this.base}/rest${path}?${q.toString()}`;
  }

  /** A REST call whose answer is parsed with `schema`; a body is sent as JSON:API. */
  async rest<T>(method: "GET" | "POST" | "DELETE", path: string, auth: SnykAuth, schema: z.ZodType<T>, body?: unknown): Promise<T> {
    return this.http.json(this.restRequest(method, path, auth, body), schema);
  }

  /** A REST call whose answer the caller inspects itself (status, or a body it parses with care). */
  async restRaw(method: "GET" | "POST" | "DELETE", path: string, auth: SnykAuth, body?: unknown, query?: Record<string, string>): Promise<HttpResponse> {
    return this.http.request(this.restRequest(method, path, auth, body, query));
  }

  private restRequest(method: "GET" | "POST" | "DELETE", path: string, auth: SnykAuth, body?: unknown, query?: Record<string, string>) {
    const headers: Record<string, string> = { accept: JSONAPI, authorization: `${auth.scheme} ${auth.value}` };
    if (body !== undefined) headers["content-type"] = JSONAPI;
    return { method, url: this.restUrl(path, query), headers, body, signal: this.signal };
  }

  /** Who is behind this credential. */
  async self(auth: SnykAuth): Promise<SelfResponse["data"]> {
    return (await this.rest("GET", "/self", auth, SelfResponse)).data;
  }

  /**
   * Does this client secret still exist? Answered by the token endpoint: a token means live, 401
   * with the OAuth error code `invalid_client` (RFC 6749 §5.2) means gone. Anything else (another
   * code, a 5xx, no answer) is thrown: it tells nothing about the secret.
   */
  async secretIsLive(clientId: string, clientSecret: string): Promise<boolean> {
    try {
      await this.exchange(clientId, clientSecret);
      return true;
    } catch (err) {
      const cause = err instanceof VerificationError ? (err as Error & { cause?: unknown }).cause : undefined;
      if (cause instanceof HttpStatusError && cause.status === 401) {
        const oauth = OAuthError.safeParse(cause.response.body);
        if (oauth.success && oauth.data.error === "invalid_client") return false;
      }
      throw err;
    }
  }

  /**
   * Exchanges a service account's client id and secret for an access token. A refused secret is a
   * VerificationError (the caller is checking a secret); other failures keep their class.
   */
  async exchange(clientId: string, clientSecret: string): Promise<string> {
    const body = new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: clientSecret }).toString();
    try {
      const res = await this.http.json(
        {
          method: "POST",
          url: `${this.base}/oauth2/token`,
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body,
          signal: this.signal,
        },
        AccessTokenResponse,
      );
      return res.access_token;
    } catch (err) {
      if (err instanceof HttpStatusError && (err.status === 400 || err.status === 401)) {
        throw new VerificationError(
          `${err.message}: Snyk refused the client secret for client id ${clientId}; the secret is not live for this service account`,
          { cause: err },
        );
      }
      throw err;
    }
  }
}

/**
 * Refusals Snyk does not document by status (a third create, a delete of an unknown or the last
 * secret: the endpoint lists 400, 401, 403, 404, 500): any 4xx but a refused management credential
 * (401/403) and a rate limit. Never decide what happened from the status or its text: ask the
 * token endpoint (secretIsLive) first.
 */
export function isSecretsRefusal(err: unknown): err is HttpStatusError {
  return err instanceof HttpStatusError && err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 403;
}

/** A client for one call of an adapter: the rotation's abort signal and clock. */
export function snykClient(endpoint: SnykEndpoint, ctx: { signal: AbortSignal; now(): number }, deps: SnykDeps = {}): SnykClient {
  return new SnykClient(endpoint, ctx.signal, { ...deps, now: deps.now ?? (() => ctx.now()) });
}

/**
 * A refused management credential (401/403) becomes a PermanentError that says what to fix;
 * anything else passes through unchanged.
 */
export function withAdvice(err: unknown, advice: string): unknown {
  if (err instanceof HttpStatusError && (err.status === 401 || err.status === 403)) {
    return new PermanentError(`${err.message}: ${advice}`, { cause: err });
  }
  return err;
}

/** Is `email` the successor's (offboarding) where both are known? Case-insensitive. */
export function belongsToSuccessor(successor: string | undefined, email: string | null | undefined): boolean {
  if (!successor || !successor.includes("@") || !email) return true;
  return successor.trim().toLowerCase() === email.trim().toLowerCase();
}
