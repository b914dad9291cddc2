import { asciiBytes, bytesEqual } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';
import {
  anotherParameterFollows,
  findHeader,
  GET_PREFIX,
  HEADER_ABSENT,
  hexValue,
  isDecimal,
  lastSegmentStart,
  nameEnd,
  nextLine,
  parameterEnd,
  percentDecode,
  queryMark,
  startsWith,
} from './http-message.js';

/**
 * BitTorrent over HTTP other than trackers, from the first request of a flow: BEP 17 seed
 * requests (`?info_hash=…&piece=…`, Vuze's `/webseed?info_hash=…`), BitComet's persistent-seed
 * `/data?fid=…&size=…`, and any GET whose User-Agent names a BitTorrent client, which is what
 * makes a BEP 19 web seed request (a plain ranged GET) BitTorrent.
 */

/**
 * User-Agent products of software that only does BitTorrent. General download managers that
 * also fetch plain HTTP with the same User-Agent (aria2, FlashGet, Xunlei/Thunder, Free
 * Download Manager) are left out: their web seed requests are indistinguishable from their
 * ordinary downloads.
 */
const CLIENT_USER_AGENTS = [
  'Transmission/',
  'qBittorrent/',
  'libtorrent/',
  'rtorrent/',
  'uTorrent/',
  'uTorrentMac/',
  'µTorrent/',
  'BTWebClient/',
  'BitTorrent/',
  'BitTorrentMac/',
  'Deluge/',
  'Deluge ',
  'Azureus ',
  'Vuze ',
  'BiglyBT ',
  'BiglyBT/',
  'BitComet/',
  'BitLord/',
  'KTorrent/',
  'Tixati/',
  'FrostWire/',
  'WebTorrent/',
  'PicoTorrent/',
  'Tribler/',
  'Enhanced-CTorrent/',
  'CTorrent/',
  'BitTornado/',
].map((product) => new TextEncoder().encode(product));

const USER_AGENT = asciiBytes('user-agent');
const INFO_HASH = asciiBytes('info_hash');
const PIECE = asciiBytes('piece');
const FID = asciiBytes('fid');
const SIZE = asciiBytes('size');
const WEBSEED = asciiBytes('webseed');
const DATA = asciiBytes('data');

/** Bytes of the first request read at most. */
const MAX_REQUEST_SCAN = 4096;
const INFO_HASH_LENGTH = 20;
/** BitComet's fid: a SHA-1 in hex. */
const FID_LENGTH = 40;

/** Seed-request evidence bits. */
const HAS_INFO_HASH = 1;
const HAS_PIECE = 2;
const HAS_FID = 4;
const HAS_SIZE = 8;

/** Per-flow state: phase, request direction + 1, whether the cut segment ended at a line start. */
const PHASE = 0;
const REQUEST_DIR = 1;
const AT_LINE_START = 2;
const STATE_BYTES = 3;
const HEADERS_CUT = 1;

const decoded = new Uint8Array(INFO_HASH_LENGTH);

/**
 * Budget: 2 payload packets, the first request and, when its header block was cut, the rest of it.
 * Never banned (producerIsPeer false): the other end is a web server (a web seed, a feed, an update site), not a peer.
 */
export const httpBittorrentDetector: Detector = {
  name: 'http-bittorrent',
  transports: OVER_TCP,
  budget: 2,
  stateBytes: STATE_BYTES,
  strength: STRENGTH_EXACT,
  producerIsPeer: false,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const s = ctx.stateOff;
    const pkt = ctx.pkt;
    const buf = pkt.buf;
    const off = pkt.payloadOff;
    const end = off + Math.min(pkt.payloadLen, MAX_REQUEST_SCAN);
    const wholeSegment = end === off + pkt.payloadLen;
    if (state[s + PHASE] === HEADERS_CUT) {
      if (ctx.dir !== state[s + REQUEST_DIR] - 1) return MORE;
      // A line cut by the last segment goes on here: the header lines start after it.
      const lines = state[s + AT_LINE_START] === 1 ? off : nextLine(buf, off, end);
      return lines < 0 ? GIVE_UP : readUserAgent(ctx, lines, end, false);
    }
    if (ctx.flowIndex !== 0 || !startsWith(buf, off, end, GET_PREFIX)) return GIVE_UP;
    const target = off + GET_PREFIX.length;
    const mark = queryMark(buf, target, end);
    if (mark >= 0 && isSeedRequest(buf, target, mark, end)) return MATCH;
    const lines = nextLine(buf, off, end);
    if (lines < 0) return GIVE_UP;
    state[s + REQUEST_DIR] = ctx.dir + 1;
    return readUserAgent(ctx, lines, end, wholeSegment);
  },
};

