/**
 * Value fingerprints: HMAC-SHA256 of the value under a key both rekey and consumers hold
 * (REKEY_FINGERPRINT_KEY). A consumer proves which value it loaded without ever sending it, and
 * rekey finds a leaked value among the versions it stored without keeping any value.
 */
import { createHmac, hash, timingSafeEqual } from "node:crypto";

export function fingerprint(key: string, value: string): string {
  return createHmac("sha256", key).update(value, "utf8").digest("hex");
}

/** `sha256:<hex>` of a bearer token, the form policy files hold for consumer tokens. */
export function tokenHash(token: string): string {
  return `sha256:${hash("sha256", token, "hex")}`;
}

/** Constant-time check of a presented bearer token against a configured `sha256:<hex>`. */
export function tokenMatches(presented: string, configuredHash: string): boolean {
  const a = Buffer.from(tokenHash(presented));
  const b = Buffer.from(configuredHash);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function equalConstantTime(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
