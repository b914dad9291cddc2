import { skipValue } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_UDP, STRENGTH_EXACT, STRENGTH_RESPONSE, type Detector, type InspectContext } from './detector.js';

/** BEP 29 packet types (high nibble of the first byte; the low nibble is the version, 1). */
const ST_DATA = 0;
const ST_STATE = 2;
const ST_RESET = 3;
const ST_SYN = 4;
const HEADER_LEN = 20;
/** More extensions than any implementation chains (selective ack, extension bits, close reason). */
const MAX_EXTENSIONS = 4;
const EXT_SELECTIVE_ACK = 1;
const EXT_BITS = 2;
/** libtorrent's close-reason extension. */
const EXT_CLOSE_REASON = 3;
const BENCODE_DICT = 0x64; // 'd'

/**
 * Mid-flow consistency bounds. Sequence numbers of one direction move forward by one per data
 * packet (a capture may miss some, a network may reorder a few); an acknowledgement trails the
 * other direction's latest sequence number by at most a congestion window of packets, and leads
 * it only when the capture missed packets. Timestamps are compared in units of 65.536 ms (their
 * high 16 bits): forward by at most about a minute, backward by at most one unit (reordering).
 */
const SEQ_STEP_MAX = 128;
const SEQ_BACK_MAX = 16;
const ACK_LAG_MAX = 2048;
const ACK_LEAD_MAX = 16;
const TS_STEP_MAX = 1024;
const TS_BACK_MAX = 1;
/**
 * Consistent packets a flow seen without its SYN needs before it is called uTP: at least two each
 * way and six in all, because a receiver acknowledges a bulk transfer only once per burst.
 */
const MIN_RUN_EACH_WAY = 2;
const MIN_RUN_BOTH_WAYS = 6;
/** Consistent packets from one side when the other side is never seen (an asymmetric route). */
const MIN_RUN_ONE_WAY = 6;

/** State: flags, the SYN's connection id and sequence number, then one record per direction. */
const FLAGS = 0;
const SYN_SEEN = 1;
const SYN_FROM_RESPONDER = 2;
/**
 * SENT_OTHER << dir: that direction sent a datagram other than a SYN. The side that opens a uTP
 * connection sends nothing but its SYN (and its retransmissions) until it is answered, so an
 * "answer" to a side that sent anything else may be a reflection (a UDP echo sending back what
 * that side sent): a match then, but no proof.
 */
const SENT_OTHER = 4;
const SENT_OTHER_EITHER = SENT_OTHER | (SENT_OTHER << 1);
/** SENT << dir: that direction sent a datagram of any kind. */
const SENT = 16;
const SYN_ID = 1;
const SYN_SEQ = 3;
const DIR_BASE = 5;
/** Per direction: run length, connection id, last sequence number, high 16 bits of the last timestamp. */
const RUN = 0;
const ID = 1;
const SEQ = 3;
const TS = 5;
const DIR_BYTES = 7;

/**
 * Recognises uTP (BEP 29, the micro transport protocol over UDP) from several datagrams of a flow,
 * never from one: a 20-byte uTP header is too easy to mistake (a DNS query with the right id
 * parses as a SYN). Every datagram must be a well-formed version-1 header whose extension chain
 * ends inside it, or a bencoded dictionary (DHT shares the socket); anything else gives up.
 * It matches when the responder answers a SYN with ST_STATE (or ST_RESET) carrying the SYN's
 * connection id and acknowledging its sequence number; when the SYN's side goes on with the ids
 * its SYN announced (connection id + 1, sequence number + 1), which it does only once answered,
 * so that an asymmetric route showing one side is enough; or, for a flow caught mid-way, after a
 * few packets each way whose connection ids differ by one and whose sequence numbers,
 * acknowledgements, timestamps and windows progress plausibly, or more of them from one side when
 * the other is never seen.
 * Evidence: the answer to a SYN is a `response` from the answering end (it carries what only a
 * receiver of that SYN knows), unless the SYN's side sent anything but SYNs (see SENT_OTHER); a
 * mid-way run or one side's continuation is `exact` (never a ban over UDP: it answers nothing).
 * Budget: 32 payload packets, room for two acknowledgements of a bulk transfer caught mid-way.
 */
