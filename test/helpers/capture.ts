/** Runs an Engine (or the daemon's whole pipeline) over a capture file for detector tests, and lists the flows it decided. */
import { loadConfig } from '../../src/config/config.js';
import type { Detector } from '../../src/detect/detector.js';
import { Engine, VERDICT_BITTORRENT } from '../../src/engine/engine.js';
import { formatAddress } from '../../src/flow/address.js';
import { PacketDecoder } from '../../src/packet/decode.js';
import { DECODED_TCP_UDP, PacketInfo } from '../../src/packet/packet.js';
import { readCapture } from '../../src/pcap/reader.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import { NO_HOST_FACTS } from '../../src/policy/settings.js';

export interface DecidedFlow {
  /** "address:port" of the flow's initiator and responder. */
  initiator: string;
  responder: string;
  bittorrent: boolean;
  /** Rule name of a BitTorrent flow, '' for a clean one. */
  rule: string;
  /** Payload packets of the flow up to and including the one that decided it. */
  payloadPackets: number;
}

export interface ScanOptions {
  detectors?: readonly Detector[];
  /**
   * The daemon's variables: the capture goes through the pipeline `btwall scan` runs (its chain,
   * and the policy's memory of the peers a local host spoke BitTorrent to), not a bare engine.
   */
  pipelineEnv?: NodeJS.ProcessEnv;
  /** Called with each packet's 0-based index in the file: false drops the packet (a capture that started later). */
  keep?: (index: number) => boolean;
  /** Every host taken as torrenting (as if each had spoken BitTorrent before): what shape evidence alone names. */
  everyHostTorrenting?: boolean;
  /** Called with each TCP/UDP packet's source address: false drops the packet (a route that shows one direction). */
  sentBy?: (source: string) => boolean;
}

const filterDecoder = new PacketDecoder();
const filterPacket = new PacketInfo();

/** Whether a TCP/UDP frame's source address (IPv4 or IPv6) passes `keep` (other frames always do). */
function sentBy(keep: (source: string) => boolean, buf: Uint8Array, off: number, len: number, linkType: number): boolean {
  if (filterDecoder.decode(buf, off, len, linkType, filterPacket) !== DECODED_TCP_UDP) return true;
  const family = filterPacket.family;
  return keep(formatAddress(family, buf.subarray(filterPacket.srcOff, filterPacket.srcOff + (family === 4 ? 4 : 16))));
}

/**
 * The flows the engine decided, the sorted "initiator responder" pairs of every flow that carried
 * payload in what was read (decided or not), and the engine.
 */
export function scanCapture(path: string, options: ScanOptions = {}): { flows: DecidedFlow[]; withPayload: Set<string>; engine: Engine } {
  const pipeline = options.pipelineEnv ? new Pipeline(loadConfig({ FLOW_CAPACITY: '1024', ...options.pipelineEnv }), NO_HOST_FACTS) : null;
  const engine = pipeline?.engine ?? new Engine({ flowCapacity: 1024, ...(options.detectors ? { detectors: options.detectors } : {}) });
  const pipelineVerdict = engine.onVerdict;
  const flows: DecidedFlow[] = [];
  const withPayload = new Set<string>();
  const address = new Uint8Array(16);
  const endpoint = (flow: number, dir: number) => {
    engine.flows.address(flow, dir, address);
    const text = formatAddress(engine.flows.family(flow), address);
    return `${engine.flows.family(flow) === 6 ? `[${text}]` : text}:${engine.flows.port(flow, dir)}`;
  };
  engine.onVerdict = (flow) => {
    pipelineVerdict?.(flow);
    const bittorrent = engine.flows.verdict[flow] === VERDICT_BITTORRENT;
    flows.push({
      initiator: endpoint(flow, 0),
      responder: endpoint(flow, 1),
      bittorrent,
      rule: bittorrent ? engine.ruleNames[engine.flows.rule[flow]] : '',
      payloadPackets: engine.flows.payloadPackets[flow * 2] + engine.flows.payloadPackets[flow * 2 + 1],
    });
  };
  let index = 0;
  const result = readCapture(path, (buf, off, capLen, _origLen, linkType, tsMs) => {
    if (options.keep && !options.keep(index++)) return;
    engine.clock.nowMs = tsMs;
    if (options.sentBy && !sentBy(options.sentBy, buf, off, capLen, linkType)) return;
    const flow = engine.track(buf, off, capLen, linkType);
    if (flow < 0) return;
    const pkt = engine.packet;
    if (options.everyHostTorrenting) engine.torrenting.mark(pkt.family, pkt.buf, pkt.srcOff);
    if (pipeline) pipeline.decideTracked(flow);
    else engine.examine(flow);
    const payloadPackets = engine.flows.payloadPackets;
    if (pkt.payloadLen > 0 && payloadPackets[flow * 2] + payloadPackets[flow * 2 + 1] === 1) {
      withPayload.add([endpoint(flow, 0), endpoint(flow, 1)].sort().join(' '));
    }
  });
  if (result.error !== null) throw new Error(`${path}: ${result.error}`);
  return { flows, withPayload, engine };
}
