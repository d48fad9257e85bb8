/**
 * Slack incoming-webhook messages: `text` is the fallback shown in notifications, `blocks` the
 * readable card. The incoming-webhook URL is itself a credential, so it only ever comes from a
 * credential reference and never appears in job data, logs or errors.
 */
import { EVENT_TITLES, type EventType, type NotificationEvent } from "./events.ts";

export interface SlackMessage {
  text: string;
  blocks: SlackBlock[];
}

export type SlackBlock =
  | { type: "header"; text: { type: "plain_text"; text: string } }
  | { type: "section"; text?: { type: "mrkdwn"; text: string }; fields?: { type: "mrkdwn"; text: string }[] }
  | { type: "actions"; elements: { type: "button"; text: { type: "plain_text"; text: string }; url: string; style?: "primary" | "danger" }[] }
  | { type: "context"; elements: { type: "mrkdwn"; text: string }[] };

const ICONS: Record<EventType, string> = {
  "rotation.started": ":arrows_counterclockwise:",
  "rotation.awaiting-confirmation": ":hourglass_flowing_sand:",
  "rotation.completed": ":white_check_mark:",
  "rotation.failed": ":x:",
  "rotation.needs-attention": ":warning:",
  "human.action-required": ":raising_hand:",
  "human.reminder": ":bell:",
  "rotation.leak": ":rotating_light:",
  "rotation.cutover-pending": ":scissors:",
  "rotation.consumer-failed": ":no_entry:",
};

/** Slack mrkdwn treats &, < and > as control characters. */
function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function list(ids: string[]): string {
  return ids.map((c) => `\`${esc(c)}\``).join(", ");
}

export function slackMessage(event: NotificationEvent): SlackMessage {
  const title = `${ICONS[event.event]} ${EVENT_TITLES[event.event]}: ${event.policyId}`;
  const blocks: SlackBlock[] = [
    { type: "header", text: { type: "plain_text", text: title.slice(0, 150) } },
    { type: "section", text: { type: "mrkdwn", text: esc(event.message) } },
    {
      type: "section",
      fields: [
        { type: "mrkdwn", text: `*Policy*\n\`${esc(event.policyId)}\`` },
        { type: "mrkdwn", text: `*Provider*\n${esc(event.provider)}` },
        { type: "mrkdwn", text: `*Secret*\n\`${esc(event.secretId)}\`` },
        { type: "mrkdwn", text: `*Reason*\n${esc(event.reason)}` },
        ...(event.versionId ? [{ type: "mrkdwn" as const, text: `*Version*\n\`${esc(event.versionId)}\`` }] : []),
      ],
    },
  ];
  let extra = "";
  switch (event.event) {
    case "rotation.awaiting-confirmation":
      if (event.consumers.length) {
        extra = `waiting for ${list(event.consumers)}`;
        blocks.push({ type: "section", text: { type: "mrkdwn", text: `*Still waiting for:* ${list(event.consumers)}` } });
      }
      break;
    case "rotation.needs-attention":
      if (event.consumers.length) blocks.push({ type: "section", text: { type: "mrkdwn", text: `*Consumers not confirmed:* ${list(event.consumers)}` } });
      break;
    case "rotation.leak":
      extra = "consumers must reload now";
      blocks.push({
        type: "section",
        text: {
          type: "mrkdwn",
          text: `:rotating_light: *Urgent:* every consumer of \`${esc(event.secretId)}\` must reload it now${event.consumers.length ? ` (${list(event.consumers)})` : ""}.`,
        },
      });
      break;
    case "rotation.cutover-pending":
      extra = "consumers must reload when told the new version is current";
      blocks.push({
        type: "section",
        text: {
          type: "mrkdwn",
          text: `*Heads-up:* the old value of \`${esc(event.secretId)}\` stops working at the reset; consumers${event.consumers.length ? ` (${list(event.consumers)})` : ""} fail until they load the new version, which rekey announces as soon as it is current.`,
        },
      });
      break;
    case "rotation.consumer-failed":
      extra = "the old credential stays alive until it confirms";
      blocks.push({
        type: "section",
        text: {
          type: "mrkdwn",
          text: `*Failed:* ${event.consumers.length ? list(event.consumers) : "a consumer"}${event.stage ? ` (${esc(event.stage)})` : ""}. The rotation keeps waiting; fix the consumer and it confirms by itself.`,
        },
      });
      break;
    case "human.action-required":
    case "human.reminder":
      if (event.instructions) blocks.push({ type: "section", text: { type: "mrkdwn", text: `*What to do*\n${esc(event.instructions)}` } });
      {
        const buttons: { type: "button"; text: { type: "plain_text"; text: string }; url: string; style?: "primary" | "danger" }[] = [];
        if (event.link && /^https?:\/\//.test(event.link)) buttons.push({ type: "button", text: { type: "plain_text", text: "Open" }, url: event.link });
        // One-time: good for one submission, until the human step times out.
        if (event.submitUrl) buttons.push({ type: "button", text: { type: "plain_text", text: "Submit the new value" }, url: event.submitUrl, style: "primary" });
        if (buttons.length === 1 && !event.submitUrl) buttons[0]!.style = "primary";
        if (buttons.length) blocks.push({ type: "actions", elements: buttons });
      }
      break;
    default:
      break;
  }
  blocks.push({ type: "context", elements: [{ type: "mrkdwn", text: `rotation \`${esc(event.rotationId)}\` · ${esc(event.at)}` }] });
  const text = `${EVENT_TITLES[event.event]}: ${event.policyId} — ${event.message}${extra ? ` (${extra})` : ""}`;
  return { text, blocks };
}
