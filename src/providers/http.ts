/**
 * The one HTTP client every provider adapter uses. It maps answers to the error classes the
 * engine acts on (src/errors.ts) and keeps secrets out of messages: an error names the provider,
 * method, path (without query) and status, and the provider's own error text, never a header or a
 * request body.
 */
import { hash } from "node:crypto";
import type { z } from "zod";
import { PermanentError, RateLimitedError, TransientError, UnansweredError } from "../errors.ts";
import { type HttpAnswer, nodeHttpRequest } from "./node-http-transport.ts";

/**
 * Paces provider requests against rekey's shared rate budgets (src/rotation/pacing.ts). The
 * engine attaches one to the abort signal it hands a provider call (ProviderContext.signal), and
 * adapters pass that signal with every request, so every request is paced without the adapter
 * knowing. `credential` is a salted, truncated hash of the Authorization header (limits are per
 * key): it names a budget, never the value.
 */
export interface RequestPacer {
  before(req: PacedRequest): Promise<void>;
  /** Once per request that before() let through: its answer's status and headers, or none (it failed). */
  after(req: PacedRequest, res?: { status: number; headers: Headers }): Promise<void>;
}

export interface PacedRequest {
  credential: string;
  /** Set by before() where the request holds a place in a window until its answer (pacing.ts). */
  held?: string;
}

// Keyed by the signal rather than carried in an AsyncLocalStorage: an active AsyncLocalStorage
// turns on promise hooks for the whole process, a cost every promise of every rotation paid.
const pacers = new WeakMap<AbortSignal, RequestPacer>();

/** Pace every ProviderHttp request made with `signal` (the call's ProviderContext.signal) by `pacer`. */
export function paceRequests(signal: AbortSignal, pacer: RequestPacer): void {
  pacers.set(signal, pacer);
}

function credentialTag(headers: Record<string, string>): string {
  let auth: string | undefined;
  for (const k in headers) {
    if (k.toLowerCase() !== "authorization") continue;
    auth = headers[k];
    break;
  }
  if (!auth) return "anonymous";
  return hash("sha256", `rekey-rate-budget\0${auth}`, "hex").slice(0, 12);
}

export interface HttpRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  /** A JSON body (serialized here) or a ready string (form bodies). */
  body?: unknown;
  signal?: AbortSignal;
  /** Per-request timeout in ms (default 15 s). */
  timeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: Headers;
  /** Parsed JSON where the body is JSON, else the text ("" for an empty body). */
  body: unknown;
}

/**
 * How a provider tells when a 429 ends. Returns epoch ms, or undefined to fall back to
 * `defaultBackoffMs` (Snyk documents no headers: about 60 s).
 */
export type RetryAtFn = (res: HttpResponse, now: number) => number | undefined;

export interface ProviderHttpOptions {
  /** Provider name for messages and rate-limit scopes, e.g. "launchdarkly". */
  provider: string;
  retryAt: RetryAtFn;
  defaultBackoffMs?: number;
  /** Extracts the provider's error text from an error body (never a secret). */
  errorText?: (body: unknown) => string | undefined;
  now?: () => number;
  /** Replaces the transport (tests, fakes); by default requests go over node:http(s) (node-http-transport.ts). */
  fetch?: typeof fetch;
}

/** `GET /api/v2/tokens` (no host, no query): enough to find the call, nothing sensitive. */
export function describeCall(method: string, url: string): string {
  try {
    const u = new URL(url);
    return `${method} ${u.pathname}`;
  } catch {
    return method;
  }
}

export class ProviderHttp {
  constructor(private readonly opts: ProviderHttpOptions) {}

