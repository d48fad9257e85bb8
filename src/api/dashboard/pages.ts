/**
 * The dashboard's pages, as pure functions from data to HTML (escaped by `html`). No script runs
 * in them; one stylesheet served by rekey (styles.ts) styles them. Every row and cell carries
 * `data-*` names, so tests (and scrapers) read values without parsing words.
 */
import type { AuditRecord } from "../../audit/audit.ts";
import type { LeakReport } from "../../leak/leak.ts";
import type { OffboardReport } from "../../offboarding/offboarding.ts";
import type { Policy } from "../../policy/schema.ts";
import type { PolicyStatus } from "../../rotation/status.ts";
import { formatDuration } from "../../util/duration.ts";
import { type Html, html, seg } from "./html.ts";

export const BASE = "/ui";

export function iso(t: number | undefined): string {
  return t ? new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z") : "";
}

function time(t: number | undefined, empty = "—"): Html {
  return t ? html`<time datetime="${iso(t)}">${iso(t)}</time>` : html`${empty}`;
}

/** Coarse age: the two largest units (`3d4h`, `5m12s`). */
export function age(ms: number): string {
  const parts = formatDuration(Math.max(0, ms)).match(/\d+[a-z]+/g) ?? ["0s"];
  return parts.slice(0, 2).join("");
}

function badge(status: string | undefined): Html {
  const s = status ?? "never";
  return html`<span class="badge badge-${/^[a-z-]+$/.test(s) ? s : "other"}">${s}</span>`;
}

export function layout(opts: { title: string; body: Html; refreshSec?: number; now: number }): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${opts.refreshSec ? html`<meta http-equiv="refresh" content="${opts.refreshSec}">` : ""}
<title>${opts.title} — rekey</title>
<link rel="stylesheet" href="${BASE}/static/dashboard.css">
</head>
<body>
<header><a class="brand" href="${BASE}">rekey</a><span class="title">${opts.title}</span><span class="generated">as of ${time(opts.now)}</span></header>
<main>
${opts.body}
</main>
</body>
</html>
`;
}

export interface OverviewData {
  now: number;
  status: PolicyStatus[];
  leaks: LeakReport[];
  offboardings: { member: string; lastRunAt: number; report: OffboardReport }[];
}

function policyLink(id: string): Html {
  return html`<a href="${BASE}/policies/${seg(id)}">${id}</a>`;
}

function confirmedText(s: PolicyStatus): string {
  const f = s.inFlight;
  return f?.confirmed.length ? f.confirmed.map((c) => `${c.consumerId} (${c.via})`).join(", ") : "";
}

export function overviewPage(d: OverviewData): Html {
  const inFlight = d.status.filter((s) => s.inFlight);
  const attention = d.status.filter((s) => s.remedy);
  const openLeaks = d.leaks.filter((l) => !l.settled || l.failed || l.awaitingHuman);
  const body = html`
<section class="summary">
  <div class="stat" data-stat="policies"><b>${d.status.length}</b> policies</div>
  <div class="stat" data-stat="in-flight"><b>${inFlight.length}</b> in flight</div>
  <div class="stat ${attention.length ? "warn" : ""}" data-stat="attention"><b>${attention.length}</b> need attention</div>
  <div class="stat ${openLeaks.length ? "alert" : ""}" data-stat="leaks"><b>${openLeaks.length}</b> open leak incidents</div>
</section>

<section id="attention">
<h2>Needs attention</h2>
${
  attention.length
    ? html`<table><thead><tr><th>Policy</th><th>Rotation</th><th>Status</th><th>What happened</th><th>Remedy</th></tr></thead><tbody>
${attention.map(
  (s) => html`<tr data-policy="${s.policyId}">
<td>${policyLink(s.policyId)}</td>
<td class="mono">${s.inFlight?.rotationId ?? s.lastRotationId ?? ""}</td>
<td>${badge(s.inFlight?.status ?? s.lastStatus)}</td>
<td class="msg" data-field="message">${s.inFlight?.message ?? ""}</td>
<td class="remedy" data-field="remedy">${s.remedy}</td>
</tr>`,
)}
</tbody></table>`
    : html`<p class="empty">Nothing needs attention.</p>`
}
</section>

