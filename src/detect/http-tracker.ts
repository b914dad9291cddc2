import { asciiBytes, bytesEqual, findKey, skipValue, stringLength, stringStart } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';
import {
  anotherParameterFollows,
  decimalValue,
  findHeader,
  GET_PREFIX,
  headerBlockEnd,
  HTTP1_PREFIX,
  isDecimal,
  lastSegmentStart,
  nameEnd,
  nextLine,
  parameterEnd,
  percentDecode,
  queryMark,
  startsWith,
} from './http-message.js';
import { peerIdClient, UNKNOWN_CLIENT } from './peer-id.js';

/**
 * HTTP tracker announces and scrapes (BEP 3, BEP 48; responses per BEP 23 compact and BEP 7
 * IPv6): decided on the request (a query with a 20-byte info_hash and a peer_id or port), or on
 * the tracker's answer when the request was not seen (HTTP/1.x 200 with a bencoded interval and
 * peer list). BEP 52 hashes are truncated to 20 bytes for trackers, so 20 is the only length.
 */

const INFO_HASH = asciiBytes('info_hash');
const PEER_ID = asciiBytes('peer_id');
const PORT = asciiBytes('port');
const UPLOADED = asciiBytes('uploaded');
const DOWNLOADED = asciiBytes('downloaded');
const LEFT = asciiBytes('left');
const SCRAPE = asciiBytes('scrape');
const INTERVAL_KEY = asciiBytes('interval');
const PEERS_KEY = asciiBytes('peers');
const PEERS6_KEY = asciiBytes('peers6');
const IP_KEY = asciiBytes('ip');
const TRANSFER_ENCODING = asciiBytes('transfer-encoding');
const CHUNKED = asciiBytes('chunked');
const STATUS_200 = asciiBytes(' 200');

/** Info hashes (BEP 3, truncated v2 ones per BEP 52) and peer ids are 20 bytes. */
const ID_LENGTH = 20;
/** Request bytes read at most: announce URLs are a few hundred bytes. */
const MAX_REQUEST_SCAN = 4096;
const COMPACT_V4 = 6;
const COMPACT_V6 = 18;
/** Compact peer strings longer than this are not trusted (and would not fit the state). */
const MAX_PEER_STRING = 0xffffff;

/** Evidence gathered from the query, kept in the state while a request spans packets. */
const HAS_INFO_HASH = 1;
const BAD_INFO_HASH = 2;
const HAS_PEER_ID = 4;
const KNOWN_CLIENT = 8;
const HAS_PORT = 16;
const HAS_TRANSFER_STATS = 32;
const SCRAPE_PATH = 64;
/** Not kept: the bytes ended inside the query. */
const QUERY_CUT = 128;

/** Per-flow state layout. */
const REQUEST = 0;
const EVIDENCE = 1;
const ANNOUNCED_PORT = 2; // 2 bytes
const RESPONSE = 4;
/** Direction of the request plus one, 0 before anything was seen. */
const REQUEST_DIR = 5;
/** TCP sequence number the next response segment must start at. */
const NEXT_SEQ = 6; // 4 bytes
/** A compact peer string cut at a segment end: bytes still to come, entry size, bytes of a cut entry to skip. */
const LIST_LEFT = 10; // 3 bytes
const LIST_ENTRY = 13;
const LIST_SKIP = 14;
/** 1 when the response body is chunked: its first chunk-size line is skipped and cut lists are not followed. */
const CHUNKED_BODY = 15;
const STATE_BYTES = 16;

const REQUEST_NONE = 0;
/** The request line goes on in the next segment. */
const REQUEST_CUT = 1;

const RESPONSE_NONE = 0;
/** The header block ended with the segment: the body starts the next one. */
const RESPONSE_BODY_NEXT = 1;
/** Inside a compact peer string that goes on in the next segment. */
const RESPONSE_IN_LIST = 2;
const RESPONSE_DONE = 3;

/** What a walk over the response dictionary saw. */
const SAW_INTERVAL = 1;
const SAW_PEERS = 2;
/** Walk modes: check only, learn the peers in this segment, or learn and follow a cut list. */
const CHECK = 0;
const LEARN = 1;
const LEARN_AND_FOLLOW = 2;

const decoded = new Uint8Array(ID_LENGTH);
const address4 = new Uint8Array(4);

/**
 * Budget: 8 payload packets, room for a request in two segments and a response in six (a few
 * hundred IPv6 peers), which learn() reads for peer lists.
 * Never banned (producerIsPeer false): a tracker is infrastructure, often a shared web host or CDN address, not a peer.
 * The announcing client is one: a match caches its address with the port it announced.
 */
