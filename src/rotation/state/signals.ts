/**
 * Small shared signals: the wake flag (a parked rotation has something new to look at) and the
 * rate-limit gates every worker obeys after a 429.
 */
import type { RedisClient } from "../../redis-connection.ts";
import type { RedisKeys } from "../keys.ts";

export class WakeFlags {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Raise the flag; a rotation running right now sees it when it parks (parkJob) and resumes at once. */
  async raise(rotationId: string): Promise<void> {
    await this.redis.set(this.keys.wake(rotationId), "1", "EX", 3_600);
  }

  /** Take the flag down; true when it was up. */
  async take(rotationId: string): Promise<boolean> {
    return (await this.redis.getdel(this.keys.wake(rotationId))) !== null;
  }
}

export class RateGates {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Close `scope` until `until` (epoch ms); an earlier gate never shortens a later one. */
  async close(scope: string, until: number): Promise<void> {
    const k = this.keys.gate(scope);
    const current = Number((await this.redis.get(k)) ?? 0);
    if (until > current) await this.redis.set(k, String(until), "PX", Math.max(1, until - Date.now() + 60_000));
  }

  /** Epoch ms until which `scope` is closed, or 0. */
  async until(scope: string): Promise<number> {
    return Number((await this.redis.get(this.keys.gate(scope))) ?? 0);
  }
}
