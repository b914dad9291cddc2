import { GIVE_UP, MATCH, MORE, OVER_UDP, STRENGTH_EXACT, STRENGTH_HEURISTIC, STRENGTH_RESPONSE, type Detector, type InspectContext } from './detector.js';

/** The connect request's connection_id, 0x41727101980, in network byte order. */
const PROTOCOL_ID = Uint8Array.from([0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
const ACTION_CONNECT = 0;
const ACTION_ANNOUNCE = 1;
const ACTION_SCRAPE = 2;
const ACTION_ERROR = 3;
const CONNECT_LEN = 16;
const ANNOUNCE_REQUEST_LEN = 98;
const ANNOUNCE_EVENT_AT = 80;
const ANNOUNCE_RESPONSE_HEADER = 20;
const SCRAPE_REQUEST_HEADER = 16;
const SCRAPE_RESPONSE_HEADER = 8;
const INFO_HASH_LEN = 20;
const SCRAPE_ENTRY_LEN = 12;
/** BEP 15: at most about 74 info-hashes fit in one scrape. */
const MAX_SCRAPE_HASHES = 74;
/** Compact peers: IPv4 address and port, or IPv6 address and port, by the tracker's family (BEP 15). */
const PEER4_LEN = 6;
const PEER6_LEN = 18;
/** BEP 41 option types after the announce request. */
const OPTION_END = 0;
const OPTION_NOP = 1;
const OPTION_URL_DATA = 2;

/** State: the request awaiting its response (PENDING | direction | action), its scrape hash count, its transaction id. */
const REQUEST = 0;
const PENDING = 0x80;
const FROM_RESPONDER = 0x40;
const ACTION_MASK = 0x0f;
const HASHES = 1;
const TRANSACTION = 2;

/** What one datagram is to the detector. */
const OTHER = 0;
const CONNECT_REQUEST = 1;
const REQUEST_SEEN = 2;
const ANSWERED = 3;
/**
 * Shaped as the answer, but a request itself: what a reflecting service (UDP echo) sends back of
 * a request whose connection id reads as an action and a transaction id. No tracker answered.
 */
const REFLECTED = 4;
/**
 * An announce response opening a flow, or following a connect response that opened it: the
 * requests took another route (one direction seen).
 */
const UNASKED_ANSWER = 5;
const UNASKED_CONNECT = 6;
/** Largest announce interval (s) and peer counts an unasked announce response may give: trackers give minutes and swarm sizes. */
const MAX_INTERVAL = 0x1ffff;
const MAX_COUNT = 0xffffff;

/**
 * BEP 15 UDP tracker protocol. The 16-byte connect request, with its 64-bit protocol magic, is
 * decided on its own. An announce (98 bytes and more, event 0-3, well-formed BEP 41 options) or
 * scrape request is decided with its response from the other side: same transaction id, and an
 * announce response (compact peers, 6 bytes each over IPv4, 18 over IPv6), a scrape response
 * (12 bytes per hash asked) or an error. The peers of announce responses, in the matching flow and
 * in the later packets of a flow already matched, go to the peer lists of the host they reach.
 * Evidence: a connect request is `exact`; a response with the asked transaction id is a `response`
 * from the tracker, unless it is a request itself (see REFLECTED), when it is `exact`. On a route
 * that shows one direction, an announce response opening a flow, alone or after a connect response
 * (action 1, a non-zero transaction id, an interval under 36 h, peer counts under 2^24, whole
 * compact peers) is `heuristic`: nothing shows it answers anyone, so it never bans. Its peers are
 * listed to the host it reaches all the same: a peer list from a third party drops that host's new
 * flows to the endpoints listed and nothing else, and on such a route the host's connection
 * attempts to them carry no payload the gateway sees (a forger gains no more than a tracker the
 * host announced to would: the host's own flows to the endpoints it names). Any other
 * datagram gives the flow up, so the asking side can have sent nothing else for an echo to return.
 * Budget: 32 payload packets, for the announces a client sends to one tracker from one socket.
 */
export const udpTrackerDetector: Detector = {
  name: 'udp-tracker',
  transports: OVER_UDP,
  budget: 32,
  stateBytes: TRANSACTION + 4,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const seen = readDatagram(ctx);
    if (seen === ANSWERED) ctx.strength = STRENGTH_RESPONSE;
    if (seen === UNASKED_ANSWER) ctx.strength = STRENGTH_HEURISTIC;
    if (seen === CONNECT_REQUEST || seen === ANSWERED || seen === REFLECTED || seen === UNASKED_ANSWER) return MATCH;
    return seen === REQUEST_SEEN || seen === UNASKED_CONNECT ? MORE : GIVE_UP;
  },
  learn(ctx: InspectContext): void {
    readDatagram(ctx);
  },
};

/**
 * Classifies the current datagram: records an announce or scrape request as pending, and reads
 * the peers of the announce response that answers it.
 */
function readDatagram(ctx: InspectContext): number {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const start = pkt.payloadOff;
  const len = pkt.payloadLen;
  if (len >= CONNECT_LEN && isProtocolId(buf, start)) {
    return len === CONNECT_LEN && actionAt(buf, start + 8) === ACTION_CONNECT ? CONNECT_REQUEST : OTHER;
  }
  const state = ctx.state;
  const base = ctx.stateOff;
  const pending = state[base + REQUEST];
  const fromResponder = ctx.dir === 1 ? FROM_RESPONDER : 0;
  const request = requestAction(buf, start, len);
  if ((pending & PENDING) !== 0 && (pending & FROM_RESPONDER) !== fromResponder && len >= 8 && sameTransaction(buf, start + 4, state, base + TRANSACTION)) {
    if (!isResponse(ctx, actionAt(buf, start), pending & ACTION_MASK, state[base + HASHES])) return OTHER;
    if (request >= 0) return REFLECTED;
    listPeers(ctx);
    return ANSWERED;
  }
  if (request < 0) return (pending & PENDING) === 0 ? unasked(ctx) : OTHER;
  state[base + REQUEST] = PENDING | fromResponder | request;
  state[base + HASHES] = request === ACTION_SCRAPE ? (len - SCRAPE_REQUEST_HEADER) / INFO_HASH_LEN : 0;
  for (let i = 0; i < 4; i++) state[base + TRANSACTION + i] = buf[start + 12 + i];
  return REQUEST_SEEN;
}

/** The action of an announce or scrape request in buf[start, start + len), or -1 when it is none. */
function requestAction(buf: Uint8Array, start: number, len: number): number {
  const action = len >= 16 ? actionAt(buf, start + 8) : -1;
  if (action === ACTION_ANNOUNCE) {
    if (len < ANNOUNCE_REQUEST_LEN || !isAnnounceRequest(buf, start, start + len)) return -1;
  } else if (action === ACTION_SCRAPE) {
    const hashes = (len - SCRAPE_REQUEST_HEADER) / INFO_HASH_LEN;
    if (!Number.isInteger(hashes) || hashes < 1 || hashes > MAX_SCRAPE_HASHES) return -1;
  } else return -1;
  // Clients draw transaction ids at random: an all-zero one is a zero-filled look-alike.
  return (buf[start + 12] | buf[start + 13] | buf[start + 14] | buf[start + 15]) === 0 ? -1 : action;
}

/** Whether the datagram (action and transaction id already read) answers the pending request. */
function isResponse(ctx: InspectContext, action: number, requested: number, hashes: number): boolean {
  const len = ctx.pkt.payloadLen;
  if (action === ACTION_ERROR) return true;
  if (action !== requested) return false;
  if (action === ACTION_SCRAPE) return len === SCRAPE_RESPONSE_HEADER + hashes * SCRAPE_ENTRY_LEN;
  const peersLen = len - ANNOUNCE_RESPONSE_HEADER;
  return peersLen >= 0 && peersLen % peerEntryLength(ctx) === 0;
}

/**
 * What a datagram of a flow that asked nothing is: an announce response first or after a connect
 * response first (only these keep the flow going), or OTHER.
 */
function unasked(ctx: InspectContext): number {
  if (ctx.flowIndex > 1) return OTHER;
  if (isUnaskedAnnounceResponse(ctx)) {
    listPeers(ctx);
    return UNASKED_ANSWER;
  }
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const at = pkt.payloadOff;
  const connect = ctx.flowIndex === 0 && pkt.payloadLen === CONNECT_LEN && actionAt(buf, at) === ACTION_CONNECT && (buf[at + 4] | buf[at + 5] | buf[at + 6] | buf[at + 7]) !== 0;
  return connect ? UNASKED_CONNECT : OTHER;
}

/** An announce response of a flow that asked nothing: header values a tracker gives, whole compact peers. */
function isUnaskedAnnounceResponse(ctx: InspectContext): boolean {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const at = pkt.payloadOff;
  const peersLen = pkt.payloadLen - ANNOUNCE_RESPONSE_HEADER;
  if (peersLen < 0 || peersLen % peerEntryLength(ctx) !== 0 || actionAt(buf, at) !== ACTION_ANNOUNCE) return false;
  if ((buf[at + 4] | buf[at + 5] | buf[at + 6] | buf[at + 7]) === 0) return false;
  const interval = u32Below(buf, at + 8, MAX_INTERVAL);
  return interval > 0 && u32Below(buf, at + 12, MAX_COUNT) >= 0 && u32Below(buf, at + 16, MAX_COUNT) >= 0;
}

/** The 32-bit big-endian value at `at` when it is at most `max` (below 2^31), else -1. */
function u32Below(buf: Uint8Array, at: number, max: number): number {
  if (buf[at] !== 0) return -1;
  const value = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];
  return value <= max ? value : -1;
}

