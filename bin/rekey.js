#!/usr/bin/env node
// The `rekey` command. It runs the TypeScript sources through tsx, so the CLI, the workers and
// the tests all run the same code with no build step in between.
import { register } from "tsx/esm/api";

// The AWS SDK warns on every start that its releases after early 2027 need Node 22. rekey pins
// an SDK that supports Node 20 (see README: requirements), so that one notice is dropped; every
// other warning is printed as usual.
const [defaultWarning] = process.listeners("warning");
if (defaultWarning) {
  process.removeListener("warning", defaultWarning);
  process.on("warning", (w) => {
    if (w.name !== "NodeVersionSupportWarning") defaultWarning(w);
  });
}

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
