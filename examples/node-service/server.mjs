// A Node service that calls LaunchDarkly's API with a token rekey rotates, through the consumer
// library. The library reads the token from AWS Secrets Manager, reloads it when rekey's webhook
// says so (or on its poll, or when a call answers 401), and confirms the new version to rekey
// once the change handler below resolved: only then does rekey delete the old token.
//
//   REKEY_URL=https://rekey.internal:8080 REKEY_CONSUMER_TOKEN=… REKEY_FINGERPRINT_KEY=… \
//   REKEY_WEBHOOK_KEY=whsec_… AWS_REGION=eu-central-1 node server.mjs
import { createServer } from "node:http";
import { createSecretSource } from "rekey/consumer";

const token = createSecretSource({
  secretId: "prod/checkout/launchdarkly",
  confirm: {
    url: process.env.REKEY_URL,
    token: process.env.REKEY_CONSUMER_TOKEN,
    policyId: "ld-api-token",
    consumerId: "checkout-api",
    fingerprintKey: process.env.REKEY_FINGERPRINT_KEY,
  },
  webhook: { signingKey: process.env.REKEY_WEBHOOK_KEY },
  onError: (err) => process.stderr.write(`rekey: ${err.message}\n`),
});

// Anything built from the token is rebuilt here; the confirmation waits until this resolves.
token.onChange(async (next) => {
  process.stdout.write(`now using version ${next.versionId} of the LaunchDarkly token\n`);
});

async function launchDarkly(path) {
  let res = await fetch(`https://app.launchdarkly.com${path}`, { headers: { authorization: await token.get() } });
  if (res.status === 401) {
    // Our copy may be stale (a leak rotation revokes at once): read the store again, retry once.
    const fresh = await token.invalidate();
    res = await fetch(`https://app.launchdarkly.com${path}`, { headers: { authorization: fresh.value } });
  }
  return res;
}

const onWebhook = token.webhookHandler();
createServer(async (req, res) => {
  // The policy's notify list has { kind: webhook, url: https://checkout.internal/rekey/webhook, signingKey }.
  if (req.url === "/rekey/webhook") return onWebhook(req, res);
  if (req.url === "/flags") {
    const upstream = await launchDarkly("/api/v2/flags/default");
    res.writeHead(upstream.ok ? 200 : 502, { "content-type": "application/json" }).end(await upstream.text());
    return;
  }
  res.writeHead(404).end();
}).listen(8080, async () => {
  await token.get(); // fail fast when the secret cannot be read
  process.stdout.write("listening on :8080\n");
});

process.on("SIGTERM", async () => {
  await token.close();
  process.exit(0);
});
