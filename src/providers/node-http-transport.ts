/**
 * ProviderHttp's transport: one request over node:http or node:https, with keep-alive agents.
 *
 * Not the global fetch: Node's fetch ties each request's state (its Request and abort wiring, the
 * response body's stream) to WeakRefs and a FinalizationRegistry, and V8 keeps a WeakRef's target
 * alive through every young-generation collection. So the whole state of every provider request
 * survived into the old generation and stayed there until the next full collection: about a third
 * of everything a rotation worker promoted, and the old generation (RSS with it) grew to several
 * times its live size between full collections.
 *
 * Answers the way ProviderHttp reads fetch's: status and headers as soon as they arrive, the body
 * as text on request. Redirects are not followed (provider APIs do not redirect, and a credential
 * is never sent on to another address); no compression is asked for.
 */
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

/** What ProviderHttp reads of an answer (a fetch Response has it all). */
export interface HttpAnswer {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: Headers;
  text(): Promise<string>;
}

export interface TransportInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal: AbortSignal;
}

// Idle sockets are closed after 4 s (as fetch does), before a provider's own keep-alive timeout
// could close one just as a request is sent on it. NODE_USE_ENV_PROXY=1 sends the requests through
// HTTP(S)_PROXY, as it does fetch's.
const proxyEnv = process.env.NODE_USE_ENV_PROXY === "1" ? process.env : undefined;
const agents = {
  "http:": new HttpAgent({ keepAlive: true, timeout: 4_000, proxyEnv }),
  "https:": new HttpsAgent({ keepAlive: true, timeout: 4_000, proxyEnv }),
};

/** Sends one request; rejects like fetch (a TypeError whose cause is the socket's error) when no answer comes. */
export function nodeHttpRequest(url: string, init: TransportInit): Promise<HttpAnswer> {
  let target: URL;
  try {
    target = new URL(url);
  } catch (err) {
    return Promise.reject(new TypeError("invalid URL", { cause: err }));
  }
  const protocol = target.protocol;
  if (protocol !== "http:" && protocol !== "https:") return Promise.reject(new TypeError(`unsupported protocol ${protocol}`));
  const send = protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise<HttpAnswer>((resolve, reject) => {
    const req = send(target, { method: init.method, headers: init.headers, agent: agents[protocol], signal: init.signal }, (res) => resolve(answer(res)));
    req.on("error", (err) => reject(new TypeError("request failed", { cause: err })));
    req.end(init.body);
  });
}

function answer(res: IncomingMessage): HttpAnswer {
  const headers = new Headers();
  const raw = res.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i] as string, raw[i + 1] as string);
  // Read from the start, so nothing is lost before text() is called.
  const body = new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (chunk: Buffer) => chunks.push(chunk));
    res.on("end", () => resolve(new TextDecoder().decode(Buffer.concat(chunks))));
    res.on("error", reject);
    res.on("close", () => {
      if (!res.complete) reject(new Error("the connection closed before the whole answer arrived"));
    });
  });
  body.catch(() => undefined);
  const status = res.statusCode ?? 0;
  return { status, ok: status >= 200 && status < 300, headers, text: () => body };
}
