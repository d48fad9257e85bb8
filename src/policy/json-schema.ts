/**
 * The policy format as JSON Schema, for editors: with `rekey schema > policy.schema.json` and a
 * `# yaml-language-server: $schema=…` line at the top of a policy file, the YAML language server
 * completes fields, shows their descriptions and marks typos while typing.
 *
 * It describes what a person writes (zod's input side: fields with defaults are optional and
 * durations are text). Draft-07, because that is the draft editors support best. Checks that need
 * code (cron syntax, time zones, cut-over acceptance, unique ids) are left to `rekey validate`.
 */
import { z } from "zod";
import { Policy } from "./schema.ts";

/** The JSON Schema of a policy file; its title and descriptions come from the zod schema's metadata. */
export function policyJsonSchema(): Record<string, unknown> {
  const { $schema, title, description, ...rest } = z.toJSONSchema(Policy, {
    io: "input",
    target: "draft-7",
    // Refinements (cron, time zone) have no JSON Schema form; their base type is still described.
    unrepresentable: "any",
  }) as Record<string, unknown>;
  // The header first, so a person opening the file sees what it is.
  return { $schema, title, description, ...rest };
}
