import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_EXACT } from './detector.js';
import { WIRE_BYTES, walkWire, wireProven } from './peer-wire.js';

/**
 * One byte after the two walkers: bit `dir` set when that direction's first payload packet was all
 * text, bit 2 + `dir` once that direction carried a segment longer than an MSS in a flow met mid-way.
 */
const OPENINGS = 2 * WIRE_BYTES;
const BOTH_TEXT = 0b11;
const COALESCED = 0b100;
/**
 * The largest segment over Ethernet (1500-byte MTU, IPv4, no options). A longer one is several
 * coalesced by GRO or TSO (as NFQUEUE hands them over with GSO, and a capture at the gateway shows
 * them), or a jumbo frame's. Only those are searched, a choice of cost: the 32 MSS-sized segments
 * of the budget never carry the three 16 KiB pieces (49,191 bytes) a bulk direction alone needs,
 * and a download's requests the other way prove it at segment starts with no search.
 */
const ETHERNET_MSS = 1460;
/**
 * Then one byte per direction: how much of its segments the search read, in 256-byte units,
 * saturating. Each segment's bytes are rounded down, not up, so that segments of any size (2856
 * bytes: two IPv6 MSS coalesced) are searched for the whole limit, not for as many units.
 */
const SEARCHED = OPENINGS + 1;
const SEARCH_UNIT = 256;
const UNITS_MAX = 255;
/**
 * Searching stops once a direction's searched segments held 20 KiB: a piece stream has a header in
 * every 16,397 bytes, and the cost of a flow met mid-way that is no download (a TLS transfer open
 * before the daemon) stays bounded.
 */
const SEARCH_LIMIT = (20 * 1024) / SEARCH_UNIT;

/**
 * The BEP 3 peer wire message stream (with the BEP 6, 10 and 52 messages) seen without its
 * handshake: a capture or an inspection that starts mid-connection, or a flow the table evicted
 * and met again. Each direction is walked message by message across segments (see peer-wire.ts),
 * resynchronising at a segment start after anything malformed, or, in a coalesced segment of a
 * download met mid-way (see searchesPieces), at a 16 KiB piece's header inside it; the flow is
 * BitTorrent once its directions together show three well-formed messages in unbroken chains, one
 * of them strong (a fixed-length message with plausible fields, a 16 KiB piece at a block
 * boundary, an extension handshake with an `m` dict). A heuristic: late in the chain. The peer wire is binary, so a flow
 * whose first packet is printable text both ways (HTTP, SMTP, SIP...) is given up at once.
 *
 * Evidence: `exact`, from the direction whose message completed the proof; the policy bans on it
 * only over a TCP handshake it saw, which a connection caught mid-way never has.
 * Budget: 32 payload packets, enough for a bulk transfer's request direction to show itself.
 */
export const peerMessagesDetector: Detector = {
  name: 'peer-messages',
  transports: OVER_TCP,
  budget: 32,
  stateBytes: 2 * WIRE_BYTES + 3,
  strength: STRENGTH_EXACT,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const state = ctx.state;
    const own = ctx.stateOff + ctx.dir * WIRE_BYTES;
    const other = ctx.stateOff + (1 - ctx.dir) * WIRE_BYTES;
    const search = searchesPieces(ctx);
    if (ctx.dirIndex === 0 && isText(ctx)) {
      const openings = (state[ctx.stateOff + OPENINGS] |= 1 << ctx.dir);
      if ((openings & BOTH_TEXT) === BOTH_TEXT) return GIVE_UP;
      return MORE;
    }
    walkWire(ctx, own, other, false, search);
    return wireProven(state, own, other) ? MATCH : MORE;
  },
  learn(ctx: InspectContext): void {
    walkWire(ctx, ctx.stateOff + ctx.dir * WIRE_BYTES, ctx.stateOff + (1 - ctx.dir) * WIRE_BYTES, true, false);
  },
};

/**
 * Whether the walker searches the current segment for a 16 KiB piece's header: a coalesced
 * segment of a download met mid-way, whose message boundaries fall anywhere in it, while the other
 * direction carried none (requests, haves, acknowledgements), until SEARCH_LIMIT. The search reads
 * one byte in five of the segment, more than the walk costs: a flow seen from its SYN, MSS-sized
 * segments and an exchange in bulk both ways are never searched.
 */
function searchesPieces(ctx: InspectContext): boolean {
  if (ctx.synSeen || ctx.pkt.payloadLen <= ETHERNET_MSS) return false;
  const state = ctx.state;
  const openings = (state[ctx.stateOff + OPENINGS] |= COALESCED << ctx.dir);
  if ((openings & (COALESCED << (1 - ctx.dir))) !== 0) return false;
  const at = ctx.stateOff + SEARCHED + ctx.dir;
  if (state[at] >= SEARCH_LIMIT) return false;
  state[at] = Math.min(UNITS_MAX, state[at] + Math.floor(ctx.pkt.payloadLen / SEARCH_UNIT));
  return true;
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
