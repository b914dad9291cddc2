import { GIVE_UP, MATCH, MORE, OVER_TCP, OVER_UDP, type Detector, type InspectContext } from './detector.js';
import { DEFAULT_DOMAIN_LIST, type DomainList, type TrackerAddresses } from './domains.js';
import { IPPROTO_TCP } from '../packet/packet.js';

const DNS_PORT = 53;
const DNS_HEADER_LEN = 12;
const QR_RESPONSE = 0x80;
const OPCODE_MASK = 0x78;
const POINTER = 0xc0;
const MAX_LABEL = 63;
/** Compression pointers followed in one name; each must point backwards, so a loop cannot last. */
const MAX_POINTERS = 16;
const TYPE_A = 1;
const TYPE_AAAA = 28;
const CLASS_IN = 1;
/** Malformed name, from `readName`. */
const MALFORMED = -2;
/** DNS messages of a flow looked at: a stub that reuses its port sends a few questions over one flow. */
const DNS_BUDGET = 4;

/** Offset just past the name `readName` last read (scratch shared by the DNS functions below). */
let afterName = 0;

/**
 * Reads the (possibly compressed) name at buf[at] of the DNS message starting at `msg`. Returns
 * the index of the listed domain it is or lies under, -1 for none, MALFORMED when it does not
 * parse; sets `afterName`.
 */
function readName(list: DomainList, buf: Uint8Array, msg: number, at: number, end: number): number {
  let state = list.nameStart;
  let listable = true;
  let labels = 0;
  let pos = at;
  let pointers = 0;
  afterName = -1;
  for (;;) {
    if (pos >= end) return MALFORMED;
    const len = buf[pos];
    if (len === 0) {
      if (afterName < 0) afterName = pos + 1;
      break;
    }
    if ((len & POINTER) === POINTER) {
      if (pos + 1 >= end) return MALFORMED;
      if (afterName < 0) afterName = pos + 2;
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
 * for, or -1. Leaves `afterName` just past that question's name.
 */
function questionMatch(list: DomainList, buf: Uint8Array, msg: number, end: number): number {
  if (msg < 0 || end - msg < DNS_HEADER_LEN) return -1;
  if ((buf[msg + 2] & OPCODE_MASK) !== 0 || (buf[msg + 4] | buf[msg + 5]) === 0) return -1;
  return readName(list, buf, msg, msg + DNS_HEADER_LEN, end);
}

/**
 * Adds to `addresses` the A and AAAA records of the response at `msg` whose owner name is listed.
 * `afterName` is just past the first question's name.
 */
function collectAnswers(list: DomainList, addresses: TrackerAddresses, buf: Uint8Array, msg: number, end: number): void {
  let at = afterName + 4;
  const questions = (buf[msg + 4] << 8) | buf[msg + 5];
  for (let q = 1; q < questions; q++) {
    if (readName(list, buf, msg, at, end) === MALFORMED) return;
    at = afterName + 4;
  }
  const answers = (buf[msg + 6] << 8) | buf[msg + 7];
  for (let a = 0; a < answers; a++) {
    const owner = readName(list, buf, msg, at, end);
    if (owner === MALFORMED || afterName + 10 > end) return;
    at = afterName;
    const type = (buf[at] << 8) | buf[at + 1];
    const rrClass = (buf[at + 2] << 8) | buf[at + 3];
    const length = (buf[at + 8] << 8) | buf[at + 9];
    const data = at + 10;
    if (data + length > end) return;
    if (owner >= 0 && rrClass === CLASS_IN) {
      if (type === TYPE_A && length === 4) addresses.add(4, buf, data);
      else if (type === TYPE_AAAA && length === 16) addresses.add(6, buf, data);
    }
    at = data + length;
  }
}

/** Whether the flow runs between a client port and port 53: 53 to 53 is resolver to resolver, one flow for every name. */
function isClientDnsFlow(sport: number, dport: number): boolean {
  const client = sport === DNS_PORT ? dport : sport;
  return (sport === DNS_PORT || dport === DNS_PORT) && client >= 1024;
}

/**
 * A DNS question (RFC 1035; query or response) for a listed name, over UDP or TCP port 53 from a
 * client port. The flow is flagged but not bannable: its other end is a resolver, never a peer.
 * With `addresses`, the A and AAAA answers for listed names in a response for a listed name go
 * there (learn() keeps doing so for the responses that follow the query the flow was matched on).
 * Budget: DNS_BUDGET payload packets.
 */
export function createTrackerDomainDetector(list: DomainList, addresses: TrackerAddresses | null = null): Detector {
  /** Index of the listed domain the current packet's DNS message asks for (or -1); a response's answers go to `addresses`. */
  const readMessage = (ctx: InspectContext): number => {
    const pkt = ctx.pkt;
    const buf = pkt.buf;
    const msg = dnsMessage(ctx);
    const end = pkt.payloadOff + pkt.payloadLen;
    const listed = questionMatch(list, buf, msg, end);
    if (listed >= 0 && addresses !== null && (buf[msg + 2] & QR_RESPONSE) !== 0) collectAnswers(list, addresses, buf, msg, end);
    return listed;
  };
  const detector: Detector = {
    name: 'tracker-domain',
    transports: OVER_TCP | OVER_UDP,
    budget: DNS_BUDGET,
    stateBytes: 0,
    bannable: false,
    provesPeers: false,
    inspect(ctx: InspectContext): number {
      if (!isClientDnsFlow(ctx.pkt.sport, ctx.pkt.dport)) return GIVE_UP;
      return readMessage(ctx) >= 0 ? MATCH : MORE;
    },
  };
  // Only a detector with somewhere to put addresses reads the responses after the match.
  if (addresses !== null) detector.learn = (ctx: InspectContext) => void readMessage(ctx);
  return detector;
}

/** Over DEFAULT_DOMAINS, without collecting addresses: the registry's. */
export const trackerDomainDetector = createTrackerDomainDetector(DEFAULT_DOMAIN_LIST);
