/** Files named by settings (`*_FILE`, TLS certificates): read, or a ConfigError naming the variable. */
import { readFileSync } from "node:fs";
import { ConfigError } from "../errors.ts";

const WHY: Record<string, string> = { ENOENT: "no such file", EACCES: "permission denied", EISDIR: "is a directory" };

/** The file's bytes; the error names the variable and the path, never any content. */
export function readConfigFile(variable: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${variable}: cannot read ${path}: ${(code && WHY[code]) ?? code ?? "unreadable"}`);
  }
}
