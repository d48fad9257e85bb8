/**
 * Who is calling the API, and what they may do. Every route names the scope it needs; the guard
 * (./guard.ts) turns a bearer token or JWT into an Identity and checks it.
 */

/**
 * - `admin`: everything, including what the other scopes allow.
 * - `operator`: rotate, leak, offboard, cancel, submit — and everything `viewer` may.
 * - `viewer`: status, history, metrics, the (read-only) queue board.
 * - `submitter`: submit the new value of a human-step rotation of the policies one owner owns.
 * - `consumer`: confirm rotations as one consumer of one policy.
 */
export const SCOPES = ["admin", "operator", "viewer", "submitter", "consumer"] as const;
export type Scope = (typeof SCOPES)[number];

export interface Identity {
  /** The token's name, or the JWT's subject: the audit actor is derived from it. */
  name: string;
  /** How the caller proved who it is. */
  via: "token" | "jwt" | "admin-token-hash" | "policy-consumer-token";
  scopes: readonly Scope[];
  /** submitter: the owner (email) whose policies this identity may submit for. */
  owner?: string;
  /** consumer: the one consumer this identity confirms as. */
  consumer?: { policyId: string; consumerId: string };
}

/** Grammar of token names (also used in audit actors): like policy ids, at most 64 characters. */
export const TOKEN_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Scopes that include others: an operator may do what a viewer may, an admin everything. */
const IMPLIED: Record<Scope, readonly Scope[]> = {
  admin: SCOPES,
  operator: ["operator", "viewer"],
  viewer: ["viewer"],
  submitter: ["submitter"],
  consumer: ["consumer"],
};

export function hasScope(id: Identity, need: Scope): boolean {
  return id.scopes.some((s) => IMPLIED[s].includes(need));
}

/** The audit actor of an identity: `token:<name>`, `jwt:<subject>`, `admin` or `consumer:<id>`. */
export function actorOf(id: Identity): string {
  switch (id.via) {
    case "token":
      return `token:${id.name}`;
    case "jwt":
      return `jwt:${id.name}`;
    case "admin-token-hash":
      return "api:admin";
    case "policy-consumer-token":
      return `consumer:${id.consumer?.consumerId ?? id.name}`;
  }
}
