import { asciiBytes, findKey, skipValue } from './bencode.js';
import type { InspectContext } from './detector.js';

/**
 * The BEP 3 peer wire message stream that follows the handshake, walked one TCP segment at a time:
 * `<length:4><id:1><payload>` messages (BEP 3 ids 0-9, BEP 6 fast ids 13-17, BEP 10 extended 20,
 * BEP 52 hash messages 21-23, keep-alives of length 0). Positions come from TCP sequence numbers,
 * so a message cut over several segments, a retransmission or an overlap is followed across them.
 *
 * One walker per direction lives in `WIRE_BYTES` of the caller's per-flow state. It does two jobs
 * for the detectors that share it: it counts the well-formed messages of the current chain (the
 * evidence 'peer-messages' decides on), and, when asked to learn, reads the peers a flow names: the
 * BEP 11 ut_pex `added`/`added6` lists, the BEP 10 handshake's listen port `p` and the BEP 5 `port`
 * message's DHT port.
 */

/** Bytes of the BEP 3 handshake: pstrlen, "BitTorrent protocol", reserved, info hash, peer id. */
export const HANDSHAKE_LENGTH = 68;

/** Per-direction walker state. */
export const WIRE_BYTES = 14;
/** TCP sequence number of the next stream byte to walk (4 bytes). */
const NEXT = 0;
const FLAGS = 4;
/** Bytes of the current message walked so far, saturating at 255: 0-3 the length, 4 the id, then the payload. */
const POS = 5;
/** 3 bytes: the length read so far while in the length prefix, then the bytes of the message still to come. */
const VALUE = 6;
const ID = 9;
/** CHECK_* bits of the current message. */
const CHECK = 10;
/** Well-formed messages in the current chain, and how many of them were strong evidence (both saturating). */
const MESSAGES = 11;
const STRONG_MESSAGES = 12;
/** The ut_pex extended id that messages in this direction carry (assigned by the other side), 0 until known. */
const PEX_ID = 13;

/** FLAGS: the walker has a position (NEXT); it believes a message boundary is where its POS says. */
const STARTED = 1;
const SYNCED = 2;

/** CHECK: the message is strong evidence unless a payload check clears it; an any-byte-nonzero accumulator. */
const CHECK_STRONG = 1;
const CHECK_NONZERO = 2;

const CHOKE = 0;
const UNCHOKE = 1;
const INTERESTED = 2;
const NOT_INTERESTED = 3;
const HAVE = 4;
const BITFIELD = 5;
const REQUEST = 6;
const PIECE = 7;
const CANCEL = 8;
const PORT = 9;
const SUGGEST_PIECE = 13;
const HAVE_ALL = 14;
const HAVE_NONE = 15;
const REJECT_REQUEST = 16;
const ALLOWED_FAST = 17;
const EXTENDED = 20;
const HASH_REQUEST = 21;
const HASHES = 22;
const HASH_REJECT = 23;
const EXTENSION_HANDSHAKE = 0;

/** "All current implementations use 2^14 (16 kiB)" (BEP 3); larger requests are refused, 128 KiB is generous. */
const BLOCK = 1 << 14;
const MAX_BLOCK = 1 << 17;
/** Longest message accepted (a bitfield of 4 M pieces): the length prefix's second byte is below this. */
const MAX_LENGTH = 1 << 19;
const MAX_LENGTH_SECOND_BYTE = MAX_LENGTH >>> 16;
/** BEP 52 hash request and reject: id, pieces root (32), base layer, index, length, proof layers (4 each). */
const HASH_REQUEST_LENGTH = 1 + 32 + 4 * 4;
const HASH_LENGTH = 32;

/** Payload bytes (after the id) that checkPayloadByte looks at, by message id. */
const CHECKED_BYTES = new Uint8Array(256);
CHECKED_BYTES[HAVE] = CHECKED_BYTES[SUGGEST_PIECE] = CHECKED_BYTES[ALLOWED_FAST] = 1;
CHECKED_BYTES[REQUEST] = CHECKED_BYTES[CANCEL] = CHECKED_BYTES[REJECT_REQUEST] = 12;
CHECKED_BYTES[PIECE] = 8;
CHECKED_BYTES[PORT] = 2;
// Through the high byte of the last field, proof layers.
CHECKED_BYTES[HASH_REQUEST] = CHECKED_BYTES[HASH_REJECT] = 32 + 3 * 4 + 1;

