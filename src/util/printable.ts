/**
 * Text from outside (policy ids, consumer ids, provider error messages) shown on a terminal:
 * control characters (C0, DEL, C1 — escape sequences that move the cursor, recolour or retitle
 * the terminal) are shown as `\xNN` / `\uNNNN` instead of being sent to it.
 */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
