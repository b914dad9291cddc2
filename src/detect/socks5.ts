import { DetectorChain } from './chain.js';
import { GIVE_UP, InspectContext, MATCH, MORE, OVER_TCP, OVER_UDP, type Detector, STRENGTH_EXACT } from './detector.js';
import { IPPROTO_TCP, PacketInfo } from '../packet/packet.js';

/*
 * SOCKS5 (RFC 1928, with RFC 1929 username/password authentication):
 *
 *   TCP  client: 05 NMETHODS METHODS...            server: 05 METHOD
 *        client: 01 ULEN UNAME PLEN PASSWD         server: 01 STATUS     (only after METHOD 02)
 *        client: 05 CMD 00 ATYP DST.ADDR DST.PORT  server: 05 REP 00 ATYP BND.ADDR BND.PORT
 *        then the tunnelled stream, both ways.
 *   UDP  every datagram to and from the relay: 00 00 FRAG ATYP DST.ADDR DST.PORT DATA
 *
 * ATYP 1: 4-byte IPv4 address; 3: a length byte then a domain name; 4: 16-byte IPv6 address.
 * The framing alone proves nothing (a proxy carries anything); what it carries is shown to the
 * exact BitTorrent detectors, each with its own per-flow state, as if the tunnelled stream or
 * datagrams were a flow of their own.
 */

const VERSION = 5;
const AUTH_VERSION = 1;
const NO_ACCEPTABLE_METHOD = 0xff;
const CMD_CONNECT = 1;
const ATYP_IPV4 = 1;
const ATYP_DOMAIN = 3;
const ATYP_IPV6 = 4;

/**
 * Own state: the negotiation phase per direction, inner payload packets per direction, the inner
 * chain's give-up mask (32 bits), the inner detector that matched (+1); the inner chain's state follows.
 */
const CLIENT_PHASE = 0;
const SERVER_PHASE = 1;
const INNER_PACKETS = 2;
const INNER_DONE = 4;
const INNER_MATCHED = 8;
const OWN_STATE_BYTES = 9;
/** Set in CLIENT_PHASE when the client is the flow's responder. */
const CLIENT_IS_RESPONDER = 0x80;
const PHASE_MASK = 0x7f;

/** Client phases. */
const GREETING = 0;
const REQUEST = 1;
const REQUEST_AFTER_AUTH = 2;
/** Server phases. */
const METHOD = 0;
const REPLY = 1;
const REPLY_AFTER_AUTH = 2;
/** Either direction: past the negotiation, or failed. */
const TUNNEL = 3;
const FAILED = 4;

/** Negotiation packets before the tunnel: greeting, authentication and request, each answered. */
const NEGOTIATION_PACKETS = 6;

/** The view of the tunnelled payload the inner detectors see (one of each, reused for every packet). */
const inner = new InspectContext();
const innerPacket = new PacketInfo();
inner.pkt = innerPacket;

/**
 * SOCKS5 tunnels that carry BitTorrent: a CONNECT whose tunnelled stream one of `detectors` that
 * reads TCP recognises, UDP ASSOCIATE datagrams whose data one that reads UDP recognises, run by
 * the same chain runner as the engine's. Not a peer (producerIsPeer false): the other end is the
 * proxy, which may serve many users for other traffic; the flow itself is stopped. Peers the
 * inner detectors learn (DHT nodes, tracker answers) still reach the receiving host's peer lists.
 * Budget: the negotiation, then the largest inner budget.
 */
export function createSocks5Detector(name: string, detectors: readonly Detector[]): Detector {
  const streamChain = new DetectorChain(detectors.filter((detector) => (detector.transports & OVER_TCP) !== 0));
  const datagramChain = new DetectorChain(detectors.filter((detector) => (detector.transports & OVER_UDP) !== 0));
  return {
    name,
    transports: OVER_TCP | OVER_UDP,
    budget: NEGOTIATION_PACKETS + Math.max(streamChain.budget, datagramChain.budget),
    stateBytes: OWN_STATE_BYTES + Math.max(streamChain.stateBytes, datagramChain.stateBytes),
    strength: STRENGTH_EXACT,
    producerIsPeer: false,
    inspect(ctx: InspectContext): number {
      return ctx.pkt.l4 === IPPROTO_TCP ? inspectStream(ctx, streamChain) : inspectDatagram(ctx, datagramChain);
    },
    learn(ctx: InspectContext): void {
      const tcp = ctx.pkt.l4 === IPPROTO_TCP;
      const matched = ctx.state[ctx.stateOff + INNER_MATCHED] - 1;
      const dataAt = tcp ? ctx.pkt.payloadOff : datagramData(ctx);
      if (matched < 0 || dataAt < 0) return;
      const base = ctx.stateOff + OWN_STATE_BYTES;
      enterInner(ctx, dataAt);
      (tcp ? streamChain : datagramChain).learn(inner, base, matched);
    },
  };
}

