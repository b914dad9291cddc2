import type { Detector } from './detector.js';
import { dhtDetector } from './dht.js';
import { handshakeDetector } from './handshake.js';
import { httpBittorrentDetector } from './http-bittorrent.js';
import { httpTrackerDetector } from './http-tracker.js';
import { lsdDetector } from './lsd.js';
import { mseDetector } from './mse.js';
import type { OperatorRulesDetector } from './operator-rules.js';
import { peerCacheDetector } from './peer-cache.js';
import { peerMessagesDetector } from './peer-messages.js';
import { signatureDetector } from './signatures.js';
import { createBittorrentSocks5Detector, socks5Detector } from './socks5.js';
import { socks5ProxyDetector } from './socks5-proxy.js';
import { DEFAULT_DOMAINS, DomainList } from './domains.js';
import { createTrackerDomainDetector, trackerDomainDetector } from './tracker-domain.js';
import { createTrackerHostDetector, trackerHostDetector } from './tracker-host.js';
import { createTrackerSniDetector, trackerSniDetector } from './tracker-sni.js';
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

export interface ChainOptions {
  /** BLOCK_SOCKS: every SOCKS5 tunnel too, right after the BitTorrent-in-SOCKS5 rule. */
  blockSocks: boolean;
  /** Names added to the built-in tracker and client-service list. */
  trackerDomains?: readonly string[];
  /** RULES_FILE's rules: after the protocol and name rules, before the heuristics. */
  operatorRules?: OperatorRulesDetector | null;
}

/** The chain for a configuration: DETECTORS, with the name rules (also those inside SOCKS5) rebuilt over the operator's extra names. */
export function detectorChain(options: ChainOptions): readonly Detector[] {
  const extra = options.trackerDomains ?? [];
  let chain: readonly Detector[] = DETECTORS;
  if (extra.length > 0) {
    const list = new DomainList([...DEFAULT_DOMAINS, ...extra]);
    const names = { sni: createTrackerSniDetector(list), host: createTrackerHostDetector(list), domain: createTrackerDomainDetector(list) };
    const replacements = new Map<Detector, Detector>([
      [trackerSniDetector, names.sni],
      [trackerHostDetector, names.host],
      [trackerDomainDetector, names.domain],
      // Inside a tunnel the same names count.
      [socks5Detector, createBittorrentSocks5Detector(names)],
    ]);
    chain = chain.map((detector) => replacements.get(detector) ?? detector);
  }
  if (options.operatorRules) {
    const at = chain.indexOf(peerMessagesDetector);
    chain = [...chain.slice(0, at), options.operatorRules, ...chain.slice(at)];
  }
  if (!options.blockSocks) return chain;
  const at = chain.findIndex((detector) => detector.name === socks5Detector.name) + 1;
  return [...chain.slice(0, at), socks5ProxyDetector, ...chain.slice(at)];
}
