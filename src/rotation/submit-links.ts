/**
 * One-time submit links: how the owner of a human step gives rekey the new value without admin
 * rights, Redis or AWS access. A link is a random 256-bit token in a URL that the owner's
 * notification carries; it is good for one rotation, until that rotation's human step times out,
 * and for one successful submission. Redis keeps only its sha256 (keys.ts, submitLink), so
 * neither a Redis dump nor a job's data holds a usable link: the token is made when the
 * notification is delivered, and exists in plain only in that delivery.
 */
import { createHash, randomBytes } from "node:crypto";
import type { RekeyState } from "./state.ts";

/** What a link stands for. */
export interface SubmitLinkTarget {
  rotationId: string;
  policyId: string;
  /** Epoch ms: the human step's deadline; the link dies with it. */
  expiresAt: number;
  /** In an offboarding: the member who takes the credential over (and makes the new one). */
  successor?: string;
}

/** base64url of 32 random bytes. */
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

/** How long one submission holds a rotation's links (the provider's check takes up to 30 s). */
const CLAIM_MS = 120_000;

export function isSubmitToken(token: string): boolean {
  return TOKEN.test(token);
}

function hashOf(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

export class SubmitLinks {
  constructor(
    private readonly state: RekeyState,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A new link for a rotation waiting for its human step, or undefined when it no longer waits
   * (submitted, timed out, cancelled): a late or retried notification carries no live link.
   * `baseUrl` is where the owner's browser reaches the API (REKEY_PUBLIC_URL).
   */
  async mint(rotationId: string, baseUrl: string): Promise<string | undefined> {
    const rec = await this.state.records.get(rotationId);
    const expiresAt = rec?.humanDeadline;
    if (!rec || rec.status !== "awaiting-human" || rec.endedAt !== undefined || !expiresAt || expiresAt <= this.now()) return undefined;
    const token = randomBytes(32).toString("base64url");
    const hash = hashOf(token);
    const target: SubmitLinkTarget = { rotationId, policyId: rec.policyId, expiresAt, ...(rec.successor ? { successor: rec.successor } : {}) };
    await this.state.redis
      .multi()
      .set(this.state.keys.submitLink(hash), JSON.stringify(target), "PXAT", expiresAt)
      .sadd(this.state.keys.submitLinks(rotationId), hash)
      .pexpireat(this.state.keys.submitLinks(rotationId), expiresAt)
      .exec();
    return `${baseUrl.replace(/\/+$/, "")}/submit/${token}`;
  }

  /**
   * What a token stands for while it is good: its rotation still waits for a value and the
   * deadline has not passed. Only reads: a wrong or dead token writes nothing.
   */
  async lookup(token: string): Promise<SubmitLinkTarget | undefined> {
    if (!isSubmitToken(token)) return undefined;
    const raw = await this.state.redis.get(this.state.keys.submitLink(hashOf(token)));
    if (!raw) return undefined;
    const target = JSON.parse(raw) as SubmitLinkTarget;
    if (target.expiresAt <= this.now()) return undefined;
    const rec = await this.state.records.get(target.rotationId);
    if (!rec || rec.status !== "awaiting-human" || rec.endedAt !== undefined) return undefined;
    return target;
  }

  /** One submission at a time per rotation: false while another one is being checked. */
  async claim(rotationId: string): Promise<boolean> {
    return (await this.state.redis.set(this.state.keys.submitClaim(rotationId), "1", "PX", CLAIM_MS, "NX")) === "OK";
  }

  async release(rotationId: string): Promise<void> {
    await this.state.redis.del(this.state.keys.submitClaim(rotationId));
  }

  /** After a successful submission: every link of the rotation stops working. */
  async revokeAll(rotationId: string): Promise<void> {
    const index = this.state.keys.submitLinks(rotationId);
    const hashes = await this.state.redis.smembers(index);
    await this.state.redis.del(index, this.state.keys.submitClaim(rotationId), ...hashes.map((h) => this.state.keys.submitLink(h)));
  }
}
