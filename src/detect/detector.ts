import type { PeerCache } from '../flow/peers.js';
import type { PacketInfo } from '../packet/packet.js';

/** What a detector says about a flow after one payload packet. */
export const MORE = 0;
/** The flow is BitTorrent: the engine records the verdict with this detector's name as the rule. */
export const MATCH = 1;
/** This detector will never match this flow: the engine stops calling it for the flow. */
export const GIVE_UP = 2;

/** Which transports a detector wants to see (bit mask). */
export const OVER_TCP = 1;
export const OVER_UDP = 2;

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
  /** The detector's per-flow scratch bytes: state[stateOff, stateOff + stateBytes), zero on a new flow. */
  state!: Uint8Array;
  stateOff = 0;
  /** Endpoints known to speak BitTorrent: detectors that read peer lists (DHT, PEX, trackers) add to it. */
  peers!: PeerCache;
}

/**
 * One detector: recognises one BitTorrent wire protocol from payload packets of a flow.
 * It keeps its per-flow state in the engine's scratch bytes (never in objects of its own),
 * allocates nothing and converts nothing to strings while inspecting.
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
  /**
   * Whether the endpoints of a flow it matches are BitTorrent peers, to be remembered and banned.
   * False where the other end is infrastructure that only carried a BitTorrent question (a DNS resolver).
   */
  readonly bannable: boolean;
  /**
   * Whether a match proves the flow's endpoints are peers the cache should learn. False for the
   * peer cache itself (a cached match proves nothing new, and learning from it would let one entry
   * spread to every endpoint its flows touch) and for detectors that are not bannable.
   */
  readonly provesPeers: boolean;
  inspect(ctx: InspectContext): number;
  /**
   * Optional: reads peer lists (tracker responses, DHT replies, PEX) from later payload packets of
   * a flow this detector matched, while the flow is within the detector's budget. Inline, a matched
   * flow is dropped, so this serves monitor-only mode and scans; it must not allocate either.
   */
  learn?(ctx: InspectContext): void;
}
