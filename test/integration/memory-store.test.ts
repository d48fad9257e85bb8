/**
 * The in-memory secret store the step-table unit tests run on (test/fakes/memory-world.ts) keeps
 * version stages and request tokens as AwsSecretsManagerStore does against the AWS emulator over
 * HTTP: one history of writes and label moves gives the same answers on both.
 */
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { afterAll, describe, expect, it } from "vitest";
import { AwsSecretsManagerStore } from "../../src/stores/aws-secrets-manager.ts";
import type { SecretRef, SecretStore } from "../../src/stores/types.ts";
import { type AwsEmulator, startAwsEmulator } from "../fakes/aws/emulator.ts";
import { MemoryStore, World } from "../fakes/memory-world.ts";

const REGION = "us-east-1";
const ref: SecretRef = { secretId: "prod/memory-store", region: REGION };
const [T1, T2, T3] = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"];

/** One history of store calls; answers with version ids named (the first version's id differs). */
async function history(store: SecretStore, first: string): Promise<unknown[]> {
  const name = (id: string | undefined) => (id === first ? "first" : id);
  const stages = async () => Object.fromEntries(Object.entries(await store.stages(ref)).map(([id, s]) => [name(id), [...s].sort()]));
  const out: unknown[] = [];
  const log = (label: string, v: unknown) => out.push([label, v]);
  const error = (p: Promise<unknown>) => p.then(() => "no error", (e: Error) => e.name);
  log("pending written", await store.putPending(ref, T1, "new-1"));
  log("stages", await stages());
  log("the same token and value again", await store.putPending(ref, T1, "new-1"));
  log("the same token, another value", await error(store.putPending(ref, T1, "other")));
  log("version read by id", await store.getVersion(ref, T1));
  log("promoted", name((await store.promote(ref, T1)).previousVersionId));
  log("stages", await stages());
  log("promoted again", name((await store.promote(ref, T1)).previousVersionId));
  log("current", await store.getCurrent(ref));
  await store.putPending(ref, T2, "new-2");
  await store.discardPending(ref, T2);
  await store.discardPending(ref, T2);
  log("stages after a discard", await stages());
  log("written straight to AWSCURRENT", await store.putCurrent!(ref, T3, "new-3"));
  log("stages", await stages());
  log("the same write again", await store.putCurrent!(ref, T3, "new-3"));
  log("a token whose version exists without AWSCURRENT", await store.putCurrent!(ref, T2, "new-2"));
  log("stages", await stages());
  log("an unknown version", await store.getVersion(ref, "44444444-4444-4444-8444-444444444444"));
  return out;
}

describe("the in-memory secret store of the unit tests", () => {
  let emu: AwsEmulator | undefined;
  let client: SecretsManagerClient | undefined;
  afterAll(async () => {
    client?.destroy();
    await emu?.close();
  });

  it("answers as AwsSecretsManagerStore on the AWS emulator does", async () => {
    emu = await startAwsEmulator({ writesPerSecond: Infinity });
    const url = emu.url;
    const aws = new AwsSecretsManagerStore({
      region: REGION,
      clientFor: (region) => (client = new SecretsManagerClient({ endpoint: url, region, credentials: { accessKeyId: "test", secretAccessKey: "test" }, maxAttempts: 1 })),
    });
    const { versionId } = await aws.create!(ref, "original");
    const onAws = await history(aws, versionId);

    const memory = new MemoryStore(new World());
    memory.seed(ref, "first-version", "original");
    const inMemory = await history(memory, "first-version");
    expect(inMemory).toEqual(onAws);
  });
});
