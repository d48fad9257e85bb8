/**
 * Error classes that decide what the queue does with a rotation step (STYLE.md: errors mean
 * something to the queue). Messages never carry a secret value: they name the provider, the
 * endpoint and the status, and say what to do.
 */

/** Base class: every error rekey raises on purpose. */
export class RekeyError extends Error {
  override name = "RekeyError";
}

/**
 * A rate limit was hit (a provider's 429, AWS throttling or the version quota). The step is
 * waited out until `retryAt` (epoch ms) and is not counted as a failed attempt.
 */
export class RateLimitedError extends RekeyError {
  override name = "RateLimitedError";
  constructor(
    /** What is limited, e.g. `launchdarkly:app.launchdarkly.com` or `aws:us-east-1`. */
    readonly scope: string,
    /** Epoch milliseconds at which the limit resets. */
    readonly retryAt: number,
    message?: string,
  ) {
    super(message ?? `${scope} is rate limited until ${new Date(retryAt).toISOString()}`);
  }
}

/**
 * One secret's own AWS quota (LimitExceededException: about 100 versions created within 24 h, or
 * 20 staging labels): only the work on that secret waits until `retryAt`. Unlike a throttle, it
 * closes no gate for the region — the other secrets there keep rotating — and retrying at once
 * is pointless.
 */
export class SecretQuotaError extends RateLimitedError {
  override name = "SecretQuotaError";
}

/** Worth retrying with backoff: a 5xx, a timeout, a dropped connection. */
export class TransientError extends RekeyError {
  override name = "TransientError";
}

/**
 * A request that got no answer (timed out, connection failed): unlike a 5xx, the provider may
 * still be carrying it out, and may do so after this error.
 */
export class UnansweredError extends TransientError {
  override name = "UnansweredError";
}

/**
 * Retrying cannot help: bad management credential (401/403), a missing resource, a policy that
 * does not fit the provider. The step fails now and the rotation goes to its failure path.
 */
export class PermanentError extends RekeyError {
  override name = "PermanentError";
}

/**
 * Retrying cannot help and the failure leaves something only a person can settle (a credential
 * whose value was lost and that only an outage-causing call could remove). The rotation ends as
 * needs-attention, with this message as the alert, rather than as a quiet failure.
 */
export class AttentionError extends PermanentError {
  override name = "AttentionError";
}

/**
 * `rekey cancel` came before the rotation's point of no return (its promotion, or a cut-over's
 * reset): the rotation ends through its failure path, which cleans up what it issued.
 */
export class CancelledError extends RekeyError {
  override name = "CancelledError";
}

/** A new credential did not pass its identity check. */
export class VerificationError extends PermanentError {
  override name = "VerificationError";
}

/** A policy file or a set of policy files is invalid. `issues` lists every problem found. */
export class PolicyError extends RekeyError {
  override name = "PolicyError";
  constructor(readonly issues: PolicyIssue[]) {
    super(issues.map(formatPolicyIssue).join("\n"));
  }
}

export interface PolicyIssue {
  file: string;
  /** 1-based line in the file, where known. */
  line?: number;
  /** Dotted field path, e.g. `schedule.cron` or `consumers[1].url`. */
  path: string;
  message: string;
}

export function formatPolicyIssue(i: PolicyIssue): string {
  const where = i.line ? `${i.file}:${i.line}` : i.file;
  return i.path ? `${where}: ${i.path}: ${i.message}` : `${where}: ${i.message}`;
}

/** Configuration from the environment is invalid; names the variable. */
export class ConfigError extends RekeyError {
  override name = "ConfigError";
}

/** Redis could not be reached in time by a command an operator is waiting for. */
export class RedisUnavailableError extends RekeyError {
  override name = "RedisUnavailableError";
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
