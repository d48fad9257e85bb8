/** I3: at most one rotation in flight per policy — the policy's lock, taken with the rotation's first write. */
import type { Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import type { RedisKeys } from "../keys.ts";
import { type CurrentFacts, parseFacts, type RotationRecord, toHash } from "./records.ts";

const TAKEOVER_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end`;

// A rotation's first write: its record unless it exists (a resumed job keeps its record), then
// the policy's in-flight lock. Returns the lock's holder (the rotation itself when it took it),
// and where it took it, what the policy's last completed rotation left (CurrentFacts: the
// summary's currentVersionId, currentCredentialId, currentMeta, cleanAfter), read under the lock.
// A record without its id is no record: the fields a forgotten worker patched in after Redis was
// wiped (its job gone, it ran one more step). Kept, they would shadow the record of the rotation
// that reconcile queues again under the same id (an ended-at from the dead run ends it at once).
// KEYS: record, active set, lock, policy summary. ARGV: startedAt, rotationId, record field/value pairs.
const BEGIN_LUA = `
local fresh = redis.call('EXISTS', KEYS[1]) == 0
if fresh or redis.call('HEXISTS', KEYS[1], 'rotationId') == 0 then
  if not fresh then redis.call('DEL', KEYS[1]) end
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX') then
  local f = redis.call('HMGET', KEYS[4], 'currentVersionId', 'currentCredentialId', 'currentMeta', 'cleanAfter')
  return {ARGV[2], f[1], f[2], f[3], f[4]}
end
return {redis.call('GET', KEYS[3])}
`;

// A leak request joins the rotation holding the policy, only while it still holds it and has not
// ended (the records' END_LUA sets endedAt and frees the lock in one step, and reports the flags):
// a leak is never merged into a rotation that can no longer act on it. The holder's new value may
// be the leaked one — it is (the leaked version is the holder's), or may be (which version leaked
// is unknown, and the new value was already promoted, so consumers had it): then the holder also
// owes a follow-up leak rotation once it ends (leakFollowUp). Returns 0 (not joined), 1, or 2
// (joined, follow-up owed).
// KEYS: lock, holder's record. ARGV: holder, leaked version id or ''.
const MERGE_LEAK_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HEXISTS', KEYS[2], 'endedAt') == 1 then return 0 end
redis.call('HSET', KEYS[2], 'leak', 'true')
if ARGV[2] == ARGV[1] or (ARGV[2] == '' and redis.call('HEXISTS', KEYS[2], 'promotedAt') == 1) then
  redis.call('HSET', KEYS[2], 'leakFollowUp', 'true')
  return 2
end
return 1
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyTakeOver(lock: string, stale: string, rotationId: string): Result<number, Context>;
    rekeyBegin(record: string, active: string, lock: string, policy: string, ...args: string[]): Result<(string | null)[], Context>;
    rekeyMergeLeak(lock: string, record: string, holder: string, leakedVersionId: string): Result<number, Context>;
  }
}

export class PolicyLocks {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, {
      rekeyTakeOver: { numberOfKeys: 1, lua: TAKEOVER_LUA },
      rekeyBegin: { numberOfKeys: 4, lua: BEGIN_LUA },
      rekeyMergeLeak: { numberOfKeys: 2, lua: MERGE_LEAK_LUA },
    });
  }

  /** Replace a stale holder (its rotation ended without releasing) atomically. */
  async takeOver(policyId: string, staleRotationId: string, rotationId: string): Promise<boolean> {
    return (await this.redis.rekeyTakeOver(this.keys.inflight(policyId), staleRotationId, rotationId)) === 1;
  }

  /**
   * Mark the rotation holding the policy as taken over by a leak (MERGE_LEAK_LUA). "no" when it
   * no longer holds the policy or has ended: the leak must then take the policy itself.
   * "follow-up": the holder's new value may be the leaked one, so a leak rotation follows it.
   */
  async mergeLeak(policyId: string, holder: string, leakedVersionId?: string): Promise<"no" | "joined" | "follow-up"> {
    const r = await this.redis.rekeyMergeLeak(this.keys.inflight(policyId), this.keys.rotation(holder), holder, leakedVersionId ?? "");
    return r === 0 ? "no" : r === 2 ? "follow-up" : "joined";
  }

  /**
   * A rotation's start, in one round trip: its record unless it exists (written before the lock
   * is taken, and without claiming the policy), then the policy's lock. Returns the lock's holder
   * (`rec.rotationId` when this rotation took it).
   */
  async begin(rec: RotationRecord): Promise<string> {
    return (await this.claim(rec)).holder;
  }

  /**
   * begin(), and where this rotation took the lock, the policy's CurrentFacts as the lock found
   * them (RotationRecords.currentFacts), in the same round trip.
   */
  async claim(rec: RotationRecord): Promise<{ holder: string; facts?: CurrentFacts }> {
    const flat = Object.entries(toHash(rec)).flat();
    const [holder, versionId, credentialId, meta, cleanAfter] = await this.redis.rekeyBegin(
      this.keys.rotation(rec.rotationId),
      this.keys.active(),
      this.keys.inflight(rec.policyId),
      this.keys.policy(rec.policyId),
      String(rec.startedAt),
      rec.rotationId,
      ...flat,
    );
    if (holder !== rec.rotationId) return { holder: holder ?? "" };
    return { holder, facts: parseFacts(versionId, credentialId, meta, cleanAfter) };
  }

  /** The rotation holding the policy, if any. */
  async inFlight(policyId: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.inflight(policyId))) ?? undefined;
  }
}
