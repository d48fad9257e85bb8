/**
 * `createSecretSource`: a secret from AWS Secrets Manager that follows rekey's rotations. It reads
 * AWSCURRENT through the real AWS SDK and caches it; it reads again on a verified rekey webhook,
 * on a poll interval, and when the app calls `invalidate()` (say, on a 401 from the upstream
 * service); it runs the app's change handlers and, once they have all resolved, confirms the new
 * version to rekey with the keyed fingerprint (or the version id), so the old credential is
 * revoked only after this consumer runs on the new one.
 *
 * Values are held in memory only. No value is logged, sent to rekey, or put in an error message:
 * errors from the app's handlers are scrubbed of the values before they are reported.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { AwsSecretsManagerStore } from "../stores/aws-secrets-manager.ts";
import type { SecretRef, StoredVersion } from "../stores/types.ts";
import { fingerprint } from "./fingerprint.ts";
import { type ConfirmResult, confirmWithRetry, type FailureStage, RekeyClient, RekeyUnavailableError } from "./rekey-client.ts";
import { createWebhookVerifier, readRawBody, type RekeyWebhookEvent, type WebhookHeaders, WebhookRejectedError, type WebhookVerifier } from "./webhook-verifier.ts";

/** One version of the secret. */
export interface SecretVersion {
  /** The credential (with `jsonKey`: that key's value, not the whole JSON document). */
  value: string;
  /** Secrets Manager VersionId; for versions rekey wrote, the rotation id. */
  versionId: string;
}

/** A change handler: the app starts using `next`. Confirmation waits until every handler resolved. */
export type ChangeHandler = (next: SecretVersion, previous: SecretVersion) => void | Promise<void>;

export interface ConfirmOptions {
  /** rekey's API base URL, e.g. `https://rekey.internal:8080`. */
  url: string;
  /** This consumer's bearer token (never logged or sent anywhere but rekey). */
  token: string;
  /** The policy that rotates this secret. */
  policyId: string;
  /** This consumer's id in the policy (a `confirm: push` consumer). */
  consumerId: string;
  /**
   * REKEY_FINGERPRINT_KEY. With it the confirmation names the version by the keyed fingerprint
   * of the value this process loaded (a proof that it holds the value, without sending it);
   * without it, by the Secrets Manager version id.
   */
  fingerprintKey?: string;
  /**
   * Confirm by itself once the change handlers resolved, and once after the first load (a
   * process started during a rotation runs on the new version). Default true. With false, the
   * app calls `confirm()` when it is sure.
   */
  auto?: boolean;
}

export interface SecretSourceOptions {
  /** Secret name or ARN in AWS Secrets Manager. */
  secretId: string;
  /** When the secret is a JSON document: the key holding the credential. */
  jsonKey?: string;
  /** AWS region. Default: AWS_REGION, then AWS_DEFAULT_REGION. */
  region?: string;
  /** How to confirm to rekey. Without it the source only follows rotations. */
  confirm?: ConfirmOptions;
  /** Verify rekey's webhooks (Standard Webhooks) for `handleWebhook` / `webhookHandler`. */
  webhook?: {
    /** The policy's webhook signing key (`whsec_…`); several while that key itself changes. */
    signingKey: string | readonly string[];
    /** Largest clock difference accepted, in seconds. Default and maximum 300. */
    toleranceSeconds?: number;
  };
  /** Read AWSCURRENT again every this many ms. Default 60,000 (one minute); 0 turns polling off. */
  pollIntervalMs?: number;
  /** `invalidate()` reads again at most this often, in ms (a burst of 401s makes one read). Default 1,000. */
  minRefreshIntervalMs?: number;
  /** Where errors go that no caller awaits (polls, webhooks, confirmations). Default: `process.emitWarning`. */
  onError?: (err: Error) => void;
  /** An AWS SDK client of your own (endpoint, credentials). Default: the SDK's standard chain. */
  client?: SecretsManagerClient;
  /** Default: the global fetch (calls to rekey). */
  fetch?: typeof fetch;
  /** Clock in epoch ms. Default `Date.now`. */
  now?: () => number;
  /** Waits between confirmation attempts, in ms (tests shorten them). Default: CONFIRM_RETRY_DELAYS_MS. */
  confirmRetryDelaysMs?: readonly number[];
}

/** What `status()` reports: ids only, never a value. */
export interface SecretSourceStatus {
  secretId: string;
  /** The version `get()` returns now. */
  versionId?: string;
  /** The last version every change handler accepted. */
  appliedVersionId?: string;
  /** The last version rekey accepted a confirmation of. */
  confirmedVersionId?: string;
  lastError?: string;
}

