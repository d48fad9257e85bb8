/**
 * rekey on the Redis production runs: a master with two replicas and three sentinels, and a
 * three-master Redis Cluster with a replica each, all real `redis-server` processes on loopback.
 * A LaunchDarkly rotation completes on each; on the Cluster every key rekey and BullMQ wrote
 * lives in one slot; and the master is SIGKILLed in the middle of rotations: the sentinels
 * promote a replica, rekey follows it, and every rotation ends with one live credential per
 * policy, the one in AWSCURRENT, and no old credential revoked before its consumer confirmed.
 */
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Cluster, Redis } from "ioredis";
import { tokenHash } from "../../src/consumers/fingerprint.ts";
import { ConfigError } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { type RedisTarget, scanKeys } from "../../src/redis-connection.ts";
import { createRuntime } from "../../src/runtime.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../fakes/launchdarkly.ts";
import { hasRedisServerBinary } from "../helpers/redis-server.ts";
import { type ClusterTopology, type SentinelTopology, startClusterTopology, startSentinelTopology } from "../helpers/redis-topology.ts";
import { dumpRedis, REGION, type Stack, startStack, until } from "../helpers/stack.ts";

const CONSUMER_TOKEN = "topology-consumer-token-abcdefghijklmnop";

if (!hasRedisServerBinary()) throw new Error("these tests start Redis topologies from the redis-server binary: put redis-server (7.x) on PATH");

function policy(ld: LaunchDarklyFake, id: string): PolicyInput {
  return {
    id,
    owner: "alice@example.com",
    provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
    schedule: { cron: "0 3 * * 1" },
    target: { secretId: `prod/${id}`, region: REGION },
    consumers: [{ id: "app", confirm: "push", tokenHash: tokenHash(CONSUMER_TOKEN) }],
    confirmation: { timeout: "1h", onTimeout: "keep-old" },
  };
}

interface World {
  ld: LaunchDarklyFake;
  stack: Stack;
  managed: Map<string, { id: string; value: string }>;
  adminId: string;
}

async function startWorld(redis: RedisTarget, prefix: string, ids: string[]): Promise<World> {
  const ld = await startLaunchDarklyFake();
  const admin = ld.addToken({ role: "admin", name: "rekey management" });
  const stack = await startStack({ policies: ids.map((id) => policy(ld, id)), env: { LD_ADMIN_TOKEN: admin.value }, redis, prefix, concurrency: 8 });
  const managed = new Map<string, { id: string; value: string }>();
  for (const id of ids) {
    const token = ld.addToken({ name: `${id}-service` });
    managed.set(id, token);
    await stack.store.create!({ secretId: `prod/${id}`, region: REGION }, token.value);
  }
  return { ld, stack, managed, adminId: admin.id };
}

