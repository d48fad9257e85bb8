/**
 * Opening and closing a runtime: what every short `rekey` command does. Closing one at once must
 * not leave a rejection behind (BullMQ checks the Redis version as a queue is created), and a
 * Redis that cannot be reached is reported by the command, not waited for without end.
 */
import { createServer } from "node:net";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { createLogger } from "../../src/log.ts";
import { startApiServer } from "../../src/processes.ts";
import { createRuntime } from "../../src/runtime.ts";
import { redisUrl, testPrefix } from "../helpers/redis.ts";

const log = createLogger({ level: "silent" });

/** A port that was free a moment ago: nothing listens there. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
}

describe("runtime lifecycle", () => {
  let unhandled: unknown[];
  const onUnhandled = (reason: unknown) => void unhandled.push(reason);

  beforeEach(() => {
    unhandled = [];
    process.on("unhandledRejection", onUnhandled);
  });
  afterEach(() => {
    process.off("unhandledRejection", onUnhandled);
  });

  it("a runtime closed right after one read leaves no unhandled rejection", async () => {
    // What `rekey status` does: read through rekey's own connection, then close, often before the
    // queues' connection has finished its version check.
    for (let i = 0; i < 30; i++) {
      const rt = await createRuntime({ redisUrl: redisUrl(), prefix: testPrefix("rt"), policyPaths: [], log, region: "us-east-1", env: {} });
      await rt.redis.ping();
      await rt.close();
    }
    // Rejections are reported after the microtask queue drains.
    await new Promise((r) => setTimeout(r, 200));
    expect(unhandled.map(String)).toEqual([]);
  });

  it("a long-running role starts without Redis, reports not ready, and stops cleanly before Redis ever answered", async () => {
    const port = await freePort();
    const rt = await createRuntime({ redisUrl: `redis://127.0.0.1:${port}`, prefix: testPrefix("rt"), policyPaths: [], log, region: "us-east-1", env: {} });
    expect(rt.redis.status).not.toBe("ready");
    // The API serves meanwhile: alive, not ready, and it says why at once.
    const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log });
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${api.url}/readyz`, { signal: AbortSignal.timeout(5_000) });
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { error: string }).error).toMatch(/^redis: not connected/);
    // A consumer's confirmation is refused at once (it retries), not left hanging.
    const confirm = await fetch(`${api.url}/v1/confirmations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer some-consumer-token" },
      body: JSON.stringify({ policyId: "ld-api-token", consumerId: "api", versionId: "v1" }),
      signal: AbortSignal.timeout(5_000),
    });
    expect(confirm.status).toBe(503);
    expect(confirm.headers.get("retry-after")).toBe("5");
    expect(((await confirm.json()) as { error: string }).error).toContain("cannot reach its Redis");
    await api.stop();
    await rt.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(unhandled.map(String)).toEqual([]);
  });

  it("a short command against an unreachable Redis exits 1 naming where it looked, and never prints the password", async () => {
    const port = await freePort();
    let out = "";
    let err = "";
    const env = {
      REDIS_URL: `redis://rekey:hunter2-redis-password@127.0.0.1:${port}`,
      REKEY_PREFIX: testPrefix("rt"),
      REKEY_POLICY_DIR: "policies",
      REKEY_REDIS_CONNECT_TIMEOUT: "1s",
      AWS_REGION: "us-east-1",
      LOG_LEVEL: "silent",
    };
    const code = await main(["status"], { stdout: (s) => void (out += s), stderr: (s) => void (err += s), stdin: new PassThrough(), env });
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toContain(`cannot reach Redis at 127.0.0.1:${port} within 1 s`);
    expect(err).toContain("ECONNREFUSED");
    expect(err).toContain("REDIS_URL");
    expect(err).not.toContain("hunter2");
    await new Promise((r) => setTimeout(r, 200));
    expect(unhandled.map(String)).toEqual([]);
  });
});
