/** What the attacker (bench/attack-process.ts) tells the attack run (bench/attack.ts) besides its result. */

/** Printed as the attacker starts sending: rotations count as "under attack" from then on. */
export const ATTACK_SENDING = "attack: sending";

/** How many variants the attacker's cycle holds (bench/attack-kinds.ts measures each alone). */
export const HOSTILE_VARIANTS = 15;
