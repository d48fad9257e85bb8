/**
 * Commands that go through rekey's API instead of Redis: with REKEY_API_URL and REKEY_TOKEN set,
 * `rekey rotate` and `rekey submit` call the API with that token, so the API checks its scope and
 * the audit names the token. The token is read from the environment, never from argv.
 */
import { ConfigError } from "../errors.ts";
import type { CliIo } from "./io.ts";

export interface ApiTarget {
  url: string;
  token: string;
}

/** The API to go through, or undefined (the command then acts with direct Redis access). */
export function apiTarget(io: CliIo): ApiTarget | undefined {
  const url = io.env.REKEY_API_URL;
  if (!url) return undefined;
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    throw new ConfigError("REKEY_API_URL: expected the URL of rekey's API, such as https://rekey.internal:8080");
  }
  const token = io.env.REKEY_TOKEN;
  if (!token) throw new ConfigError("REKEY_TOKEN: required with REKEY_API_URL (a token from `rekey token create`, or an SSO JWT)");
  return { url: url.replace(/\/$/, ""), token };
}

/** Calls the API; resolves to the status and the JSON answer. */
export async function callApi(target: ApiTarget, method: "GET" | "POST", path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${target.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${target.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { error: `the API answered ${res.status} without JSON` };
  }
  return { status: res.status, json };
}
