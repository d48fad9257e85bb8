/**
 * The Snyk adapters: OAuth client secrets of service accounts (API, overlap), a user's API token
 * (human, cut-over) and personal access tokens (human issue, API revoke, overlap).
 */
export { createSnykServiceAccountProvider, snykServiceAccountProvider } from "./service-account.ts";
export { createSnykUserTokenProvider, snykUserTokenProvider } from "./user-token.ts";
export { createSnykPatProvider, patName, snykPatProvider } from "./pat.ts";
export { SNYK_API, type SnykDeps } from "./client.ts";
