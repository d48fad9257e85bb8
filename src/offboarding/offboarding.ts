/**
 * Offboarding: a member leaves, and every credential they own must end up with someone else
 * before their account is removed (a LaunchDarkly personal token dies with its member).
 *
 * 1. Find the member's credentials: every policy they own, and — at every provider account that
 *    can list credentials by owner — every credential in their name. A listed credential that is
 *    the current (or being-replaced) credential of a policy is managed; the rest are unmanaged and
 *    reported for handling by hand.
 * 2. Rotate each managed one with reason `offboarding`, so the new credential belongs to the
 *    successor (the request's, else the policy's `offboarding.successor`), with the normal
 *    confirmation semantics (the old credential is revoked once consumers confirmed).
 * 3. Report: "safe to remove <member>: yes / no", with what still blocks.
 *
 * Running it again continues where it stopped: each (member, policy) gets one deterministic job
 * id, and the rotation it started is kept in a record without expiry (jobs are removed after a
 * day), so a re-run reports on it instead of starting another. Only a rotation that failed or was
 * skipped is tried again, as a new attempt with its own job id.
 */
import { randomUUID } from "node:crypto";
import { z } from "zod";
import type { Audit } from "../audit/audit.ts";
import { errorMessage, RateLimitedError } from "../errors.ts";
import type { Policy, ProviderConfig } from "../policy/schema.ts";
import { capabilitiesOf } from "../policy/capabilities.ts";
import type { OwnedCredential, Provider, ProviderContext, ProviderRegistry } from "../providers/types.ts";
import { providerScope, refOf } from "../rotation/scope.ts";
import { offboardJobId } from "../rotation/job-ids.ts";
import type { ProviderGateway } from "../rotation/gateway.ts";
import { RequestError, type Rotations } from "../rotation/requests.ts";
import type { RekeyState } from "../rotation/state.ts";
import type { RotationRecord } from "../rotation/state/records.ts";
import type { Runtime } from "../runtime.ts";
import type { SecretStore } from "../stores/types.ts";

export const OffboardRequest = z.strictObject({
  member: z.email().refine((m) => !m.includes(":"), "a member address may not contain ':'"),
  successor: z.email().optional(),
});
export type OffboardRequest = z.infer<typeof OffboardRequest>;

export type PolicyOffboardState =
  | "queued"
  | "running"
  | "awaiting-confirmation"
  | "awaiting-human"
  | "needs-attention"
  | "completed"
  | "failed"
  | "skipped"
  | "no-successor";

export interface PolicyOffboardReport {
  policyId: string;
  file?: string;
  provider: string;
  owner: string;
  /** Why it is part of this offboarding. */
  reason: "owner" | "credential";
  successor?: string;
  rotationId?: string;
  attempt?: number;
  state: PolicyOffboardState;
  waitingFor: string[];
  message?: string;
}

export interface UnmanagedCredential {
  provider: string;
  account: string;
  credentialId: string;
  name: string;
  kind?: string;
  lastUsed?: number;
}

export interface OffboardReport {
  member: string;
  successor?: string;
  safeToRemove: boolean;
  policies: PolicyOffboardReport[];
  unmanaged: UnmanagedCredential[];
  listingErrors: { provider: string; account: string; error: string }[];
  /** What still stands between now and removing the member, one line each. */
  blockers: string[];
}

export interface OffboardingDeps {
  state: RekeyState;
  audit: Audit;
  rotations: Pick<Rotations, "enqueue">;
  policies: { all(): Policy[]; get(id: string): Policy | undefined; file?(id: string): string | undefined };
  providers: ProviderRegistry;
  store: Pick<SecretStore, "getCurrent" | "getVersion">;
  /** Every provider call goes through it, as the workers' do (gateway.ts). */
  gateway: Pick<ProviderGateway, "open">;
  now(): number;
  /** Longest rate-limit wait taken in-process while listing; longer ends the listing with an error. Default 30 s. */
  maxRateWaitMs?: number;
  sleep?(ms: number): Promise<void>;
}

interface Entry {
  rotationId: string;
  jobId: string;
  attempt: number;
  successor: string;
  reason: "owner" | "credential";
}

interface Discovery {
  /** Policy id → why it belongs to the member. */
  managed: Map<string, "owner" | "credential">;
  unmanaged: UnmanagedCredential[];
  listingErrors: OffboardReport["listingErrors"];
  /** Policies whose live credential (current, or being replaced) the provider still lists as the member's. */
  stillHeld: Set<string>;
}

