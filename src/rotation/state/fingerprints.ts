/** The leaked-value index: a stored value's keyed fingerprint → the policy and version that hold it. */
import type { RedisTx } from "../../util/redis-batch.ts";
import type { RedisClient } from "../../redis-connection.ts";
import { execOrThrow } from "../../util/redis-exec.ts";
import type { RedisKeys } from "../keys.ts";

/**
 * How long an indexed fingerprint is kept: 400 days, longer than any sensible rotation schedule,
 * so a value that can still be live is found; bounded, so Redis does not grow with every rotation
 * forever. (Leak by value also compares against current values directly.)
 */
const INDEX_TTL_SEC = 400 * 86_400;

export class FingerprintIndex {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Index a stored value's fingerprint (INDEX_TTL_SEC); with `pipe`, the write joins that transaction. */
  async index(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: RedisTx): Promise<void> {
    // One command: the entry and its expiry together.
    const value = JSON.stringify({ policyId: entry.policyId, versionId: entry.versionId });
    if (pipe) pipe.set(this.keys.fingerprint(fingerprint), value, "EX", INDEX_TTL_SEC);
    else await this.redis.set(this.keys.fingerprint(fingerprint), value, "EX", INDEX_TTL_SEC);
  }

  async lookup(fingerprint: string): Promise<{ policyId: string; versionId: string } | undefined> {
    // An entry rekey wrote before the index was a string is a hash under the older key.
    const [json, h] = (await execOrThrow(this.redis.pipeline().get(this.keys.fingerprint(fingerprint)).hgetall(this.keys.fingerprintHash(fingerprint)))) as [string | null, Record<string, string>];
    const parsed = json ? (JSON.parse(json) as Partial<Record<"policyId" | "versionId", unknown>>) : h;
    return typeof parsed.policyId === "string" && typeof parsed.versionId === "string" ? { policyId: parsed.policyId, versionId: parsed.versionId } : undefined;
  }
}
