import { asciiBytes, bytesEqual, findKey, skipValue, stringLength, stringStart } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_UDP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';

const DICT = 0x64; // 'd'
const LIST = 0x6c; // 'l'
const INT = 0x69; // 'i'
const END = 0x65; // 'e'
const DIGIT_1 = 0x31;
const COLON = 0x3a;
/** The one-letter keys of the message dictionary (BEP 5). */
const KEY_Y = 0x79;
const KEY_T = 0x74;
const KEY_Q = 0x71;
const KEY_A = 0x61;
const KEY_R = 0x72;
const KEY_E = 0x65;

/** What `messageKind` found in a datagram. */
const NOT_KRPC = 0;
const QUERY = 1;
/** A query that announces its sender as a peer on a port (BEP 5 announce_peer). */
const ANNOUNCE = 2;
const RESPONSE = 3;
const ERROR = 4;

/** Query methods: BEP 5, BEP 44 (get, put), BEP 51 (sample_infohashes). announce_peer is index 0. */
const METHODS = ['announce_peer', 'ping', 'find_node', 'get_peers', 'get', 'put', 'sample_infohashes'].map(asciiBytes);

/** How the value under a known key of the `a` or `r` dictionary must look. */
const STRING_OF = 0; // a string of exactly `size` bytes
const STRING_IN_UNITS_OF = 1; // a string whose length is a multiple of `size`
const ANY_STRING = 2;
const PEER_LIST = 3; // a list of compact peers: 6-byte (IPv4) or 18-byte (IPv6) strings
const ID_LEN = 20;
const NODE4_LEN = 26; // BEP 5 compact node: 20-byte id, IPv4 address, port
const NODE6_LEN = 38; // BEP 32: 20-byte id, IPv6 address, port
const PEER4_LEN = 6;
const PEER6_LEN = 18;
const BLOOM_FILTER_LEN = 256; // BEP 33

const ID_KEY = asciiBytes('id');
const NODES_KEY = asciiBytes('nodes');
const NODES6_KEY = asciiBytes('nodes6');
const VALUES_KEY = asciiBytes('values');
const A_KEY = asciiBytes('a');
const R_KEY = asciiBytes('r');
const PORT_KEY = asciiBytes('port');
const IMPLIED_PORT_KEY = asciiBytes('implied_port');
const BODY_KEYS = [
  [ID_KEY, STRING_OF, ID_LEN],
  [NODES_KEY, STRING_IN_UNITS_OF, NODE4_LEN],
  [NODES6_KEY, STRING_IN_UNITS_OF, NODE6_LEN],
  [VALUES_KEY, PEER_LIST, 0],
  [asciiBytes('token'), ANY_STRING, 0],
  [asciiBytes('target'), STRING_OF, ID_LEN],
  [asciiBytes('info_hash'), STRING_OF, ID_LEN],
  [asciiBytes('samples'), STRING_IN_UNITS_OF, ID_LEN], // BEP 51
  [asciiBytes('BFsd'), STRING_OF, BLOOM_FILTER_LEN], // BEP 33 scrape
  [asciiBytes('BFpe'), STRING_OF, BLOOM_FILTER_LEN],
] as const;
const BODY_KEY_BYTES = BODY_KEYS.map(([key]) => key);
const BODY_KEY_RULES = Int32Array.from(BODY_KEYS, ([, rule]) => rule);
const BODY_KEY_SIZES = Int32Array.from(BODY_KEYS, ([, , size]) => size);

/** Payload packets of a flow that are inspected before a flow with no KRPC message is given up. */
const INSPECT_WINDOW = 4;
/** Payload packets of a matched flow whose responses are read for peers (see the detector's doc). */
const LEARN_BUDGET = 256;

/**
 * BitTorrent DHT (BEP 5 KRPC over UDP, with BEP 32 nodes6, BEP 33 scrape, BEP 42 `ip`, BEP 43
 * `ro`, BEP 44 get/put, BEP 51 sample_infohashes): a datagram that is exactly one bencoded
 * dictionary with a string `t` and `y` of "q" (a known method in `q`, an `a` dictionary with a
 * 20-byte `id`), "r" (an `r` dictionary with a 20-byte `id`) or "e" (`e` = [code, message]),
 * where every known argument has its spec's shape (nodes in 26-byte units, nodes6 in 38, values
 * 6- or 18-byte peers, 20-byte hashes). Matches on the first such datagram in either direction;
 * other keys (`v`, `ip`, `ro`, `p`, `want`...) are allowed. Random, DNS, STUN, QUIC... payloads
 * cannot be one well-formed bencoded dictionary ending exactly at the datagram's end with these keys.
 *
 * Peers: the nodes and values of responses, and the port an announce_peer sender announces, are
 * listed to the host that receives them, in inspect (a flow first seen at a response) and in learn (the responses that
 * follow the query a flow was matched on). Budget: the first datagram, or the first INSPECT_WINDOW
 * of a flow that opens with dictionaries it cannot read, for finding a message; LEARN_BUDGET datagrams for learning, because one flow between two nodes carries every
 * query either makes of the other for as long as they keep talking (the busiest pair in the lab
 * capture exchanged 116 datagrams in 20 s), while reading one costs about a microsecond.
 */