const DICT = 0x64; // 'd'
const INT = 0x69; // 'i'
const END = 0x65; // 'e'
const COLON = 0x3a;
const M_KEY = asciiBytes('m');
const UT_PEX_KEY = asciiBytes('ut_pex');
const P_KEY = asciiBytes('p');
const ADDED_KEY = asciiBytes('added');
const ADDED6_KEY = asciiBytes('added6');
/** BEP 11 compact entries: address and port. */
const COMPACT_IPV4 = 6;
const COMPACT_IPV6 = 18;

/** Makes this packet's first payload byte the walker's next one (the stream start, before startWire). */
export function setWirePosition(ctx: InspectContext, at: number): void {
  const seq = ctx.pkt.tcpSeq;
  const state = ctx.state;
  state[at + NEXT] = seq >>> 24;
  state[at + NEXT + 1] = (seq >>> 16) & 0xff;
  state[at + NEXT + 2] = (seq >>> 8) & 0xff;
  state[at + NEXT + 3] = seq & 0xff;
}

/**
 * Bytes from the walker's position to the current packet's first payload byte, modulo 2^32 (a
 * packet from before the position is far away, not behind). Capped below 2^30: a larger integer
 * returned from a call V8 does not inline is boxed on the heap.
 */
export function wireDistance(ctx: InspectContext, at: number): number {
  const state = ctx.state;
  const next = (state[at + NEXT] << 24) | (state[at + NEXT + 1] << 16) | (state[at + NEXT + 2] << 8) | state[at + NEXT + 3];
  return Math.min((ctx.pkt.tcpSeq - next) >>> 0, 0x3fffffff);
}

/** Starts the walker `skip` bytes past the position setWirePosition stored, at a message boundary. */
export function startWire(state: Uint8Array, at: number, skip: number): void {
  const next = (((state[at + NEXT] << 24) | (state[at + NEXT + 1] << 16) | (state[at + NEXT + 2] << 8) | state[at + NEXT + 3]) + skip) | 0;
  state[at + NEXT] = next >>> 24;
  state[at + NEXT + 1] = (next >>> 16) & 0xff;
  state[at + NEXT + 2] = (next >>> 8) & 0xff;
  state[at + NEXT + 3] = next & 0xff;
  state[at + FLAGS] = STARTED | SYNCED;
  state[at + POS] = 0;
  state[at + VALUE] = state[at + VALUE + 1] = state[at + VALUE + 2] = 0;
}

/** Whether the walker is inside an unbroken chain: synced, with a message counted or one under way. */
export function wireInChain(state: Uint8Array, at: number): boolean {
  return (state[at + FLAGS] & SYNCED) !== 0 && (state[at + MESSAGES] > 0 || state[at + POS] > 0);
}

export function wireStarted(state: Uint8Array, at: number): boolean {
  return (state[at + FLAGS] & STARTED) !== 0;
}

/**
 * Whether two directions' walkers have seen enough to call the stream BitTorrent: at least three
 * well-formed messages in unbroken chains, one of them strong (a fixed-length message whose payload
 * checks passed, a 16 KiB piece at a block boundary, or an extension handshake with an `m` dict).
 */
export function wireProven(state: Uint8Array, at: number, otherAt: number): boolean {
  return state[at + MESSAGES] + state[otherAt + MESSAGES] >= 3 && state[at + STRONG_MESSAGES] + state[otherAt + STRONG_MESSAGES] >= 1;
}

/**
 * Walks the current packet's payload with the walker at `at` (`otherAt` is the other direction's,
 * which an extension handshake tells its ut_pex id). Without a position (never started, or lost
 * after a malformed message or a gap in the capture) it assumes a message starts at the segment's
 * first byte, or, with `searchPieces`, at a 16 KiB piece's header anywhere in the segment (a bulk
 * direction met mid-way, whose message boundaries TCP puts anywhere). A malformed message drops
 * the chain's counts. With `learning`, peers the messages name go into ctx.peers: only for flows
 * already known to be BitTorrent.
 */
