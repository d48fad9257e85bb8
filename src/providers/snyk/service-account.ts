/**
 * Snyk service account with an OAuth client secret (`snyk-service-account`): an overlap provider.
 *
 * - issue: `secrets` mode `create` adds a second client secret; the old one keeps working.
 * - verify: exchange client id + new secret at `/oauth2/token`, then `GET /rest/self` with the
 *   access token.
 * - revoke: mode `delete` names the old secret by its value; an unknown secret is already gone.
 * - replaceAll (leak): mode `replace` drops every secret and makes one.
 *
 * The crash case. Snyk shows a secret only in the answer that created it and has no way to list
 * or name secrets but by value. If a worker dies after `create` and before the store write (or
 * the create's answer is lost), the new value is lost, the account holds two live secrets, a third
 * `create` is refused, and rekey cannot delete the lost one. Nothing here may fix that by killing
 * the working old secret (that is an outage the operator did not ask for), so `issue` turns the
 * refusal into an AttentionError that names the situation and its remedy: a leak rotation for the
 * policy, which uses `replace`. The rotation ends needs-attention before promotion and the old
 * secret stays current and working (I6).
 *
 * Snyk documents neither the status of a refused third create nor that of a delete of an unknown
 * secret (the endpoint lists 400, 401, 403, 404, 500). So no status decides anything: after any
 * refusal (isSecretsRefusal) the adapter asks the token endpoint whether the secret in question
 * still exists (401 `invalid_client` = gone) and decides from that.
 */
import { z } from "zod";
import { AttentionError, PermanentError, VerificationError } from "../../errors.ts";
import { capabilitiesOf } from "../../policy/capabilities.ts";
import { describeCall, HttpStatusError } from "../http.ts";
import { type CredentialHandle, type IssuedCredential, type Provider, type ProviderContext } from "../types.ts";
import { type ProviderConfigOf } from "../../policy/schema.ts";
import { isSecretsRefusal, snykClient, withAdvice, type SnykAuth, type SnykClient, type SnykDeps } from "./client.ts";

type Kind = "snyk-service-account";
type Config = ProviderConfigOf<Kind>;
type Ctx = ProviderContext<Kind>;

/** `GET …/service_accounts/{id}`. */
const ServiceAccountResponse = z.object({
  data: z.object({
    id: z.string().min(1),
    attributes: z.object({ name: z.string().nullish(), auth_type: z.string().min(1), client_id: z.string().nullish() }),
  }),
});

/** The answer of modes `create` and `replace`: the one time the new secret is shown. */
const SecretResponse = z.object({
  data: z.object({ attributes: z.object({ client_secret: z.string().min(1) }) }),
});

type SecretsMode = "create" | "delete" | "replace";