export const dhtDetector: Detector = {
  name: 'dht',
  transports: OVER_UDP,
  budget: LEARN_BUDGET,
  stateBytes: 0,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const pkt = ctx.pkt;
    const kind = messageKind(pkt.buf, pkt.payloadOff, pkt.payloadOff + pkt.payloadLen);
    if (kind === NOT_KRPC) {
      // A datagram that opens a dictionary may still be KRPC this cannot read (a method it does not
      // know, a message cut by the capture): the reply or the next query decides, within the
      // window, as long as the other side has not sent something else. Anything else is not DHT.
      const opensDictionary = pkt.payloadLen > 0 && pkt.buf[pkt.payloadOff] === DICT;
      return opensDictionary && ctx.flowIndex === ctx.dirIndex && ctx.flowIndex < INSPECT_WINDOW - 1 ? MORE : GIVE_UP;
    }
    learnFrom(ctx, kind);
    return MATCH;
  },
  learn(ctx: InspectContext): void {
    const pkt = ctx.pkt;
    learnFrom(ctx, messageKind(pkt.buf, pkt.payloadOff, pkt.payloadOff + pkt.payloadLen));
  },
};

/** Adds the peers a well-formed message of that kind names to the cache. */
function learnFrom(ctx: InspectContext, kind: number): void {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const start = pkt.payloadOff;
  const end = start + pkt.payloadLen;
  if (kind === RESPONSE) learnResponse(ctx, buf, findKey(buf, start, end, R_KEY), end);
  else if (kind === ANNOUNCE) {
    const port = announcedPort(buf, findKey(buf, start, end, A_KEY), end);
    if (port > 0) ctx.peers.add(pkt.family, buf, pkt.srcOff, port);
  }
}

/**
 * NOT_KRPC, QUERY, ANNOUNCE, RESPONSE or ERROR for the datagram buf[start, end). One pass over
 * the top-level keys, each value skipped (so checked well-formed) once; the `a` or `r` dictionary
 * is walked once more by validBody.
 */
