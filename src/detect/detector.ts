import type { PeerCache, PeerLists, TorrentingHosts } from '../flow/peers.js';
import type { PacketInfo } from '../packet/packet.js';

/** What a detector says about a flow after one payload packet. */
export const MORE = 0;
/** The flow is BitTorrent: the engine records the evidence (rule, strength, producer) for the policy. */
export const MATCH = 1;
/** This detector will never match this flow: the engine stops calling it for the flow. */
export const GIVE_UP = 2;

/** Which transports a detector wants to see (bit mask). */
export const OVER_TCP = 1;
export const OVER_UDP = 2;

/**
 * How strong a piece of evidence is, as stored per flow (FlowTable.strength). Only EXACT and
 * RESPONSE may ever lead to a ban (src/policy/ decides); the others drop flows and nothing more.
 */
export const STRENGTH_NONE = 0;
/** The full protocol structure, in the bytes of one end (a handshake, a KRPC message, a tracker request). */
export const STRENGTH_EXACT = 1;
/** Bytes from one end that answer what the other end sent in this flow (a uTP STATE acking the SYN, a tracker response with the asked transaction id). */
export const STRENGTH_RESPONSE = 2;
/** Statistical: shape and entropy (MSE), byte patterns out of their protocol's structure. */
export const STRENGTH_HEURISTIC = 3;
/** An endpoint proven a peer earlier, by evidence that would have banned it. */
export const STRENGTH_CACHE = 4;
/** An endpoint only listed by a third party (tracker, DHT, PEX) to the host that received the list. */
export const STRENGTH_ANNOUNCED = 5;
/** A name: a DNS question or answer, a TLS server name, an HTTP Host. */
export const STRENGTH_NAME = 6;
/** Indexed by strength code: the words the scan output, the logs and the policy's reasons use. */
export const STRENGTH_NAMES = ['', 'exact', 'response', 'heuristic', 'cache', 'announced', 'name'] as const;
export type StrengthName = Exclude<(typeof STRENGTH_NAMES)[number], ''>;

/**
 * Everything a detector may look at for one payload packet. One instance is reused for every
 * packet: read from it, never keep it.
 */
export class InspectContext {
  /** The decoded packet; payload bytes are pkt.buf[pkt.payloadOff, pkt.payloadOff + pkt.payloadLen). */
  pkt!: PacketInfo;
  /** Flow index in the flow table. */
  flow = 0;
  /** 0 when the packet comes from the flow's initiator, 1 from the responder. */
  dir = 0;
  /** 0-based index of this payload packet among the flow's payload packets in this direction. */
  dirIndex = 0;
  /** 0-based index of this payload packet among all the flow's payload packets. */
  flowIndex = 0;
  /**
   * Whether the gateway has seen any packet of the other end (payload or not: a SYN-ACK, an ACK).
   * When not, the route may show this direction only, and one side's bytes are all there will be.
   */
  otherSeen = false;
  /**
   * TCP: the gateway saw a SYN of the flow, from either end. When not, the flow was met mid-way (a
   * capture or an inspection that started late, a connection open before the daemon, one the
   * table evicted): its first bytes in view may fall anywhere inside a message.
   */
  synSeen = false;
  /** The detector's per-flow scratch bytes: state[stateOff, stateOff + stateBytes), zero on a new flow. */
  state!: Uint8Array;
  stateOff = 0;
  /**
   * Set before each inspect() to the detector's own `strength`: a detector whose match can be of
   * another strength (a uTP pair that answers a SYN, a peer-cache hit) sets it before returning MATCH.
   */
  strength = STRENGTH_NONE;
  /** Peer lists: what trackers, DHT nodes and PEX told the host receiving the current packet. */
  peers!: PeerLists;
  /** Endpoints proven peers by their own bytes (the policy adds them; only peer-cache reads them). */
  proven!: PeerCache;
  /** Hosts that spoke BitTorrent protocol bytes lately, or reached a known peer (the engine and peer-cache mark them; shape-only detectors read them). */
  torrenting!: TorrentingHosts;
}

/**
 * One detector: recognises one BitTorrent wire protocol from payload packets of a flow.
 * It keeps its per-flow state in the engine's scratch bytes (never in objects of its own),
 * allocates nothing and converts nothing to strings while inspecting. A match is evidence, not a
 * verdict: the bytes that matched are the current packet's, so their producer is its sender.
 */
export interface Detector {
  /** The rule name reported when it matches. */
  readonly name: string;
  /** OVER_TCP, OVER_UDP or both. */
  readonly transports: number;
  /** Payload packets of a flow (both directions together) after which it gives up unmatched. */
  readonly budget: number;
  /** Per-flow scratch bytes it needs. */
  readonly stateBytes: number;
  /** The strength of its matches (STRENGTH_*), unless it sets ctx.strength otherwise. */
  readonly strength: number;
  /**
   * Whether the end whose bytes matched is itself a BitTorrent peer. False where it is a service
   * that only carried BitTorrent for someone (a tracker, a web seed, a proxy, a resolver): a ban
   * there would cut off everything else it serves, so the policy never bans it.
   */
  readonly producerIsPeer: boolean;
  /**
   * Optional, where the producer is a service: the service is a tracker, which serves BitTorrent
   * alone on its port (a web seed, a proxy or a resolver serves everything else too), so the
   * policy lists it, on its own answer, to the local client it answered: that host's next flows
   * to it (a scrape, the next announce on a new connection) are BitTorrent again.
   */
  readonly serviceIsTracker?: boolean;
  inspect(ctx: InspectContext): number;
  /**
   * Optional: whether the flow is BitTorrent from its endpoints alone, asked at the flow's first
   * packet when it carries no payload (a SYN towards a known peer is a client's connection
   * attempt, though it may never carry a byte; a first packet with payload goes to inspect()).
   * Sets ctx.strength like inspect(); no state.
   */
  matchesEndpoints?(ctx: InspectContext): boolean;
  /**
   * Optional: reads peer lists (tracker responses, DHT replies, PEX) from later payload packets of
   * a flow this detector matched, while the flow is within the detector's budget. Inline, a matched
   * flow is dropped, so only monitor-only mode gets here; it must not allocate either.
   */
  learn?(ctx: InspectContext): void;
}
