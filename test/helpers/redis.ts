import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { inject } from "vitest";
import { type RedisClient, scanKeys } from "../../src/redis-connection.ts";

/** The shared test Redis (see global-setup.ts for how it is picked). */
export function redisUrl(): string {
  return inject("redisUrl");
}

/**
 * A fresh key prefix per test, so test files run in parallel on one Redis. `cleanup` deletes every
 * key under it.
 */
export function testPrefix(name = "t"): string {
  return `rekeytest-${name}-${randomUUID().slice(0, 8)}`;
}

export function connect(url = redisUrl()): Redis {
  return new Redis(url, { maxRetriesPerRequest: null });
}

export async function deleteKeys(redis: RedisClient, prefix: string): Promise<void> {
  // One DEL per key (sent without waiting for each other): on a Cluster, a DEL of several keys
  // must stay within one slot.
  const keys = await scanKeys(redis, `${prefix}*`);
  for (let i = 0; i < keys.length; i += 500) await Promise.all(keys.slice(i, i + 500).map((k) => redis.del(k)));
}
