/**
 * `rekey agent`: the consumer side of rotation for apps in any language. It watches secrets in
 * AWS Secrets Manager (rekey's webhook, and a poll), writes them to files, runs the app's reload
 * command, waits for its health check, and only then confirms the new version to rekey. A write,
 * reload or health check that fails never confirms: it is reported to rekey (which shows it in
 * `rekey status` and alerts the policy's notify targets) and tried again with backoff.
 *
 * One cycle at a time: changes that arrive within `debounce` of each other (several secrets
 * rotated together) are written and reloaded once.
 */
import Fastify, { type FastifyInstance } from "fastify";
import type { Logger } from "../../log.ts";
import { AwsSecretsManagerStore } from "../../stores/aws-secrets-manager.ts";
import type { SecretRef } from "../../stores/types.ts";
import { fingerprint } from "../fingerprint.ts";
import { type ConfirmResult, confirmWithRetry, type FailureStage, RekeyClient, RekeyUnavailableError } from "../rekey-client.ts";
import { scrubValues } from "../secret-source.ts";
import { createWebhookVerifier, type RekeyWebhookEvent, WebhookRejectedError, type WebhookVerifier } from "../webhook-verifier.ts";
import { type AgentConfig, credentialEnvNames, readRef } from "./config.ts";
import { describeFailure, runShell, waitHealthy } from "./commands.ts";
import { renderOutput, writeAtomic } from "./outputs.ts";

export interface AgentDeps {
  config: AgentConfig;
  /** The agent's environment (credential references are read from it). */
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** Default: Secrets Manager through the SDK's standard chain (AWS_ENDPOINT_URL_SECRETS_MANAGER honoured). */
  store?: Pick<AwsSecretsManagerStore, "getCurrent">;
  fetch?: typeof fetch;
  /** Waits between confirmation attempts (tests shorten them). */
  confirmRetryDelaysMs?: readonly number[];
}

interface Watched {
  name: string;
  ref: SecretRef;
  policyId: string;
  consumerId: string;
  current?: { value: string; versionId: string };
  /** Written, reloaded and healthy. */
  applied?: string;
  confirmed?: string;
  lastFailure?: { stage: FailureStage; message: string; at: number; versionId?: string };
}

/** Events after which the current version may have changed or a confirmation is awaited. */
const RELOAD_EVENTS = new Set(["rotation.awaiting-confirmation", "rotation.leak", "rotation.completed", "rotation.needs-attention"]);
const CONFIRM_EVENTS = new Set(["rotation.awaiting-confirmation", "rotation.leak", "rotation.needs-attention"]);

export class ConsumerAgent {
  private readonly cfg: AgentConfig;
  private readonly log: Logger;
  private readonly store: Pick<AwsSecretsManagerStore, "getCurrent">;
  private readonly watched: Watched[];
  private readonly childEnv: NodeJS.ProcessEnv;
  private client!: RekeyClient;
  private fingerprintKey?: string;
  private verifier?: WebhookVerifier;
  private server?: FastifyInstance;
  private ready = false;
  private stopped = false;
  private cycle?: Promise<void>;
  private again = false;
  private debounceTimer?: NodeJS.Timeout;
  private pollTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private retryMs: number;
  private readonly stop$ = new AbortController();
  /** Values seen, so they can be scrubbed from command output. */
  private readonly seen = new Set<string>();
  private readonly confirmations = new Set<Promise<unknown>>();
  /** The URL the HTTP server listens on, once started. */
  url?: string;

  constructor(private readonly deps: AgentDeps) {
    this.cfg = deps.config;
    this.log = deps.log;
    this.store = deps.store ?? new AwsSecretsManagerStore({ region: this.cfg.aws.region });
    this.watched = Object.entries(this.cfg.secrets).map(([name, s]) => ({ name, ref: { secretId: s.secretId, region: s.region, jsonKey: s.jsonKey }, policyId: s.policyId, consumerId: s.consumerId }));
    const drop = new Set(credentialEnvNames(this.cfg));
    this.childEnv = Object.fromEntries(Object.entries(deps.env).filter(([k]) => !drop.has(k)));
    this.retryMs = this.cfg.retry;
  }

