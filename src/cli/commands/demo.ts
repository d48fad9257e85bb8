/**
 * `rekey demo` (`npm run demo`): the whole rotation flow on this machine in one command —
 * Redis (REDIS_URL, else a private redis-server), the AWS Secrets Manager emulator, the
 * LaunchDarkly fake, a rotation worker, the API, and a consumer that reloads the secret when
 * told and confirms with a fingerprint. Every step is printed as it happens.
 *
 * The emulator and the fake live in test/fakes/, so the demo runs from a checkout of the
 * repository (it is a developer's tool, not part of an installed rekey).
 */
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import type { Command } from "commander";
import { fingerprint, tokenHash } from "../../consumers/fingerprint.ts";
import { createLogger } from "../../log.ts";
import { Policy } from "../../policy/schema.ts";
import { startApiServer, startRotationWorker } from "../../processes.ts";
import { scanKeys } from "../../redis-connection.ts";
import { createRuntime } from "../../runtime.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc } from "../../util/terminal.ts";

export function register(program: Command, io: CliIo): void {
  program
    .command("demo")
    .description("run a LaunchDarkly token rotation end to end on this machine (emulators and fakes), printing each step")
    .option("--timeout <seconds>", "give up after this long", "60")
    .action(async (opts: { timeout: string }) => {
      const code = await runDemo(io, Number(opts.timeout) * 1_000);
      if (code !== EXIT.ok) throw new CliExit(code);
    });
}