/** A CONNECT stream: the negotiation in each direction, then the tunnelled bytes to the inner detectors. */
function inspectStream(ctx: InspectContext, chain: DetectorChain): number {
  const state = ctx.state;
  const base = ctx.stateOff;
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const start = pkt.payloadOff;
  const end = start + pkt.payloadLen;
  if (ctx.flowIndex === 0) {
    // The client speaks first: its greeting is the flow's first payload, unless what was seen
    // began later (a capture started mid-way, an inspection that met the flow late).
    if (buf[start] !== VERSION) return GIVE_UP;
    const opening = openingMessage(buf, start, end);
    const clientDir = opening === OPENS_WITH_METHOD || opening === OPENS_WITH_REPLY ? 1 - ctx.dir : ctx.dir;
    const clientPhase = opening === OPENS_WITH_GREETING ? GREETING : opening === OPENS_WITH_REPLY ? TUNNEL : REQUEST;
    state[base + CLIENT_PHASE] = clientPhase | (clientDir === 1 ? CLIENT_IS_RESPONDER : 0);
    state[base + SERVER_PHASE] = opening === OPENS_WITH_GREETING || opening === OPENS_WITH_METHOD ? METHOD : REPLY;
  }
  const fromClient = (state[base + CLIENT_PHASE] & CLIENT_IS_RESPONDER) === 0 ? ctx.dir === 0 : ctx.dir === 1;
  const phaseAt = base + (fromClient ? CLIENT_PHASE : SERVER_PHASE);
  let phase = state[phaseAt] & PHASE_MASK;
  let at = start;
  while (phase !== TUNNEL && phase !== FAILED && at < end) {
    const length = fromClient ? clientMessage(buf, at, end, phase) : serverMessage(buf, at, end, phase);
    if (length <= 0) phase = FAILED;
    else {
      phase = nextPhase(buf[at], phase, fromClient);
      // A CONNECT is the tunnel's SYN: towards a known peer it is a client's connection attempt.
      if (fromClient && phase === TUNNEL && connectsToKnownPeer(ctx, chain, at)) return MATCH;
      at += length;
    }
  }
  state[phaseAt] = (state[phaseAt] & CLIENT_IS_RESPONDER) | phase;
  if (phase === FAILED) return GIVE_UP;
  if (phase !== TUNNEL || at >= end) return MORE;
  return runInner(ctx, chain, at);
}

/**
 * Whether the CONNECT request at buf[at] names an endpoint the chain knows from its address alone
 * (proven, or listed to the client), as the engine asks of a SYN; sets ctx.strength. A target
 * given by name, or of the other address family than the client's, is left to what follows.
 */
function connectsToKnownPeer(ctx: InspectContext, chain: DetectorChain, at: number): boolean {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const family = buf[at + 3] === ATYP_IPV4 ? 4 : buf[at + 3] === ATYP_IPV6 ? 6 : 0;
  if (family !== pkt.family) return false;
  const portAt = at + 4 + (family === 4 ? 4 : 16);
  copyPacket(pkt);
  innerPacket.dstOff = at + 4;
  innerPacket.dport = (buf[portAt] << 8) | buf[portAt + 1];
  innerPacket.payloadLen = 0;
  inner.peers = ctx.peers;
  inner.proven = ctx.proven;
  inner.torrenting = ctx.torrenting;
  inner.dir = 0;
  if (chain.matchEndpoints(inner) < 0) return false;
  ctx.strength = inner.strength;
  return true;
}

/** What a flow's first payload is: the client's greeting, or a later message when what was seen began after it. */
const OPENS_WITH_GREETING = 0;
const OPENS_WITH_METHOD = 1;
const OPENS_WITH_REQUEST = 2;
const OPENS_WITH_REPLY = 3;

/**
 * Which negotiation message the flow's first payload buf[start, end) is, whole: a greeting is at
 * least 3 bytes (a method or more), so 2 bytes are the server's method selection; a CONNECT
 * request or a success reply fills the payload exactly. Anything else is read as a greeting.
 */