export const httpTrackerDetector: Detector = {
  name: 'http-tracker',
  transports: OVER_TCP,
  budget: 8,
  stateBytes: STATE_BYTES,
  strength: STRENGTH_EXACT,
  producerIsPeer: false,
  serviceIsTracker: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const s = ctx.stateOff;
    const requestDir = state[s + REQUEST_DIR] - 1;
    if (state[s + REQUEST] === REQUEST_CUT) return ctx.dir === requestDir ? readRequest(ctx, true) : MORE;
    if (state[s + RESPONSE] === RESPONSE_BODY_NEXT) return ctx.dir === requestDir ? MORE : checkResponseBody(ctx);
    if (ctx.flowIndex !== 0) return GIVE_UP;
    const pkt = ctx.pkt;
    const end = pkt.payloadOff + pkt.payloadLen;
    if (startsWith(pkt.buf, pkt.payloadOff, end, GET_PREFIX)) {
      state[s + REQUEST_DIR] = ctx.dir + 1;
      return readRequest(ctx, false);
    }
    if (startsWith(pkt.buf, pkt.payloadOff, end, HTTP1_PREFIX)) {
      // The answer came first: the request was not seen, and the answer alone must prove a tracker.
      state[s + REQUEST_DIR] = 2 - ctx.dir;
      return checkResponse(ctx);
    }
    return GIVE_UP;
  },
  learn(ctx: InspectContext): void {
    const state = ctx.state;
    const s = ctx.stateOff;
    const response = state[s + RESPONSE];
    if (ctx.dir === state[s + REQUEST_DIR] - 1 || response === RESPONSE_DONE) return;
    const pkt = ctx.pkt;
    const off = pkt.payloadOff;
    const end = off + pkt.payloadLen;
    // Done unless what is read below expects a next segment.
    state[s + RESPONSE] = RESPONSE_DONE;
    let body: number;
    if (response === RESPONSE_NONE) body = responseBody(ctx, off, end);
    else if (!continuesResponse(ctx)) return;
    else if (response === RESPONSE_IN_LIST) return followList(ctx);
    else body = bodyStart(ctx, off, end);
    if (body >= 0) walkBody(ctx, body, end, learningMode(ctx));
  },
};

/** Reads the request's query (or its continuation) and decides on the evidence gathered. */
function readRequest(ctx: InspectContext, continuation: boolean): number {
  const state = ctx.state;
  const s = ctx.stateOff;
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const off = pkt.payloadOff;
  const end = off + Math.min(pkt.payloadLen, MAX_REQUEST_SCAN);
  let at: number;
  let evidence = state[s + EVIDENCE];
  if (continuation) {
    // The segment starts inside the parameter the last one cut: skip what is left of it.
    at = parameterEnd(buf, off, end);
    if (!anotherParameterFollows(buf, at, end)) return decide(ctx, evidence);
    at++;
  } else {
    const target = off + GET_PREFIX.length;
    const mark = queryMark(buf, target, end);
    if (mark < 0) return GIVE_UP;
    if (startsWith(buf, lastSegmentStart(buf, target, mark), mark, SCRAPE)) evidence |= SCRAPE_PATH;
    at = mark + 1;
  }
  evidence |= readParameters(ctx, at, end);
  if ((evidence & QUERY_CUT) !== 0 && end === off + pkt.payloadLen) {
    state[s + EVIDENCE] = evidence & ~QUERY_CUT;
    state[s + REQUEST] = REQUEST_CUT;
    return isTrackerRequest(evidence) ? matchRequest(ctx, evidence) : MORE;
  }
  return decide(ctx, evidence);
}

function decide(ctx: InspectContext, evidence: number): number {
  ctx.state[ctx.stateOff + REQUEST] = REQUEST_NONE;
  return isTrackerRequest(evidence) ? matchRequest(ctx, evidence) : GIVE_UP;
}

/**
 * An announce has a 20-byte info_hash and a peer_id or port; a scrape (BEP 48: the path's last
 * segment starts with "scrape") has 20-byte info_hashes only. A known client's peer_id with a
 * port and transfer counters stands for the info_hash when a segment cut lost it.
 */
function isTrackerRequest(evidence: number): boolean {
  if ((evidence & BAD_INFO_HASH) !== 0) return false;
  if ((evidence & HAS_INFO_HASH) !== 0 && (evidence & (HAS_PEER_ID | HAS_PORT | SCRAPE_PATH)) !== 0) return true;
  return (evidence & (KNOWN_CLIENT | HAS_PORT | HAS_TRANSFER_STATS)) === (KNOWN_CLIENT | HAS_PORT | HAS_TRANSFER_STATS);
}

