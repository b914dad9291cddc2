import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_HEURISTIC } from './detector.js';
import type { PacketInfo } from '../packet/packet.js';
import { HANDSHAKE_LENGTH } from './peer-wire.js';

/*
 * BitTorrent Message Stream Encryption (MSE, a.k.a. PE; the Vuze/libtorrent spec):
 *
 *   1 A->B: Ya, PadA                   Ya: 96-byte DH public key, PadA 0-512 random bytes
 *   2 B->A: Yb, PadB
 *   3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
 *           ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
 *   4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
 *
 * Every byte is indistinguishable from random. The DH keys give nothing either: P is a safe prime
 * and 2 a quadratic non-residue mod P, so G^X is uniform over the whole group, and a random 96-byte
 * number is >= P with probability ~2^-64. What shows is the shape, and RC4 keeps lengths.
 *
 * Only the first two flights are ordered by the protocol: B answers Ya, and A cannot hash S before
 * it has Yb, so A's first bytes (Ya, PadA) all come before B's, and B's first bytes (Yb, PadB) all
 * come before B has read message 3. After that each side writes when it likes: an initiator may
 * send message 3 and its handshake before message 4 arrives, a responder message 4 and its
 * handshake before A's handshake does, and on a path with a round-trip time they cross. So past
 * the keys each direction's stream is read on its own, by its writes (TCP segments of new bytes),
 * against the spec's structure:
 * - A: message 3 is the first write (56..636 bytes without IA); the BEP 3 handshake is either IA
 *   (message 3 of exactly 56 + 68 = 124 with an empty PadC: Transmission, rtorrent) or A's second
 *   write, of exactly 68 (libtorrent, aria2).
 * - B: message 4 is the first write (14 + PadD), alone or with B's handshake: exactly 14 or 82 with
 *   an empty PadD (Transmission); or B's handshake is a write of exactly 68 of its own (aria2); or it
 *   opens a larger write (libtorrent), seen only as 68 bytes or more sent after A's handshake.
 * - crypto_select may pick plaintext: "\x13BitTorrent protocol" then shows as is.
 */

const KEY_BURST_MIN = 96;
const KEY_BURST_MAX = 96 + 512;
/** Message 3 without PadC and IA: two hashes, VC, crypto_provide, len(PadC), len(IA). */
const SYNC_MIN = 20 + 20 + 8 + 4 + 2 + 2;
/** With the largest PadC and no IA. */
const SYNC_NO_IA_MAX = SYNC_MIN + 512;
/** With an empty PadC and the handshake as IA. */
const SYNC_WITH_HANDSHAKE = SYNC_MIN + HANDSHAKE_LENGTH;
/** Message 4 before the payload: VC, crypto_select, len(PadD); and with B's handshake written with it. */
const SELECT_MIN = 8 + 4 + 2;
const SELECT_WITH_HANDSHAKE = SELECT_MIN + HANDSHAKE_LENGTH;
/** What B reads of message 3 before it can write message 4: both hashes, VC, crypto_provide. */
const SYNC_READ_BEFORE_SELECT = 20 + 20 + 8 + 4;

/**
 * Phases: A's key burst (Ya, PadA), B's key burst (Yb, PadB), then both streams on their own; or,
 * on an asymmetric route, one side's stream alone: A's past a key burst B never answered, or B's
 * when A is never seen.
 */
const KEY_A = 0;
const KEY_B = 1;
const STREAMS = 2;
const ONLY_A = 3;
const ONLY_B = 4;

