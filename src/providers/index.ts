/**
 * Every provider kind's adapter. Keyed by kind: a new kind in the policy schema fails to compile
 * until it has an adapter here (and a row in capabilities.ts).
 */
import { createCrewAiCrewProvider } from "./crewai.ts";
import { createLaunchDarklyProvider } from "./launchdarkly.ts";
import { createQStashSigningKeysProvider, createQStashTokenProvider } from "./qstash/index.ts";
import { createSnykPatProvider, createSnykServiceAccountProvider, createSnykUserTokenProvider } from "./snyk/index.ts";
import type { ProviderRegistry } from "./types.ts";

export interface ProviderDeps {
  fetch?: typeof fetch;
  now?: () => number;
}

export function createProviders(deps: ProviderDeps = {}): ProviderRegistry {
  return {
    launchdarkly: createLaunchDarklyProvider(deps),
    "snyk-service-account": createSnykServiceAccountProvider(deps),
    "snyk-user-token": createSnykUserTokenProvider(deps),
    "snyk-pat": createSnykPatProvider(deps),
    "qstash-token": createQStashTokenProvider(deps),
    "qstash-signing-keys": createQStashSigningKeysProvider(deps),
    "crewai-crew": createCrewAiCrewProvider(deps),
  };
}
