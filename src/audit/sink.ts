/**
 * The audit sink: every audit entry, in order, hash-chained (chain.ts), shipped from the Redis
 * trail to where it lasts — JSON lines in a file with size-based rotation, standard output for a
 * log shipper, or an HTTP endpoint (batches of JSON lines, retried with backoff until accepted).
 *
 * The whole trail's Redis stream is the outbox: an entry is written there in the same transaction
 * as the step it records, and the shipper's checkpoint (last stream id, seq, hash) advances only
 * after the sink took the batch — at least once, in stream order, so in order per policy. One
 * shipper runs at a time (a lease in Redis), whichever process has REKEY_AUDIT_SINK set; the
 * others stand by. A file sink is exactly once: on taking the lease the shipper reads the file's
 * last line and continues after it. Redis trims its stream (REKEY_AUDIT_MAXLEN): entries trimmed
 * before they were shipped are lost to the sink; the shipper detects that, writes an `audit.gap`
 * line into the chain saying so, and counts it (rekey_audit_sink_gaps_total).
 *
 * Why not the notification outbox's BullMQ jobs: a retried job runs after jobs queued behind
 * it, so order would be lost; one reader of an ordered stream keeps it.
 */
import { randomUUID } from "node:crypto";
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readdirSync, readSync, renameSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { Counter, Gauge, type Registry } from "prom-client";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { retryAfterMs } from "../notify/outbox.ts";
import { defineScripts } from "../util/redis-scripts.ts";
import { execOrThrow } from "../util/redis-exec.ts";
import { type Audit, type AuditRecord, parseRow } from "./audit.ts";
import { type ChainLine, chainLine, GENESIS } from "./chain.ts";
import { RedisKeys } from "../rotation/keys.ts";

/** Where the chain goes. `write` resolves once the lines are durable there (or throws). */
export interface SinkTarget {
  readonly describe: string;
  write(lines: ChainLine[]): Promise<void>;
  /** The last line already in the sink, where the sink can be read back (a file). */
  last?(): ChainLine | undefined;
  close?(): void;
}

export type SinkSpec = { kind: "stdout" } | { kind: "file"; path: string; maxBytes: number } | { kind: "http"; url: string; token?: string };

/** REKEY_AUDIT_SINK: `stdout`, `file:<path>`, or an http(s) URL. */
export function parseSinkSpec(text: string, opts: { maxBytes?: number; token?: string } = {}): SinkSpec | undefined {
  if (text === "stdout") return { kind: "stdout" };
  if (text.startsWith("file:") && text.length > 5) return { kind: "file", path: text.slice(5), maxBytes: opts.maxBytes ?? 100 * 1024 * 1024 };
  try {
    const u = new URL(text);
    if (u.protocol === "http:" || u.protocol === "https:") return { kind: "http", url: text, token: opts.token };
  } catch {
    // not a URL
  }
  return undefined;
}

function serialize(lines: ChainLine[]): string {
  return lines.map((l) => `${JSON.stringify(l)}\n`).join("");
}

export function stdoutSink(write: (s: string) => void = (s) => void process.stdout.write(s)): SinkTarget {
  return { describe: "stdout", write: async (lines) => write(serialize(lines)) };
}

/**
 * JSON lines appended to `path` and fsynced per batch. When the file would pass `maxBytes`, it is
 * renamed `<path>.<last seq, 12 digits>` (names sort in chain order) and a new file starts; the
 * chain runs on across files. Rotated files are kept: retention is the operator's decision.
 */