/** Evidence flags, set as the streams show it. */
/** A: message 3 of exactly 124 bytes, the handshake as IA. */
const A_HANDSHAKE_IN_SYNC = 1;
/** A: a message 3 without IA, then a write of exactly 68. */
const A_HANDSHAKE_AFTER_SYNC = 2;
const A_HANDSHAKE = A_HANDSHAKE_IN_SYNC | A_HANDSHAKE_AFTER_SYNC;
/** B: message 4 of exactly 14 or 82 bytes, or a write of exactly 68 right after it. */
const B_EXACT = 4;
/** A's 68-byte handshake came after B's message 4 (B had written, at most a padded message 4 and a handshake). */
const A_AFTER_SELECT = 8;
/**
 * B's answer opened as a handshake would: after A's 68-byte handshake that followed message 4, a
 * write of at least 68; after a 124-byte message 3, a message 4 of at most 14 + 512 + 68.
 */
const B_OPENED = 16;
/** B sent at least its handshake's worth after A's handshake (68 bytes after A's, 82 after a 124-byte message 3). */
const B_ANSWERED = 32;
/** A wrote again after B's answer (with B's exact lengths, or an answer that opened as a handshake): B writing again names the flow. */
const A_WENT_ON = 64;
/**
 * B alone: A's 68-byte handshake, written on its own after message 3 (libtorrent, aria2), shown by
 * B's acknowledgements: a write of B's of at least a handshake acknowledges exactly 68 bytes more
 * of A's stream than B's first write after its key (message 4, written once message 3 was read).
 */
const A_HANDSHAKE_ACKED = 128;

/**
 * State: phase; per direction the stream end (TCP sequence number) seen; bytes of the key burst
 * being read (saturating); then A's and B's writes since the keys, the length of A's first (message
 * 3), B's bytes since A's handshake (saturating), and the evidence flags.
 */
const PHASE = 0;
const END = 1;
const BURST = 9;
const A_WRITES = 11;
const B_WRITES = 12;
const A_BYTES = 13;
const B_BYTES = 15;
const B_SINCE_HANDSHAKE = 17;
const FLAGS = 19;
/** A's write that held (or ended) its handshake: the one after it is A going on. */
const A_HANDSHAKE_WRITE = 20;
/** Whether A alone is still possible. */
const A_ALONE_FAILED = 21;
/**
 * The acknowledgement number of the direction's first segment (its key burst's); where the route
 * shows B alone, from B's first write after its key on, that write's (A's message 3 read).
 */
const KEY_ACK = 22;
const STATE_BYTES = 26;
/** Writes a message may be cut into before what follows it: message 3 or 4 in up to three, then the handshake. */
const SPLIT_WRITES = 3;
const SATURATED = 0xffff;
/** A jump in sequence numbers larger than this is no handshake (or not the stream's start). */
const MAX_AHEAD = 1 << 16;

/** The BEP 3 handshake prefix, found in plaintext after a handshake that selected plaintext. */
const PROTOCOL_PREFIX = Uint8Array.from([19, ...Array.from('BitTorrent protocol', (c) => c.charCodeAt(0))]);

/** A 256-bit set of byte values, reused by every call of looksRandom. */
const seenBytes = new Uint32Array(8);
/**
 * Distinct byte values among the 96 bytes of a DH key below which it is no key: 96 random bytes
 * show 80 on average, fewer than 66 with probability 3.4e-6; text and sparse binary headers show
 * fewer.
 */
const MIN_DISTINCT = 66;

