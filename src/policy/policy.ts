/**
 * The one place that turns evidence into decisions: what happens to the deciding packet and the
 * rest of its connection, and whether an address is banned, with the reason the detection log
 * records. Pure: no I/O, no clock of its own (it reads the engine's), so every rule below is
 * unit-tested from evidence alone.
 *
 * Drop on any evidence; ban only on proof. A ban cuts an address off for every user of the
 * gateway, so it names an address only when that address's own bytes were BitTorrent (`exact` or
 * `response`) over an exchange no off-path sender can forge: TCP whose handshake the gateway saw
 * both ways and whose bytes acknowledge the other end's SYN, or UDP that answers a local query.
 * Bytes a local user sent, names, peer lists, cache hits and statistical guesses drop flows only.
 */
import { STRENGTH_EXACT, STRENGTH_NAMES, STRENGTH_RESPONSE } from '../detect/detector.js';
import type { Clock } from '../flow/clock.js';
import { formatAddress } from '../flow/address.js';
import type { CidrSet } from '../config/cidr.js';
import { BanRateTable } from './ban-rate.js';
import type { Action } from '../config/config.js';

/** What the gateway knows about one detection. The pipeline refills one instance per detection. */
export class Evidence {
  /** The detector's rule name (an operator rule's own name). */
  rule = '';
  /** An operator rule's action (RULES_FILE), which replaces ACTION for its flows; null for the built-in detectors. */
  ruleAction: Action | null = null;
  /** STRENGTH_* of the match. */
  strength = 0;
  /** The detector's word on whether the end whose bytes matched is a peer (not a tracker, proxy, web seed, resolver). */
  producerIsPeer = false;
  /** The detector's word on whether the service end (a producer or not) is a tracker, which serves BitTorrent alone. */
  serviceIsTracker = false;
  tcp = false;
  /** Found inside a tunnel (GRE, VXLAN, GTP-U, Teredo, IP-in-IP): the connection the kernel tracks is the tunnel's. */
  tunnelled = false;
  family: 4 | 6 = 4;
  /** The flow's ends: index 0 the initiator, 1 the responder, each its address bytes (4 or 16) and port. */
  readonly addresses = [new Uint8Array(16), new Uint8Array(16)] as const;
  readonly ports = [0, 0];
  /** Which end (0 initiator, 1 responder) sent the bytes that matched. */
  producer = 0;
  /** TCP: the gateway saw the initiator's SYN and the responder's SYN-ACK. */
  handshakeSeen = false;
  /** TCP: the deciding packet acknowledges the other end's SYN, whose sequence number an off-path sender never saw. */
  acknowledgesOtherSyn = false;
  /** TCP: the deciding packet carries an ACK: the connection is set up (seen from its start or not), so both ends hold state to reset. */
  established = false;
  /**
   * Both ends' first packets came in on the same interface of the gateway (known inline only):
   * a real remote peer's packets arrive from the other side, so one end's were forged on this side.
   */
  sameInterfaceBothWays = false;
}

export interface Ban {
  family: 4 | 6;
  address: string;
  durationS: number;
}

/**
 * What happens to a flow: accepted (clean), dropped (BitTorrent under ACTION=drop), or its
 * connection marked and limited to RATE per local host (ACTION=throttle).
 */
export type FlowAction = 'accept' | 'drop' | 'throttle';

/** What to do about one flow. */
export interface Decision {
  /** What happens to the deciding packet and the rest of the flow (when enforced). */
  action: FlowAction;
  /**
   * The decision goes into the connection's mark, so the kernel handles its later packets. Never for
   * a tunnelled flow: the kernel's connection is the tunnel, which carries other flows too.
   */
  markConnection: boolean;
  /** False under ACTION=monitor: nothing is dropped, marked or banned, and the log says what would have been. */
  enforce: boolean;
  ban: Ban | null;
  /** The evidence proved a peer, but its local host had reached BAN_RATE: no ban (counted apart from the others). */
  rateLimited: boolean;
  /** The policy's words for the ban or for the absence of one. */
  reason: string;
  /**
   * CUT_ESTABLISHED: the connection is torn down, not only dropped: its conntrack entry deleted and
   * a TCP reset sent to each end, from the other's address with the sequence number it expects.
   */
  cut: boolean;
  /** An endpoint to remember, so that the next flow to it is dropped from its first packet, or nothing. */
  remember: Remembered | null;
}

