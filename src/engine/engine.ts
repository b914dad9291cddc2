import { GIVE_UP, InspectContext, MATCH, OVER_TCP, OVER_UDP, STRENGTH_NAMES, type Detector } from '../detect/detector.js';
import { DETECTORS } from '../detect/registry.js';
import { Clock } from '../flow/clock.js';
import { PeerCache, PeerLists } from '../flow/peers.js';
import { FlowTable } from '../flow/table.js';
import { PacketDecoder } from '../packet/decode.js';
import { DECODED_TCP_UDP, IPPROTO_TCP, PacketInfo } from '../packet/packet.js';

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
  readonly decoder = new PacketDecoder();
  readonly packet = new PacketInfo();
  readonly ruleNames: RuleNames;
  /** Whether the end whose bytes matched `rule` (FlowTable.rule) is a peer rather than a service. */
  producerIsPeer(rule: number): boolean {
    return rule > 0 && this.detectors[rule - 1].producerIsPeer;
  }

  /** Where detector `rule`'s (FlowTable.rule) scratch bytes of `flow` start in `flows.state`. */
  stateOffset(flow: number, rule: number): number {
    return flow * this.flows.stateBytes + this.stateOffsets[rule - 1];
  }

  /** The strength of a decided flow's evidence, as a word ('exact', 'response', ...). */
  strengthName(flow: number): string {
    return STRENGTH_NAMES[this.flows.strength[flow]];
  }

  /** Called once per flow when it gets its verdict (read the flow from `flows`). */
  onVerdict: ((flow: number) => void) | null = null;
  /** Flow of the last packet processed, or -1 when it had none. */
  lastFlow = -1;

  private readonly detectors: readonly Detector[];
  private readonly stateOffsets: Int32Array;
  private readonly tcpDetectorsMask: number;
  private readonly udpDetectorsMask: number;
  /** Bit i set: detector i has a learn() for the flows it matched. */
  private readonly learnersMask: number;
  /** Bit i set: detector i can decide a flow from its endpoints at its first packet. */
  private readonly endpointsMask: number;
  private readonly context = new InspectContext();

  constructor(options: EngineOptions = {}) {
    this.clock = options.clock ?? new Clock();
    this.detectors = options.detectors ?? DETECTORS;
    if (this.detectors.length > 31) throw new RangeError('at most 31 detectors fit the per-flow give-up mask');
    this.stateOffsets = new Int32Array(this.detectors.length);
    let stateBytes = 0;
    let tcpMask = 0;
    let udpMask = 0;
    let learnersMask = 0;
    let endpointsMask = 0;
    this.detectors.forEach((detector, i) => {
      if (detector.learn !== undefined) learnersMask |= 1 << i;
      if (detector.matchesEndpoints !== undefined) endpointsMask |= 1 << i;
      this.stateOffsets[i] = stateBytes;
      stateBytes += detector.stateBytes;
      if (detector.transports & OVER_TCP) tcpMask |= 1 << i;
      if (detector.transports & OVER_UDP) udpMask |= 1 << i;
    });
    this.tcpDetectorsMask = tcpMask;
    this.udpDetectorsMask = udpMask;
    this.learnersMask = learnersMask;
    this.endpointsMask = endpointsMask;
    this.ruleNames = ['', ...this.detectors.map((d) => d.name)];
    this.flows = new FlowTable(options.flowCapacity ?? 1 << 20, options.idleTimeoutMs ?? 120_000, stateBytes, this.clock);
    const peerCapacity = options.peerCapacity ?? 1 << 16;
    const peerTtlMs = options.peerTtlMs ?? 3_600_000;
    this.proven = new PeerCache(peerCapacity, peerTtlMs, this.clock, options.isAllowlisted);
    this.announced = new PeerCache(peerCapacity, peerTtlMs, this.clock, options.isAllowlisted, true);
    this.context.pkt = this.packet;
    this.context.state = this.flows.state;
    this.context.peers = new PeerLists(this.announced, this.packet);
    this.context.proven = this.proven;
  }

  /** Forgets every flow and peer: a new capture file is a new network. */
  reset(): void {
    this.flows.clear();
    this.proven.clear();
    this.announced.clear();
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
      if (flows.created && this.endpointsMask !== 0) this.inspectEndpoints(flow);
      return flows.verdict[flow];
    }
    const verdict = flows.verdict[flow];
    if (verdict === VERDICT_UNDECIDED) return this.inspect(flow);
    if (verdict === VERDICT_BITTORRENT && (this.learnersMask & (1 << (flows.rule[flow] - 1))) !== 0) this.learn(flow);
    return verdict;
  }

  /** Shows a later payload packet of a matched flow to the detector that matched it, for its peer lists. */
  private learn(flow: number): void {
    const index = this.flows.rule[flow] - 1;
    const detector = this.detectors[index];
    const ctx = this.context;
    this.fillContext(flow);
    if (ctx.flowIndex >= detector.budget) return;
    ctx.stateOff = flow * this.flows.stateBytes + this.stateOffsets[index];
    detector.learn!(ctx);
  }

  private fillContext(flow: number): void {
    const flows = this.flows;
    const ctx = this.context;
    const dir = flows.direction;
    ctx.flow = flow;
    ctx.dir = dir;
    ctx.dirIndex = flows.payloadPackets[flow * 2 + dir] - 1;
    ctx.flowIndex = flows.payloadPackets[flow * 2] + flows.payloadPackets[flow * 2 + 1] - 1;
  }

  /** A new flow's first packet when it carries no payload (a SYN): the detectors that know peers by their endpoints. */
  private inspectEndpoints(flow: number): void {
    const ctx = this.context;
    const candidates = (this.packet.l4 === IPPROTO_TCP ? this.tcpDetectorsMask : this.udpDetectorsMask) & this.endpointsMask;
    const detectors = this.detectors;
    for (let i = 0; i < detectors.length; i++) {
      if ((candidates & (1 << i)) === 0) continue;
      ctx.strength = detectors[i].strength;
      if (!detectors[i].matchesEndpoints!(ctx)) continue;
      this.match(flow, i);
      return;
    }
  }

  /** Runs the detectors still interested in the flow over the current payload packet. */
  private inspect(flow: number): number {
    const flows = this.flows;
    const ctx = this.context;
    this.fillContext(flow);
    const candidates = this.packet.l4 === IPPROTO_TCP ? this.tcpDetectorsMask : this.udpDetectorsMask;
    let done = flows.detectorsDone[flow];
    const detectors = this.detectors;
    for (let i = 0; i < detectors.length; i++) {
      const bit = 1 << i;
      if ((candidates & bit) === 0 || (done & bit) !== 0) continue;
      const detector = detectors[i];
      if (ctx.flowIndex >= detector.budget) {
        done |= bit;
        continue;
      }
      ctx.stateOff = flow * flows.stateBytes + this.stateOffsets[i];
      ctx.strength = detector.strength;
      const outcome = detector.inspect(ctx);
      if (outcome === MATCH) {
        flows.detectorsDone[flow] = done;
        return this.match(flow, i);
      }
      if (outcome === GIVE_UP) done |= bit;
    }
    flows.detectorsDone[flow] = done;
    if ((candidates & ~done) === 0) return this.decide(flow, VERDICT_CLEAN, 0);
    return VERDICT_UNDECIDED;
  }

  /** Detector i matched the current packet: its evidence (ctx.strength, the packet's sender) decides the flow. */
  private match(flow: number, detector: number): number {
    this.flows.strength[flow] = this.context.strength;
    this.flows.producer[flow] = this.flows.direction;
    return this.decide(flow, VERDICT_BITTORRENT, detector + 1);
  }

  private decide(flow: number, verdict: number, rule: number): number {
    this.flows.verdict[flow] = verdict;
    this.flows.rule[flow] = rule;
    if (this.onVerdict !== null) this.onVerdict(flow);
    return verdict;
  }
}
