import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';
import { HANDSHAKE_LENGTH, setWirePosition, startWire, walkWire, WIRE_BYTES, wireDistance, wireStarted } from './peer-wire.js';

/** BEP 3 peer wire handshake: pstrlen 19 then "BitTorrent protocol" as the first bytes of either direction. */
const PROTOCOL_PREFIX = Uint8Array.from([19, ...Array.from('BitTorrent protocol', (c) => c.charCodeAt(0))]);
const PREFIX_LEN = PROTOCOL_PREFIX.length;
const FAILED = 0xff;
/**
 * Per direction: bytes of the prefix matched so far (or FAILED), then a peer wire walker whose
 * position is the stream's first byte until the match, and after the handshake from then on.
 */
const DIR_STATE_BYTES = 1 + WIRE_BYTES;
const WIRE_AT = 1;

/**
 * Recognises the BEP 3 handshake prefix at the start of either direction of a TCP stream, also when
 * it arrives split over several segments, retransmitted or with overlaps (positions come from the
 * TCP sequence numbers, so a segment after a gap waits instead of failing). After the match it
 * walks the messages that follow the 68-byte handshakes for the peers they name (BEP 11 PEX, the
 * BEP 10 listen port, the BEP 5 DHT port).
 * Budget: 64 payload packets: enough for a prefix sent one byte per segment in both directions,
 * and for the PEX messages of the first seconds of a matched flow, which stays cheap after that.
 */
export const handshakeDetector: Detector = {
  name: 'handshake',
  transports: OVER_TCP,
  budget: 64,
  stateBytes: 2 * DIR_STATE_BYTES,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const at = ctx.stateOff + ctx.dir * DIR_STATE_BYTES;
    const pkt = ctx.pkt;
    let matched = state[at];
    if (matched === FAILED) return otherDirectionFailed(ctx) ? GIVE_UP : MORE;
    if (ctx.dirIndex === 0) setWirePosition(ctx, at + WIRE_AT);
    const position = wireDistance(ctx, at + WIRE_AT);
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
    if (matched < PREFIX_LEN) return MORE;
    // The engine shows learn() only the packets after this one, which may already carry the
    // extension handshake that assigns the ut_pex id.
    startWire(state, at + WIRE_AT, HANDSHAKE_LENGTH);
    walkWire(ctx, at + WIRE_AT, otherWireAt(ctx), true, false);
    return MATCH;
  },
  learn(ctx: InspectContext): void {
    const state = ctx.state;
    const wire = ctx.stateOff + ctx.dir * DIR_STATE_BYTES + WIRE_AT;
    if (!wireStarted(state, wire)) {
      // This direction opens with its own handshake: inspect recorded where it began, unless it begins here.
      if (ctx.dirIndex === 0) setWirePosition(ctx, wire);
      startWire(state, wire, HANDSHAKE_LENGTH);
    }
    walkWire(ctx, wire, otherWireAt(ctx), true, false);
  },
};

function otherDirectionFailed(ctx: InspectContext): boolean {
  return ctx.state[ctx.stateOff + (1 - ctx.dir) * DIR_STATE_BYTES] === FAILED;
}

function otherWireAt(ctx: InspectContext): number {
  return ctx.stateOff + (1 - ctx.dir) * DIR_STATE_BYTES + WIRE_AT;
}
