/**
 * A store and a LaunchDarkly-shaped provider that answer from memory at once: `rotations.ts
 * --in-memory` runs rekey against them, so that what the rekey process spends per rotation is its
 * own overhead alone (queue, Redis, records, audit, pacing, the API's confirmation), with no HTTP
 * client and no AWS SDK beside it to blur a profile. The reference kinds then cost next to nothing:
 * their ratios mean nothing in that mode. Values and ids are made up; nothing checks them.
 */
import { randomUUID } from "node:crypto";
import { createProviders } from "../../src/providers/index.ts";
import type { ProviderRegistry } from "../../src/providers/types.ts";
import type { SecretRef, SecretStore, StoredVersion } from "../../src/stores/types.ts";

/** rekey's providers, but LaunchDarkly's calls of a create-delete rotation answered from memory. */
export function inMemoryProviders(): ProviderRegistry {
  const providers = createProviders();
  let n = 0;
  providers.launchdarkly = {
    ...providers.launchdarkly,
    identify: async () => ({ credentialId: "in-memory-old" }),
    issue: async () => {
      n++;
      return { value: `in-memory-${n}-${randomUUID()}`, credentialId: `in-memory-${n}` };
    },
    verify: async () => undefined,
    revoke: async () => undefined,
    sweep: async () => [],
    cleanupOrphans: async () => [],
  };
  return providers;
}

/** Versions by secret, newest last; the newest is AWSCURRENT. */
export class InMemoryStore implements SecretStore {
  private readonly secrets = new Map<string, { versionId: string; value: string }[]>();

  private versions(ref: SecretRef): { versionId: string; value: string }[] {
    let v = this.secrets.get(ref.secretId);
    if (!v) this.secrets.set(ref.secretId, (v = []));
    return v;
  }

  async create(ref: SecretRef, value: string): Promise<{ versionId: string }> {
    const versionId = randomUUID();
    this.versions(ref).push({ versionId, value });
    return { versionId };
  }

  async getCurrent(ref: SecretRef): Promise<StoredVersion | undefined> {
    const v = this.versions(ref).at(-1);
    return v && { ...v, stages: ["AWSCURRENT"] };
  }

  async getVersion(ref: SecretRef, versionId: string): Promise<StoredVersion | undefined> {
    const all = this.versions(ref);
    const i = all.findIndex((v) => v.versionId === versionId);
    const v = all[i];
    return v && { ...v, stages: i === all.length - 1 ? ["AWSCURRENT"] : i === all.length - 2 ? ["AWSPREVIOUS"] : [] };
  }

  async stages(ref: SecretRef): Promise<Record<string, string[]>> {
    const all = this.versions(ref);
    const out: Record<string, string[]> = {};
    const cur = all.at(-1);
    const prev = all.at(-2);
    if (cur) out[cur.versionId] = ["AWSCURRENT"];
    if (prev) out[prev.versionId] = ["AWSPREVIOUS"];
    return out;
  }

  async listVersions(ref: SecretRef): Promise<{ versionId: string; stages: string[] }[]> {
    return Object.entries(await this.stages(ref)).map(([versionId, stages]) => ({ versionId, stages }));
  }

  async putCurrent(ref: SecretRef, token: string, value: string): Promise<{ versionId: string; current: boolean }> {
    const all = this.versions(ref);
    if (all.at(-1)?.versionId !== token) all.push({ versionId: token, value });
    return { versionId: token, current: true };
  }

  async putPending(): Promise<{ versionId: string }> {
    throw new Error("the in-memory store writes straight to AWSCURRENT only");
  }

  async promote(): Promise<{ previousVersionId?: string }> {
    throw new Error("the in-memory store writes straight to AWSCURRENT only");
  }

  async discardPending(): Promise<void> {}
}
