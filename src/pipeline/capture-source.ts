/**
 * Capture files as a packet source, with the kernel's part of the inline path played in
 * userspace, so that `btwall scan` reports what the daemon would have done with the same packets:
 * only a connection's first INSPECT_PACKETS packets (both ways) reach the queue (the connbytes
 * rule), and a connection whose mark is set never reaches it again (the connmark rules).
 *
 * A capture is traffic nobody blocked, so the daemon that would have seen exactly these packets
 * is one in monitor-only mode: BitTorrent connections stay unmarked and their later packets in
 * the window are still read for peer lists, while clean ones leave the queue at their decision.
 * Every decision (drop, ban, reason) is the one drop mode makes at the deciding packet.
 * Where the kernel counts a tunnel's packets under the outer connection, this counts the inner flow.
 */
import { readCapture } from '../pcap/reader.js';
import type { CaptureResult } from '../pcap/types.js';
import { PACKET_ACCEPT_MARK_CLEAN, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE, type Pipeline } from './pipeline.js';
import type { PacketSource } from './source.js';

/** The kernel's view of a connection, per flow slot. */
const CONNECTION_UNMARKED = 0;
const CONNECTION_CLEAN = 1;
const CONNECTION_BITTORRENT = 2;
/**
 * Dropped at its first packet (a datagram, or a SYN to a known peer), before conntrack confirmed
 * it: every later packet is a new connection's first, so it is queued.
 */
const CONNECTION_UNCONFIRMED = 3;

/** What a caller of a capture source hears about besides the pipeline's detections. */
export interface CaptureHooks {
  /** Before a file's first packet. */
  fileStart?(path: string): void;
  /** After each packet, with its link type (a scan tallies the link types the decoder did not know). */
  packet?(linkType: number): void;
  /** After a file: its flows are released first (the flow table's onRelease sees them), then this. */
  fileEnd?(path: string, result: CaptureResult): void;
}

/** Capture files, one after another; each is its own network, so flows and peers start afresh. */
export class CaptureSource implements PacketSource {
  private marks = new Uint8Array(0);

  constructor(
    private readonly files: readonly string[],
    private readonly inspectPackets: number,
    private readonly hooks: CaptureHooks = {},
  ) {}

  run(pipeline: Pipeline): Promise<void> {
    const engine = pipeline.engine;
    const hooks = this.hooks;
    this.marks = new Uint8Array(engine.flows.capacity);
    for (const path of this.files) {
      hooks.fileStart?.(path);
      const result = readCapture(path, (buf, off, capLen, _origLen, linkType, tsMs) => {
        engine.clock.nowMs = tsMs;
        this.frame(pipeline, buf, off, capLen, linkType);
        hooks.packet?.(linkType);
      });
      engine.reset();
      hooks.fileEnd?.(path, result);
    }
    return Promise.resolve();
  }

  /** Nothing to stop: run() returns once every file is read. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  private frame(pipeline: Pipeline, buf: Uint8Array, off: number, len: number, linkType: number): void {
    const flows = pipeline.engine.flows;
    const flow = pipeline.engine.track(buf, off, len, linkType);
    if (flow < 0) return;
    if (flows.created) this.marks[flow] = CONNECTION_UNMARKED;
    const mark = this.marks[flow];
    if (mark === CONNECTION_CLEAN || mark === CONNECTION_BITTORRENT) return;
    const packets = flows.packets[flow * 2] + flows.packets[flow * 2 + 1];
    if (mark !== CONNECTION_UNCONFIRMED && packets > this.inspectPackets) return;
    const action = pipeline.decideTracked(flow);
    if (action === PACKET_ACCEPT_MARK_CLEAN) this.marks[flow] = CONNECTION_CLEAN;
    else if (action === PACKET_MARK_BITTORRENT || action === PACKET_MARK_THROTTLE) {
      this.marks[flow] = packets === 1 ? CONNECTION_UNCONFIRMED : CONNECTION_BITTORRENT;
    }
  }
}
