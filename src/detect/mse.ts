import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_HEURISTIC } from './detector.js';
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
 * number is >= P with probability ~2^-64. What shows is the shape: each side may only speak after
 * the other (A cannot hash S before it has Yb; B cannot answer message 3 before it has read it,
 * and A waits for crypto_select before sending past IA), message sizes are bounded by the spec, and
 * RC4 keeps lengths, so the 68-byte BEP 3 handshake that follows shows through as an exact length.
 */

const KEY_BURST_MIN = 96;
const KEY_BURST_MAX = 96 + 512;
/** Message 3 without PadC and IA: two hashes, VC, crypto_provide, len(PadC), len(IA). */
const INITIATOR_SYNC_MIN = 20 + 20 + 8 + 4 + 2 + 2;
/** With the largest PadC; a client that sends its handshake after message 4 sends no IA. */
const INITIATOR_SYNC_NO_IA_MAX = INITIATOR_SYNC_MIN + 512;
/** With the largest PadC and the handshake as IA (clients refuse a longer IA). */
const INITIATOR_SYNC_MAX = INITIATOR_SYNC_NO_IA_MAX + HANDSHAKE_LENGTH;
/** Message 3 with an empty PadC and the handshake as IA (Transmission, rtorrent). */
const INITIATOR_SYNC_WITH_HANDSHAKE = INITIATOR_SYNC_MIN + HANDSHAKE_LENGTH;
/** Message 4 before the payload: VC, crypto_select, len(PadD). */
const RESPONDER_SYNC_MIN = 8 + 4 + 2;
const RESPONDER_SYNC_MAX = RESPONDER_SYNC_MIN + 512;
/** Message 4 with an empty PadD and the responder's handshake written with it (Transmission). */
const RESPONDER_SYNC_WITH_HANDSHAKE = RESPONDER_SYNC_MIN + HANDSHAKE_LENGTH;

/**
 * Lengths of a segment that holds one bare peer wire message, which RC4 leaves visible: keep-alive
 * (4), a one-byte message (5: choke, unchoke, (not) interested, have all, have none), port (7), have
 * or allowed fast (9), a piece header written before its block (13), a request (17) or two (34).
 */
const BARE_MESSAGE = new Uint8Array(35);
for (const length of [4, 5, 7, 9, 13, 17, 34]) BARE_MESSAGE[length] = 1;
/** Evidence a handshake sent inside message 3 needs: exact lengths and bare messages, one point each. */
const POINTS_NEEDED = 3;
/** Segments after message 4 in which the bare messages must show: the first exchanges after the handshakes. */
const AFTER_SEGMENTS_MAX = 8;

/**
 * Phases: the burst (all new stream bytes one side sends before the other side sends any) being
 * read. The key and sync phases alternate initiator (even) and responder (odd); AFTER is
 * everything that follows message 4.
 */
const KEY_A = 0;
const KEY_B = 1;
const SYNC_A = 2;
const SYNC_B = 3;
const AFTER = 4;

/** Hypotheses still open in AFTER. */
const HANDSHAKE_AFTER_SYNC = 1;
/** A's burst after message 4 was exactly the handshake: B's next segment decides. */
const HANDSHAKE_SEEN = 2;
const HANDSHAKE_IN_SYNC = 4;
/** B answered A's handshake with at least its own: A speaking again (extension handshake, bitfield) decides. */
const HANDSHAKE_ANSWERED = 8;

/**
 * State: phase; per direction the stream end (TCP sequence number) seen; bytes of the current
 * burst (saturating); message 3's bytes; in AFTER, bursts and segments seen since message 4, the
 * evidence points and the open hypotheses.
 */
const PHASE = 0;
const END = 1;
const BURST = 9;
const SYNC_A_BYTES = 11;
const AFTER_BURSTS = 13;
const AFTER_SEGMENTS = 14;
const POINTS = 15;
const HYPOTHESES = 16;
const STATE_BYTES = 17;
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
 * (96-608), A's message 3 (56-636), B's message 4 (14 or more), then evidence of the BEP 3 peer
 * wire behind them:
 * - "\x13BitTorrent protocol" in plaintext within message 4's burst or opening one of the two
 *   bursts after it (crypto_select plaintext);
 * - A sends its handshake after message 4 (libtorrent, aria2): A's next burst is exactly 68 bytes
 *   after a message 3 with no room for IA and a message 4 with no room for payload, B's answer
 *   opens with at least its own 68, and A speaks again (on random segments this path alone would
 *   name about 3 flows per 10 M; waiting for A's next burst cuts that);
 * - A sends its handshake inside message 3 (Transmission, rtorrent): three points among message 3
 *   of exactly 124 bytes (empty PadC), B's first segment of message 4 of exactly 82 (empty PadD and
 *   B's handshake) and segments of one bare peer wire message among the 8 that follow message 4.
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
    if (ctx.flowIndex === 0 && dir !== 0) return GIVE_UP;

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

    let phase = state[at + PHASE];
    let burst = (state[at + BURST] << 8) | state[at + BURST + 1];
    // In AFTER either side may speak next; before it, the sides take turns.
    const turn = phase === AFTER ? (state[at + AFTER_BURSTS] & 1) : phase & 1;
    const opensBurst = dir !== turn;
    if (opensBurst) {
      // The other side speaks: the burst just read is complete.
      const verdict = closeBurst(ctx, phase, burst);
      if (verdict !== MORE) return verdict;
      if (phase < AFTER) phase++;
      state[at + PHASE] = phase;
      burst = 0;
    }
    burst = Math.min(burst + fresh, SATURATED);
    state[at + BURST] = burst >>> 8;
    state[at + BURST + 1] = burst & 0xff;

    const buf = pkt.buf;
    const off = pkt.payloadOff;
    switch (phase) {
      case KEY_A:
      case KEY_B:
        // Ya and Yb are each written at once, so their 96 bytes open the direction's first segment.
        if (ctx.dirIndex === 0 && (len < KEY_BURST_MIN || !looksRandom(buf, off, len))) return GIVE_UP;
        return burst > KEY_BURST_MAX ? GIVE_UP : MORE;
      case SYNC_A:
        return burst > INITIATOR_SYNC_MAX ? GIVE_UP : MORE;
      case SYNC_B:
        if (containsPrefix(buf, off, len)) return MATCH;
        if (opensBurst && len === RESPONDER_SYNC_WITH_HANDSHAKE) state[at + POINTS]++;
        return MORE;
      default:
        return inspectAfter(ctx, opensBurst, burst);
    }
  },
};

