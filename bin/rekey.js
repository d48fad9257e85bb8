#!/usr/bin/env node
// The `rekey` command: the compiled JavaScript in dist/ (`npm run build`; an installed package
// ships it). In a checkout, `npx tsx src/cli/entry.ts …` runs the TypeScript sources instead.
import { existsSync } from "node:fs";

const entry = new URL("../dist/src/cli/entry.js", import.meta.url);
if (existsSync(entry)) {
  await import(entry.href);
} else {
  process.stderr.write("rekey: dist/ is missing; build it first with `npm run build` (or run the sources: npx tsx src/cli/entry.ts)\n");
  process.exitCode = 1;
}
