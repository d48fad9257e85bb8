/**
 * The credential a dashboard request presented: a bearer token, or the password of HTTP Basic
 * credentials (browsers cannot send a bearer header from a link). Who the caller is and what
 * they may do is decided by the API's guard (src/auth/guard.ts); this only keys the form tokens
 * of actions (csrf.ts) to the credential, which is never stored.
 */
import type { FastifyRequest } from "fastify";
import { bearerOf } from "../../auth/guard.ts";

export function presentedCredential(req: FastifyRequest): string | undefined {
  const bearer = bearerOf(req);
  if (bearer) return bearer;
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.headers.authorization ?? "");
  if (!basic?.[1]) return undefined;
  const decoded = Buffer.from(basic[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon >= 0 && colon < decoded.length - 1 ? decoded.slice(colon + 1) : undefined;
}