  async start(): Promise<void> {
    const env = this.deps.env;
    const token = readRef(this.cfg.rekey.token, env, "rekey.token");
    this.seen.add(token);
    this.client = new RekeyClient({ url: this.cfg.rekey.url, token, fetch: this.deps.fetch });
    if (this.cfg.rekey.fingerprintKey) this.fingerprintKey = readRef(this.cfg.rekey.fingerprintKey, env, "rekey.fingerprintKey");
    if (this.cfg.webhook) {
      const refs = Array.isArray(this.cfg.webhook.signingKey) ? this.cfg.webhook.signingKey : [this.cfg.webhook.signingKey];
      const keys = refs.map((r, i) => readRef(r, env, refs.length > 1 ? `webhook.signingKey[${i}]` : "webhook.signingKey"));
      this.verifier = createWebhookVerifier({ signingKey: keys, toleranceSeconds: this.cfg.webhook.tolerance / 1000 });
    }
    if (this.cfg.listen) await this.listen(this.cfg.listen);
    this.log.info({ secrets: this.watched.map((w) => w.name), url: this.url }, "rekey agent started");
    await this.readAll();
    this.schedulePoll();
    this.schedule(0);
  }

  /** Read every secret now (SIGHUP); a new version starts a cycle as a webhook would. */
  async readNow(): Promise<void> {
    await this.readAll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stop$.abort();
    for (const t of [this.debounceTimer, this.pollTimer, this.retryTimer]) if (t) clearTimeout(t);
    await this.cycle?.catch(() => undefined);
    // Calls to rekey in flight finish; their retries end with the stop signal.
    await Promise.allSettled([...this.confirmations]);
    await this.server?.close();
  }

  /** Ids only: what `GET /status` shows. */
  status(): Record<string, unknown> {
    return {
      ready: this.ready,
      secrets: this.watched.map((w) => ({
        name: w.name,
        secretId: w.ref.secretId,
        policyId: w.policyId,
        consumerId: w.consumerId,
        versionId: w.current?.versionId,
        appliedVersionId: w.applied,
        confirmedVersionId: w.confirmed,
        lastFailure: w.lastFailure,
      })),
    };
  }

  // ---- reading ---------------------------------------------------------------------------------

  /**
   * Read secrets; a new version schedules a cycle (a version that failed keeps its own retry
   * backoff). Read failures are logged and tried at the next poll.
   */
  private async readAll(which: Watched[] = this.watched): Promise<void> {
    let changed = false;
    await Promise.all(
      which.map(async (w) => {
        try {
          const v = await this.store.getCurrent(w.ref, this.stop$.signal);
          if (!v) {
            this.log.warn({ secretName: w.name, secretId: w.ref.secretId }, "secret has no AWSCURRENT value");
            return;
          }
          this.seen.add(v.value);
          if (w.current?.versionId !== v.versionId) {
            if (w.current) this.log.info({ secretName: w.name, versionId: v.versionId, previousVersionId: w.current.versionId }, "new version");
            w.current = { value: v.value, versionId: v.versionId };
            changed = true;
          }
        } catch (err) {
          if (this.stopped) return;
          this.log.warn({ secretName: w.name, secretId: w.ref.secretId, err: err instanceof Error ? err.message : String(err) }, "reading the secret failed; trying again at the next poll");
        }
      }),
    );
    // Before the first write (a secret could not be read at start) a read that succeeds is the
    // first chance to write: at once.
    if (changed) this.schedule(this.ready ? this.cfg.debounce : 0);
  }

  private dirty(): Watched[] {
    return this.watched.filter((w) => w.current && w.current.versionId !== w.applied);
  }

  private schedulePoll(): void {
    if (this.stopped) return;
    this.pollTimer = setTimeout(() => {
      void this.readAll().finally(() => this.schedulePoll());
    }, this.cfg.poll);
  }

  // ---- the cycle: write, reload, health, confirm ------------------------------------------------