/**
 * One end of the flow to remember: `proven` the banned producer, for every host; `listed` the peer
 * or the tracker a local host spoke BitTorrent to, for that host (the other end) only.
 */
export interface Remembered {
  readonly as: 'proven' | 'listed';
  /** The end remembered: 0 the initiator, 1 the responder. */
  readonly end: number;
}

/** A list of addresses never banned, with the words a reason uses for it. */
export interface ExemptList {
  /** What the list is, for a reason: "ALLOW_CIDRS", "a resolver of this host", ... */
  label: string;
  cidrs: CidrSet;
}

export interface PolicySettings {
  /** ACTION: drop (and ban on proof), throttle (never ban), or monitor (decide everything, enforce nothing). */
  action: Action;
  /** CUT_ESTABLISHED: dropped TCP connections that were set up are torn down. */
  cutEstablished: boolean;
  banDurationS: number;
  /** Where the gateway's own users are (LOCAL_CIDRS, or the private ranges when it is empty). */
  local: CidrSet;
  /** BAN_LOCAL: local addresses may be banned too (on the same proof). */
  banLocal: boolean;
  /** Never banned, whatever the evidence. */
  exempt: readonly ExemptList[];
  /** BAN_RATE: most new bans per local host and minute; past it flows are still dropped. */
  banRatePerMinute: number;
}

/** Most local hosts whose ban rate is counted at once (a bounded table). */
export const RATE_HOSTS = 65_536;

const CLEAN: Decision = { action: 'accept', markConnection: true, enforce: true, ban: null, rateLimited: false, reason: 'no BitTorrent evidence', remember: null, cut: false };
const CLEAN_TUNNELLED: Decision = { ...CLEAN, markConnection: false, reason: 'no BitTorrent evidence (tunnelled: the tunnel stays unmarked)' };

export class Policy {
  /** Bans the policy would have made but for BAN_RATE. */
  bansRateLimited = 0;
  bans = 0;
  private settings: PolicySettings;

  constructor(
    settings: PolicySettings,
    private readonly clock: Clock,
    /** BAN_RATE's counts; the daemon gives every queue's policy the same shared table. */
    private readonly rate = new BanRateTable(RATE_HOSTS),
  ) {
    this.settings = settings;
  }

  /** ACTION=monitor: nothing is enforced. */
  get monitorOnly(): boolean {
    return this.settings.action === 'monitor';
  }

  /** Whether an address (4 or 16 bytes) is one of the gateway's users (LOCAL_CIDRS). */
  isLocal(family: 4 | 6, address: Uint8Array): boolean {
    return this.settings.local.contains(family, address, 0);
  }

  /** Replaces the settings: the gateway's addresses and resolvers change while it runs, and a reload changes the configuration. */
  setSettings(settings: PolicySettings): void {
    this.settings = settings;
  }

  /** A flow every detector gave up on. */
  clean(tunnelled: boolean): Decision {
    return tunnelled ? CLEAN_TUNNELLED : CLEAN;
  }

  /**
   * A flow found to be BitTorrent. An operator rule's action replaces ACTION for the flows it
   * decides, except that ACTION=monitor enforces nothing at all: a dry run stays one.
   */
  decide(e: Evidence): Decision {
    const s = this.settings;
    const action = e.ruleAction ?? s.action;
    const { ban, reason, rateLimited = false } = this.ban(e, action);
    const remember = ban !== null ? this.proven(e) : this.listed(e);
    const enforce = s.action !== 'monitor' && action !== 'monitor';
    // What is done when enforced (ACTION=monitor: what would be); a rule that only watches does nothing.
    const flowAction: FlowAction = action === 'throttle' ? 'throttle' : e.ruleAction === 'monitor' ? 'accept' : 'drop';
    // A tunnel's connection is not the flow's; a reset needs the set-up connection's numbers.
    const cut = s.cutEstablished && enforce && flowAction === 'drop' && e.tcp && !e.tunnelled && e.established;
    return { action: flowAction, markConnection: !e.tunnelled, enforce, ban, rateLimited, reason, remember, cut };
  }

