/**
 * Child process holding the zero-latency fakes the rotation benchmarks run against: LaunchDarkly
 * accounts (test/fakes/launchdarkly.ts) and the AWS Secrets Manager emulator without its write
 * quota. They live in their own process so that the rekey process's RSS and CPU are rekey's
 * alone, as they would be against the real services.
 *
 * Driven over the IPC channel (see FakesClient in lib/rig.ts):
 *   setup  -> start `accounts` LaunchDarkly fakes, each with an admin token and `perAccount`
 *             managed tokens; start the emulator
 *   drain  -> the token deletions seen since the last drain (id, epoch ms) and request counts by
 *             route; the request logs are emptied so the fakes do not grow across a long run
 *   stop   -> close everything and exit
 */
import { type AwsEmulator, startAwsEmulator } from "../test/fakes/aws/emulator.ts";
import { type LaunchDarklyFake, startLaunchDarklyFake } from "../test/fakes/launchdarkly.ts";
import { serveIpc } from "./lib/child.ts";

export type FakesRequest =
  | { id: number; type: "setup"; accounts: number; perAccount: number }
  | { id: number; type: "drain" }
  | { id: number; type: "stop" };

export interface FakesSetup {
  awsUrl: string;
  accounts: { url: string; admin: string }[];
  /** Managed token of policy i: tokens[i]. */
  tokens: { account: number; id: string; value: string }[];
}

export interface FakesDrain {
  deletes: { id: string; at: number }[];
  /** Requests by route (`GET /api/v2/tokens/{id}`, `POST PutSecretValue`, …). */
  routes: Record<string, number>;
  ldRequests: number;
  awsRequests: number;
}

const lds: LaunchDarklyFake[] = [];
let aws: AwsEmulator | undefined;

function ldRoute(method: string, path: string): string {
  return `${method} ${path.replace(/\/tokens\/[0-9a-f]{24}/, "/tokens/{id}").replace(/\/members\/[0-9a-f]{24}/, "/members/{id}")}`;
}

async function handle(req: FakesRequest): Promise<unknown> {
  switch (req.type) {
    case "setup": {
      aws = await startAwsEmulator({ writesPerSecond: Infinity });
      const out: FakesSetup = { awsUrl: aws.url, accounts: [], tokens: [] };
      for (let a = 0; a < req.accounts; a++) {
        // Room for every managed token twice over (old and new live at once) plus the admin.
        const ld = await startLaunchDarklyFake({ tokenLimit: 4 * req.perAccount + 10 });
        lds.push(ld);
        const admin = ld.addToken({ role: "admin", name: "rekey management" });
        out.accounts.push({ url: ld.url, admin: admin.value });
        for (let k = 0; k < req.perAccount; k++) {
          const t = ld.addToken({ name: `service-${a}-${k}`, customRoleIds: ["bench"] });
          out.tokens.push({ account: a, id: t.id, value: t.value });
        }
      }
      return out;
    }
    case "drain": {
      const out: FakesDrain = { deletes: [], routes: {}, ldRequests: 0, awsRequests: 0 };
      for (const ld of lds) {
        for (const r of ld.requests) {
          const route = ldRoute(r.method, r.path);
          out.routes[route] = (out.routes[route] ?? 0) + 1;
          if (r.method === "DELETE" && r.status === 204) out.deletes.push({ id: r.path.slice(r.path.lastIndexOf("/") + 1), at: r.at });
        }
        out.ldRequests += ld.requests.length;
        ld.requests.length = 0;
        ld.apiVersions.length = 0;
      }
      if (aws) {
        for (const r of aws.requests) {
          const route = r.route ?? `${r.method} ${r.path}`;
          out.routes[route] = (out.routes[route] ?? 0) + 1;
        }
        out.awsRequests = aws.requests.length;
        aws.requests.length = 0;
        aws.calls.length = 0;
      }
      return out;
    }
    case "stop": {
      await Promise.allSettled([...lds.map((l) => l.close()), aws?.close()]);
      return { stopped: true };
    }
  }
}

serveIpc(handle);