export interface SecretSource {
  /** The current value (AWSCURRENT), cached; the first call reads Secrets Manager. */
  get(): Promise<string>;
  /** The current value with its version id. */
  current(): Promise<SecretVersion>;
  /**
   * Current and previous (AWSPREVIOUS) together, current first: for verifiers (signing keys)
   * that must accept both while senders move over. The previous is left out where there is none.
   */
  all(): Promise<SecretVersion[]>;
  /** Run `handler` on every change of the current version. Returns a function that removes it. */
  onChange(handler: ChangeHandler): () => void;
  /**
   * Read Secrets Manager now (for the app to call on a 401 from the upstream service) and return
   * the current value; calls within `minRefreshIntervalMs` of the last read share it.
   */
  invalidate(): Promise<SecretVersion>;
  /** Confirm the current version to rekey now (with `confirm.auto: false`, after the app is sure). */
  confirm(): Promise<ConfirmResult>;
  /**
   * A verified rekey webhook, framework-neutral: pass the raw body and the headers, answer with
   * the returned status and JSON body. Accepted events for this secret start a reload.
   */
  handleWebhook(body: string | Buffer, headers: WebhookHeaders): Promise<{ status: number; body: Record<string, unknown> }>;
  /** `handleWebhook` as a node:http / Express handler (it reads the raw body itself). */
  webhookHandler(): (req: IncomingMessage, res: ServerResponse) => void;
  /** An event you verified yourself (one endpoint for several sources): reload if it is for this secret. */
  handleEvent(event: RekeyWebhookEvent): Promise<"ignored" | "reloaded">;
  /** Ids only: which version is loaded, applied and confirmed. */
  status(): SecretSourceStatus;
  /**
   * Stop polling and retrying; resolves once a handler run or a call to rekey in flight ended.
   * Nothing is confirmed after it.
   */
  close(): Promise<void>;
}

/** Events after which the current version may have changed, or a confirmation is awaited. */
const RELOAD_EVENTS = new Set(["rotation.awaiting-confirmation", "rotation.leak", "rotation.completed", "rotation.needs-attention"]);
/** Events that ask consumers to confirm the version they name. */
const CONFIRM_EVENTS = new Set(["rotation.awaiting-confirmation", "rotation.leak", "rotation.needs-attention"]);

/** An error of the consumer library; its message never holds a secret value. */
export class SecretSourceError extends Error {
  override name = "SecretSourceError";
}

/** Replace every occurrence of the values in `text` (a handler's error message). */
export function scrubValues(text: string, values: readonly (string | undefined)[]): string {
  let out = text;
  for (const v of values) if (v && v.length >= 4) out = out.split(v).join("[redacted]");
  return out;
}

export function createSecretSource(opts: SecretSourceOptions): SecretSource {
  return new Source(opts);
}

class Source implements SecretSource {
  private readonly ref: SecretRef;
  private readonly store: Pick<AwsSecretsManagerStore, "getCurrent" | "getStage">;
  private readonly client?: RekeyClient;
  private readonly verifier?: WebhookVerifier;
  private readonly now: () => number;
  private readonly onError: (err: Error) => void;
  private readonly handlers = new Set<ChangeHandler>();
  private cached?: SecretVersion;
  private previous?: { forVersion: string; version?: SecretVersion };
  private reading?: Promise<SecretVersion>;
  private lastReadAt = 0;
  private applied?: SecretVersion;
  private applying?: Promise<void>;
  private confirmedVersionId?: string;
  private confirming?: { versionId: string; result: Promise<ConfirmResult> };
  private lastError?: string;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private readonly closing = new AbortController();

  constructor(private readonly opts: SecretSourceOptions) {
    if (!opts.secretId) throw new SecretSourceError("createSecretSource: secretId is required");
    this.ref = { secretId: opts.secretId, region: opts.region, jsonKey: opts.jsonKey };
    const client = opts.client;
    this.store = new AwsSecretsManagerStore({ region: opts.region, ...(client ? { clientFor: () => client } : {}) });
    if (opts.confirm) {
      for (const f of ["url", "token", "policyId", "consumerId"] as const) {
        if (!opts.confirm[f]) throw new SecretSourceError(`createSecretSource: confirm.${f} is required`);
      }
      this.client = new RekeyClient({ url: opts.confirm.url, token: opts.confirm.token, fetch: opts.fetch });
    }
    if (opts.webhook) this.verifier = createWebhookVerifier({ signingKey: opts.webhook.signingKey, toleranceSeconds: opts.webhook.toleranceSeconds, now: opts.now });
    this.now = opts.now ?? Date.now;
    this.onError = opts.onError ?? ((err) => process.emitWarning(err.message, { code: "REKEY_CONSUMER" }));
  }

