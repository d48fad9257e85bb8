/**
 * The page behind a one-time submit link (see ../rotation/submit-links.ts): a minimal HTML form
 * where the owner of a human step pastes the new value. The value is POSTed as a form field,
 * never put in a URL. The page loads nothing from anywhere (no scripts, fonts, images or external
 * styles; its one inline stylesheet is allowed by hash in the Content-Security-Policy), cannot be
 * framed, and is not cached; its URL is never sent as a referrer to another site.
 *
 * CSRF: the link's token in the path is the only authority (no cookie, no ambient session), so a
 * foreign page cannot post without the token; a POST whose Origin or Sec-Fetch-Site says it came
 * from another site is refused all the same. A wrong, used or expired token only reads Redis.
 */
import { createHash } from "node:crypto";
import formbody from "@fastify/formbody";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Policy } from "../policy/schema.ts";
import { RequestError, type Rotations } from "../rotation/requests.ts";
import type { SubmitLinks, SubmitLinkTarget } from "../rotation/submit-links.ts";

export interface SubmitPageDeps {
  links: Pick<SubmitLinks, "lookup" | "claim" | "release" | "revokeAll">;
  rotations: Pick<Rotations, "submit">;
  policies: { get(id: string): Policy | undefined };
  log: Logger;
  /** REKEY_PUBLIC_URL: the origin a browser posts from, besides the request's own host. */
  publicUrl?: string;
  /** Counts and logs a refused request (the API's refusal metric); writes nothing to Redis. */
  refused?(reason: "unauthenticated" | "forbidden" | "bad-request" | "conflict", req: FastifyRequest): void;
  /** What the owner has to do, as the human step's notification says it. */
  instructions?(policy: Policy, target: SubmitLinkTarget): { text?: string; link?: string } | undefined;
}

const CSS =
  "body{font:16px/1.5 system-ui,sans-serif;max-width:38rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b;background:#fff}" +
  "h1{font-size:1.4rem;margin:0 0 1rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{color:#555}dd{margin:0}" +
  "code{word-break:break-all}pre{white-space:pre-wrap;background:#f4f4f4;padding:.6rem}" +
  "label{display:block;font-weight:600;margin:1.2rem 0 .3rem}input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit}" +
  "button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}.error{background:#fde8e8;border:1px solid #d99;padding:.6rem}" +
  ".ok{background:#e6f4ea;border:1px solid #8c8;padding:.6rem}.note{color:#555;font-size:.9rem}";

/** Nothing but the inline stylesheet above; forms post only to this origin; no framing. */
const CSP = `default-src 'none'; style-src 'sha256-${createHash("sha256").update(CSS).digest("base64")}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`;

/** A value is at most 65,536 characters; form encoding can triple its size. */
const BODY_LIMIT = 200 * 1024;