<section id="in-flight">
<h2>Rotations in flight</h2>
${
  inFlight.length
    ? html`<table><thead><tr><th>Policy</th><th>Rotation</th><th>Reason</th><th>Status</th><th>Step</th><th>Waits for</th><th>Until</th><th>Confirmed</th><th>Started</th></tr></thead><tbody>
${inFlight.map((s) => {
  const f = s.inFlight!;
  return html`<tr data-policy="${s.policyId}" data-rotation="${f.rotationId}">
<td>${policyLink(s.policyId)}</td>
<td class="mono" data-field="rotationId">${f.rotationId}</td>
<td data-field="reason">${f.reason}</td>
<td data-field="status">${badge(f.status)}</td>
<td data-field="step">${f.step}</td>
<td data-field="waitsFor" data-kind="${f.waitsFor.kind}">${f.waitsFor.text}${
    f.waitingFor.length ? html`<div class="pending" data-field="pending">${f.waitingFor.map((w) => html`<span class="chip pending" data-consumer="${w.consumerId}">${w.consumerId} (${w.confirm})</span>`)}</div>` : ""
  }${f.consumerFailures.map((x) => html`<div class="msg failure" data-failure="${x.consumerId}">${x.consumerId} failed (${x.stage}) at ${time(x.at)}: ${x.message}</div>`)}</td>
<td data-field="until">${time(f.waitsFor.until)}</td>
<td data-field="confirmed">${confirmedText(s)}</td>
<td>${time(f.startedAt)}</td>
</tr>`;
})}
</tbody></table>`
    : html`<p class="empty">No rotation is in flight.</p>`
}
</section>

<section id="policies">
<h2>Policies</h2>
<table><thead><tr><th>Policy</th><th>Owner</th><th>Provider</th><th>Strategy</th><th>Credential age</th><th>Next due</th><th>Last result</th></tr></thead><tbody>
${d.status.map(
  (s) => html`<tr data-policy="${s.policyId}">
<td data-field="policyId">${policyLink(s.policyId)}</td>
<td data-field="owner">${s.owner}</td>
<td data-field="provider">${s.provider}</td>
<td data-field="strategy">${s.strategy}</td>
<td data-field="age" data-since="${iso(s.currentSince)}">${s.currentSince ? age(d.now - s.currentSince) : html`<span class="muted">not rotated by rekey yet</span>`}</td>
<td data-field="nextDue" data-at="${iso(s.nextDue)}" class="${s.nextDue && s.nextDue < d.now ? "overdue" : ""}">${time(s.nextDue, "on demand")}</td>
<td data-field="lastStatus" data-status="${s.lastStatus ?? ""}">${badge(s.lastStatus)} ${time(s.lastEndedAt ?? s.lastCompletedAt, "")}</td>
</tr>`,
)}
</tbody></table>
</section>

<section id="leaks">
<h2>Leak incidents</h2>
${
  d.leaks.length
    ? html`<table><thead><tr><th>Incident</th><th>Reported</th><th>By</th><th>What leaked</th><th>Progress</th></tr></thead><tbody>
${d.leaks.map(
  (l) => html`<tr data-incident="${l.incidentId}">
<td class="mono"><a href="${BASE}/leaks/${seg(l.incidentId)}">${l.incidentId}</a></td>
<td>${time(l.createdAt)}</td>
<td>${l.actor}</td>
<td>${l.target}</td>
<td data-field="progress">${progress(l.completed, l.total)} ${l.completed}/${l.total} done${l.inProgress ? `, ${l.inProgress} in progress` : ""}${l.awaitingHuman ? `, ${l.awaitingHuman} awaiting a human` : ""}${l.failed ? `, ${l.failed} failed or need attention` : ""}</td>
</tr>`,
)}
</tbody></table>`
    : html`<p class="empty">No leak incident in the last 30 days.</p>`
}
</section>

<section id="offboardings">
<h2>Offboarding</h2>
${
  d.offboardings.length
    ? html`<table><thead><tr><th>Member</th><th>Last run</th><th>Progress</th><th>Safe to remove</th></tr></thead><tbody>
${d.offboardings.map(({ member, lastRunAt, report }) => {
  const done = report.policies.filter((p) => p.state === "completed").length;
  return html`<tr data-member="${member}">
<td><a href="${BASE}/offboardings/${seg(member)}">${member}</a></td>
<td>${time(lastRunAt)}</td>
<td data-field="progress">${progress(done, report.policies.length)} ${done}/${report.policies.length} credentials handed over</td>
<td>${report.safeToRemove ? html`<span class="badge badge-completed">yes (rekey's part)</span>` : html`<span class="badge badge-needs-attention">not yet: ${report.blockers.length} blocker(s)</span>`}</td>
</tr>`;
})}
</tbody></table>`
    : html`<p class="empty">No offboarding has run.</p>`
}
</section>`;
  return layout({ title: "Overview", body, refreshSec: 15, now: d.now });
}

function progress(done: number, total: number): Html {
  return html`<progress max="${Math.max(total, 1)}" value="${done}">${done}/${total}</progress>`;
}

export function policyPage(d: { now: number; policy: Policy; status: PolicyStatus; history: AuditRecord[]; queued?: string; canOperate: boolean }): Html {
  const s = d.status;
  const p = d.policy;
  const body = html`
