/**
 * CUT_ESTABLISHED, carried out: a dropped TCP connection that was set up is torn down instead of
 * left to time out, so both ends give up at once rather than retry into a black hole (P2PWall's
 * cutter). Its conntrack entry is deleted (the `conntrack` tool, conntrack-tools), then a reset is
 * sent to each end from the other's address, with the numbers that end expects: the deciding
 * packet, dropped, carries them (its own sequence number is what the receiver waits for, its
 * acknowledgement what the sender does). A reset with the exact sequence number is accepted at
 * once (RFC 5961), one that acknowledges a client's SYN even before the connection is set up
 * (the deciding packet may be a SYN-ACK); the packets are sent from the gateway through a raw
 * socket (native/raw.cc). The deciding packet's acknowledgement is stale for its sender once the
 * other end's data in flight arrives, and that end ignores the reset: the next packets it sends,
 * which reach the queue once the conntrack entry and its mark are gone, are answered like a banned
 * address's segments (resetSegments), with the numbers they carry.
 *
 * A banned address's other connections have their conntrack entries deleted, and each TCP segment
 * of theirs that the XDP program drops is reported here (resetSegments): it carries the numbers
 * both ends expect, so both get a reset at the first segment either sends. At most
 * SEGMENT_RESETS_PER_S segments a second are answered: a banned peer that floods segments must
 * not turn the gateway's uplink into a stream of resets.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { addressBytes } from '../config/cidr.js';
import { parseAddress, type DroppedSegment } from '../bans/xdp.js';

const nativeDir = fileURLToPath(new URL('../../native/build/', import.meta.url));
const native = createRequire(import.meta.url)(`${nativeDir}btwall.node`) as { sendIpPacket(family: number, destination: Uint8Array, packet: Uint8Array): void };

/** One end of a connection. */
export interface Endpoint {
  address: string;
  port: number;
}

/** A TCP connection to cut: the ends, which one sent the deciding packet, and that packet's numbers. */
export interface ConnectionToCut {
  family: 4 | 6;
  initiator: Endpoint;
  responder: Endpoint;
  producer: 'initiator' | 'responder';
  /** The deciding packet's sequence number, the one just past it, and its acknowledgement number. */
  seq: number;
  seqEnd: number;
  ack: number;
}

const TCP_RST_ACK = 0x14;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_ACK = 0x10;
/** Dropped segments answered per second at most (and in one burst). */
export const SEGMENT_RESETS_PER_S = 200;
const IPPROTO_TCP = 6;
const IPV4_HEADER = 20;
const IPV6_HEADER = 40;
const TCP_HEADER = 20;
const TTL = 64;

/** The ones' complement sum of bytes, folded later (RFC 1071). */
function sum(bytes: Uint8Array, start = 0, end = bytes.length, initial = 0): number {
  let total = initial;
  for (let i = start; i + 1 < end; i += 2) total += (bytes[i] << 8) | bytes[i + 1];
  if ((end - start) & 1) total += bytes[end - 1] << 8;
  return total;
}

function fold(total: number): number {
  let t = total;
  while (t > 0xffff) t = (t & 0xffff) + Math.floor(t / 0x10000);
  return ~t & 0xffff;
}

/** A TCP reset (RST and ACK) from `from` to `to` with these numbers, IP header included. */
export function tcpReset(family: 4 | 6, from: Endpoint, to: Endpoint, seq: number, ack: number): Uint8Array {
  const src = addressBytes(family, from.address);
  const dst = addressBytes(family, to.address);
  const ipBytes = family === 4 ? IPV4_HEADER : IPV6_HEADER;
  const packet = new Uint8Array(ipBytes + TCP_HEADER);
  const view = new DataView(packet.buffer);
  if (family === 4) {
    view.setUint8(0, 0x45);
    view.setUint16(2, packet.length);
    view.setUint8(8, TTL);
    view.setUint8(9, IPPROTO_TCP);
    packet.set(src, 12);
    packet.set(dst, 16);
    view.setUint16(10, fold(sum(packet, 0, IPV4_HEADER)));
  } else {
    view.setUint32(0, 0x60000000);
    view.setUint16(4, TCP_HEADER);
    view.setUint8(6, IPPROTO_TCP);
    view.setUint8(7, TTL);
    packet.set(src, 8);
    packet.set(dst, 24);
  }
  const tcp = ipBytes;
  view.setUint16(tcp, from.port);
  view.setUint16(tcp + 2, to.port);
  view.setUint32(tcp + 4, seq >>> 0);
  view.setUint32(tcp + 8, ack >>> 0);
  view.setUint8(tcp + 12, (TCP_HEADER / 4) << 4);
  view.setUint8(tcp + 13, TCP_RST_ACK);
  // The pseudo-header: both addresses, the protocol and the TCP length.
  const pseudo = sum(src) + sum(dst) + IPPROTO_TCP + TCP_HEADER;
  view.setUint16(tcp + 16, fold(sum(packet, tcp, packet.length, pseudo)));
  return packet;
}

