/**
 * Group commit of a connection's writes (src/util/coalesce-writes.ts): what one turn of the event
 * loop writes leaves in one write at the turn's end, nothing waits beyond that turn, fake timers do
 * not hold it, and every Redis client rekey creates (src/redis-connection.ts) writes this way from
 * its first connect and after a reconnect, with every reply where it belongs.
 */
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createRedisClient } from "../../src/redis-connection.ts";
import { coalesceWrites } from "../../src/util/coalesce-writes.ts";
import { redisUrl, testPrefix } from "../helpers/redis.ts";

let server: Server | undefined;
const sockets: Socket[] = [];
const clients: Redis[] = [];

afterEach(async () => {
  vi.useRealTimers();
  for (const s of sockets.splice(0)) s.destroy();
  for (const c of clients.splice(0)) c.disconnect();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

/** A TCP server that keeps each chunk it reads, as read; and a client socket connected to it. */
async function pair(): Promise<{ client: Socket; chunks: string[] }> {
  const chunks: string[] = [];
  server = createServer((s) => {
    sockets.push(s);
    s.on("data", (d: Buffer) => chunks.push(d.toString()));
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
  sockets.push(client);
  await new Promise((r) => client.once("connect", r));
  return { client, chunks };
}

const turnEnd = () => new Promise((r) => setImmediate(r));

async function received(chunks: string[], text: string): Promise<void> {
  const until = Date.now() + 2_000;
  while (chunks.join("") !== text) {
    if (Date.now() > until) throw new Error(`the server read ${JSON.stringify(chunks.join(""))}, not ${JSON.stringify(text)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("coalesceWrites", () => {
  it("holds a turn's writes until the turn ends, then hands them to the kernel together", async () => {
    const { client, chunks } = await pair();
    coalesceWrites(client);
    client.write("a");
    client.write("b");
    client.write("c");
    // Still in this process: a plain socket would have written "a" to the kernel at once.
    expect(client.writableCorked).toBe(1);
    expect(client.writableLength).toBe(3);
    await Promise.resolve();
    expect(client.writableLength).toBe(3);
    await turnEnd();
    expect(client.writableCorked).toBe(0);
    expect(client.writableLength).toBe(0);
    await received(chunks, "abc");
    // One write, so one segment: the server read the three at once.
    expect(chunks).toEqual(["abc"]);
  });

  it("a plain socket, for comparison, writes each at once", async () => {
    const { client } = await pair();
    client.write("a");
    expect(client.writableCorked).toBe(0);
    expect(client.writableLength).toBe(0);
  });

  it("holds nothing beyond its turn: each turn's writes leave at that turn's end", async () => {
    const { client, chunks } = await pair();
    coalesceWrites(client);
    client.write("first");
    await turnEnd();
    await received(chunks, "first");
    client.write("second");
    expect(client.writableCorked).toBe(1);
    await turnEnd();
    await received(chunks, "firstsecond");
    expect(chunks).toEqual(["first", "second"]);
  });

  it("is installed once per socket, however often it is called", async () => {
    const { client, chunks } = await pair();
    coalesceWrites(client);
    coalesceWrites(client);
    client.write("x");
    expect(client.writableCorked).toBe(1);
    await turnEnd();
    expect(client.writableCorked).toBe(0);
    await received(chunks, "x");
  });

  it("fake timers installed after the connection do not hold its writes back", async () => {
    const { client, chunks } = await pair();
    coalesceWrites(client);
    vi.useFakeTimers({ toFake: ["setImmediate", "setTimeout", "setInterval", "Date"] });
    client.write("y");
    vi.useRealTimers();
    await received(chunks, "y");
  });
});

describe("rekey's Redis clients coalesce their writes", () => {
  it("a turn's commands leave together, each reply reaches its own command, and again after a reconnect", async () => {
    const client = createRedisClient({ kind: "single", url: redisUrl() }) as Redis;
    clients.push(client);
    const prefix = testPrefix("coalesce");
    await client.ping();
    const keys = Array.from({ length: 50 }, (_, i) => `${prefix}:${i}`);
    const sets = keys.map((k, i) => client.set(k, String(i), "EX", 60));
    expect(client.stream.writableCorked).toBe(1);
    await Promise.all(sets);
    const gets = keys.map((k) => client.get(k));
    expect(client.stream.writableCorked).toBe(1);
    expect(await Promise.all(gets)).toEqual(keys.map((_, i) => String(i)));

    const first = client.stream;
    const back = new Promise((r) => client.once("ready", r));
    first.destroy();
    await back;
    expect(client.stream).not.toBe(first);
    const again = client.get(keys[7]!);
    expect(client.stream.writableCorked).toBe(1);
    expect(await again).toBe("7");
    await Promise.all(keys.map((k) => client.del(k)));
  });

  it("a plain ioredis client, for comparison, writes each command at once", async () => {
    const client = new Redis(redisUrl());
    clients.push(client);
    await client.ping();
    const pending = client.ping();
    expect(client.stream.writableCorked).toBe(0);
    await pending;
  });
});
