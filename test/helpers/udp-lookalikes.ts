/**
 * UDP payloads of the protocols a BitTorrent-over-UDP detector must not mistake for its own
 * (DNS, STUN, DTLS, QUIC, DHCP, WireGuard, RTP), built field by field from their RFCs so a test
 * can vary the fields that collide with a BitTorrent header (a DNS id, a WireGuard type byte).
 */
import { ascii, concat, u16, u32 } from './frames.js';

/** Deterministic filler for the fields that are random or encrypted on the wire. */
export function filler(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function dnsName(name: string): number[] {
  return [...name.split('.').flatMap((label) => [label.length, ...ascii(label)]), 0];
}

/** RFC 1035 query for an A record (type 1, class IN), recursion desired. */
export function dnsQuery(name: string, id: number, qtype = 1): Uint8Array {
  return concat(u16(id), u16(0x0100), u16(1), u16(0), u16(0), u16(0), dnsName(name), u16(qtype), u16(1));
}

/** The answer to dnsQuery(name, id): the question again and one A record. */
export function dnsResponse(name: string, id: number, address = [192, 0, 2, 1]): Uint8Array {
  return concat(u16(id), u16(0x8180), u16(1), u16(1), u16(0), u16(0), dnsName(name), u16(1), u16(1), [0xc0, 0x0c], u16(1), u16(1), u32(300), u16(4), address);
}

const STUN_MAGIC_COOKIE = 0x2112a442;

/** RFC 5389 Binding request without attributes. */
export function stunBindingRequest(transaction = filler(12, 7)): Uint8Array {
  return concat(u16(0x0001), u16(0), u32(STUN_MAGIC_COOKIE), transaction);
}

/** Binding success response with an XOR-MAPPED-ADDRESS. */
export function stunBindingResponse(transaction = filler(12, 7)): Uint8Array {
  const xorPort = 40000 ^ (STUN_MAGIC_COOKIE >>> 16);
  return concat(u16(0x0101), u16(12), u32(STUN_MAGIC_COOKIE), transaction, u16(0x0020), u16(8), [0, 1], u16(xorPort), u32((0xc0000201 ^ STUN_MAGIC_COOKIE) >>> 0));
}

/** RFC 6347 DTLS 1.2 record carrying a ClientHello. */
export function dtlsClientHello(): Uint8Array {
  const body = concat(u16(0xfefd), filler(32, 3), [0], [0], u16(4), u16(0xc02b), u16(0xc02f), [1, 0], u16(0));
  const handshake = concat([1, 0, ...u16(body.length)], u16(0), [0, 0, 0, 0, ...u16(body.length)], body);
  return concat([0x16], u16(0xfefd), u16(0), [0, 0, 0, 0, 0, 0], u16(handshake.length), handshake);
}

/** RFC 9000 Initial packet (long header), padded to 1200 bytes as clients must. */
export function quicInitial(): Uint8Array {
  const header = concat([0xc3], u32(1), [8], filler(8, 11), [8], filler(8, 12), [0]);
  const remaining = 1200 - header.length - 2;
  return concat(header, u16(0x4000 | remaining), filler(remaining, 13));
}

/** RFC 2131 DHCPDISCOVER from a client with no address yet. */
export function dhcpDiscover(): Uint8Array {
  const bootp = new Uint8Array(236);
  bootp.set([1, 1, 6, 0], 0);
  bootp.set(u32(0x3903f326), 4);
  bootp.set([0x02, 0x00, 0x00, 0x00, 0x00, 0x01], 28);
  const options = [0x63, 0x82, 0x53, 0x63, 53, 1, 1, 55, 3, 1, 3, 6, 255];
  return concat(bootp, options, new Array<number>(300 - 236 - options.length).fill(0));
}

/** WireGuard handshake initiation: type 1, three reserved zero bytes, 148 bytes in all. */
export function wireguardInitiation(): Uint8Array {
  return concat([1, 0, 0, 0], filler(144, 21));
}

/** WireGuard handshake response: type 2, 92 bytes. */
export function wireguardResponse(): Uint8Array {
  return concat([2, 0, 0, 0], filler(88, 22));
}

/** WireGuard transport data: type 4, receiver index, counter, encrypted packet. */
export function wireguardData(counter: number, length = 96): Uint8Array {
  return concat([4, 0, 0, 0], filler(4, 23), u32(0), u32(counter), filler(length - 16, 24 + counter));
}

/** RFC 3550 RTP packet, payload type 96. */
export function rtpPacket(seq: number, timestamp: number): Uint8Array {
  return concat([0x80, 0x60], u16(seq), u32(timestamp), u32(0x11223344), filler(160, seq + 1));
}
