/**
 * One queue's data plane, in a worker thread of its own: the broker channel, the engine that
 * decides the queue's packets (a connection always hashes to the same queue), and the verdicts.
 * It tells the main thread about detections; the main thread owns rules, logs and bans.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CidrSet, PRIVATE_CIDRS } from '../config/cidr.js';
import type { Config } from '../config/config.js';
import { TrackerAddresses } from '../detect/domains.js';
import { detectorChain } from '../detect/registry.js';
import { Clock } from '../flow/clock.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../engine/engine.js';
import { MARK_BITTORRENT, MARK_CLEAN, MARK_MASK } from '../firewall/rules.js';
import { formatAddress } from '../flow/address.js';
import { IPPROTO_TCP } from '../packet/packet.js';
import { LINKTYPE_RAW } from '../packet/linktype.js';
import { NfQueue, VERDICT_DROP, VERDICT_REPEAT, type PacketBatch } from '../queue/nfqueue.js';
import type { Detection } from './detection-log.js';

export interface WorkerSetup {
  config: Config;
  queue: number;
}

/** An endpoint of a detected flow, with what the ban policy needs to know about it. */
export interface DetectedEndpoint {
  address: string;
  local: boolean;
  allowlisted: boolean;
}

/** Messages from a queue worker to the main thread. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'failed'; reason: string }
  /** `detection.interface` is left for the main thread to name from `ifindex`: looking names up blocks. */
  | { type: 'detection'; detection: Detection; ifindex: number; bannable: boolean; endpoints: DetectedEndpoint[] }
  /** A listed tracker name resolved to this address (the resolver itself is never reported). */
  | { type: 'tracker-address'; endpoint: DetectedEndpoint }
  | { type: 'stats'; stats: Record<string, number> }
  | { type: 'broker-exit'; reason: string }
  | { type: 'stopped'; stats: Record<string, number> };

/** Messages from the main thread. */
export type WorkerCommand = { type: 'stats' } | { type: 'stop' };

const { config, queue: queueNumber } = workerData as WorkerSetup;
const port = parentPort!;
const post = (message: WorkerMessage) => port.postMessage(message);

const allow = new CidrSet(config.allowCidrs);
// Without LOCAL_CIDRS, the private ranges are where a gateway's own users are.
const local = new CidrSet(config.localCidrs.length > 0 ? config.localCidrs : PRIVATE_CIDRS);
const clock = new Clock();

/**
 * Tracker addresses from DNS answers, each reported to the main thread once while it is remembered;
 * never an address of the DNS flow itself (a resolver answering about itself is still the resolver).
 */
class ReportedTrackerAddresses extends TrackerAddresses {
  override add(family: number, buf: Uint8Array, off: number): boolean {
    const pkt = engine.packet;
    const length = family === 4 ? 4 : 16;
    if (sameBytes(buf, off, pkt.buf, pkt.srcOff, length) || sameBytes(buf, off, pkt.buf, pkt.dstOff, length)) return false;
    if (this.has(family, buf, off) || !super.add(family, buf, off)) return false;
    const address = buf.slice(off, off + length);
    post({
      type: 'tracker-address',
      endpoint: { address: formatAddress(family, address), local: local.contains(family, address, 0), allowlisted: allow.contains(family, address, 0) },
    });
    return true;
  }
}

