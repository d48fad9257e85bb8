/**
 * Verifying rekey's webhooks on the consumer side (the library and `rekey agent`): the Standard
 * Webhooks signature through the `standardwebhooks` package, a timestamp tolerance, and a replay
 * window that remembers every webhook-id it accepted until its timestamp is out of tolerance.
 *
 * A webhook only ever tells a consumer to read Secrets Manager again: it carries ids, never a
 * value. So the worst an attacker who slips one through could do is cause an extra read.
 */
import type { IncomingHttpHeaders } from "node:http";
import { WebhookVerificationError } from "standardwebhooks";
import { z } from "zod";
import { standardWebhook } from "../notify/standard-webhooks.ts";

/** Why a webhook was refused. */
export type WebhookRejection = "missing-headers" | "bad-timestamp" | "bad-signature" | "replayed" | "bad-payload";

/** A refused webhook. `status` is the HTTP status a receiver should answer with. */
export class WebhookRejectedError extends Error {
  override name = "WebhookRejectedError";
  constructor(
    readonly reason: WebhookRejection,
    message: string,
  ) {
    super(message);
  }

  /** 409 for a replay (the id was already accepted), 400 for a body that is not a rekey event, 401 otherwise. */
  get status(): 400 | 401 | 409 {
    return this.reason === "replayed" ? 409 : this.reason === "bad-payload" ? 400 : 401;
  }
}

/**
 * A rekey notification event as a consumer sees it (README: Events). Fields rekey may add later
 * are kept, so a newer rekey does not break an older consumer.
 */
export const RekeyWebhookEvent = z.looseObject({
  schemaVersion: z.number(),
  /** e.g. `rotation.awaiting-confirmation`, `rotation.leak`. */
  event: z.string().min(1),
  rotationId: z.string().min(1),
  policyId: z.string().min(1),
  /** Secret name or ARN in the store. */
  secretId: z.string().min(1),
  /** The version the rotation created, once there is one. */
  versionId: z.string().optional(),
  message: z.string().optional(),
  /** Consumers still awaited (some events). */
  consumers: z.array(z.string()).optional(),
});
export type RekeyWebhookEvent = z.infer<typeof RekeyWebhookEvent>;

/** Headers as Node's `req.headers`, a fetch `Headers`, or a plain object. */
export type WebhookHeaders = Headers | IncomingHttpHeaders | Record<string, string | string[] | undefined>;

export interface WebhookVerifierOptions {
  /**
   * The signing key of the policy's webhook target (`whsec_<base64>`, or any other string used as
   * its bytes). Several keys are accepted while the signing key itself is being changed.
   */
  signingKey: string | readonly string[];
  /**
   * How far a webhook's timestamp may be from now, in seconds. Default and maximum: 300 (the
   * `standardwebhooks` package refuses anything older or newer itself).
   */
  toleranceSeconds?: number;
  /** How many accepted webhook-ids are remembered for the replay check. Default 10,000. */
  rememberIds?: number;
  /**
   * Clock in epoch ms. Default `Date.now`. (The `standardwebhooks` package also checks its own
   * 5-minute tolerance against the system clock.)
   */
  now?: () => number;
}

export interface WebhookVerifier {
  /**
   * Verify a webhook and return its event. `body` is the raw request body exactly as received
   * (before any JSON parsing). Throws `WebhookRejectedError` for a forged, stale, replayed or
   * malformed request; an accepted webhook-id is refused from then on (replay window).
   */
  verify(body: string | Buffer, headers: WebhookHeaders): RekeyWebhookEvent;
}

const MAX_TOLERANCE_SECONDS = 300;

function headerOf(headers: WebhookHeaders, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const v = key === undefined ? undefined : (headers as Record<string, string | string[] | undefined>)[key];
  return Array.isArray(v) ? v[0] : v;
}

export function createWebhookVerifier(opts: WebhookVerifierOptions): WebhookVerifier {
  const keys = (typeof opts.signingKey === "string" ? [opts.signingKey] : [...opts.signingKey]).map((k) => standardWebhook(k));
  if (keys.length === 0) throw new Error("createWebhookVerifier: signingKey: give at least one key");
  const tolerance = opts.toleranceSeconds ?? MAX_TOLERANCE_SECONDS;
  if (!(tolerance > 0 && tolerance <= MAX_TOLERANCE_SECONDS)) {
    throw new Error(`createWebhookVerifier: toleranceSeconds must be between 1 and ${MAX_TOLERANCE_SECONDS}, got ${tolerance}`);
  }
  const limit = Math.max(1, opts.rememberIds ?? 10_000);
  const now = opts.now ?? Date.now;
  /** Accepted webhook-ids and when their timestamp leaves the tolerance (epoch ms), oldest first. */
  const seen = new Map<string, number>();

  const forget = (t: number): void => {
    for (const [id, until] of seen) {
      if (until > t && seen.size <= limit) break;
      seen.delete(id);
    }
  };

  return {
    verify(body, headers) {
      const id = headerOf(headers, "webhook-id");
      const ts = headerOf(headers, "webhook-timestamp");
      const signature = headerOf(headers, "webhook-signature");
      if (!id || !ts || !signature) throw new WebhookRejectedError("missing-headers", "missing webhook-id, webhook-timestamp or webhook-signature header");
      if (!/^\d{1,12}$/.test(ts)) throw new WebhookRejectedError("bad-timestamp", "webhook-timestamp is not unix seconds");
      const t = now();
      const tsMs = Number(ts) * 1000;
      if (Math.abs(t - tsMs) > tolerance * 1000) {
        throw new WebhookRejectedError("bad-timestamp", `webhook-timestamp is more than ${tolerance} s away from this host's clock`);
      }
      const plain = { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": signature };
      let valid = false;
      for (const key of keys) {
        try {
          key.verify(body, plain, { jsonParse: false });
          valid = true;
          break;
        } catch (err) {
          if (!(err instanceof WebhookVerificationError)) throw err;
        }
      }
      if (!valid) throw new WebhookRejectedError("bad-signature", "the webhook-signature does not match the body with any configured signing key");
      forget(t);
      // Only signed requests reach this point, so an outsider cannot fill the memory.
      if (seen.has(id)) throw new WebhookRejectedError("replayed", `webhook-id ${JSON.stringify(id.slice(0, 200))} was already accepted (a replay, or a retry of a delivery that was processed)`);
      seen.set(id, Math.max(t, tsMs) + tolerance * 1000);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString());
      } catch {
        throw new WebhookRejectedError("bad-payload", "the webhook body is not JSON");
      }
      const event = RekeyWebhookEvent.safeParse(parsed);
      if (!event.success) {
        throw new WebhookRejectedError("bad-payload", `the webhook body is not a rekey event: ${event.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; ")}`);
      }
      return event.data;
    },
  };
}

/** Read a Node request's raw body, refusing more than `limit` bytes (default 64 KiB). */
export async function readRawBody(req: AsyncIterable<unknown>, limit = 64 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const b = typeof c === "string" ? Buffer.from(c) : (c as Buffer);
    size += b.length;
    if (size > limit) throw new WebhookRejectedError("bad-payload", `the webhook body is larger than ${limit} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