async function runDemo(io: CliIo, timeoutMs: number): Promise<number> {
  const say = (s: string) => io.stdout(`${s}\n`);
  const cleanups: (() => Promise<unknown>)[] = [];
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  const log = createLogger({ level: "silent", destination: quiet });
  try {
    // Fakes are loaded at run time: they are test code, present in a checkout only (the build
    // compiles them into dist/test/; the package does not ship that folder).
    if (!existsSync(new URL("../../../test/fakes/", import.meta.url))) {
      io.stderr("rekey demo runs from a checkout of the rekey repository (npm ci && npm run demo): its AWS emulator and provider fakes are not part of an installed rekey\n");
      return EXIT.failure;
    }
    const { startRedisServer } = await import("../../../test/helpers/redis-server.ts");
    const { startAwsEmulator } = await import("../../../test/fakes/aws/emulator.ts");
    const { startLaunchDarklyFake } = await import("../../../test/fakes/launchdarkly.ts");
    const { AwsSecretsManagerStore } = await import("../../stores/aws-secrets-manager.ts");
    const { SecretsManagerClient } = await import("@aws-sdk/client-secrets-manager");

    let redisUrl = io.env.REDIS_URL;
    if (!redisUrl) {
      const redis = await startRedisServer();
      cleanups.push(() => redis.stop());
      redisUrl = redis.url;
    }
    say(`redis            ${redisUrl}`);
    const emulator = await startAwsEmulator();
    cleanups.push(() => emulator.close());
    say(`secrets manager  ${emulator.url} (emulator)`);
    const ld = await startLaunchDarklyFake();
    cleanups.push(() => ld.close());
    say(`launchdarkly     ${ld.url} (fake)`);

    const admin = ld.addToken({ role: "admin", name: "rekey management" });
    const managed = ld.addToken({ role: "writer", name: "checkout-service" });
    const region = "us-east-1";
    const store = new AwsSecretsManagerStore({
      region,
      clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: emulator.url, credentials: { accessKeyId: "demo", secretAccessKey: "demo" } }),
    });
    const secret = { secretId: "demo/checkout/launchdarkly-token", region };
    const first = await store.create!(secret, managed.value);
    say(`\nsecret ${secret.secretId} holds token ${managed.id} (version ${first.versionId})`);

    // The consumer: told by webhook, it reloads the secret and confirms with a fingerprint.
    const fpKey = "demo-fingerprint-key-0123456789abcdef0123";
    const consumerToken = "demo-consumer-token";
    let apiUrl = "";
    let loaded: { versionId: string; value: string } | undefined = await store.getCurrent(secret);
    // One printer, in the order things happened: a consumer's line first prints the audit
    // entries written before it (the audit is otherwise read every 100 ms, so a consumer's
    // reaction could print ahead of the steps that caused it).
    let auditLines = async (): Promise<void> => undefined;
    let printing = Promise.resolve();
    const printed = (line?: string): Promise<void> =>
      (printing = printing
        .then(async () => {
          await auditLines();
          if (line !== undefined) say(line);
        })
        .catch(() => undefined));
    const consumer = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        res.writeHead(204).end();
        const event = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as { event?: string; versionId?: string };
        if (event.event !== "rotation.awaiting-confirmation") return;
        void (async () => {
          loaded = await store.getCurrent(secret);
          await printed(`consumer         reloaded the secret: now on version ${loaded?.versionId}; confirming with a fingerprint`);
          const r = await fetch(`${apiUrl}/v1/confirmations`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${consumerToken}` },
            body: JSON.stringify({ policyId: "demo-checkout-ld", consumerId: "checkout", fingerprint: fingerprint(fpKey, loaded!.value) }),
          });
          await printed(`consumer         confirmation answered ${r.status}`);
        })();
      });
    });
    await new Promise<void>((r) => consumer.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => new Promise((r) => consumer.close(() => r(undefined))));
    const consumerUrl = `http://127.0.0.1:${(consumer.address() as AddressInfo).port}/rekey-events`;

    const prefix = `rekey-demo-${Date.now()}`;
    const rt = await createRuntime({
      redisUrl,
      prefix,
      policyPaths: [],
      log,
      fingerprintKey: fpKey,
      region,
      env: { LD_ADMIN_TOKEN: admin.value, DEMO_WEBHOOK_KEY: "demo-webhook-signing-key" },
      store,
    });
    cleanups.push(async () => {
      for (const k of await scanKeys(rt.redis, `${prefix}*`)) await rt.redis.del(k);
      await rt.close();
    });
    const policy = Policy.parse({
      id: "demo-checkout-ld",
      description: "The checkout service's LaunchDarkly API token",
      owner: "alice@example.com",
      provider: { kind: "launchdarkly", baseUrl: ld.url, management: { env: "LD_ADMIN_TOKEN" } },
      schedule: { cron: "0 3 * * 1", timezone: "Europe/Berlin" },
      target: secret,
      consumers: [{ id: "checkout", confirm: "push", tokenHash: tokenHash(consumerToken) }],
      confirmation: { timeout: "1h", onTimeout: "keep-old" },
      notify: [{ kind: "webhook", url: consumerUrl, signingKey: { env: "DEMO_WEBHOOK_KEY" } }],
    });
    rt.policies.replace([{ policy, file: "(demo)" }]);
    const worker = startRotationWorker(rt, { concurrency: 2, log });
    cleanups.push(() => worker.stop());
    const api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log });
    cleanups.push(() => api.stop());
    apiUrl = api.url;
    say(`rekey api        ${apiUrl}\n`);

    const req = await rt.rotations.enqueue({ policyId: policy.id, reason: "manual", actor: "demo" });
    say(`rotation ${req.rotationId} of ${policy.id} queued\n`);
    const seen = new Set<string>();
    auditLines = async () => {
      const rows = (await rt.audit.history({ policyId: policy.id, limit: 100 })).reverse();
      for (const r of rows) {
        if (seen.has(r.id)) continue;
        seen.add(r.id);
        say(`audit            ${esc(r.step).padEnd(22)} ${esc(r.outcome).padEnd(8)} ${esc(r.message)}`);
      }
    };
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await printed();
      const rec = await rt.state.records.get(req.rotationId);
      if (rec && ["completed", "failed", "needs-attention"].includes(rec.status)) {
        // The entries the rotation's last step wrote with its end, read after the record.
        await printed();
        say(`\nrotation ${rec.status}`);
        const cur = await store.getCurrent(secret);
        say(`AWSCURRENT       version ${cur?.versionId}, works at LaunchDarkly: ${cur ? ld.isLive(cur.value) : false}`);
        say(`old token        ${managed.id} live: ${ld.isLive(managed.value)}`);
        return rec.status === "completed" && cur && ld.isLive(cur.value) && !ld.isLive(managed.value) ? EXIT.ok : EXIT.failure;
      }
      if (Date.now() > deadline) {
        say(`\ntimed out waiting for the rotation (status: ${rec?.status ?? "unknown"})`);
        return EXIT.failure;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }
}
