/**
 * `rekey api` over TLS, as an operator runs it: REKEY_TLS_CERT / REKEY_TLS_KEY serve HTTPS (and
 * nothing in plain HTTP), REKEY_TLS_CLIENT_CA requires a client certificate from that CA, SIGHUP
 * serves a renewed certificate without a restart. Real HTTPS requests against a throwaway CA
 * made with openssl at test time.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { TLSSocket } from "node:tls";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { makePki, type Pki } from "../helpers/pki.ts";
import { freePort } from "../helpers/redis-server.ts";
import { deleteKeys, redisUrl, testPrefix } from "../helpers/redis.ts";
import { until } from "../helpers/stack.ts";

interface Answer {
  status: number;
  body: string;
  /** CN of the certificate the server presented. */
  servedCn: string;
}

/** One HTTPS GET on a new connection (no keep-alive, so each sees the server's current certificate). */
function get(port: number, path: string, tls: { ca?: Buffer; cert?: Buffer; key?: Buffer }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "GET", agent: false, timeout: 5_000, ...tls }, (res) => {
      const servedCn = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? "");
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, servedCn }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

describe("the API over TLS", () => {
  let dir: string;
  let pki: Pki;
  let rogue: Pki;
  let policies: string;
  let redis: Redis;
  const prefix = testPrefix("tls");
  const children: ChildProcess[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "rekey-tls-"));
    pki = makePki(dir);
    const rogueDir = join(dir, "rogue");
    mkdirSync(rogueDir);
    rogue = makePki(rogueDir, "rogue-ca");
    policies = join(dir, "policies");
    mkdirSync(policies);
    redis = new Redis(redisUrl(), { maxRetriesPerRequest: null });
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await deleteKeys(redis, prefix);
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startApi(env: Record<string, string>): Promise<{ port: number; child: ChildProcess; output: () => string; exited: Promise<number | null> }> {
    const port = await freePort();
    const child = spawn(process.execPath, ["bin/rekey.js", "api"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", REDIS_URL: redisUrl(), REKEY_PREFIX: prefix, REKEY_POLICY_DIR: policies, REKEY_API_PORT: String(port), AWS_REGION: "us-east-1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await until("api listening", () => output.includes("rekey api listening") || child.exitCode !== null, 30_000, 100);
    expect(child.exitCode, output).toBeNull();
    return { port, child, output: () => output, exited };
  }

  async function keysUnderPrefix(): Promise<string[]> {
    return (await redis.keys(`${prefix}*`)).sort();
  }

  it("serves HTTPS only, with the configured certificate, and serves a renewed one after SIGHUP", { timeout: 60_000 }, async () => {
    const first = pki.issue("server-1", { cn: "rekey-api-1", server: true });
    const second = pki.issue("server-2", { cn: "rekey-api-2", server: true });
    const cert = join(dir, "api.pem");
    const key = join(dir, "api.key");
    copyFileSync(first.cert, cert);
    copyFileSync(first.key, key);
    const api = await startApi({ REKEY_TLS_CERT: cert, REKEY_TLS_KEY: key });
    try {
      expect(api.output()).toContain('"tls":"https"');
      const ok = await get(api.port, "/healthz", { ca: pki.pem(pki.ca) });
      expect(ok).toEqual({ status: 200, body: '{"ok":true}', servedCn: "rekey-api-1" });
      expect((await get(api.port, "/readyz", { ca: pki.pem(pki.ca) })).status).toBe(200);

      // A client that does not trust the CA refuses the server; plain HTTP gets no answer.
      await expect(get(api.port, "/healthz", {})).rejects.toMatchObject({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      await expect(fetch(`http://127.0.0.1:${api.port}/healthz`)).rejects.toThrow();

      // The certificate is renewed in place; SIGHUP makes new connections get it.
      copyFileSync(second.cert, cert);
      copyFileSync(second.key, key);
      api.child.kill("SIGHUP");
      await until("renewed certificate served", async () => (await get(api.port, "/healthz", { ca: pki.pem(pki.ca) })).servedCn === "rekey-api-2", 10_000, 100);
      // The log line reaches the pipe on its own time (pino writes asynchronously).
      await until("reload logged", () => api.output().includes("TLS certificate reloaded"), 10_000, 100);

      // A broken file at the next SIGHUP keeps the certificate in use.
      writeFileSync(cert, "not a certificate\n");
      api.child.kill("SIGHUP");
      await until("reload refused", () => api.output().includes("TLS certificate not reloaded"), 10_000, 100);
      expect((await get(api.port, "/healthz", { ca: pki.pem(pki.ca) })).servedCn).toBe("rekey-api-2");
    } finally {
      api.child.kill("SIGTERM");
    }
    expect(await api.exited, api.output()).toBe(0);
    // The private key never reaches the output.
    expect(api.output()).not.toContain("PRIVATE KEY");
  });

  it("with REKEY_TLS_CLIENT_CA requires a client certificate from that CA; refused clients write nothing", { timeout: 60_000 }, async () => {
    const server = pki.issue("server-m", { cn: "rekey-api-m", server: true });
    const client = pki.issue("client", { cn: "ops-client" });
    const stranger = rogue.issue("stranger", { cn: "stranger" });
    const api = await startApi({ REKEY_TLS_CERT: server.cert, REKEY_TLS_KEY: server.key, REKEY_TLS_CLIENT_CA: pki.ca });
    try {
      expect(api.output()).toContain('"tls":"mtls"');
      const before = await keysUnderPrefix();
      const ca = pki.pem(pki.ca);
      // No client certificate: refused in the handshake, before any request is read.
      await expect(get(api.port, "/healthz", { ca })).rejects.toMatchObject({ code: expect.stringMatching(/CERTIFICATE_REQUIRED|ECONNRESET|EPIPE/) });
      await expect(get(api.port, "/v1/status", { ca })).rejects.toThrow();
      // A certificate from another CA: refused too.
      await expect(get(api.port, "/healthz", { ca, cert: rogue.pem(stranger.cert), key: rogue.pem(stranger.key) })).rejects.toThrow();
      for (let i = 0; i < 20; i++) await get(api.port, "/v1/confirmations", { ca }).catch(() => undefined);
      expect(await keysUnderPrefix()).toEqual(before);

      const ok = await get(api.port, "/healthz", { ca, cert: pki.pem(client.cert), key: pki.pem(client.key) });
      expect(ok.status).toBe(200);
    } finally {
      api.child.kill("SIGTERM");
    }
    expect(await api.exited, api.output()).toBe(0);
  });

  it("refuses a half or broken TLS configuration at start, naming the variable and never the key", async () => {
    const server = pki.issue("server-c", { cn: "rekey-api-c", server: true });
    const other = pki.issue("server-d", { cn: "rekey-api-d", server: true });
    const run = async (env: Record<string, string>) => {
      let err = "";
      const code = await main(["api"], {
        stdout: () => undefined,
        stderr: (s) => void (err += s),
        stdin: new PassThrough(),
        env: { REDIS_URL: redisUrl(), REKEY_PREFIX: prefix, REKEY_POLICY_DIR: policies, REKEY_API_PORT: "0", LOG_LEVEL: "silent", ...env },
      });
      return { code, err };
    };
    const half = await run({ REKEY_TLS_CERT: server.cert });
    expect(half.code).toBe(1);
    expect(half.err).toContain("REKEY_TLS_KEY: set REKEY_TLS_CERT and REKEY_TLS_KEY together");

    const caOnly = await run({ REKEY_TLS_CLIENT_CA: pki.ca });
    expect(caOnly.code).toBe(1);
    expect(caOnly.err).toContain("REKEY_TLS_CLIENT_CA: client certificates need HTTPS");

    const missing = await run({ REKEY_TLS_CERT: join(dir, "nope.pem"), REKEY_TLS_KEY: server.key });
    expect(missing.code).toBe(1);
    expect(missing.err).toContain(`REKEY_TLS_CERT: cannot read ${join(dir, "nope.pem")}: no such file`);

    const mismatched = await run({ REKEY_TLS_CERT: server.cert, REKEY_TLS_KEY: other.key });
    expect(mismatched.code).toBe(1);
    expect(mismatched.err).toContain("are not a usable pair");
    expect(mismatched.err).not.toContain(pki.pem(other.key).toString().split("\n")[1]);
  });
});
