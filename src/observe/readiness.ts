/**
 * What "ready" means for a rekey role: its Redis answers, and the secret store answers with the
 * credentials rekey runs with. Used by the health server of every role and by the API's /readyz.
 */
import type { RedisClient } from "../redis-connection.ts";
import type { SecretRef, SecretStore } from "../stores/types.ts";
import type { ReadinessCheck } from "./role-server.ts";

/**
 * Redis answers PING. Without a connection a command would wait in the client's offline queue
 * for the reconnect: say so at once instead, so a probe gets its 503 rather than a timeout.
 */
export function redisCheck(redis: RedisClient): ReadinessCheck {
  return {
    name: "redis",
    async run() {
      if (redis.status !== "ready") throw new Error(`not connected (${redis.status})`);
      await redis.ping();
    },
  };
}

export interface SecretStoreCheckOptions {
  store: Pick<SecretStore, "probe">;
  /** The secrets the policies rotate: one per region is read. */
  targets: () => readonly SecretRef[];
  /** How long a successful answer is reused, in ms. Default 30 s (see below). */
  reuseMs?: number;
  now?: () => number;
}

/**
 * The store answers a metadata read (DescribeSecret: no value is fetched) of one secret a policy
 * rotates, in each region policies use. That secret, because rekey's IAM policy grants
 * DescribeSecret on exactly those secrets: a probe of any other name would be refused under a
 * least-privilege policy, and ListSecrets needs a permission rekey does not otherwise need.
 *
 * A success is reused for `reuseMs` (30 s): probes come every few seconds from every replica, and
 * each read is a billed API call. A failure is never reused, so recovery shows at the next probe.
 * Concurrent probes share one read.
 */
export function secretStoreCheck(opts: SecretStoreCheckOptions): ReadinessCheck {
  const reuseMs = opts.reuseMs ?? 30_000;
  const now = opts.now ?? Date.now;
  let okUntil = 0;
  let okNote = "";
  let inFlight: Promise<string> | undefined;
  const probeAll = async (signal: AbortSignal): Promise<string> => {
    if (!opts.store.probe) return "not checked: this store has no probe";
    const byRegion = new Map<string, SecretRef>();
    for (const t of opts.targets()) if (!byRegion.has(t.region ?? "")) byRegion.set(t.region ?? "", t);
    if (byRegion.size === 0) return "not checked: no policy names a secret yet";
    await Promise.all([...byRegion.values()].map((ref) => opts.store.probe!({ secretId: ref.secretId, region: ref.region }, signal)));
    const regions = [...byRegion.keys()].map((r) => r || "default region");
    return `answered in ${regions.join(", ")}`;
  };
  return {
    name: "secretStore",
    async run(signal) {
      if (now() < okUntil) return okNote;
      inFlight ??= probeAll(signal).finally(() => (inFlight = undefined));
      const note = await inFlight;
      okUntil = now() + reuseMs;
      okNote = note;
      return note;
    },
  };
}
