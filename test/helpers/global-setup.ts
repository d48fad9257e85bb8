import type { TestProject } from "vitest/node";
import { buildIfStale } from "./build.ts";
import { acquireRedis, type RunningRedis } from "./redis-server.ts";

let redis: RunningRedis | undefined;

export async function setup(project: TestProject): Promise<void> {
  buildIfStale();
  redis = await acquireRedis();
  project.provide("redisUrl", redis.url);
}

export async function teardown(): Promise<void> {
  await redis?.stop();
}

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
  }
}
