/**
 * The audit trail: every step transition and every operator action, in Redis streams with bounded
 * retention (one stream for everything, one per policy for `rekey history <policy>`). Entries hold
 * ids, steps, outcomes and actors — never a value. Redis is a bounded cache: the audit sink
 * (sink.ts) ships the whole trail, hash-chained, to a file, stdout or an HTTP endpoint.
 */
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { RedisKeys } from "../rotation/keys.ts";
import type { RedisTx } from "../util/redis-batch.ts";
import { defineScripts } from "../util/redis-scripts.ts";

export interface AuditEntry {
  rotationId?: string;
  policyId?: string;
  /** The step or action, e.g. `issuing`, `confirmation`, `leak.requested`. */
  step: string;
  /** `ok`, `refused`, `failed`, `skipped`, … */
  outcome: string;
  /** Who: `worker`, `scheduler`, `consumer:<id>`, `cli`, `api:admin`. */
  actor: string;
  message?: string;
}

export interface AuditRecord extends AuditEntry {
  id: string;
  at: number;
}

// One entry into each of its streams (the whole trail, the policy's own), atomically.
// KEYS: the streams. ARGV: each stream's length bound, then the entry's fields.
const AUDIT_LUA = `
local n = #KEYS
for i = 1, n do redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[i], '*', unpack(ARGV, n + 1)) end
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyAudit(numberOfKeys: number, ...keysAndArgs: string[]): Result<null, Context>;
  }
}

export class Audit {
  private readonly keys: RedisKeys;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly opts: { maxLen: number; perPolicyMaxLen?: number; now?: () => number },
  ) {
    this.keys = new RedisKeys(prefix);
    // How many streams an entry goes to varies (two where it names its policy): given per call.
    defineScripts(redis, { rekeyAudit: { lua: AUDIT_LUA } });
  }

  private streamKey(policyId?: string): string {
    return this.keys.audit(policyId);
  }

  /**
   * Append an entry; with `pipe`, the commands join that transaction (the caller runs it). `at`:
   * when it happened, where that was earlier than now (an entry written with a later step).
   */
  async record(entry: AuditEntry & { at?: number }, pipe?: RedisTx): Promise<void> {
    const { streams, fields } = this.appendArgs(entry);
    if (pipe) {
      for (const s of streams) pipe.xadd(s.key, "MAXLEN", "~", s.maxLen, "*", ...fields);
      return;
    }
    // Alone: one script appends to every stream at once (no MULTI/EXEC around two XADDs).
    await this.redis.rekeyAudit(streams.length, ...streams.map((s) => s.key), ...streams.map((s) => s.maxLen), ...fields);
  }

  /**
   * What record() appends: the streams (the whole trail, and the policy's own when the entry
   * names one), each with its length bound, and the entry's fields. For a script that appends
   * the entry together with the write it records (XADD key MAXLEN ~ maxLen * ...fields).
   */
  appendArgs(entry: AuditEntry & { at?: number }): { streams: { key: string; maxLen: string }[]; fields: string[] } {
    const at = entry.at ?? (this.opts.now ?? Date.now)();
    const fields: string[] = ["at", String(at), "step", entry.step, "outcome", entry.outcome, "actor", entry.actor];
    if (entry.rotationId) fields.push("rotationId", entry.rotationId);
    if (entry.policyId) fields.push("policyId", entry.policyId);
    if (entry.message) fields.push("message", entry.message);
    const streams = [{ key: this.streamKey(), maxLen: String(this.opts.maxLen) }];
    if (entry.policyId) streams.push({ key: this.streamKey(entry.policyId), maxLen: String(this.opts.perPolicyMaxLen ?? 1_000) });
    return { streams, fields };
  }

  /** Newest first. */
  async history(opts: { policyId?: string; limit?: number } = {}): Promise<AuditRecord[]> {
    const rows = await this.redis.xrevrange(this.streamKey(opts.policyId), "+", "-", "COUNT", opts.limit ?? 100);
    return rows.map(parseRow);
  }

  /** Oldest first: up to `count` entries of the whole trail after stream id `after` (the start without). */
  async after(after: string | undefined, count: number): Promise<AuditRecord[]> {
    const rows = await this.redis.xrange(this.streamKey(), after ? `(${after}` : "-", "+", "COUNT", count);
    return rows.map(parseRow);
  }

  /** The key of the whole trail's stream (the audit sink reads it). */
  get trailKey(): string {
    return this.streamKey();
  }
}

/** An entry as XRANGE returns it. */
export function parseRow([id, flat]: [string, string[]]): AuditRecord {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
  return {
    id,
    at: Number(f.at),
    step: f.step ?? "",
    outcome: f.outcome ?? "",
    actor: f.actor ?? "",
    rotationId: f.rotationId,
    policyId: f.policyId,
    message: f.message,
  };
}
