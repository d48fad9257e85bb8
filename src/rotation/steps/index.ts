/**
 * The protocol as a table: the step a job's cursor names, and the function that runs it.
 *
 *   start -> issuing | awaiting-human -> verifying -> promoting -> awaiting-confirmation
 *         -> revoking -> done
 */
import type { Step } from "../job.ts";
import type { StepFn } from "../run.ts";
import { awaitingConfirmation } from "./awaiting-confirmation.ts";
import { awaitingHuman } from "./awaiting-human.ts";
import { issuing } from "./issuing.ts";
import { promoting } from "./promoting.ts";
import { revoking } from "./revoking.ts";
import { start } from "./start.ts";
import { verifying } from "./verifying.ts";

export const steps: Record<Step, StepFn> = {
  start,
  issuing,
  "awaiting-human": awaitingHuman,
  verifying,
  promoting,
  "awaiting-confirmation": awaitingConfirmation,
  revoking,
  done: async (run) => ({ data: run.data }),
};
