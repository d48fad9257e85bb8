/**
 * ProviderHttp's budget of one request, over real HTTP: an answer that never comes, or a body
 * that stops half way, ends as the error the engine retries; the caller's abort ends the request
 * with the caller's reason; and a request that was answered leaves nothing behind — no timer
 * still to fire, no listener on the caller's signal (a rotation's signal outlives many requests).
 */
import { getEventListeners } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PermanentError, TransientError, UnansweredError } from "../../src/errors.ts";
import { HttpStatusError, ProviderHttp } from "../../src/providers/http.ts";

describe("ProviderHttp request budget", () => {
  let server: Server;
  let base: string;
  const open = new Set<ServerResponse>();

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      open.add(res);
      res.on("close", () => open.delete(res));
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (path === "/silent") return; // never answers
      if (path === "/half") {
        // Headers and part of the body, then nothing.
        res.writeHead(200, { "content-type": "application/json", "content-length": "100" });
        res.write('{"items": [');
        return;
      }
      if (path === "/echo") {
        let text = "";
        req.setEncoding("utf8");
        req.on("data", (c: string) => (text += c));
        req.on("end", () => {
          res.writeHead(201, { "content-type": "application/json; charset=utf-8", "x-ratelimit-remaining": "7" });
          res.end(JSON.stringify({ method: req.method, type: req.headers["content-type"], length: req.headers["content-length"], body: text }));
        });
        return;
      }
      if (path === "/moved") {
        res.writeHead(302, { location: "/ok" });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const res of open) res.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const http = new ProviderHttp({ provider: "fake", retryAt: () => undefined });

  it("sends the method, headers and body and reads status, headers and body back (the default transport, node:http)", async () => {
    const res = await http.request({ method: "POST", url: `${base}/echo`, body: { name: "rekey-é" } });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-ratelimit-remaining")).toBe("7");
    const sent = JSON.stringify({ name: "rekey-é" });
    expect(res.body).toEqual({ method: "POST", type: "application/json", length: String(Buffer.byteLength(sent)), body: sent });
  });

  it("does not follow a redirect: the 3xx is the answer", async () => {
    const err = await http.request({ method: "GET", url: `${base}/moved` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpStatusError);
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as HttpStatusError).status).toBe(302);
  });

  it("no server listening: UnansweredError naming the socket's error", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const err = await http.request({ method: "GET", url: `http://127.0.0.1:${port}/x` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnansweredError);
    expect((err as Error).message).toBe("fake GET /x: connection failed (ECONNREFUSED)");
  });

  it("an answer that never comes: UnansweredError naming the call, after the budget", async () => {
    const t0 = performance.now();
    const err = await http.request({ method: "GET", url: `${base}/silent?secret=x`, timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnansweredError);
    expect((err as Error).message).toBe("fake GET /silent: timed out");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it("a body that stops half way: the budget covers reading it too (TransientError)", async () => {
    const err = await http.request({ method: "GET", url: `${base}/half`, timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).message).toMatch(/^fake GET \/half: connection dropped while reading the answer/);
  });

  it("the caller's abort ends the request with the caller's reason", async () => {
    const ac = new AbortController();
    const reason = new Error("lock lost");
    setTimeout(() => ac.abort(reason), 100);
    const err = await http.request({ method: "GET", url: `${base}/silent`, signal: ac.signal, timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(err).toBe(reason);
    // Already aborted: nothing is sent.
    const again = await http.request({ method: "GET", url: `${base}/ok`, signal: ac.signal }).catch((e: unknown) => e);
    expect(again).toBe(reason);
  });

  it("an answered request leaves nothing behind: its budget never fires, no listener stays on the caller's signal", async () => {
    const signals: AbortSignal[] = [];
    const watched = new ProviderHttp({
      provider: "fake",
      retryAt: () => undefined,
      fetch: (input, init) => {
        if (init?.signal) signals.push(init.signal);
        return fetch(input, init);
      },
    });
    const ac = new AbortController();
    for (let i = 0; i < 20; i++) {
      const res = await watched.request({ method: "GET", url: `${base}/ok`, signal: ac.signal, timeoutMs: 50 });
      expect(res.body).toEqual({ ok: true });
    }
    await new Promise((r) => setTimeout(r, 150));
    expect(signals).toHaveLength(20);
    expect(signals.filter((s) => s.aborted)).toHaveLength(0);
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
  });
});