/** Runs `conntrack` with these arguments; resolves with whether it deleted anything. */
type ConntrackRunner = (args: string[]) => Promise<boolean>;

const runConntrack: ConntrackRunner = (args) =>
  new Promise((resolve) => {
    // Exit status 1 and "0 flow entries have been deleted" when there was none: not an error here.
    execFile('conntrack', args, { timeout: 5000 }, (error, _stdout, stderr) => resolve(error === null && !/ 0 flow entries/.test(stderr)));
  });

export class ConnectionCutter {
  cut = 0;
  resetsSent = 0;
  /** conntrack deletions that removed something. */
  deletions = 0;
  failures = 0;
  /** Dropped segments of banned addresses left unanswered: over SEGMENT_RESETS_PER_S. */
  segmentResetsLimited = 0;
  private tokens = SEGMENT_RESETS_PER_S;
  private tokensAtMs = 0;

  constructor(
    private readonly log: Logger,
    private readonly conntrack: ConntrackRunner = runConntrack,
    private readonly send: (family: 4 | 6, destination: Uint8Array, packet: Uint8Array) => void = native.sendIpPacket,
  ) {}

  /**
   * Tears the connection down: its conntrack entry first (either orientation: one that predates
   * the daemon may have been picked up from its other end), then a reset to each end.
   */
  async cutConnection(c: ConnectionToCut): Promise<void> {
    const { initiator: i, responder: r } = c;
    const tuple = (a: Endpoint, b: Endpoint) => ['-D', '-p', 'tcp', '--orig-src', a.address, '--orig-dst', b.address, '--sport', String(a.port), '--dport', String(b.port)];
    const deleted = await Promise.all([this.conntrack(tuple(i, r)), this.conntrack(tuple(r, i))]);
    this.deletions += deleted.filter(Boolean).length;
    const [producer, other] = c.producer === 'initiator' ? [i, r] : [r, i];
    try {
      // The other end waits for the dropped packet's sequence number; the producer for its acknowledgement.
      this.send(c.family, addressBytes(c.family, other.address), tcpReset(c.family, producer, other, c.seq, c.ack));
      this.send(c.family, addressBytes(c.family, producer.address), tcpReset(c.family, other, producer, c.ack, c.seqEnd));
      this.resetsSent += 2;
      this.cut++;
      this.log.info({ initiator: `${i.address}:${i.port}`, responder: `${r.address}:${r.port}`, conntrackDeleted: deleted.some(Boolean) }, 'connection cut');
    } catch (error) {
      this.failures++;
      this.log.error({ err: error, initiator: `${i.address}:${i.port}`, responder: `${r.address}:${r.port}` }, 'cannot send the resets that cut a connection');
    }
  }

  /**
   * Answers dropped segments (of banned addresses, and of connections cut): a reset to the
   * segment's sender, which expects the segment's acknowledgement as sequence number (RFC 9293
   * 3.10.7; 0 and an ACK of all the segment occupied when it had no ACK, a SYN); and, for a segment
   * of a set-up connection, one to its receiver, which expects the segment's own sequence number.
   */
  resetSegments(segments: readonly DroppedSegment[], nowMs = Date.now()): void {
    this.tokens = Math.min(SEGMENT_RESETS_PER_S, this.tokens + ((nowMs - this.tokensAtMs) * SEGMENT_RESETS_PER_S) / 1000);
    this.tokensAtMs = nowMs;
    for (const s of segments) {
      if (this.tokens < 1) {
        this.segmentResetsLimited++;
        continue;
      }
      this.tokens--;
      const sender = { address: s.source, port: s.sourcePort };
      const receiver = { address: s.destination, port: s.destinationPort };
      const acked = (s.flags & TCP_ACK) !== 0;
      const occupied = (s.seq + s.length + ((s.flags & TCP_SYN) !== 0 ? 1 : 0) + ((s.flags & TCP_FIN) !== 0 ? 1 : 0)) >>> 0;
      try {
        this.send(s.family, addressBytes(s.family, sender.address), tcpReset(s.family, receiver, sender, acked ? s.ack : 0, occupied));
        this.resetsSent++;
        if (acked) {
          this.send(s.family, addressBytes(s.family, receiver.address), tcpReset(s.family, sender, receiver, s.seq, s.ack));
          this.resetsSent++;
        }
      } catch (error) {
        this.failures++;
        this.log.error({ err: error, source: `${s.source}:${s.sourcePort}`, destination: `${s.destination}:${s.destinationPort}` }, "cannot send the resets that answer a dropped segment");
      }
    }
  }

  /** Every conntrack entry to or from a banned address goes. */
  async cutAddress(address: string): Promise<void> {
    if (parseAddress(address) === null) return;
    const deleted = await Promise.all([this.conntrack(['-D', '--orig-src', address]), this.conntrack(['-D', '--orig-dst', address])]);
    this.deletions += deleted.filter(Boolean).length;
  }

  stats(): Record<string, number> {
    return { connectionsCut: this.cut, resetsSent: this.resetsSent, segmentResetsLimited: this.segmentResetsLimited, conntrackDeletions: this.deletions, cutFailures: this.failures };
  }
}