  /** Rate-limit scope for a URL: provider and host, so one region's 429 does not stop another's. */
  scope(url: string): string {
    try {
      return `${this.opts.provider}:${new URL(url).host}`;
    } catch {
      return this.opts.provider;
    }
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    // One controller and one timer, cleared once the answer is read. AbortSignal.timeout would
    // fire for every request, long after its answer (an AbortError and its stack each time), and
    // AbortSignal.any would tie one more composite signal to the work's long-lived one.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError"));
    }, req.timeoutMs ?? 15_000);
    const caller = req.signal;
    const onAbort = () => controller.abort(caller?.reason);
    if (caller?.aborted) onAbort();
    else caller?.addEventListener("abort", onAbort, { once: true });
    try {
      return await this.send(req, controller.signal, () => timedOut);
    } finally {
      clearTimeout(timer);
      caller?.removeEventListener("abort", onAbort);
    }
  }

  private async send(req: HttpRequest, signal: AbortSignal, timedOut: () => boolean): Promise<HttpResponse> {
    const now = this.opts.now ?? Date.now;
    // Named in errors only: not built for the requests that succeed.
    const call = () => `${this.opts.provider} ${describeCall(req.method, req.url)}`;
    const headers: Record<string, string> = { accept: "application/json", ...req.headers };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = typeof req.body === "string" ? req.body : JSON.stringify(req.body);
      if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
    }
    const pacer = req.signal ? pacers.get(req.signal) : undefined;
    const paced: PacedRequest | undefined = pacer ? { credential: credentialTag(headers) } : undefined;
    if (pacer && paced) await pacer.before(paced);
    let res: HttpAnswer;
    try {
      const init = { method: req.method, headers, body, signal };
      res = await (this.opts.fetch ? this.opts.fetch(req.url, init) : nodeHttpRequest(req.url, init));
    } catch (err) {
      // It may have reached the provider all the same: it counts from now.
      if (pacer && paced) await pacer.after(paced).catch(() => undefined);
      if (req.signal?.aborted) throw req.signal.reason instanceof Error ? req.signal.reason : new UnansweredError(`${call()}: aborted`);
      const why = timedOut() ? "timed out" : `connection failed (${causeOf(err)})`;
      throw new UnansweredError(`${call()}: ${why}`);
    }
    // The provider counted the request by the time it answered: the status and headers are enough.
    if (pacer && paced) await pacer.after(paced, res);
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new TransientError(`${call()}: connection dropped while reading the answer (${causeOf(err)})`);
    }
    let parsed: unknown = text;
    if (text && (res.headers.get("content-type") ?? "").includes("json")) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (res.ok) throw new TransientError(`${call()}: answered ${res.status} with a body that is not valid JSON`);
      }
    }
    const out: HttpResponse = { status: res.status, headers: res.headers, body: parsed };
    if (res.ok) return out;

    const detail = this.opts.errorText?.(parsed);
    const suffix = detail ? `: ${detail}` : "";
    if (res.status === 429) {
      const at = this.opts.retryAt(out, now()) ?? now() + (this.opts.defaultBackoffMs ?? 60_000);
      throw new RateLimitedError(this.scope(req.url), at, `${call()}: rate limited (429) until ${new Date(at).toISOString()}${suffix}`);
    }
    if (res.status >= 500 || res.status === 408) throw new TransientError(`${call()}: provider error ${res.status}${suffix}`);
    throw new HttpStatusError(res.status, `${call()}: ${res.status}${suffix}`, out);
  }

  /** request() and validate the JSON body with a zod schema; a malformed body is a clear error. */
  async json<T>(req: HttpRequest, schema: z.ZodType<T>): Promise<T> {
    const res = await this.request(req);
    const result = schema.safeParse(res.body);
    if (!result.success) {
      const first = result.error.issues[0];
      const at = first?.path.length ? first.path.join(".") : "(body)";
      throw new TransientError(
        `${this.opts.provider} ${describeCall(req.method, req.url)}: unexpected answer (status ${res.status}): ${at}: ${first?.message ?? "invalid"}`,
      );
    }
    return result.data;
  }
}

/** A 4xx other than 429. Permanent by default; adapters inspect `status` (404 on revoke = gone). */
export class HttpStatusError extends PermanentError {
  override name = "HttpStatusError";
  constructor(
    readonly status: number,
    message: string,
    readonly response: HttpResponse,
  ) {
    super(message);
  }
}

function causeOf(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ?? cause?.message ?? err.message;
  }
  return String(err);
}

/** Retry-After in seconds (or an HTTP date) to epoch ms. */
export function retryAfterHeader(headers: Headers, now: number): number | undefined {
  const v = headers.get("retry-after");
  if (!v) return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return now + Math.max(0, secs) * 1000;
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : date;
}