/** The compact peers of an announce response (BEP 15: 6 bytes each over IPv4, 18 over IPv6), to the host it reaches. */
function listPeers(ctx: InspectContext): void {
  const pkt = ctx.pkt;
  if (actionAt(pkt.buf, pkt.payloadOff) !== ACTION_ANNOUNCE) return;
  const entryLen = peerEntryLength(ctx);
  const count = (pkt.payloadLen - ANNOUNCE_RESPONSE_HEADER) / entryLen;
  ctx.peers.addCompact(pkt.family, pkt.buf, pkt.payloadOff + ANNOUNCE_RESPONSE_HEADER, count, entryLen, 0);
}

function peerEntryLength(ctx: InspectContext): number {
  return ctx.pkt.family === 4 ? PEER4_LEN : PEER6_LEN;
}

/** An announce request: event 0-3 (none, completed, started, stopped), then BEP 41 options that end inside the datagram. */
function isAnnounceRequest(buf: Uint8Array, start: number, end: number): boolean {
  if (actionAt(buf, start + ANNOUNCE_EVENT_AT) > 3) return false;
  let at = start + ANNOUNCE_REQUEST_LEN;
  while (at < end) {
    const option = buf[at];
    if (option === OPTION_END) return true;
    if (option === OPTION_NOP) at++;
    else if (option === OPTION_URL_DATA && at + 1 < end) at += 2 + buf[at + 1];
    else return false;
  }
  return at === end;
}

function isProtocolId(buf: Uint8Array, at: number): boolean {
  for (let i = 0; i < PROTOCOL_ID.length; i++) if (buf[at + i] !== PROTOCOL_ID[i]) return false;
  return true;
}

/** The 32-bit action (or event) at `at` when it is below 256, else -1: no 32-bit value ever leaves the function. */
function actionAt(buf: Uint8Array, at: number): number {
  return buf[at] === 0 && buf[at + 1] === 0 && buf[at + 2] === 0 ? buf[at + 3] : -1;
}

function sameTransaction(buf: Uint8Array, at: number, state: Uint8Array, stateAt: number): boolean {
  for (let i = 0; i < 4; i++) if (buf[at + i] !== state[stateAt + i]) return false;
  return true;
}
