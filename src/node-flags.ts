/**
 * The flags rekey's image starts Node with (the Dockerfile's ENTRYPOINT; test/unit/compose.test.ts
 * checks that they match). Started another way, give Node the same flags
 * (`node --max-semi-space-size=16 bin/rekey.js api`, or `NODE_OPTIONS=--max-semi-space-size=16`).
 *
 * `--max-semi-space-size=16`: on a host with a lot of memory, Node 24 lets the young generation
 * grow to 64 MB semi-spaces (134 MB of new space on the 24 GB machine of the benchmarks). rekey's
 * processes hold a live heap of about 40 MB, so the room left below the old generation's limit is
 * smaller than the young generation, and V8 then starts a full collection early, over and over.
 * Under the attack run `rekey api` did so about every two seconds (mostly 18 full collections
 * under attack, none of them forced by the heap's limit), each a pause of up to 20 ms for every
 * request it serves, and the consumer's confirmation p99 went above twice the quiet one in 8 of
 * 11 runs. With 16 MB semi-spaces (V8's long-standing default): 7–9 full collections, and a
 * p99 of 1.00–1.66× quiet in 7 of 7 runs (docs/fault-matrix-attack.md).
 */
export const NODE_FLAGS = ["--max-semi-space-size=16"] as const;