const RETRY: ReadonlySet<string> = new Set(["failed", "skipped"]);

export class Offboarding {
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly deps: OffboardingDeps) {
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** The API and CLI entry. */
  async handle(body: unknown, actor: string): Promise<OffboardReport> {
    const parsed = OffboardRequest.safeParse(body);
    if (!parsed.success) throw new RequestError(400, parsed.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`).join("; "));
    return this.run(parsed.data, actor);
  }

  /** Find, rotate what is not rotated yet, and report. Safe to run any number of times. */
  async run(req: OffboardRequest, actor: string): Promise<OffboardReport> {
    const member = req.member.toLowerCase();
    const found = await this.discover(member);
    const entries = await this.entries(member);
    let queued = 0;
    for (const [policyId, why] of found.managed) {
      const policy = this.deps.policies.get(policyId);
      if (!policy) continue;
      const successor = (req.successor ?? policy.offboarding?.successor ?? (why === "credential" ? policy.owner : undefined))?.toLowerCase();
      if (!successor || successor === member) continue;
      const prev = entries.get(policyId);
      if (prev) {
        const rec = await this.deps.state.records.get(prev.rotationId);
        // Still going, done, or ended so long ago that its record expired: nothing to start.
        if (!rec || !RETRY.has(rec.status)) continue;
      }
      const attempt = (prev?.attempt ?? 0) + 1;
      const jobId = offboardJobId(member, policyId, attempt);
      const res = await this.deps.rotations.enqueue({ policyId, reason: "offboarding", actor, jobId, member, successor });
      const entry: Entry = { rotationId: res.rotationId, jobId, attempt, successor, reason: why };
      await this.deps.state.offboards.setEntry(member, policyId, entry);
      entries.set(policyId, entry);
      if (res.added) queued++;
    }
    await this.deps.state.offboards.ran(member, this.deps.now());
    await this.deps.audit.record({
      step: "offboarding.run",
      outcome: "ok",
      actor,
      message: `offboarding ${member}${req.successor ? ` to ${req.successor}` : ""}: ${found.managed.size} managed credential(s), ${queued} rotation(s) queued now, ${found.unmanaged.length} unmanaged`,
    });
    return this.report(member, req.successor, found, entries);
  }

  private entries(member: string): Promise<Map<string, Entry>> {
    return this.deps.state.offboards.entries<Entry>(member);
  }

  /** Policies the member owns, plus credentials in their name at every account that can list them. */
  async discover(member: string): Promise<Discovery> {
    const all = this.deps.policies.all();
    const managed = new Map<string, "owner" | "credential">();
    for (const p of all) if (p.owner.toLowerCase() === member) managed.set(p.id, "owner");
    const unmanaged: UnmanagedCredential[] = [];
    const listingErrors: Discovery["listingErrors"] = [];
    const stillHeld = new Set<string>();

    // One listing per provider scope (kind, host, management credential); credentials of one
    // account seen through two scopes are counted once.
    const scopes = new Map<string, Policy>();
    for (const p of all) {
      const provider = this.deps.providers[p.provider.kind] as Provider;
      if (capabilitiesOf(p.provider).listByOwner && provider.listByOwner && !scopes.has(providerScope(p.provider))) scopes.set(providerScope(p.provider), p);
    }
    const seen = new Set<string>();
    const ownersOf = new Map<string, Map<string, string>>();
    for (const p of scopes.values()) {
      const provider = this.deps.providers[p.provider.kind] as Provider;
      const account = accountOf(p.provider);
      let listed: OwnedCredential[];
      try {
        listed = await this.call(p, (ctx) => provider.listByOwner!(ctx, member));
      } catch (err) {
        listingErrors.push({ provider: p.provider.kind, account, error: errorMessage(err) });
        continue;
      }
      if (!listed.length) continue;
      let owners = ownersOf.get(account);
      if (!owners) {
        owners = await this.credentialOwners(account, all);
        ownersOf.set(account, owners);
      }
      const known = owners;
      if (listed.some((c) => !known.has(c.credentialId))) {
        // A rotation that ended between the listing and the owners' lookup took its old credential
        // out of the owners (its lock is released) after deleting it: what the provider no longer
        // lists is gone, not unmanaged.
        try {
          const still = new Set((await this.call(p, (ctx) => provider.listByOwner!(ctx, member))).map((c) => c.credentialId));
          listed = listed.filter((c) => known.has(c.credentialId) || still.has(c.credentialId));
        } catch (err) {
          listingErrors.push({ provider: p.provider.kind, account, error: errorMessage(err) });
          continue;
        }
      }
      for (const c of listed) {
        const id = `${account}/${c.credentialId}`;
        if (seen.has(id)) continue;
        seen.add(id);
        const policyId = owners.get(c.credentialId);
        if (policyId) {
          stillHeld.add(policyId);
          if (!managed.has(policyId)) managed.set(policyId, "credential");
        } else {
          unmanaged.push({ provider: p.provider.kind, account, credentialId: c.credentialId, name: c.name, kind: c.kind, lastUsed: c.lastUsed });
        }
      }
    }
    return { managed, unmanaged, listingErrors, stillHeld };
  }

  /**
   * Credential id → policy, for every policy of one provider account: the current value and the
   * value a rotation in flight is replacing (both still live), identified at the provider.
   */
  private async credentialOwners(account: string, all: Policy[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const p of all.filter((x) => accountOf(x.provider) === account)) {
      const provider = this.deps.providers[p.provider.kind] as Provider;
      const ref = refOf(p);
      const values: string[] = [];
      const cur = await this.deps.store.getCurrent(ref).catch(() => undefined);
      if (cur) values.push(cur.value);
      const holder = await this.deps.state.locks.inFlight(p.id);
      const rec = holder ? await this.deps.state.records.get(holder) : undefined;
      if (rec?.oldVersionId) {
        const old = await this.deps.store.getVersion(ref, rec.oldVersionId).catch(() => undefined);
        if (old) values.push(old.value);
      }
      if (rec?.newCredentialId) out.set(rec.newCredentialId, p.id);
      for (const v of values) {
        try {
          const handle = await this.call(p, (ctx) => provider.identify(ctx, v));
          if (handle.credentialId) out.set(handle.credentialId, p.id);
        } catch {
          // A value that no longer works (already revoked) owns nothing to find.
        }
      }
    }
    return out;
  }

  /**
   * A provider call outside a rotation, through the gateway like the workers' (the same context,
   * pacing and shared 429 gate); a 429 is waited out here, up to maxRateWaitMs in all.
   */
  private async call<T>(policy: Policy, fn: (ctx: ProviderContext) => Promise<T>): Promise<T> {
    const calls = this.deps.gateway.open(policy, { rotationId: randomUUID(), reason: "offboarding", timeoutMs: 120_000, rotation: false });
    for (let waited = 0; ; ) {
      try {
        return await calls.call(() => fn(calls.ctx()));
      } catch (err) {
        if (!(err instanceof RateLimitedError)) throw err;
        const wait = Math.max(0, err.retryAt - this.deps.now());
        if (waited + wait > (this.deps.maxRateWaitMs ?? 30_000)) throw err;
        waited += wait;
        await this.sleep(wait);
      }
    }
  }

  /** Members offboarded most recently, newest first, with when their offboarding last ran. */
  async recent(limit = 20): Promise<{ member: string; lastRunAt: number }[]> {
    return this.deps.state.offboards.recent(limit);
  }

  /**
   * Progress of the rotations an offboarding queued, from rekey's own records only: no provider
   * is asked for the member's credentials (status() does that, and finds unmanaged ones, and
   * credentials the member still holds after a completed rotation).
   */
  async progress(memberIn: string): Promise<OffboardReport> {
    const member = memberIn.toLowerCase();
    return this.report(member, undefined, { managed: new Map(), unmanaged: [], listingErrors: [], stillHeld: new Set() }, await this.entries(member));
  }

  /** The report without changing anything (a status check; `run` calls it at its end). */
  async status(memberIn: string, successor?: string): Promise<OffboardReport> {
    const member = memberIn.toLowerCase();
    return this.report(member, successor, await this.discover(member), await this.entries(member));
  }

  private async report(member: string, successor: string | undefined, found: Discovery, entries: Map<string, Entry>): Promise<OffboardReport> {
    const ids = new Set<string>([...found.managed.keys(), ...entries.keys()]);
    const policies: PolicyOffboardReport[] = [];
    const blockers: string[] = [];
    for (const policyId of [...ids].sort()) {
      const policy = this.deps.policies.get(policyId);
      const entry = entries.get(policyId);
      const why = found.managed.get(policyId) ?? entry?.reason ?? "owner";
      const file = this.deps.policies.file?.(policyId);
      const row: PolicyOffboardReport = {
        policyId,
        file,
        provider: policy?.provider.kind ?? "(not loaded)",
        owner: policy?.owner ?? "",
        reason: why,
        successor: entry?.successor,
        rotationId: entry?.rotationId,
        attempt: entry?.attempt,
        state: "no-successor",
        waitingFor: [],
      };
      if (!entry) {
        row.state = "no-successor";
        blockers.push(`${policyId}: no successor is named; add offboarding.successor to ${file ?? "its policy file"} or run again with --successor`);
      } else {
        const rec = await this.deps.state.records.get(entry.rotationId);
        row.state = stateOf(rec);
        row.message = rec?.message;
        if (policy && rec && (row.state === "awaiting-confirmation" || row.state === "needs-attention")) {
          const confirmed = await this.deps.state.consumers.confirmations(rec.rotationId);
          row.waitingFor = policy.consumers.filter((c) => c.required && !confirmed.has(c.id)).map((c) => c.id);
        }
        const blocker = blockerOf(row);
        if (blocker) blockers.push(blocker);
        else if (row.state === "completed" && found.stillHeld.has(policyId)) {
          // Read the world, not the record: a rotation that completed but left the policy on a
          // credential the provider still lists as the member's (a reset in place keeps the
          // token's owner) dies with the member.
          blockers.push(`${policyId}: rotation ${row.rotationId} completed, but the credential it runs on still belongs to ${member}; removing ${member} would break its consumers — rotate it again`);
        }
      }
      if (policy && policy.owner.toLowerCase() === member) {
        blockers.push(`${policyId}: ${file ?? "its policy file"} still names ${member} as owner; change owner to ${entry?.successor ?? policy.offboarding?.successor ?? "the successor"}`);
      }
      policies.push(row);
    }
    for (const c of found.unmanaged) {
      blockers.push(`unmanaged ${c.provider} credential ${c.credentialId}${c.name ? ` "${c.name}"` : ""}${c.kind ? ` (${c.kind})` : ""} at ${c.account} belongs to ${member}: no policy manages it; rotate or delete it by hand`);
    }
    for (const e of found.listingErrors) blockers.push(`could not list ${member}'s ${e.provider} credentials at ${e.account}: ${e.error}`);
    return { member, successor, safeToRemove: blockers.length === 0, policies, unmanaged: found.unmanaged, listingErrors: found.listingErrors, blockers };
  }
}

function stateOf(rec: RotationRecord | undefined): PolicyOffboardState {
  return rec ? rec.status : "queued";
}

function blockerOf(row: PolicyOffboardReport): string | undefined {
  const r = `${row.policyId}: rotation ${row.rotationId}`;
  switch (row.state) {
    case "completed":
      return undefined;
    case "queued":
    case "running":
      return `${r} is ${row.state}`;
    case "awaiting-confirmation":
      return `${r} is waiting for consumers to confirm: ${row.waitingFor.join(", ") || "(re-checking)"}`;
    case "needs-attention":
      return `${r} needs attention${row.waitingFor.length ? ` (not confirmed by ${row.waitingFor.join(", ")})` : ""}: ${row.message ?? ""}`.trimEnd();
    case "awaiting-human":
      return `${r} is waiting for a human step: ${row.successor ?? "the successor"} issues the new credential, then \`rekey submit ${row.rotationId}\``;
    case "failed":
    case "skipped":
      return `${r} ${row.state}: ${row.message ?? ""} — run the offboarding again to retry`;
    case "no-successor":
      return undefined;
  }
}

/** Provider account, for matching credentials across scopes: kind and host. */
function accountOf(config: ProviderConfig): string {
  const url = "baseUrl" in config && config.baseUrl ? config.baseUrl : "crewUrl" in config ? config.crewUrl : undefined;
  return `${config.kind}:${url ? new URL(url).host : "default"}`;
}

/** The offboarding service of a runtime (API and CLI). */
export function offboardingFor(rt: Pick<Runtime, "state" | "audit" | "rotations" | "policies" | "providers" | "store" | "gateway">, now: () => number = Date.now): Offboarding {
  return new Offboarding({ state: rt.state, audit: rt.audit, rotations: rt.rotations, policies: rt.policies, providers: rt.providers, store: rt.store, gateway: rt.gateway, now });
}
