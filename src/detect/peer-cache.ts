import { GIVE_UP, MATCH, OVER_TCP, OVER_UDP, type Detector, type InspectContext } from './detector.js';

/**
 * A flow to or from an endpoint already known to speak BitTorrent (proven by an earlier flow, or
 * listed as a peer by DHT, PEX or a tracker): caught from its first payload packet, whatever it
 * carries, which is how encrypted (MSE) connections to known peers are stopped. Last in the
 * chain, so a flow that also speaks a recognisable protocol is named by that protocol.
 * Budget: the first payload packet.
 */
export const peerCacheDetector: Detector = {
  name: 'peer-cache',
  transports: OVER_TCP | OVER_UDP,
  budget: 1,
  stateBytes: 0,
  bannable: true,
  provesPeers: false,
  inspect(ctx: InspectContext): number {
    const pkt = ctx.pkt;
    const peers = ctx.peers;
    // The cached end may be a local client's port; if the other end is a service (DNS, HTTPS, a
    // VPN...), the client is only using it, and the flow says nothing about BitTorrent.
    const toPeer = peers.has(pkt.family, pkt.buf, pkt.dstOff, pkt.dport) && peers.accepts(pkt.family, pkt.buf, pkt.srcOff, pkt.sport);
    const fromPeer = peers.has(pkt.family, pkt.buf, pkt.srcOff, pkt.sport) && peers.accepts(pkt.family, pkt.buf, pkt.dstOff, pkt.dport);
    return toPeer || fromPeer ? MATCH : GIVE_UP;
  },
};
