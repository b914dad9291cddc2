import { DetectorChain } from '../detect/chain.js';
import { InspectContext, MATCH, GIVE_UP, STRENGTH_EXACT, STRENGTH_NAMES, STRENGTH_RESPONSE, type Detector } from '../detect/detector.js';
import { DETECTORS } from '../detect/registry.js';
import { Clock } from '../flow/clock.js';
import { PeerCache, PeerLists, TorrentingHosts, type TorrentingMemory } from '../flow/peers.js';
import { FlowTable } from '../flow/table.js';
import { PacketDecoder } from '../packet/decode.js';
import { DECODED_TCP_UDP, PacketInfo, TCP_SYN } from '../packet/packet.js';

/** Per-flow verdict codes, as stored in FlowTable.verdict. */
export const VERDICT_UNDECIDED = 0;
export const VERDICT_CLEAN = 1;
export const VERDICT_BITTORRENT = 2;
/** Returned by `process` for packets that belong to no TCP/UDP flow (ARP, ICMP, malformed...). */
export const VERDICT_NO_FLOW = 3;

export interface EngineOptions {
  /** The clock to work in, when something else (a detector's own table) must share it. */
  clock?: Clock;
  /** Most flows tracked at once (default 1,048,576). */
  flowCapacity?: number;
  /** A flow with no packet for this long is forgotten (default 120 s). */
  idleTimeoutMs?: number;
  /** The ordered detector chain (default: every registered detector). */
  detectors?: readonly Detector[];
  /** Most BitTorrent endpoints remembered at once in each peer table (default 65,536) and for how long (default 1 h). */
  peerCapacity?: number;
  peerTtlMs?: number;
  /** Operator's allowlist: an address for which this returns true is never remembered as a peer. */
  isAllowlisted?: (family: number, buf: Uint8Array, addrOff: number) => boolean;
  /** Memory of the peer tables (PeerCache.allocate), shared with other engines' threads; private when absent. */
  provenMemory?: ArrayBufferLike;
  listedMemory?: ArrayBufferLike;
  torrentingMemory?: TorrentingMemory;
}

/** Rule names indexed by FlowTable.rule: 0 is no rule, i + 1 is detector i. */
export type RuleNames = readonly string[];

/**
 * The detection engine shared by `btwall scan` and the inline daemon: packets in, evidence out.
 *
 * Each packet is decoded and counted in its flow (`track`), and, while the flow is undecided and
 * carries payload, shown to every detector that has not given up on the flow, in registry order
 * (`examine`). The first MATCH makes the flow BitTorrent and records its evidence (rule,
 * strength, the direction whose bytes matched) for the policy; when every detector has given up
 * it is clean. A flow with a verdict costs one table lookup per packet from then on. What a
 * verdict does (drop, mark, ban, remember) is the policy's (src/policy/), not the engine's.
 */
export class Engine {
  /** Set it to the packet's (or the batch's) time before calling `process`. */
  readonly clock: Clock;
  readonly flows: FlowTable;
  /** Endpoints proven peers by their own bytes: for every host. */
  readonly proven: PeerCache;
  /** Endpoints listed to one host by a tracker, DHT node or PEX: for that host only. */
  readonly announced: PeerCache;
  /** Hosts that spoke BitTorrent protocol bytes lately: the context shape-only evidence needs. */
  readonly torrenting: TorrentingHosts;
  readonly decoder = new PacketDecoder();
  readonly packet = new PacketInfo();
  readonly ruleNames: RuleNames;
  /** Whether the end whose bytes matched `rule` (FlowTable.rule) is a peer rather than a service. */
  producerIsPeer(rule: number): boolean {
    return rule > 0 && this.chain.detectors[rule - 1].producerIsPeer;
  }

  /** Whether the service whose bytes matched `rule` (or that `rule` matched the client's bytes to) is a tracker. */
  serviceIsTracker(rule: number): boolean {
    return rule > 0 && this.chain.detectors[rule - 1].serviceIsTracker === true;
  }

  /** Where detector `rule`'s (FlowTable.rule) scratch bytes of `flow` start in `flows.state`. */
  stateOffset(flow: number, rule: number): number {
    return flow * this.flows.stateBytes + this.chain.stateOffsets[rule - 1];
  }

