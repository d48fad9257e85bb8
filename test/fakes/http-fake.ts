/**
 * The base every provider fake (and the AWS emulator) stands on: a real HTTP server on
 * 127.0.0.1, a request log for assertions, and fault injection (5xx, 429, delay, dropped
 * connections before or after the side effect) so tests can break a call at a chosen moment.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type FaultKind =
  /** Answer 500 without doing anything. */
  | "500"
  /** Answer 429 (the fake's `rateLimited` hook sets the provider's real headers). */
  | "429"
  /** Wait `delayMs` before handling. */
  | "delay"
  /** Destroy the connection before handling: nothing happened. */
  | "drop"
  /** Handle the request (the side effect happens), then destroy the connection unanswered. */
  | "drop-after";

export interface FaultRule {
  /** Matches `"<METHOD> <path>"` (path without query). A string matches as a prefix-free substring. */
  route?: string | RegExp;
  kind: FaultKind;
  /** How many matching requests this rule hits (default 1; Infinity for all). */
  times?: number;
  delayMs?: number;
}

export interface RandomFaults {
  /** Probability 0..1 that a request gets a fault. */
  rate: number;
  kinds: FaultKind[];
  route?: string | RegExp;
  delayMs?: number;
  /** Deterministic runs: a seeded generator (default Math.random). */
  random?: () => number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  status: number;
  at: number;
  fault?: FaultKind;
  /** The key faults were matched against (set where the fake has a `routeKey` hook). */
  route?: string;
}

export interface FakeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  /** Raw body text. */
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: unknown;
}

export interface FakeReply {
  status: number;
  headers?: Record<string, string>;
  /** Serialized as JSON unless it is a string. */
  body?: unknown;
}

export type Handler = (req: FakeRequest) => FakeReply | Promise<FakeReply>;

export class Faults {
  private rules: (FaultRule & { left: number })[] = [];
  private randomRule: RandomFaults | undefined;

  inject(rule: FaultRule): void {
    this.rules.push({ ...rule, left: rule.times ?? 1 });
  }

  random(rule: RandomFaults | undefined): void {
    this.randomRule = rule;
  }

  clear(): void {
    this.rules = [];
    this.randomRule = undefined;
  }

  /** The fault for this request, if any (consumes one use of a rule). */
  take(key: string): FaultRule | undefined {
    const rule = this.rules.find((r) => r.left > 0 && matches(r.route, key));
    if (rule) {
      rule.left -= 1;
      return rule;
    }
    const rnd = this.randomRule;
    if (rnd && matches(rnd.route, key) && (rnd.random ?? Math.random)() < rnd.rate) {
      const kinds = rnd.kinds;
      const kind = kinds[Math.floor((rnd.random ?? Math.random)() * kinds.length)] ?? "500";
      return { kind, delayMs: rnd.delayMs };
    }
    return undefined;
  }
}

function matches(route: string | RegExp | undefined, key: string): boolean {
  if (route === undefined) return true;
  return typeof route === "string" ? key.includes(route) : route.test(key);
}

export interface HttpFakeOptions {
  /** Reply used for an injected 429 (set the provider's real rate-limit headers here). */
  rateLimited?: (req: FakeRequest) => FakeReply;
  /** Reply used for an injected 500 (the provider's error body shape). */
  serverError?: (req: FakeRequest) => FakeReply;
  port?: number;
  host?: string;
  /**
   * The key fault rules and `count` match against (default `"<METHOD> <path>"`). RPC-style fakes
   * whose every call is `POST /` name the operation here instead.
   */
  routeKey?: (req: FakeRequest) => string;
}

export class HttpFake {
  readonly faults = new Faults();
  readonly requests: LoggedRequest[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  url = "";

  constructor(
    private readonly handler: Handler,
    private readonly opts: HttpFakeOptions = {},
  ) {}

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      void this.handle(req, res);
    });
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.port ?? 0, this.opts.host ?? "127.0.0.1", () => resolve());
    });
    this.server = server;
    const addr = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${addr.port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** Count of logged requests whose "METHOD path" matches. */
  count(route?: string | RegExp, status?: number): number {
    return this.requests.filter((r) => matches(route, r.route ?? `${r.method} ${r.path}`) && (status === undefined || r.status === status)).length;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const u = new URL(req.url ?? "/", "http://fake");
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    const freq: FakeRequest = { method: req.method ?? "GET", path: u.pathname, query: u.searchParams, headers: req.headers, text, json };
    const key = this.opts.routeKey?.(freq) ?? `${freq.method} ${freq.path}`;
    const log: LoggedRequest = { method: freq.method, path: freq.path, query: u.searchParams, status: 0, at: Date.now() };
    if (this.opts.routeKey) log.route = key;
    this.requests.push(log);

    const fault = this.faults.take(key);
    if (fault) log.fault = fault.kind;
    if (fault?.kind === "delay") await new Promise((r) => setTimeout(r, fault.delayMs ?? 1_000));
    if (fault?.kind === "drop") {
      log.status = -1;
      req.socket.destroy();
      return;
    }
    let reply: FakeReply;
    if (fault?.kind === "500") reply = this.opts.serverError?.(freq) ?? { status: 500, body: { message: "injected fault" } };
    else if (fault?.kind === "429") reply = this.opts.rateLimited?.(freq) ?? { status: 429, body: { message: "rate limited" } };
    else {
      try {
        reply = await this.handler(freq);
      } catch (err) {
        reply = { status: 500, body: { message: `fake crashed: ${err instanceof Error ? err.message : String(err)}` } };
      }
    }
    if (fault?.kind === "drop-after") {
      log.status = -1;
      req.socket.destroy();
      return;
    }
    log.status = reply.status;
    const isString = typeof reply.body === "string";
    const payload = reply.body === undefined ? "" : isString ? (reply.body as string) : JSON.stringify(reply.body);
    const headers: Record<string, string> = { ...reply.headers };
    if (payload && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["content-type"] = isString ? "text/plain" : "application/json";
    }
    res.writeHead(reply.status, headers);
    res.end(payload);
  }
}

/** Bearer / token / raw Authorization header value, or undefined. */
export function authHeader(req: FakeRequest): string | undefined {
  const h = req.headers.authorization;
  return Array.isArray(h) ? h[0] : h;
}

/** A random token-looking string with a prefix (fakes mint secrets with it). */
export function mintSecret(prefix: string, bytes = 24): string {
  const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  let out = prefix;
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  for (const b of buf) out += chars[b % chars.length];
  return out;
}