export function fileSink(path: string, maxBytes: number): SinkTarget {
  const open = () => openSync(path, "a+");
  let fd = open();
  const lastLineOf = (file: string): ChainLine | undefined => {
    const f = openSync(file, "r");
    try {
      const size = fstatSync(f).size;
      const len = Math.min(size, 256 * 1024);
      const buf = Buffer.alloc(len);
      readSync(f, buf, 0, len, size - len);
      const lines = buf.toString("utf8").split("\n").filter(Boolean);
      const tail = lines.at(-1);
      return tail ? (JSON.parse(tail) as ChainLine) : undefined;
    } finally {
      closeSync(f);
    }
  };
  return {
    describe: `file ${path}`,
    last() {
      // A line cut short by a crash is dropped: it was never acknowledged, so it is shipped again.
      const size = fstatSync(fd).size;
      if (size > 0) {
        const b = Buffer.alloc(1);
        readSync(fd, b, 0, 1, size - 1);
        if (b[0] !== 0x0a) {
          const buf = Buffer.alloc(Math.min(size, 256 * 1024));
          readSync(fd, buf, 0, buf.length, size - buf.length);
          const cut = buf.lastIndexOf(0x0a);
          ftruncateSync(fd, cut < 0 ? size - buf.length : size - buf.length + cut + 1);
        }
      }
      if (fstatSync(fd).size > 0) return lastLineOf(path);
      // A fresh file after a rotation: the newest rotated file holds the last line.
      const prefix = `${basename(path)}.`;
      const rotated = existsSync(dirname(path)) ? readdirSync(dirname(path)).filter((n) => n.startsWith(prefix) && /^\d{12}$/.test(n.slice(prefix.length))).sort() : [];
      const newest = rotated.at(-1);
      return newest ? lastLineOf(join(dirname(path), newest)) : undefined;
    },
    async write(lines) {
      const text = serialize(lines);
      const size = fstatSync(fd).size;
      if (size > 0 && size + Buffer.byteLength(text) > maxBytes) {
        const lastSeq = lastLineOf(path)?.seq ?? 0;
        fsyncSync(fd);
        closeSync(fd);
        renameSync(path, `${path}.${String(lastSeq).padStart(12, "0")}`);
        fd = open();
      }
      writeSync(fd, text);
      fsyncSync(fd);
    },
    close() {
      closeSync(fd);
    },
  };
}

/**
 * Batches POSTed as `application/x-ndjson`, with the bearer token where one is set. Any failure
 * (no answer, 5xx, 429, another 4xx) is retried with backoff capped at 5 minutes, honouring
 * Retry-After: entries are never skipped. Receivers drop repeats by `seq` (at least once).
 */
export function httpSink(url: string, token: string | undefined, opts: { fetch?: typeof fetch; timeoutMs?: number } = {}): SinkTarget {
  const u = new URL(url);
  // The URL's query may hold a credential: never logged.
  const describe = `http ${u.origin}${u.pathname}`;
  return {
    describe,
    async write(lines) {
      const headers: Record<string, string> = { "content-type": "application/x-ndjson" };
      if (token) headers.authorization = `Bearer ${token}`;
      let res: Response;
      try {
        res = await (opts.fetch ?? fetch)(url, { method: "POST", headers, body: serialize(lines), redirect: "error", signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000) });
      } catch (err) {
        throw new SinkError(`${describe}: request failed (${(err as { cause?: { code?: string } }).cause?.code ?? errorMessage(err)})`);
      }
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) return;
      throw new SinkError(`${describe} answered ${res.status}`, retryAfterMs(res.headers.get("retry-after"), Date.now()));
    },
  };
}

export class SinkError extends Error {
  override name = "SinkError";
  constructor(
    message: string,
    /** The sink asked to wait this long (Retry-After), in ms. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export function sinkFor(spec: SinkSpec): SinkTarget {
  if (spec.kind === "stdout") return stdoutSink();
  if (spec.kind === "file") return fileSink(spec.path, spec.maxBytes);
  return httpSink(spec.url, spec.token);
}

export interface SinkMetrics {
  shipped: Counter;
  errors: Counter;
  gaps: Counter;
}

/** The sink's metrics; the lag gauge reads the checkpoint and the trail when scraped. */
export function auditSinkMetrics(registry: Registry, lag?: () => Promise<number>): SinkMetrics {
  if (lag) {
    new Gauge({
      name: "rekey_audit_sink_lag_seconds",
      help: "Age of the oldest audit entry not yet in the sink (0 when it has everything)",
      registers: [registry],
      async collect() {
        this.set(await lag());
      },
    });
  }
  return {
    shipped: new Counter({ name: "rekey_audit_sink_shipped_total", help: "Audit entries written to the sink by this process", registers: [registry] }),
    errors: new Counter({ name: "rekey_audit_sink_errors_total", help: "Failed writes to the audit sink (retried)", registers: [registry] }),
    gaps: new Counter({ name: "rekey_audit_sink_gaps_total", help: "Times audit entries were trimmed from Redis before they were shipped", registers: [registry] }),
  };
}

// KEYS: lease. ARGV: holder, ttl ms. Renews the lease while `holder` holds it.
const RENEW_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0`;
// KEYS: lease, checkpoint. ARGV: holder, lastId, seq, hash. Advances the checkpoint while `holder` holds the lease.
// ARGV[5]: entries ever added to the stream up to lastId ('' where Redis does not count them).
const ADVANCE_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], 'lastId', ARGV[2], 'seq', ARGV[3], 'hash', ARGV[4])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'ordinal', ARGV[5]) else redis.call('HDEL', KEYS[2], 'ordinal') end
  return 1
end
return 0`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeySinkRenew(lease: string, holder: string, ttlMs: number): Result<number, Context>;
    rekeySinkAdvance(lease: string, checkpoint: string, holder: string, lastId: string, seq: number, hash: string, ordinal: string): Result<number, Context>;
  }
}