  /** The strength of a decided flow's evidence, as a word ('exact', 'response', ...). */
  strengthName(flow: number): string {
    return STRENGTH_NAMES[this.flows.strength[flow]];
  }

  /** Called once per flow when it gets its verdict (read the flow from `flows`). */
  onVerdict: ((flow: number) => void) | null = null;
  /** Flow of the last packet processed, or -1 when it had none. */
  lastFlow = -1;

  /** The detectors, in order, and the loop that runs them; replaced whole by `replaceDetectors`. */
  private chain: DetectorChain;
  private readonly context = new InspectContext();

  constructor(options: EngineOptions = {}) {
    this.clock = options.clock ?? new Clock();
    this.chain = new DetectorChain(options.detectors ?? DETECTORS);
    this.ruleNames = ['', ...this.chain.detectors.map((d) => d.name)];
    this.flows = new FlowTable(options.flowCapacity ?? 1 << 20, options.idleTimeoutMs ?? 120_000, this.chain.stateBytes, this.clock);
    const peerCapacity = options.peerCapacity ?? 1 << 16;
    const peerTtlMs = options.peerTtlMs ?? 3_600_000;
    this.proven = new PeerCache(peerCapacity, peerTtlMs, this.clock, options.isAllowlisted, false, options.provenMemory);
    this.announced = new PeerCache(peerCapacity, peerTtlMs, this.clock, options.isAllowlisted, true, options.listedMemory);
    this.torrenting = new TorrentingHosts(peerCapacity, peerTtlMs, this.clock, options.isAllowlisted, options.torrentingMemory);
    this.context.pkt = this.packet;
    this.context.state = this.flows.state;
    this.context.peers = new PeerLists(this.announced, this.packet);
    this.context.proven = this.proven;
    this.context.torrenting = this.torrenting;
  }

  /**
   * Runs `detectors` from the next packet on (a reload: the name rules over another TRACKER_DOMAINS),
   * keeping every flow, verdict and peer. The new chain must have the old one's shape (the same
   * rules, each with as many state bytes), since every flow's state is laid out by it; a RangeError
   * says where it differs. A replaced detector with state of its own gives up on the flows still
   * undecided: what it wrote there was the old instance's (a name matcher's state is an index into
   * its old automaton), so those flows are left to the other rules; new flows get the new ones.
   */
  replaceDetectors(detectors: readonly Detector[]): void {
    const old = this.chain.detectors;
    const differs = detectors.length !== old.length ? -2 : detectors.findIndex((d, i) => d.name !== old[i].name || d.stateBytes !== old[i].stateBytes);
    if (differs !== -1) throw new RangeError(differs === -2 ? `the new chain has ${detectors.length} rules, the running one ${old.length}` : `rule ${differs} is ${detectors[differs].name} (${detectors[differs].stateBytes} state bytes), not ${old[differs].name} (${old[differs].stateBytes})`);
    let stale = 0;
    detectors.forEach((d, i) => {
      if (d !== old[i] && d.stateBytes > 0) stale |= 1 << i;
    });
    this.chain = new DetectorChain(detectors);
    if (stale === 0) return;
    const { verdict, detectorsDone } = this.flows;
    for (let flow = 0; flow < verdict.length; flow++) if (verdict[flow] === VERDICT_UNDECIDED) detectorsDone[flow] |= stale;
  }

  /** Forgets every flow and peer: a new capture file is a new network. */
  reset(): void {
    this.flows.clear();
    this.proven.clear();
    this.announced.clear();
    this.torrenting.clear();
  }

  /**
   * Inspects one frame at buf[off, off + len) of the given link type, seen at `clock.nowMs`.
   * Returns the verdict of its flow: VERDICT_UNDECIDED, VERDICT_CLEAN, VERDICT_BITTORRENT or VERDICT_NO_FLOW.
   */
  process(buf: Uint8Array, off: number, len: number, linkType: number): number {
    const flow = this.track(buf, off, len, linkType);
    return flow < 0 ? VERDICT_NO_FLOW : this.examine(flow);
  }