export const utpDetector: Detector = {
  name: 'utp',
  transports: OVER_UDP,
  budget: 32,
  stateBytes: DIR_BASE + 2 * DIR_BYTES,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const pkt = ctx.pkt;
    const buf = pkt.buf;
    const start = pkt.payloadOff;
    const end = start + pkt.payloadLen;
    const kind = packetType(buf, start, end);
    ctx.state[ctx.stateOff + FLAGS] |= (kind !== ST_SYN ? SENT_OTHER | SENT : SENT) << ctx.dir;
    if (kind < 0) return buf[start] === BENCODE_DICT && skipValue(buf, start, end) === end ? MORE : GIVE_UP;
    const state = ctx.state;
    const base = ctx.stateOff;
    const id = (buf[start + 2] << 8) | buf[start + 3];
    const seq = (buf[start + 16] << 8) | buf[start + 17];
    const ack = (buf[start + 18] << 8) | buf[start + 19];
    if (kind === ST_SYN) {
      state[base + FLAGS] = (state[base + FLAGS] & (SENT_OTHER_EITHER | SENT | (SENT << 1))) | SYN_SEEN | (ctx.dir === 1 ? SYN_FROM_RESPONDER : 0);
      writeU16(state, base + SYN_ID, id);
      writeU16(state, base + SYN_SEQ, seq);
      return MORE;
    }
    const flags = state[base + FLAGS];
    const synSeen = (flags & SYN_SEEN) !== 0;
    const synFromOtherSide = synSeen && ((flags & SYN_FROM_RESPONDER) !== 0) !== (ctx.dir === 1);
    if (synFromOtherSide && (kind === ST_STATE || kind === ST_RESET)) {
      if (id === readU16(state, base + SYN_ID) && ack === readU16(state, base + SYN_SEQ)) {
        const synSide = (flags & SYN_FROM_RESPONDER) !== 0 ? 1 : 0;
        if ((flags & (SENT_OTHER << synSide)) === 0) ctx.strength = STRENGTH_RESPONSE;
        return MATCH;
      }
    }
    // The SYN's own side answered: its next packets carry the SYN's id + 1 and the next sequence number.
    const synFromThisSide = synSeen && !synFromOtherSide;
    if (synFromThisSide && kind !== ST_RESET && id === ((readU16(state, base + SYN_ID) + 1) & 0xffff) && seq === ((readU16(state, base + SYN_SEQ) + 1) & 0xffff)) return MATCH;
    // A reset may carry either side's id: it proves nothing about the flow's id pair.
    if (kind === ST_RESET) return MORE;
    return extendRun(ctx, buf, start, id, seq, ack) ? MATCH : MORE;
  },
};

/**
 * Adds the packet to its direction's run of mutually consistent packets (restarting the run when
 * it does not fit) and tells whether the two runs are now long enough.
 */
function extendRun(ctx: InspectContext, buf: Uint8Array, start: number, id: number, seq: number, ack: number): boolean {
  const state = ctx.state;
  const mine = ctx.stateOff + DIR_BASE + ctx.dir * DIR_BYTES;
  const other = ctx.stateOff + DIR_BASE + (1 - ctx.dir) * DIR_BYTES;
  const ts = (buf[start + 4] << 8) | buf[start + 5];
  const run = state[mine + RUN];
  // No implementation advertises a receive window of a gigabyte or more.
  const plausibleWindow = buf[start + 12] < 0x40;
  let fits = plausibleWindow && run > 0 && id === readU16(state, mine + ID);
  fits = fits && withinSteps(readU16(state, mine + SEQ), seq, SEQ_STEP_MAX, SEQ_BACK_MAX);
  fits = fits && withinSteps(readU16(state, mine + TS), ts, TS_STEP_MAX, TS_BACK_MAX);
  if (fits && state[other + RUN] > 0) {
    const idGap = (id - readU16(state, other + ID)) & 0xffff;
    fits = (idGap === 1 || idGap === 0xffff) && withinSteps(ack, readU16(state, other + SEQ), ACK_LAG_MAX, ACK_LEAD_MAX);
  }
  state[mine + RUN] = fits ? Math.min(run + 1, MIN_RUN_BOTH_WAYS) : plausibleWindow ? 1 : 0;
  writeU16(state, mine + ID, id);
  writeU16(state, mine + SEQ, seq);
  writeU16(state, mine + TS, ts);
  const mineRun = state[mine + RUN];
  const otherRun = state[other + RUN];
  if ((state[ctx.stateOff + FLAGS] & (SENT << (1 - ctx.dir))) === 0) return mineRun >= MIN_RUN_ONE_WAY;
  return mineRun >= MIN_RUN_EACH_WAY && otherRun >= MIN_RUN_EACH_WAY && mineRun + otherRun >= MIN_RUN_BOTH_WAYS;
}

/** Whether 16-bit `to` lies at most `forward` steps after `from`, or at most `backward` before it. */
function withinSteps(from: number, to: number, forward: number, backward: number): boolean {
  const step = (to - from) & 0xffff;
  return step <= forward || step >= 0x10000 - backward;
}

/**
 * The uTP packet type of the datagram buf[start, end), or -1 when it is not a well-formed
 * version-1 packet: the extension chain must be made of known extensions of their proper lengths
 * and end inside the datagram; data packets carry data, every other type carries none.
 */
export function packetType(buf: Uint8Array, start: number, end: number): number {
  if (end - start < HEADER_LEN) return -1;
  const first = buf[start];
  const type = first >> 4;
  if ((first & 0x0f) !== 1 || type > ST_SYN) return -1;
  let extension = buf[start + 1];
  let at = start + HEADER_LEN;
  for (let count = 0; extension !== 0; count++) {
    if (count === MAX_EXTENSIONS || at + 2 > end) return -1;
    const length = buf[at + 1];
    if (!extensionLengthFits(extension, length)) return -1;
    extension = buf[at];
    at += 2 + length;
    if (at > end) return -1;
  }
  const hasData = at < end;
  return hasData === (type === ST_DATA) ? type : -1;
}

function extensionLengthFits(extension: number, length: number): boolean {
  if (extension === EXT_SELECTIVE_ACK) return length >= 4 && (length & 3) === 0;
  if (extension === EXT_BITS) return length === 8;
  return extension === EXT_CLOSE_REASON && length === 4;
}

function readU16(state: Uint8Array, at: number): number {
  return (state[at] << 8) | state[at + 1];
}

function writeU16(state: Uint8Array, at: number, value: number): void {
  state[at] = value >> 8;
  state[at + 1] = value & 0xff;
}