/** Caches the announcing client's listening endpoint: its address with the port it announced. */
function matchRequest(ctx: InspectContext, evidence: number): number {
  const state = ctx.state;
  const s = ctx.stateOff;
  state[s + REQUEST] = REQUEST_NONE;
  if ((evidence & HAS_PORT) !== 0) {
    const pkt = ctx.pkt;
    ctx.peers.add(pkt.family, pkt.buf, pkt.srcOff, (state[s + ANNOUNCED_PORT] << 8) | state[s + ANNOUNCED_PORT + 1]);
  }
  return MATCH;
}

/** Reads the parameters from `at` to the end of the query; returns the evidence bits found (and QUERY_CUT). */
function readParameters(ctx: InspectContext, at: number, end: number): number {
  const state = ctx.state;
  const s = ctx.stateOff;
  const buf = ctx.pkt.buf;
  let evidence = 0;
  for (;;) {
    const paramEnd = parameterEnd(buf, at, end);
    // A parameter running to the end of the bytes may be cut: its value cannot be judged.
    if (paramEnd === end) return evidence | QUERY_CUT;
    const eq = nameEnd(buf, at, paramEnd);
    const value = eq + 1;
    if (bytesEqual(buf, at, eq, INFO_HASH)) {
      evidence |= percentDecode(buf, value, paramEnd, decoded) === ID_LENGTH ? HAS_INFO_HASH : BAD_INFO_HASH;
    } else if (bytesEqual(buf, at, eq, PEER_ID)) {
      if (percentDecode(buf, value, paramEnd, decoded) === ID_LENGTH) {
        evidence |= HAS_PEER_ID;
        if (peerIdClient(decoded, 0, ID_LENGTH) !== UNKNOWN_CLIENT) evidence |= KNOWN_CLIENT;
      }
    } else if (bytesEqual(buf, at, eq, PORT)) {
      if (isDecimal(buf, value, paramEnd, 5)) {
        const port = decimalValue(buf, value, paramEnd);
        if (port > 0 && port < 0x10000) {
          evidence |= HAS_PORT;
          state[s + ANNOUNCED_PORT] = port >>> 8;
          state[s + ANNOUNCED_PORT + 1] = port & 0xff;
        }
      }
    } else if (bytesEqual(buf, at, eq, UPLOADED) || bytesEqual(buf, at, eq, DOWNLOADED) || bytesEqual(buf, at, eq, LEFT)) {
      if (isDecimal(buf, value, paramEnd, 20)) evidence |= HAS_TRANSFER_STATS;
    }
    if (!anotherParameterFollows(buf, paramEnd, end)) return evidence;
    at = paramEnd + 1;
  }
}

/** The answer with no request seen: a tracker's only if its body has an interval and a peer list. */
function checkResponse(ctx: InspectContext): number {
  const pkt = ctx.pkt;
  const off = pkt.payloadOff;
  const end = off + pkt.payloadLen;
  const body = responseBody(ctx, off, end);
  if (body < 0) return GIVE_UP;
  if (body === end) return MORE;
  return checkBody(ctx, body, end);
}

/** The answer's body, in the segment after its header block. */
function checkResponseBody(ctx: InspectContext): number {
  if (!continuesResponse(ctx)) return GIVE_UP;
  ctx.state[ctx.stateOff + RESPONSE] = RESPONSE_NONE;
  const pkt = ctx.pkt;
  const end = pkt.payloadOff + pkt.payloadLen;
  const body = bodyStart(ctx, pkt.payloadOff, end);
  return body < 0 ? GIVE_UP : checkBody(ctx, body, end);
}

function checkBody(ctx: InspectContext, body: number, end: number): number {
  const seen = walkBody(ctx, body, end, CHECK);
  if ((seen & SAW_INTERVAL) === 0 || (seen & SAW_PEERS) === 0) return GIVE_UP;
  ctx.state[ctx.stateOff + RESPONSE] = RESPONSE_DONE;
  walkBody(ctx, body, end, learningMode(ctx));
  return MATCH;
}

/** Chunk boundaries could fall inside a cut list, so a chunked body is read one segment only. */
function learningMode(ctx: InspectContext): number {
  return ctx.state[ctx.stateOff + CHUNKED_BODY] === 0 ? LEARN_AND_FOLLOW : LEARN;
}

/** Start of the bencoded body at `at`: past the chunk-size line of a chunked body. */
function bodyStart(ctx: InspectContext, at: number, end: number): number {
  return ctx.state[ctx.stateOff + CHUNKED_BODY] === 0 ? at : nextLine(ctx.pkt.buf, at, end);
}