/**
 * Recognises the MSE handshake of encrypted BitTorrent over TCP by its shape (see above), from the
 * start of a connection: A's Ya+PadA (96-608 bytes) with nothing structured in it, B's Yb+PadB
 * (96-608), then, whatever the order in which the two sides' later writes arrive:
 * - "\x13BitTorrent protocol" in plaintext in B's first writes after the keys or opening one of
 *   A's after message 3 (crypto_select plaintext);
 * - A's handshake (inside a 124-byte message 3, or as a 68-byte write after message 3), B's answer
 *   of at least a handshake's length, A writing again after it (extension handshake, bitfield),
 *   and either B's exact message 4 or 68-byte handshake write, or, without them, an answer that
 *   opened as a handshake does and B writing again after A (the peer wire going on);
 * - one side alone, when the route shows one direction (no packet of the other end seen at all,
 *   not even its SYN or ACKs): A's handshake by its exact length after its key and message 3, or
 *   B's exact message 4 or 68-byte handshake after its key, or B's answer to A's 68-byte handshake
 *   (B's acknowledgements step by exactly 68 past message 3; libtorrent's B writes message 4 with
 *   a random PadD and its handshake with more, of no telling length). The unseen side's turns show
 *   in the acknowledgement numbers: A writes message 3 once it has Yb, and B nothing more before
 *   it, so message 3 acknowledges 96..608 bytes past A's key; B writes message 4 once it has read
 *   message 3's hashes, VC and crypto_provide, so it acknowledges at least 52 bytes past B's key.
 *   Nothing after the handshake is required: clients close a second connection to the same peer
 *   right after it, and rtorrent coalesces the peer wire into writes of no telling length.
 * Random writes of random lengths take the shape of both sides now and then (about 1 flow in a
 * million in `npm run bench`: the exact lengths are few), so it names a flow only in context: one
 * of its ends must have spoken BitTorrent protocol bytes lately (ctx.torrenting), as a host running
 * a client does (DHT, trackers, uTP, plain handshakes), or shown this shape with another end
 * before (a client that only ever speaks MSE has many peers; see TorrentingHosts.sighted); one
 * shaped flow alone names nothing. One side's shape, far more common in random writes (about one
 * one-way flow in 1,000 in `npm run bench`: a key-sized first write, then one exact total), names
 * a flow only in a torrenting host's context, only where the other end is unseen, and is never a
 * sighting.
 * The length evidence is heuristic: it names a flow only when its responder is an endpoint the peer
 * cache would accept (a high port that is no well-known service, an address not allowlisted), so
 * proxies and VPNs on service ports, random-looking too, are never named by it.
 * Budget: 32 payload packets: the handshake cut into several segments per message, retransmitted,
 * and the exchanges after it.
 */
