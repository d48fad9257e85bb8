/**
 * Child process playing the consumer of every benchmark secret: as soon as a rotation awaits
 * confirmation (the audit entry of the write that made its version current and moved its record
 * to awaiting-confirmation, read from the audit stream), it confirms the new version over HTTP
 * (`POST /v1/confirmations`), as a service that reloaded its secret would. It lives in its own
 * process, like the services it stands for, so the rekey process's CPU is rekey's alone: serving
 * the confirmation is rekey's work; noticing the new version and sending the request is not.
 *
 * Driven over the IPC channel (the protocol of FakesClient in lib/rig.ts):
 *   setup   -> follow rekey's audit stream (Redis URL, rekey prefix, API URL, token)
 *   arm     -> confirm every manual rotation that parks from now on
 *   confirm -> confirm one job now (the rig's sweep, when an event was missed)
 *   disarm  -> stop; wait for confirmations in flight; when each was sent (jobId, epoch ms)
 *   count   -> the Redis commands this process has sent so far, by command (its reads of the
 *              audit stream: the rig takes them out of rekey's command counts)
 *   stop    -> close everything and exit
 */
import type { Redis } from "ioredis";
import { manualJobId } from "../src/rotation/job-ids.ts";
import { RedisKeys } from "../src/rotation/keys.ts";
import { redisConnection } from "../src/runtime.ts";
import { serveIpc } from "./lib/child.ts";

export type ConsumerRequest =
  | { id: number; type: "setup"; redisUrl: string; prefix: string; apiUrl: string; token: string }
  | { id: number; type: "arm" }
  | { id: number; type: "confirm"; jobId: string }
  | { id: number; type: "disarm" }
  | { id: number; type: "count" }
  | { id: number; type: "stop" };

export interface ConsumerReport {
  /** When each confirmation that was accepted had been sent: [jobId, epoch ms]. */
  confirmedAt: [string, number][];
  refused: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let events: Redis | undefined;
/** Redis commands this process sent, by command (lower case, as INFO commandstats names them). */
const sent: Record<string, number> = {};
const count = (command: string) => (sent[command] = (sent[command] ?? 0) + 1);
let following = false;
let followed: Promise<void> = Promise.resolve();

/** Read the audit stream from its end on: a worker's "issuing" or "promoting" ok of a manual rotation is its promotion. */
async function follow(redis: Redis, stream: string): Promise<void> {
  count("xrevrange");
  let last = (await redis.xrevrange(stream, "+", "-", "COUNT", 1))[0]?.[0] ?? "0-0";
  while (following) {
    count("xread");
    const res = (await redis.xread("COUNT", 1000, "BLOCK", 1000, "STREAMS", stream, last).catch(() => null)) as [string, [string, string[]][]][] | null;
    for (const [id, fields] of res?.[0]?.[1] ?? []) {
      last = id;
      const f = new Map<string, string>();
      for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i] as string, fields[i + 1] as string);
      const step = f.get("step");
      const policyId = f.get("policyId");
      const rotationId = f.get("rotationId");
      if (armed && f.get("actor") === "worker" && f.get("outcome") === "ok" && (step === "issuing" || step === "promoting") && policyId && rotationId) confirm(manualJobId(policyId, rotationId));
    }
  }
}
let api = { url: "", token: "" };
let armed = false;
let confirmedAt = new Map<string, number>();
let inFlight = new Map<string, Promise<void>>();
let refused = 0;

/** `manual@<policyId>@<rotationId>`: the policy and the version to confirm. */
function confirm(jobId: string): void {
  const [kind, policyId, rotationId] = jobId.split("@");
  if (kind !== "manual" || !policyId || !rotationId || confirmedAt.has(jobId) || inFlight.has(jobId)) return;
  const p = (async () => {
    for (let attempt = 0; attempt < 100; attempt++) {
      const at = Date.now();
      const res = await fetch(`${api.url}/v1/confirmations`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${api.token}` },
        body: JSON.stringify({ policyId, consumerId: "app", versionId: rotationId }),
      });
      await res.arrayBuffer();
      if (res.ok) {
        confirmedAt.set(jobId, at);
        return;
      }
      // 409: parked for another reason before promotion (never expected here); try again shortly.
      refused++;
      await sleep(20);
    }
  })().finally(() => inFlight.delete(jobId));
  inFlight.set(jobId, p);
}

async function handle(req: ConsumerRequest): Promise<unknown> {
  switch (req.type) {
    case "setup": {
      api = { url: req.apiUrl, token: req.token };
      events = redisConnection(req.redisUrl) as Redis;
      count("ping");
      await events.ping();
      following = true;
      followed = follow(events, new RedisKeys(req.prefix).audit());
      return { ready: true };
    }
    case "arm":
      armed = true;
      confirmedAt = new Map();
      inFlight = new Map();
      refused = 0;
      return { armed: true };
    case "confirm":
      confirm(req.jobId);
      return { queued: true };
    case "disarm": {
      armed = false;
      await Promise.allSettled([...inFlight.values()]);
      const report: ConsumerReport = { confirmedAt: [...confirmedAt], refused };
      return report;
    }
    case "count":
      return { ...sent };
    case "stop":
      following = false;
      await followed;
      events?.disconnect();
      return { stopped: true };
  }
}

serveIpc(handle);