  /**
   * Decodes one frame and counts it in its flow, without inspecting it; returns the flow, or -1
   * when the packet belongs to none. `packet` and the table's `direction` and `created` describe it
   * until the next call.
   */
  track(buf: Uint8Array, off: number, len: number, linkType: number): number {
    const pkt = this.packet;
    if (this.decoder.decode(buf, off, len, linkType, pkt) !== DECODED_TCP_UDP) {
      this.lastFlow = -1;
      return -1;
    }
    const flow = this.flows.track(pkt);
    this.lastFlow = flow;
    return flow;
  }

  /** Inspects the packet `track` just counted in `flow`; returns the flow's verdict. */
  examine(flow: number): number {
    const flows = this.flows;
    // A first packet with payload goes through the whole chain, where a protocol names it first.
    if (this.packet.payloadLen === 0) {
      if (flows.created) this.inspectEndpoints(flow);
      return flows.verdict[flow];
    }
    const verdict = flows.verdict[flow];
    if (verdict === VERDICT_UNDECIDED) return this.inspect(flow);
    if (verdict === VERDICT_BITTORRENT && this.chain.learns(flows.rule[flow] - 1)) {
      this.fillContext(flow);
      this.chain.learn(this.context, flow * flows.stateBytes, flows.rule[flow] - 1);
    }
    return verdict;
  }

  private fillContext(flow: number): void {
    const flows = this.flows;
    const ctx = this.context;
    const dir = flows.direction;
    ctx.flow = flow;
    ctx.dir = dir;
    ctx.dirIndex = flows.payloadPackets[flow * 2 + dir] - 1;
    ctx.flowIndex = flows.payloadPackets[flow * 2] + flows.payloadPackets[flow * 2 + 1] - 1;
    ctx.otherSeen = flows.packets[flow * 2 + (dir ^ 1)] > 0;
    ctx.synSeen = ((flows.tcpFlags[flow * 2] | flows.tcpFlags[flow * 2 + 1]) & TCP_SYN) !== 0;
  }

  /** A new flow's first packet when it carries no payload (a SYN): the detectors that know peers by their endpoints. */
  private inspectEndpoints(flow: number): void {
    const matched = this.chain.matchEndpoints(this.context);
    if (matched >= 0) this.match(flow, matched);
  }

  /** Runs the detectors still interested in the flow over the current payload packet. */
  private inspect(flow: number): number {
    const flows = this.flows;
    const chain = this.chain;
    this.fillContext(flow);
    const outcome = chain.run(this.context, flow * flows.stateBytes, flows.detectorsDone[flow]);
    flows.detectorsDone[flow] = chain.done;
    if (outcome === MATCH) return this.match(flow, chain.matched);
    if (outcome === GIVE_UP) return this.decide(flow, VERDICT_CLEAN, 0);
    return VERDICT_UNDECIDED;
  }

  /** Detector i matched the current packet: its evidence (ctx.strength, the packet's sender) decides the flow. */
  private match(flow: number, detector: number): number {
    const strength = this.context.strength;
    this.flows.strength[flow] = strength;
    this.flows.producer[flow] = this.flows.direction;
    if (strength === STRENGTH_EXACT || strength === STRENGTH_RESPONSE) this.markTorrenting(detector);
    return this.decide(flow, VERDICT_BITTORRENT, detector + 1);
  }

  /**
   * Protocol bytes: the flow's initiator is torrenting (a client talking to a peer, a tracker or
   * through a proxy), and so is its responder when that is a peer rather than a service.
   */
  private markTorrenting(detector: number): void {
    const pkt = this.packet;
    const fromInitiator = this.flows.direction === 0;
    this.torrenting.mark(pkt.family, pkt.buf, fromInitiator ? pkt.srcOff : pkt.dstOff);
    if (this.chain.detectors[detector].producerIsPeer) this.torrenting.mark(pkt.family, pkt.buf, fromInitiator ? pkt.dstOff : pkt.srcOff);
  }

  private decide(flow: number, verdict: number, rule: number): number {
    this.flows.verdict[flow] = verdict;
    this.flows.rule[flow] = rule;
    if (this.onVerdict !== null) this.onVerdict(flow);
    return verdict;
  }
}