export const mseDetector: Detector = {
  name: 'mse',
  transports: OVER_TCP,
  budget: 32,
  stateBytes: STATE_BYTES,
  strength: STRENGTH_HEURISTIC,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const at = ctx.stateOff;
    const pkt = ctx.pkt;
    const dir = ctx.dir;
    const len = pkt.payloadLen;
    // The responder speaking first: the initiator's side is not on this route.
    if (ctx.flowIndex === 0 && dir !== 0) state[at + PHASE] = ONLY_B;

    // New stream bytes, from sequence numbers: a retransmission adds none; a gap (a segment the
    // capture missed, or one arriving later) counts, as its bytes are in the stream all the same.
    // Sequence numbers stay in locals: a 32-bit value crossing a call would be boxed.
    const endAt = at + END + 4 * dir;
    const segmentEnd = (pkt.tcpSeq + len) >>> 0;
    let fresh = len;
    if (ctx.dirIndex > 0) {
      const known = ((state[endAt] << 24) | (state[endAt + 1] << 16) | (state[endAt + 2] << 8) | state[endAt + 3]) >>> 0;
      const ahead = (segmentEnd - known) | 0;
      if (ahead <= 0) return MORE;
      if (ahead > MAX_AHEAD) return GIVE_UP;
      fresh = ahead;
    }
    state[endAt] = segmentEnd >>> 24;
    state[endAt + 1] = (segmentEnd >>> 16) & 0xff;
    state[endAt + 2] = (segmentEnd >>> 8) & 0xff;
    state[endAt + 3] = segmentEnd & 0xff;
    if (ctx.dirIndex === 0) storeKeyAck(state, at, pkt);

    let phase = state[at + PHASE];
    if (phase === STREAMS) return dir === 0 ? initiatorWrite(ctx, fresh, false) : responderWrite(ctx, fresh, false);
    // Ya and Yb are each written at once, so their 96 bytes open the direction's first segment.
    if (ctx.dirIndex === 0 && (len < KEY_BURST_MIN || !looksRandom(pkt.buf, pkt.payloadOff, len))) return GIVE_UP;
    if (phase === ONLY_A) return dir === 0 ? initiatorWrite(ctx, fresh, true) : GIVE_UP;
    if (phase === ONLY_B) {
      if (dir === 0) return GIVE_UP;
      if (ctx.dirIndex === 0) {
        writeU16(state, at + BURST, len);
        return len <= KEY_BURST_MAX ? MORE : GIVE_UP;
      }
      // Message 4 answers message 3, which A writes after B's key: B's segments that acknowledge
      // less of A's stream than B reads before it answers are still B's key burst.
      if (state[at + B_WRITES] === 0 && ackedSinceKey(state, at, pkt) < SYNC_READ_BEFORE_SELECT) {
        const keyBytes = readU16(state, at + BURST) + fresh;
        writeU16(state, at + BURST, Math.min(keyBytes, SATURATED));
        return keyBytes <= KEY_BURST_MAX ? MORE : GIVE_UP;
      }
      return responderWrite(ctx, fresh, true);
    }
    let burst = readU16(state, at + BURST);
    if (dir !== phase) {
      // The other side speaks: the key burst just read is complete, and the next one opens.
      if (burst < KEY_BURST_MIN) return GIVE_UP;
      burst = 0;
      if (phase === KEY_B) {
        state[at + PHASE] = STREAMS;
        return initiatorWrite(ctx, fresh, false);
      }
      // What A wrote after its first segment was the rest of its key burst, not a stream of its own.
      state.fill(0, at + A_WRITES, at + STATE_BYTES);
      phase = KEY_B;
      state[at + PHASE] = phase;
    }
    burst = Math.min(burst + fresh, SATURATED);
    writeU16(state, at + BURST, burst);
    // Until B speaks, A's writes after its first may also be message 3 and the peer wire of a
    // connection whose other direction takes another route. A writes message 3 once it has Yb,
    // and B writes nothing more before it: message 3 acknowledges one key burst of B's, and A's
    // segments that acknowledge less are still A's key burst.
    let alone = MORE;
    if (phase === KEY_A && ctx.dirIndex > 0 && state[at + A_ALONE_FAILED] === 0) {
      const acked = state[at + A_WRITES] === 0 ? ackedSinceKey(state, at, pkt) : -1;
      if (acked < 0 || (acked >= KEY_BURST_MIN && acked <= KEY_BURST_MAX)) alone = initiatorWrite(ctx, fresh, true);
      else if (acked > KEY_BURST_MAX) alone = GIVE_UP;
      if (alone === MATCH) return MATCH;
      if (alone === GIVE_UP) state[at + A_ALONE_FAILED] = 1;
    }
    if (burst <= KEY_BURST_MAX) return MORE;
    // Past a key burst's length, only A's later writes (message 3 and on, B unseen) may be MSE: A
    // has nothing else to write before Yb, so a first segment this long is no key, nor are A's
    // bytes before message 3.
    if (phase !== KEY_A || ctx.dirIndex === 0 || state[at + A_ALONE_FAILED] !== 0 || state[at + A_WRITES] === 0) return GIVE_UP;
    state[at + PHASE] = ONLY_A;
    return MORE;
  },
};

/**
 * A write of new bytes from A after the keys: message 3 (in up to three writes), its handshake,
 * the peer wire; `alone` when B's side is not seen (no answer: A's handshake is all there is).
 */