${d.queued ? html`<p class="notice" data-notice="queued">Rotation <span class="mono">${d.queued}</span> queued.</p>` : ""}
<section class="facts" data-policy="${p.id}">
<h2>${p.id}</h2>
${p.description ? html`<p>${p.description}</p>` : ""}
<dl>
<dt>Owner</dt><dd data-field="owner">${p.owner}</dd>
<dt>Provider</dt><dd data-field="provider">${p.provider.kind}</dd>
<dt>Strategy</dt><dd data-field="strategy">${s.strategy}</dd>
<dt>Secret</dt><dd class="mono">${p.target.secretId}${p.target.jsonKey ? `#${p.target.jsonKey}` : ""}</dd>
<dt>Credential age</dt><dd data-field="age">${s.currentSince ? html`${age(d.now - s.currentSince)} (current since ${time(s.currentSince)})` : "not rotated by rekey yet"}</dd>
<dt>Next due</dt><dd data-field="nextDue">${time(s.nextDue, "on demand (no schedule)")}</dd>
<dt>Last result</dt><dd data-field="lastStatus">${badge(s.lastStatus)} ${s.lastRotationId ? html`<span class="mono">${s.lastRotationId}</span>` : ""} ${time(s.lastEndedAt, "")}</dd>
<dt>Consumers</dt><dd>${p.consumers.length ? p.consumers.map((c) => html`<span class="chip">${c.id} (${c.confirm}${c.required ? "" : ", optional"})</span>`) : "none"}</dd>
${s.inFlight ? html`<dt>In flight</dt><dd data-field="waitsFor">${badge(s.inFlight.status)} <span class="mono">${s.inFlight.rotationId}</span> waits for ${s.inFlight.waitsFor.text}</dd>` : ""}
${s.remedy ? html`<dt>Remedy</dt><dd class="remedy" data-field="remedy">${s.remedy}</dd>` : ""}
</dl>
${
  d.canOperate
    ? html`<div class="actions">
<a class="button" data-action="rotate" href="${BASE}/policies/${seg(p.id)}/rotate">Rotate now…</a>
<a class="button danger" data-action="leak" href="${BASE}/policies/${seg(p.id)}/leak">Report a leak…</a>
</div>`
    : ""
}
</section>
<section id="timeline">
<h2>Audit timeline</h2>
${
  d.history.length
    ? html`<ol class="timeline">
${d.history.map(
  (r) => html`<li data-entry="${r.id}" class="outcome-${/^[a-z-]+$/.test(r.outcome) ? r.outcome : "other"}">
<time datetime="${iso(r.at)}">${iso(r.at)}</time>
<span class="step">${r.step}</span> <span class="outcome">${r.outcome}</span> <span class="actor">by ${r.actor}</span>
${r.rotationId ? html`<span class="mono rot">${r.rotationId}</span>` : ""}
${r.message ? html`<div class="msg">${r.message}</div>` : ""}
</li>`,
)}
</ol>`
    : html`<p class="empty">No audit entries for this policy.</p>`
}
</section>`;
  return layout({ title: `Policy ${p.id}`, body, refreshSec: 15, now: d.now });
}

export function confirmPage(d: {
  now: number;
  policy: Policy;
  action: "rotate" | "leak";
  formToken: string;
  status: PolicyStatus;
  error?: string;
}): Html {
  const p = d.policy;
  const leak = d.action === "leak";
  const body = html`
