/**
 * What the end-to-end tests of human steps and notifications share: a webhook receiver on
 * 127.0.0.1 that checks rekey's signature and keeps every event it got, and `rekey submit` run
 * in-process through main() against a stack (its Redis prefix, the AWS emulator, the policies
 * written to a temporary directory), with the value on standard input.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { CliIo } from "../../src/cli/io.ts";
import { main } from "../../src/cli/main.ts";
import type { NotificationEvent } from "../../src/notify/events.ts";
import { verifySignature } from "../../src/notify/webhook.ts";
import type { PolicyInput } from "../../src/policy/schema.ts";
import { FINGERPRINT_KEY, REGION, type Stack, until } from "./stack.ts";
import { redisUrl } from "./redis.ts";

/** Signing key of the test webhook target; policies refer to it as `{ env: WEBHOOK_KEY_ENV }`. */
export const WEBHOOK_KEY = "rekey-test-webhook-signing-key-0123456789";
export const WEBHOOK_KEY_ENV = "REKEY_TEST_WEBHOOK_KEY";

export interface Received {
  event: NotificationEvent;
  /** Epoch ms when the receiver got it. */
  receivedAt: number;
}

export interface Receiver {
  url: string;
  events: Received[];
  /** Requests whose signature did not verify (must stay 0). */
  badSignatures: number;
  /** Events of one type, in arrival order. */
  of(type: NotificationEvent["event"], rotationId?: string): NotificationEvent[];
  /** Wait for the first event of a type (and rotation). */
  waitFor(type: NotificationEvent["event"], rotationId?: string, timeoutMs?: number): Promise<NotificationEvent>;
  /** Every raw body received, to scan for secrets. */
  raw(): string;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const bodies: string[] = [];
  const state = {
    url: "",
    events: [] as Received[],
    badSignatures: 0,
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      bodies.push(body);
      if (!verifySignature(body, req.headers, WEBHOOK_KEY, Date.now())) {
        state.badSignatures++;
        res.writeHead(401).end();
        return;
      }
      state.events.push({ event: JSON.parse(body) as NotificationEvent, receivedAt: Date.now() });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/rekey-events`;
  const of = (type: NotificationEvent["event"], rotationId?: string) =>
    state.events.map((e) => e.event).filter((e) => e.event === type && (rotationId === undefined || e.rotationId === rotationId));
  return Object.assign(state, {
    of,
    waitFor: (type: NotificationEvent["event"], rotationId?: string, timeoutMs = 30_000) => until(`${type} event`, () => of(type, rotationId)[0], timeoutMs),
    raw: () => bodies.join("\n"),
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
}

/** The webhook notify target of a policy, pointing at a receiver. */
export function webhookTarget(receiver: Receiver): NonNullable<PolicyInput["notify"]>[number] {
  return { kind: "webhook", url: receiver.url, signingKey: { env: WEBHOOK_KEY_ENV } };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `rekey <args>` in this process against the stack: REDIS_URL and REKEY_PREFIX of the stack,
 * the policies as files in a temporary REKEY_POLICY_DIR, and the AWS SDK pointed at the emulator.
 */
export async function runCli(stack: Stack, policies: PolicyInput[], args: string[], stdin = "", extraEnv: Record<string, string> = {}): Promise<CliResult> {
  const dir = await mkdtemp(join(tmpdir(), "rekey-cli-"));
  // The CLI builds its own store with the SDK's standard chain, which reads process.env.
  const sdkEnv: Record<string, string> = {
    AWS_ENDPOINT_URL_SECRETS_MANAGER: stack.emulator.url,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: REGION,
  };
  const saved = Object.fromEntries(Object.keys(sdkEnv).map((k) => [k, process.env[k]]));
  Object.assign(process.env, sdkEnv);
  try {
    for (const p of policies) await writeFile(join(dir, `${p.id}.json`), JSON.stringify(p));
    let stdout = "";
    let stderr = "";
    const code = await main(args, {
      stdout: (s) => void (stdout += s),
      stderr: (s) => void (stderr += s),
      stdin: Readable.from([Buffer.from(stdin)]),
      env: {
        ...sdkEnv,
        REDIS_URL: redisUrl(),
        REKEY_PREFIX: stack.prefix,
        REKEY_POLICY_DIR: dir,
        REKEY_FINGERPRINT_KEY: FINGERPRINT_KEY,
        [WEBHOOK_KEY_ENV]: WEBHOOK_KEY,
        USER: "owner",
        LOG_LEVEL: "warn",
        ...extraEnv,
      },
    });
    return { code, stdout, stderr };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

/** `POST /v1/rotations/:id/submit` with the admin token (or another bearer). */
export async function apiSubmit(stack: Stack, rotationId: string, value: string, bearer: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${stack.apiUrl}/v1/rotations/${rotationId}/submit`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ value }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A push confirmation of one consumer for a version. */
export async function confirmVersion(stack: Stack, policyId: string, consumerId: string, versionId: string, token: string): Promise<number> {
  const res = await fetch(`${stack.apiUrl}/v1/confirmations`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ policyId, consumerId, versionId }),
  });
  await res.text();
  return res.status;
}

/** Wait until a rotation's record has one of these statuses; returns the record's status. */
export async function statusOf(stack: Stack, rotationId: string, wanted: string[], timeoutMs = 30_000): Promise<string> {
  return until(`rotation ${rotationId} to be ${wanted.join(" or ")}`, async () => {
    const s = (await stack.rt.state.records.get(rotationId))?.status;
    return s && wanted.includes(s) ? s : undefined;
  }, timeoutMs);
}

/** A CLI io that keeps what a command printed, for in-process `main()` calls. */
export function captureIo(stdin = "", user = "oncall"): CliIo & { out: string; err: string } {
  const box = {
    out: "",
    err: "",
    stdout: (s: string) => void (box.out += s),
    stderr: (s: string) => void (box.err += s),
    stdin: Readable.from([stdin]),
    env: { USER: user } as NodeJS.ProcessEnv,
  };
  return box;
}