export function createSnykServiceAccountProvider(deps: SnykDeps = {}): Provider<Kind> {
  const scopePath = (c: Config): string =>
    c.orgId ? `/orgs/${encodeURIComponent(c.orgId)}` : `/groups/${encodeURIComponent(c.groupId ?? "")}`;
  const accountPath = (c: Config): string => `${scopePath(c)}/service_accounts/${encodeURIComponent(c.serviceAccountId)}`;
  const where = (c: Config): string => (c.orgId ? `org ${c.orgId}` : `group ${c.groupId ?? ""}`);
  const advice = (c: Config): string =>
    `the management credential (provider.management) was refused: it must be a live Snyk API token with permission to manage service accounts of ${where(c)}`;

  async function management(ctx: Ctx): Promise<{ client: SnykClient; auth: SnykAuth }> {
    return { client: snykClient(ctx.config, ctx, deps), auth: { scheme: "token", value: await ctx.resolve(ctx.config.management) } };
  }

  /** Reads the account first (outside truth): it must exist in this scope and use a client secret. */
  // Accounts a rotation checked moments ago (identify at start, then issue or replaceAll in the
  // same run): read once per rotation and minute, not once per call — the management key's
  // requests are what a mass rotation runs out of first.
  const checked = new Map<string, number>();
  async function checkAccountOnce(ctx: Ctx, client: SnykClient, auth: SnykAuth): Promise<void> {
    const key = `${ctx.rotationId}|${accountPath(ctx.config)}|${ctx.config.clientId}`;
    const at = checked.get(key);
    if (at !== undefined && ctx.now() - at < 60_000) return;
    await checkAccount(ctx, client, auth);
    if (checked.size >= 10_000) checked.clear();
    checked.set(key, ctx.now());
  }

  async function checkAccount(ctx: Ctx, client: SnykClient, auth: SnykAuth): Promise<void> {
    const c = ctx.config;
    let account: z.infer<typeof ServiceAccountResponse>;
    try {
      account = await client.rest("GET", accountPath(c), auth, ServiceAccountResponse);
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 404) {
        throw new PermanentError(`${err.message}: service account ${c.serviceAccountId} does not exist in ${where(c)}; check provider.serviceAccountId and provider.orgId/groupId`, { cause: err });
      }
      throw withAdvice(err, advice(c));
    }
    const a = account.data.attributes;
    if (a.auth_type !== "oauth_client_secret") {
      throw new PermanentError(
        `snyk service account ${c.serviceAccountId} in ${where(c)} uses auth_type ${a.auth_type}; rekey rotates only oauth_client_secret service accounts (create one with that auth type)`,
      );
    }
    if (a.client_id && a.client_id !== c.clientId) {
      throw new PermanentError(`snyk service account ${c.serviceAccountId} has client id ${a.client_id}, not ${c.clientId}; fix provider.clientId`);
    }
  }

  /** `POST …/secrets` in one mode; `secret` names the one to delete. */
  async function secrets(ctx: Ctx, client: SnykClient, auth: SnykAuth, mode: SecretsMode, secret?: string) {
    const attributes: Record<string, string> = { mode };
    if (secret !== undefined) attributes.secret = secret;
    return client.restRaw("POST", `${accountPath(ctx.config)}/secrets`, auth, { data: { type: "service_account", attributes } });
  }

  /** The new secret out of a create/replace answer. A 2xx without it means a secret may exist whose value rekey never saw. */
  function newSecret(ctx: Ctx, client: SnykClient, mode: SecretsMode, body: unknown): string {
    const parsed = SecretResponse.safeParse(body);
    if (parsed.success) return parsed.data.data.attributes.client_secret;
    const first = parsed.error.issues[0];
    const at = first?.path.length ? first.path.join(".") : "(body)";
    throw new AttentionError(
      `snyk ${describeCall("POST", client.restUrl(`${accountPath(ctx.config)}/secrets`))} (mode ${mode}): unexpected answer: ${at}: ${first?.message ?? "invalid"}. ` +
        `Snyk accepted the call, so a client secret may exist whose value rekey never received; ` +
        (mode === "replace" ? "run the leak rotation again: replace drops every secret once more." : remedy(ctx)),
    );
  }

  function remedy(ctx: Ctx): string {
    return (
      `the current secret keeps working. To recover, run a leak rotation for this policy (\`rekey leak --policy ${ctx.policyId}\`): ` +
      `Snyk's replace mode drops every client secret of service account ${ctx.config.serviceAccountId} and stores one new one ` +
      `(consumers fail until they load it). If an earlier rotation of this policy is still waiting to delete its old secret, finish that rotation instead.`
    );
  }

  return {
    kind: "snyk-service-account",
    capabilities: (config) => capabilitiesOf(config),

    // Client secrets have no ids at Snyk: a secret is named by its value. The handle carries only
    // which account it belongs to, after checking the account is one rekey can rotate.
    async identify(ctx) {
      const { client, auth } = await management(ctx);
      await checkAccountOnce(ctx, client, auth);
      return { meta: { serviceAccountId: ctx.config.serviceAccountId } };
    },

    // Nothing can be cleaned up: secrets cannot be listed, and one whose value was lost cannot be
    // named for deletion. The orphan shows itself as the refused `create` in issue(), which
    // explains the remedy instead of deleting anything here.
    async cleanupOrphans() {
      return [];
    },

    async issue(ctx, old): Promise<IssuedCredential> {
      const { client, auth } = await management(ctx);
      await checkAccountOnce(ctx, client, auth);
      let res;
      try {
        res = await secrets(ctx, client, auth, "create");
      } catch (err) {
        if (!isSecretsRefusal(err)) throw withAdvice(err, advice(ctx.config));
        // Refused, with a status that tells nothing: read what can be read (the current secret).
        const current = old?.value ? await client.secretIsLive(ctx.config.clientId, old.value) : undefined;
        if (current === false) {
          throw new AttentionError(
            `${err.message}. Snyk refused a new client secret for service account ${ctx.config.serviceAccountId}, and the current secret in the store no longer authenticates (checked at /oauth2/token): ` +
              `consumers of this policy are failing. Run a leak rotation for this policy (\`rekey leak --policy ${ctx.policyId}\`): Snyk's replace mode drops every client secret and stores one new one.`,
            { cause: err },
          );
        }
        throw new AttentionError(
          `${err.message}. Snyk refused a new client secret for service account ${ctx.config.serviceAccountId}${current ? " while the current one still works (checked at /oauth2/token)" : ""}: ` +
            `most likely it already holds two, one created by an earlier attempt whose value never reached the secret store (a crash or a lost answer), ` +
            `and rekey cannot delete a secret it does not know. ${remedy(ctx)}`,
          { cause: err },
        );
      }
      return { value: newSecret(ctx, client, "create", res.body), meta: { serviceAccountId: ctx.config.serviceAccountId } };
    },

    async isLive(ctx, value) {
      return snykClient(ctx.config, ctx, deps).secretIsLive(ctx.config.clientId, value);
    },

    async verify(ctx, value, _expected: CredentialHandle) {
      const client = snykClient(ctx.config, ctx, deps);
      const accessToken = await client.exchange(ctx.config.clientId, value);
      let self;
      try {
        self = await client.self({ scheme: "bearer", value: accessToken });
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 401) {
          throw new VerificationError(`${err.message}: the access token issued for the new secret was refused`, { cause: err });
        }
        throw err;
      }
      if (self.type === "service_account" && self.id !== ctx.config.serviceAccountId) {
        throw new VerificationError(
          `snyk GET /rest/self: the new secret authenticates service account ${self.id}, not ${ctx.config.serviceAccountId}; check provider.clientId`,
        );
      }
    },

    async revoke(ctx, old) {
      const { client, auth } = await management(ctx);
      try {
        await secrets(ctx, client, auth, "delete", old.value);
      } catch (err) {
        if (!isSecretsRefusal(err)) throw withAdvice(err, advice(ctx.config));
        // Refused, with a status that tells nothing. Gone (401 invalid_client at the token
        // endpoint): an earlier run of this step whose answer was lost, or a leak's replace,
        // already removed it. The account itself vanishing must not pass for success: read it.
        if (!(await client.secretIsLive(ctx.config.clientId, old.value))) {
          await checkAccount(ctx, client, auth);
          return;
        }
        throw new PermanentError(
          `${err.message}: Snyk refused to delete the old client secret of service account ${ctx.config.serviceAccountId}, and it still authenticates (checked at /oauth2/token); ` +
            `it may be the only secret left: check that the new secret is live before retrying`,
          { cause: err },
        );
      }
    },

    async replaceAll(ctx): Promise<IssuedCredential> {
      const { client, auth } = await management(ctx);
      await checkAccountOnce(ctx, client, auth);
      let res;
      try {
        res = await secrets(ctx, client, auth, "replace");
      } catch (err) {
        throw withAdvice(err, advice(ctx.config));
      }
      return { value: newSecret(ctx, client, "replace", res.body), meta: { serviceAccountId: ctx.config.serviceAccountId } };
    },
  };
}

export const snykServiceAccountProvider = createSnykServiceAccountProvider();