function initiatorWrite(ctx: InspectContext, fresh: number, alone: boolean): number {
  const state = ctx.state;
  const at = ctx.stateOff;
  const pkt = ctx.pkt;
  const len = pkt.payloadLen;
  // Only a whole write of new bytes has the length the sender gave it.
  const exact = fresh === len;
  const writes = Math.min(state[at + A_WRITES] + 1, 0xff);
  state[at + A_WRITES] = writes;
  const before = readU16(state, at + A_BYTES);
  const total = Math.min(before + fresh, SATURATED);
  writeU16(state, at + A_BYTES, total);
  let flags = state[at + FLAGS];
  // A 68-byte write within message 3's writes is the handshake after it: a message 3 cut where a
  // piece happened to total 124, or to be 68 itself, was only message 3, and this reading replaces it.
  if (writes > 1 && writes <= SPLIT_WRITES + 1 && exact && len === HANDSHAKE_LENGTH && before >= SYNC_MIN && before <= SYNC_NO_IA_MAX && (flags & A_WENT_ON) === 0) {
    flags = (flags | A_HANDSHAKE_AFTER_SYNC) & ~(A_HANDSHAKE_IN_SYNC | B_ANSWERED | B_OPENED | A_AFTER_SELECT);
    // B's answer is what it sends from now on; before it, B wrote message 4 and at most its handshake.
    const sinceKeys = readU16(state, at + B_BYTES);
    if (sinceKeys > 0 && sinceKeys <= SELECT_WITH_HANDSHAKE + 512) flags |= A_AFTER_SELECT;
    writeU16(state, at + B_SINCE_HANDSHAKE, 0);
    state[at + FLAGS] = flags;
    state[at + A_HANDSHAKE_WRITE] = writes;
    return alone || bothExact(flags) ? named(ctx, !alone) : MORE;
  }
  if ((flags & A_HANDSHAKE) === 0) {
    if (writes > 1 && startsWithPrefix(pkt.buf, pkt.payloadOff, len)) return MATCH;
    if (writes <= SPLIT_WRITES && total === SYNC_WITH_HANDSHAKE) {
      flags |= A_HANDSHAKE_IN_SYNC;
    } else {
      // Message 3 without IA is at most 636 bytes, and the handshake follows within a write or two.
      return total > SYNC_NO_IA_MAX || writes > SPLIT_WRITES + 1 ? GIVE_UP : MORE;
    }
    state[at + FLAGS] = flags;
    state[at + A_HANDSHAKE_WRITE] = writes;
    return alone || bothExact(flags) ? named(ctx, !alone) : MORE;
  }
  if (writes <= state[at + A_HANDSHAKE_WRITE] + 1 && startsWithPrefix(pkt.buf, pkt.payloadOff, len)) return MATCH;
  // Its host may have been marked since the handshake.
  if (alone) return named(ctx, false);
  // Without B's exact lengths, A's going on must be its first write after the handshake: a peer
  // that put its handshake in message 3, or wrote it next, waits for B's before it writes more.
  const firstAfterHandshake = writes === state[at + A_HANDSHAKE_WRITE] + 1;
  if ((flags & (B_ANSWERED | A_WENT_ON)) === B_ANSWERED && (flags & B_OPENED) !== 0 && firstAfterHandshake) {
    flags |= A_WENT_ON;
    state[at + FLAGS] = flags;
    return MORE;
  }
  // A shaped flow named nothing when its hosts had no context; asked again at each later write, it
  // is named as soon as one has (its second end, seen meanwhile, marked it).
  return (flags & A_WENT_ON) !== 0 || bothExact(flags) ? named(ctx) : MORE;
}

/**
 * A write of new bytes from B after the keys: message 4 (in up to three writes), its handshake,
 * the peer wire; `alone` when A's side is not seen (B's exact message 4 or handshake is all there is).
 */
