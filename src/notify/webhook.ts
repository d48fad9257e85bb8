/**
 * The generic JSON webhook. rekey POSTs the event as JSON, signed in the Standard Webhooks format
 * (through the `standardwebhooks` package, see standard-webhooks.ts), so receivers verify it with
 * a ready-made library in their language:
 *
 *   webhook-id:         a stable id per (event, target); a retried delivery repeats it
 *   webhook-timestamp:  unix seconds when this attempt was signed
 *   webhook-signature:  v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> with the target's key
 *
 * Deprecated, sent for one more release (README: Webhooks), then removed:
 *
 *   X-Rekey-Event:      the event type, e.g. rotation.completed
 *   X-Rekey-Timestamp:  unix seconds when the request was signed
 *   X-Rekey-Delivery:   same as webhook-id
 *   X-Rekey-Signature:  sha256=<hex HMAC-SHA256 of "<timestamp>.<body>"> with the target's key
 *
 * Signing the timestamp with the body lets a receiver refuse replays of an old request; the id
 * lets it refuse a replay within the tolerance.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { type NotificationEvent } from "./events.ts";
import { standardHeaders } from "./standard-webhooks.ts";

export interface OutgoingRequest {
  headers: Record<string, string>;
  body: string;
}

/** `sha256=<hex>` over `<timestamp>.<body>` (the deprecated X-Rekey-Signature). */
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
      ...standardHeaders(key, deliveryId, ts, body),
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
 *
 * @deprecated Kept for one release with the X-Rekey-Signature header. Verify the Standard
 * Webhooks headers instead: `createWebhookVerifier` from `rekey/consumer`, or any Standard
 * Webhooks library.
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
