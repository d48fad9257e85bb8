/**
 * Form tokens for the dashboard's actions. A browser re-sends HTTP Basic credentials to rekey by
 * itself, so another site could submit a form to it (cross-site request forgery). Each action
 * form carries an HMAC of the action and its target keyed with the credential the operator
 * presented: a page that does not know the credential cannot produce it, and nothing is stored.
 */
import { createHmac } from "node:crypto";
import { equalConstantTime } from "../../consumers/fingerprint.ts";

export function formToken(credential: string, action: string, target: string): string {
  return createHmac("sha256", credential).update(`rekey-dashboard\n${action}\n${target}`).digest("hex");
}

export function formTokenValid(credential: string, action: string, target: string, presented: unknown): boolean {
  return typeof presented === "string" && /^[0-9a-f]{64}$/.test(presented) && equalConstantTime(presented, formToken(credential, action, target));
}
