import type { Detector } from './detector.js';
import { dhtDetector } from './dht.js';
import { handshakeDetector } from './handshake.js';
import { httpBittorrentDetector } from './http-bittorrent.js';
import { httpTrackerDetector } from './http-tracker.js';
import { lsdDetector } from './lsd.js';
import { mseDetector } from './mse.js';
import { peerCacheDetector } from './peer-cache.js';
import { peerMessagesDetector } from './peer-messages.js';
import { signatureDetector } from './signatures.js';
import { socks5Detector } from './socks5.js';
import { socks5ProxyDetector } from './socks5-proxy.js';
import { trackerDomainDetector } from './tracker-domain.js';
import { trackerHostDetector } from './tracker-host.js';
import { trackerSniDetector } from './tracker-sni.js';
import { udpTrackerDetector } from './udp-tracker.js';
import { utpDetector } from './utp.js';

/**
 * Every detector, in the order the engine tries them: exact protocol signatures first, the
 * false-positive-prone heuristics last, so a precise rule names the flow whenever one can.
 */
export const DETECTORS: readonly Detector[] = [
  handshakeDetector,
  httpTrackerDetector,
  httpBittorrentDetector,
  dhtDetector,
  lsdDetector,
  udpTrackerDetector,
  utpDetector,
  socks5Detector,
  trackerSniDetector,
  trackerHostDetector,
  trackerDomainDetector,
  // Heuristics and learned state: keep these last.
  peerMessagesDetector,
  signatureDetector,
  mseDetector,
  peerCacheDetector,
];

/** The chain for a configuration: BLOCK_SOCKS adds every SOCKS5 tunnel, right after the BitTorrent-in-SOCKS5 rule. */
export function detectorChain(options: { blockSocks: boolean }): readonly Detector[] {
  if (!options.blockSocks) return DETECTORS;
  const at = DETECTORS.indexOf(socks5Detector) + 1;
  return [...DETECTORS.slice(0, at), socks5ProxyDetector, ...DETECTORS.slice(at)];
}