function html(text: unknown): string {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<meta name="robots" content="noindex, nofollow">
<title>${html(title)} · rekey</title>
<style>${CSS}</style>
</head>
<body>
<main>
<h1>${html(title)}</h1>
${body}
</main>
</body>
</html>
`;
}

function send(reply: FastifyReply, status: number, title: string, body: string): FastifyReply {
  return reply
    .code(status)
    .header("content-type", "text/html; charset=utf-8")
    .header("content-security-policy", CSP)
    .header("cache-control", "no-store")
    .header("referrer-policy", "same-origin")
    .header("x-content-type-options", "nosniff")
    .header("x-frame-options", "DENY")
    .header("cross-origin-opener-policy", "same-origin")
    .header("cross-origin-resource-policy", "same-origin")
    .send(page(title, body));
}

const INVALID =
  "<p>This link is not valid: it was already used, it expired with the human step, or the rotation no longer waits for a value.</p>" +
  '<p class="note">Ask the operator for the rotation\'s state (<code>rekey status</code>); a new rotation sends a new link.</p>';

export function registerSubmitPage(app: FastifyInstance, deps: SubmitPageDeps): void {
  const allowedOrigins = new Set<string>();
  if (deps.publicUrl) allowedOrigins.add(new URL(deps.publicUrl).origin);

  /** A form post from another site (or a page without an origin we know) is refused. */
  const crossSite = (req: FastifyRequest): boolean => {
    const site = req.headers["sec-fetch-site"];
    if (typeof site === "string" && site !== "same-origin" && site !== "none") return true;
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    const own = `${req.protocol}://${req.headers.host ?? ""}`;
    return origin !== own && !allowedOrigins.has(origin);
  };

  const form = (target: SubmitLinkTarget, error?: string): string => {
    const policy = deps.policies.get(target.policyId);
    const steps = policy ? deps.instructions?.(policy, target) : undefined;
    return (
      (error ? `<p class="error" role="alert">${html(error)}</p>` : "") +
      "<dl>" +
      `<dt>Policy</dt><dd><code>${html(target.policyId)}</code></dd>` +
      (policy ? `<dt>Provider</dt><dd>${html(policy.provider.kind)}</dd><dt>Secret</dt><dd><code>${html(policy.target.secretId)}</code></dd>` : "") +
      `<dt>Rotation</dt><dd><code>${html(target.rotationId)}</code></dd>` +
      `<dt>Link expires</dt><dd>${html(new Date(target.expiresAt).toISOString().replace(/\.\d{3}Z$/, "Z"))}</dd>` +
      "</dl>" +
      (steps?.text ? `<h2>What to do</h2><pre>${html(steps.text)}</pre>` : "") +
      (steps?.link && /^https?:\/\//.test(steps.link) ? `<p>Where: <a href="${html(steps.link)}" rel="noreferrer noopener">${html(steps.link)}</a></p>` : "") +
      (steps?.text ? '<p class="note">With this link, paste the new value below instead of running <code>rekey submit</code>.</p>' : "") +
      // action="" posts to this same URL; the value travels in the body only.
      '<form method="post" action="" autocomplete="off">' +
      '<label for="value">New value</label>' +
      '<input type="password" id="value" name="value" required maxlength="65536" autocomplete="off" spellcheck="false">' +
      "<button type=\"submit\">Check and submit</button>" +
      "</form>" +
      '<p class="note">rekey checks the value with the provider before it stores it. This link works for one successful submission.</p>'
    );
  };

  void app.register(async (scope) => {
    await scope.register(formbody, { bodyLimit: BODY_LIMIT });

    scope.get<{ Params: { token: string } }>("/submit/:token", async (req, reply) => {
      const target = await deps.links.lookup(req.params.token);
      if (!target) {
        deps.refused?.("unauthenticated", req);
        return send(reply, 404, "Link not valid", INVALID);
      }
      return send(reply, 200, "Submit the new credential", form(target));
    });

    scope.post<{ Params: { token: string }; Body: unknown }>("/submit/:token", { bodyLimit: BODY_LIMIT }, async (req, reply) => {
      if (crossSite(req)) {
        deps.refused?.("forbidden", req);
        return send(reply, 403, "Refused", "<p>This form only accepts submissions from its own page.</p>");
      }
      // The form's own encoding only (a JSON body would be a script, not this page).
      if (!/^application\/x-www-form-urlencoded\b/i.test(req.headers["content-type"] ?? "")) {
        deps.refused?.("bad-request", req);
        return send(reply, 415, "Refused", "<p>Submit the value with this page's form.</p>");
      }
      const target = await deps.links.lookup(req.params.token);
      if (!target) {
        deps.refused?.("unauthenticated", req);
        return send(reply, 404, "Link not valid", INVALID);
      }
      const body = req.body as Record<string, unknown> | undefined;
      const value = typeof body?.value === "string" ? body.value.trim() : "";
      if (!value) return send(reply, 400, "Submit the new credential", form(target, "Paste the new value into the field, then submit."));
      if (!(await deps.links.claim(target.rotationId))) {
        deps.refused?.("conflict", req);
        return send(reply, 409, "Submission in progress", "<p>Another submission for this rotation is being checked right now. Reload this page in a minute.</p>");
      }
      const policy = deps.policies.get(target.policyId);
      let accepted: { policyId: string; versionId: string };
      try {
        accepted = await deps.rotations.submit({ rotationId: target.rotationId, value, actor: `submit-link:${target.successor ?? policy?.owner ?? "owner"}` });
      } catch (err) {
        await deps.links.release(target.rotationId);
        if (err instanceof RequestError && (err.status === 400 || err.status === 422)) {
          // The reason (the provider refused it, it is the current value) names no value.
          return send(reply, 422, "Submit the new credential", form(target, `Not accepted: ${err.message}`));
        }
        if (err instanceof RequestError) return send(reply, err.status, "Not accepted", `<p class="error">${html(err.message)}</p>`);
        deps.log.error({ rotationId: target.rotationId, err: errorMessage(err) }, "submit link: the value could not be checked");
        return send(reply, 503, "Try again shortly", "<p class=\"error\">rekey could not check the value right now; nothing was stored. Submit it again in a minute.</p>");
      }
      await deps.links.revokeAll(target.rotationId);
      return send(
        reply,
        200,
        "Accepted",
        `<p class="ok" role="status">The value passed the ${html(policy?.provider.kind ?? "provider")} check and is stored as version <code>${html(accepted.versionId)}</code> of <code>${html(accepted.policyId)}</code>. The rotation goes on; this link no longer works.</p>`,
      );
    });
  });
}
