/**
 * Small shared signals: the wake flag (a parked rotation has something new to look at) and the
 * rate-limit gates every worker obeys after a 429.
 */
import { randomUUID } from "node:crypto";
import type { Redis, Result } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { defineScripts } from "../../util/redis-scripts.ts";
import { withTimeout } from "../../util/timeout.ts";
import type { RedisKeys } from "../keys.ts";
import type { WakeListener, WakePort } from "../ports.ts";

/** How long a raised wake flag waits for its job to read it. */
export const WAKE_TTL_SEC = 3_600;

/**
 * What a raise publishes: "look" (read what the rotation waits for: a leak joined, a cancel
 * came), or a push confirmation's `confirmed:<consumerId>`, published by the confirmation's own
 * script once it is stored (state/confirmations.ts).
 */
export const WAKE_LOOK = "look";
export const WAKE_CONFIRMED = "confirmed:";

/**
 * Where a rotation's wake is published, in a script (the raise's and the confirmation's): to the
 * channel of the worker process its record names (`listener`, written with the promotion by a
 * run that lingers), as `<rotationId> <message>`; where none is named, on the rotation's own
 * channel (the flag's key), where a worker of an earlier rekey may listen. It assigns how many
 * subscribers got it to `heard`, a local the caller declares, and needs `record` (the rotation's
 * record key), `flag`, `channels` (the prefix of the process channels), `rotationId` and
 * `message` in scope. A record keeps its `listener` after it ends: a late wake (a confirmation of
 * an ended leak rotation) reaches that process, which handles it as unheard.
 */
export const PUBLISH_WAKE_LUA = `
local listener = redis.call('HGET', record, 'listener')
if listener then
  heard = redis.call('PUBLISH', channels .. listener, rotationId .. ' ' .. message)
else
  heard = redis.call('PUBLISH', flag, message)
end
`;

// Raise the flag and publish the wake. KEYS: the flag, the record. ARGV: the flag's TTL (s), the
// process channels' prefix, the rotation id, the message. Returns how many heard it.
const RAISE_LUA = `
local flag, record, channels, rotationId, message = KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4]
local heard = 0
redis.call('SET', flag, '1', 'EX', ARGV[1])
${PUBLISH_WAKE_LUA}
return heard
`;

// Take the flag down (its value, or nil) and, where the record names this process's channel
// (ARGV[1]), take that down too: the job parks, and a wake from now on goes to its flag (the
// sender, hearing nobody, promotes the parked job). KEYS: the flag, the record.
const TAKE_LUA = `
if redis.call('HGET', KEYS[2], 'listener') == ARGV[1] then redis.call('HDEL', KEYS[2], 'listener') end
return redis.call('GETDEL', KEYS[1])
`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyWakeRaise(flag: string, record: string, ttlSec: number, channels: string, rotationId: string, message: string): Result<number, Context>;
    rekeyWakeTake(flag: string, record: string, listenerId: string): Result<string | null, Context>;
  }
}

/**
 * The wake flag, and the one subscription through which this process's lingering rotations hear
 * their wakes. A process subscribes once, to its own channel (`keys.wakeChannel(listenerId)`); a
 * run that lingers writes that id on its rotation's record with the promotion, so every wake
 * after it comes here, and is handed to the run by rotation id. A wake that comes here for a
 * rotation no run of this process listens to any more (its run stopped listening as it parked,
 * and the wake crossed that) is treated as one nobody heard: the flag is raised and `unheard`
 * (the runtime's: promote the parked job) is called, as the sender would have done.
 */
export class WakeFlags implements WakePort {
  /** This process's wake channel id (random per process; a record's `listener`). */
  readonly listenerId = randomUUID();
  /** Where a wake nobody listens to here goes (the runtime: promote the rotation's parked job). */
  unheard: ((rotationId: string) => Promise<void>) | undefined;
  /** The subscriber connection (opened on the first listen). */
  private sub: RedisClient | undefined;
  private subscribed: Promise<boolean> | undefined;
  /** Rotation id → the run listening to its wakes. */
  private readonly listeners = new Map<string, (message: string) => void>();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {
    defineScripts(redis, { rekeyWakeRaise: { numberOfKeys: 2, lua: RAISE_LUA }, rekeyWakeTake: { numberOfKeys: 2, lua: TAKE_LUA } });
  }

