/**
 * The consumer's side of rekey's HTTP API: push confirmations (`POST /v1/confirmations`) and
 * failure reports (`POST /v1/consumer-failures`), authenticated with the consumer's bearer token.
 * The token is an opaque string here: rekey decides what it may do.
 *
 * What the answers mean is decided by status code, as README documents them: 200 accepted, 409
 * nothing (or another version) is waiting, other 4xx a refusal that retrying cannot fix, 5xx and
 * network errors worth retrying.
 */

/** Which stage of taking a new secret version failed (reported to rekey). */
export const FAILURE_STAGES = ["fetch", "write", "reload", "health", "handler", "confirm"] as const;
export type FailureStage = (typeof FAILURE_STAGES)[number];

export interface RekeyClientOptions {
  /** rekey's API base URL, e.g. `https://rekey.internal:8080`. */
  url: string;
  /** The consumer's bearer token (its sha256 is in the policy, or a consumer-scoped API token). */
  token: string;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
  /** Budget of one request in ms. Default 10,000. */
  timeoutMs?: number;
}

export type ConfirmOutcome =
  /** rekey counted the confirmation (or had it already). */
  | { outcome: "accepted"; rotationId: string; alreadyConfirmed: boolean; waitingFor: string[] }
  /** 409: no rotation of the policy waits for this version (yet, or any more). */
  | { outcome: "not-waiting"; status: 409; error: string }
  /** Another 4xx: wrong token, policy or consumer id. Retrying will not help; fix the configuration. */
  | { outcome: "refused"; status: number; error: string };

/** rekey could not be reached, or answered 5xx: worth retrying. */
export class RekeyUnavailableError extends Error {
  override name = "RekeyUnavailableError";
}

export class RekeyClient {
  private readonly base: string;
  private readonly doFetch: typeof fetch;
  private readonly timeoutMs: number;

  constructor(private readonly opts: RekeyClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new Error(`rekey url: expected an http(s) URL, got ${JSON.stringify(opts.url)}`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`rekey url: expected an http(s) URL, got ${JSON.stringify(opts.url)}`);
    if (!opts.token) throw new Error("rekey token: the consumer's bearer token is empty");
    this.base = opts.url.replace(/\/+$/, "");
    this.doFetch = opts.fetch ?? fetch;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** Confirm that the consumer runs on a version, named by `versionId` or `fingerprint`. */
  async confirm(body: { policyId: string; consumerId: string; versionId?: string; fingerprint?: string }): Promise<ConfirmOutcome> {
    const { status, json } = await this.post("/v1/confirmations", body);
    if (status === 200) {
      return { outcome: "accepted", rotationId: String(json.rotationId ?? ""), alreadyConfirmed: json.alreadyConfirmed === true, waitingFor: Array.isArray(json.waitingFor) ? json.waitingFor.map(String) : [] };
    }
    const error = typeof json.error === "string" ? json.error : `HTTP ${status}`;
    if (status === 409) return { outcome: "not-waiting", status, error };
    return { outcome: "refused", status, error };
  }

  /**
   * Tell rekey that loading a version failed, so the rotation shows it (`rekey status`) and its
   * owners are alerted. `message` must not hold a secret; it is cut to 500 characters.
   */
  async reportFailure(body: { policyId: string; consumerId: string; versionId?: string; stage: FailureStage; message: string }): Promise<{ ok: true } | { ok: false; status: number; error: string }> {
    const { status, json } = await this.post("/v1/consumer-failures", { ...body, message: body.message.slice(0, 500) });
    if (status === 200) return { ok: true };
    return { ok: false, status, error: typeof json.error === "string" ? json.error : `HTTP ${status}` };
  }

  private async post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    let res: Response;
    try {
      res = await this.doFetch(`${this.base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${this.opts.token}` },
        body: JSON.stringify(body),
        redirect: "error",
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new RekeyUnavailableError(`rekey at ${this.base} did not answer POST ${path} (${cause ?? (err instanceof Error ? err.name : "error")})`);
    }
    const text = await res.text().catch(() => "");
    if (res.status >= 500) throw new RekeyUnavailableError(`rekey at ${this.base} answered POST ${path} with ${res.status}`);
    let json: Record<string, unknown> = {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object") json = parsed as Record<string, unknown>;
    } catch {
      // A non-JSON answer keeps its status; the error text says only the status.
    }
    return { status: res.status, json };
  }
}

export type ConfirmResult =
  | ConfirmOutcome
  /** rekey could not be reached (or answered 5xx) on every attempt. */
  | { outcome: "unavailable"; error: string }
  /** A newer version arrived (or the source closed) before rekey answered: that one is confirmed instead. */
  | { outcome: "superseded" };

/**
 * Waits between attempts, in ms: about a minute in all. A 409 right after a version appears is
 * usually rekey still recording the promotion it just made (the store's label moves first).
 */
export const CONFIRM_RETRY_DELAYS_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000];

/**
 * Confirm with retries: a network error or 5xx is always retried; a 409 only with
 * `retryConflicts` (a version that just became current). A refusal is returned at once.
 * `stillWanted` is asked before each attempt, so a superseded version stops retrying; `signal`
 * ends a wait between attempts at once (a request in flight is let finish).
 */
export async function confirmWithRetry(
  client: Pick<RekeyClient, "confirm">,
  body: Parameters<RekeyClient["confirm"]>[0],
  opts: { retryConflicts: boolean; stillWanted: () => boolean; delaysMs?: readonly number[]; signal?: AbortSignal },
): Promise<ConfirmResult> {
  const delays = opts.delaysMs ?? CONFIRM_RETRY_DELAYS_MS;
  const sleep = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      if (opts.signal?.aborted) return resolve();
      const t = setTimeout(done, ms);
      t.unref();
      function done(): void {
        clearTimeout(t);
        opts.signal?.removeEventListener("abort", done);
        resolve();
      }
      opts.signal?.addEventListener("abort", done, { once: true });
    });
  let last: ConfirmResult = { outcome: "superseded" };
  for (let attempt = 0; attempt <= delays.length; attempt++) {
    if (attempt > 0) await sleep(delays[attempt - 1]!);
    if (!opts.stillWanted()) return { outcome: "superseded" };
    try {
      last = await client.confirm(body);
    } catch (err) {
      if (!(err instanceof RekeyUnavailableError)) throw err;
      last = { outcome: "unavailable", error: err.message };
      continue;
    }
    if (last.outcome === "accepted" || last.outcome === "refused") return last;
    if (!opts.retryConflicts) return last;
  }
  return last;
}
