/** The leaked-value index: a stored value's keyed fingerprint → the policy and version that hold it. */
import type { ChainableCommander } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import type { RedisKeys } from "../keys.ts";

export class FingerprintIndex {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /**
   * Index a stored value's fingerprint for 400 days: longer than any sensible rotation schedule,
   * so a value that can still be live is found; bounded, so Redis does not grow with every
   * rotation forever. (Leak by value also compares against current values directly.)
   * With `pipe`, the commands join that transaction (the caller runs it).
   */
  async index(fingerprint: string, entry: { policyId: string; versionId: string }, pipe?: ChainableCommander): Promise<void> {
    const k = this.keys.fingerprint(fingerprint);
    const m = pipe ?? this.redis.multi();
    m.hset(k, entry).expire(k, 400 * 86_400);
    if (!pipe) await m.exec();
  }

  async lookup(fingerprint: string): Promise<{ policyId: string; versionId: string } | undefined> {
    const h = await this.redis.hgetall(this.keys.fingerprint(fingerprint));
    return h.policyId && h.versionId ? { policyId: h.policyId, versionId: h.versionId } : undefined;
  }
}
