/**
 * Generated policy files for the schedule benchmark: the example policies in policies/ (every
 * provider kind, with their comments, consumers and notifications) copied with their own id and
 * target secret. Cron schedules vary among 48 expressions, as a real installation shares a
 * handful of schedules rather than one per policy.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const EXAMPLES = fileURLToPath(new URL("../../policies/", import.meta.url));

let templates: string[] | undefined;

function loadTemplates(): string[] {
  templates ??= readdirSync(EXAMPLES)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .map((f) => readFileSync(join(EXAMPLES, f), "utf8"));
  if (templates.length === 0) throw new Error(`no example policies in ${EXAMPLES}`);
  return templates;
}

/** The text of generated policy number `i`; `variant` changes its schedule (a re-applied edit). */
export function policyText(i: number, variant = 0): string {
  const all = loadTemplates();
  const lines = (all[i % all.length] as string).split("\n");
  const out: string[] = [];
  let inTarget = false;
  for (const line of lines) {
    if (/^id: /.test(line)) {
      out.push(`id: bench-${String(i).padStart(5, "0")}`);
      continue;
    }
    if (/^\S/.test(line)) inTarget = line.startsWith("target:");
    if (inTarget && /^ {2}secretId: /.test(line)) {
      out.push(`  secretId: bench/policy-${i}`);
      continue;
    }
    const cron = /^( {2}cron: ).*$/.exec(line);
    if (cron) {
      const k = (i + variant * 7) % 48;
      out.push(`${cron[1]}"${(k % 4) * 15} ${k % 12} * * ${k % 7}"`);
      continue;
    }
    const every = /^( {2}every: )(\d+)d$/.exec(line);
    if (every && variant) {
      out.push(`${every[1]}${Number(every[2]) + variant}d`);
      continue;
    }
    out.push(line);
  }
  return out.join("\n");
}

/** Writes `count` policy files into `dir` (100 per sub-folder, as teams keep their own folders). */
export function writePolicyFiles(dir: string, count: number): string[] {
  rmSync(dir, { recursive: true, force: true });
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const sub = join(dir, `team-${String(Math.floor(i / 100)).padStart(3, "0")}`);
    if (i % 100 === 0) mkdirSync(sub, { recursive: true });
    const file = join(sub, `policy-${String(i).padStart(5, "0")}.yaml`);
    writeFileSync(file, policyText(i));
    files.push(file);
  }
  return files;
}
