/**
 * The audit trail outlives Redis: shipped in order, hash-chained, to a rotated file (exactly
 * once), stdout or HTTP (at least once, retried until accepted); `rekey audit verify` proves a
 * file whole and finds an altered, removed or reordered line; a gap trimmed from Redis before it
 * was shipped is written into the chain.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { Redis } from "ioredis";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Audit } from "../../src/audit/audit.ts";
import { type ChainLine, verifyChain } from "../../src/audit/chain.ts";
import { AuditShipper, auditSinkMetrics, fileSink, httpSink, type SinkTarget, stdoutSink } from "../../src/audit/sink.ts";
import { main } from "../../src/cli/main.ts";
import { createLogger } from "../../src/log.ts";
import { connect, deleteKeys, redisUrl, testPrefix } from "../helpers/redis.ts";
import { until } from "../helpers/stack.ts";

const log = createLogger({ level: "silent" });

describe("the audit sink", () => {
  let redis: Redis;
  let prefix: string;
  let audit: Audit;
  let dir: string;

  beforeEach(() => {
    redis = connect();
    prefix = testPrefix("audit");
    audit = new Audit(redis, prefix, { maxLen: 100_000 });
    dir = mkdtempSync(join(tmpdir(), "rekey-audit-"));
  });

  afterEach(async () => {
    await deleteKeys(redis, prefix);
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Entries for two policies, interleaved, numbered per policy. */
  async function record(n: number, from = 0): Promise<void> {
    for (let i = from; i < from + n; i++) {
      const policyId = i % 2 ? "ld-a" : "snyk-b";
      await audit.record({ policyId, rotationId: "0d6f2a4e-1111-4c3b-9d7a-000000000001", step: "issuing", outcome: "ok", actor: "worker", message: `entry ${i} of ${policyId}` });
    }
  }

  const shipper = (sink: SinkTarget, extra: Partial<ConstructorParameters<typeof AuditShipper>[0]> = {}) => new AuditShipper({ redis, prefix, audit, sink, log, pollMs: 20, ...extra });

  async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const code = await main(argv, { stdout: (s) => void (out += s), stderr: (s) => void (err += s), stdin: new PassThrough(), env: { REDIS_URL: redisUrl(), REKEY_PREFIX: prefix, REKEY_POLICY_DIR: dir, LOG_LEVEL: "silent" } });
    return { code, out, err };
  }

  function lines(path: string): ChainLine[] {
    return readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l) as ChainLine);
  }

  it("ships every entry in order to a file that `rekey audit verify` proves whole", async () => {
    await record(40);
    const path = join(dir, "audit.jsonl");
    const registry = new Registry();
    const s = shipper(fileSink(path, 100 * 1024 * 1024), { metrics: auditSinkMetrics(registry) });
    expect(await s.drain()).toBe(40);
    const shipped = lines(path);
    expect(shipped.map((l) => l.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    // In order per policy (and overall): the stream's order.
    for (const policy of ["ld-a", "snyk-b"]) {
      const nums = shipped.filter((l) => l.policyId === policy).map((l) => Number(/entry (\d+)/.exec(l.message!)![1]));
      expect(nums).toEqual([...nums].sort((a, b) => a - b));
      expect(nums).toHaveLength(20);
    }
    // Shipping again adds nothing; new entries continue the chain.
    expect(await s.drain()).toBe(0);
    await record(5, 40);
    expect(await s.drain()).toBe(5);
    expect((await registry.getSingleMetric("rekey_audit_sink_shipped_total")!.get()).values[0]?.value).toBe(45);

    const head = await cli("audit", "head", "--json");
    const { hash, seq } = JSON.parse(head.out) as { hash: string; seq: number };
    expect(seq).toBe(45);
    const ok = await cli("audit", "verify", path, "--head", hash);
    expect(ok.code, ok.out).toBe(0);
    expect(ok.out).toContain("ok: 45 entries, seq 1..45");
    expect(ok.out).toContain(`head ${hash}`);
    // A file cut short at the end is whole by itself, but not against the shipper's head.
    writeFileSync(join(dir, "cut.jsonl"), readFileSync(path, "utf8").trim().split("\n").slice(0, -1).join("\n") + "\n");
    const cut = await cli("audit", "verify", join(dir, "cut.jsonl"), "--head", hash);
    expect(cut.code).toBe(1);
    expect(cut.out).toContain("lines are missing at the end");
  });

  it("finds an altered, a removed and a reordered line", async () => {
    await record(10);
    const path = join(dir, "audit.jsonl");
    await shipper(fileSink(path, 1 << 30)).drain();
    const text = readFileSync(path, "utf8").trim().split("\n");
    const variant = async (name: string, rows: string[]) => {
      const p = join(dir, name);
      writeFileSync(p, rows.join("\n") + "\n");
      return cli("audit", "verify", p);
    };
    const altered = await variant("altered.jsonl", text.map((l, i) => (i === 4 ? l.replace("entry 4 of", "entry 99 of") : l)));
    expect(altered.code).toBe(1);
    expect(altered.out).toContain("altered.jsonl:5: seq 5: altered (its hash does not match its content)");

    const removed = await variant("removed.jsonl", text.filter((_, i) => i !== 6));
    expect(removed.code).toBe(1);
    expect(removed.out).toContain("removed.jsonl:7: seq 8 after seq 6: 1 line(s) missing before it (chain broken)");

    const swapped = [...text];
    [swapped[2], swapped[3]] = [swapped[3]!, swapped[2]!];
    const reordered = await variant("reordered.jsonl", swapped);
    expect(reordered.code).toBe(1);
    expect(reordered.out).toContain("reordered.jsonl:3: seq 4 after seq 2");

    // A line forged with a recomputed hash still breaks the link to the next line.
    const forged = await variant("forged.jsonl", text.map((l, i) => (i === 0 ? l.replace('"outcome":"ok"', '"outcome":"failed"') : l)));
    expect(forged.code).toBe(1);
    const intact = await variant("intact.jsonl", text);
    expect(intact.code, intact.out).toBe(0);
  });

  it("rotates the file by size; the chain runs across files and each later file names its predecessor", async () => {
    await record(60);
    const path = join(dir, "audit.jsonl");
    const s = shipper(fileSink(path, 4_096), { batch: 7 });
    expect(await s.drain()).toBe(60);
    const files = readdirSync(dir).filter((f) => f.startsWith("audit.jsonl")).sort();
    expect(files.length).toBeGreaterThan(3);
    // Rotated names sort in chain order before the live file.
    const ordered = [...files.filter((f) => f !== "audit.jsonl"), "audit.jsonl"].map((f) => join(dir, f));
    const all = await cli("audit", "verify", ...ordered);
    expect(all.code, all.out).toBe(0);
    expect(all.out).toContain("ok: 60 entries, seq 1..60");
    const one = verifyChain([{ name: "live", text: readFileSync(path, "utf8") }]);
    expect(one.ok).toBe(true);
    const before = verifyChain([{ name: "prev", text: readFileSync(ordered.at(-2)!, "utf8") }]);
    expect(one.startsAfter).toBe(before.head);
    // Out of order, the files do not verify.
    expect(verifyChain([...ordered].reverse().map((f) => ({ name: f, text: readFileSync(f, "utf8") }))).ok).toBe(false);
  });

  it("a file sink is exactly once across a crash between the write and the checkpoint", async () => {
    await record(12);
    const path = join(dir, "audit.jsonl");
    await shipper(fileSink(path, 1 << 30)).drain();
    // The crash: the file has all 12, the checkpoint says 5 (and a half-written line at the end).
    const l5 = lines(path)[4]!;
    await redis.hset(`${prefix}:audit:sink`, { lastId: l5.id, seq: "5", hash: l5.hash });
    writeFileSync(path, readFileSync(path, "utf8") + '{"v":1,"seq":13,"id":"1-0","at":"2026-', { flag: "w" });
    await record(3, 12);
    const s = shipper(fileSink(path, 1 << 30));
    expect(await s.drain()).toBe(3);
    const res = verifyChain([{ name: path, text: readFileSync(path, "utf8") }]);
    expect(res).toMatchObject({ ok: true, entries: 15, repeats: 0, lastSeq: 15 });
  });

  it("writes a gap into the chain when Redis trimmed entries before they were shipped", async () => {
    await record(5);
    const path = join(dir, "audit.jsonl");
    const registry = new Registry();
    const metrics = auditSinkMetrics(registry);
    await shipper(fileSink(path, 1 << 30), { metrics }).drain();
    await record(50, 5);
    await redis.xtrim(`${prefix}:audit`, "MAXLEN", 10);
    expect(await shipper(fileSink(path, 1 << 30), { metrics }).drain()).toBe(11);
    const shipped = lines(path);
    expect(shipped[5]).toMatchObject({ seq: 6, step: "audit.gap", outcome: "lost", actor: "audit-sink" });
    expect(shipped[6]?.message).toBe("entry 45 of ld-a");
    expect(verifyChain([{ name: path, text: readFileSync(path, "utf8") }]).ok).toBe(true);
    expect((await registry.getSingleMetric("rekey_audit_sink_gaps_total")!.get()).values[0]?.value).toBe(1);
  });

  it("stdout gets JSON lines; one shipper at a time holds the lease", async () => {
    await record(4);
    let out = "";
    const a = shipper(stdoutSink((s) => void (out += s)));
    a.start();
    await until("shipped", () => out.split("\n").filter(Boolean).length === 4, 10_000);
    const b = shipper(stdoutSink(() => undefined));
    await expect(b.drain()).rejects.toThrow("another rekey process holds the audit sink lease");
    await a.stop();
    expect(verifyChain([{ name: "stdout", text: out }])).toMatchObject({ ok: true, entries: 4 });
    // Released on stop: another process takes over and continues the chain.
    await record(2, 4);
    let more = "";
    expect(await shipper(stdoutSink((s) => void (more += s))).drain()).toBe(2);
    expect(verifyChain([{ name: "stdout", text: out + more }])).toMatchObject({ ok: true, entries: 6 });
  });

  it("an HTTP sink is retried through refusals and rate limits, in order, nothing skipped", async () => {
    const received: string[] = [];
    let calls = 0;
    const server: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        calls++;
        if (req.headers.authorization !== "Bearer sink-token-123") return void res.writeHead(401).end();
        if (calls === 1) return void res.writeHead(503).end();
        if (calls === 2) return void res.writeHead(429, { "retry-after": "0" }).end();
        received.push(Buffer.concat(chunks).toString("utf8"));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest?key=secret-in-query`;
    try {
      await record(25);
      const registry = new Registry();
      const s = shipper(httpSink(url, "sink-token-123"), { batch: 10, metrics: auditSinkMetrics(registry) });
      s.start();
      await until("all received", () => received.join("").split("\n").filter(Boolean).length === 25, 20_000);
      await s.stop();
      const res = verifyChain([{ name: "http", text: received.join("") }]);
      expect(res).toMatchObject({ ok: true, entries: 25, firstSeq: 1, lastSeq: 25 });
      expect((await registry.getSingleMetric("rekey_audit_sink_errors_total")!.get()).values[0]?.value).toBe(2);
      expect(httpSink(url, undefined).describe).toBe(`http ${new URL(url).origin}/ingest`);
    } finally {
      await new Promise((r) => server.close(() => r(undefined)));
    }
  });
});
