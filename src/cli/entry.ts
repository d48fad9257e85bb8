/**
 * Runs `rekey` in this process: bin/rekey.js loads the compiled copy (dist/src/cli/entry.js);
 * `tsx src/cli/entry.ts …` runs the TypeScript sources in development.
 */
import { main } from "./main.ts";

process.exitCode = await main(process.argv.slice(2));
