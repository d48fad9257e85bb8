import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { inject } from "vitest";

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

export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== "0");
}
