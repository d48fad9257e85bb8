/**
 * The SecretStore interface: where rotated values live. The AWS Secrets Manager implementation is
 * in aws-secrets-manager.ts. Version ids are the rotation ids (ClientRequestToken), so a retried
 * write is a no-op and a version is found again after a crash.
 */

export interface SecretRef {
  /** Secret name or ARN. */
  secretId: string;
  region?: string;
  /** The secret is a JSON document and this key holds the credential; other keys are kept. */
  jsonKey?: string;
}

export interface StoredVersion {
  versionId: string;
  /** The credential (with jsonKey: the value of that key, not the whole document). */
  value: string;
  stages: string[];
}

export interface VersionInfo {
  versionId: string;
  stages: string[];
  createdAt?: number;
}

export interface SecretStore {
  /** The credential labelled AWSCURRENT, or undefined where the secret has no value yet. */
  getCurrent(ref: SecretRef, signal?: AbortSignal): Promise<StoredVersion | undefined>;

  /** The credential of one version, or undefined where it does not exist (or holds no value). */
  getVersion(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<StoredVersion | undefined>;

  /** Labelled versions: versionId -> stages (DescribeSecret's VersionIdsToStages). */
  stages(ref: SecretRef, signal?: AbortSignal): Promise<Record<string, string[]>>;

  /** Every version, labelled or not (ListSecretVersionIds, paginated). */
  listVersions(ref: SecretRef, opts?: { includeDeprecated?: boolean; signal?: AbortSignal }): Promise<VersionInfo[]>;

  /**
   * Write `value` as a new version labelled AWSPENDING with versionId = `token`. Idempotent: the
   * same token and value again change nothing. With jsonKey, the new version is the current JSON
   * document with only that key replaced.
   */
  putPending(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string }>;

  /**
   * Move AWSCURRENT to `versionId` (naming the version that holds it now), then drop AWSPENDING.
   * Idempotent: a version already current only loses AWSPENDING.
   */
  promote(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<{ previousVersionId?: string }>;

  /**
   * Write `value` as a new version that is AWSCURRENT at once (one PutSecretValue with
   * VersionStages [AWSCURRENT]; AWSPREVIOUS follows the old version): the cut-over write, where the
   * old value is already dead. Idempotent like putPending; `current` is false where the token's
   * version already existed without AWSCURRENT (a repeated write moves no label): promote it then.
   */
  putCurrent?(ref: SecretRef, token: string, value: string, signal?: AbortSignal): Promise<{ versionId: string; current: boolean }>;

  /** Remove AWSPENDING from `versionId` (a rotation that failed before promotion). Idempotent. */
  discardPending(ref: SecretRef, versionId: string, signal?: AbortSignal): Promise<void>;

  /**
   * Readiness: resolves when the store answers a metadata read of `ref` with rekey's credentials
   * (no value is read). A secret that does not exist still counts as an answer: that is the
   * rotation's problem to report, not the store's. Rejects when there is no answer, or the
   * credentials are refused.
   */
  probe?(ref: SecretRef, signal?: AbortSignal): Promise<void>;

  /** Create a secret holding `value` as its first version (set-up, tests, the demo). */
  create?(ref: SecretRef, value: string, signal?: AbortSignal): Promise<{ versionId: string }>;
}

export const AWSCURRENT = "AWSCURRENT";
export const AWSPENDING = "AWSPENDING";
export const AWSPREVIOUS = "AWSPREVIOUS";
