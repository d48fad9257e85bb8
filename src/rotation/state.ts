/**
 * rekey's own state in Redis, besides the queue, by concern (state/): the per-policy in-flight
 * lock (I3), rotation records and policy summaries, what consumers report (confirmations, probes,
 * failures), the fingerprint index for leaked values, the wake flag, the rate-limit gates shared
 * by every worker, and the records of leaks, offboardings and reconcile passes. Every key is named
 * in keys.ts; keys hold ids and keyed fingerprints, never values.
 */
import type { RedisClient } from "../redis-connection.ts";
import { defineBatch, RedisBatch } from "../util/redis-batch.ts";
import { RedisKeys } from "./keys.ts";
import type { RotationState } from "./ports.ts";
import { CancelRequests } from "./state/cancels.ts";
import { ConsumerReports } from "./state/confirmations.ts";
import { FingerprintIndex } from "./state/fingerprints.ts";
import { PolicyLocks } from "./state/locks.ts";
import { LeakIncidents, OffboardRecords, ReconcileMarks } from "./state/operations.ts";
import { RotationRecords } from "./state/records.ts";
import { RateGates, WakeFlags } from "./state/signals.ts";

export class RekeyState implements RotationState<RedisBatch> {
  readonly keys: RedisKeys;
  readonly locks: PolicyLocks;
  readonly records: RotationRecords;
  readonly cancels: CancelRequests;
  readonly consumers: ConsumerReports;
  readonly fingerprints: FingerprintIndex;
  readonly wake: WakeFlags;
  readonly gates: RateGates;
  readonly incidents: LeakIncidents;
  readonly offboards: OffboardRecords;
  readonly reconcile: ReconcileMarks;

  constructor(
    readonly redis: RedisClient,
    readonly prefix: string,
  ) {
    const keys = (this.keys = new RedisKeys(prefix));
    defineBatch(redis);
    this.locks = new PolicyLocks(redis, keys);
    this.records = new RotationRecords(redis, keys);
    this.cancels = new CancelRequests(redis, keys);
    this.consumers = new ConsumerReports(redis, keys);
    this.fingerprints = new FingerprintIndex(redis, keys);
    this.wake = new WakeFlags(redis, keys);
    this.gates = new RateGates(redis, keys);
    this.incidents = new LeakIncidents(redis, keys);
    this.offboards = new OffboardRecords(redis, keys);
    this.reconcile = new ReconcileMarks(redis, keys);
  }

  /**
   * A transaction for writes that must land together (a step's record patch and its audit
   * entries): the writers above and the audit join it through their `pipe` argument; run it with
   * commit.
   */
  transaction(): RedisBatch {
    return new RedisBatch(this.redis);
  }

  /** Run a transaction; rejects when any write in it failed. Answers with each write's reply. */
  commit(m: RedisBatch): Promise<unknown[]> {
    return m.exec();
  }
}