export interface Checkpoint {
  lastId?: string;
  seq: number;
  hash: string;
  /** Entries ever added to the trail's stream up to lastId (Redis ≥ 7), for gap detection. */
  ordinal?: number;
}

export interface ShipperOptions {
  redis: RedisClient;
  prefix: string;
  audit: Pick<Audit, "after" | "trailKey">;
  sink: SinkTarget;
  log: Logger;
  metrics?: SinkMetrics;
  /** Entries per batch (default 500). */
  batch?: number;
  /** Wait between reads when caught up, in ms (default 1000). */
  pollMs?: number;
  /** Lease length in ms (default 30 s; renewed every third of it). */
  leaseMs?: number;
  now?: () => number;
}

function streamMs(id: string): number {
  return Number(id.split("-")[0]);
}

/** Whether stream id `a` comes after `b` (ms-seq). */
function idAfter(a: string, b: string): boolean {
  const [am, as] = a.split("-").map(Number) as [number, number];
  const [bm, bs] = b.split("-").map(Number) as [number, number];
  return am > bm || (am === bm && as > bs);
}

export class AuditShipper {
  private readonly me = randomUUID();
  private stopped = false;
  private leader = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;

  constructor(private readonly o: ShipperOptions) {
    defineScripts(o.redis, { rekeySinkRenew: { numberOfKeys: 1, lua: RENEW_LUA }, rekeySinkAdvance: { numberOfKeys: 2, lua: ADVANCE_LUA } });
  }

  private get leaseKey(): string {
    return new RedisKeys(this.o.prefix).auditSinkLease();
  }

  get checkpointKey(): string {
    return new RedisKeys(this.o.prefix).auditSink();
  }

  async checkpoint(): Promise<Checkpoint> {
    const h = await this.o.redis.hgetall(this.checkpointKey);
    return { lastId: h.lastId, seq: Number(h.seq ?? 0), hash: h.hash ?? GENESIS, ordinal: h.ordinal ? Number(h.ordinal) : undefined };
  }