<section class="confirm" data-confirm="${d.action}">
<h2>${leak ? "Report a leak of" : "Rotate"} ${p.id}?</h2>
${d.error ? html`<p class="error" data-error>${d.error}</p>` : ""}
${
  leak
    ? html`<p>rekey issues a new credential at once, ahead of scheduled work, and <strong>revokes the old credential as soon as the new one is current, without waiting for consumers</strong>. Consumers (${p.consumers.map((c) => c.id).join(", ") || "none"}) are told to load the new value urgently; any still on the old value fail until they do.</p>
<p>${d.status.inFlight ? html`Rotation <span class="mono">${d.status.inFlight.rotationId}</span> is in flight: the leak takes it over.` : ""}</p>`
    : html`<p>rekey issues a new credential for ${p.target.secretId} now (strategy: ${d.status.strategy}) and revokes the old one once every required consumer confirmed. ${
        d.status.inFlight ? html`Rotation <span class="mono">${d.status.inFlight.rotationId}</span> is already in flight: a new request is skipped.` : ""
      }</p>`
}
<form method="post" action="${BASE}/policies/${seg(p.id)}/${d.action}">
<input type="hidden" name="formToken" value="${d.formToken}">
${leak ? html`<label>Type the policy id to confirm: <input name="confirm" autocomplete="off" required></label>` : ""}
<button type="submit" class="${leak ? "danger" : ""}" data-submit="${d.action}">${leak ? "Revoke and rotate now" : "Rotate now"}</button>
<a href="${BASE}/policies/${seg(p.id)}">Cancel</a>
</form>
</section>`;
  return layout({ title: leak ? `Leak of ${p.id}` : `Rotate ${p.id}`, body, now: d.now });
}

export function leakPage(d: { now: number; report: LeakReport }): Html {
  const r = d.report;
  const body = html`
<section data-incident="${r.incidentId}">
<h2>Leak incident <span class="mono">${r.incidentId}</span></h2>
<p>Reported ${time(r.createdAt)} by ${r.actor}: ${r.target}.</p>
<p data-field="progress">${progress(r.completed, r.total)} ${r.completed}/${r.total} done${r.settled ? " — settled" : ""}</p>
<table><thead><tr><th>Policy</th><th>Rotation</th><th>State</th><th>Step</th><th>Old credential revoked</th><th>Consumers confirmed</th><th>Not yet</th><th>Message</th></tr></thead><tbody>
${r.targets.map(
  (t) => html`<tr data-policy="${t.policyId}">
<td>${policyLink(t.policyId)}</td>
<td class="mono">${t.rotationId}${t.tookOver ? html` <span class="muted">(took over)</span>` : ""}</td>
<td data-field="state">${badge(t.state)}</td>
<td>${t.step ?? ""}</td>
<td data-field="oldRevoked">${t.oldRevoked ? "yes" : "not yet"}</td>
<td>${t.confirmed.join(", ")}</td>
<td>${t.notConfirmed.join(", ")}</td>
<td class="msg">${t.message ?? ""}</td>
</tr>`,
)}
</tbody></table>
</section>`;
  return layout({ title: `Leak incident`, body, refreshSec: 10, now: d.now });
}

export function offboardingPage(d: { now: number; report: OffboardReport }): Html {
  const r = d.report;
  const body = html`
<section data-member="${r.member}">
<h2>Offboarding ${r.member}</h2>
<p>The rotations this offboarding queued, from rekey's records. Credentials in the member's name that no policy manages are found by <code>rekey offboard ${r.member}</code>, which asks each provider.</p>
<table><thead><tr><th>Policy</th><th>Provider</th><th>Successor</th><th>Rotation</th><th>State</th><th>Waiting for</th><th>Message</th></tr></thead><tbody>
${r.policies.map(
  (p) => html`<tr data-policy="${p.policyId}">
<td>${policyLink(p.policyId)}</td><td>${p.provider}</td><td>${p.successor ?? ""}</td><td class="mono">${p.rotationId ?? ""}</td>
<td data-field="state">${badge(p.state)}</td><td>${p.waitingFor.join(", ")}</td><td class="msg">${p.message ?? ""}</td>
</tr>`,
)}
</tbody></table>
${r.blockers.length ? html`<h3>Before removing ${r.member}</h3><ul class="blockers">${r.blockers.map((b) => html`<li>${b}</li>`)}</ul>` : html`<p>Nothing in rekey's records stands in the way.</p>`}
</section>`;
  return layout({ title: `Offboarding ${r.member}`, body, refreshSec: 15, now: d.now });
}

export function errorPage(d: { now: number; status: number; message: string }): Html {
  return layout({ title: `Error ${d.status}`, body: html`<p class="error" data-error>${d.message}</p><p><a href="${BASE}">Back to the overview</a></p>`, now: d.now });
}
