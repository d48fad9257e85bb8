/**
 * Redis for the benchmarks: REDIS_URL when set (shared: figures then include what else lives
 * there), otherwise a private redis-server on a free loopback port, never the default one.
 */
import { Redis } from "ioredis";
import { startRedisServer } from "../../test/helpers/redis-server.ts";

export interface BenchRedis {
  url: string;
  /** True for a server started for this run alone (used_memory then is rekey's alone). */
  private: boolean;
  stop(): Promise<void>;
}

export async function acquireBenchRedis(): Promise<BenchRedis> {
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv) return { url: fromEnv, private: false, stop: async () => {} };
  const server = await startRedisServer();
  return { url: server.url, private: true, stop: () => server.stop() };
}

export async function redisInfo(url: string): Promise<{ version: string; usedMemory: number }> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const server = await r.info("server");
    const memory = await r.info("memory");
    const field = (text: string, name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
    return { version: field(server, "redis_version"), usedMemory: Number(field(memory, "used_memory")) };
  } finally {
    r.disconnect();
  }
}
