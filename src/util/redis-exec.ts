import type { ChainableCommander } from "ioredis";

/** Run a transaction or pipeline; fail on the first command that failed in it (EXEC alone does not). Returns the replies. */
export async function execOrThrow(m: ChainableCommander): Promise<unknown[]> {
  const results = await m.exec();
  if (results === null) throw new Error("redis transaction aborted");
  for (const [err] of results) if (err) throw err;
  return results.map(([, reply]) => reply);
}