  /** Seconds since the oldest entry not yet shipped was written (0 when caught up). */
  async lag(): Promise<number> {
    const cp = await this.checkpoint();
    const [next] = await this.o.audit.after(cp.lastId, 1);
    return next ? Math.max(0, ((this.o.now ?? Date.now)() - streamMs(next.id)) / 1_000) : 0;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Ship until caught up once (tests, `rekey audit ship --once`). Takes the lease or fails. */
  async drain(): Promise<number> {
    if (!(await this.acquire())) throw new Error("another rekey process holds the audit sink lease");
    let total = 0;
    try {
      for (;;) {
        const n = await this.shipBatch();
        total += n;
        if (n === 0) return total;
      }
    } finally {
      await this.release();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeUp?.();
    await this.loop;
    await this.release();
    this.o.sink.close?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  private async acquire(): Promise<boolean> {
    const leaseMs = this.o.leaseMs ?? 30_000;
    if ((await this.o.redis.set(this.leaseKey, this.me, "PX", leaseMs, "NX")) !== "OK") return false;
    this.leader = true;
    await this.recoverFromSink();
    this.renewTimer = setInterval(() => {
      this.o.redis.rekeySinkRenew(this.leaseKey, this.me, leaseMs).then(
        (ok) => {
          if (ok !== 1 && this.leader) {
            this.leader = false;
            this.o.log.warn("lost the audit sink lease; another process ships now");
          }
        },
        () => undefined,
      );
    }, Math.max(100, Math.floor(leaseMs / 3)));
    this.renewTimer.unref();
    this.o.log.info({ sink: this.o.sink.describe }, "shipping the audit trail");
    return true;
  }

  private async release(): Promise<void> {
    clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    if (!this.leader) return;
    this.leader = false;
    await this.o.redis.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, this.leaseKey, this.me).catch(() => undefined);
  }

  /** A sink that can be read back is the truth: continue after its last line (exactly once). */
  private async recoverFromSink(): Promise<void> {
    const last = this.o.sink.last?.();
    if (!last) return;
    const cp = await this.checkpoint();
    if (last.seq > cp.seq) {
      // The file is ahead of the checkpoint: its entry count is unknown here, so gap detection
      // restarts from the next batch.
      await this.o.redis.rekeySinkAdvance(this.leaseKey, this.checkpointKey, this.me, last.id, last.seq, last.hash, "");
    } else if (last.seq < cp.seq) {
      this.o.log.warn({ sink: this.o.sink.describe, sinkSeq: last.seq, checkpointSeq: cp.seq }, "the audit sink ends before the shipped checkpoint (was it replaced?); continuing after the checkpoint");
    }
  }

  private async run(): Promise<void> {
    let backoff = 1_000;
    while (!this.stopped) {
      try {
        if (!this.leader && !(await this.acquire())) {
          await this.sleep(Math.min(this.o.leaseMs ?? 30_000, 5_000));
          continue;
        }
        const n = await this.shipBatch();
        backoff = 1_000;
        if (n === 0) await this.sleep(this.o.pollMs ?? 1_000);
      } catch (err) {
        this.o.metrics?.errors.inc();
        const wait = err instanceof SinkError && err.retryAfterMs !== undefined ? Math.min(err.retryAfterMs, 300_000) : backoff;
        this.o.log.error({ sink: this.o.sink.describe, err: errorMessage(err), retryInMs: wait }, "audit sink write failed; retrying (nothing is skipped)");
        backoff = Math.min(backoff * 2, 300_000);
        await this.sleep(wait);
      }
    }
  }

  /** One batch: read after the checkpoint, detect a gap, write, advance. Returns lines written. */
  private async shipBatch(): Promise<number> {
    const cp = await this.checkpoint();
    const key = this.o.audit.trailKey;
    const batch = this.o.batch ?? 500;
    if (!(await this.o.redis.exists(key))) return 0;
    // The stream's counters and the entries after the checkpoint, read together (one MULTI).
    const [info, rows] = (await execOrThrow(
      this.o.redis
        .multi()
        .xinfo("STREAM", key)
        .xrange(key, cp.lastId ? `(${cp.lastId}` : "-", "+", "COUNT", batch),
    )) as [unknown[], [string, string[]][]];
    const field = (name: string) => {
      const i = info.indexOf(name);
      return i >= 0 ? info[i + 1] : undefined;
    };
    // Redis ≥ 7 counts every entry ever added (entries-added). With the count up to the
    // checkpoint (ordinal), entries after it = added − ordinal; when the stream's first entry
    // comes after the checkpoint, it holds `length` of them and Redis trimmed the rest unshipped.
    const added = Number(field("entries-added") ?? Number.NaN);
    const length = Number(field("length") ?? 0);
    const streamFirst = (field("first-entry") as [string, unknown] | null | undefined)?.[0];
    let ordinal = Number.isFinite(added) ? (cp.lastId ? cp.ordinal : added - length) : undefined;
    let seq = cp.seq;
    let prev = cp.hash;
    const lines: ChainLine[] = [];
    if (cp.lastId && ordinal !== undefined && streamFirst && idAfter(streamFirst, cp.lastId)) {
      const missing = added - ordinal - length;
      if (missing > 0) {
        const gap: AuditRecord = {
          id: cp.lastId,
          at: (this.o.now ?? Date.now)(),
          step: "audit.gap",
          outcome: "lost",
          actor: "audit-sink",
          message: `${missing} entries written after ${cp.lastId} and before ${streamFirst} were trimmed from Redis before they were shipped (raise REKEY_AUDIT_MAXLEN or keep the sink reachable)`,
        };
        const line = chainLine(gap, ++seq, prev);
        prev = line.hash;
        lines.push(line);
        ordinal += missing;
        this.o.metrics?.gaps.inc();
      }
    }
    for (const row of rows) {
      const line = chainLine(parseRow(row), ++seq, prev);
      prev = line.hash;
      lines.push(line);
    }
    if (ordinal !== undefined) ordinal += rows.length;
    // A checkpoint without a count (taken over from a file sink): known again once read to the end.
    else if (Number.isFinite(added) && rows.length < batch) ordinal = added;
    if (!lines.length) return 0;
    if (!this.leader) throw new Error("not the audit sink leader any more");
    await this.o.sink.write(lines);
    const last = lines.at(-1)!;
    const ok = await this.o.redis.rekeySinkAdvance(this.leaseKey, this.checkpointKey, this.me, last.id, last.seq, last.hash, ordinal === undefined ? "" : String(ordinal));
    if (ok !== 1) {
      this.leader = false;
      throw new Error("lost the audit sink lease before the checkpoint advanced; the new holder re-ships this batch");
    }
    this.o.metrics?.shipped.inc(lines.length);
    return lines.length;
  }
}
