/**
 * Tests that start `bin/rekey.js` or a worker process run the compiled JavaScript in dist/, the
 * code a deployment runs. The global setup rebuilds it when a source is newer than the last
 * build, so a test never runs stale output.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;
/** tsc writes it at the end of every build that changed something (tsconfig.build.json). */
const STAMP = join(ROOT, "dist", ".tsbuildinfo");
/** What the build reads: tsconfig.build.json's include, plus the demo's fakes it compiles too. */
const INPUTS = ["src", "workers", "test/fakes", "test/helpers", "tsconfig.json", "tsconfig.build.json", "package.json"];

function newest(path: string): number {
  const s = statSync(path, { throwIfNoEntry: false });
  if (!s) return 0;
  if (!s.isDirectory()) return s.mtimeMs;
  let max = s.mtimeMs;
  for (const e of readdirSync(path)) max = Math.max(max, newest(join(path, e)));
  return max;
}

export function buildIfStale(): void {
  const built = statSync(STAMP, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  if (INPUTS.every((p) => newest(join(ROOT, p)) <= built)) return;
  execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "inherit" });
  // A source touched but unchanged leaves the build info as it was: mark it current anyway.
  const now = new Date();
  utimesSync(STAMP, now, now);
}