function sameBytes(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

const engine = new Engine({
  clock,
  detectors: detectorChain({
    blockSocks: config.blockSocks,
    trackerDomains: config.trackerDomains,
    trackerAddresses: new ReportedTrackerAddresses(4096, config.banDurationS * 1000, clock),
  }),
  flowCapacity: config.flowCapacity,
  idleTimeoutMs: config.flowIdleTimeoutS * 1000,
  peerCapacity: config.peerCacheSize,
  peerTtlMs: config.peerCacheTtlS * 1000,
  isAllowlisted: (family, buf, off) => allow.contains(family, buf, off),
});
/** The batch and packet being decided, for the detection record. */
let currentBatch: PacketBatch | null = null;
let currentIndex = 0;

/** Set while a packet is processed if it decided its flow: only that packet carries the mark. */
let decidedNow = false;

engine.onVerdict = (flow) => {
  decidedNow = true;
  if (engine.flows.verdict[flow] === VERDICT_BITTORRENT) reportDetection(flow);
};

/**
 * The batch handler: one engine pass per packet. The packet that decides its flow is repeated
 * through the hook with the decision in its mark, which the chain saves into the connection (see
 * firewall/rules.ts); a later packet of a decided flow that still reaches the queue (a UDP flow
 * whose dropped first packet left no connection to mark) gets a plain verdict, which batches.
 */
function decide(batch: PacketBatch): void {
  engine.clock.nowMs = Date.now();
  currentBatch = batch;
  for (let i = 0; i < batch.count; i++) {
    currentIndex = i;
    decidedNow = false;
    const verdict = engine.process(batch.data, batch.offset(i), batch.length(i), LINKTYPE_RAW);
    if (verdict === VERDICT_BITTORRENT) {
      // Monitor only: no mark either, so the rest of the flow is still seen (and learned from).
      if (config.monitorOnly) continue;
      if (decidedNow) batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_BITTORRENT);
      else batch.setVerdict(i, VERDICT_DROP, 0);
    } else if (verdict === VERDICT_CLEAN && decidedNow) {
      batch.setVerdict(i, VERDICT_REPEAT, 0, MARK_CLEAN);
    }
  }
  currentBatch = null;
}

/** A flow was just found to be BitTorrent, while its deciding packet is still in hand. */
function reportDetection(flow: number): void {
  const flows = engine.flows;
  const pkt = engine.packet;
  const family = flows.family(flow);
  const endpoints = [0, 1].map((dir) => {
    const address = new Uint8Array(16);
    flows.address(flow, dir, address);
    return { address: formatAddress(family, address), local: local.contains(family, address, 0), allowlisted: allow.contains(family, address, 0) };
  });
  const detection: Detection = {
    timeMs: Date.now(),
    interface: '',
    protocol: flows.l4(flow) === IPPROTO_TCP ? 'TCP' : 'UDP',
    source: endpoints[0].address,
    sourcePort: flows.port(flow, 0),
    destination: endpoints[1].address,
    destinationPort: flows.port(flow, 1),
    rule: engine.ruleNames[flows.rule[flow]],
    action: config.monitorOnly ? 'monitor only (accepted)' : 'dropped',
    // A copy of just these bytes: a view would make postMessage clone the whole shared memory.
    payload: new Uint8Array(pkt.buf.subarray(pkt.payloadOff, pkt.payloadOff + pkt.payloadLen)),
  };
  const ifindex = currentBatch === null ? 0 : currentBatch.ifindex(currentIndex);
  post({ type: 'detection', detection, ifindex, bannable: engine.ruleBannable(flows.rule[flow]), endpoints });
}

function stats(queue: NfQueue): Record<string, number> {
  const flows = engine.flows;
  return { queue: queueNumber, ...queue.stats(), flows: flows.size, flowsEvicted: flows.evicted, peersCached: engine.peers.inserts };
}

try {
  const queue = await NfQueue.open(
    {
      queue: queueNumber,
      copyRange: 0xffff,
      maxLen: config.queueMaxLen,
      receiveBuffer: 32 << 20,
      verdictTimeoutMs: config.verdictTimeoutMs,
      failOpen: true,
      gso: true,
      connmarkMask: MARK_MASK,
    },
    decide,
    (reason) => post({ type: 'broker-exit', reason }),
  );
  port.on('message', (command: WorkerCommand) => {
    if (command.type === 'stats') post({ type: 'stats', stats: stats(queue) });
    else
      void queue.close().then(() => {
        post({ type: 'stopped', stats: stats(queue) });
        port.close();
      });
  });
  post({ type: 'ready' });
} catch (error) {
  post({ type: 'failed', reason: (error as Error).message });
  port.close();
}
