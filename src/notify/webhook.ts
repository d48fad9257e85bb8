/**
 * The generic JSON webhook. rekey POSTs the event as JSON and signs it:
 *
 *   X-Rekey-Event:      the event type, e.g. rotation.completed
 *   X-Rekey-Timestamp:  unix seconds when the request was signed
 *   X-Rekey-Delivery:   a stable id per (event, target); a retried delivery repeats it
 *   X-Rekey-Signature:  sha256=<hex HMAC-SHA256 of "<timestamp>.<body>"> with the target's key
 *
 * Signing the timestamp with the body lets a receiver refuse replays of an old request.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { type NotificationEvent } from "./events.ts";

export interface OutgoingRequest {
  headers: Record<string, string>;
  body: string;
}

/** `sha256=<hex>` over `<timestamp>.<body>`. */
export function signPayload(body: string, timestampSec: number, key: string): string {
  return `sha256=${createHmac("sha256", key).update(`${timestampSec}.${body}`).digest("hex")}`;
}

/** The request rekey sends to a webhook target. `now` is epoch ms. */
export function webhookRequest(event: NotificationEvent, key: string, now: number, deliveryId: string): OutgoingRequest {
  const body = JSON.stringify(event);
  const ts = Math.floor(now / 1000);
  return {
    body,
    headers: {
      "content-type": "application/json",
      "user-agent": "rekey",
      "x-rekey-event": event.event,
      "x-rekey-timestamp": String(ts),
      "x-rekey-delivery": deliveryId,
      "x-rekey-signature": signPayload(body, ts, key),
    },
  };
}

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const v = key === undefined ? undefined : headers[key];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * For receivers: true when `body` (the raw request body, exactly as received) carries a valid
 * signature made with `key`, and its timestamp is within `toleranceSec` (default 300) of `now`
 * (epoch ms). Headers may be a fetch `Headers` or Node's `req.headers`.
 */
export function verifySignature(body: string | Buffer, headers: HeaderBag, key: string, now: number, toleranceSec = 300): boolean {
  const ts = header(headers, "x-rekey-timestamp");
  const sig = header(headers, "x-rekey-signature");
  if (!ts || !sig || !/^\d+$/.test(ts)) return false;
  if (Math.abs(Math.floor(now / 1000) - Number(ts)) > toleranceSec) return false;
  const expected = Buffer.from(signPayload(body.toString(), Number(ts), key));
  const given = Buffer.from(sig);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
