/**
 * Closing an HTTP connection whose request body was left unread, in stages (RFC 9112 §9.6,
 * "Tear-down"): the answer is written, the write side is closed (FIN), reading stops, and the
 * socket is closed `LINGER_MS` later.
 *
 * The two other ways are worse for a server that refuses big bodies:
 * - closing at once, with the rest of the body still unread, makes the kernel send a reset. On a
 *   network with latency the reset can reach the client before it has read the answer, which then
 *   sees "connection reset" instead of the 401 or 413 (what RFC 9112 §9.6 warns of);
 * - draining (what Node does to keep a connection alive) copies the rest of the body into Buffers
 *   and drops them: a flood of big bodies then sets off full garbage collections, which pause
 *   every request the process serves (docs/fault-matrix-attack.md).
 *
 * Not reading while the connection lingers is Go's net/http choice (`closeWriteAndWait`): the
 * unread bytes stay in the kernel's receive buffer, whose size bounds them, and the reset that
 * the final close sends comes after the client has had the answer for `LINGER_MS`.
 *
 * This leans on two undocumented details of Node's http server (listed in docs/operating.md, and
 * tried by test/integration/linger-close.test.ts and test/e2e/trust-boundary.test.ts on the Node
 * rekey runs on): Node calls a socket's `destroySoon()` to close it after an answer with
 * `Connection: close`, and it does not resume a socket whose `_paused` flag is set (its own flag
 * for "reading stopped on purpose"). Should a later Node change either, the close falls back to
 * Node's own: the body is drained and the socket closed once the answer is written, as before.
 */
import type { Socket } from "node:net";

/** How long a closed-for-writing connection waits before it is closed for good (Go: 500 ms). */
export const LINGER_MS = 500;

/**
 * At most this many connections linger at once; beyond it a connection closes at once, as Node
 * would (a flood of connections cannot hold more sockets open than this).
 */
export const MAX_LINGERING = 512;

let lingering = 0;

/** Connections lingering now (for tests). */
export function lingeringConnections(): number {
  return lingering;
}

type NodeHttpSocket = Socket & { _paused?: boolean; destroySoon?: () => void };

/**
 * Makes the close that follows this connection's current answer a staged one. The answer must
 * carry `Connection: close` (which makes Node close the socket once it is written). `max`: how
 * many connections may linger at once in this process (default MAX_LINGERING).
 */
export function lingerOnClose(socket: Socket | null | undefined, { max = MAX_LINGERING }: { max?: number } = {}): void {
  const s = socket as NodeHttpSocket | null | undefined;
  if (!s || typeof s.destroySoon !== "function" || s.destroyed) return;
  const nodeDestroySoon = s.destroySoon.bind(s);
  s.destroySoon = () => {
    if (lingering >= max) {
      nodeDestroySoon();
      return;
    }
    // Stop reading. Node's http server would resume the socket to drain the body unless its own
    // `_paused` flag is set.
    s._paused = true;
    s.pause();
    lingering++;
    const timer = setTimeout(() => s.destroy(), LINGER_MS);
    timer.unref();
    s.once("close", () => {
      lingering--;
      clearTimeout(timer);
    });
    s.end();
  };
}