/** The consumer confirms the version it loaded; retried while Redis is failing over (503). */
async function confirm(stack: Stack, policyId: string, versionId: string): Promise<void> {
  await until(
    `confirmation of ${policyId}`,
    async () => {
      const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${CONSUMER_TOKEN}` },
        body: JSON.stringify({ policyId, consumerId: "app", versionId }),
      });
      await res.arrayBuffer();
      return res.status === 200;
    },
    60_000,
    200,
  );
}

/**
 * The state every policy must end in: its rotation completed, exactly one live managed token
 * (I1: the one in AWSCURRENT; I4: no second credential of the rotation), the old token deleted
 * only after the consumer confirmed (I2), and no secret value anywhere in Redis (I5).
 */
async function expectWhole(w: World, rotations: Map<string, string>, confirmedAt: Map<string, number>): Promise<void> {
  for (const [policyId, rotationId] of rotations) {
    const rec = await w.stack.rt.state.records.get(rotationId);
    expect(rec?.status, `${policyId}: ${rec?.message ?? ""}`).toBe("completed");
    const current = await w.stack.store.getCurrent({ secretId: `prod/${policyId}`, region: REGION });
    expect(current?.versionId).toBe(rotationId);
    const old = w.managed.get(policyId)!;
    const live = w.ld.liveTokens().filter((t) => t.id !== w.adminId && (t.id === old.id || t.name.includes(policyId) || t.description.includes(rotationId)));
    expect(live.map((t) => t.value)).toEqual([current!.value]);
    const oldState = w.ld.tokens().find((t) => t.id === old.id)!;
    expect(oldState.state).toBe("deleted");
    expect(oldState.lastModified).toBeGreaterThanOrEqual(confirmedAt.get(policyId)!);
  }
  const dump = await dumpRedis(w.stack.rt, w.stack.prefix);
  for (const t of w.ld.tokens()) expect(dump.includes(t.value)).toBe(false);
}

/** Rotate every policy: wait for awaiting-confirmation, confirm, and (optionally) act in between. */
async function rotateAll(w: World, ids: string[], midway?: () => Promise<void>): Promise<{ rotations: Map<string, string>; confirmedAt: Map<string, number> }> {
  const rotations = new Map<string, string>();
  for (const id of ids) rotations.set(id, (await w.stack.rt.rotations.enqueue({ policyId: id, reason: "manual", actor: "test" })).rotationId);
  const confirmedAt = new Map<string, number>();
  const confirmOnce = async (policyId: string, rotationId: string) => {
    if (confirmedAt.has(policyId)) return;
    const rec = await w.stack.rt.state.records.get(rotationId).catch(() => undefined);
    if (rec?.status !== "awaiting-confirmation") return;
    confirmedAt.set(policyId, Date.now());
    await confirm(w.stack, policyId, rotationId);
  };
  if (midway) {
    // Some rotations are waiting for their consumer, others still in their first steps.
    await until("a rotation awaiting confirmation", async () => (await w.stack.rt.state.records.get(rotations.get(ids[0]!)!))?.status === "awaiting-confirmation");
    await midway();
  }
  await until(
    "every rotation completed",
    async () => {
      let done = 0;
      for (const [policyId, rotationId] of rotations) {
        await confirmOnce(policyId, rotationId);
        const rec = await w.stack.rt.state.records.get(rotationId).catch(() => undefined);
        if (rec?.status === "completed") done++;
      }
      return done === rotations.size;
    },
    120_000,
    200,
  );
  return { rotations, confirmedAt };
}

async function closeWorld(w: World | undefined): Promise<void> {
  if (!w) return;
  await w.stack.close();
  await w.ld.close();
}

describe("Redis Sentinel: a master, two replicas, three sentinels", () => {
  let topo: SentinelTopology;
  let w: World | undefined;
  beforeAll(async () => {
    topo = await startSentinelTopology({ replicas: 2, sentinels: 3 });
  });
  afterEach(async () => {
    await closeWorld(w);
    w = undefined;
  });
  afterAll(async () => {
    await topo?.stop();
  });

  it("completes a rotation through the sentinels' master", async () => {
    w = await startWorld(topo.target, `rekeytest-sentinel-${randomUUID().slice(0, 8)}`, ["ld-sentinel"]);
    const { rotations, confirmedAt } = await rotateAll(w, ["ld-sentinel"]);
    await expectWhole(w, rotations, confirmedAt);
    // The writes went to the master the sentinels name, and reached its replicas.
    const master = (await topo.master()).client();
    const replica = topo.nodes.find((n) => n.port !== master.options.port && n.alive())!.client();
    try {
      const key = `${w.stack.prefix}:rot:${rotations.get("ld-sentinel")}`;
      expect(await master.hget(key, "status")).toBe("completed");
      await master.wait(1, 5_000);
      expect(await replica.hget(key, "status")).toBe("completed");
    } finally {
      master.disconnect();
      replica.disconnect();
    }
  });

  it("SIGKILL of the master mid-rotation: the sentinels promote a replica, rekey follows, every rotation ends whole", async () => {
    const ids = ["ld-fo-1", "ld-fo-2", "ld-fo-3", "ld-fo-4"];
    w = await startWorld(topo.target, `rekeytest-failover-${randomUUID().slice(0, 8)}`, ids);
    const world = w;
    let failover: { from: number; to: number; ms: number } | undefined;
    const { rotations, confirmedAt } = await rotateAll(world, ids, async () => {
      const r = await topo.failover();
      failover = { from: r.from.port, to: r.to.port, ms: r.ms };
    });
    expect(failover).toBeDefined();
    expect(failover!.to).not.toBe(failover!.from);
    expect(await topo.masterPort()).toBe(failover!.to);
    await expectWhole(world, rotations, confirmedAt);
    // rekey's client is on the promoted master.
    expect(world.stack.rt.redis.status).toBe("ready");
    expect(await world.stack.rt.redis.call("ROLE").then((r) => (r as string[])[0])).toBe("master");
    // Its connection to the promoted master still writes a turn's commands in one write.
    const redis = world.stack.rt.redis as Redis;
    const reply = redis.ping();
    expect(redis.stream.writableCorked).toBe(1);
    expect(await reply).toBe("PONG");
  });
});

describe("Redis Cluster: three masters with a replica each", () => {
  let topo: ClusterTopology;
  let w: World | undefined;
  beforeAll(async () => {
    topo = await startClusterTopology({ masters: 3, replicasPerMaster: 1 });
  });
  afterEach(async () => {
    await closeWorld(w);
    w = undefined;
  });
  afterAll(async () => {
    await topo?.stop();
  });

  it("completes rotations with a hash-tagged prefix, every key of rekey and BullMQ in one slot", async () => {
    const tag = `rekeytest-cluster-${randomUUID().slice(0, 8)}`;
    w = await startWorld(topo.target, `{${tag}}`, ["ld-cluster-1", "ld-cluster-2"]);
    const { rotations, confirmedAt } = await rotateAll(w, ["ld-cluster-1", "ld-cluster-2"]);
    await expectWhole(w, rotations, confirmedAt);
    const keys = await scanKeys(w.stack.rt.redis, `{${tag}}*`);
    // records, locks' summaries, audit streams, BullMQ's queue keys and job hashes, ...
    expect(keys.some((k) => k.includes(":bull:rotations:"))).toBe(true);
    expect(keys.some((k) => k.includes(":audit"))).toBe(true);
    expect(keys.length).toBeGreaterThan(10);
    const slots = new Set(await Promise.all(keys.map((k) => w!.stack.rt.redis.call("CLUSTER", "KEYSLOT", k))));
    expect([...slots]).toEqual([await w.stack.rt.redis.call("CLUSTER", "KEYSLOT", tag)]);
    // Each node's connection writes what one turn of the event loop sends in one write
    // (src/util/coalesce-writes.ts): corked from a command until the turn ends.
    const masters = (w.stack.rt.redis as Cluster).nodes("master");
    expect(masters.length).toBe(3);
    for (const node of masters) {
      const reply = node.ping();
      expect(node.stream.writableCorked).toBe(1);
      expect(await reply).toBe("PONG");
    }
  });

  it("refuses a prefix without a hash tag before it connects", async () => {
    const log = createLogger({ level: "silent" });
    const attempt = createRuntime({ redis: topo.target, prefix: "rekey", policyPaths: [], log, region: REGION, env: {} });
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toThrow('REKEY_PREFIX: a Redis Cluster needs a hash-tagged prefix such as {rekey}, so that every key of rekey and of its queues lives in one slot (got "rekey")');
  });
});
