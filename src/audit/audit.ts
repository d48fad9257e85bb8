/**
 * The audit trail: every step transition and every operator action, in Redis streams with bounded
 * retention (one stream for everything, one per policy for `rekey history <policy>`). Entries hold
 * ids, steps, outcomes and actors — never a value. Redis is a bounded cache: the audit sink
 * (sink.ts) ships the whole trail, hash-chained, to a file, stdout or an HTTP endpoint.
 */
import type { ChainableCommander } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { RedisKeys } from "../rotation/keys.ts";

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

export class Audit {
  private readonly keys: RedisKeys;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly opts: { maxLen: number; perPolicyMaxLen?: number; now?: () => number },
  ) {
    this.keys = new RedisKeys(prefix);
  }

  private streamKey(policyId?: string): string {
    return this.keys.audit(policyId);
  }

  /**
   * Append an entry; with `pipe`, the commands join that transaction (the caller runs it). `at`:
   * when it happened, where that was earlier than now (an entry written with a later step).
   */
  async record(entry: AuditEntry & { at?: number }, pipe?: ChainableCommander): Promise<void> {
    const at = entry.at ?? (this.opts.now ?? Date.now)();
    const fields: string[] = ["at", String(at), "step", entry.step, "outcome", entry.outcome, "actor", entry.actor];
    if (entry.rotationId) fields.push("rotationId", entry.rotationId);
    if (entry.policyId) fields.push("policyId", entry.policyId);
    if (entry.message) fields.push("message", entry.message);
    const m = pipe ?? this.redis.multi();
    m.xadd(this.streamKey(), "MAXLEN", "~", String(this.opts.maxLen), "*", ...fields);
    if (entry.policyId) {
      m.xadd(this.streamKey(entry.policyId), "MAXLEN", "~", String(this.opts.perPolicyMaxLen ?? 1_000), "*", ...fields);
    }
    if (!pipe) await m.exec();
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
