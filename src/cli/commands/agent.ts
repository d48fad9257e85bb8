/** `rekey agent`: the consumer sidecar (docs/consumer-agent.md). */
import { Option, type Command } from "commander";
import { CliExit, EXIT, type CliIo } from "../io.ts";
import { esc } from "../../util/terminal.ts";

export function register(program: Command, io: CliIo): void {
  program
    .command("agent")
    .description("consumer sidecar: watch secrets, write them to files, reload the app, check its health, then confirm to rekey")
    .requiredOption("-c, --config <file>", "agent config file (YAML)")
    .option("--check", "validate the config file (and that its credential references resolve), then exit")
    .addOption(new Option("--log-level <level>", "log level").choices(["debug", "info", "warn", "error"]).default("info"))
    .action(async (opts: { config: string; check?: boolean; logLevel: string }) => {
      const { AgentConfigError, loadAgentConfig, readRef } = await import("../../consumers/agent/config.ts");
      let config;
      try {
        config = loadAgentConfig(opts.config);
        if (opts.check) {
          readRef(config.rekey.token, io.env, "rekey.token");
          if (config.rekey.fingerprintKey) readRef(config.rekey.fingerprintKey, io.env, "rekey.fingerprintKey");
          if (config.webhook) {
            const refs = Array.isArray(config.webhook.signingKey) ? config.webhook.signingKey : [config.webhook.signingKey];
            refs.forEach((r, i) => readRef(r, io.env, refs.length > 1 ? `webhook.signingKey[${i}]` : "webhook.signingKey"));
          }
          io.stdout(`${esc(opts.config)}: ok (${Object.keys(config.secrets).length} secret(s), ${config.outputs.length} output(s))\n`);
          return;
        }
      } catch (err) {
        if (err instanceof AgentConfigError) {
          for (const p of err.problems) io.stderr(`${esc(p)}\n`);
          throw new CliExit(EXIT.failure);
        }
        throw err;
      }
      const { createLogger } = await import("../../log.ts");
      const { ConsumerAgent } = await import("../../consumers/agent/agent.ts");
      const { untilStopped } = await import("../context.ts");
      const log = createLogger({ level: opts.logLevel, name: "agent" });
      const agent = new ConsumerAgent({ config, env: io.env, log });
      try {
        await agent.start();
      } catch (err) {
        if (err instanceof AgentConfigError) {
          for (const p of err.problems) io.stderr(`${esc(p)}\n`);
          await agent.stop();
          throw new CliExit(EXIT.failure);
        }
        await agent.stop();
        throw err;
      }
      await untilStopped(log, () => agent.readNow(), "reading every secret now");
      await agent.stop();
    });
}
