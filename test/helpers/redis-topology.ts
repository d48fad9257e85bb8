/**
 * Real Redis topologies from the `redis-server` binary on free loopback ports, for tests and the
 * fault matrix: a master with replicas watched by sentinels (`redis-server --sentinel`), and a
 * Redis Cluster (`redis-cli --cluster create`). Every process and temporary directory is removed
 * by `stop()`; a process that outlives its test would hold ports for the rest of the run.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import type { HostPort, RedisTarget } from "../../src/redis-connection.ts";
import { freePort } from "./redis-server.ts";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface RedisProc {
  port: number;
  dir: string;
  /** The arguments it was started with (a restart reuses them, and its directory's AOF). */
  args: string[];
  /** Send a signal (default SIGKILL: the way a machine dies) and wait for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  alive(): boolean;
  /** Send a signal without waiting (SIGSTOP, SIGCONT). */
  signal(sig: NodeJS.Signals): void;
  /** A plain client on this one process (no Sentinel or Cluster logic); the caller closes it. */
  client(): Redis;
}

function spawnRedis(args: string[], port: number, dir: string): RedisProc {
  const child: ChildProcess = spawn("redis-server", args, { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    port,
    dir,
    args,
    alive,
    signal: (sig: NodeJS.Signals) => {
      if (alive()) child.kill(sig);
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (alive()) child.kill(signal);
      await exited;
    },
    client: () => new Redis({ host: "127.0.0.1", port, lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => null }),
  };
}

/** Poll `fn` on a fresh connection to `port` until it returns true. */
async function waitFor(what: string, port: number, fn: (c: Redis) => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const c = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on("error", () => undefined); // refused while the process starts: retried below
    try {
      await c.connect();
      if (await fn(c)) return;
    } catch (err) {
      last = err;
    } finally {
      c.disconnect();
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (port ${port})${last ? `: ${String(last)}` : ""}`);
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, "m").exec(info)?.[1]?.trim();
}

const DATA_ARGS = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction"];

export interface SentinelTopology {
  masterName: string;
  /** The data nodes in start order: [0] is the first master. */
  nodes: RedisProc[];
  sentinels: RedisProc[];
  target: RedisTarget;
  /** The port the sentinels currently name as master. */
  masterPort(): Promise<number>;
  /** The node the sentinels currently name as master. */
  master(): Promise<RedisProc>;
  /**
   * SIGKILL the master and wait until the sentinels have promoted a replica that answers as
   * master. Returns the new master and how long the promotion took (ms).
   *
   * `lagMs`: the replicas fall that far behind first, so the promoted one has lost the writes the
   * master acknowledged in that time. They are frozen (SIGSTOP) for `lagMs` while the master
   * keeps serving, then the master and the frozen replicas die together and the replicas restart
   * from their own AOF (appendfsync always: exactly what they had applied when frozen). What the
   * master had sent but a frozen replica had not read dies with it, as on a real lagging replica.
   */
  failover(opts?: { lagMs?: number }): Promise<{ from: RedisProc; to: RedisProc; ms: number }>;
  stop(): Promise<void>;
}

/**
 * A master with `replicas` replicas and `sentinels` sentinels (quorum: a majority). Failure
 * detection is fast (`down-after-milliseconds` 1000) so a failover completes within seconds.
 */
export async function startSentinelTopology(opts: { replicas?: number; sentinels?: number; downAfterMs?: number } = {}): Promise<SentinelTopology> {
  const masterName = "rekeymaster";
  const root = mkdtempSync(join(tmpdir(), "rekey-sentinel-"));
  const nodes: RedisProc[] = [];
  const sentinels: RedisProc[] = [];
  const stop = async () => {
    await Promise.all([...sentinels, ...nodes].map((p) => p.kill("SIGKILL")));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i <= (opts.replicas ?? 2); i++) {
      const port = await freePort();
      const dir = join(root, `node-${i}`);
      mkdirSync(dir);
      const first = nodes[0];
      nodes.push(spawnRedis(["--port", String(port), "--dir", dir, ...DATA_ARGS, ...(first ? ["--replicaof", "127.0.0.1", String(first.port)] : [])], port, dir));
    }
    const master = nodes[0]!;
    for (const replica of nodes.slice(1)) {
      await waitFor("a replica in sync", replica.port, async (c) => infoField(await c.info("replication"), "master_link_status") === "up");
    }
    const n = opts.sentinels ?? 3;
    const quorum = Math.floor(n / 2) + 1;
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      const dir = join(root, `sentinel-${i}`);
      mkdirSync(dir);
      const conf = join(dir, "sentinel.conf");
      writeFileSync(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${master.port} ${quorum}`,
          `sentinel down-after-milliseconds ${masterName} ${opts.downAfterMs ?? 1_000}`,
          `sentinel failover-timeout ${masterName} 10000`,
          `sentinel parallel-syncs ${masterName} 1`,
          "",
        ].join("\n"),
      );
      sentinels.push(spawnRedis([conf, "--sentinel"], port, dir));
    }
    // Ready once every sentinel knows the master, every replica and every other sentinel
    // (found through the master's hello channel): only then can they agree on a failover.
    for (const s of sentinels) {
      await waitFor("a sentinel that knows the whole topology", s.port, async (c) => {
        const replicas = (await c.call("SENTINEL", "REPLICAS", masterName)) as unknown[];
        const others = (await c.call("SENTINEL", "SENTINELS", masterName)) as unknown[];
        return replicas.length === nodes.length - 1 && others.length === n - 1;
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const askSentinels = async (): Promise<number> => {
    for (const s of sentinels) {
      if (!s.alive()) continue;
      const c = s.client();
      c.on("error", () => undefined);
      try {
        const addr = (await c.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)) as [string, string] | null;
        if (addr) return Number(addr[1]);
      } catch {
        // try the next sentinel
      } finally {
        c.disconnect();
      }
    }
    throw new Error("no sentinel answered GET-MASTER-ADDR-BY-NAME");
  };
  const byPort = (port: number) => {
    const p = nodes.find((x) => x.port === port);
    if (!p) throw new Error(`the sentinels name port ${port}, which is none of the topology's nodes`);
    return p;
  };
  return {
    masterName,
    nodes,
    sentinels,
    target: { kind: "sentinel", masterName, sentinels: sentinels.map((s): HostPort => ({ host: "127.0.0.1", port: s.port })) },
    masterPort: askSentinels,
    master: async () => byPort(await askSentinels()),
    async failover(o = {}) {
      const from = byPort(await askSentinels());
      const replicas = nodes.filter((n) => n !== from && n.alive());
      // A healthy start: every replica in sync and done writing its AOF after a resync, so the
      // writes lost are those of the lag (or of the kill itself), not of an earlier restart.
      for (const r of replicas) {
        await waitFor("a replica in sync, its AOF written", r.port, async (c) => {
          const [repl, persistence] = [await c.info("replication"), await c.info("persistence")];
          return infoField(repl, "master_link_status") === "up" && infoField(persistence, "aof_rewrite_in_progress") === "0" && infoField(persistence, "aof_rewrite_scheduled") === "0";
        });
      }
      if (o.lagMs) {
        for (const r of replicas) r.signal("SIGSTOP");
        await sleep(o.lagMs);
      }
      const t0 = Date.now();
      await from.kill("SIGKILL");
      if (o.lagMs) {
        for (const r of replicas) {
          await r.kill("SIGKILL");
          const again = spawnRedis(r.args, r.port, r.dir);
          nodes[nodes.indexOf(r)] = again;
        }
      }
      let to: RedisProc | undefined;
      const deadline = Date.now() + 60_000;
      while (!to && Date.now() < deadline) {
        await sleep(100);
        const port = await askSentinels().catch(() => from.port);
        if (port !== from.port) to = byPort(port);
      }
      if (!to) throw new Error("the sentinels promoted no replica within 60 s");
      const promoted = to;
      await waitFor("the promoted replica to answer as master", promoted.port, async (c) => infoField(await c.info("replication"), "role") === "master");
      const ms = Date.now() - t0;
      // The old master comes back as a replica of the new one (its AOF is replaced by a full
      // resync), as an operator would bring it back, so the next failover has replicas again.
      const replicaArgs = [...from.args.filter((_, i, a) => a[i] !== "--replicaof" && a[i - 1] !== "--replicaof" && a[i - 2] !== "--replicaof"), "--replicaof", "127.0.0.1", String(promoted.port)];
      nodes[nodes.indexOf(from)] = spawnRedis(replicaArgs, from.port, from.dir);
      return { from, to: promoted, ms };
    },
    stop,
  };
}

export interface ClusterTopology {
  nodes: RedisProc[];
  target: RedisTarget;
  stop(): Promise<void>;
}

/** A Redis Cluster of `masters` masters with `replicasPerMaster` replicas each. */
export async function startClusterTopology(opts: { masters?: number; replicasPerMaster?: number } = {}): Promise<ClusterTopology> {
  const masters = opts.masters ?? 3;
  const perMaster = opts.replicasPerMaster ?? 1;
  const root = mkdtempSync(join(tmpdir(), "rekey-cluster-"));
  const nodes: RedisProc[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((p) => p.kill("SIGKILL")));
    rmSync(root, { recursive: true, force: true });
  };
  // Ports come free from the OS but are only taken when a server binds them: another server
  // started meanwhile (tests run side by side) can take one first. Distinct ports for every node
  // and bus, and the whole set started again where a node did not come up.
  const startNodes = async (): Promise<void> => {
    const taken = new Set<number>();
    const pick = async (): Promise<number> => {
      for (;;) {
        const p = await freePort();
        if (taken.has(p)) continue;
        taken.add(p);
        return p;
      }
    };
    for (let i = 0; i < masters * (1 + perMaster); i++) {
      const port = await pick();
      // The cluster bus gets a port of its own (default: port + 10000, which may be taken or out of range).
      const busPort = await pick();
      const dir = join(root, `node-${i}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      nodes.push(
        spawnRedis(
          ["--port", String(port), "--dir", dir, ...DATA_ARGS, "--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf"), "--cluster-node-timeout", "2000", "--cluster-port", String(busPort)],
          port,
          dir,
        ),
      );
    }
    for (const n of nodes) await waitFor("a cluster node to start", n.port, async (c) => (await c.ping()) === "PONG", 10_000);
  };
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await startNodes();
        break;
      } catch (err) {
        await Promise.all(nodes.splice(0).map((p) => p.kill("SIGKILL")));
        if (attempt >= 3) throw err;
      }
    }
    await run("redis-cli", ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", String(perMaster), "--cluster-yes"], { timeout: 60_000 });
    for (const n of nodes) {
      await waitFor("cluster_state:ok on every node", n.port, async (c) => {
        const info = (await c.call("CLUSTER", "INFO")) as string;
        return infoField(info, "cluster_state") === "ok" && infoField(info, "cluster_known_nodes") === String(nodes.length);
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes,
    target: { kind: "cluster", nodes: nodes.slice(0, 2).map((n): HostPort => ({ host: "127.0.0.1", port: n.port })) },
    stop,
  };
}