/**
 * Position of the body of the "HTTP/1.x 200" response at `off`, past a chunk-size line when the
 * body is chunked; -1 for any other status or a header block cut short. When the header block
 * ends the segment, returns `end` and records that the body starts the next segment.
 */
function responseBody(ctx: InspectContext, off: number, end: number): number {
  const buf = ctx.pkt.buf;
  if (!startsWith(buf, off, end, HTTP1_PREFIX) || !startsWith(buf, off + HTTP1_PREFIX.length + 1, end, STATUS_200)) return -1;
  const headers = nextLine(buf, off, end);
  if (headers < 0) return -1;
  const body = headerBlockEnd(buf, headers, end);
  if (body < 0) return -1;
  const encoding = findHeader(buf, headers, body, TRANSFER_ENCODING);
  ctx.state[ctx.stateOff + CHUNKED_BODY] = encoding >= 0 && startsWith(buf, encoding, body, CHUNKED) ? 1 : 0;
  if (body === end) {
    expectNextSegment(ctx, RESPONSE_BODY_NEXT);
    return end;
  }
  return bodyStart(ctx, body, end);
}

/** Records that the response goes on in the segment right after this one. */
function expectNextSegment(ctx: InspectContext, phase: number): void {
  const state = ctx.state;
  const s = ctx.stateOff;
  const pkt = ctx.pkt;
  const next = pkt.tcpSeq + pkt.payloadLen;
  state[s + RESPONSE] = phase;
  state[s + NEXT_SEQ] = next >>> 24;
  state[s + NEXT_SEQ + 1] = (next >>> 16) & 0xff;
  state[s + NEXT_SEQ + 2] = (next >>> 8) & 0xff;
  state[s + NEXT_SEQ + 3] = next & 0xff;
}

/** Whether this segment starts where the last one ended (a retransmission or a gap does not). */
function continuesResponse(ctx: InspectContext): boolean {
  const state = ctx.state;
  const at = ctx.stateOff + NEXT_SEQ;
  const expected = (state[at] << 24) | (state[at + 1] << 16) | (state[at + 2] << 8) | state[at + 3];
  return (expected ^ ctx.pkt.tcpSeq) === 0;
}

/**
 * Walks the response dictionary that starts at `body` ('d'), or its entries from `at` when
 * following a cut list, noting an integer interval and well-formed peers / peers6 (compact
 * strings of 6- and 18-byte entries, or lists of dictionaries); in the learning modes it caches
 * the peers found. Returns SAW_* bits.
 */
function walkBody(ctx: InspectContext, body: number, end: number, mode: number): number {
  const buf = ctx.pkt.buf;
  if (body >= end || buf[body] !== 0x64) return 0;
  return walkEntries(ctx, body + 1, end, mode);
}

function walkEntries(ctx: InspectContext, at: number, end: number, mode: number): number {
  const buf = ctx.pkt.buf;
  let seen = 0;
  while (at < end && buf[at] !== 0x65) {
    const keyStart = stringStart(buf, at, end);
    if (keyStart < 0) return seen;
    const keyEnd = keyStart + stringLength(buf, at);
    if (keyEnd >= end) return seen;
    if (bytesEqual(buf, keyStart, keyEnd, INTERVAL_KEY)) {
      if (buf[keyEnd] !== 0x69) return seen;
      at = skipValue(buf, keyEnd, end);
      if (at < 0) return seen;
      seen |= SAW_INTERVAL;
      continue;
    }
    const v6 = bytesEqual(buf, keyStart, keyEnd, PEERS6_KEY);
    if (v6 || bytesEqual(buf, keyStart, keyEnd, PEERS_KEY)) {
      const list = buf[keyEnd] === 0x6c;
      at = list ? walkPeerDicts(ctx, keyEnd, end, mode) : walkCompactPeers(ctx, keyEnd, end, v6 ? COMPACT_V6 : COMPACT_V4, mode);
      if (at === -1) return seen;
      seen |= SAW_PEERS;
      if (at === -2) return seen;
      continue;
    }
    at = skipValue(buf, keyEnd, end);
    if (at < 0) return seen;
  }
  return seen;
}

/**
 * The compact peer string at `pos`: position after it, -1 when it is not one, -2 when it runs
 * past `end` (then, when following, the rest is expected in the next segment).
 */
