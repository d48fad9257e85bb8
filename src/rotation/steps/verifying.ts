/** verifying: the stored new value passes the provider's identity check before it is promoted. */
import type { StepFn } from "../run.ts";

export const verifying: StepFn = async (run) => {
  const d = run.data;
  const stored = await run.readVersion(d.rotationId);
  if (!stored) {
    // The pending version is gone (discarded by hand?): go back and issue again.
    return { data: { ...d, step: run.caps.issue === "human" ? "awaiting-human" : "issuing", humanRequestedAt: undefined } };
  }
  await run.providerCall(() => run.provider.verify(run.ctx(), stored.value, { credentialId: d.newCredentialId, meta: d.newMeta }));
  run.deferAudit("verifying", "ok", `new credential passed the ${run.policy.provider.kind} identity check`);
  return { data: { ...d, step: "promoting" } };
};
