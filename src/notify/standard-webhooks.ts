/**
 * Standard Webhooks (https://www.standardwebhooks.com) signing keys, shared by rekey's sender and
 * the consumer-side verifiers. Signing and verifying themselves are done by the `standardwebhooks`
 * package, so the wire format is exactly what every other Standard Webhooks library checks.
 *
 * A key written as `whsec_<base64>` is the Standard Webhooks form: the bytes after the prefix are
 * base64-decoded. Any other string is used as its UTF-8 bytes, so signing keys made for rekey's
 * earlier `X-Rekey-Signature` scheme keep working; libraries in other languages generally expect
 * the `whsec_` form, so new keys should be made that way.
 */
import { Webhook } from "standardwebhooks";

const PREFIX = "whsec_";
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Thrown for a signing key that cannot be used; the message never holds the key. */
export class SigningKeyError extends Error {
  override name = "SigningKeyError";
}

/** The key bytes of a signing key (see the module comment for the two forms). */
export function signingKeyBytes(key: string): Uint8Array {
  if (key.length === 0) throw new SigningKeyError("the webhook signing key is empty");
  if (key.startsWith(PREFIX)) {
    const b64 = key.slice(PREFIX.length);
    if (!BASE64.test(b64) || b64.length % 4 !== 0) {
      throw new SigningKeyError("the webhook signing key starts with whsec_ but the rest is not base64 (make one with: echo \"whsec_$(openssl rand -base64 32)\")");
    }
    return new Uint8Array(Buffer.from(b64, "base64"));
  }
  return new Uint8Array(Buffer.from(key, "utf8"));
}

/** A `standardwebhooks` signer/verifier for one key. */
export function standardWebhook(key: string): Webhook {
  return new Webhook(signingKeyBytes(key), { format: "raw" });
}

/** The three Standard Webhooks headers for `body`, signed at `timestampSec` (unix seconds). */
export function standardHeaders(key: string, id: string, timestampSec: number, body: string): Record<"webhook-id" | "webhook-timestamp" | "webhook-signature", string> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestampSec),
    "webhook-signature": standardWebhook(key).sign(id, new Date(timestampSec * 1000), body),
  };
}
