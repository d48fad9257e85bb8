/**
 * Group commit for a Redis connection: what a busy process writes to the socket in one turn of
 * the event loop leaves in one write.
 *
 * Under load, one turn of the loop handles many replies and HTTP answers at once: each
 * continuation sends its rotation's next command, and each would otherwise be its own write
 * system call, with its own wake-up of Redis and its own reply read back. Corked until the turn's
 * check phase (setImmediate), they leave together as one writev, and Redis answers them together.
 * An idle process loses nothing: its turn ends at once. ioredis's own auto-pipelining only
 * groups what one callback sends (it flushes on the next tick), and builds a pipeline per flush.
 */
import type { Writable } from "node:stream";

// Taken at load: a test's fake timers must not hold a connection's writes back.
const immediate = globalThis.setImmediate;

/** Sockets whose writes are coalesced already. */
const coalesced = new WeakSet<Writable>();

/** Cork `socket` at its first write in a turn of the event loop, uncork it at the turn's end. */
export function coalesceWrites(socket: Writable): void {
  if (coalesced.has(socket)) return;
  coalesced.add(socket);
  const write = socket.write;
  let corked = false;
  const flush = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: Writable, ...args: Parameters<Writable["write"]>) {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      immediate(flush);
    }
    return write.apply(this, args);
  } as Writable["write"];
}
