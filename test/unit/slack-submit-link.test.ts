/** Slack shows a human step's one-time submit link as its primary button, next to the provider's page. */
import { describe, expect, it } from "vitest";
import { NotificationEvent } from "../../src/notify/events.ts";
import { slackMessage } from "../../src/notify/slack.ts";

const base = {
  schemaVersion: 1,
  event: "human.action-required",
  rotationId: "r-1",
  policyId: "crew",
  provider: "crewai-crew",
  secretId: "prod/crew",
  reason: "manual",
  message: "owner@example.com: a new credential is needed for crew",
  at: "2026-01-05T03:00:00.000Z",
  instructions: "Press Reset",
  link: "https://app.crewai.com/crewai_plus/deployments",
} as const;

describe("slack message of a human step", () => {
  it("has a primary 'Submit the new value' button for the one-time link", () => {
    const event = NotificationEvent.parse({ ...base, submitUrl: "https://rekey.example.com/submit/abc" });
    const actions = slackMessage(event).blocks.find((b) => b.type === "actions");
    expect(actions).toEqual({
      type: "actions",
      elements: [
        { type: "button", text: { type: "plain_text", text: "Open" }, url: base.link },
        { type: "button", text: { type: "plain_text", text: "Submit the new value" }, url: "https://rekey.example.com/submit/abc", style: "primary" },
      ],
    });
  });

  it("without a link, the provider's page is the primary button", () => {
    const actions = slackMessage(NotificationEvent.parse(base)).blocks.find((b) => b.type === "actions");
    expect(actions).toEqual({ type: "actions", elements: [{ type: "button", text: { type: "plain_text", text: "Open" }, url: base.link, style: "primary" }] });
  });

  it("a submit link that is not an http(s) URL is refused by the event schema", () => {
    expect(NotificationEvent.safeParse({ ...base, submitUrl: "javascript:alert(1)" }).success).toBe(false);
  });
});
