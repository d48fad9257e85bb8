/**
 * Lua scripts as ioredis commands (EVALSHA: a script's body is sent once per connection, then
 * only its hash). Each module declares its commands' types on ioredis's RedisCommander and
 * defines them here once per connection.
 */
import type { RedisClient } from "../redis-connection.ts";

const defined = new WeakMap<RedisClient, Set<string>>();

/** Define `scripts` on `redis` unless they already are (each name once per connection). */
/** `numberOfKeys` left out: each call passes the number of keys first (EVALSHA's own form). */
export function defineScripts(redis: RedisClient, scripts: Record<string, { numberOfKeys?: number; lua: string }>): void {
  let names = defined.get(redis);
  if (!names) defined.set(redis, (names = new Set()));
  for (const [name, script] of Object.entries(scripts)) {
    if (names.has(name)) continue;
    names.add(name);
    redis.defineCommand(name, script);
  }
}