  /**
   * Raise the flag, and tell a worker lingering on this rotation (listen): true when one got the
   * message, which then re-reads what it waits for itself (the job is still active: nothing to
   * promote). A rotation running right now sees the flag when it parks (parkJob) and resumes at once.
   */
  async raise(rotationId: string): Promise<boolean> {
    const heard = await this.redis.rekeyWakeRaise(this.keys.wake(rotationId), this.keys.rotation(rotationId), WAKE_TTL_SEC, this.keys.wakeChannels(), rotationId, WAKE_LOOK);
    return heard > 0;
  }

  /** Take the flag down (true when it was up), and this process's channel off the record. */
  async take(rotationId: string): Promise<boolean> {
    return (await this.redis.rekeyWakeTake(this.keys.wake(rotationId), this.keys.rotation(rotationId), this.listenerId)) !== null;
  }

  /**
   * Listen for the wakes of one rotation. Undefined when this process's subscription is not in
   * place within `timeoutMs` (then the job parks at once). The listener's `id` is what the run
   * writes on the record (`listener`) with its promotion: wakes come here from then on.
   */
  async listen(rotationId: string, timeoutMs = 1_000): Promise<WakeListener | undefined> {
    if (!(await this.subscribe(timeoutMs))) return undefined;
    // What was published since the last take(), in order.
    let heard: string[] = [];
    let wakeUp: (() => void) | undefined;
    const hear = (message: string) => {
      heard.push(message);
      wakeUp?.();
    };
    this.listeners.set(rotationId, hear);
    return {
      id: this.listenerId,
      wait: (ms, signal) =>
        new Promise<boolean>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener("abort", done);
            wakeUp = undefined;
            resolve(heard.length > 0);
          };
          if (heard.length || signal.aborted) return done();
          const timer = setTimeout(done, ms);
          signal.addEventListener("abort", done);
          wakeUp = done;
        }),
      take: () => {
        const out = heard;
        heard = [];
        return out;
      },
      // A wake that arrives after this is handled as one nobody heard (hearNothing).
      close: () => {
        if (this.listeners.get(rotationId) === hear) this.listeners.delete(rotationId);
        return Promise.resolve(heard.length > 0);
      },
    };
  }

  /** Close the subscriber connection (the runtime's close). */
  async close(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    this.subscribed = undefined;
    this.listeners.clear();
    if (sub) await (sub.status === "ready" ? sub.quit() : Promise.resolve(sub.disconnect())).catch(() => undefined);
  }

  /** Subscribe this process's channel, once (again after a failed try). */
  private subscribe(timeoutMs: number): Promise<boolean> {
    this.subscribed ??= withTimeout(this.subscriber().subscribe(this.keys.wakeChannel(this.listenerId)), timeoutMs, "subscribe timed out").then(
      () => true,
      () => {
        this.subscribed = undefined;
        return false;
      },
    );
    return this.subscribed;
  }

  private subscriber(): RedisClient {
    if (this.sub) return this.sub;
    const sub: RedisClient = (this.redis as Redis).duplicate();
    // A lost subscription only costs a linger's time: a wake sent meanwhile reaches no
    // subscriber, so its sender raises the flag, which the park reads. ioredis subscribes again
    // when it reconnects.
    sub.on("error", () => undefined);
    sub.on("message", (_channel: string, message: string) => {
      const space = message.indexOf(" ");
      if (space <= 0) return;
      const rotationId = message.slice(0, space);
      const listener = this.listeners.get(rotationId);
      if (listener) listener(message.slice(space + 1));
      else void this.hearNothing(rotationId);
    });
    return (this.sub = sub);
  }

  /** A wake for a rotation no run here listens to: what its sender does when nobody hears one. */
  private async hearNothing(rotationId: string): Promise<void> {
    try {
      await this.redis.set(this.keys.wake(rotationId), "1", "EX", WAKE_TTL_SEC);
      await this.unheard?.(rotationId);
    } catch {
      // Redis is away: the rotation's next re-check reads what it waits for.
    }
  }
}

export class RateGates {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Close `scope` until `until` (epoch ms); an earlier gate never shortens a later one. */
  async close(scope: string, until: number): Promise<void> {
    const k = this.keys.gate(scope);
    const current = Number((await this.redis.get(k)) ?? 0);
    if (until > current) await this.redis.set(k, String(until), "PX", Math.max(1, until - Date.now() + 60_000));
  }

  /** Epoch ms until which `scope` is closed, or 0. */
  async until(scope: string): Promise<number> {
    return Number((await this.redis.get(this.keys.gate(scope))) ?? 0);
  }
}
