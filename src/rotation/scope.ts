/** Where a policy's secret lives and which shared rate budgets its provider and store calls count against. */
import { hash } from "node:crypto";
import type { Policy, ProviderConfig } from "../policy/schema.ts";
import type { SecretRef } from "../stores/types.ts";

export function refOf(policy: Policy): SecretRef {
  return { secretId: policy.target.secretId, region: policy.target.region, jsonKey: policy.target.jsonKey };
}

/** Rate-limit scope of a provider: kind, host and management credential (limits are per key). */
export function providerScope(config: ProviderConfig): string {
  const host = "baseUrl" in config && config.baseUrl ? new URL(config.baseUrl).host : "crewUrl" in config ? new URL(config.crewUrl).host : "default";
  const mgmt = "management" in config ? hash("sha256", JSON.stringify(config.management), "hex").slice(0, 12) : "none";
  return `${config.kind}:${host}:${mgmt}`;
}

export function storeScope(ref: SecretRef): string {
  return `aws:${ref.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "default"}`;
}