function openingMessage(buf: Uint8Array, start: number, end: number): number {
  const length = end - start;
  if (length < 2) return OPENS_WITH_GREETING;
  if (length === 2) return OPENS_WITH_METHOD;
  if (buf[start + 1] === CMD_CONNECT && length > 3 && clientMessage(buf, start, end, REQUEST) === length) return OPENS_WITH_REQUEST;
  if (buf[start + 1] === 0 && serverMessage(buf, start, end, REPLY) === length) return OPENS_WITH_REPLY;
  return OPENS_WITH_GREETING;
}

/** The phase after a whole message that starts with `first`. */
function nextPhase(first: number, phase: number, fromClient: boolean): number {
  if (phase === GREETING) return REQUEST; // also METHOD, the same value, on the server side
  if (first === AUTH_VERSION) return fromClient ? REQUEST_AFTER_AUTH : REPLY_AFTER_AUTH;
  return TUNNEL;
}

/** Length of the client's message expected in `phase` at buf[at], or -1 when it is not one. */
function clientMessage(buf: Uint8Array, at: number, end: number, phase: number): number {
  if (phase === GREETING) {
    if (buf[at] !== VERSION || at + 1 >= end || buf[at + 1] === 0) return -1;
    return at + 2 + buf[at + 1] <= end ? 2 + buf[at + 1] : -1;
  }
  if (buf[at] === AUTH_VERSION && phase === REQUEST) {
    // RFC 1929: 01 ULEN UNAME PLEN PASSWD.
    if (at + 1 >= end || buf[at + 1] === 0) return -1;
    const passwordLengthAt = at + 2 + buf[at + 1];
    if (passwordLengthAt >= end) return -1;
    const length = passwordLengthAt + 1 + buf[passwordLengthAt] - at;
    return at + length <= end ? length : -1;
  }
  if (buf[at] !== VERSION || at + 3 >= end || buf[at + 1] !== CMD_CONNECT || buf[at + 2] !== 0) return -1;
  return addressedLength(buf, at + 3, end, 3);
}

/** Length of the server's message expected in `phase` at buf[at], or -1 when it is not one (or a refusal). */
function serverMessage(buf: Uint8Array, at: number, end: number, phase: number): number {
  if (at + 1 >= end) return -1;
  if (phase === METHOD) return buf[at] === VERSION && buf[at + 1] !== NO_ACCEPTABLE_METHOD ? 2 : -1;
  if (buf[at] === AUTH_VERSION && phase === REPLY) return buf[at + 1] === 0 ? 2 : -1;
  if (buf[at] !== VERSION || buf[at + 1] !== 0 || at + 3 >= end || buf[at + 2] !== 0) return -1;
  return addressedLength(buf, at + 3, end, 3);
}

/**
 * Length of a message whose ATYP is at buf[atypAt], `before` bytes after the message start:
 * `before` + ATYP + address + port; -1 when the address type is unknown or the message is cut.
 */
function addressedLength(buf: Uint8Array, atypAt: number, end: number, before: number): number {
  const atyp = buf[atypAt];
  let addressLength = -1;
  if (atyp === ATYP_IPV4) addressLength = 4;
  else if (atyp === ATYP_IPV6) addressLength = 16;
  else if (atyp === ATYP_DOMAIN && atypAt + 1 < end && buf[atypAt + 1] > 0) addressLength = 1 + buf[atypAt + 1];
  if (addressLength < 0) return -1;
  const length = before + 1 + addressLength + 2;
  return atypAt - before + length <= end ? length : -1;
}

/** A UDP ASSOCIATE datagram: its header checked and its data shown to the inner detectors. */
function inspectDatagram(ctx: InspectContext, chain: DetectorChain): number {
  const dataAt = datagramData(ctx);
  if (dataAt < 0) return GIVE_UP;
  return runInner(ctx, chain, dataAt);
}

/**
 * Offset of the data in the current datagram when it has a SOCKS5 UDP header (RSV 0, FRAG 0: the
 * fragments of a split datagram cannot be shown whole), or -1. Points the inner packet's addresses
 * and ports at the tunnelled peer's, so what the inner detectors learn names it.
 */
