import type { DetectionEvent } from '../../src/pipeline/pipeline.js';
import type { Decision } from '../../src/policy/policy.js';

/** A detection as a worker reports it: local 10.8.0.2:50000 opened a flow to 198.51.100.9:6881, which sent the matching bytes. */
export function detectionEvent(rule: string, strength: string, decision: Partial<Decision> = {}): DetectionEvent {
  return {
    timeMs: Date.UTC(2026, 11, 3, 8, 0, 0),
    flow: 1,
    l4: 'tcp',
    tunnelled: false,
    initiator: '10.8.0.2',
    initiatorPort: 50000,
    responder: '198.51.100.9',
    responderPort: 6881,
    initiatorLocal: true,
    responderLocal: false,
    rule,
    strength,
    producer: 'responder',
    flowPackets: 4,
    tcpSeq: 1000,
    tcpSeqEnd: 1068,
    tcpAck: 5000,
    decision: { action: 'drop', cut: false, markConnection: true, enforce: true, ban: null, rateLimited: false, reason: 'no ban: test', remember: null, ...decision },
    payload: new Uint8Array(68),
  };
}