export function walkWire(ctx: InspectContext, at: number, otherAt: number, learning: boolean, searchPieces: boolean): void {
  const state = ctx.state;
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const end = pkt.payloadOff + pkt.payloadLen;
  let off = pkt.payloadOff;
  let flags = state[at + FLAGS];
  if ((flags & SYNCED) !== 0) {
    const next = (state[at + NEXT] << 24) | (state[at + NEXT + 1] << 16) | (state[at + NEXT + 2] << 8) | state[at + NEXT + 3];
    const walked = (next - pkt.tcpSeq) | 0;
    if (walked >= pkt.payloadLen) return;
    if (walked >= 0) off += walked;
    else flags = 0;
  }
  let pos = 0;
  let value = 0;
  let id = 0;
  let check = 0;
  if ((flags & SYNCED) === 0) {
    // Most segments of other protocols fail on their first byte: leave at once. With
    // `searchPieces`, the segment may start inside a message, and a 16 KiB piece's header further
    // in is a boundary.
    if (off < end && buf[off] !== 0) {
      const piece = searchPieces ? findPieceHeader(buf, off, end) : -1;
      if (piece < 0) {
        state[at + FLAGS] = STARTED;
        state[at + MESSAGES] = state[at + STRONG_MESSAGES] = 0;
        return;
      }
      off = piece;
    }
    flags = STARTED | SYNCED;
  } else {
    pos = state[at + POS];
    value = (state[at + VALUE] << 16) | (state[at + VALUE + 1] << 8) | state[at + VALUE + 2];
    id = state[at + ID];
    check = state[at + CHECK];
  }
  let messages = state[at + MESSAGES];
  let strong = state[at + STRONG_MESSAGES];
  let wellFormed = true;
  /** Where the message being read began in this segment (its start, for one begun before). */
  let messageAt = off;
  for (;;) {
    while (off < end) {
      if (pos < 4) {
        if (pos === 0) messageAt = off;
        const byte = buf[off++];
        if ((pos === 0 && byte !== 0) || (pos === 1 && byte >= MAX_LENGTH_SECOND_BYTE)) {
          wellFormed = false;
          break;
        }
        value = (value << 8) | byte;
        // A keep-alive (length 0) is neither evidence nor a break in the chain.
        pos = pos === 3 && value === 0 ? 0 : pos + 1;
        continue;
      }
      if (pos === 4) {
        id = buf[off++];
        check = acceptHeader(id, value);
        if (check < 0) {
          wellFormed = false;
          break;
        }
        pos = 5;
        value--;
      } else if (pos - 5 < CHECKED_BYTES[id]) {
        check = checkPayloadByte(id, pos - 5, buf[off++], check);
        if (check < 0) {
          wellFormed = false;
          break;
        }
        pos++;
        value--;
      } else {
        if (id === EXTENDED && pos === 5) {
          const extended = readExtended(ctx, at, otherAt, off, off + value, end, learning);
          if (extended < 0) {
            wellFormed = false;
            break;
          }
          check |= extended;
        }
        const take = Math.min(value, end - off);
        off += take;
        value -= take;
        pos = Math.min(255, pos + take);
      }
      if (value === 0) {
        // The sender of a port message runs a DHT node on that UDP port (BEP 5).
        if (id === PORT && learning && off - 2 >= pkt.payloadOff) ctx.peers.add(pkt.family, buf, pkt.srcOff, (buf[off - 2] << 8) | buf[off - 1]);
        if (messages < 255) messages++;
        if ((check & CHECK_STRONG) !== 0 && strong < 255) strong++;
        pos = 0;
        check = 0;
      }
    }
    // With `searchPieces`, what looked like a boundary may have been none: a piece's header past
    // the misread message's first byte starts a new chain.
    if (wellFormed || !searchPieces) break;
    const piece = findPieceHeader(buf, messageAt + 1, end);
    if (piece < 0) break;
    off = messageAt = piece;
    pos = value = check = messages = strong = 0;
    wellFormed = true;
  }
  if (!wellFormed) {
    flags &= ~SYNCED;
    messages = 0;
    strong = 0;
  }
  const next = (pkt.tcpSeq + pkt.payloadLen) | 0;
  state[at + NEXT] = next >>> 24;
  state[at + NEXT + 1] = (next >>> 16) & 0xff;
  state[at + NEXT + 2] = (next >>> 8) & 0xff;
  state[at + NEXT + 3] = next & 0xff;
  state[at + FLAGS] = flags;
  state[at + POS] = pos;
  state[at + VALUE] = value >>> 16;
  state[at + VALUE + 1] = (value >>> 8) & 0xff;
  state[at + VALUE + 2] = value & 0xff;
  state[at + ID] = id;
  state[at + CHECK] = check;
  state[at + MESSAGES] = messages;
  state[at + STRONG_MESSAGES] = strong;
}

