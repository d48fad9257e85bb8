/**
 * Standalone AWS Secrets Manager emulator: `npm run fake:aws` (PORT, default 4566). State lives in
 * memory and is gone when the process stops.
 */
import { startAwsEmulator } from "./emulator.ts";

const port = Number(process.env.PORT ?? 4566);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT must be a TCP port number, got ${process.env.PORT ?? ""}`);
  process.exit(2);
}
const region = process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
// Write quota per second (default 50); "Infinity" turns it off for load experiments.
const writes = process.env.AWS_EMULATOR_WRITES_PER_SECOND;

const emulator = await startAwsEmulator({ port, writesPerSecond: writes === undefined ? undefined : Number(writes) });
console.log(`AWS Secrets Manager emulator listening on ${emulator.url}`);
console.log("Point the AWS SDK / CLI at it with:");
console.log(`  export AWS_ENDPOINT_URL_SECRETS_MANAGER=${emulator.url} AWS_REGION=${region} AWS_DEFAULT_REGION=${region} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test`);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void emulator.close().then(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
