/**
 * A fake Upstash QStash that serves both of its hosts on one port: the data plane (`/v2/keys`,
 * `/v2/topics`, Bearer QStash token) and the Developer API (`/v2/qstash/...`, HTTP Basic
 * `email:api-key`). Their paths do not overlap, so a test points `baseUrl` and `managementUrl` at
 * the same URL. Each region is one QStash user with its own token and signing keys, as upstream.
 *
 * Behaviour kept from the real service: rotate-token answers the whole user object with a new
 * `token` and `read_only_token` and the old token dies at once; the token can be read again by
 * GET; a signing-key roll turns `next` into `current` and mints a fresh `next`; errors are
 * `{"error": "…"}`; 429 carries `Burst-RateLimit-*` (or the daily `RateLimit-*`) headers whose
 * reset is unix seconds.
 */
import { randomUUID } from "node:crypto";
import { authHeader, HttpFake, mintSecret, type FakeReply, type FakeRequest } from "./http-fake.ts";

export interface QStashFakeOptions {
  /** Account email for the Developer API (default `owner@example.com`). */
  email?: string;
  /** Developer API key (default: a minted one, see `apiKey`). */
  apiKey?: string;
  /** One QStash user per region (default `["eu-central-1"]`). */
  regions?: string[];
  /**
   * Requests allowed per credential (Authorization header) per burst window before a 429.
   * Default: off (no limit).
   */
  burstLimit?: number;
  /** Burst window length in ms (default 1000). */
  burstWindowMs?: number;
  /** Which headers an injected "429" fault carries (default `burst`). */
  injected429?: "burst" | "daily";
  /** Seconds from now that an injected 429 names as its reset (default 2). */
  injected429ResetSec?: number;
  /** Serve only the older `POST /v2/qstash/user/rotatetoken`: the per-user path answers 404. */
  legacyRotateOnly?: boolean;
  /** Clock in epoch ms (default Date.now): rate-limit windows and reset headers use it. */
  now?: () => number;
}

export interface QStashFakeUser {
  id: string;
  email: string;
  region: string;
  token: string;
  read_only_token: string;
  state: string;
  type: string;
  max_requests_per_day: number;
  max_requests_per_second: number;
  creation_time: number;
}

interface Region {
  user: QStashFakeUser;
  keys: { current: string; next: string };
  keyRolls: number;
  tokenRotations: number;
  /** Each rotation: when the old token died and the token that replaced it (cut-over outage figures). */
  rotationLog: { at: number; token: string }[];
  /** Every token this region ever had: isLive answers false for the retired ones. */
  retired: Set<string>;
}

export class QStashFake extends HttpFake {
  readonly email: string;
  readonly apiKey: string;
  /** Unix seconds named by the last 429 this fake sent (injected or burst). */
  lastRateLimitResetSec: number | undefined;
  private readonly regions: Region[];
  private readonly now: () => number;
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(private readonly options: QStashFakeOptions = {}) {
    // The handlers run only after construction; the box lets them reach the instance.
    const box: { fake?: QStashFake } = {};
    super((req) => box.fake!.route(req), {
      rateLimited: () => box.fake!.injected429(),
      serverError: () => ({ status: 500, body: { error: "internal server error" } }),
    });
    box.fake = this;
    this.now = options.now ?? Date.now;
    this.email = options.email ?? "owner@example.com";
    this.apiKey = options.apiKey ?? mintSecret("upstash_api_", 16);
    this.regions = (options.regions ?? ["eu-central-1"]).map((region) => ({
      user: {
        id: randomUUID(),
        email: this.email,
        region,
        token: mintToken(),
        read_only_token: mintToken(),
        state: "active",
        type: "paid",
        max_requests_per_day: 1_000_000,
        max_requests_per_second: 100,
        creation_time: Math.floor(this.now() / 1000),
      },
      keys: { current: mintSecret("sig_"), next: mintSecret("sig_") },
      keyRolls: 0,
      tokenRotations: 0,
      rotationLog: [],
      retired: new Set(),
    }));
  }

  /** The QStash user id of a region (default: the first region). */
  userId(region?: string): string {
    return this.region(region).user.id;
  }

  /** The region's current QStash token. */
  token(region?: string): string {
    return this.region(region).user.token;
  }

  readOnlyToken(region?: string): string {
    return this.region(region).user.read_only_token;
  }

  /** A copy of the region's signing keys. */
  keys(region?: string): { current: string; next: string } {
    return { ...this.region(region).keys };
  }

  /** How many times the region's signing keys were rolled. */
  keyRolls(region?: string): number {
    return this.region(region).keyRolls;
  }

  /** How many times the region's token was rotated. */
  tokenRotations(region?: string): number {
    return this.region(region).tokenRotations;
  }

  /** Each token rotation: when the old token died (epoch ms) and the new token. */
  rotationLog(region?: string): { at: number; token: string }[] {
    return [...this.region(region).rotationLog];
  }

  /** Does this token (full or read-only) authenticate on the data plane now? */
  isLive(token: string): boolean {
    return this.regions.some((r) => r.user.token === token || r.user.read_only_token === token);
  }

  /** Was this token ever issued and then rotated away? */
  wasRetired(token: string): boolean {
    return this.regions.some((r) => r.retired.has(token));
  }

