import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';
import { WIRE_BYTES, walkWire, wireInChain, wireProven } from './peer-wire.js';

/** One byte after the two walkers: bit `dir` set when that direction's first payload packet was all text. */
const TEXT_OPENINGS = 2 * WIRE_BYTES;
const BOTH_TEXT = 0b11;
/**
 * The shortest segment searched: a bulk direction's full-sized ones (an MSS from 1024 bytes up:
 * Ethernet's 1460, 1448 with timestamps, IPv6's 1440 and 1428, PPPoE's and tunnels' less), and the
 * longer ones GRO and TSO coalesce (as NFQUEUE hands them over with GSO, and a capture at the
 * gateway shows them). A download's requests and haves, and the walker's resyncs, need no search.
 */
const FULL_SEGMENT = 1024;
/**
 * Then one byte per direction: the bytes of the full-sized segments it carried in a flow met
 * mid-way, in 256-byte units, saturating. Each segment's bytes are rounded down, not up, so that
 * segments of any size (2856 bytes: two IPv6 MSS coalesced) are searched for the whole limit.
 */
const SEARCHED = TEXT_OPENINGS + 1;
const UNIT_SHIFT = 8;
const SEARCH_UNIT = 1 << UNIT_SHIFT;
const UNITS_MAX = 255;
/**
 * A direction is searched from the full-sized segment that takes it past 5 KiB while the other
 * carried none (a bulk direction is a run of them, or one coalesced segment of that much: random
 * data both ways mostly turns before its fifth MSS), until it has carried 20 KiB more: a piece
 * stream has a header in every 16,397 bytes, and what a flow met mid-way that is no download
 * costs (a TLS transfer open before the daemon, random data both ways) stays bounded.
 */
const SEARCH_FROM = (5 * 1024) / SEARCH_UNIT;
const SEARCH_UNTIL = SEARCH_FROM + (20 * 1024) / SEARCH_UNIT;
/**
 * Payload packets the detector reads; past them, in a flow met mid-way while a direction is in an
 * unbroken chain, up to CHAIN_BUDGET: a bulk direction shows its third piece up to 65 KB after the
 * search began (the first header up to 16 KiB in, then three pieces of 16,397 bytes).
 */
const BUDGET = 32;
const CHAIN_BUDGET = 64;

/**
 * The BEP 3 peer wire message stream (with the BEP 6, 10 and 52 messages) seen without its
 * handshake: a capture or an inspection that starts mid-connection, or a flow the table evicted
 * and met again. Each direction is walked message by message across segments (see peer-wire.ts),
 * resynchronising at a segment start after anything malformed, or, in a full-sized segment of a
 * download met mid-way (see searchesPieces), at a 16 KiB piece's header inside it; the flow is
 * BitTorrent once its directions together show three well-formed messages in unbroken chains, one
 * of them strong (a fixed-length message with plausible fields, a 16 KiB piece at a block
 * boundary, an extension handshake with an `m` dict). A heuristic: late in the chain. The peer
 * wire is binary, so a flow whose first packet is printable text both ways (HTTP, SMTP, SIP...) is
 * given up at once.
 *
 * Evidence: `exact`, from the direction whose message completed the proof; the policy bans on it
 * only over a TCP handshake it saw, which a connection caught mid-way never has.
 * Budget: 32 payload packets, enough for a bulk transfer's request direction to show itself; up
 * to 64 in a flow met mid-way while a chain is under way (see CHAIN_BUDGET).
 */
export const peerMessagesDetector: Detector = {
  name: 'peer-messages',
  transports: OVER_TCP,
  budget: CHAIN_BUDGET,
  stateBytes: 2 * WIRE_BYTES + 3,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const own = ctx.stateOff + ctx.dir * WIRE_BYTES;
    const other = ctx.stateOff + (1 - ctx.dir) * WIRE_BYTES;
    if (ctx.flowIndex >= BUDGET && (ctx.synSeen || (!wireInChain(state, own) && !wireInChain(state, other)))) return GIVE_UP;
    const search = searchesPieces(ctx);
    if (ctx.dirIndex === 0 && isText(ctx)) {
      const openings = (state[ctx.stateOff + TEXT_OPENINGS] |= 1 << ctx.dir);
      if (openings === BOTH_TEXT) return GIVE_UP;
      return MORE;
    }
    walkWire(ctx, own, other, false, search);
    return wireProven(state, own, other) ? MATCH : MORE;
  },
  learn(ctx: InspectContext): void {
    // CHAIN_BUDGET is for proving a flow met mid-way; a matched flow is learned from within BUDGET.
    if (ctx.flowIndex >= BUDGET) return;
    walkWire(ctx, ctx.stateOff + ctx.dir * WIRE_BYTES, ctx.stateOff + (1 - ctx.dir) * WIRE_BYTES, true, false);
  },
};

/**
 * Whether the walker searches the current segment for a 16 KiB piece's header: a full-sized
 * segment of a download met mid-way, whose message boundaries fall anywhere in it, in a bulk
 * direction while the other carried no full-sized segment (requests, haves, acknowledgements),
 * between SEARCH_FROM and SEARCH_UNTIL. The search reads one byte in five of the segment, more than
 * the walk costs: a flow seen from its SYN, short segments, a direction's first 5 KiB and an
 * exchange in bulk both ways are never searched.
 */
function searchesPieces(ctx: InspectContext): boolean {
  if (ctx.synSeen || ctx.pkt.payloadLen < FULL_SEGMENT) return false;
  const state = ctx.state;
  const own = ctx.stateOff + SEARCHED + ctx.dir;
  const carried = state[own];
  const after = Math.min(UNITS_MAX, carried + (ctx.pkt.payloadLen >>> UNIT_SHIFT));
  state[own] = after;
  // A segment that ends past the first 5 KiB is searched: one GSO segment of 64 KiB is a run alone.
  return after > SEARCH_FROM && carried < SEARCH_UNTIL && state[ctx.stateOff + SEARCHED + 1 - ctx.dir] === 0;
}

/** Whether the payload is printable ASCII with tabs and line ends only (a message length never is: its first byte is 0). */
function isText(ctx: InspectContext): boolean {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const end = pkt.payloadOff + pkt.payloadLen;
  for (let i = pkt.payloadOff; i < end; i++) {
    const byte = buf[i];
    if ((byte < 0x20 || byte > 0x7e) && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) return false;
  }
  return true;
}
