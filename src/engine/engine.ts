import { GIVE_UP, InspectContext, MATCH, OVER_TCP, OVER_UDP, type Detector } from '../detect/detector.js';
import { DETECTORS } from '../detect/registry.js';
import { Clock } from '../flow/clock.js';
import { PeerCache } from '../flow/peers.js';
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
  /** Most BitTorrent endpoints remembered at once (default 65,536) and for how long (default 1 h). */
  peerCapacity?: number;
  peerTtlMs?: number;
  /** Operator's allowlist: an address for which this returns true is never remembered as a peer. */
  isAllowlisted?: (family: number, buf: Uint8Array, addrOff: number) => boolean;
}

/** Rule names indexed by FlowTable.rule: 0 is no rule, i + 1 is detector i. */
export type RuleNames = readonly string[];

/**
 * The detection engine shared by `btwall scan` and the inline daemon: packets in, verdicts out.
 *
 * Each packet is decoded, counted in its flow, and, while the flow is undecided and carries
 * payload, shown to every detector that has not given up on the flow, in registry order. The
 * first MATCH makes the flow BitTorrent; when every detector has given up it is clean. A flow
 * with a verdict costs one table lookup per packet from then on.
 */
export class Engine {
  /** Set it to the packet's (or the batch's) time before calling `process`. */
  readonly clock: Clock;
  readonly flows: FlowTable;
  readonly peers: PeerCache;
  readonly decoder = new PacketDecoder();
  readonly packet = new PacketInfo();
  readonly ruleNames: RuleNames;
  /** Whether the endpoints of a flow decided by `rule` (FlowTable.rule) may be banned. */
  ruleBannable(rule: number): boolean {
    return rule > 0 && this.detectors[rule - 1].bannable;
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
    this.detectors.forEach((detector, i) => {
      if (detector.learn !== undefined) learnersMask |= 1 << i;
      this.stateOffsets[i] = stateBytes;
      stateBytes += detector.stateBytes;
      if (detector.transports & OVER_TCP) tcpMask |= 1 << i;
      if (detector.transports & OVER_UDP) udpMask |= 1 << i;
    });
    this.tcpDetectorsMask = tcpMask;
    this.udpDetectorsMask = udpMask;
    this.learnersMask = learnersMask;
    this.ruleNames = ['', ...this.detectors.map((d) => d.name)];
    this.flows = new FlowTable(options.flowCapacity ?? 1 << 20, options.idleTimeoutMs ?? 120_000, stateBytes, this.clock);
    this.peers = new PeerCache(options.peerCapacity ?? 1 << 16, options.peerTtlMs ?? 3_600_000, this.clock, options.isAllowlisted);
    this.context.pkt = this.packet;
    this.context.state = this.flows.state;
    this.context.peers = this.peers;
  }

  /**
   * Inspects one frame at buf[off, off + len) of the given link type, seen at `clock.nowMs`.
   * Returns the verdict of its flow: VERDICT_UNDECIDED, VERDICT_CLEAN, VERDICT_BITTORRENT or VERDICT_NO_FLOW.
   */
  process(buf: Uint8Array, off: number, len: number, linkType: number): number {
    const pkt = this.packet;
    if (this.decoder.decode(buf, off, len, linkType, pkt) !== DECODED_TCP_UDP) {
      this.lastFlow = -1;
      return VERDICT_NO_FLOW;
    }
    const flows = this.flows;
    const flow = flows.track(pkt);
    this.lastFlow = flow;
    const verdict = flows.verdict[flow];
    if (pkt.payloadLen === 0) return verdict;
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

  /** Runs the detectors still interested in the flow over the current payload packet. */
  private inspect(flow: number): number {
    const flows = this.flows;
    const ctx = this.context;
    const dir = flows.direction;
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
      const outcome = detector.inspect(ctx);
      if (outcome === MATCH) {
        flows.detectorsDone[flow] = done;
        if (detector.provesPeers) this.rememberPeers(dir);
        return this.decide(flow, VERDICT_BITTORRENT, i + 1);
      }
      if (outcome === GIVE_UP) done |= bit;
    }
    flows.detectorsDone[flow] = done;
    if ((candidates & ~done) === 0) return this.decide(flow, VERDICT_CLEAN, 0);
    return VERDICT_UNDECIDED;
  }

  /**
   * Remembers the endpoints of the current packet's flow as peers: the responder, which listens for
   * peers, and over UDP the initiator too, which sends from the port it listens on (uTP, DHT).
   */
  private rememberPeers(dir: number): void {
    const pkt = this.packet;
    const fromInitiator = dir === 0;
    const responderAddr = fromInitiator ? pkt.dstOff : pkt.srcOff;
    const responderPort = fromInitiator ? pkt.dport : pkt.sport;
    this.peers.add(pkt.family, pkt.buf, responderAddr, responderPort);
    if (pkt.l4 !== IPPROTO_TCP) {
      this.peers.add(pkt.family, pkt.buf, fromInitiator ? pkt.srcOff : pkt.dstOff, fromInitiator ? pkt.sport : pkt.dport);
    }
  }

  private decide(flow: number, verdict: number, rule: number): number {
    this.flows.verdict[flow] = verdict;
    this.flows.rule[flow] = rule;
    if (this.onVerdict !== null) this.onVerdict(flow);
    return verdict;
  }
}
