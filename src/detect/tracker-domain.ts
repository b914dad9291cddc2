import { GIVE_UP, MATCH, MORE, OVER_TCP, OVER_UDP, type Detector, type InspectContext, STRENGTH_NAME } from './detector.js';
import { DEFAULT_DOMAIN_LIST, type DomainList } from './domains.js';
import { IPPROTO_TCP } from '../packet/packet.js';

const DNS_PORT = 53;
const DNS_HEADER_LEN = 12;
const OPCODE_MASK = 0x78;
const POINTER = 0xc0;
const MAX_LABEL = 63;
/** Compression pointers followed in one name; each must point backwards, so a loop cannot last. */
const MAX_POINTERS = 16;
/** Malformed name, from `readName`. */
const MALFORMED = -2;
/** DNS messages of a flow looked at: a stub that reuses its port sends a few questions over one flow. */
const DNS_BUDGET = 4;

/**
 * Reads the (possibly compressed) name at buf[at] of the DNS message starting at `msg`. Returns
 * the index of the listed domain it is or lies under, -1 for none, MALFORMED when it does not
 * parse.
 */
function readName(list: DomainList, buf: Uint8Array, msg: number, at: number, end: number): number {
  let state = list.nameStart;
  let listable = true;
  let labels = 0;
  let pos = at;
  let pointers = 0;
  for (;;) {
    if (pos >= end) return MALFORMED;
    const len = buf[pos];
    if (len === 0) break;
    if ((len & POINTER) === POINTER) {
      if (pos + 1 >= end) return MALFORMED;
      const target = msg + (((len & 0x3f) << 8) | buf[pos + 1]);
      if (target >= pos || ++pointers > MAX_POINTERS) return MALFORMED;
      pos = target;
      continue;
    }
    if (len > MAX_LABEL || pos + 1 + len > end) return MALFORMED;
    if (listable) {
      if (labels > 0) state = list.labelBoundary(state);
      for (let i = pos + 1; i <= pos + len && state >= 0; i++) state = list.nameByte(state, buf[i]);
      listable = state >= 0;
    }
    labels++;
    pos += 1 + len;
  }
  return listable && labels > 0 ? list.nameEnd(state) : -1;
}

/** The DNS message in the current packet: its offset, or -1 (also for a TCP segment that starts none). */
function dnsMessage(ctx: InspectContext): number {
  const pkt = ctx.pkt;
  if (pkt.l4 !== IPPROTO_TCP) return pkt.payloadOff;
  // Over TCP each message has a 2-byte length; only a direction's first segment surely starts one.
  return ctx.dirIndex === 0 ? pkt.payloadOff + 2 : -1;
}

/**
 * Index of the listed domain the first question of the standard query or response at `msg` asks
 * for, or -1.
 */
function questionMatch(list: DomainList, buf: Uint8Array, msg: number, end: number): number {
  if (msg < 0 || end - msg < DNS_HEADER_LEN) return -1;
  if ((buf[msg + 2] & OPCODE_MASK) !== 0 || (buf[msg + 4] | buf[msg + 5]) === 0) return -1;
  return readName(list, buf, msg, msg + DNS_HEADER_LEN, end);
}

/** Whether the flow runs between a client port and port 53: 53 to 53 is resolver to resolver, one flow for every name. */
function isClientDnsFlow(sport: number, dport: number): boolean {
  const client = sport === DNS_PORT ? dport : sport;
  return (sport === DNS_PORT || dport === DNS_PORT) && client >= 1024;
}

/**
 * A DNS question (RFC 1035; query or response) for a listed name, over UDP or TCP port 53 from a
 * client port. The flow is flagged, never banned: its other end is a resolver, and a name is no proof.
 * Budget: DNS_BUDGET payload packets.
 */
export function createTrackerDomainDetector(list: DomainList): Detector {
  return {
    name: 'tracker-domain',
    transports: OVER_TCP | OVER_UDP,
    budget: DNS_BUDGET,
    stateBytes: 0,
    strength: STRENGTH_NAME,
    producerIsPeer: false,
    inspect(ctx: InspectContext): number {
      const pkt = ctx.pkt;
      if (!isClientDnsFlow(pkt.sport, pkt.dport)) return GIVE_UP;
      return questionMatch(list, pkt.buf, dnsMessage(ctx), pkt.payloadOff + pkt.payloadLen) >= 0 ? MATCH : MORE;
    },
  };
}

/** Over DEFAULT_DOMAINS: the registry's. */
export const trackerDomainDetector = createTrackerDomainDetector(DEFAULT_DOMAIN_LIST);