function responderWrite(ctx: InspectContext, fresh: number, alone: boolean): number {
  const state = ctx.state;
  const at = ctx.stateOff;
  const pkt = ctx.pkt;
  const len = pkt.payloadLen;
  const exact = fresh === len;
  const writes = Math.min(state[at + B_WRITES] + 1, 0xff);
  state[at + B_WRITES] = writes;
  if (writes <= SPLIT_WRITES + 1 && containsPrefix(pkt.buf, pkt.payloadOff, len)) return MATCH;
  const total = Math.min(readU16(state, at + B_BYTES) + fresh, SATURATED);
  writeU16(state, at + B_BYTES, total);
  if (writes === SPLIT_WRITES && total < SELECT_MIN) return GIVE_UP;
  let flags = state[at + FLAGS];
  // Message 4 with an empty PadD, alone or with B's handshake, or B's handshake written on its own after it.
  if (writes <= SPLIT_WRITES && (total === SELECT_MIN || total === SELECT_WITH_HANDSHAKE)) flags |= B_EXACT;
  if (writes > 1 && writes <= SPLIT_WRITES + 1 && exact && len === HANDSHAKE_LENGTH && total - len >= SELECT_MIN) flags |= B_EXACT;
  if (alone) {
    if (writes === 1) storeKeyAck(state, at, pkt);
    else if (writes <= SPLIT_WRITES + 1 && fresh >= HANDSHAKE_LENGTH && ackedSinceKey(state, at, pkt) === HANDSHAKE_LENGTH) flags |= A_HANDSHAKE_ACKED;
    state[at + FLAGS] = flags;
    if ((flags & (B_EXACT | A_HANDSHAKE_ACKED)) !== 0) return named(ctx, false);
    // Message 4 is at most 14 + 512 bytes (and B's handshake) within its first writes.
    return writes <= SPLIT_WRITES + 1 && total <= SELECT_WITH_HANDSHAKE + 512 ? MORE : GIVE_UP;
  }
  // What B sent since A's handshake; a 124-byte message 3 holds A's, so all of B's counts, message 4 too.
  const before = readU16(state, at + B_SINCE_HANDSHAKE);
  if ((flags & A_AFTER_SELECT) !== 0 && before === 0 && fresh >= HANDSHAKE_LENGTH) flags |= B_OPENED;
  if ((flags & A_HANDSHAKE_IN_SYNC) !== 0 && writes === 1 && fresh <= SELECT_WITH_HANDSHAKE + 512) flags |= B_OPENED;
  const since = Math.min(before + fresh, SATURATED);
  writeU16(state, at + B_SINCE_HANDSHAKE, since);
  const answered = (flags & A_HANDSHAKE_AFTER_SYNC) !== 0 ? since >= HANDSHAKE_LENGTH : (flags & A_HANDSHAKE_IN_SYNC) !== 0 && since >= SELECT_WITH_HANDSHAKE;
  if (answered) flags |= B_ANSWERED;
  state[at + FLAGS] = flags;
  return (flags & A_WENT_ON) !== 0 || bothExact(flags) ? named(ctx) : MORE;
}

/** Both handshakes showed by exact lengths: A's (in message 3, or after it) and B's (message 4, or its own write). */
function bothExact(flags: number): boolean {
  return (flags & A_HANDSHAKE) !== 0 && (flags & B_EXACT) !== 0;
}

/**
 * The length evidence suffices: MATCH when the responder may be a peer and either end spoke
 * BitTorrent protocol bytes lately, or has now shown this shape with a second different end (one
 * shape alone, on random-looking traffic, is no evidence; see TorrentingHosts). Only a shape both
 * sides wrote (`sighting`) counts towards a host's ends: one side's writes may be anyone's.
 */
function named(ctx: InspectContext, sighting = true): number {
  const pkt = ctx.pkt;
  if (!responderMayBePeer(ctx)) return MORE;
  const torrenting = ctx.torrenting;
  // One side's shape stands for the whole exchange only where the route shows no packet of the
  // other end: where it does, the other end's silence is its own, no asymmetric route.
  if (!sighting && ctx.otherSeen) return MORE;
  if (torrenting.has(pkt.family, pkt.buf, pkt.srcOff) || torrenting.has(pkt.family, pkt.buf, pkt.dstOff)) return MATCH;
  if (!sighting) return MORE;
  // Both ends are sighted: either may be the client with many peers.
  const bySource = torrenting.sighted(pkt.family, pkt.buf, pkt.srcOff, pkt.dstOff);
  const byDestination = torrenting.sighted(pkt.family, pkt.buf, pkt.dstOff, pkt.srcOff);
  return bySource || byDestination ? MATCH : MORE;
}

