/**
 * In-memory providers for the step-table unit tests: every credential they ever made, live or
 * not, with who made it and who killed it; every call through the world's fault plan.
 */
import { AttentionError, VerificationError } from "../../src/errors.ts";
import type { ProviderKind } from "../../src/policy/schema.ts";
import type { CredentialHandle, IssuedCredential, Provider, ProviderContext, ProviderRegistry } from "../../src/providers/types.ts";
import type { World } from "./memory-world.ts";

export interface Credential {
  credentialId: string;
  value: string;
  policyId: string;
  /** The rotation that issued it; undefined for the credential that existed before rekey. */
  issuedBy?: string;
  createdAt: number;
  /** When it stopped working (revoked, swept, reset away), and by which rotation. */
  diedAt?: number;
  killedBy?: string;
}

/**
 * Every credential every provider made, by policy. `overlap`: a new credential beside the old
 * one (LaunchDarkly create-delete); `reset`: one credential per policy, a reset replaces its
 * value and the old value dies at once (QStash token); `human`: a person makes the new one (Snyk
 * PAT) and the old one works until revoked.
 */
export class Credentials {
  readonly all: Credential[] = [];

  constructor(private readonly world: World) {}

  live(policyId: string): Credential[] {
    return this.all.filter((c) => c.policyId === policyId && c.diedAt === undefined);
  }

  byValue(value: string): Credential | undefined {
    return this.all.find((c) => c.value === value);
  }

  make(policyId: string, issuedBy?: string): Credential {
    const c: Credential = { credentialId: this.world.id("cred-"), value: this.world.secret(), policyId, issuedBy, createdAt: this.world.clock.t };
    this.all.push(c);
    return c;
  }

  kill(c: Credential, by: string): void {
    if (c.diedAt !== undefined) return;
    c.diedAt = this.world.clock.t;
    c.killedBy = by;
  }
}

/**
 * `client-secret`: Snyk's service-account client secrets (src/providers/snyk/service-account.ts):
 * a second secret beside the old one, at most two live per policy, a create beyond that refused
 * (the adapter turns the refusal into an AttentionError naming `rekey leak --policy <id>`); no
 * list, no ids, no sweep — a secret is named by its value, and one whose value was lost (a lost
 * create answer, a worker dead before the store write) can only be removed by a replace.
 */
export type ProviderMode = "overlap" | "reset" | "human" | "client-secret";

/** Snyk's limit of live client secrets per service account. */
export const CLIENT_SECRETS_MAX = 2;

function issued(c: Credential): IssuedCredential {
  return { value: c.value, credentialId: c.credentialId };
}

