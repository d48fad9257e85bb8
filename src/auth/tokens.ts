/**
 * Named API tokens. A token is shown once, when it is created; Redis keeps only its sha256 (the
 * same `sha256:<hex>` form policy files use for consumer tokens) with its name and scopes.
 *
 * Keys: `<prefix>:auth:tokens` (hash: token hash → record JSON) and `<prefix>:auth:token-names`
 * (hash: name → token hash), changed together by one script so a name never points at nothing.
 */
import { randomBytes } from "node:crypto";
import type { Result } from "ioredis";
import type { RedisClient } from "../redis-connection.ts";
import { z } from "zod";
import { tokenHash } from "../consumers/fingerprint.ts";
import { RekeyError } from "../errors.ts";
import { RedisKeys } from "../rotation/keys.ts";
import { defineScripts } from "../util/redis-scripts.ts";
import { type Identity, SCOPES, type Scope, TOKEN_NAME } from "./identity.ts";

/** What a request to create a token got wrong; the message names the field. */
export class TokenError extends RekeyError {
  override name = "TokenError";
}

/** `rk_` and 43 base64url characters (32 random bytes). Anything else is not looked up at all. */
const TOKEN_SHAPE = /^rk_[A-Za-z0-9_-]{43}$/;

/** Whether `presented` has a named token's shape (only such a credential is looked up in Redis). */
export function looksLikeApiToken(presented: string): boolean {
  return TOKEN_SHAPE.test(presented);
}
const POLICY_ID = /^[a-z0-9][a-z0-9._-]{0,127}$/;
const CONSUMER_ID = /^[a-z0-9][a-z0-9._-]{0,127}$/;

const TokenRecord = z.object({
  name: z.string(),
  scopes: z.array(z.enum(SCOPES)).min(1),
  owner: z.string().optional(),
  policyId: z.string().optional(),
  consumerId: z.string().optional(),
  createdAt: z.number(),
  createdBy: z.string(),
});
export type TokenRecord = z.infer<typeof TokenRecord>;

export interface NewToken {
  name: string;
  scopes: Scope[];
  /** submitter: the owner whose policies the token may submit values for. */
  owner?: string;
  /** consumer: the policy and consumer the token confirms as. */
  policyId?: string;
  consumerId?: string;
}

declare module "ioredis" {
  interface RedisCommander<Context> {
    rekeyTokenCreate(names: string, tokens: string, name: string, hash: string, record: string): Result<number, Context>;
    rekeyTokenRevoke(names: string, tokens: string, name: string): Result<number, Context>;
  }
}

const SCRIPTS = {
  rekeyTokenCreate: {
    numberOfKeys: 2,
    lua: `
      if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
      redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
      return 1`,
  },
  rekeyTokenRevoke: {
    numberOfKeys: 2,
    lua: `
      local hash = redis.call('HGET', KEYS[1], ARGV[1])
      if not hash then return 0 end
      redis.call('HDEL', KEYS[1], ARGV[1])
      redis.call('HDEL', KEYS[2], hash)
      return 1`,
  },
};

/** Checks a token request; throws TokenError naming what is wrong. */
export function checkNewToken(t: NewToken): void {
  if (!TOKEN_NAME.test(t.name)) throw new TokenError(`token name "${t.name.slice(0, 80)}": expected 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit`);
  if (!t.scopes.length) throw new TokenError(`token ${t.name}: give at least one scope (${SCOPES.join(", ")})`);
  for (const s of t.scopes) if (!SCOPES.includes(s)) throw new TokenError(`token ${t.name}: unknown scope "${String(s).slice(0, 40)}" (expected one of ${SCOPES.join(", ")})`);
  const narrow = t.scopes.filter((s) => s === "submitter" || s === "consumer");
  if (narrow.length && t.scopes.length > 1) throw new TokenError(`token ${t.name}: a ${narrow[0]} token has that one scope only (create a second token for the others)`);
  if (t.scopes.includes("submitter") && !(t.owner && /^[^@\s]+@[^@\s]+$/.test(t.owner))) throw new TokenError(`token ${t.name}: a submitter token needs --owner <email> (the owner whose policies it may submit for)`);
  if (t.scopes.includes("consumer")) {
    if (!t.policyId || !POLICY_ID.test(t.policyId)) throw new TokenError(`token ${t.name}: a consumer token needs --policy <policy id>`);
    if (!t.consumerId || !CONSUMER_ID.test(t.consumerId)) throw new TokenError(`token ${t.name}: a consumer token needs --consumer <consumer id>`);
  }
  if (!t.scopes.includes("submitter") && t.owner) throw new TokenError(`token ${t.name}: --owner applies to submitter tokens only`);
  if (!t.scopes.includes("consumer") && (t.policyId || t.consumerId)) throw new TokenError(`token ${t.name}: --policy and --consumer apply to consumer tokens only`);
}

export class ApiTokens {
  private readonly names: string;
  private readonly tokens: string;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly now: () => number = Date.now,
  ) {
    const keys = new RedisKeys(prefix);
    this.names = keys.apiTokenNames();
    this.tokens = keys.apiTokens();
    defineScripts(redis, SCRIPTS);
  }

  /** Creates a token; returns the token itself (shown once) and its record. */
  async create(t: NewToken, createdBy: string): Promise<{ token: string; record: TokenRecord }> {
    checkNewToken(t);
    const token = `rk_${randomBytes(32).toString("base64url")}`;
    const record: TokenRecord = { name: t.name, scopes: t.scopes, owner: t.owner, policyId: t.policyId, consumerId: t.consumerId, createdAt: this.now(), createdBy };
    const added = await this.redis.rekeyTokenCreate(this.names, this.tokens, t.name, tokenHash(token), JSON.stringify(record));
    if (added !== 1) throw new TokenError(`a token named ${t.name} exists already (revoke it first, or choose another name)`);
    return { token, record };
  }

  async list(): Promise<TokenRecord[]> {
    const all = await this.redis.hvals(this.tokens);
    return all.flatMap((v) => {
      const r = TokenRecord.safeParse(safeJson(v));
      return r.success ? [r.data] : [];
    }).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** True when a token of that name existed and is now revoked. */
  async revoke(name: string): Promise<boolean> {
    return (await this.redis.rekeyTokenRevoke(this.names, this.tokens, name)) === 1;
  }

  /**
   * The identity a presented token stands for, or undefined. A string not shaped like a rekey
   * token is refused without asking Redis.
   */
  async identify(presented: string): Promise<Identity | undefined> {
    if (!TOKEN_SHAPE.test(presented)) return undefined;
    const raw = await this.redis.hget(this.tokens, tokenHash(presented));
    if (!raw) return undefined;
    const r = TokenRecord.safeParse(safeJson(raw));
    if (!r.success) return undefined;
    const rec = r.data;
    return {
      name: rec.name,
      via: "token",
      scopes: rec.scopes,
      owner: rec.owner,
      consumer: rec.policyId && rec.consumerId ? { policyId: rec.policyId, consumerId: rec.consumerId } : undefined,
    };
  }
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
