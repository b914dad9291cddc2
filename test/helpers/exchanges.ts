/**
 * Packets of whole exchanges between a local host and a remote one, as the gateway sees them:
 * TCP with real handshakes and sequence numbers, uTP and DHT datagrams, and a pcap writer, for
 * the pipeline, policy and scan tests.
 */
import { writeFileSync } from 'node:fs';
import { ascii, concat, packet4, PROTO_TCP, PROTO_UDP, tcp, u16, u32, udp } from './frames.js';
import { bencode } from './peer-wire.js';

export const SYN = 0x02;
export const ACK = 0x10;
export const PSH_ACK = 0x18;

/** A BEP 3 handshake: pstrlen, protocol, reserved, info-hash, peer id. */
export const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8), new Uint8Array(20).fill(0xab), ascii('-TR3000-abcdefghijkl'));

/** One IPv4 TCP connection between two endpoints, keeping each side's sequence and acknowledgement numbers. */
export class TcpConnection {
  private readonly seq: [number, number];
  private readonly ack: [number, number] = [0, 0];

  constructor(
    readonly a: string,
    readonly aPort: number,
    readonly b: string,
    readonly bPort: number,
    isn: [number, number] = [0x11111111, 0x22222222],
  ) {
    this.seq = [...isn];
  }

  /** The three-way handshake, `a` opening. */
  open(): Uint8Array[] {
    const syn = this.segment(0, new Uint8Array(0), SYN);
    const synAck = this.segment(1, new Uint8Array(0), SYN | ACK);
    return [syn, synAck, this.segment(0, new Uint8Array(0), ACK)];
  }

  /** A segment from side 0 (a) or 1 (b), acknowledging all the other side sent. */
  segment(side: 0 | 1, payload: Uint8Array, flags = PSH_ACK, fields: { ack?: number } = {}): Uint8Array {
    const [src, sport, dst, dport] = side === 0 ? [this.a, this.aPort, this.b, this.bPort] : [this.b, this.bPort, this.a, this.aPort];
    const frame = packet4(src, dst, PROTO_TCP, tcp(sport, dport, payload, { seq: this.seq[side], ack: fields.ack ?? this.ack[side], flags }));
    const length = payload.length + (flags & SYN ? 1 : 0);
    this.seq[side] = (this.seq[side] + length) >>> 0;
    this.ack[1 - side] = this.seq[side];
    return frame;
  }
}

/** A uTP header (BEP 29): type, connection id, sequence and acknowledgement numbers. */
export function utpPacket(type: number, connectionId: number, seq: number, ack: number): Uint8Array {
  return Uint8Array.from([(type << 4) | 1, 0, ...u16(connectionId), ...u32(0x01020304), ...u32(0), ...u32(0x100000), ...u16(seq), ...u16(ack)]);
}

export const ST_STATE = 2;
export const ST_SYN = 4;

export function udp4(src: string, sport: number, dst: string, dport: number, payload: Uint8Array): Uint8Array {
  return packet4(src, dst, PROTO_UDP, udp(sport, dport, payload));
}

/** A KRPC ping query (BEP 5). */
export function dhtPing(transaction = 'aa'): Uint8Array {
  return bencode({ a: { id: new Uint8Array(20).fill(7) }, q: 'ping', t: transaction, y: 'q' });
}

/** A get_peers response listing `peers` (compact IPv4 "address:port"). */
export function dhtPeers(peers: string[], transaction = 'aa'): Uint8Array {
  const values = peers.map((peer) => {
    const [address, port] = peer.split(':');
    return Uint8Array.from([...address.split('.').map(Number), ...u16(Number(port))]);
  });
  return bencode({ r: { id: new Uint8Array(20).fill(8), token: 'tk', values }, t: transaction, y: 'r' });
}

/** A classic pcap file header (microseconds, little-endian, version 2.4) for `linkType`. */
export function pcapHeader(linkType: number): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(linkType, 20);
  return header;
}

/** Writes raw-IP frames (link type 101) as a classic pcap, one millisecond apart. */
export function writeRawPcap(path: string, frames: readonly Uint8Array[], startMs = 1_700_000_000_000): void {
  const header = pcapHeader(101);
  const records = frames.map((frame, i) => {
    const record = Buffer.alloc(16);
    const ms = startMs + i;
    record.writeUInt32LE(Math.floor(ms / 1000), 0);
    record.writeUInt32LE((ms % 1000) * 1000, 4);
    record.writeUInt32LE(frame.length, 8);
    record.writeUInt32LE(frame.length, 12);
    return Buffer.concat([record, frame]);
  });
  writeFileSync(path, Buffer.concat([header, ...records]));
}