  /** Roll the signing keys as the console would, outside any API client. */
  rollKeys(region?: string): { current: string; next: string } {
    return { ...this.roll(this.region(region)) };
  }

  /** Rotate the token as the console's "Reset token" button would. Returns the new token. */
  rotateToken(region?: string): string {
    return this.rotate(this.region(region)).token;
  }

  private region(name?: string): Region {
    const r = name === undefined ? this.regions[0] : this.regions.find((x) => x.user.region === name);
    if (!r) throw new Error(`QStashFake: no region ${name ?? "(none configured)"}`);
    return r;
  }

  private roll(r: Region): { current: string; next: string } {
    r.keys = { current: r.keys.next, next: mintSecret("sig_") };
    r.keyRolls += 1;
    return r.keys;
  }

  private rotate(r: Region): QStashFakeUser {
    r.retired.add(r.user.token);
    r.retired.add(r.user.read_only_token);
    r.user = { ...r.user, token: mintToken(), read_only_token: mintToken() };
    r.tokenRotations += 1;
    r.rotationLog.push({ at: Date.now(), token: r.user.token });
    return r.user;
  }

  private injected429(): FakeReply {
    const reset = Math.floor(this.now() / 1000) + (this.options.injected429ResetSec ?? 2);
    this.lastRateLimitResetSec = reset;
    const prefix = this.options.injected429 === "daily" ? "RateLimit" : "Burst-RateLimit";
    return {
      status: 429,
      headers: { [`${prefix}-Limit`]: String(this.options.burstLimit ?? 100), [`${prefix}-Remaining`]: "0", [`${prefix}-Reset`]: String(reset) },
      body: { error: "Exceeded burst rate limit" },
    };
  }

  /** Burst limiting per credential; returns the headers to send, or a 429 reply. */
  private burst(req: FakeRequest): { headers: Record<string, string>; reply?: FakeReply } {
    const limit = this.options.burstLimit;
    if (limit === undefined) return { headers: {} };
    const windowMs = this.options.burstWindowMs ?? 1000;
    const key = authHeader(req) ?? "(anonymous)";
    const now = this.now();
    let w = this.windows.get(key);
    if (!w || now - w.start >= windowMs) {
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count += 1;
    const reset = Math.ceil((w.start + windowMs) / 1000);
    const headers = {
      "Burst-RateLimit-Limit": String(limit),
      "Burst-RateLimit-Remaining": String(Math.max(0, limit - w.count)),
      "Burst-RateLimit-Reset": String(reset),
    };
    if (w.count <= limit) return { headers };
    this.lastRateLimitResetSec = reset;
    return { headers, reply: { status: 429, headers, body: { error: "Exceeded burst rate limit" } } };
  }

  private route(req: FakeRequest): FakeReply {
    const { headers, reply } = this.burst(req);
    if (reply) return reply;
    const out = req.path.startsWith("/v2/qstash/") ? this.developerApi(req) : this.dataPlane(req);
    return { ...out, headers: { ...headers, ...out.headers } };
  }

  private dataPlane(req: FakeRequest): FakeReply {
    const auth = authHeader(req);
    const bearer = auth?.startsWith("Bearer ") ? auth.slice("Bearer ".length) : undefined;
    const full = this.regions.find((r) => r.user.token === bearer);
    const readOnly = this.regions.find((r) => r.user.read_only_token === bearer);
    const r = full ?? readOnly;
    if (!bearer || !r) return { status: 401, body: { error: "Unauthorized" } };
    const key = `${req.method} ${req.path}`;
    if (req.method !== "GET" && !full) return { status: 403, body: { error: "read-only token cannot perform this operation" } };
    if (key === "GET /v2/topics") {
      return { status: 200, body: [{ name: "orders", endpoints: [{ url: "https://receiver.example.com/orders" }], createdAt: 0, updatedAt: 0 }] };
    }
    if (key === "GET /v2/keys") return { status: 200, body: { ...r.keys } };
    if (key === "POST /v2/keys/rotate") return { status: 200, body: { ...this.roll(r) } };
    return { status: 404, body: { error: "not found" } };
  }

  private developerApi(req: FakeRequest): FakeReply {
    const expected = `Basic ${Buffer.from(`${this.email}:${this.apiKey}`).toString("base64")}`;
    if (authHeader(req) !== expected) return { status: 401, body: { error: "Unauthorized" } };
    if (req.method === "GET" && req.path === "/v2/qstash/users") return { status: 200, body: this.regions.map((r) => ({ ...r.user })) };
    if (req.method === "POST" && req.path === "/v2/qstash/user/rotatetoken") {
      // The older path predates regions: it names no user and rotates the account's first one.
      return { status: 200, body: { ...this.rotate(this.region()) } };
    }
    const m = /^\/v2\/qstash\/rotate-token\/([^/]+)$/.exec(req.path);
    if (req.method === "POST" && m && !this.options.legacyRotateOnly) {
      const r = this.regions.find((x) => x.user.id === decodeURIComponent(m[1] ?? ""));
      if (!r) return { status: 404, body: { error: "qstash user not found" } };
      return { status: 200, body: { ...this.rotate(r) } };
    }
    return { status: 404, body: { error: "not found" } };
  }
}

function mintToken(): string {
  // Upstash tokens are base64 text; the shape only matters for realism.
  return Buffer.from(mintSecret("qstash:", 24)).toString("base64");
}