  async get(): Promise<string> {
    return (await this.current()).value;
  }

  async current(): Promise<SecretVersion> {
    return this.cached ?? this.read();
  }

  async all(): Promise<SecretVersion[]> {
    const cur = await this.current();
    if (this.previous?.forVersion !== cur.versionId) {
      const prev = await this.store.getStage(this.ref, "AWSPREVIOUS");
      this.previous = { forVersion: cur.versionId, version: prev && prev.versionId !== cur.versionId ? plain(prev) : undefined };
    }
    return this.previous.version ? [cur, this.previous.version] : [cur];
  }

  onChange(handler: ChangeHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  async invalidate(): Promise<SecretVersion> {
    if (this.cached && !this.reading && this.now() - this.lastReadAt < (this.opts.minRefreshIntervalMs ?? 1_000)) return this.cached;
    return this.read();
  }

  async confirm(): Promise<ConfirmResult> {
    if (!this.client) throw new SecretSourceError("confirm(): createSecretSource was given no confirm options");
    return this.confirmVersion(await this.current(), true);
  }

  async handleWebhook(body: string | Buffer, headers: WebhookHeaders): Promise<{ status: number; body: Record<string, unknown> }> {
    if (!this.verifier) return { status: 404, body: { error: "this secret source has no webhook signing key configured" } };
    let event: RekeyWebhookEvent;
    try {
      event = this.verifier.verify(body, headers);
    } catch (err) {
      if (err instanceof WebhookRejectedError) return { status: err.status, body: { error: err.message } };
      throw err;
    }
    // Answer at once: the reload and the app's handlers may take longer than rekey waits.
    const matches = this.matches(event) && RELOAD_EVENTS.has(event.event);
    if (matches) void this.handleEvent(event).catch((err: unknown) => this.fail(err));
    return { status: 200, body: { ok: true, action: matches ? "reload" : "ignored" } };
  }

  webhookHandler(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const answer = (status: number, body: Record<string, unknown>): void => {
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
      };
      if (req.method !== "POST") return answer(405, { error: "POST only" });
      readRawBody(req)
        .then((raw) => this.handleWebhook(raw, req.headers))
        .then((r) => answer(r.status, r.body))
        .catch((err: unknown) => answer(err instanceof WebhookRejectedError ? err.status : 500, { error: err instanceof WebhookRejectedError ? err.message : "internal error" }));
    };
  }

  async handleEvent(event: RekeyWebhookEvent): Promise<"ignored" | "reloaded"> {
    if (!this.matches(event) || !RELOAD_EVENTS.has(event.event)) return "ignored";
    const v = await this.read();
    // A rotation asks for a confirmation of the version this process runs on already: confirm
    // now. Either this process read it before rekey recorded the promotion (its confirmation met
    // a 409), or it confirmed it and rekey lost that (its Redis was wiped and `rekey reconcile`
    // queued the rotation again): a repeat is accepted as one, and not retried on a 409.
    if (this.client && this.autoConfirm && CONFIRM_EVENTS.has(event.event) && event.versionId === v.versionId) {
      await this.applying;
      if (this.applied?.versionId === v.versionId && this.cached?.versionId === v.versionId) {
        await this.confirmVersion(v, this.confirmedVersionId !== v.versionId);
      }
    }
    return "reloaded";
  }