function datagramData(ctx: InspectContext): number {
  const pkt = ctx.pkt;
  const buf = pkt.buf;
  const start = pkt.payloadOff;
  const end = start + pkt.payloadLen;
  if (end - start < 4 || buf[start] !== 0 || buf[start + 1] !== 0 || buf[start + 2] !== 0) return -1;
  const headerLength = addressedLength(buf, start + 3, end, 3);
  if (headerLength < 0 || start + headerLength >= end) return -1;
  copyPacket(pkt);
  const atyp = buf[start + 3];
  const family = atyp === ATYP_IPV4 ? 4 : atyp === ATYP_IPV6 ? 6 : 0;
  const portAt = start + headerLength - 2;
  const port = (buf[portAt] << 8) | buf[portAt + 1];
  // The header names the far peer: the destination of what the client sends, the source of what
  // it receives. The inner flow is the client's with that peer, as if the relay were not there.
  if (family !== 0) {
    const peerAt = start + 4;
    const clientAt = ctx.dir === 0 ? pkt.srcOff : pkt.dstOff;
    // Without an address of the peer's family for the client, the peer stands on both ends.
    const localAt = family === pkt.family ? clientAt : peerAt;
    innerPacket.family = family;
    innerPacket.srcOff = ctx.dir === 0 ? localAt : peerAt;
    innerPacket.dstOff = ctx.dir === 0 ? peerAt : localAt;
  }
  if (ctx.dir === 0) innerPacket.dport = port;
  else innerPacket.sport = port;
  return start + headerLength;
}

/** Copies the outer packet into the inner view (its payload is set by enterInner). */
function copyPacket(pkt: PacketInfo): void {
  innerPacket.buf = pkt.buf;
  innerPacket.family = pkt.family;
  innerPacket.ipOff = pkt.ipOff;
  innerPacket.srcOff = pkt.srcOff;
  innerPacket.dstOff = pkt.dstOff;
  innerPacket.l4 = pkt.l4;
  innerPacket.sport = pkt.sport;
  innerPacket.dport = pkt.dport;
  innerPacket.tcpFlags = pkt.tcpFlags;
  innerPacket.tcpAck = pkt.tcpAck;
  innerPacket.tunnelDepth = pkt.tunnelDepth + 1;
}

/**
 * Sets the inner view to the tunnelled bytes buf[from, payload end) of the current packet, counted
 * as the next inner payload packet of its direction. A stream's bytes keep their sequence numbers.
 */
function enterInner(ctx: InspectContext, from: number): void {
  const pkt = ctx.pkt;
  if (pkt.l4 === IPPROTO_TCP) copyPacket(pkt);
  innerPacket.payloadOff = from;
  innerPacket.payloadLen = pkt.payloadOff + pkt.payloadLen - from;
  innerPacket.tcpSeq = (pkt.tcpSeq + (from - pkt.payloadOff)) >>> 0;
  const state = ctx.state;
  const countAt = ctx.stateOff + INNER_PACKETS;
  inner.state = state;
  inner.peers = ctx.peers;
  inner.proven = ctx.proven;
  inner.torrenting = ctx.torrenting;
  inner.flow = ctx.flow;
  inner.dir = ctx.dir;
  inner.dirIndex = state[countAt + ctx.dir];
  inner.flowIndex = state[countAt] + state[countAt + 1];
  inner.otherSeen = ctx.otherSeen;
  inner.synSeen = ctx.synSeen;
  state[countAt + ctx.dir] = Math.min(inner.dirIndex + 1, 0xff);
}

/** Runs the inner chain over buf[from, payload end): the tunnel's own flow, its state after this detector's. */
function runInner(ctx: InspectContext, chain: DetectorChain, from: number): number {
  const state = ctx.state;
  const base = ctx.stateOff;
  const doneAt = base + INNER_DONE;
  enterInner(ctx, from);
  const done = ((state[doneAt] << 24) | (state[doneAt + 1] << 16) | (state[doneAt + 2] << 8) | state[doneAt + 3]) >>> 0;
  const outcome = chain.run(inner, base + OWN_STATE_BYTES, done);
  const after = chain.done;
  state[doneAt] = after >>> 24;
  state[doneAt + 1] = (after >>> 16) & 0xff;
  state[doneAt + 2] = (after >>> 8) & 0xff;
  state[doneAt + 3] = after & 0xff;
  if (outcome !== MATCH) return outcome;
  // The evidence is as strong as what the tunnel carried (its producer, the proxy, is never banned).
  ctx.strength = inner.strength;
  state[base + INNER_MATCHED] = chain.matched + 1;
  return MATCH;
}
