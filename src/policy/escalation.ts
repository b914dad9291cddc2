/**
 * BAN_ESCALATION: a peer banned again soon after its last ban ran out is banned for longer, as
 * fail2ban's bantime.increment does. Pure: the ban maps remember each address's count (bpf/btwall.h
 * btw_ban) and the sink asks here how long the next ban is.
 */

export interface Escalation {
  /** Each ban in a row lasts this many times the one before (1: no escalation). */
  factor: number;
  /** No escalated ban lasts longer than this, seconds. */
  maxS: number;
  /** A ban is "again" when it comes within this many seconds of the last one's end; 0 forgets at once. */
  windowS: number;
}

/** BAN_ESCALATION unset or off: every ban lasts BAN_DURATION, nothing is remembered past its end. */
export const NO_ESCALATION: Escalation = { factor: 1, maxS: 0, windowS: 0 };

/**
 * How long the `count`th ban in a row of an address lasts (count 1: the first, BAN_DURATION):
 * base × factor^(count − 1), capped at maxS, never below base.
 */
export function escalatedDurationS(baseS: number, count: number, escalation: Escalation): number {
  if (escalation.factor === 1 || count <= 1) return baseS;
  const grown = baseS * escalation.factor ** (count - 1);
  return Math.max(baseS, Math.min(escalation.maxS, Math.round(grown)));
}
