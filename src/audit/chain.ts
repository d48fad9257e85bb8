/**
 * The audit sink's hash chain. Each line is one JSON object: the audit entry, its position
 * (`seq`, from 1), the Redis stream id it was shipped from, the hash of the line before it
 * (`prev`; 64 zeros before the first) and its own `hash` = sha256 of the line's JSON without
 * `hash`. Changing, removing, inserting or reordering a line breaks the chain at that line.
 *
 * The chain proves a file whole from its first line to its last; that nothing was cut from the
 * end is proved by comparing its last hash with the shipper's head (`rekey audit head`), or a
 * later file of the sink, whose first `prev` names it.
 */
import { createHash } from "node:crypto";
import type { AuditRecord } from "./audit.ts";

export const GENESIS = "0".repeat(64);

export interface ChainLine {
  v: 1;
  seq: number;
  /** The Redis stream id the entry was shipped from (a receiver may use it to drop repeats). */
  id: string;
  /** When it happened (ISO 8601). */
  at: string;
  policyId?: string;
  rotationId?: string;
  step: string;
  outcome: string;
  actor: string;
  message?: string;
  prev: string;
  hash: string;
}

function digest(body: Omit<ChainLine, "hash">): string {
  return createHash("sha256").update(JSON.stringify(body)).digest("hex");
}

/** The next line of the chain after (`seq`, `prev`), for a record read from the audit stream. */
export function chainLine(r: AuditRecord, seq: number, prev: string): ChainLine {
  // Fixed key order: the hash covers the JSON text as written.
  const body: Omit<ChainLine, "hash"> = {
    v: 1,
    seq,
    id: r.id,
    at: new Date(r.at).toISOString(),
    ...(r.policyId ? { policyId: r.policyId } : {}),
    ...(r.rotationId ? { rotationId: r.rotationId } : {}),
    step: r.step,
    outcome: r.outcome,
    actor: r.actor,
    ...(r.message ? { message: r.message } : {}),
    prev,
  };
  return { ...body, hash: digest(body) };
}

export interface VerifyProblem {
  file: string;
  /** 1-based line number in the file. */
  line: number;
  problem: string;
}

export interface VerifyResult {
  ok: boolean;
  entries: number;
  /** Lines that repeat an earlier line exactly (an at-least-once sink delivered them twice). */
  repeats: number;
  firstSeq?: number;
  lastSeq?: number;
  /** `prev` of the first line: GENESIS when the file starts the chain. */
  startsAfter?: string;
  /** Hash of the last line: compare with the shipper's head, or the next file's first `prev`. */
  head?: string;
  problems: VerifyProblem[];
}

/**
 * Verify one or more sink files in chain order (rotated files oldest first). Stops listing after
 * 20 problems. A line identical to one already seen (same seq and hash) is a repeat, not a break.
 */
export function verifyChain(files: { name: string; text: string }[]): VerifyResult {
  const res: VerifyResult = { ok: true, entries: 0, repeats: 0, problems: [] };
  const seen = new Map<number, string>();
  let last: { seq: number; hash: string } | undefined;
  const problem = (file: string, line: number, text: string) => {
    res.ok = false;
    if (res.problems.length < 20) res.problems.push({ file, line, problem: text });
  };
  for (const f of files) {
    const lines = f.text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    lines.forEach((raw, i) => {
      const n = i + 1;
      let obj: ChainLine;
      try {
        obj = JSON.parse(raw) as ChainLine;
      } catch {
        return problem(f.name, n, "not a JSON line");
      }
      if (typeof obj !== "object" || obj === null || typeof obj.hash !== "string" || typeof obj.seq !== "number" || typeof obj.prev !== "string") {
        return problem(f.name, n, "not an audit chain line (seq, prev and hash expected)");
      }
      const { hash, ...body } = obj;
      if (digest(body) !== hash) return problem(f.name, n, `seq ${obj.seq}: altered (its hash does not match its content)`);
      if (seen.get(obj.seq) === hash) {
        res.repeats++;
        return;
      }
      if (!last) {
        res.startsAfter = obj.prev;
        res.firstSeq = obj.seq;
        if (obj.prev === GENESIS && obj.seq !== 1) problem(f.name, n, `seq ${obj.seq} claims to start the chain but is not seq 1`);
      } else if (obj.seq !== last.seq + 1 || obj.prev !== last.hash) {
        const why = obj.seq <= last.seq ? "out of order" : obj.seq > last.seq + 1 ? `${obj.seq - last.seq - 1} line(s) missing before it` : "does not follow the line before it";
        problem(f.name, n, `seq ${obj.seq} after seq ${last.seq}: ${why} (chain broken)`);
      }
      seen.set(obj.seq, hash);
      last = { seq: obj.seq, hash };
      res.entries++;
    });
  }
  res.lastSeq = last?.seq;
  res.head = last?.hash;
  if (!last && res.problems.length === 0) {
    res.ok = false;
    res.problems.push({ file: files[0]?.name ?? "", line: 0, problem: "no audit lines" });
  }
  return res;
}
