import type { Detector } from './detector.js';
import { handshakeDetector } from './handshake.js';
import { peerCacheDetector } from './peer-cache.js';

/**
 * Every detector, in the order the engine tries them: exact protocol signatures first, the
 * false-positive-prone heuristics last, so a precise rule names the flow whenever one can.
 */
export const DETECTORS: readonly Detector[] = [
  handshakeDetector,
  // Heuristics and learned state: keep these last.
  peerCacheDetector,
];
