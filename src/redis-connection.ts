/**
 * Which Redis rekey talks to, and the ioredis client for it: a single Redis (a URL), a master
 * found through Redis Sentinel, or a Redis Cluster. Sentinel and Cluster use ioredis's own
 * clients, which follow a failover (Sentinel) and the slot map (Cluster) by themselves.
 *
 * On a Cluster every key rekey and BullMQ use must live in one slot: Lua scripts and MULTI touch
 * several keys at once, and BullMQ's scripts build keys from the queue prefix inside Redis. A
 * hash-tagged prefix (`{rekey}`) puts every key in the slot of its tag (assertPrefixFits).
 */
import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import { ConfigError } from "./errors.ts";
import { coalesceWrites } from "./util/coalesce-writes.ts";

/** Either client: everything in src/ that talks to Redis takes this. */
export type RedisClient = Redis | Cluster;

export interface HostPort {
  host: string;
  port: number;
}

/** TLS and credentials of the Redis servers that hold the data (not the sentinels). */
export interface RedisAuth {
  username?: string;
  password?: string;
  /** Connect with TLS. */
  tls?: boolean;
  /** PEM of the CA that signed the servers' certificates (default: the system's CAs). */
  tlsCa?: string;
}

export type RedisTarget =
  | { kind: "single"; url: string }
  | ({
      kind: "sentinel";
      sentinels: HostPort[];
      /** The master group name the sentinels monitor (`sentinel monitor <name> ...`). */
      masterName: string;
      sentinelUsername?: string;
      sentinelPassword?: string;
      /** Talk to the sentinels over TLS (with `tlsCa`, where given). */
      sentinelTls?: boolean;
    } & RedisAuth)
  | ({ kind: "cluster"; nodes: HostPort[] } & RedisAuth);

/** Where the target is, without credentials, for messages: `redis 10.0.0.5:6379`, `sentinel master mymaster via a:26379,b:26379`. */
export function describeRedisTarget(t: RedisTarget): string {
  const list = (hs: HostPort[]) => hs.map((h) => `${h.host}:${h.port}`).join(",");
  if (t.kind === "sentinel") return `Sentinel master "${t.masterName}" via ${list(t.sentinels)}`;
  if (t.kind === "cluster") return `Redis Cluster seeded from ${list(t.nodes)}`;
  try {
    const u = new URL(t.url);
    return `${u.protocol === "rediss:" ? "rediss://" : ""}${u.hostname}:${u.port || "6379"}`;
  } catch {
    return "the address in REDIS_URL";
  }
}

/** The variables an operator sets to point rekey at this kind of target (for error messages). */
export function redisTargetVariables(t: RedisTarget): string {
  if (t.kind === "sentinel") return "REDIS_SENTINELS and REDIS_SENTINEL_MASTER";
  if (t.kind === "cluster") return "REDIS_CLUSTER_NODES";
  return "REDIS_URL";
}

/**
 * The hash tag of a prefix as Redis Cluster reads it: the text between the first `{` and the
 * first `}` after it, where that is not empty. undefined: no tag (keys spread over slots).
 */
export function hashTag(prefix: string): string | undefined {
  const open = prefix.indexOf("{");
  if (open < 0) return undefined;
  const close = prefix.indexOf("}", open + 1);
  if (close < 0 || close === open + 1) return undefined;
  return prefix.slice(open + 1, close);
}

/**
 * On a Cluster, the prefix must carry a hash tag so that every key rekey and BullMQ build from it
 * maps to one slot; anything else fails at the first script with CROSSSLOT, mid-rotation.
 */
export function prefixProblem(t: RedisTarget, prefix: string): string | undefined {
  if (t.kind !== "cluster" || hashTag(prefix) !== undefined) return undefined;
  return `REKEY_PREFIX: a Redis Cluster needs a hash-tagged prefix such as {${prefix.replace(/[{}]/g, "") || "rekey"}}, so that every key of rekey and of its queues lives in one slot (got ${JSON.stringify(prefix)})`;
}

/** prefixProblem as a ConfigError (the runtime checks it before it connects). */
export function assertPrefixFits(t: RedisTarget, prefix: string): void {
  const problem = prefixProblem(t, prefix);
  if (problem) throw new ConfigError(problem);
}

function tlsOptions(ca: string | undefined): ConnectionOptions {
  return ca ? { ca } : {};
}

/** Read a CA file named by an environment variable; the error names the variable. */
export function readTlsCa(variable: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${variable}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

/**
 * A new client for `target`. BullMQ needs `maxRetriesPerRequest: null` (blocking commands).
 * Every client coalesces its writes per turn of the event loop (coalesce-writes.ts); `pipelined`
 * also turns on ioredis's auto-pipelining, which sends the commands one callback issues as one
 * pipeline (the API's limiter connection). `lazy`: connect on first use.
 */
export function createRedisClient(target: RedisTarget, opts: { pipelined?: boolean; lazy?: boolean } = {}): RedisClient {
  const client = newClient(target, opts);
  // On each connect: a reconnect brings a new socket; a Cluster, a client per node.
  const install = (c: Redis) => c.on("connect", () => coalesceWrites(c.stream));
  if (client instanceof Cluster) client.on("+node", install);
  else install(client);
  return client;
}

function newClient(target: RedisTarget, opts: { pipelined?: boolean; lazy?: boolean }): RedisClient {
  const common: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    enableAutoPipelining: opts.pipelined === true,
    lazyConnect: opts.lazy === true,
  };
  if (target.kind === "single") return new Redis(target.url, common);
  const auth: RedisOptions = {
    username: target.username,
    password: target.password,
    ...(target.tls ? { tls: tlsOptions(target.tlsCa) } : {}),
  };
  if (target.kind === "sentinel") {
    return new Redis({
      ...common,
      ...auth,
      sentinels: target.sentinels,
      name: target.masterName,
      sentinelUsername: target.sentinelUsername,
      sentinelPassword: target.sentinelPassword,
      ...(target.sentinelTls ? { sentinelTLS: tlsOptions(target.tlsCa) } : {}),
      enableTLSForSentinelMode: target.tls === true,
      // No failoverDetector: its +switch-master handler drops the connection attempt in progress
      // when the master died first (ioredis 5.11: the client then ends for good, "Connection is
      // closed"; seen in the failover matrix). A dead master drops the connection by itself, and
      // a master demoted while it still answers refuses writes with READONLY (the reply's error
      // code): drop the connection, ask the sentinels for the master again, resend the command.
      reconnectOnError: (err) => (err.message.split(" ", 1)[0] === "READONLY" ? 2 : false),
    });
  }
  return new Cluster(target.nodes, {
    enableReadyCheck: true,
    enableAutoPipelining: opts.pipelined === true,
    lazyConnect: opts.lazy === true,
    // A node that died is dropped from the slot map by the next refresh; until then commands for
    // its slots wait (offline queue) and are retried on the promoted replica.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 200,
    slotsRefreshTimeout: 2_000,
    redisOptions: { ...auth, maxRetriesPerRequest: null },
  });
}

/** Every key matching `pattern` (SCAN, in batches): on a Cluster, on each of its masters. */
export async function scanKeys(client: RedisClient, pattern: string): Promise<string[]> {
  const nodes: Redis[] = client instanceof Cluster ? client.nodes("master") : [client];
  const out: string[] = [];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      out.push(...keys);
    } while (cursor !== "0");
  }
  return out;
}