function messageKind(buf: Uint8Array, start: number, end: number): number {
  if (start >= end || buf[start] !== DICT) return NOT_KRPC;
  let y = -1;
  let t = -1;
  let q = -1;
  let a = -1;
  let r = -1;
  let e = -1;
  let at = start + 1;
  while (at < end && buf[at] !== END) {
    const keyStart = stringStart(buf, at, end);
    if (keyStart < 0) return NOT_KRPC;
    const keyLen = stringLength(buf, at);
    const value = keyStart + keyLen;
    const next = skipValue(buf, value, end);
    if (next < 0) return NOT_KRPC;
    if (keyLen === 1) {
      // A repeated key is not a dictionary (BEP 3), so not a message.
      const key = buf[keyStart];
      if (key === KEY_Y) {
        if (y >= 0) return NOT_KRPC;
        y = value;
      } else if (key === KEY_T) {
        if (t >= 0) return NOT_KRPC;
        t = value;
      } else if (key === KEY_Q) {
        if (q >= 0) return NOT_KRPC;
        q = value;
      } else if (key === KEY_A) {
        if (a >= 0) return NOT_KRPC;
        a = value;
      } else if (key === KEY_R) {
        if (r >= 0) return NOT_KRPC;
        r = value;
      } else if (key === KEY_E) {
        if (e >= 0) return NOT_KRPC;
        e = value;
      }
    }
    at = next;
  }
  // The dictionary must close on the datagram's last byte: nothing cut off, nothing after it.
  if (at !== end - 1 || t < 0 || y < 0 || !isDigit(buf[t])) return NOT_KRPC;
  if (buf[y] !== DIGIT_1 || buf[y + 1] !== COLON) return NOT_KRPC;
  const type = buf[y + 2];
  if (type === KEY_Q) {
    if (q < 0 || a < 0) return NOT_KRPC;
    const method = methodIndex(buf, q, end);
    if (method < 0 || !validBody(buf, a, end)) return NOT_KRPC;
    return method === 0 ? ANNOUNCE : QUERY;
  }
  if (type === KEY_R) return r >= 0 && validBody(buf, r, end) ? RESPONSE : NOT_KRPC;
  if (type === KEY_E) return e >= 0 && validError(buf, e, end) ? ERROR : NOT_KRPC;
  return NOT_KRPC;
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/** Index in METHODS of the string at `pos`, or -1. */
function methodIndex(buf: Uint8Array, pos: number, end: number): number {
  const nameStart = stringStart(buf, pos, end);
  if (nameStart < 0) return -1;
  const nameEnd = nameStart + stringLength(buf, pos);
  for (let i = 0; i < METHODS.length; i++) if (bytesEqual(buf, nameStart, nameEnd, METHODS[i])) return i;
  return -1;
}

/**
 * Whether the value at `pos` (already known to be well-formed bencoding) is an `a` or `r`
 * dictionary: a 20-byte `id`, and every known key with the shape its BEP gives it.
 */
function validBody(buf: Uint8Array, pos: number, end: number): boolean {
  if (buf[pos] !== DICT) return false;
  let hasId = false;
  let at = pos + 1;
  while (at < end && buf[at] !== END) {
    const keyStart = stringStart(buf, at, end);
    if (keyStart < 0) return false;
    const keyEnd = keyStart + stringLength(buf, at);
    const next = skipValue(buf, keyEnd, end);
    if (next < 0) return false;
    for (let k = 0; k < BODY_KEY_BYTES.length; k++) {
      if (!bytesEqual(buf, keyStart, keyEnd, BODY_KEY_BYTES[k])) continue;
      if (!hasShape(buf, keyEnd, end, BODY_KEY_RULES[k], BODY_KEY_SIZES[k])) return false;
      if (k === 0) hasId = true;
      break;
    }
    at = next;
  }
  return hasId;
}

function hasShape(buf: Uint8Array, pos: number, end: number, rule: number, size: number): boolean {
  if (rule === PEER_LIST) {
    if (buf[pos] !== LIST) return false;
    let at = pos + 1;
    while (at < end && buf[at] !== END) {
      if (stringStart(buf, at, end) < 0) return false;
      const length = stringLength(buf, at);
      if (length !== PEER4_LEN && length !== PEER6_LEN) return false;
      at = skipValue(buf, at, end);
    }
    return true;
  }
  if (stringStart(buf, pos, end) < 0) return false;
  const length = stringLength(buf, pos);
  if (rule === STRING_OF) return length === size;
  if (rule === STRING_IN_UNITS_OF) return length % size === 0;
  return true;
}

/** Whether the value at `pos` is an error list: an integer code, then a message string (BEP 5). */
function validError(buf: Uint8Array, pos: number, end: number): boolean {
  if (buf[pos] !== LIST || buf[pos + 1] !== INT) return false;
  const message = skipValue(buf, pos + 1, end);
  return message >= 0 && stringStart(buf, message, end) >= 0;
}

/** Adds the nodes (BEP 5, BEP 32) and peers (values) of a validated `r` dictionary to the cache. */
function learnResponse(ctx: InspectContext, buf: Uint8Array, pos: number, end: number): void {
  const peers = ctx.peers;
  let at = pos + 1;
  while (at < end && buf[at] !== END) {
    const keyStart = stringStart(buf, at, end);
    const keyEnd = keyStart + stringLength(buf, at);
    if (bytesEqual(buf, keyStart, keyEnd, NODES_KEY)) {
      peers.addCompact(4, buf, stringStart(buf, keyEnd, end), (stringLength(buf, keyEnd) / NODE4_LEN) | 0, NODE4_LEN, ID_LEN);
    } else if (bytesEqual(buf, keyStart, keyEnd, NODES6_KEY)) {
      peers.addCompact(6, buf, stringStart(buf, keyEnd, end), (stringLength(buf, keyEnd) / NODE6_LEN) | 0, NODE6_LEN, ID_LEN);
    } else if (bytesEqual(buf, keyStart, keyEnd, VALUES_KEY)) {
      for (let item = keyEnd + 1; item < end && buf[item] !== END; item = skipValue(buf, item, end)) {
        const family = stringLength(buf, item) === PEER4_LEN ? 4 : 6;
        peers.addCompact(family, buf, stringStart(buf, item, end), 1, family === 4 ? PEER4_LEN : PEER6_LEN, 0);
      }
    }
    at = skipValue(buf, keyEnd, end);
  }
}

/**
 * The TCP/uTP port an announce_peer query (validated `a` dictionary at `pos`) announces for its
 * sender, or 0 when it has none of its own: with `implied_port` 1 the port is the UDP source port,
 * which the engine already remembers for the flow.
 */
function announcedPort(buf: Uint8Array, pos: number, end: number): number {
  const implied = findKey(buf, pos, end, IMPLIED_PORT_KEY);
  if (implied >= 0 && !(buf[implied] === INT && buf[implied + 1] === 0x30 && buf[implied + 2] === END)) return 0;
  const value = findKey(buf, pos, end, PORT_KEY);
  if (value < 0 || buf[value] !== INT) return 0;
  let port = 0;
  let at = value + 1;
  for (; at < end && isDigit(buf[at]) && port <= 0xffff; at++) port = port * 10 + buf[at] - 0x30;
  return at < end && buf[at] === END && port <= 0xffff ? port : 0;
}

