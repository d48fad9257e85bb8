/**
 * Child process: `rekey api` for the attack run (bench/attack.ts), alone in its own process as it
 * is deployed (docker-compose.yml, deploy/kubernetes: the API is a service of its own, the workers
 * others). Its own runtime on the run's Redis and prefix, the run's policies (sent again whenever
 * the run adds one), and a ProcessMeter of this process for each side of the run.
 *
 * Driven over the IPC channel (the protocol of FakesClient in lib/rig.ts):
 *   setup    -> runtime and API; answers the API's URL
 *   policies -> the policies to load (Policy inputs, parsed here)
 *   side     -> what follows is measured as "attack" or "quiet" (or, without a side, neither)
 *   report   -> the meter's figures, and how many "api request refused" lines the API logged
 *   stop     -> stop the API (it writes its pending refusal summary first), report, and exit
 */
import { Writable } from "node:stream";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { createLogger } from "../src/log.ts";
import { Policy } from "../src/policy/schema.ts";
import { startApiServer } from "../src/processes.ts";
import { createRuntime, type Runtime } from "../src/runtime.ts";
import { AwsSecretsManagerStore } from "../src/stores/aws-secrets-manager.ts";
import { refusalLogLines } from "./lib/attack-protocol.ts";
import { serveIpc } from "./lib/child.ts";
import { type MeterReport, ProcessMeter, type Side } from "./lib/process-meter.ts";

export interface ApiSetup {
  redisUrl: string;
  prefix: string;
  fingerprintKey: string;
  region: string;
  awsUrl: string;
  adminTokenHash: string;
}

export type ApiRequest =
  | ({ id: number; type: "setup" } & ApiSetup)
  | { id: number; type: "policies"; policies: { input: unknown; file: string }[] }
  | { id: number; type: "side"; side?: Side }
  | { id: number; type: "report" }
  | { id: number; type: "stop" };

export interface ApiReport extends MeterReport {
  refusalLogLines: number;
}

let rt: Runtime | undefined;
let api: Awaited<ReturnType<typeof startApiServer>> | undefined;
const meter = new ProcessMeter();
const logLines: string[] = [];
const report = (): ApiReport => ({ ...meter.report(), refusalLogLines: refusalLogLines(logLines) });

serveIpc<ApiRequest>(async (msg) => {
  switch (msg.type) {
    case "setup": {
      const log = createLogger({ level: "warn", destination: new Writable({ write: (c: Buffer, _e, cb) => (logLines.push(c.toString("utf8")), cb()) }) });
      const store = new AwsSecretsManagerStore({ region: msg.region, clientFor: (r) => new SecretsManagerClient({ region: r, endpoint: msg.awsUrl, credentials: { accessKeyId: "a", secretAccessKey: "a" }, maxAttempts: 3 }) });
      rt = await createRuntime({ redisUrl: msg.redisUrl, prefix: msg.prefix, policyPaths: [], log, fingerprintKey: msg.fingerprintKey, region: msg.region, env: {}, store });
      api = await startApiServer(rt, { host: "127.0.0.1", port: 0, log, adminTokenHash: msg.adminTokenHash });
      return api.url;
    }
    case "policies":
      if (!rt) throw new Error("policies before setup");
      rt.policies.replace(msg.policies.map((p) => ({ policy: Policy.parse(p.input), file: p.file })));
      return null;
    case "side":
      if (msg.side) meter.enter(msg.side);
      else meter.leave();
      return null;
    case "report":
      return report();
    case "stop":
      // Stopping the API writes its pending refusal summary (and may log): report after it.
      meter.stop();
      await api?.stop();
      await rt?.close();
      return report();
  }
});
