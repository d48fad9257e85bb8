/** What the attacker (bench/attack-process.ts) tells the attack run (bench/attack.ts) besides its result. */

/** Printed as the attacker starts sending: rotations count as "under attack" from then on. */
export const ATTACK_SENDING = "attack: sending";

/** The API's log lines of refusals (rate-limited): the attack run reports how many there were. */
export function refusalLogLines(lines: string[]): number {
  return lines.filter((l) => l.includes("api request refused")).length;
}

/** How many variants the attacker's cycle holds (bench/attack-kinds.ts measures each alone). */
export const HOSTILE_VARIANTS = 15;