  /** Run a cycle after `delayMs` (debounce: a later change moves it later). */
  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.kick();
    }, delayMs);
  }

  private kick(): void {
    if (this.cycle) {
      this.again = true;
      return;
    }
    this.cycle = this.runCycle()
      .catch((err: unknown) => this.log.error({ err: err instanceof Error ? err.message : String(err) }, "agent cycle failed unexpectedly"))
      .finally(() => {
        this.cycle = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async runCycle(): Promise<void> {
    const dirty = this.dirty();
    if (dirty.length === 0 || this.stopped) return;
    if (this.watched.some((w) => !w.current)) {
      // Every output may need every secret: wait until each one has been read once.
      this.log.warn({ missing: this.watched.filter((w) => !w.current).map((w) => w.name) }, "not every secret could be read yet; waiting for the next poll");
      return;
    }
    const first = !this.ready;
    const versions = new Map(dirty.map((w) => [w, w.current!.versionId]));
    const values = Object.fromEntries(this.watched.map((w) => [w.name, w.current!.value]));
    const names = dirty.map((w) => w.name).join(",");

    // 1. write every output (unchanged files are left alone)
    let changedFiles = 0;
    try {
      for (const o of this.cfg.outputs) if (await writeAtomic(o.path, renderOutput(o, values), o.mode)) changedFiles++;
    } catch (err) {
      return this.failed(dirty, versions, "write", this.scrub(err instanceof Error ? err.message : String(err)));
    }
    this.ready = true;
    this.log.info({ secrets: names, changedFiles }, first ? "outputs written" : "outputs updated");

    // 2. reload (not after the first write unless asked: the app reads the files as it starts)
    if (this.cfg.reload && (!first || this.cfg.reload.onStart)) {
      const r = await runShell(this.cfg.reload.command, { env: { ...this.childEnv, REKEY_AGENT_CHANGED: names }, timeoutMs: this.cfg.reload.timeout, scrub: (t) => this.scrub(t) });
      if (!r.ok) return this.failed(dirty, versions, "reload", describeFailure("reload command", r, this.cfg.reload.timeout));
      this.log.info({ secrets: names }, "reload command succeeded");
    }

    // 3. health
    if (this.cfg.health) {
      const h = this.cfg.health;
      const problem = await waitHealthy(
        { url: h.url, command: h.command, timeoutMs: h.timeout, withinMs: h.within, intervalMs: h.interval },
        { env: this.childEnv, scrub: (t) => this.scrub(t), fetch: this.deps.fetch, signal: this.stop$.signal },
      );
      if (this.stopped) return;
      if (problem) return this.failed(dirty, versions, "health", problem);
    }

    // 4. confirm: only now does rekey hear that this consumer runs on the new version.
    this.retryMs = this.cfg.retry;
    for (const w of dirty) {
      const versionId = versions.get(w)!;
      w.applied = versionId;
      w.lastFailure = undefined;
      this.confirm(w, versionId, !first);
    }
  }

  /** `again`: confirm a version this agent confirmed already (rekey asked again: it lost the first). */
  private confirm(w: Watched, versionId: string, retryConflicts: boolean, again = false): void {
    if ((w.confirmed === versionId && !again) || !w.current || w.current.versionId !== versionId) return;
    const value = w.current.value;
    const body = this.fingerprintKey
      ? { policyId: w.policyId, consumerId: w.consumerId, fingerprint: fingerprint(this.fingerprintKey, value) }
      : { policyId: w.policyId, consumerId: w.consumerId, versionId };
    const p: Promise<ConfirmResult> = confirmWithRetry(this.client, body, {
      retryConflicts,
      stillWanted: () => !this.stopped && w.current?.versionId === versionId,
      delaysMs: this.deps.confirmRetryDelaysMs,
      signal: this.stop$.signal,
    });
    const tracked = p
      .then((r) => {
        const ctx = { secretName: w.name, policyId: w.policyId, consumerId: w.consumerId, versionId };
        if (r.outcome === "accepted") {
          w.confirmed = versionId;
          this.log.info({ ...ctx, waitingFor: r.waitingFor }, "confirmed to rekey");
        } else if (r.outcome === "not-waiting") this.log.info({ ...ctx, answer: r.error }, "no rotation is waiting for this version; nothing to confirm");
        else if (r.outcome === "refused") this.log.error({ ...ctx, status: r.status, answer: r.error }, "rekey refused the confirmation: check rekey.token, policyId and consumerId");
        else if (r.outcome === "unavailable") this.log.warn({ ...ctx, err: r.error }, "could not reach rekey to confirm; the next webhook or poll tries again");
      })
      .catch((err: unknown) => this.log.error({ err: err instanceof Error ? err.message : String(err) }, "confirmation failed"))
      .finally(() => this.confirmations.delete(tracked));
    this.confirmations.add(tracked);
  }

  /** A cycle failed: nothing is confirmed; report it, and try again with backoff. */
  private async failed(dirty: Watched[], versions: Map<Watched, string>, stage: FailureStage, message: string): Promise<void> {
    const at = Date.now();
    this.log.error({ stage, secrets: dirty.map((w) => w.name), retryInMs: this.retryMs }, `new version not taken: ${message}`);
    await Promise.all(
      dirty.map(async (w) => {
        const versionId = versions.get(w);
        w.lastFailure = { stage, message, at, versionId };
        try {
          const r = await this.client.reportFailure({ policyId: w.policyId, consumerId: w.consumerId, versionId, stage, message });
          if (!r.ok) this.log.error({ secretName: w.name, status: r.status, answer: r.error }, "rekey refused the failure report");
        } catch (err) {
          if (!(err instanceof RekeyUnavailableError)) throw err;
          this.log.warn({ secretName: w.name, err: err.message }, "could not report the failure to rekey");
        }
      }),
    );
    if (this.stopped) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.kick(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, Math.max(this.cfg.retry, this.cfg.poll));
  }

  private scrub(text: string): string {
    return scrubValues(text, [...this.seen]);
  }

  // ---- HTTP: webhook, /healthz, /status --------------------------------------------------------

  private async listen(listen: string): Promise<void> {
    const i = listen.lastIndexOf(":");
    const host = listen.slice(0, i).replace(/^\[|\]$/g, "");
    const port = Number(listen.slice(i + 1));
    const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
    // The signature covers the exact bytes: keep the body raw, whatever its content type.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
    app.get("/healthz", async (_req, reply) => reply.code(this.ready ? 200 : 503).send({ ready: this.ready }));
    app.get("/status", async () => this.status());
    if (this.cfg.webhook && this.verifier) {
      const verifier = this.verifier;
      app.post(this.cfg.webhook.path, async (req, reply) => {
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        let event: RekeyWebhookEvent;
        try {
          event = verifier.verify(body, req.headers);
        } catch (err) {
          if (!(err instanceof WebhookRejectedError)) throw err;
          this.log.warn({ reason: err.reason, remote: req.ip }, `webhook refused: ${err.message}`);
          return reply.code(err.status).send({ error: err.message });
        }
        const which = this.watched.filter((w) => w.ref.secretId === event.secretId || w.policyId === event.policyId);
        if (!which.length || !RELOAD_EVENTS.has(event.event)) return reply.code(200).send({ ok: true, action: "ignored" });
        this.log.info({ event: event.event, policyId: event.policyId, versionId: event.versionId }, "webhook accepted");
        // Answer at once; rekey does not wait for the reload.
        void this.onEvent(event, which);
        return reply.code(200).send({ ok: true, action: "reload" });
      });
    }
    await app.listen({ host, port });
    const addr = app.server.address();
    this.url = typeof addr === "object" && addr ? `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}` : undefined;
    this.server = app;
  }

  private async onEvent(event: RekeyWebhookEvent, which: Watched[]): Promise<void> {
    await this.readAll(which);
    // rekey asks for a version this agent already applied: confirm it now. Either its first
    // confirmation came before rekey recorded the promotion (a 409), or rekey lost it (its Redis
    // was wiped and `rekey reconcile` queued the rotation again): a repeat is accepted as one, and
    // not retried on a 409.
    if (!CONFIRM_EVENTS.has(event.event) || !event.versionId) return;
    for (const w of which) {
      if (w.applied === event.versionId && w.current?.versionId === event.versionId) this.confirm(w, event.versionId, w.confirmed !== event.versionId, true);
    }
  }
}