/** An in-memory provider of `kind`, holding its credentials in `creds`. */
export function memoryProvider<K extends ProviderKind>(kind: K, mode: ProviderMode, world: World, creds: Credentials): Provider<K> {
  const call = <T>(ctx: ProviderContext<K>, op: string, act: () => T): Promise<T> => world.call(`provider.${op}`, act, { signal: ctx.signal, rotationId: ctx.rotationId });
  const verify = (ctx: ProviderContext<K>, value: string, expected: CredentialHandle): Promise<void> =>
    call(ctx, "verify", () => {
      const c = creds.byValue(value);
      if (!c || c.diedAt !== undefined || c.policyId !== ctx.policyId) throw new VerificationError(`${kind}: the new credential does not authenticate`);
      if (expected.credentialId && expected.credentialId !== c.credentialId) throw new VerificationError(`${kind}: the value belongs to another credential`);
    });
  const identify = (ctx: ProviderContext<K>, value: string): Promise<CredentialHandle> => call(ctx, "identify", () => ({ credentialId: creds.byValue(value)?.credentialId }));
  if (mode === "reset") {
    return {
      kind,
      capabilities: () => ({ issue: "reset", oldSurvivesIssue: false, verify: "identity", revoke: "none", listByOwner: false, reportsLastUse: false, leakReplace: false, consumerImpact: "cut-over" }),
      identify,
      verify,
      issue: (ctx) =>
        call(ctx, "issue", () => {
          for (const c of creds.live(ctx.policyId)) creds.kill(c, ctx.rotationId);
          return issued(creds.make(ctx.policyId, ctx.rotationId));
        }),
      recoverIssued: (ctx) =>
        call(ctx, "recoverIssued", () => {
          const c = creds.live(ctx.policyId)[0];
          return c && issued(c);
        }),
    };
  }
  const base = {
    kind,
    identify,
    verify,
    isLive: (ctx: ProviderContext<K>, value: string) => call(ctx, "isLive", () => creds.byValue(value)?.diedAt === undefined && creds.byValue(value) !== undefined),
    revoke: (ctx: ProviderContext<K>, old: CredentialHandle & { value: string }) =>
      call(ctx, "revoke", () => {
        const c = old.credentialId ? creds.all.find((x) => x.credentialId === old.credentialId) : creds.byValue(old.value);
        if (c) creds.kill(c, ctx.rotationId);
      }),
  };
  if (mode === "client-secret") {
    return {
      kind,
      identify: (ctx) => call(ctx, "identify", () => ({ meta: { account: ctx.policyId } })),
      verify: (ctx, value) =>
        call(ctx, "verify", () => {
          const c = creds.byValue(value);
          if (!c || c.diedAt !== undefined || c.policyId !== ctx.policyId) throw new VerificationError(`${kind}: the new secret does not authenticate`);
        }),
      isLive: base.isLive,
      capabilities: () => ({ issue: "overlap", oldSurvivesIssue: true, verify: "identity", revoke: "api", listByOwner: false, reportsLastUse: false, leakReplace: true, consumerImpact: "none" }),
      issue: (ctx) =>
        call(ctx, "issue", () => {
          if (creds.live(ctx.policyId).length >= CLIENT_SECRETS_MAX) {
            throw new AttentionError(
              `${kind}: a new client secret was refused (the account holds ${CLIENT_SECRETS_MAX}); rekey cannot delete a secret it does not know: run \`rekey leak --policy ${ctx.policyId}\``,
            );
          }
          return { value: creds.make(ctx.policyId, ctx.rotationId).value, meta: { account: ctx.policyId } };
        }),
      // As the adapter: nothing can be listed, so nothing is found.
      cleanupOrphans: (ctx) => call(ctx, "cleanupOrphans", () => []),
      // Named by value; an unknown or dead one is already gone.
      revoke: (ctx, old) =>
        call(ctx, "revoke", () => {
          const c = creds.byValue(old.value);
          if (c && c.policyId === ctx.policyId) creds.kill(c, ctx.rotationId);
        }),
      replaceAll: (ctx) =>
        call(ctx, "replaceAll", () => {
          for (const c of creds.live(ctx.policyId)) creds.kill(c, ctx.rotationId);
          return { value: creds.make(ctx.policyId, ctx.rotationId).value, meta: { account: ctx.policyId } };
        }),
    };
  }
  if (mode === "human") {
    return {
      ...base,
      capabilities: () => ({ issue: "human", oldSurvivesIssue: true, verify: "identity", revoke: "api", listByOwner: false, reportsLastUse: false, leakReplace: false, consumerImpact: "none" }),
      instructions: () => ({ text: "create a new token and submit it", link: "https://provider.example/tokens" }),
    };
  }
  return {
    ...base,
    capabilities: () => ({ issue: "overlap", oldSurvivesIssue: true, verify: "identity", revoke: "api", listByOwner: false, reportsLastUse: false, leakReplace: false, consumerImpact: "none" }),
    issue: (ctx) => call(ctx, "issue", () => issued(creds.make(ctx.policyId, ctx.rotationId))),
    cleanupOrphans: (ctx, keep) =>
      call(ctx, "cleanupOrphans", () => {
        const gone = creds.live(ctx.policyId).filter((c) => c.issuedBy === ctx.rotationId && c.credentialId !== keep?.credentialId);
        for (const c of gone) creds.kill(c, ctx.rotationId);
        return gone.map((c) => c.credentialId);
      }),
    // Marked credentials of `keepRotations` stay, as the real providers' sweeps keep them.
    sweep: (ctx, keep, opts) =>
      call(ctx, "sweep", () => {
        const keepRotations = opts?.keepRotations ?? [];
        const gone = creds.live(ctx.policyId).filter((c) => c.issuedBy !== undefined && !keep.includes(c.credentialId) && !keepRotations.includes(c.issuedBy));
        for (const c of gone) creds.kill(c, ctx.rotationId);
        return gone.map((c) => c.credentialId);
      }),
  };
}

/** Every kind served by an in-memory provider: qstash-token resets, snyk-pat is made by a person, snyk-service-account holds client secrets, every other kind overlaps. */
export function memoryRegistry(world: World, creds: Credentials): ProviderRegistry {
  return {
    launchdarkly: memoryProvider("launchdarkly", "overlap", world, creds),
    "snyk-service-account": memoryProvider("snyk-service-account", "client-secret", world, creds),
    "snyk-user-token": memoryProvider("snyk-user-token", "overlap", world, creds),
    "snyk-pat": memoryProvider("snyk-pat", "human", world, creds),
    "qstash-token": memoryProvider("qstash-token", "reset", world, creds),
    "qstash-signing-keys": memoryProvider("qstash-signing-keys", "overlap", world, creds),
    "crewai-crew": memoryProvider("crewai-crew", "overlap", world, creds),
  };
}
