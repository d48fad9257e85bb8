import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, SECRET_VARIABLES } from "../../src/config.ts";
import { ConfigError } from "../../src/errors.ts";
import { credentialResolver } from "../../src/runtime.ts";
import type { SecretStore } from "../../src/stores/types.ts";

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("has a default for everything", () => {
    expect(loadConfig({})).toEqual({
      redis: { kind: "single", url: "redis://127.0.0.1:6379" },
      prefix: "rekey",
      policyDir: "policies",
      apiHost: "127.0.0.1",
      apiPort: 8080,
      adminTokenHash: undefined,
      fingerprintKey: undefined,
      workerConcurrency: 32,
      auditMaxLen: 100_000,
      schedulerTickMs: 5_000,
      awsRegion: undefined,
      logLevel: "info",
      redisConnectTimeoutMs: 10_000,
      healthPort: undefined,
      healthHost: "127.0.0.1",
      apiRateLimit: 1_200,
      apiIdentityRateLimit: 600,
      reconcileEveryMs: 600_000,
    });
  });

  it("reads every variable", () => {
    const hash = `sha256:${"ab".repeat(32)}`;
    const key = "k".repeat(32);
    expect(
      loadConfig({
        REDIS_URL: "rediss://user:pw@redis.internal:6380/2",
        REKEY_PREFIX: "{rekey}",
        REKEY_POLICY_DIR: "/etc/rekey/policies",
        REKEY_API_HOST: "0.0.0.0",
        REKEY_API_PORT: "9090",
        REKEY_ADMIN_TOKEN_HASH: hash,
        REKEY_FINGERPRINT_KEY: key,
        REKEY_WORKER_CONCURRENCY: "32",
        REKEY_AUDIT_MAXLEN: "5000",
        REKEY_SCHEDULER_TICK: "1m",
        REKEY_REDIS_CONNECT_TIMEOUT: "3s",
        REKEY_RECONCILE_INTERVAL: "off",
        AWS_REGION: "eu-central-1",
        LOG_LEVEL: "debug",
        REKEY_HEALTH_PORT: "9091",
        REKEY_HEALTH_HOST: "0.0.0.0",
      }),
    ).toEqual({
      redis: { kind: "single", url: "rediss://user:pw@redis.internal:6380/2" },
      prefix: "{rekey}",
      policyDir: "/etc/rekey/policies",
      apiHost: "0.0.0.0",
      apiPort: 9090,
      adminTokenHash: hash,
      fingerprintKey: key,
      workerConcurrency: 32,
      auditMaxLen: 5000,
      schedulerTickMs: 60_000,
      awsRegion: "eu-central-1",
      logLevel: "debug",
      redisConnectTimeoutMs: 3_000,
      healthPort: 9091,
      healthHost: "0.0.0.0",
      apiRateLimit: 1_200,
      apiIdentityRateLimit: 600,
      reconcileEveryMs: undefined,
    });
  });

  it("falls back to AWS_DEFAULT_REGION, and prefers AWS_REGION", () => {
    expect(loadConfig({ AWS_DEFAULT_REGION: "us-east-1" }).awsRegion).toBe("us-east-1");
    expect(loadConfig({ AWS_DEFAULT_REGION: "us-east-1", AWS_REGION: "eu-west-1" }).awsRegion).toBe("eu-west-1");
  });

  it("treats an empty variable as unset", () => {
    expect(loadConfig({ REKEY_API_PORT: "", REKEY_FINGERPRINT_KEY: "" })).toMatchObject({ apiPort: 8080, fingerprintKey: undefined });
  });

  it("names every bad variable and what was expected", () => {
    const err = configError({
      REKEY_API_PORT: "eighty",
      REKEY_WORKER_CONCURRENCY: "0",
      REKEY_SCHEDULER_TICK: "5",
      LOG_LEVEL: "verbose",
      REKEY_PREFIX: "re key",
      AWS_REGION: "Frankfurt",
    });
    expect(err.message.split("\n")).toEqual([
      "invalid configuration:",
      '  REKEY_PREFIX: expected a prefix without spaces or \':\' (e.g. rekey, or {rekey} for a Redis Cluster) (got "re key")',
      '  REKEY_API_PORT: expected a port number from 0 to 65535 (0 picks a free port) (got "eighty")',
      '  REKEY_WORKER_CONCURRENCY: expected a whole number from 1 to 1000 (got "0")',
      '  REKEY_SCHEDULER_TICK: expected a duration from 1s to 1h, such as "5s" (got "5")',
      '  AWS_REGION: expected an AWS region such as eu-central-1 (got "Frankfurt")',
      '  LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent (got "verbose")',
    ]);
  });

  it("never repeats the value of a variable that may hold a secret", () => {
    const secretKey = "short-but-secret-key";
    const secretUrl = "http://:hunter2@redis.internal:6379";
    const hash = "sha256:not-hex-but-private";
    const err = configError({ REKEY_FINGERPRINT_KEY: secretKey, REDIS_URL: secretUrl, REKEY_ADMIN_TOKEN_HASH: hash });
    expect(err.message).toContain("REKEY_FINGERPRINT_KEY: expected at least 32 characters");
    expect(err.message).toContain("REDIS_URL: expected a redis:// or rediss:// URL");
    expect(err.message).toContain("REKEY_ADMIN_TOKEN_HASH: expected sha256:<64 lower-case hex digits>");
    expect(err.message).not.toContain(secretKey);
    expect(err.message).not.toContain("hunter2");
    expect(err.message).not.toContain("private");
  });

  it("accepts one hash tag in the prefix and refuses a broken one", () => {
    expect(loadConfig({ REKEY_PREFIX: "prod{rekey}" }).prefix).toBe("prod{rekey}");
    expect(configError({ REKEY_PREFIX: "{rekey" }).message).toContain("REKEY_PREFIX: expected at most one hash tag");
  });

  it("reads the audit sink: stdout, a file with its rotation size, an HTTP URL; refuses anything else without repeating it", () => {
    expect(loadConfig({ REKEY_AUDIT_SINK: "stdout" }).auditSink).toEqual({ kind: "stdout" });
    expect(loadConfig({ REKEY_AUDIT_SINK: "file:/var/log/rekey/audit.jsonl", REKEY_AUDIT_FILE_MAX_BYTES: "2097152" }).auditSink).toEqual({ kind: "file", path: "/var/log/rekey/audit.jsonl", maxBytes: 2_097_152 });
    expect(loadConfig({}).auditSink).toBeUndefined();
    let message = "";
    try {
      loadConfig({ REKEY_AUDIT_SINK: "ftp://user:hunter2@logs", REKEY_AUDIT_FILE_MAX_BYTES: "10" });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("REKEY_AUDIT_SINK: expected stdout, file:<path>, or an http(s):// URL");
    expect(message).toContain("REKEY_AUDIT_FILE_MAX_BYTES: expected a size in bytes");
    expect(message).not.toContain("hunter2");
  });

  describe("secret settings from files (<NAME>_FILE)", () => {
    let dir: string;
    const file = (name: string, content: string): string => {
      const path = join(dir, name);
      writeFileSync(path, content);
      return path;
    };
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "rekey-config-"));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it("reads every secret setting from the file its _FILE variable names, without the trailing line break", () => {
      const hash = `sha256:${"cd".repeat(32)}`;
      const key = "f".repeat(40);
      const config = loadConfig({
        REDIS_URL_FILE: file("redis-url", "rediss://rekey:pw-from-file@redis.internal:6380\n"),
        REKEY_ADMIN_TOKEN_HASH_FILE: file("admin-token-hash", `${hash}\r\n`),
        REKEY_FINGERPRINT_KEY_FILE: file("fingerprint-key", key),
        REKEY_AUDIT_SINK_FILE: file("audit-sink", "https://siem.example/ingest?key=abc\n"),
        REKEY_AUDIT_SINK_TOKEN_FILE: file("audit-sink-token", "sink-token-from-file\n"),
      });
      expect(config).toMatchObject({ auditSink: { kind: "http", url: "https://siem.example/ingest?key=abc", token: "sink-token-from-file" } });
      expect(config).toMatchObject({ redis: { kind: "single", url: "rediss://rekey:pw-from-file@redis.internal:6380" }, adminTokenHash: hash, fingerprintKey: key });
      const sentinel = loadConfig({
        REDIS_SENTINELS: "10.0.0.5:26379",
        REDIS_SENTINEL_MASTER: "mymaster",
        REDIS_PASSWORD_FILE: file("redis-password", "data-pw-from-file\n"),
        REDIS_SENTINEL_PASSWORD_FILE: file("sentinel-password", "sentinel-pw-from-file\n"),
      });
      expect(sentinel.redis).toMatchObject({ kind: "sentinel", password: "data-pw-from-file", sentinelPassword: "sentinel-pw-from-file" });
      // Every setting that may hold a secret has its _FILE form (this test covers them all).
      expect([...SECRET_VARIABLES].sort()).toEqual(["REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "REDIS_URL", "REKEY_ADMIN_TOKEN_HASH", "REKEY_AUDIT_SINK", "REKEY_AUDIT_SINK_TOKEN", "REKEY_FINGERPRINT_KEY"]);
    });

    it("refuses a variable set both ways, a missing or empty file, and never shows what a file holds", () => {
      const secret = "not-a-url-but-secret";
      const err = configError({
        REDIS_URL_FILE: file("redis-url", `${secret}\n`),
        REKEY_FINGERPRINT_KEY: "k".repeat(32),
        REKEY_FINGERPRINT_KEY_FILE: file("fingerprint-key", "k".repeat(32)),
        REKEY_ADMIN_TOKEN_HASH_FILE: join(dir, "absent"),
      });
      expect(err.message.split("\n")).toEqual([
        "invalid configuration:",
        `  REKEY_ADMIN_TOKEN_HASH_FILE: cannot read ${join(dir, "absent")}: no such file`,
        "  REKEY_FINGERPRINT_KEY_FILE: set either REKEY_FINGERPRINT_KEY or REKEY_FINGERPRINT_KEY_FILE, not both",
        "  REDIS_URL (from REDIS_URL_FILE): expected a redis:// or rediss:// URL",
      ]);
      expect(err.message).not.toContain(secret);
      expect(configError({ REKEY_FINGERPRINT_KEY_FILE: file("empty", "\n") }).message).toContain(`REKEY_FINGERPRINT_KEY_FILE: ${join(dir, "empty")} is empty`);
    });

    it("resolves a policy's env: credential from <NAME>_FILE, read again at each use (a rotated Secret volume)", async () => {
      const path = file("ld-admin-token", "api-first-value\n");
      const store = {} as SecretStore;
      const resolve = credentialResolver(store, { LD_ADMIN_TOKEN_FILE: path });
      expect(await resolve({ env: "LD_ADMIN_TOKEN" })).toBe("api-first-value");
      writeFileSync(path, "api-second-value\n");
      expect(await resolve({ env: "LD_ADMIN_TOKEN" })).toBe("api-second-value");
      await expect(credentialResolver(store, {})({ env: "LD_ADMIN_TOKEN" })).rejects.toThrow("environment variable LD_ADMIN_TOKEN (a credential a policy refers to) is not set, nor LD_ADMIN_TOKEN_FILE");
      await expect(credentialResolver(store, { LD_ADMIN_TOKEN: "a", LD_ADMIN_TOKEN_FILE: path })({ env: "LD_ADMIN_TOKEN" })).rejects.toThrow(
        "LD_ADMIN_TOKEN_FILE: set either LD_ADMIN_TOKEN or LD_ADMIN_TOKEN_FILE, not both",
      );
    });
  });
});

