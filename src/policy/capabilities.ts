/**
 * What each provider kind can do, as data: the policy loader and `rekey plan` read it without
 * loading adapters, and the adapters return the same answers (providers/types.ts re-exports the
 * types). Keyed by kind, so a new kind fails to compile until it is described here.
 */
import type { ProviderConfig, ProviderConfigOf, ProviderKind } from "./schema.ts";

/** How a new credential comes to exist. */
export type IssueMode =
  /** The provider holds two at once: the old one keeps working until revoked. */
  | "overlap"
  /** A reset makes a new value and kills the old one at once (cut-over). */
  | "reset"
  /** Only a human can issue it (web UI); the value is submitted back to rekey. */
  | "human";

export interface Capabilities {
  issue: IssueMode;
  /** Does the old credential keep working after the new one is issued? false = cut-over. */
  oldSurvivesIssue: boolean;
  /** How the new value is checked before promotion; "none" where the provider offers no check. */
  verify: "identity" | "none";
  /** How the old credential is revoked: by API, not at all (it already died), or by the next roll (signing keys). */
  revoke: "api" | "none" | "next-roll";
  /** Can the provider list credentials by owner (offboarding finds unmanaged ones)? */
  listByOwner: boolean;
  /** Does the provider report when a credential was last used (usage confirmations)? */
  reportsLastUse: boolean;
  /** Has a mode meant for compromise that replaces every live credential at once (leak). */
  leakReplace: boolean;
  /** One-line summary for `rekey plan`: what consumers experience. */
  consumerImpact: string;
}


type CapabilityTable = { [K in ProviderKind]: (config: ProviderConfigOf<K>) => Capabilities };

const TABLE: CapabilityTable = {
  launchdarkly: (c) =>
    c.strategy === "reset-with-expiry"
      ? {
          issue: "reset",
          // Whether `expiry` keeps the old secret alive is unconfirmed (PROVIDERS.md): plan for the worst.
          oldSurvivesIssue: false,
          verify: "identity",
          revoke: "none",
          listByOwner: true,
          // One token id carries both secrets after a reset: its lastUsed cannot tell them apart.
          reportsLastUse: false,
          leakReplace: false,
          consumerImpact: "the token is reset in place; the old secret may stop working at once, so consumers can fail until they load the new value",
        }
      : {
          issue: "overlap",
          oldSurvivesIssue: true,
          verify: "identity",
          revoke: "api",
          listByOwner: true,
          reportsLastUse: true,
          leakReplace: false,
          consumerImpact: "no outage: a second token is created, the old one is deleted only after every consumer confirmed",
        },
  "snyk-service-account": () => ({
    issue: "overlap",
    oldSurvivesIssue: true,
    verify: "identity",
    revoke: "api",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: true,
    consumerImpact: "no outage: a second client secret is added (at most two live), the old one is deleted after every consumer confirmed",
  }),
  "snyk-user-token": () => ({
    issue: "human",
    oldSurvivesIssue: false,
    verify: "identity",
    revoke: "none",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: false,
    consumerImpact: "cut-over: the owner regenerates the token in the Snyk UI and the old one stops working at once; consumers fail until they load the new value",
  }),
  "snyk-pat": () => ({
    issue: "human",
    oldSurvivesIssue: true,
    verify: "identity",
    revoke: "api",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: false,
    consumerImpact: "no outage: the owner creates a new PAT in the Snyk UI, the old PAT is deleted by API after every consumer confirmed",
  }),
  "qstash-token": () => ({
    issue: "reset",
    oldSurvivesIssue: false,
    verify: "identity",
    revoke: "none",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: false,
    consumerImpact: "cut-over: rotate-token kills the old token at once; publishers fail until they load the new value",
  }),
  "qstash-signing-keys": () => ({
    issue: "overlap",
    oldSurvivesIssue: true,
    verify: "identity",
    revoke: "next-roll",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: false,
    consumerImpact: "no outage: receivers accept current and next; the next roll is held until every receiver loaded the new pair",
  }),
  "crewai-crew": () => ({
    issue: "human",
    oldSurvivesIssue: false,
    verify: "identity",
    revoke: "none",
    listByOwner: false,
    reportsLastUse: false,
    leakReplace: false,
    consumerImpact: "cut-over: the owner presses Reset on the crew's page and the old token stops working at once; callers fail until they load the new value",
  }),
};

export function capabilitiesOf(config: ProviderConfig): Capabilities {
  return (TABLE[config.kind] as (c: ProviderConfig) => Capabilities)(config);
}

/** A cut-over credential cannot honour I2 (old value dies at issue): its policy must accept that. */
export function isCutover(config: ProviderConfig): boolean {
  return !capabilitiesOf(config).oldSurvivesIssue;
}
