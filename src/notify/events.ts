/**
 * Notification events: what rekey tells people and systems about a rotation. The payload is
 * versioned (`schemaVersion`) and strict: an event carries ids, names and text written by rekey,
 * never a secret value, and an unknown field is refused rather than passed on.
 */
import { z } from "zod";
import { PROVIDER_KINDS } from "../policy/schema.ts";

export const EVENT_TYPES = [
  "rotation.started",
  "rotation.awaiting-confirmation",
  "rotation.completed",
  "rotation.failed",
  "rotation.needs-attention",
  "human.action-required",
  "human.reminder",
  "rotation.leak",
  "rotation.cutover-pending",
  "rotation.consumer-failed",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

const common = {
  schemaVersion: z.literal(1),
  rotationId: z.string().min(1),
  policyId: z.string().min(1),
  /** Provider kind of the policy, e.g. `launchdarkly`. */
  provider: z.enum(PROVIDER_KINDS),
  /** Secret name or ARN in the store (a name, not a value). */
  secretId: z.string().min(1),
  /** The store version the rotation created, once there is one. */
  versionId: z.string().optional(),
  /** Why the rotation runs: scheduled, manual, leak, offboarding or reconcile. */
  reason: z.string().min(1),
  /** One line for humans. */
  message: z.string(),
  /** When the event happened (ISO 8601, UTC). */
  at: z.iso.datetime(),
};

/**
 * The owner's one-time link to submit the new value in a browser (REKEY_PUBLIC_URL set). Made when
 * the notification is delivered and never stored: a notification job's data does not hold it.
 * Whoever holds it can submit a value for this one rotation until it is used or the human step
 * times out, so a receiver treats it like a password.
 */
const SubmitUrl = z.url({ protocol: /^https?$/ }).optional();

/** Consumer ids (never their tokens). */
const Consumers = z.array(z.string()).default([]);

export const NotificationEvent = z.discriminatedUnion("event", [
  z.strictObject({ ...common, event: z.literal("rotation.started") }),
  z.strictObject({
    ...common,
    event: z.literal("rotation.awaiting-confirmation"),
    /** Required consumers that have not confirmed the new version yet. */
    consumers: Consumers,
  }),
  z.strictObject({ ...common, event: z.literal("rotation.completed") }),
  z.strictObject({ ...common, event: z.literal("rotation.failed") }),
  z.strictObject({
    ...common,
    event: z.literal("rotation.needs-attention"),
    /** Consumers still awaited, where that is why the rotation is stuck. */
    consumers: Consumers,
  }),
  z.strictObject({
    ...common,
    event: z.literal("human.action-required"),
    /** What the owner has to do, step by step. */
    instructions: z.string().optional(),
    /** Where to do it (the provider's web UI). */
    link: z.string().optional(),
    submitUrl: SubmitUrl,
  }),
  z.strictObject({
    ...common,
    event: z.literal("human.reminder"),
    instructions: z.string().optional(),
    link: z.string().optional(),
    submitUrl: SubmitUrl,
  }),
  z.strictObject({
    ...common,
    event: z.literal("rotation.leak"),
    /** Always true: consumers must reload the secret now. */
    urgent: z.literal(true).default(true),
    /** Consumers that must reload. */
    consumers: Consumers,
  }),
  z.strictObject({
    ...common,
    event: z.literal("rotation.cutover-pending"),
    /** Consumers that will fail from the reset until they load the new version. */
    consumers: Consumers,
  }),
  z.strictObject({
    ...common,
    event: z.literal("rotation.consumer-failed"),
    /** The consumer that reported it could not take the new version (its id). */
    consumers: Consumers,
    /** Where it failed: fetch, write, reload, health, handler or confirm. */
    stage: z.string().optional(),
  }),
]);
export type NotificationEvent = z.infer<typeof NotificationEvent>;
export type NotificationEventInput = z.input<typeof NotificationEvent>;

/** One-line titles, shared by the Slack renderer and logs. */
export const EVENT_TITLES: Record<EventType, string> = {
  "rotation.started": "Rotation started",
  "rotation.awaiting-confirmation": "Waiting for consumers to confirm",
  "rotation.completed": "Rotation completed",
  "rotation.failed": "Rotation failed",
  "rotation.needs-attention": "Rotation needs attention",
  "human.action-required": "Action required",
  "human.reminder": "Reminder: action still required",
  "rotation.leak": "LEAK: reload the secret now",
  "rotation.cutover-pending": "Cut-over ahead, reload when told",
  "rotation.consumer-failed": "A consumer failed to load the new version",
};
