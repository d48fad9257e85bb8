/**
 * Status reads a rotation job's real state from BullMQ, including when a delayed job runs again
 * (read from the delayed set's score: an undocumented encoding, checked here on the installed
 * BullMQ).
 */
import { Queue } from "bullmq";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { jobViewer } from "../../src/rotation/status.ts";
import { connect, deleteKeys, redisUrl, testPrefix } from "../helpers/redis.ts";

describe("jobViewer", () => {
  let queue: Queue;
  let prefix: string;

  beforeEach(() => {
    prefix = testPrefix("jobs");
    queue = new Queue("rotations", { connection: { url: redisUrl() }, prefix });
  });

  afterEach(async () => {
    await queue.close();
    const r = connect();
    await deleteKeys(r, prefix);
    r.disconnect();
  });

  it("says when a delayed job runs again, and which jobs wait", async () => {
    const before = Date.now();
    await queue.add("rotate", {}, { jobId: "delayed-1", delay: 90_000 });
    await queue.add("rotate", {}, { jobId: "waiting-1" });
    await queue.add("rotate", {}, { jobId: "prio-1", priority: 3 });
    const view = jobViewer(queue);
    const delayed = await view("delayed-1");
    expect(delayed?.state).toBe("delayed");
    expect(delayed!.delayedUntil).toBeGreaterThanOrEqual(before + 90_000);
    expect(delayed!.delayedUntil).toBeLessThanOrEqual(Date.now() + 90_000);
    expect((await view("waiting-1"))?.state).toBe("waiting");
    expect((await view("prio-1"))?.state).toBe("prioritized");
    expect(await view("no-such-job")).toBeUndefined();
  });
});