  status(): SecretSourceStatus {
    return {
      secretId: this.opts.secretId,
      versionId: this.cached?.versionId,
      appliedVersionId: this.applied?.versionId,
      confirmedVersionId: this.confirmedVersionId,
      lastError: this.lastError,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort();
    if (this.timer) clearTimeout(this.timer);
    // A call to rekey in flight is let finish (cutting it off mid-request leaves rekey's side of
    // the connection open); retries and new versions stop here.
    await Promise.allSettled([this.applying, this.confirming?.result]);
  }

  // ---- internals ---------------------------------------------------------------------------

  private get autoConfirm(): boolean {
    return this.opts.confirm?.auto !== false;
  }

  private matches(event: RekeyWebhookEvent): boolean {
    return event.secretId === this.opts.secretId || (this.opts.confirm !== undefined && event.policyId === this.opts.confirm.policyId);
  }

  /** One read of AWSCURRENT at a time; callers during a read share it. */
  private read(): Promise<SecretVersion> {
    this.reading ??= this.readOnce().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readOnce(): Promise<SecretVersion> {
    let stored: StoredVersion | undefined;
    try {
      stored = await this.store.getCurrent(this.ref);
    } catch (err) {
      const e = new SecretSourceError(`reading ${this.opts.secretId} from Secrets Manager failed: ${err instanceof Error ? err.message : String(err)}`);
      this.lastError = e.message;
      throw e;
    }
    if (!stored) throw new SecretSourceError(`secret ${this.opts.secretId}${this.opts.jsonKey ? ` (key ${this.opts.jsonKey})` : ""} has no AWSCURRENT value`);
    this.lastReadAt = this.now();
    const next = plain(stored);
    if (!this.cached) {
      // The first load: the app takes the value from get(), so there is nothing to hand over.
      this.cached = next;
      this.applied = next;
      this.schedulePoll();
      if (this.client && this.autoConfirm) void this.confirmVersion(next, false).catch((err: unknown) => this.fail(err));
    } else if (this.cached.versionId !== next.versionId) {
      this.cached = next;
    }
    // A version whose handlers have not all resolved yet (it is new, or they failed last time).
    if (this.applied?.versionId !== this.cached.versionId && !this.applying) {
      this.applying = this.apply().finally(() => {
        this.applying = undefined;
      });
    }
    return this.cached;
  }

  /** Hand the current version to every handler, then confirm it. Serialized by `applying`. */
  private async apply(): Promise<void> {
    for (;;) {
      const next = this.cached!;
      const previous = this.applied!;
      try {
        for (const handler of [...this.handlers]) await handler(next, previous);
      } catch (err) {
        // I2 on the consumer side: a version the app did not take is never confirmed.
        const message = scrubValues(err instanceof Error ? err.message : String(err), [next.value, previous.value]);
        this.lastError = `a change handler failed for version ${next.versionId}: ${message}`;
        this.onError(new SecretSourceError(this.lastError));
        await this.report(next.versionId, "handler", `a change handler failed: ${message}`);
        return;
      }
      this.applied = next;
      if (this.cached!.versionId !== next.versionId) continue; // changed again meanwhile
      if (this.client && this.autoConfirm && !this.closed) await this.confirmVersion(next, true);
      return;
    }
  }

  private confirmVersion(v: SecretVersion, retryConflicts: boolean): Promise<ConfirmResult> {
    if (this.confirming?.versionId === v.versionId) return this.confirming.result;
    const c = this.opts.confirm!;
    const body = c.fingerprintKey
      ? { policyId: c.policyId, consumerId: c.consumerId, fingerprint: fingerprint(c.fingerprintKey, v.value) }
      : { policyId: c.policyId, consumerId: c.consumerId, versionId: v.versionId };
    const result = confirmWithRetry(this.client!, body, {
      retryConflicts,
      stillWanted: () => !this.closed && this.cached?.versionId === v.versionId,
      delaysMs: this.opts.confirmRetryDelaysMs,
      signal: this.closing.signal,
    }).then((r) => {
      if (r.outcome === "accepted") this.confirmedVersionId = v.versionId;
      else if (r.outcome === "refused") this.fail(new SecretSourceError(`rekey refused the confirmation of ${c.consumerId} for policy ${c.policyId} (HTTP ${r.status}: ${r.error}); check confirm.token, policyId and consumerId`));
      else if (r.outcome === "unavailable") this.fail(new SecretSourceError(`could not confirm version ${v.versionId} to rekey: ${r.error}; the next webhook or poll tries again`));
      return r;
    });
    this.confirming = { versionId: v.versionId, result };
    void result.finally(() => {
      if (this.confirming?.result === result) this.confirming = undefined;
    });
    return result;
  }

  private async report(versionId: string, stage: FailureStage, message: string): Promise<void> {
    if (!this.client) return;
    const c = this.opts.confirm!;
    try {
      const r = await this.client.reportFailure({ policyId: c.policyId, consumerId: c.consumerId, versionId, stage, message });
      if (!r.ok) this.fail(new SecretSourceError(`rekey refused the failure report (HTTP ${r.status}: ${r.error})`));
    } catch (err) {
      if (!(err instanceof RekeyUnavailableError)) throw err;
      this.fail(err);
    }
  }

  private schedulePoll(): void {
    const every = this.opts.pollIntervalMs ?? 60_000;
    if (every <= 0 || this.closed) return;
    this.timer = setTimeout(() => {
      this.read()
        .catch((err: unknown) => this.fail(err))
        .finally(() => this.schedulePoll());
    }, every);
    // A source alone does not keep the process alive.
    this.timer.unref();
  }

  private fail(err: unknown): void {
    const e = err instanceof Error ? err : new SecretSourceError(String(err));
    this.lastError = e.message;
    this.onError(e);
  }
}

function plain(v: StoredVersion): SecretVersion {
  return { value: v.value, versionId: v.versionId };
}
