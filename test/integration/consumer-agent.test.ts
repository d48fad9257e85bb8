/**
 * The agent's cycle in-process, with a store it reads from memory and rekey's consumer API
 * stood in for by a small HTTP server that records what it gets: several secrets changing
 * together cause one reload; the reload command gets none of the agent's credentials; a store
 * that cannot be read at start is written as soon as it can be; a failed health check is
 * reported, never confirmed.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConsumerAgent } from "../../src/consumers/agent/agent.ts";
import { AgentConfig } from "../../src/consumers/agent/config.ts";
import { createLogger } from "../../src/log.ts";
import type { SecretRef, StoredVersion } from "../../src/stores/types.ts";
import { LogCapture, until } from "../helpers/stack.ts";

interface Recorded {
  path: string;
  body: Record<string, unknown>;
  auth: string | undefined;
}

const TOKEN = "agent-integration-consumer-token-0123456789";

describe("rekey agent cycle", () => {
  let dir: string;
  let rekey: Server;
  let rekeyUrl: string;
  let recorded: Recorded[];
  let agent: ConsumerAgent | undefined;
  const values = new Map<string, StoredVersion>();
  let failReads = 0;
  const store = {
    async getCurrent(ref: SecretRef): Promise<StoredVersion | undefined> {
      if (failReads > 0) {
        failReads--;
        throw new Error("GetSecretValue on secret got no answer from AWS Secrets Manager");
      }
      return values.get(ref.secretId);
    },
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "rekey-agent-int-"));
    recorded = [];
    values.clear();
    failReads = 0;
    rekey = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        recorded.push({ path: req.url ?? "", body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>, auth: req.headers.authorization });
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(req.url === "/v1/confirmations" ? { rotationId: "r", alreadyConfirmed: false, waitingFor: [] } : { recorded: true }));
      });
    });
    await new Promise<void>((r) => rekey.listen(0, "127.0.0.1", () => r()));
    rekeyUrl = `http://127.0.0.1:${(rekey.address() as AddressInfo).port}`;
  });

  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    await new Promise<void>((r) => rekey.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  function config(extra: Record<string, unknown> = {}): AgentConfig {
    return AgentConfig.parse({
      rekey: { url: rekeyUrl, token: { env: "REKEY_CONSUMER_TOKEN" } },
      secrets: {
        a: { secretId: "s/a", policyId: "pa", consumerId: "app" },
        b: { secretId: "s/b", policyId: "pb", consumerId: "app" },
      },
      outputs: [{ path: join(dir, "app.env"), env: { A: "a", B: "b" } }],
      reload: { command: `echo "reload token=\${REKEY_CONSUMER_TOKEN:-none} changed=$REKEY_AGENT_CHANGED" >> '${join(dir, "reloads")}'` },
      poll: "200ms",
      debounce: "300ms",
      retry: "200ms",
      ...extra,
    });
  }

  function start(cfg: AgentConfig, logs = new LogCapture()): ConsumerAgent {
    agent = new ConsumerAgent({ config: cfg, env: { PATH: process.env.PATH, REKEY_CONSUMER_TOKEN: TOKEN }, log: createLogger({ level: "debug", destination: logs }), store, confirmRetryDelaysMs: [] });
    return agent;
  }

  const confirmations = () => recorded.filter((r) => r.path === "/v1/confirmations");

  it("two secrets rotated together: one write, one reload without the agent's token, then both confirmed", async () => {
    values.set("s/a", { versionId: "a1", value: "value-a1", stages: ["AWSCURRENT"] });
    values.set("s/b", { versionId: "b1", value: "value-b1", stages: ["AWSCURRENT"] });
    const logs = new LogCapture();
    await start(config(), logs).start();
    await until("first confirmations", () => confirmations().length === 2);
    expect(existsSync(join(dir, "reloads"))).toBe(false); // no reload after the first write

    values.set("s/a", { versionId: "a2", value: "value-a2", stages: ["AWSCURRENT"] });
    await new Promise((r) => setTimeout(r, 100));
    values.set("s/b", { versionId: "b2", value: "value-b2", stages: ["AWSCURRENT"] });
    await until("both confirmed", () => confirmations().filter((c) => c.body.versionId === "a2" || c.body.versionId === "b2").length === 2, 10_000);
    expect(readFileSync(join(dir, "app.env"), "utf8")).toBe("A=value-a2\nB=value-b2\n");
    expect(readFileSync(join(dir, "reloads"), "utf8").trim().split("\n")).toEqual(["reload token=none changed=a,b"]);
    expect(confirmations().map((c) => c.auth)).toEqual(Array(4).fill(`Bearer ${TOKEN}`));
    expect(confirmations().map((c) => [c.body.policyId, c.body.versionId])).toEqual(expect.arrayContaining([["pa", "a2"], ["pb", "b2"]]));
    for (const v of ["value-a1", "value-a2", "value-b2", TOKEN]) expect(logs.text()).not.toContain(v);
  });

  it("a store that cannot be read at start: not ready until a read succeeds, then written at once", async () => {
    values.set("s/a", { versionId: "a1", value: "value-a1", stages: ["AWSCURRENT"] });
    values.set("s/b", { versionId: "b1", value: "value-b1", stages: ["AWSCURRENT"] });
    failReads = 2;
    await start(config({ listen: "127.0.0.1:0" })).start();
    expect((await fetch(`${agent!.url}/healthz`)).status).toBe(503);
    // Ready once the first read succeeded and the file is written (the file lands just before
    // the agent marks itself ready, so the check polls rather than racing the rename).
    await until("ready", async () => (await fetch(`${agent!.url}/healthz`)).status === 200, 10_000);
    expect(existsSync(join(dir, "app.env"))).toBe(true);
    await until("confirmed", () => confirmations().length === 2);
  });

  it("a health check that keeps failing is reported with its stage and retried, never confirmed", async () => {
    values.set("s/a", { versionId: "a1", value: "value-a1", stages: ["AWSCURRENT"] });
    values.set("s/b", { versionId: "b1", value: "value-b1", stages: ["AWSCURRENT"] });
    await start(config({ health: { command: "echo value-a1 is not accepted >&2; exit 1", within: "300ms", interval: "100ms" } })).start();
    await until("two reports per secret", () => recorded.filter((r) => r.path === "/v1/consumer-failures").length >= 4, 10_000);
    expect(confirmations()).toEqual([]);
    const report = recorded.find((r) => r.path === "/v1/consumer-failures")!;
    expect(report.body).toMatchObject({ stage: "health", versionId: expect.any(String) });
    // The command's output is kept, with the value it printed redacted.
    expect(report.body.message).toMatch(/^health command exited with code 1: \[redacted\] is not accepted \(still failing after 0.3 s\)$/);
    expect((agent!.status().secrets as { lastFailure?: { stage: string } }[])[0]?.lastFailure?.stage).toBe("health");
  });
});
