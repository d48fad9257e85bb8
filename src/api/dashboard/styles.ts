/** The dashboard's stylesheet, compiled into the package (served at /ui/static/dashboard.css). System fonts only. */
export const DASHBOARD_CSS = `
/* rekey dashboard: system fonts only, nothing loaded from elsewhere. */
:root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ec; --bg: #f6f7f9; --card: #fff; --ok: #1f7a3d; --warn: #a15c00; --bad: #b42318; --info: #1d4ed8; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 16px; align-items: baseline; padding: 12px 24px; background: #111827; color: #e5e7eb; }
header a.brand { color: #fff; font-weight: 700; font-size: 18px; text-decoration: none; letter-spacing: .5px; }
header .title { font-weight: 600; }
header .generated { margin-left: auto; color: #9ca3af; font-size: 12px; }
main { padding: 16px 24px 40px; max-width: 1500px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin-bottom: 16px; }
h2 { font-size: 15px; margin: 0 0 10px; }
h3 { font-size: 14px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .3px; }
tr:last-child td { border-bottom: none; }
a { color: var(--info); }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
.muted, .empty { color: var(--muted); }
.msg { color: #374151; max-width: 520px; overflow-wrap: anywhere; }
.remedy { color: var(--warn); max-width: 520px; }
.overdue { color: var(--bad); font-weight: 600; }
.summary { display: flex; gap: 12px; background: none; border: none; padding: 0; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.stat b { font-size: 22px; display: block; }
.stat.warn { border-color: var(--warn); color: var(--warn); }
.stat.alert { border-color: var(--bad); color: var(--bad); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #eef0f4; color: #374151; white-space: nowrap; }
.badge-completed { background: #e3f4e8; color: var(--ok); }
.badge-failed, .badge-needs-attention { background: #fdecea; color: var(--bad); }
.badge-awaiting-confirmation, .badge-awaiting-human, .badge-queued { background: #fff4e0; color: var(--warn); }
.badge-running { background: #e7efff; color: var(--info); }
.chip { display: inline-block; margin: 2px 4px 0 0; padding: 0 6px; border: 1px solid var(--line); border-radius: 4px; font-size: 12px; }
.chip.pending { border-color: #f3c27a; background: #fff8ec; }
progress { width: 90px; vertical-align: middle; }
dl { display: grid; grid-template-columns: 160px 1fr; gap: 6px 12px; margin: 0 0 12px; }
dt { color: var(--muted); }
dd { margin: 0; }
.actions { display: flex; gap: 8px; }
.button, button { display: inline-block; padding: 6px 14px; border-radius: 6px; border: 1px solid #c9ced8; background: #fff; color: var(--fg); text-decoration: none; font: inherit; cursor: pointer; }
.button.danger, button.danger { border-color: var(--bad); color: #fff; background: var(--bad); }
form { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
input { font: inherit; padding: 5px 8px; border: 1px solid #c9ced8; border-radius: 6px; }
.notice { background: #e3f4e8; color: var(--ok); padding: 8px 12px; border-radius: 6px; }
.error { background: #fdecea; color: var(--bad); padding: 8px 12px; border-radius: 6px; }
ol.timeline { list-style: none; padding: 0; margin: 0; }
ol.timeline li { padding: 6px 0 6px 12px; border-left: 3px solid var(--line); margin-left: 4px; }
ol.timeline li.outcome-failed, ol.timeline li.outcome-refused, ol.timeline li.outcome-needs-attention { border-left-color: var(--bad); }
ol.timeline li.outcome-ok { border-left-color: #9bd3ad; }
ol.timeline time { color: var(--muted); font-size: 12px; margin-right: 8px; }
ol.timeline .step { font-weight: 600; }
ol.timeline .rot { color: var(--muted); margin-left: 8px; }
.blockers li { margin-bottom: 4px; }
td:first-child { white-space: nowrap; }
.failure { color: var(--bad); font-size: 12px; margin-top: 4px; }
`;