function readU16(state: Uint8Array, at: number): number {
  return (state[at] << 8) | state[at + 1];
}

function writeU16(state: Uint8Array, at: number, value: number): void {
  state[at] = value >>> 8;
  state[at + 1] = value & 0xff;
}

/** Keeps the packet's acknowledgement number as its direction's key burst's (read from pkt: a 32-bit argument would be boxed). */
function storeKeyAck(state: Uint8Array, at: number, pkt: PacketInfo): void {
  const ack = pkt.tcpAck;
  state[at + KEY_ACK] = ack >>> 24;
  state[at + KEY_ACK + 1] = (ack >>> 16) & 0xff;
  state[at + KEY_ACK + 2] = (ack >>> 8) & 0xff;
  state[at + KEY_ACK + 3] = ack & 0xff;
}

/** How far the packet's acknowledgement number is past its direction's key burst's: the other stream's bytes received since. */
function ackedSinceKey(state: Uint8Array, at: number, pkt: PacketInfo): number {
  const keyAck = ((state[at + KEY_ACK] << 24) | (state[at + KEY_ACK + 1] << 16) | (state[at + KEY_ACK + 2] << 8) | state[at + KEY_ACK + 3]) >>> 0;
  return (pkt.tcpAck - keyAck) | 0;
}

/** No text, no sparse header, no TLS record, no SSH banner, no 2- or 4-byte length framing the segment. */
function looksRandom(buf: Uint8Array, off: number, len: number): boolean {
  const b0 = buf[off];
  const b1 = buf[off + 1];
  if (b0 >= 0x14 && b0 <= 0x17 && b1 === 0x03 && buf[off + 2] <= 0x04) return false;
  if (b0 === 0x53 && b1 === 0x53 && buf[off + 2] === 0x48 && buf[off + 3] === 0x2d) return false;
  if (((b0 << 8) | b1) === len - 2) return false;
  if (b0 === 0 && b1 === 0 && ((buf[off + 2] << 8) | buf[off + 3]) === len - 4) return false;
  seenBytes.fill(0);
  let distinct = 0;
  for (let i = off; i < off + KEY_BURST_MIN; i++) {
    const word = buf[i] >>> 5;
    const bit = 1 << (buf[i] & 31);
    if ((seenBytes[word] & bit) === 0) {
      seenBytes[word] |= bit;
      distinct++;
    }
  }
  return distinct >= MIN_DISTINCT;
}

function startsWithPrefix(buf: Uint8Array, off: number, len: number): boolean {
  return len >= PROTOCOL_PREFIX.length && prefixAt(buf, off);
}

/** Whether the handshake prefix lies within buf[off, off + len). */
function containsPrefix(buf: Uint8Array, off: number, len: number): boolean {
  const last = off + len - PROTOCOL_PREFIX.length;
  for (let i = off; i <= last; i++) if (buf[i] === 19 && prefixAt(buf, i)) return true;
  return false;
}

function prefixAt(buf: Uint8Array, at: number): boolean {
  for (let i = 1; i < PROTOCOL_PREFIX.length; i++) if (buf[at + i] !== PROTOCOL_PREFIX[i]) return false;
  return true;
}

/** Whether the responder is an endpoint the peer tables would take: a listening peer, not a service. */
function responderMayBePeer(ctx: InspectContext): boolean {
  const pkt = ctx.pkt;
  const fromInitiator = ctx.dir === 0;
  return ctx.peers.accepts(pkt.family, pkt.buf, fromInitiator ? pkt.dstOff : pkt.srcOff, fromInitiator ? pkt.dport : pkt.sport);
}
