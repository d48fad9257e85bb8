/**
 * Recognising text that looks like a credential, so that `rekey validate` (and anything else that
 * quotes a policy file back) names the field and what is wrong without repeating a value someone
 * pasted where a reference belongs. Two nets: the known shapes of the providers' and common
 * vendors' tokens, and long random-looking runs of token characters. Ids, names, URLs, ARNs,
 * UUIDs and environment variable names do not match.
 */

/** Shapes of real tokens (the providers rekey rotates, and credentials commonly pasted by mistake). */
const KNOWN: readonly RegExp[] = [
  /\b(?:api|sdk|mob)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, // LaunchDarkly
  /\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}/g,
  /\bgh[pousr]_[A-Za-z0-9]{20,}/g,
  /\bgithub_pat_[A-Za-z0-9_]{20,}/g,
  /\bxox[abposr]-[A-Za-z0-9-]{10,}/g, // Slack tokens
  /https?:\/\/hooks\.slack\.com\/(?:services|workflows|triggers)\/[^\s"'`)]+/g, // Slack incoming webhooks
  /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g, // AWS access key ids
  /\beyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]{8,}){0,2}/g, // JWTs, base64 JSON (QStash tokens)
  /\bwhsec_[A-Za-z0-9+/=]{16,}/g,
  /-----BEGIN [A-Z ]*PRIVATE KEY-----/g,
];

/** Runs of characters tokens are made of ('-' and '.' split words, so hyphenated ids stay apart). */
const RUN = /[A-Za-z0-9+/=_]{20,}/g;

function randomLooking(run: string): boolean {
  const letters = /[A-Za-z]/.test(run);
  const digits = (run.match(/[0-9]/g) ?? []).length;
  if (!letters || digits === 0) return false;
  if (/[a-z]/.test(run) && /[A-Z]/.test(run)) return true;
  if (/^[0-9a-f]+$/i.test(run) && run.length >= 32) return true;
  return run.length >= 24 && digits / run.length >= 0.25;
}

/** True when some part of `text` looks like a credential's value. */
export function looksLikeSecret(text: string): boolean {
  for (const re of KNOWN) {
    re.lastIndex = 0;
    if (re.test(text)) return true;
  }
  for (const m of text.matchAll(RUN)) if (randomLooking(m[0])) return true;
  return false;
}

export const NOT_SHOWN = "[not shown: looks like a secret]";

/**
 * `text` with every part that looks like a credential, and every occurrence of a `known` value
 * (also cut short, as messages quote long values), replaced by {@link NOT_SHOWN}.
 */
export function redactSecrets(text: string, known: readonly string[] = []): string {
  let out = text;
  for (const value of [...known].sort((a, b) => b.length - a.length)) {
    if (value.length < 4) continue;
    for (const form of new Set([value, JSON.stringify(value).slice(1, -1), value.slice(0, 40)])) {
      if (form.length >= 4) out = out.split(form).join(NOT_SHOWN);
    }
  }
  for (const re of KNOWN) out = out.replace(re, NOT_SHOWN);
  return out.replace(RUN, (run) => (randomLooking(run) ? NOT_SHOWN : run));
}
