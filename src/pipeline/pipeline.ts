/**
 * The data path, top-down, behind every packet source (NFQUEUE batches inline, capture files in
 * `btwall scan`): packet -> flow -> detectors (evidence) -> policy (decision) -> what the source
 * does with the packet. The pipeline carries out the decision's memory (proven and listed
 * peers) itself and hands every detection, with its decision, to `onDetection`, where the daemon
 * logs it and bans, and a scan reports it. It decides nothing: src/policy/ does.
 */
import type { Config } from '../config/config.js';
import { CidrSet } from '../config/cidr.js';
import { STRENGTH_NAMES, type Detector } from '../detect/detector.js';
import { detectorChain } from '../detect/registry.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../engine/engine.js';
import { formatAddress } from '../flow/address.js';
import { Clock } from '../flow/clock.js';
import { FlowTable } from '../flow/table.js';
import { IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../packet/packet.js';
import type { DroppedSegment } from '../bans/xdp.js';
import { OperatorRulesDetector } from '../detect/operator-rules.js';
import type { OperatorRule } from '../rules/file.js';
import { BanRateTable } from '../policy/ban-rate.js';
import { Evidence, Policy, RATE_HOSTS, type Decision } from '../policy/policy.js';
import { policySettings, type HostFacts } from '../policy/settings.js';
import { allocateTables, tablesBytes, type SharedTables } from './shared-tables.js';

/** What the packet source does with the packet `handle` was given. */
export const PACKET_ACCEPT = 0;
export const PACKET_DROP = 1;
/** Accept it, and mark its connection clean: the kernel lets the rest skip the queue. */
export const PACKET_ACCEPT_MARK_CLEAN = 2;
/** Drop it, and mark its connection BitTorrent: the kernel drops the rest. */
export const PACKET_MARK_BITTORRENT = 3;
/** Accept it, and mark its connection throttled: the kernel limits it and the rest to RATE. */
export const PACKET_MARK_THROTTLE = 4;

/** The arrival interface of each direction of a flow: two 32-bit words. */
const ARRIVED_ON_BYTES_PER_FLOW = 8;
/**
 * A flow decided BitTorrent: the PACKET_* action its later packets get, and, above ACTION_MASK, how
 * many of each direction's are still to be answered with resets (one byte per flow: two bits per
 * direction from ANSWERS_SHIFT).
 */
const ACTION_BYTES_PER_FLOW = 1;
const ACTION_MASK = 0x0f;
const ANSWERS_SHIFT = 4;
const ANSWERS_MASK = 0b11;
/**
 * Later packets of a cut connection answered with resets, per direction: the deciding packet's
 * numbers are stale once the other end's data that was in flight arrives (the end then ignores the
 * reset that carried them), and the next packet it sends, which reaches the queue once its
 * conntrack entry (and mark) went, carries the numbers it expects. Per direction, so that the
 * other end's data queued behind the deciding packet cannot use them all up; a few are enough:
 * the mark is set again at them.
 */
const ANSWERED_PACKETS = 3;
const ANSWERS_BOTH_WAYS = (ANSWERED_PACKETS << ANSWERS_SHIFT) | (ANSWERED_PACKETS << (ANSWERS_SHIFT + 2));

/** One flow found to be BitTorrent, with what the policy decided; made once per flow, never per packet. */
export interface DetectionEvent {
  timeMs: number;
  /** The flow's slot in the engine's table, until the flow is released. */
  flow: number;
  l4: 'tcp' | 'udp';
  tunnelled: boolean;
  initiator: string;
  initiatorPort: number;
  responder: string;
  responderPort: number;
  /** Which ends are the gateway's users, by the policy's LOCAL_CIDRS. */
  initiatorLocal: boolean;
  responderLocal: boolean;
  rule: string;
  strength: string;
  /** Whose bytes matched. */
  producer: 'initiator' | 'responder';
  /** Packets of the flow seen so far, both ways, the deciding one included. */
  flowPackets: number;
  decision: Decision;
  /** A copy of the deciding packet's payload. */
  payload: Uint8Array;
  /**
   * TCP: the deciding packet's sequence number, the one just past it (its payload, SYN and FIN
   * counted), and its acknowledgement number: what each end expects next, for a reset.
   */
  tcpSeq: number;
  tcpSeqEnd: number;
  tcpAck: number;
}

export class Pipeline {
  readonly engine: Engine;
  readonly policy: Policy;
  /** Every detection, once per flow, while its deciding packet is in hand. */
  onDetection: ((event: DetectionEvent) => void) | null = null;
  /** A later packet of a connection the decision cut, dropped: its numbers, for the resets that answer it. */
  onCutSegment: ((segment: DroppedSegment) => void) | null = null;

  private readonly evidence = new Evidence();
  /**
   * Per flow and direction: the interface index its first packet came in on (0 when the source
   * does not say, as a capture file does not). Both ends' packets on one interface means one
   * side's were made up on that side of the gateway.
   */
  private readonly arrivedOn: Uint32Array;
  /** The decision made while the current packet was examined, if it decided its flow. */
  private decidedNow: Decision | null = null;
  /**
   * Per flow decided BitTorrent: the action for its packets that still reach the pipeline (a
   * connection whose mark went with its deleted conntrack entry is marked again).
   */
  private readonly later: Uint8Array;
  /** RULES_FILE's rules, when there is a file: `operatorRules.setRules` reloads them. */
  readonly operatorRules: OperatorRulesDetector | null;
  /** ALLOW_CIDRS: never remembered as peers. */
  private allow: CidrSet;
  /** The configuration in force (`reconfigure`). */
  private config: Config;

  /** `tables`: the daemon's shared tables (shared-tables.ts); private ones for a scan. */
  constructor(
    config: Config,
    host: HostFacts,
    clock = new Clock(),
    tables: SharedTables = allocateTables(config, false),
    operatorRules: readonly OperatorRule[] | null = null,
  ) {
    this.allow = new CidrSet(config.allowCidrs);
    this.config = config;
    this.operatorRules = operatorRules === null ? null : new OperatorRulesDetector(operatorRules);
    this.engine = new Engine({
      clock,
      detectors: this.detectors(config),
      flowCapacity: config.flowCapacity,
      idleTimeoutMs: config.flowIdleTimeoutS * 1000,
      peerCapacity: config.peerCacheSize,
      peerTtlMs: config.peerCacheTtlS * 1000,
      isAllowlisted: (family, buf, off) => this.allow.contains(family, buf, off),
      provenMemory: tables.proven,
      listedMemory: tables.listed,
      torrentingMemory: tables.torrenting,
    });
    this.policy = new Policy(policySettings(config, host), clock, new BanRateTable(RATE_HOSTS, tables.banRate));
    this.arrivedOn = new Uint32Array((this.engine.flows.capacity * ARRIVED_ON_BYTES_PER_FLOW) / 4);
    this.later = new Uint8Array(this.engine.flows.capacity * ACTION_BYTES_PER_FLOW);
    this.engine.onVerdict = (flow) => this.onVerdict(flow);
  }

  /**
   * One frame of the given link type, seen at `engine.clock.nowMs`, that came in on interface
   * `ifindex` (0: unknown): returns a PACKET_* action.
   */
  handle(buf: Uint8Array, off: number, len: number, linkType: number, ifindex = 0): number {
    const flows = this.engine.flows;
    const flow = this.engine.track(buf, off, len, linkType);
    if (flow < 0) return PACKET_ACCEPT;
    const slot = flow * 2 + flows.direction;
    // A reused slot must not keep the other direction's interface from the flow before.
    if (flows.created) this.arrivedOn[slot ^ 1] = 0;
    if (flows.packets[slot] === 1) this.arrivedOn[slot] = ifindex;
    return this.decideTracked(flow);
  }

  /**
   * A reload: the policy's settings and the allowlist from `config` (and the host's facts), and
   * the name rules rebuilt when TRACKER_DOMAINS changed. Flows, verdicts and peers stay. Settings
   * that shape the tables or the chain (FLOW_CAPACITY, BLOCK_SOCKS...) are the restart's: the
   * daemon passes them unchanged.
   */
  reconfigure(config: Config, host: HostFacts): void {
    if (config.trackerDomains.join() !== this.config.trackerDomains.join()) this.engine.replaceDetectors(this.detectors(config));
    this.allow = new CidrSet(config.allowCidrs);
    this.policy.setSettings(policySettings(config, host));
    this.config = config;
  }

  /** The detector chain of a configuration, over this pipeline's operator rules. */
  private detectors(config: Config): readonly Detector[] {
    return detectorChain({ blockSocks: config.blockSocks, trackerDomains: config.trackerDomains, operatorRules: this.operatorRules });
  }

  /** Memory of this pipeline's own tables (flows, arrival interfaces; not the shared ones), bytes. */
  get memoryBytes(): number {
    return this.engine.flows.capacity * this.engine.flows.bytesPerFlow + this.arrivedOn.byteLength + this.later.byteLength;
  }

  /**
   * What the pipelines of this configuration will take: each queue's own tables (`memoryBytes`
   * once built), the tables all queues share, and the largest single array (the detectors'
   * per-flow state), computed without allocating anything.
   */
  static plannedMemory(config: Pick<Config, 'flowCapacity' | 'peerCacheSize' | 'blockSocks' | 'trackerDomains' | 'rulesFile'>): { perQueueBytes: number; sharedBytes: number; largestArrayBytes: number } {
    const operatorRules = config.rulesFile === '' ? null : new OperatorRulesDetector([]);
    const stateBytes = detectorChain({ blockSocks: config.blockSocks, trackerDomains: config.trackerDomains, operatorRules }).reduce((sum, d) => sum + d.stateBytes, 0);
    const flows = config.flowCapacity;
    return {
      perQueueBytes: flows * FlowTable.bytesPerFlowFor(flows, stateBytes) + flows * (ARRIVED_ON_BYTES_PER_FLOW + ACTION_BYTES_PER_FLOW),
      sharedBytes: tablesBytes(config),
      largestArrayBytes: flows * stateBytes,
    };
  }

  /** The action for the packet `engine.track` just counted in `flow`. */
  decideTracked(flow: number): number {
    this.decidedNow = null;
    const verdict = this.engine.examine(flow);
    const decision = this.decidedNow as Decision | null;
    if (verdict === VERDICT_BITTORRENT) {
      // A later packet of the flow: what its decision said (a tunnelled flow has no mark to say it).
      if (decision === null) return this.laterPacket(flow);
      const action = bitTorrentAction(decision);
      this.later[flow] = decision.cut ? action | ANSWERS_BOTH_WAYS : action;
      return action;
    }
    return verdict === VERDICT_CLEAN && decision !== null && decision.markConnection ? PACKET_ACCEPT_MARK_CLEAN : PACKET_ACCEPT;
  }

  /** The action for a later packet of a flow decided BitTorrent; a cut connection's first few each way are answered (ANSWERED_PACKETS). */
  private laterPacket(flow: number): number {
    const later = this.later[flow];
    const pkt = this.engine.packet;
    const shift = ANSWERS_SHIFT + 2 * this.engine.flows.direction;
    if (((later >> shift) & ANSWERS_MASK) !== 0 && (pkt.tcpFlags & TCP_RST) === 0) {
      this.later[flow] = later - (1 << shift);
      const family = pkt.family === 4 ? 4 : 6;
      this.onCutSegment?.({
        family,
        source: formatAddress(family, pkt.buf, pkt.srcOff),
        destination: formatAddress(family, pkt.buf, pkt.dstOff),
        sourcePort: pkt.sport,
        destinationPort: pkt.dport,
        seq: pkt.tcpSeq,
        ack: pkt.tcpAck,
        flags: pkt.tcpFlags,
        length: pkt.payloadLen,
      });
    }
    return later & ACTION_MASK;
  }

  private onVerdict(flow: number): void {
    const engine = this.engine;
    const pkt = engine.packet;
    if (engine.flows.verdict[flow] === VERDICT_CLEAN) {
      this.decidedNow = this.policy.clean(pkt.tunnelDepth > 0);
      return;
    }
    const e = this.fillEvidence(flow);
    const decision = this.policy.decide(e);
    this.decidedNow = decision;
    const remembered = decision.remember;
    if (remembered !== null) {
      const end = remembered.end;
      if (remembered.as === 'proven') engine.proven.add(e.family, e.addresses[end], 0, e.ports[end]);
      else engine.announced.add(e.family, e.addresses[end], 0, e.ports[end], e.family, e.addresses[1 - end], 0);
    }
    this.onDetection?.(this.event(flow, e, decision));
  }

  /** The evidence of the flow just decided BitTorrent, from the table and the deciding packet. */
  private fillEvidence(flow: number): Evidence {
    const engine = this.engine;
    const flows = engine.flows;
    const pkt = engine.packet;
    const e = this.evidence;
    const rule = flows.rule[flow];
    e.rule = engine.ruleNames[rule];
    e.ruleAction = null;
    const operator = this.operatorRules;
    if (operator !== null && engine.ruleNames[rule] === operator.name) {
      const matched = operator.matched(flows.state, engine.stateOffset(flow, rule));
      if (matched !== null) {
        e.rule = matched.name;
        e.ruleAction = matched.action;
      }
    }
    e.strength = flows.strength[flow];
    e.producerIsPeer = engine.producerIsPeer(rule);
    e.serviceIsTracker = engine.serviceIsTracker(rule);
    e.tcp = flows.l4(flow) === IPPROTO_TCP;
    e.tunnelled = pkt.tunnelDepth > 0;
    e.family = flows.family(flow) === 4 ? 4 : 6;
    for (let dir = 0; dir < 2; dir++) {
      flows.address(flow, dir, e.addresses[dir]);
      e.ports[dir] = flows.port(flow, dir);
    }
    const producer = flows.producer[flow];
    const other = 1 - producer;
    e.producer = producer;
    const initiatorFlags = flows.tcpFlags[flow * 2];
    const responderFlags = flows.tcpFlags[flow * 2 + 1];
    e.handshakeSeen = e.tcp && (initiatorFlags & TCP_SYN) !== 0 && (responderFlags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK);
    // The deciding packet is the producer's: it must acknowledge the other end's SYN (ISN + 1),
    // plus at most what the other end has sent since (and its FIN).
    const acked = (pkt.tcpAck - flows.synSeq[flow * 2 + other] - 1) >>> 0;
    e.acknowledgesOtherSyn =
      e.tcp && (pkt.tcpFlags & TCP_ACK) !== 0 && (flows.tcpFlags[flow * 2 + other] & TCP_SYN) !== 0 && acked <= flows.payloadBytes[flow * 2 + other] + 1;
    const producerIf = this.arrivedOn[flow * 2 + producer];
    e.sameInterfaceBothWays = producerIf !== 0 && producerIf === this.arrivedOn[flow * 2 + other];
    e.established = e.tcp && (pkt.tcpFlags & TCP_ACK) !== 0;
    return e;
  }

  private event(flow: number, e: Evidence, decision: Decision): DetectionEvent {
    const engine = this.engine;
    const flows = engine.flows;
    const pkt = engine.packet;
    return {
      timeMs: engine.clock.nowMs,
      flow,
      l4: e.tcp ? 'tcp' : 'udp',
      tunnelled: e.tunnelled,
      initiator: formatAddress(e.family, e.addresses[0]),
      initiatorPort: e.ports[0],
      responder: formatAddress(e.family, e.addresses[1]),
      responderPort: e.ports[1],
      initiatorLocal: this.policy.isLocal(e.family, e.addresses[0]),
      responderLocal: this.policy.isLocal(e.family, e.addresses[1]),
      rule: e.rule,
      strength: STRENGTH_NAMES[e.strength],
      producer: e.producer === 0 ? 'initiator' : 'responder',
      flowPackets: flows.packets[flow * 2] + flows.packets[flow * 2 + 1],
      decision,
      // A copy of just these bytes: a view of a queue's shared memory would be cloned whole when
      // posted (33 MB per detection). Buffer's slice is such a view; new Uint8Array(view) copies.
      payload: new Uint8Array(pkt.buf.subarray(pkt.payloadOff, pkt.payloadOff + pkt.payloadLen)),
      tcpSeq: pkt.tcpSeq,
      tcpSeqEnd: (pkt.tcpSeq + pkt.payloadLen + ((pkt.tcpFlags & TCP_SYN) !== 0 ? 1 : 0) + ((pkt.tcpFlags & TCP_FIN) !== 0 ? 1 : 0)) >>> 0,
      tcpAck: pkt.tcpAck,
    };
  }
}

/**
 * What a packet of a flow decided BitTorrent gets. Not enforced (monitor): nothing dropped or
 * marked, so the rest of the flow is still seen (and learned from). A throttled flow without a
 * mark (tunnelled) cannot be limited on its own: it passes.
 */
function bitTorrentAction(decision: Decision): number {
  if (!decision.enforce || decision.action === 'accept') return PACKET_ACCEPT;
  if (decision.action === 'throttle') return decision.markConnection ? PACKET_MARK_THROTTLE : PACKET_ACCEPT;
  return decision.markConnection ? PACKET_MARK_BITTORRENT : PACKET_DROP;
}
