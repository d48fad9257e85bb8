/**
 * Small shared signals: the wake flag (a parked rotation has something new to look at) and the
 * rate-limit gates every worker obeys after a 429.
 */
import type { Redis } from "ioredis";
import type { RedisClient } from "../../redis-connection.ts";
import { withTimeout } from "../../util/timeout.ts";
import type { RedisKeys } from "../keys.ts";
import type { WakeListener, WakePort } from "../ports.ts";

/** How long a raised wake flag waits for its job to read it. */
export const WAKE_TTL_SEC = 3_600;

/**
 * What a raise publishes on the rotation's channel: "look" (read what the rotation waits for:
 * a leak joined, a cancel came), or a push confirmation's `confirmed:<consumerId>`, published by
 * the confirmation's own script once it is stored (state/confirmations.ts).
 */
export const WAKE_LOOK = "look";
export const WAKE_CONFIRMED = "confirmed:";

export class WakeFlags implements WakePort {
  /** The subscriber connection of this process's lingering rotations (opened on first use). */
  private sub: RedisClient | undefined;
  private readonly listeners = new Map<string, (message: string) => void>();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /**
   * Raise the flag, and tell a worker lingering on this rotation (listen): true when one got the
   * message, which then re-reads what it waits for itself (the job is still active: nothing to
   * promote). A rotation running right now sees the flag when it parks (parkJob) and resumes at once.
   */
  async raise(rotationId: string): Promise<boolean> {
    const key = this.keys.wake(rotationId);
    const [, heard] = await Promise.all([this.redis.set(key, "1", "EX", WAKE_TTL_SEC), this.redis.publish(key, WAKE_LOOK)]);
    return heard > 0;
  }

  /** Take the flag down; true when it was up. */
  async take(rotationId: string): Promise<boolean> {
    return (await this.redis.getdel(this.keys.wake(rotationId))) !== null;
  }

  /**
   * Listen for raises of the flag of one rotation (the channel named like the flag's key). The
   * subscription is in place when this resolves: a raise after it is heard. Undefined when the
   * subscriber connection does not answer within `timeoutMs` (then the job parks at once).
   */
  async listen(rotationId: string, timeoutMs = 1_000): Promise<WakeListener | undefined> {
    const channel = this.keys.wake(rotationId);
    const sub = this.subscriber();
    // What was published since the last take(), in order.
    let heard: string[] = [];
    let wakeUp: (() => void) | undefined;
    this.listeners.set(channel, (message) => {
      heard.push(message);
      wakeUp?.();
    });
    const close = async (): Promise<boolean> => {
      // The answer to UNSUBSCRIBE comes after every message published to the channel before it:
      // a raise its sender counted as heard has been seen when this resolves.
      await withTimeout(sub.unsubscribe(channel), timeoutMs, "unsubscribe timed out").catch(() => undefined);
      this.listeners.delete(channel);
      return heard.length > 0;
    };
    if (!(await withTimeout(sub.subscribe(channel), timeoutMs, "subscribe timed out").then(() => true, () => false))) {
      void close();
      return undefined;
    }
    return {
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
      close,
    };
  }

  /** Close the subscriber connection (the runtime's close). */
  async close(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    if (sub) await (sub.status === "ready" ? sub.quit() : Promise.resolve(sub.disconnect())).catch(() => undefined);
  }

  private subscriber(): RedisClient {
    if (this.sub) return this.sub;
    const sub: RedisClient = (this.redis as Redis).duplicate();
    // A lost subscription only costs a linger's time (the flag is still read at the park).
    sub.on("error", () => undefined);
    sub.on("message", (channel: string, message: string) => this.listeners.get(channel)?.(message));
    return (this.sub = sub);
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