/** A segment after message 4: the evidence that the peer wire follows. */
function inspectAfter(ctx: InspectContext, opensBurst: boolean, burst: number): number {
  const state = ctx.state;
  const at = ctx.stateOff;
  const pkt = ctx.pkt;
  const len = pkt.payloadLen;
  const afterBursts = state[at + AFTER_BURSTS];
  let hypotheses = state[at + HYPOTHESES];
  if (opensBurst && afterBursts <= 1 && startsWithPrefix(pkt.buf, pkt.payloadOff, len)) return MATCH;
  if ((hypotheses & HANDSHAKE_ANSWERED) !== 0) {
    // The only burst that can open now is A's: the peer wire goes on, as it does after a handshake.
    if (opensBurst) return MATCH;
  } else if ((hypotheses & HANDSHAKE_SEEN) !== 0) {
    // B's answer to A's handshake opens with B's own.
    hypotheses &= ~(HANDSHAKE_AFTER_SYNC | HANDSHAKE_SEEN);
    if (len >= HANDSHAKE_LENGTH && responderMayBePeer(ctx)) hypotheses |= HANDSHAKE_ANSWERED;
  } else if (afterBursts === 0 && burst > HANDSHAKE_LENGTH) {
    hypotheses &= ~HANDSHAKE_AFTER_SYNC;
  }
  if ((hypotheses & HANDSHAKE_IN_SYNC) !== 0) {
    const points = state[at + POINTS] + (len < BARE_MESSAGE.length ? BARE_MESSAGE[len] : 0);
    state[at + POINTS] = points;
    if (points >= POINTS_NEEDED && responderMayBePeer(ctx)) return MATCH;
    const segments = state[at + AFTER_SEGMENTS] + 1;
    state[at + AFTER_SEGMENTS] = segments;
    if (segments >= AFTER_SEGMENTS_MAX) hypotheses &= ~HANDSHAKE_IN_SYNC;
  }
  state[at + HYPOTHESES] = hypotheses;
  return hypotheses === 0 ? GIVE_UP : MORE;
}

/** Checks the burst that just ended; MORE to go on, else the verdict. */
function closeBurst(ctx: InspectContext, phase: number, burst: number): number {
  const state = ctx.state;
  const at = ctx.stateOff;
  switch (phase) {
    case KEY_A:
    case KEY_B:
      return burst >= KEY_BURST_MIN ? MORE : GIVE_UP;
    case SYNC_A:
      state[at + SYNC_A_BYTES] = burst >>> 8;
      state[at + SYNC_A_BYTES + 1] = burst & 0xff;
      return burst >= INITIATOR_SYNC_MIN ? MORE : GIVE_UP;
    case SYNC_B: {
      if (burst < RESPONDER_SYNC_MIN) return GIVE_UP;
      const syncA = (state[at + SYNC_A_BYTES] << 8) | state[at + SYNC_A_BYTES + 1];
      let hypotheses = 0;
      if (syncA <= INITIATOR_SYNC_NO_IA_MAX && burst <= RESPONDER_SYNC_MAX) hypotheses |= HANDSHAKE_AFTER_SYNC;
      if (syncA >= INITIATOR_SYNC_WITH_HANDSHAKE && burst >= RESPONDER_SYNC_WITH_HANDSHAKE) {
        hypotheses |= HANDSHAKE_IN_SYNC;
        if (syncA === INITIATOR_SYNC_WITH_HANDSHAKE) state[at + POINTS]++;
      } else {
        state[at + POINTS] = 0;
      }
      state[at + HYPOTHESES] = hypotheses;
      return hypotheses === 0 ? GIVE_UP : MORE;
    }
    default: {
      const afterBursts = state[at + AFTER_BURSTS];
      if (afterBursts === 0 && (state[at + HYPOTHESES] & HANDSHAKE_AFTER_SYNC) !== 0) {
        state[at + HYPOTHESES] ^= burst === HANDSHAKE_LENGTH ? HANDSHAKE_SEEN : HANDSHAKE_AFTER_SYNC;
      }
      // Wrapping at 256 keeps the parity that says whose turn it is.
      state[at + AFTER_BURSTS] = afterBursts + 1;
      return MORE;
    }
  }
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