/** Header bytes of a 16 KiB piece message that findPieceHeader checks: length, id, index, begin. */
const PIECE_HEADER = 13;
/** Horspool shifts for the header's first five bytes, 00 00 40 09 07, by the byte under the fifth. */
const PIECE_SHIFT = new Uint8Array(256).fill(5);
PIECE_SHIFT[0x00] = 3;
PIECE_SHIFT[0x40] = 2;
PIECE_SHIFT[0x09] = 1;

/**
 * Where a 16 KiB piece message starts in buf[from, end): length 16393, id 7, an index below 2^24
 * and a begin at a block boundary (62 bits fixed: 40 of length and id, 8 of the index, 14 of the
 * begin), its header whole in the segment; -1 when none does. A Horspool search over the first
 * five bytes: on random bytes it looks at one place in five.
 */
function findPieceHeader(buf: Uint8Array, from: number, end: number): number {
  const last = end - PIECE_HEADER;
  for (let i = from; i <= last; ) {
    const fifth = buf[i + 4];
    if (fifth === PIECE && buf[i] === 0 && buf[i + 1] === 0 && buf[i + 2] === 0x40 && buf[i + 3] === 0x09 && buf[i + 5] === 0 && buf[i + 12] === 0 && (buf[i + 11] & 0x3f) === 0) {
      return i;
    }
    i += PIECE_SHIFT[fifth];
  }
  return -1;
}

/** CHECK bits for a message of this id and length (id included), or -1 when no message has that shape. */
function acceptHeader(id: number, length: number): number {
  switch (id) {
    case CHOKE:
    case UNCHOKE:
    case INTERESTED:
    case NOT_INTERESTED:
    case HAVE_ALL:
    case HAVE_NONE:
      // Exact, but one-byte messages are common shapes in other length-prefixed protocols: not strong.
      return length === 1 ? 0 : -1;
    case HAVE:
    case SUGGEST_PIECE:
    case ALLOWED_FAST:
      return length === 5 ? CHECK_STRONG : -1;
    case REQUEST:
    case CANCEL:
    case REJECT_REQUEST:
      return length === 13 ? CHECK_STRONG : -1;
    case PORT:
      return length === 3 ? CHECK_STRONG : -1;
    case HASH_REQUEST:
    case HASH_REJECT:
      return length === HASH_REQUEST_LENGTH ? CHECK_STRONG : -1;
    case BITFIELD:
    case EXTENDED:
      return length >= 2 ? 0 : -1;
    case PIECE: {
      const block = length - 9;
      if (block < 1 || block > MAX_BLOCK) return -1;
      return block === BLOCK ? CHECK_STRONG : 0;
    }
    case HASHES:
      return length > HASH_REQUEST_LENGTH && (length - HASH_REQUEST_LENGTH) % HASH_LENGTH === 0 ? 0 : -1;
    default:
      return -1;
  }
}

/**
 * Checks payload byte `at` (0 = just after the id) of a message: piece indexes below 2^24, block
 * offsets below 2^28, block lengths from 1 to below 2^18, a nonzero port, small BEP 52 layer and
 * index fields. Returns the updated CHECK bits, or -1.
 */
function checkPayloadByte(id: number, at: number, byte: number, check: number): number {
  switch (id) {
    case HAVE:
    case SUGGEST_PIECE:
    case ALLOWED_FAST:
      return byte === 0 ? check : -1;
    case REQUEST:
    case CANCEL:
    case REJECT_REQUEST:
      if (at === 0 || at === 8) return byte === 0 ? check : -1;
      if (at === 4) return byte < 0x10 ? check : -1;
      if (at === 9 && byte >= 4) return -1;
      if (at < 9) return check;
      if (byte !== 0) return check | CHECK_NONZERO;
      return at === 11 && (check & CHECK_NONZERO) === 0 ? -1 : check;
    case PIECE:
      if (at === 0) return byte === 0 ? check : -1;
      if (at === 4) return byte < 0x10 ? check : -1;
      // A full 16 KiB block at a block boundary is what every client sends: the strong shape.
      if ((at === 6 && (byte & 0x3f) !== 0) || (at === 7 && byte !== 0)) return check & ~CHECK_STRONG;
      return check;
    case PORT:
      if (byte !== 0) return check | CHECK_NONZERO;
      return at === 1 && (check & CHECK_NONZERO) === 0 ? -1 : check;
    default:
      // BEP 52 hash request/reject: base layer, index, length and proof layers each below 2^24.
      return at >= 32 && (at & 3) === 0 && byte !== 0 ? -1 : check;
  }
}

