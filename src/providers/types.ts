/**
 * The Provider interface: everything the rotation engine needs from a credential issuer. One
 * adapter per provider kind, looked up in a `Record<ProviderKind, …>` map (src/providers/index.ts)
 * so adding a kind fails to compile until every map has it.
 *
 * Secret values pass through these methods as plain strings held in memory for the length of one
 * step. Adapters must never put a value in an error message, a log line or a returned id.
 */
import type { Capabilities } from "../policy/capabilities.ts";
import type { CredentialRef, ProviderConfigOf, ProviderKind } from "../policy/schema.ts";

/** What a provider kind can do: described in policy/capabilities.ts, which the policy loader reads without adapters. */
export type { Capabilities, IssueMode } from "../policy/capabilities.ts";

/** A credential as the engine tracks it: an id at the provider, never the value. */
export interface CredentialHandle {
  /** Provider id of the credential (LaunchDarkly token `_id`, Snyk PAT id, …), where it has one. */
  credentialId?: string;
  /** Non-secret facts the adapter needs later (e.g. the member a token belongs to). */
  meta?: Record<string, string>;
}

export interface IssuedCredential extends CredentialHandle {
  /** The new secret value: in memory only, written to the store in the same step. */
  value: string;
}

export interface ProviderContext<K extends ProviderKind = ProviderKind> {
  config: ProviderConfigOf<K>;
  policyId: string;
  /** The rotation this call belongs to (a UUID); adapters name new credentials with it. */
  rotationId: string;
  /** Aborted when the job's lock is lost or the worker shuts down: stop at once. */
  signal: AbortSignal;
  /** Resolves a credential reference (management credential, successor's) to its value. */
  resolve(ref: CredentialRef): Promise<string>;
  now(): number;
  /** Why the rotation runs: a leak revokes at once, offboarding issues for the successor. */
  reason: RotationReason;
  /** The successor member (offboarding only). */
  successor?: string;
}

export type RotationReason = "scheduled" | "manual" | "leak" | "offboarding" | "reconcile";

export interface OwnedCredential {
  credentialId: string;
  name: string;
  /** The provider's id or email of the member who owns it. */
  owner: string;
  kind?: string;
  lastUsed?: number;
}

export interface Provider<K extends ProviderKind = ProviderKind> {
  readonly kind: K;
  capabilities(config: ProviderConfigOf<K>): Capabilities;

  /**
   * The provider config a rotation for `reason` runs with, where it must differ from the policy's
   * (LaunchDarkly: an offboarding never resets a token in place, which would leave it the departed
   * member's personal token). Default: the policy's own.
   */
  rotationConfig?(config: ProviderConfigOf<K>, reason: RotationReason): ProviderConfigOf<K>;

  /**
   * Which credential does this value belong to? Used on the old (current) value before issuing,
   * so the engine records the id it will revoke. May return `{}` where the provider has no ids.
   */
  identify(ctx: ProviderContext<K>, value: string): Promise<CredentialHandle>;

  /**
   * Remove credentials that an earlier run of this same rotation issued but whose value never
   * reached the store (a crash between the provider's answer and the store write). Returns the ids
   * removed. Adapters that name credentials with the rotation id find them by listing.
   */
  cleanupOrphans?(ctx: ProviderContext<K>, keep: CredentialHandle | undefined): Promise<string[]>;

  /**
   * Remove every credential rekey issued for this policy except those in `keep` (provider ids):
   * leftovers of requests that reached the provider after the run that sent them was aborted
   * (a lost lock, a timeout) and so landed after that run's orphan clean-up. The engine calls it
   * only with the live credential's id in `keep`, never without. `keepRotations`: credentials
   * marked with these rotation ids stay too (the AWSPREVIOUS version's, whose rotation Redis may
   * have forgotten before it was revoked: only consumers' confirmations may end it, I2).
   */
  sweep?(ctx: ProviderContext<K>, keep: string[], opts?: { keepRotations?: string[] }): Promise<string[]>;
  /**
   * Does this value still authenticate at the provider? false only on the provider's documented
   * answer for a dead credential; anything that tells nothing (a 5xx, no answer) is thrown.
   * Reconcile asks it of the AWSPREVIOUS value: live after a rotation Redis forgot, it was never
   * revoked. Providers without it are not asked (nothing is re-created for them).
   */
  isLive?(ctx: ProviderContext<K>, value: string): Promise<boolean>;

  /**
   * Issue a new credential (API providers only). `old` is the current value and its handle, where
   * the secret already holds one (clone its role fields, or reset it).
   */
  issue?(ctx: ProviderContext<K>, old: (CredentialHandle & { value: string }) | undefined): Promise<IssuedCredential>;

  /**
   * Reset providers whose value can be read again (QStash token, QStash signing keys): the value
   * an interrupted issue produced, so a resumed rotation stores it instead of resetting twice.
   */
  recoverIssued?(ctx: ProviderContext<K>): Promise<IssuedCredential | undefined>;

  /** Prove the value works and is the credential expected. Throws VerificationError if not. */
  verify(ctx: ProviderContext<K>, value: string, expected: CredentialHandle): Promise<void>;

  /**
   * Revoke the old credential. Idempotent: a credential already gone counts as revoked. Takes the
   * value too, for providers that name a secret by its value (Snyk client secrets).
   */
  revoke?(ctx: ProviderContext<K>, old: CredentialHandle & { value: string }): Promise<void>;
  /**
   * revoke names the credential by its id when one is given and reads the value only without it:
   * the engine then does not read the old value from the store to revoke it.
   */
  revokesById?: boolean;

  /** Leak response for providers with a compromise mode (Snyk `replace`): one call, all old ones die. */
  replaceAll?(ctx: ProviderContext<K>): Promise<IssuedCredential>;

  /** Credentials owned by a member (offboarding). */
  listByOwner?(ctx: ProviderContext<K>, member: string): Promise<OwnedCredential[]>;

  /** When the credential was last used (epoch ms), where the provider reports it. */
  lastUsed?(ctx: ProviderContext<K>, handle: CredentialHandle): Promise<number | undefined>;

  /** Human step: what the owner must do, with the link. */
  instructions?(config: ProviderConfigOf<K>, opts: { policyId: string; rotationId: string; successor?: string }): { text: string; link: string };
}

export type ProviderRegistry = { [K in ProviderKind]: Provider<K> };
