import { GIVE_UP, MATCH, OVER_TCP, OVER_UDP, STRENGTH_ANNOUNCED, STRENGTH_CACHE, type Detector, type InspectContext } from './detector.js';

/**
 * A flow to or from an endpoint already known to speak BitTorrent: proven a peer by its own bytes
 * earlier (`cache`, for every host), or listed as a peer to this very host by a tracker, a DHT node
 * or PEX (`announced`, for that host only). Caught at its SYN (connection attempts that never
 * carry payload are most of a client's) or at its first payload packet, whatever it carries:
 * that is how encrypted (MSE) connections to known peers are stopped. Neither strength
 * ever bans: a cache hit is about an endpoint, not about the bytes of this flow. The other end (the
 * one that sends to the known endpoint or receives from it) is marked torrenting, as the flow's
 * bytes would have marked it; a forged packet from a known endpoint marks its receiver, as a
 * forged DHT message already does. Last in the chain, so a flow that also speaks a recognisable
 * protocol is named by that protocol.
 * Budget: the first payload packet.
 */
export const peerCacheDetector: Detector = {
  name: 'peer-cache',
  transports: OVER_TCP | OVER_UDP,
  budget: 1,
  stateBytes: 0,
  strength: STRENGTH_CACHE,
  producerIsPeer: true,
  // At the first payload packet: an endpoint may also have been learnt since the flow's SYN.
  inspect(ctx: InspectContext): number {
    return knownEndpoint(ctx) ? MATCH : GIVE_UP;
  },
  matchesEndpoints: knownEndpoint,
};

/** Whether one end of the current packet's flow is a known peer to the other; sets the strength. */
function knownEndpoint(ctx: InspectContext): boolean {
  const pkt = ctx.pkt;
  const { family, buf, srcOff, dstOff, sport, dport } = pkt;
  const proven = ctx.proven;
  // The cached end may be a local client's port; if the other end is a service (DNS, HTTPS, a
  // VPN...), the client is only using it, and the flow says nothing about BitTorrent.
  const toPeer = proven.accepts(family, buf, srcOff, sport) && proven.has(family, buf, dstOff, dport);
  const fromPeer = proven.accepts(family, buf, dstOff, dport) && proven.has(family, buf, srcOff, sport);
  if (toPeer || fromPeer) {
    ctx.strength = STRENGTH_CACHE;
    markTorrenting(ctx, toPeer);
    return true;
  }
  const listed = ctx.peers.cache;
  const toListed = listed.accepts(family, buf, srcOff, sport) && listed.has(family, buf, dstOff, dport, family, buf, srcOff);
  const fromListed = listed.accepts(family, buf, dstOff, dport) && listed.has(family, buf, srcOff, sport, family, buf, dstOff);
  if (!toListed && !fromListed) return false;
  ctx.strength = STRENGTH_ANNOUNCED;
  markTorrenting(ctx, toListed);
  return true;
}

/**
 * The end that talks with the known endpoint is torrenting, as its bytes would have shown had the
 * flow not been decided at its first packet (inline, it carries nothing more): its other flows
 * keep the context shape evidence needs. `fromSource`: the known endpoint is the destination.
 */
function markTorrenting(ctx: InspectContext, fromSource: boolean): void {
  const pkt = ctx.pkt;
  ctx.torrenting.mark(pkt.family, pkt.buf, fromSource ? pkt.srcOff : pkt.dstOff);
}
