/**
 * What both QStash adapters share: hosts, the HTTP client with Upstash's rate-limit headers, and
 * the response schemas. QStash has two hosts: the regional data plane (Bearer QStash token) and
 * the Developer API (HTTP Basic `email:api-key`), which is the only place a token can be rotated.
 */
import { z } from "zod";
import { PermanentError } from "../../errors.ts";
import { HttpStatusError, ProviderHttp, retryAfterHeader, type HttpResponse } from "../http.ts";

/** Default data-plane host (us-east-1 and eu-central-1 have their own: set `baseUrl`). */
export const QSTASH_DATA_PLANE = "https://qstash.upstash.io";
/** Default Developer API host. */
export const UPSTASH_DEVELOPER_API = "https://api.upstash.com";

/** Narrow dependencies of the QStash adapters (tests inject a clock). */
export interface QStashDeps {
  /** Default: global fetch. */
  fetch?: typeof fetch;
  /** Epoch ms clock for rate-limit arithmetic. Default: Date.now. */
  now?: () => number;
}

/** A QStash user (one per region) as `GET /v2/qstash/users` and rotate-token answer it. */
export const QStashUser = z.looseObject({
  id: z.string().min(1),
  region: z.string().optional(),
  token: z.string().min(1),
  read_only_token: z.string().optional(),
});
export type QStashUser = z.infer<typeof QStashUser>;
export const QStashUsers = z.array(QStashUser);

/** `GET /v2/keys` and `POST /v2/keys/rotate`. Both values are secrets. */
export const SigningKeys = z.object({ current: z.string().min(1), next: z.string().min(1) });
export type SigningKeys = z.infer<typeof SigningKeys>;

/** `GET /v2/topics`: the list of URL groups; only its shape matters to rekey. */
export const Topics = z.array(z.unknown());

export function createQStashHttp(deps: QStashDeps = {}): ProviderHttp {
  return new ProviderHttp({ provider: "qstash", retryAt: qstashRetryAt, errorText: qstashErrorText, fetch: deps.fetch, now: deps.now });
}

/**
 * When a QStash 429 ends, in epoch ms. Upstash sends a burst window (`Burst-RateLimit-*`) and a
 * daily one (`RateLimit-*`); the window whose Remaining is 0 is the one that hit, and where both
 * did, the later reset wins. Resets are unix seconds.
 */
export function qstashRetryAt(res: HttpResponse, now: number): number | undefined {
  const windows: { at: number; exhausted: boolean }[] = [];
  for (const prefix of ["burst-ratelimit", "ratelimit"]) {
    const reset = res.headers.get(`${prefix}-reset`);
    const at = reset === null ? undefined : resetToMs(Number(reset), now);
    if (at !== undefined) windows.push({ at, exhausted: res.headers.get(`${prefix}-remaining`)?.trim() === "0" });
  }
  const hit = windows.some((w) => w.exhausted) ? windows.filter((w) => w.exhausted) : windows;
  if (hit.length > 0) return Math.max(...hit.map((w) => w.at));
  return retryAfterHeader(res.headers, now);
}

function resetToMs(v: number, now: number): number | undefined {
  if (!Number.isFinite(v) || v < 0) return undefined;
  // Documented as unix seconds. A value already in ms, or a small delta in seconds, is read as
  // such rather than waited on for decades or not waited on at all.
  if (v > 1e12) return v;
  if (v < 1e9) return now + v * 1000;
  return v * 1000;
}

/** Upstash errors are `{"error": "…"}`; some gateways answer plain text. */
export function qstashErrorText(body: unknown): string | undefined {
  if (body && typeof body === "object" && "error" in body && typeof body.error === "string") return body.error.slice(0, 300);
  if (typeof body === "string" && body.trim() && !body.trimStart().startsWith("<")) return body.trim().slice(0, 300);
  return undefined;
}

/** `base` + `/v2/...`, tolerating a trailing slash on the configured host. */
export function endpoint(base: string, path: string): string {
  return `${base.replace(/\/+$/, "")}${path}`;
}

export function basicAuth(email: string, key: string): string {
  return `Basic ${Buffer.from(`${email}:${key}`).toString("base64")}`;
}

export function bearer(token: string): string {
  return `Bearer ${token}`;
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
