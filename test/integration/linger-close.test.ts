/**
 * The staged close of a connection whose body was left unread (src/util/linger-close.ts), on a
 * plain Node http server over real sockets: the answer and the FIN come at once, the close for
 * good only after LINGER_MS, and no more than the cap of connections wait at a time — beyond
 * that a connection is closed at once, as Node would. (The cap is MAX_LINGERING in rekey; 16 here,
 * so the test needs few file descriptors.)
 */
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { LINGER_MS, lingerOnClose, lingeringConnections } from "../../src/util/linger-close.ts";

const MAX = 16;

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  server = undefined;
});

/** Per connection, on the server's side: ms from the answer written to the socket closed. */
const closedAfterAnswer: Promise<number>[] = [];
/** Per connection, on the server's side: bytes read from the socket after the answer was written. */
const readAfterAnswer: Promise<number>[] = [];

/** A server that refuses every request before reading its body, closing in stages. */
async function refusingServer(): Promise<number> {
  closedAfterAnswer.length = 0;
  readAfterAnswer.length = 0;
  server = createServer((req, res) => {
    lingerOnClose(req.socket, { max: MAX });
    const socket = req.socket;
    let read!: (n: number) => void;
    readAfterAnswer.push(new Promise((r) => (read = r)));
    closedAfterAnswer.push(
      new Promise((resolve) => {
        res.on("finish", () => {
          const at = performance.now();
          // What Node reads from here on is the body it would drain: the client sends 8 KB every 50 ms.
          setImmediate(() => {
            const bytes = socket.bytesRead;
            socket.on("close", () => {
              read(socket.bytesRead - bytes);
              resolve(performance.now() - at);
            });
          });
        });
      }),
    );
    const body = '{"error":"too large"}';
    res.writeHead(413, { connection: "close", "content-type": "application/json", "content-length": body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}

interface Seen {
  socket: Socket;
  /** The whole answer, once the server's FIN came. */
  answer: Promise<string>;
}

/**
 * Declares a 10 MB body and sends 64 KB of it, then sends 8 KB more every 50 ms, as a slow
 * client would: the server reads none of it once it answered.
 */
function refusedUpload(port: number): Seen {
  const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  let text = "";
  const answer = new Promise<string>((resolve) => {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (text += d));
    socket.on("end", () => resolve(text));
  });
  socket.on("error", () => undefined);
  let timer: NodeJS.Timeout | undefined;
  socket.on("close", () => clearInterval(timer));
  socket.on("connect", () => {
    socket.write(`POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: ${10 * 1024 * 1024}\r\n\r\n`);
    socket.write(Buffer.alloc(64 * 1024, "x"));
    timer = setInterval(() => socket.writable && socket.write(Buffer.alloc(8 * 1024, "x")), 50);
  });
  return { socket, answer };
}

describe("closing a connection whose body was left unread", () => {
  it("answers and sends its FIN at once, and closes for good only after LINGER_MS", async () => {
    const port = await refusingServer();
    const seen = refusedUpload(port);
    expect(await seen.answer).toMatch(/^HTTP\/1.1 413 [\s\S]*\r\n\r\n\{"error":"too large"\}$/);
    expect(lingeringConnections()).toBe(1);
    expect(await closedAfterAnswer[0]).toBeGreaterThanOrEqual(LINGER_MS * 0.9);
    expect(lingeringConnections()).toBe(0);
    // About 80 KB arrived while it lingered; none of it was read.
    expect(await readAfterAnswer[0]).toBe(0);
    seen.socket.destroy();
  });

  it(`holds at most its cap of connections (${MAX}); the next one is closed at once`, async () => {
    const port = await refusingServer();
    const held = Array.from({ length: MAX }, () => refusedUpload(port));
    await Promise.all(held.map((h) => h.answer));
    expect(lingeringConnections()).toBe(MAX);
    const extra = refusedUpload(port);
    await extra.answer;
    // Node's own close: as soon as the answer is written, while the others still linger.
    expect(await closedAfterAnswer[MAX]).toBeLessThan(LINGER_MS / 2);
    expect(lingeringConnections()).toBe(MAX);
    const lingered = await Promise.all(closedAfterAnswer.slice(0, MAX));
    expect(Math.min(...lingered)).toBeGreaterThanOrEqual(LINGER_MS * 0.9);
    await until(() => lingeringConnections() === 0);
    for (const h of [...held, extra]) h.socket.destroy();
  }, 30_000);
});

async function until(ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}
