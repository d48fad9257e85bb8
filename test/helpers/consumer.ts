/**
 * What the consumer-side end-to-end tests share: child processes with their output kept, an
 * alert receiver that verifies rekey's Standard Webhooks signature with the reference
 * `standardwebhooks` library, and a load loop that counts what an app's callers see.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import type { NotificationEvent } from "../../src/notify/events.ts";
import { until } from "./stack.ts";

/** The policies' webhook signing key, in the Standard Webhooks form. */
export const HOOK_KEY = `whsec_${Buffer.from("rekey-consumer-tests-signing-key-32b").toString("base64")}`;
export const HOOK_KEY_ENV = "REKEY_HOOK_KEY";

export interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code once the process ended. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function startProcess(command: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(command, args, { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

export interface AlertReceiver {
  url: string;
  events: NotificationEvent[];
  rejected: number;
  waitFor(type: string, pred?: (e: NotificationEvent) => boolean, timeoutMs?: number): Promise<NotificationEvent>;
  close(): Promise<void>;
}

/** A notify target that accepts only webhooks the reference Standard Webhooks library verifies. */
export async function startAlertReceiver(): Promise<AlertReceiver> {
  const wh = new Webhook(HOOK_KEY);
  const state = { url: "", events: [] as NotificationEvent[], rejected: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        state.events.push(wh.verify(Buffer.concat(chunks).toString("utf8"), req.headers as Record<string, string>) as NotificationEvent);
        res.writeHead(204).end();
      } catch {
        state.rejected++;
        res.writeHead(401).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`;
  return Object.assign(state, {
    waitFor: (type: string, pred: (e: NotificationEvent) => boolean = () => true, timeoutMs = 30_000) =>
      until(`${type} alert`, () => state.events.find((e) => e.event === type && pred(e)), timeoutMs),
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
}

export interface Load {
  /** Status codes the app answered, by code. */
  statuses: Map<number, number>;
  total(): number;
  stop(): Promise<void>;
}

/** GET `url` in a loop (one request at a time, `everyMs` apart) until stopped. */
export function loadLoop(url: string, everyMs = 20): Load {
  const statuses = new Map<number, number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      let status: number;
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        await res.text();
        status = res.status;
      } catch {
        status = 0;
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    statuses,
    total: () => [...statuses.values()].reduce((a, b) => a + b, 0),
    async stop() {
      running = false;
      await loop;
    },
  };
}
