#!/usr/bin/env node
// The `rekey` command. It runs the TypeScript sources through tsx, so the CLI, the workers and
// the tests all run the same code with no build step in between.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
