/**
 * The documentation is a front page (README.md) and pages under docs/. Every relative link
 * between them must reach a file that exists and, when it names an anchor, a heading there.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "../..");

/** GitHub's heading anchor: lower case, punctuation dropped (hyphens kept), spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\- _]/gu, "")
    .replace(/ /g, "-");
}

function headings(file: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fence = false;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.startsWith("```")) fence = !fence;
    const m = !fence && /^#{1,6} (.+)$/.exec(line);
    if (!m) continue;
    const s = slug(m[1]!);
    const n = seen.get(s) ?? 0;
    seen.set(s, n + 1);
    out.add(n === 0 ? s : `${s}-${n}`);
  }
  return out;
}

function pages(): string[] {
  const docs = join(root, "docs");
  return [
    join(root, "README.md"),
    ...readdirSync(docs)
      .filter((f) => f.endsWith(".md"))
      .map((f) => join(docs, f)),
  ];
}

describe("documentation links", () => {
  it("every relative link reaches an existing page and heading", () => {
    const broken: string[] = [];
    for (const page of pages()) {
      let fence = false;
      readFileSync(page, "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (line.startsWith("```")) fence = !fence;
          if (fence) return;
          for (const m of line.matchAll(/\]\(([^)\s]+)\)/g)) {
            const target = m[1]!;
            if (/^[a-z]+:/i.test(target)) continue;
            const [path, anchor] = target.split("#") as [string, string | undefined];
            const file = path ? resolve(dirname(page), path) : page;
            const where = `${page.slice(root.length + 1)}:${i + 1} → ${target}`;
            if (!existsSync(file)) broken.push(`${where} (no such file)`);
            else if (anchor && file.endsWith(".md") && !headings(file).has(anchor)) broken.push(`${where} (no such heading)`);
          }
        });
    }
    expect(broken).toEqual([]);
  });
});
