import { MATCH, OVER_TCP, OVER_UDP, type Detector, STRENGTH_EXACT } from './detector.js';
import { createSocks5Detector } from './socks5.js';

/** Whatever a tunnel carries: its first payload packet. */
const tunnelledData: Detector = {
  name: 'tunnelled-data',
  transports: OVER_TCP | OVER_UDP,
  budget: 1,
  stateBytes: 0,
  strength: STRENGTH_EXACT,
  producerIsPeer: false,
  inspect: () => MATCH,
};

/**
 * Any SOCKS5 tunnel (RFC 1928) that carries data, whatever it is: for operators who block proxies
 * outright (BLOCK_SOCKS=true), since a client can hide BitTorrent inside one. Registered after the
 * socks5 detector, so a tunnel that carries BitTorrent is still named for that. Never banned: the
 * proxy is a server, not a peer. Budget: the negotiation and the first tunnelled packet.
 */
export const socks5ProxyDetector = createSocks5Detector('socks5-proxy', [tunnelledData]);
