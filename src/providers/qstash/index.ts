/**
 * Upstash QStash: the region's token (`qstash-token`, a cut-over reset through the Developer API)
 * and its signing keys (`qstash-signing-keys`, an overlap through current + next).
 */
export { createQStashTokenProvider } from "./token.ts";
export { createQStashSigningKeysProvider, decodeSigningKeys, encodeSigningKeys } from "./signing-keys.ts";
export { qstashRetryAt, QSTASH_DATA_PLANE, UPSTASH_DEVELOPER_API, type QStashDeps } from "./client.ts";
