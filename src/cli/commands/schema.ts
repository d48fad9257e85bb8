/** `rekey schema`: the policy JSON Schema, for editors. */
import { type Command } from "commander";
import { policyJsonSchema } from "../../policy/json-schema.ts";
import { type CliIo } from "../io.ts";

export function register(program: Command, io: CliIo): void {
  program
    .command("schema")
    .description("print the JSON Schema of policy files (for editor completion and checks)")
    .addHelpText(
      "after",
      `
Save it next to your policies and point the YAML language server at it from each policy file:

  rekey schema > policy.schema.json
  # first line of policies/*.yaml:
  # yaml-language-server: $schema=../policy.schema.json
`,
    )
    .action(() => {
      io.stdout(`${JSON.stringify(policyJsonSchema(), null, 2)}\n`);
    });
}
