/** What the attacker (bench/attack-process.ts) tells the attack run (bench/attack.ts) besides its result. */

/** Printed as the attacker starts sending: rotations count as "under attack" from then on. */
export const ATTACK_SENDING = "attack: sending";