  /** The ban the evidence proves under `action`, or none, and why. */
  private ban(e: Evidence, action: Action): { ban: Ban | null; reason: string; rateLimited?: boolean } {
    const s = this.settings;
    const none = (reason: string) => ({ ban: null, reason: `no ban: ${reason}` });
    const strength = STRENGTH_NAMES[e.strength];
    const producer = e.addresses[e.producer];
    const other = e.addresses[1 - e.producer];
    const producerText = formatAddress(e.family, producer);
    const otherText = formatAddress(e.family, other);
    if (action === 'throttle') return none(e.ruleAction === null ? 'ACTION=throttle limits BitTorrent flows, it never bans' : `rule ${e.rule} throttles, it never bans`);
    if (e.ruleAction === 'monitor') return none(`rule ${e.rule} only watches`);
    if (e.tunnelled) return none('found inside a tunnel, whose encapsulation the XDP program does not parse');
    if (!isProtocolBytes(e.strength)) return none(`${strength} evidence drops flows, it never bans`);
    if (!e.producerIsPeer) return none(`${e.rule} reads an exchange with a service (tracker, web seed, proxy or resolver), whichever end sent it: no peer's bytes`);
    const producerLocal = this.isLocal(e.family, producer);
    const otherLocal = this.isLocal(e.family, other);
    if (!producerLocal && !otherLocal) return none(`neither ${producerText} nor ${otherText} is a local address; set LOCAL_CIDRS to the gateway's users`);
    if (producerLocal && !s.banLocal) return none(`the BitTorrent bytes came from the local end ${producerText}; a local user's bytes never ban the other end`);
    if (e.sameInterfaceBothWays) return none(`both ends' packets came in on the same interface, so ${producerText}'s may be forged from that side`);
    let how: string;
    if (e.tcp) {
      if (!e.handshakeSeen) return none(`the gateway did not see this TCP connection's handshake both ways`);
      if (!e.acknowledgesOtherSyn) return none(`the bytes from ${producerText} do not acknowledge ${otherText}'s SYN, so anyone could have forged them`);
      how = 'over TCP after a handshake seen both ways';
    } else {
      if (e.strength !== STRENGTH_RESPONSE || e.producer !== 1) return none(`an unsolicited UDP datagram can carry any source address`);
      how = `over UDP in answer to ${otherText}'s query`;
    }
    for (const list of s.exempt) {
      if (list.cidrs.contains(e.family, producer, 0)) return none(`${producerText} is exempt (${list.label})`);
    }
    if (!this.rate.take(e.family, other, this.clock.nowMs, s.banRatePerMinute)) {
      this.bansRateLimited++;
      return { ...none(`${otherText} reached BAN_RATE (${s.banRatePerMinute} bans a minute); the flow is still dropped`), rateLimited: true };
    }
    this.bans++;
    return {
      ban: { family: e.family, address: producerText, durationS: s.banDurationS },
      reason: `ban: ${producerText} sent ${e.rule} bytes (${strength}) ${how}`,
    };
  }

  /** The banned producer, for every host, where its port is one it listens on: a TCP initiator's is ephemeral. */
  private proven(e: Evidence): Remembered | null {
    return !e.tcp || e.producer === 1 ? PROVEN[e.producer] : null;
  }

  /**
   * The end a local host's BitTorrent flow names for that host's next flows: the peer its own
   * bytes spoke to, when that end is the one that listens (the responder, or either end of a UDP
   * flow); or the tracker whose own answer it received, as the responder of the host's
   * connection. Never on the host's request alone: a web page can have a browser send one to any
   * web server, and through a forward proxy it names the proxy (a proxy's answer seen alone, on a
   * route that shows only what the LAN receives, is the one case that still lists one).
   */
  private listed(e: Evidence): Remembered | null {
    if (e.tunnelled || !isProtocolBytes(e.strength)) return null;
    const producerLocal = this.isLocal(e.family, e.addresses[e.producer]);
    const otherLocal = this.isLocal(e.family, e.addresses[1 - e.producer]);
    if (e.producerIsPeer) return producerLocal && (!e.tcp || e.producer === 0) ? LISTED[1 - e.producer] : null;
    return e.serviceIsTracker && e.tcp && e.producer === 1 && !producerLocal && otherLocal ? LISTED[1] : null;
  }
}

const PROVEN: readonly Remembered[] = [{ as: 'proven', end: 0 }, { as: 'proven', end: 1 }];
const LISTED: readonly Remembered[] = [{ as: 'listed', end: 0 }, { as: 'listed', end: 1 }];

/** Whether the evidence is the protocol itself in one end's bytes, the only kind that can prove a peer. */
function isProtocolBytes(strength: number): boolean {
  return strength === STRENGTH_EXACT || strength === STRENGTH_RESPONSE;
}
