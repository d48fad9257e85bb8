/**
 * `rekey cancel <rotation-id>`: stop a rotation before its point of no return (src/rotation/cancel.ts).
 * Through the API with REKEY_API_URL and REKEY_TOKEN (operator scope; the audit names the token),
 * else with direct Redis access, saying so.
 */
import { type Command, Option } from "commander";
import type { CancelResult } from "../../rotation/cancel.ts";
import { RequestError } from "../../rotation/requests.ts";
import { esc } from "../../util/terminal.ts";
import { apiTarget, callApi } from "../api-client.ts";
import { noteDirect, openRuntime } from "../context.ts";
import { CliExit, EXIT, type CliIo } from "../io.ts";

/** How long the direct-access command waits for the worker's clean-up (the API waits as long). */
const WAIT_MS = 15_000;

function report(io: CliIo, res: CancelResult, json: boolean | undefined): void {
  if (json) io.stdout(`${JSON.stringify(res)}\n`);
  else if (res.outcome === "cancelled") io.stdout(`cancelled rotation ${esc(res.rotationId)} of ${esc(res.policyId)} (${esc(res.status ?? "ended")}): ${esc(res.message ?? "")}\n`);
  else io.stdout(`cancel of rotation ${esc(res.rotationId)} of ${esc(res.policyId)} accepted; the worker is cleaning up what it issued (\`rekey status\` shows when it has ended)\n`);
}

export function register(program: Command, io: CliIo): void {
  program
    .command("cancel")
    .description("cancel a queued or waiting rotation before its new value is current: what it issued is cleaned up, the old credential stays current")
    .argument("<rotation-id>", "the rotation (from `rekey rotate`, `rekey status` or a notification)")
    .option("--reason <text>", "why, for the audit")
    .addOption(new Option("--json", "print JSON"))
    .action(async (rotationId: string, opts: { reason?: string; json?: boolean }) => {
      const api = apiTarget(io);
      if (api) {
        const { status, json } = await callApi(api, "POST", `/v1/rotations/${encodeURIComponent(rotationId)}/cancel`, opts.reason === undefined ? {} : { reason: opts.reason });
        if (status !== 200 && status !== 202) {
          io.stderr(`rekey cancel: the API refused (${status}): ${esc(json.error ?? "no reason given")}\n`);
          throw new CliExit(EXIT.failure);
        }
        report(io, json as unknown as CancelResult, opts.json);
        return;
      }
      const actor = noteDirect(io, "cancel");
      const { rt } = await openRuntime(io, { name: "cli", quiet: true });
      try {
        report(io, await rt.rotations.cancel({ rotationId, actor, reason: opts.reason, waitMs: WAIT_MS }), opts.json);
      } catch (err) {
        if (err instanceof RequestError) {
          io.stderr(`rekey cancel: ${esc(err.message)}\n`);
          throw new CliExit(EXIT.failure);
        }
        throw err;
      } finally {
        await rt.close();
      }
    });
}
