/**
 * The flags rekey's image starts Node with (the Dockerfile's ENTRYPOINT; test/unit/compose.test.ts
 * checks that they match). Started another way, give Node the same flags
 * (`node --max-semi-space-size=16 bin/rekey.js api`, or `NODE_OPTIONS=--max-semi-space-size=16`).
 *
 * `--max-semi-space-size=16`: on a host with a lot of memory, Node 24 lets the young generation
 * grow to 64 MB semi-spaces (134 MB of new space on the 24 GB machine of the benchmarks). rekey's
 * processes hold a live heap of about 40 MB, so the room left below the old generation's limit is
 * smaller than the young generation, and V8 then starts a full collection early, over and over:
 * pauses of every request the process serves. 16 MB semi-spaces are V8's long-standing default;
 * the attack run's figures with and without are in docs/fault-matrix-attack.md.
 */
export const NODE_FLAGS = ["--max-semi-space-size=16"] as const;
