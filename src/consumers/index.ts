/**
 * `rekey/consumer`: what a service that uses a rotated secret needs (docs/consumer-library.md).
 *
 * - `createSecretSource`: the secret from AWS Secrets Manager, reloaded on rekey's webhook, on a
 *   poll and on `invalidate()`, confirmed to rekey once the app's change handlers resolved.
 * - `createWebhookVerifier`: verify rekey's Standard Webhooks (signature, timestamp, replays).
 * - `RekeyClient`: the raw confirmation and failure-report calls.
 * - `fingerprint`: the keyed fingerprint a confirmation names a version by.
 */
export {
  createSecretSource,
  SecretSourceError,
  type ChangeHandler,
  type ConfirmOptions,
  type SecretSource,
  type SecretSourceOptions,
  type SecretSourceStatus,
  type SecretVersion,
} from "./secret-source.ts";
export {
  createWebhookVerifier,
  readRawBody,
  RekeyWebhookEvent,
  WebhookRejectedError,
  type WebhookHeaders,
  type WebhookRejection,
  type WebhookVerifier,
  type WebhookVerifierOptions,
} from "./webhook-verifier.ts";
export {
  CONFIRM_RETRY_DELAYS_MS,
  confirmWithRetry,
  FAILURE_STAGES,
  RekeyClient,
  RekeyUnavailableError,
  type ConfirmOutcome,
  type ConfirmResult,
  type FailureStage,
  type RekeyClientOptions,
} from "./rekey-client.ts";
export { fingerprint } from "./fingerprint.ts";
/**
 * @deprecated The `X-Rekey-Signature` check, kept for one release while rekey still sends that
 * header. Use `createWebhookVerifier` (Standard Webhooks) instead.
 */
export { verifySignature as verifyLegacySignature } from "../notify/webhook.ts";