/**
 * Reads the payload of an extended message (BEP 10) from its extended id at `idOff`; the message
 * ends at `messageEnd`, the segment at `segmentEnd`. A whole extension handshake must be one
 * bencoded dictionary (else -1); with an `m` dict it is strong evidence (CHECK_STRONG) and tells
 * the ut_pex id for the other direction. Returns 0 for anything else.
 */
function readExtended(ctx: InspectContext, at: number, otherAt: number, idOff: number, messageEnd: number, segmentEnd: number, learning: boolean): number {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const extendedId = buf[idOff];
  const dict = idOff + 1;
  if (extendedId === EXTENSION_HANDSHAKE) {
    if (messageEnd > segmentEnd) return 0;
    if (dict >= messageEnd || buf[dict] !== DICT || skipValue(buf, dict, messageEnd) !== messageEnd) return -1;
    const m = findKey(buf, dict, messageEnd, M_KEY);
    if (m < 0 || buf[m] !== DICT) return 0;
    const pexId = findKey(buf, m, messageEnd, UT_PEX_KEY);
    ctx.state[otherAt + PEX_ID] = pexId < 0 ? 0 : Math.max(0, readInteger(buf, pexId, messageEnd, 255));
    if (learning) {
      const port = findKey(buf, dict, messageEnd, P_KEY);
      const listenPort = port < 0 ? -1 : readInteger(buf, port, messageEnd, 65535);
      if (listenPort > 0) ctx.peers.add(pkt.family, buf, pkt.srcOff, listenPort);
    }
    return CHECK_STRONG;
  }
  if (learning && dict < segmentEnd && buf[dict] === DICT) {
    // Until the other side's extension handshake told its ut_pex id, any extended message whose
    // `added` is a compact list is PEX (lt_tex's `added` is a list of URLs, not a string).
    const pexId = ctx.state[at + PEX_ID];
    if (pexId === 0 || pexId === extendedId) learnPex(ctx, dict, Math.min(messageEnd, segmentEnd));
  }
  return 0;
}

/** Caches the BEP 11 `added` and `added6` peers of the ut_pex dictionary at `dict`, as far as the segment holds them. */
function learnPex(ctx: InspectContext, dict: number, end: number): void {
  const buf = ctx.pkt.buf;
  const added = findKey(buf, dict, end, ADDED_KEY);
  if (added >= 0) learnCompact(ctx, added, end, 4, COMPACT_IPV4);
  const added6 = findKey(buf, dict, end, ADDED6_KEY);
  if (added6 >= 0) learnCompact(ctx, added6, end, 6, COMPACT_IPV6);
}

/** Caches the whole entries of a compact peer string at `pos` that lie before `end` (a message may continue in the next segment). */
function learnCompact(ctx: InspectContext, pos: number, end: number, family: number, entryLen: number): void {
  const buf = ctx.pkt.buf;
  let at = pos;
  let length = 0;
  while (at < end && at - pos < 8 && buf[at] >= 0x30 && buf[at] <= 0x39) length = length * 10 + buf[at++] - 0x30;
  if (at === pos || at >= end || buf[at] !== COLON || length % entryLen !== 0) return;
  const start = at + 1;
  const count = Math.floor(Math.min(length, end - start) / entryLen);
  ctx.peers.addCompact(family, buf, start, count, entryLen, 0);
}

/** The bencoded non-negative integer at `pos` if it is at most `max`, else -1. */
function readInteger(buf: Uint8Array, pos: number, end: number, max: number): number {
  if (pos >= end || buf[pos] !== INT) return -1;
  let at = pos + 1;
  let value = 0;
  while (at < end && buf[at] >= 0x30 && buf[at] <= 0x39 && value <= max) value = value * 10 + buf[at++] - 0x30;
  return at > pos + 1 && at < end && buf[at] === END && value <= max ? value : -1;
}