/** Decides on the User-Agent among the header lines from `at`; may wait for one more segment. */
function readUserAgent(ctx: InspectContext, at: number, end: number, mayWait: boolean): number {
  const buf = ctx.pkt.buf;
  const value = findHeader(buf, at, end, USER_AGENT);
  if (value >= 0) return isClientUserAgent(buf, value, end) ? MATCH : GIVE_UP;
  if (value === HEADER_ABSENT || !mayWait) return GIVE_UP;
  const state = ctx.state;
  state[ctx.stateOff + PHASE] = HEADERS_CUT;
  state[ctx.stateOff + AT_LINE_START] = buf[end - 1] === 0x0a ? 1 : 0;
  return MORE;
}

/** Whether the User-Agent value at `at` starts with a BitTorrent client's product and a version. */
function isClientUserAgent(buf: Uint8Array, at: number, end: number): boolean {
  for (let i = 0; i < CLIENT_USER_AGENTS.length; i++) {
    const product = CLIENT_USER_AGENTS[i];
    if (startsWith(buf, at, end, product) && at + product.length < end && isAlphanumeric(buf[at + product.length])) return true;
  }
  return false;
}

function isAlphanumeric(byte: number): boolean {
  const lower = byte | 0x20;
  return (byte >= 0x30 && byte <= 0x39) || (lower >= 0x61 && lower <= 0x7a);
}

/**
 * BEP 17 (a 20-byte info_hash with a piece number, or Vuze's /webseed path) and BitComet's
 * /data?fid=<40 hex>&size=<n> in the query after `mark`.
 */
function isSeedRequest(buf: Uint8Array, target: number, mark: number, end: number): boolean {
  const segment = lastSegmentStart(buf, target, mark);
  let evidence = 0;
  for (let at = mark + 1; ; ) {
    const paramEnd = parameterEnd(buf, at, end);
    if (paramEnd === end) break;
    const eq = nameEnd(buf, at, paramEnd);
    const value = eq + 1;
    if (bytesEqual(buf, at, eq, INFO_HASH)) {
      if (percentDecode(buf, value, paramEnd, decoded) !== INFO_HASH_LENGTH) return false;
      evidence |= HAS_INFO_HASH;
    } else if (bytesEqual(buf, at, eq, PIECE)) {
      if (isDecimal(buf, value, paramEnd, 9)) evidence |= HAS_PIECE;
    } else if (bytesEqual(buf, at, eq, FID)) {
      if (paramEnd - value === FID_LENGTH && isHex(buf, value, paramEnd)) evidence |= HAS_FID;
    } else if (bytesEqual(buf, at, eq, SIZE)) {
      if (isDecimal(buf, value, paramEnd, 20)) evidence |= HAS_SIZE;
    }
    if (!anotherParameterFollows(buf, paramEnd, end)) break;
    at = paramEnd + 1;
  }
  if ((evidence & HAS_INFO_HASH) !== 0) return (evidence & HAS_PIECE) !== 0 || bytesEqual(buf, segment, mark, WEBSEED);
  return (evidence & (HAS_FID | HAS_SIZE)) === (HAS_FID | HAS_SIZE) && bytesEqual(buf, segment, mark, DATA);
}

function isHex(buf: Uint8Array, from: number, to: number): boolean {
  for (let at = from; at < to; at++) if (hexValue(buf[at]) < 0) return false;
  return true;
}
