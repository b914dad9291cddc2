import { GIVE_UP, MATCH, OVER_UDP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';

function bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

const REQUEST_LINE = bytes('BT-SEARCH * HTTP/1.1\r\n');
/** Header names, lower case, with their colon. */
const PORT_HEADER = bytes('port:');
const INFOHASH_HEADER = bytes('infohash:');
const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const TAB = 0x09;
/** Hex digits of a v1 info-hash, and of a v2 one written in full. */
const V1_HASH_DIGITS = 40;
const V2_HASH_DIGITS = 64;

/**
 * BEP 14 Local Service Discovery: a datagram that starts with the request line
 * `BT-SEARCH * HTTP/1.1` and whose header block has a Port header with a port number and at least
 * one Infohash header with a hex info-hash. Decided from the one datagram, whatever its
 * destination (the multicast groups 239.192.152.143:6771 and [ff15::efc0:988f]:6771, or unicast):
 * the request line and headers are found in nothing else. The sender's announced port is
 * listed as a peer to the receiver (a unicast announce's host; a multicast group lists nobody). Budget: the first payload packet.
 */
export const lsdDetector: Detector = {
  name: 'lsd',
  transports: OVER_UDP,
  budget: 1,
  stateBytes: 0,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const pkt = ctx.pkt;
    const buf = pkt.buf;
    const end = pkt.payloadOff + pkt.payloadLen;
    let at = pkt.payloadOff;
    if (!startsWith(buf, at, end, REQUEST_LINE, false)) return GIVE_UP;
    at += REQUEST_LINE.length;
    let port = -1;
    let hashes = 0;
    // Each header line ends in CRLF; the empty line ends the block.
    while (at + 1 < end && buf[at] !== CR) {
      const lineEnd = lineEndAt(buf, at, end);
      if (lineEnd < 0) return GIVE_UP;
      if (startsWith(buf, at, lineEnd, PORT_HEADER, true)) port = portValue(buf, valueStart(buf, at + PORT_HEADER.length, lineEnd), lineEnd);
      else if (startsWith(buf, at, lineEnd, INFOHASH_HEADER, true) && isInfoHash(buf, valueStart(buf, at + INFOHASH_HEADER.length, lineEnd), lineEnd)) hashes++;
      at = lineEnd + 2;
    }
    if (port <= 0 || hashes === 0) return GIVE_UP;
    ctx.peers.add(pkt.family, buf, pkt.srcOff, port);
    return MATCH;
  },
};

/** Whether buf[at, end) starts with `pattern`; with `foldCase`, letters of the text compare lower-cased. */
function startsWith(buf: Uint8Array, at: number, end: number, pattern: Uint8Array, foldCase: boolean): boolean {
  if (end - at < pattern.length) return false;
  for (let i = 0; i < pattern.length; i++) {
    const byte = buf[at + i];
    const folded = foldCase && byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
    if (folded !== pattern[i]) return false;
  }
  return true;
}

/** Position of the CR of the CRLF that ends the line starting at `at`, or -1 when the datagram ends first. */
function lineEndAt(buf: Uint8Array, at: number, end: number): number {
  for (let i = at; i + 1 < end; i++) if (buf[i] === CR) return buf[i + 1] === LF ? i : -1;
  return -1;
}

function valueStart(buf: Uint8Array, at: number, lineEnd: number): number {
  let i = at;
  while (i < lineEnd && (buf[i] === SPACE || buf[i] === TAB)) i++;
  return i;
}

/** The decimal port in buf[at, lineEnd), or -1 when it is not one (trailing blanks allowed). */
function portValue(buf: Uint8Array, at: number, lineEnd: number): number {
  let port = 0;
  let i = at;
  while (i < lineEnd && buf[i] >= 0x30 && buf[i] <= 0x39 && i - at < 5) port = port * 10 + buf[i++] - 0x30;
  if (i === at || port > 0xffff || valueStart(buf, i, lineEnd) !== lineEnd) return -1;
  return port;
}

function isInfoHash(buf: Uint8Array, at: number, lineEnd: number): boolean {
  let i = at;
  while (i < lineEnd && isHexDigit(buf[i])) i++;
  const digits = i - at;
  return (digits === V1_HASH_DIGITS || digits === V2_HASH_DIGITS) && valueStart(buf, i, lineEnd) === lineEnd;
}

function isHexDigit(byte: number): boolean {
  const lower = byte | 0x20;
  return (byte >= 0x30 && byte <= 0x39) || (lower >= 0x61 && lower <= 0x66);
}
