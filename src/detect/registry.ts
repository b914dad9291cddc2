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
import { createSocks5Detector } from './socks5.js';
import { socks5ProxyDetector } from './socks5-proxy.js';
import { DEFAULT_DOMAINS, DomainList } from './domains.js';
import { createTrackerDomainDetector, trackerDomainDetector } from './tracker-domain.js';
import { createTrackerHostDetector, trackerHostDetector } from './tracker-host.js';
import { createTrackerSniDetector, trackerSniDetector } from './tracker-sni.js';
import { udpTrackerDetector } from './udp-tracker.js';
import { utpDetector } from './utp.js';

/**
 * Every detector, in the order the engine tries them: exact protocol signatures first, the
 * false-positive-prone heuristics last, so a precise rule names the flow whenever one can. The
 * SOCKS5 rule (after utp) runs the rest of the chain inside tunnels; see detectorChain.
 */
const UNTUNNELLED: readonly Detector[] = [
  handshakeDetector,
  httpTrackerDetector,
  httpBittorrentDetector,
  dhtDetector,
  lsdDetector,
  udpTrackerDetector,
  utpDetector,
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

/** The default chain (no extra names, SOCKS5 tunnels blocked only when they carry BitTorrent). */
export const DETECTORS: readonly Detector[] = buildChain(UNTUNNELLED, false);

/**
 * The chain for a configuration: the detectors above, with the name rules rebuilt over the
 * operator's extra names, the operator's rules before the heuristics, and the SOCKS5 rule over all
 * of them, so that inside a tunnel the same detectors run as outside.
 */
export function detectorChain(options: ChainOptions): readonly Detector[] {
  const extra = options.trackerDomains ?? [];
  // One default chain, shared: detectors keep no state of their own, so engines may share them.
  if (extra.length === 0 && !options.blockSocks && !options.operatorRules) return DETECTORS;
  let chain: readonly Detector[] = UNTUNNELLED;
  if (extra.length > 0) {
    const list = new DomainList([...DEFAULT_DOMAINS, ...extra]);
    const replacements = new Map<Detector, Detector>([
      [trackerSniDetector, createTrackerSniDetector(list)],
      [trackerHostDetector, createTrackerHostDetector(list)],
      [trackerDomainDetector, createTrackerDomainDetector(list)],
    ]);
    chain = chain.map((detector) => replacements.get(detector) ?? detector);
  }
  if (options.operatorRules) {
    const at = chain.indexOf(peerMessagesDetector);
    chain = [...chain.slice(0, at), options.operatorRules, ...chain.slice(at)];
  }
  return buildChain(chain, options.blockSocks);
}

/** `detectors` with the SOCKS5 rule over them after utp, and the any-SOCKS5 rule after it when blocking proxies. */
function buildChain(detectors: readonly Detector[], blockSocks: boolean): readonly Detector[] {
  const at = detectors.indexOf(utpDetector) + 1;
  const tunnels = [createSocks5Detector('socks5', detectors), ...(blockSocks ? [socks5ProxyDetector] : [])];
  return [...detectors.slice(0, at), ...tunnels, ...detectors.slice(at)];
}
