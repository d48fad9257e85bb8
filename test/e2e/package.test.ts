/**
 * The npm package: `npm pack` gives a tarball that installs into an empty folder and whose
 * `npx rekey` runs the compiled code, with production dependencies only. npm uses its cache
 * first (--prefer-offline), so this works offline once the dependencies were installed here.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = new URL("../../", import.meta.url).pathname;
const run = promisify(execFile);
// npm and npx run on the Node running the tests (CI: the pinned Node 24).
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, NPM_CONFIG_UPDATE_NOTIFIER: "false", NO_COLOR: "1" };

async function sh(cmd: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(cmd, args, { cwd, env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" }),
  );
}

describe("the npm package", () => {
  let dir: string;
  let tarball: string;
  let files: string[];
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { name: string; version: string; exports: Record<string, unknown> };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rekey-pack-"));
    // The global setup built dist/; `prepare` (the build) is not run again.
    const packed = await sh("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], ROOT);
    expect(packed.code, packed.stderr).toBe(0);
    const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
    tarball = join(dir, info!.filename);
    files = info!.files.map((f) => f.path);
  }, 180_000);

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("holds the compiled code and not the sources, the tests or build state", () => {
    expect(files).toEqual(expect.arrayContaining(["package.json", "bin/rekey.js", "dist/src/cli/entry.js", "dist/src/cli/main.js", "dist/workers/rotation-worker.js", "policy.schema.json"]));
    expect(files.filter((f) => /\.ts$/.test(f) && !f.endsWith(".d.ts"))).toEqual([]);
    expect(files.filter((f) => f.startsWith("test/") || f.startsWith("dist/test/") || f.startsWith("src/") || f.includes("tsbuildinfo"))).toEqual([]);
  });

  it("points every export at a file it contains", () => {
    const targets: string[] = [];
    const collect = (v: unknown) => (typeof v === "string" ? targets.push(v) : v && typeof v === "object" && Object.values(v).forEach(collect));
    collect(pkg.exports);
    expect(targets.length).toBeGreaterThan(0);
    for (const t of targets) expect(files, t).toContain(t.replace(/^\.\//, ""));
  });

  it("installs into an empty folder, and npx rekey runs from it with production dependencies only", async () => {
    const app = join(dir, "app");
    await sh("mkdir", ["-p", app], dir);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "rekey-pack-check", private: true }));
    const installed = await sh("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", tarball], app);
    expect(installed.code, installed.stderr).toBe(0);

    // Exactly what a user types; the other calls add --no so npx never looks in the registry.
    const help = await sh("npx", ["rekey", "--help"], app);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: rekey \[options\] \[command\]/);
    for (const command of ["validate", "worker", "scheduler", "api", "run"]) expect(help.stdout).toContain(`  ${command}`);
    expect(help.stderr).toBe("");

    const version = await sh("npx", ["--no", "--", "rekey", "--version"], app);
    expect(version.stdout.trim()).toBe(pkg.version);
    const validate = await sh("npx", ["--no", "--", "rekey", "validate", join(ROOT, "policies")], app);
    expect(validate.code, validate.stderr).toBe(0);
    expect(validate.stdout).toMatch(/\d+ policies valid\n$/);
    // The demo needs a checkout (its fakes are test code), and says so.
    const demo = await sh("npx", ["--no", "--", "rekey", "demo"], app);
    expect(demo.code).toBe(1);
    expect(demo.stderr).toContain("rekey demo runs from a checkout of the rekey repository");

    // Production dependencies only: no compiler, no TypeScript runner.
    for (const dev of ["typescript", "tsx", "esbuild", "vitest", "eslint"]) expect(existsSync(join(app, "node_modules", dev)), dev).toBe(false);
    // The exports map is the package's public surface: deep imports are refused.
    const deep = await sh(process.execPath, ["--input-type=module", "-e", "await import('rekey/dist/src/config.js')"], app);
    expect(deep.stderr).toContain("ERR_PACKAGE_PATH_NOT_EXPORTED");
    const own = await sh(process.execPath, ["--input-type=module", "-e", "const m = await import('rekey/package.json', { with: { type: 'json' } }); console.log(m.default.name)"], app);
    expect(own.stdout.trim()).toBe("rekey");
    // The consumer library: compiled, with its types, loadable with production dependencies only.
    const consumer = await sh(process.execPath, ["--input-type=module", "-e", "const m = await import('rekey/consumer'); console.log(Object.keys(m).sort().join(','))"], app);
    expect(consumer.stderr).toBe("");
    expect(consumer.stdout).toContain("createSecretSource");
    expect(consumer.stdout).toContain("createWebhookVerifier");
    expect(files).toContain("dist/src/consumers/index.d.ts");
  }, 300_000);
});