function walkCompactPeers(ctx: InspectContext, pos: number, end: number, entry: number, mode: number): number {
  const buf = ctx.pkt.buf;
  let colon = pos;
  while (colon < end && colon - pos < 8 && buf[colon] >= 0x30 && buf[colon] <= 0x39) colon++;
  if (colon === pos || colon >= end || buf[colon] !== 0x3a) return -1;
  const length = stringLength(buf, pos);
  if (length % entry !== 0 || length > MAX_PEER_STRING) return -1;
  const start = colon + 1;
  const available = Math.min(length, end - start);
  const whole = Math.floor(available / entry);
  if (mode !== CHECK) ctx.peers.addCompact(entry === COMPACT_V4 ? 4 : 6, buf, start, whole, entry, 0);
  if (available === length) return start + length;
  if (mode === LEARN_AND_FOLLOW) {
    const cut = available - whole * entry;
    rememberList(ctx, length - available, entry, cut === 0 ? 0 : entry - cut);
  }
  return -2;
}

/** Notes a compact list that goes on in the next segment. */
function rememberList(ctx: InspectContext, left: number, entry: number, skip: number): void {
  const state = ctx.state;
  const s = ctx.stateOff;
  expectNextSegment(ctx, RESPONSE_IN_LIST);
  state[s + LIST_LEFT] = left >>> 16;
  state[s + LIST_LEFT + 1] = (left >>> 8) & 0xff;
  state[s + LIST_LEFT + 2] = left & 0xff;
  state[s + LIST_ENTRY] = entry;
  state[s + LIST_SKIP] = skip;
}

/** Reads the next segment of a compact list cut at the last one's end, then the entries after it. */
function followList(ctx: InspectContext): void {
  const state = ctx.state;
  const s = ctx.stateOff;
  const pkt = ctx.pkt;
  const off = pkt.payloadOff;
  const end = off + pkt.payloadLen;
  let left = (state[s + LIST_LEFT] << 16) | (state[s + LIST_LEFT + 1] << 8) | state[s + LIST_LEFT + 2];
  const entry = state[s + LIST_ENTRY];
  const skip = Math.min(state[s + LIST_SKIP], end - off, left);
  const start = off + skip;
  left -= skip;
  const available = Math.min(left, end - start);
  const whole = Math.floor(available / entry);
  ctx.peers.addCompact(entry === COMPACT_V4 ? 4 : 6, pkt.buf, start, whole, entry, 0);
  if (available === left) {
    walkEntries(ctx, start + left, end, LEARN_AND_FOLLOW);
    return;
  }
  const cut = available - whole * entry;
  const skipNext = state[s + LIST_SKIP] - skip + (cut === 0 ? 0 : entry - cut);
  rememberList(ctx, left - available, entry, skipNext);
}

/**
 * The non-compact peer list at `pos` (BEP 3: dictionaries with "ip" and "port"): position after
 * it, -1 when malformed, -2 when it runs past `end`. Entries with a dotted-quad IPv4 address are
 * cached in the learning modes; host names and IPv6 text are not resolved.
 */
function walkPeerDicts(ctx: InspectContext, pos: number, end: number, mode: number): number {
  const buf = ctx.pkt.buf;
  let at = pos + 1;
  while (at < end && buf[at] !== 0x65) {
    if (buf[at] !== 0x64) return -1;
    const next = skipValue(buf, at, end);
    if (next < 0) return -2;
    if (mode !== CHECK) learnPeerDict(ctx, at, next);
    at = next;
  }
  return at < end ? at + 1 : -2;
}

function learnPeerDict(ctx: InspectContext, dict: number, end: number): void {
  const buf = ctx.pkt.buf;
  const ip = findKey(buf, dict, end, IP_KEY);
  const port = findKey(buf, dict, end, PORT);
  if (ip < 0 || port < 0 || buf[port] !== 0x69) return;
  const ipStart = stringStart(buf, ip, end);
  if (ipStart < 0 || !parseDottedQuad(buf, ipStart, ipStart + stringLength(buf, ip))) return;
  const digits = port + 1;
  let digitsEnd = digits;
  while (digitsEnd < end && buf[digitsEnd] !== 0x65) digitsEnd++;
  if (!isDecimal(buf, digits, digitsEnd, 5)) return;
  const value = decimalValue(buf, digits, digitsEnd);
  if (value < 0x10000) ctx.peers.add(4, address4, 0, value);
}

/** Parses "a.b.c.d" in buf[from, to) into address4. */
function parseDottedQuad(buf: Uint8Array, from: number, to: number): boolean {
  let at = from;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (at >= to || buf[at] !== 0x2e) return false;
      at++;
    }
    const digits = at;
    while (at < to && at - digits < 3 && buf[at] >= 0x30 && buf[at] <= 0x39) at++;
    if (at === digits) return false;
    const value = decimalValue(buf, digits, at);
    if (value > 255) return false;
    address4[part] = value;
  }
  return at === to;
}