describe("loadConfig: Sentinel and Cluster", () => {
  it("reads a Sentinel-managed master with auth and TLS on both sides", () => {
    const dir = mkdtempSync(join(tmpdir(), "rekey-config-"));
    try {
      writeFileSync(join(dir, "ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
      expect(
        loadConfig({
          REDIS_SENTINELS: "10.0.0.5:26379, sentinel-b.internal:26380,[::1]:26381",
          REDIS_SENTINEL_MASTER: "mymaster",
          REDIS_SENTINEL_USERNAME: "sentinel-user",
          REDIS_SENTINEL_PASSWORD: "sentinel-pw",
          REDIS_SENTINEL_TLS: "true",
          REDIS_USERNAME: "rekey",
          REDIS_PASSWORD: "data-pw",
          REDIS_TLS: "1",
          REDIS_TLS_CA_FILE: join(dir, "ca.pem"),
        }).redis,
      ).toEqual({
        kind: "sentinel",
        sentinels: [
          { host: "10.0.0.5", port: 26379 },
          { host: "sentinel-b.internal", port: 26380 },
          { host: "::1", port: 26381 },
        ],
        masterName: "mymaster",
        sentinelUsername: "sentinel-user",
        sentinelPassword: "sentinel-pw",
        sentinelTls: true,
        username: "rekey",
        password: "data-pw",
        tls: true,
        tlsCa: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads a Cluster's seed nodes and requires a hash-tagged prefix", () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: "10.0.0.1:7000,10.0.0.2:7000", REKEY_PREFIX: "{rekey}", REDIS_PASSWORD: "pw" })).toMatchObject({
      redis: { kind: "cluster", nodes: [{ host: "10.0.0.1", port: 7000 }, { host: "10.0.0.2", port: 7000 }], password: "pw", tls: false },
      prefix: "{rekey}",
    });
    expect(configError({ REDIS_CLUSTER_NODES: "10.0.0.1:7000" }).message.split("\n")).toEqual([
      "invalid configuration:",
      '  REKEY_PREFIX: a Redis Cluster needs a hash-tagged prefix such as {rekey}, so that every key of rekey and of its queues lives in one slot (got "rekey")',
    ]);
    expect(configError({ REDIS_CLUSTER_NODES: "10.0.0.1:7000", REKEY_PREFIX: "prod-rekey" }).message).toContain("such as {prod-rekey}");
  });

  it("refuses two ways to reach Redis at once, and settings of a mode that is not chosen", () => {
    expect(configError({ REDIS_URL: "redis://a:6379", REDIS_SENTINELS: "b:26379", REDIS_SENTINEL_MASTER: "m" }).message).toContain(
      "REDIS_URL, REDIS_SENTINELS: set only one of REDIS_URL (a single Redis), REDIS_SENTINELS (Sentinel) and REDIS_CLUSTER_NODES (Cluster)",
    );
    expect(configError({ REDIS_SENTINELS: "b:26379" }).message).toContain("REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS");
    expect(configError({ REDIS_SENTINEL_MASTER: "mymaster" }).message).toContain("REDIS_SENTINEL_MASTER: only used with REDIS_SENTINELS");
    expect(configError({ REDIS_PASSWORD: "pw" }).message).toContain("REDIS_PASSWORD: only used with REDIS_SENTINELS or REDIS_CLUSTER_NODES; a single Redis takes its user, password and TLS from REDIS_URL");
  });

  it("names a bad address list, a bad flag and an unreadable CA file, and never repeats a password", () => {
    const err = configError({ REDIS_SENTINELS: "10.0.0.5:26379,sentinel-b", REDIS_SENTINEL_MASTER: "mymaster", REDIS_SENTINEL_TLS: "yes", REDIS_PASSWORD: "hunter2" });
    expect(err.message).toContain('REDIS_SENTINELS: expected a comma-separated list of sentinels as host:port (such as 10.0.0.5:26379), and "sentinel-b" is not one');
    expect(err.message).toContain('REDIS_SENTINEL_TLS: expected true or false (got "yes")');
    expect(err.message).not.toContain("hunter2");
    expect(configError({ REDIS_CLUSTER_NODES: "a:7000", REKEY_PREFIX: "{r}", REDIS_TLS_CA_FILE: "/nonexistent/ca.pem" }).message).toContain(
      "REDIS_TLS_CA_FILE: cannot read /nonexistent/ca.pem (ENOENT)",
    );
  });
});
