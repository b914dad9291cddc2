import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext } from './detector.js';

/** BEP 3 peer wire handshake: pstrlen 19 then "BitTorrent protocol" as the first bytes of either direction. */
const PROTOCOL_PREFIX = Uint8Array.from([19, ...Array.from('BitTorrent protocol', (c) => c.charCodeAt(0))]);
const PREFIX_LEN = PROTOCOL_PREFIX.length;
const FAILED = 0xff;
/** Per direction: bytes of the prefix matched so far (or FAILED), then the TCP sequence number of the stream's first byte. */
const DIR_STATE_BYTES = 5;

/**
 * Recognises the BEP 3 handshake prefix at the start of either direction of a TCP stream, also when
 * it arrives split over several segments, retransmitted or with overlaps (positions come from the
 * TCP sequence numbers, so a segment after a gap waits instead of failing).
 * Budget: 2 x 20 payload packets, enough for a prefix sent one byte per segment in both directions.
 */
export const handshakeDetector: Detector = {
  name: 'handshake',
  transports: OVER_TCP,
  budget: 2 * PREFIX_LEN,
  stateBytes: 2 * DIR_STATE_BYTES,
  bannable: true,
  provesPeers: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const at = ctx.stateOff + ctx.dir * DIR_STATE_BYTES;
    const pkt = ctx.pkt;
    let matched = state[at];
    if (matched === FAILED) return otherDirectionFailed(ctx) ? GIVE_UP : MORE;
    // Sequence numbers are read and written in place: a 32-bit value passed to or returned from a
    // helper would be boxed on the heap.
    if (ctx.dirIndex === 0) {
      const seq = pkt.tcpSeq;
      state[at + 1] = seq >>> 24;
      state[at + 2] = (seq >>> 16) & 0xff;
      state[at + 3] = (seq >>> 8) & 0xff;
      state[at + 4] = seq & 0xff;
    }
    const streamStart = (state[at + 1] << 24) | (state[at + 2] << 16) | (state[at + 3] << 8) | state[at + 4];
    const position = (pkt.tcpSeq - streamStart) >>> 0;
    // A segment starting past what we have seen leaves a gap: wait for the retransmission.
    if (position > matched) return MORE;
    const buf = pkt.buf;
    const start = pkt.payloadOff;
    const end = start + Math.min(pkt.payloadLen, PREFIX_LEN - position);
    for (let i = start, p = position; i < end; i++, p++) {
      if (buf[i] !== PROTOCOL_PREFIX[p]) {
        state[at] = FAILED;
        return otherDirectionFailed(ctx) ? GIVE_UP : MORE;
      }
    }
    matched = Math.max(matched, position + (end - start));
    state[at] = matched;
    return matched === PREFIX_LEN ? MATCH : MORE;
  },
};

function otherDirectionFailed(ctx: InspectContext): boolean {
  return ctx.state[ctx.stateOff + (1 - ctx.dir) * DIR_STATE_BYTES] === FAILED;
}
