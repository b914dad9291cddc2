import { describe, expect, it } from 'vitest';
import { DETECTORS, detectorChain } from '../../src/detect/registry.js';
import { Engine, VERDICT_BITTORRENT } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { packet4, tcp, udp } from '../helpers/frames.js';
import { clientHello, dnsMessage, TO_QUESTION } from '../helpers/names.js';

function verdict(engine: Engine, frame: Uint8Array): number {
  return engine.process(frame, 0, frame.length, LINKTYPE_RAW);
}

describe('detector chain', () => {
  it('keeps at most 31 detectors (the per-flow give-up mask), exact rules before heuristics', () => {
    const names = detectorChain({ blockSocks: true }).map((d) => d.name);
    expect(names.length).toBeLessThanOrEqual(31);
    expect(names.at(-1)).toBe('peer-cache');
    expect(names.indexOf('handshake')).toBe(0);
    expect(names.indexOf('mse')).toBeGreaterThan(names.indexOf('utp'));
    expect(new Set(names).size).toBe(names.length);
  });

  it("adds the operator's tracker domains to the DNS, TLS and HTTP name rules", () => {
    const hello = packet4('10.0.0.1', '198.51.100.7', 6, tcp(40000, 443, clientHello('announce.private-tracker.example')));
    expect(verdict(new Engine({ flowCapacity: 16 }), hello)).not.toBe(VERDICT_BITTORRENT);
    const engine = new Engine({ flowCapacity: 16, detectors: detectorChain({ blockSocks: false, trackerDomains: ['private-tracker.example'] }) });
    expect(verdict(engine, hello)).toBe(VERDICT_BITTORRENT);
    expect(engine.ruleNames[engine.flows.rule[engine.lastFlow]]).toBe('tracker-sni');
  });

  it('leaves the chain alone without extra names, and keeps DNS answers for tracker names out of the peer tables', () => {
    expect(detectorChain({ blockSocks: false })).toBe(DETECTORS);
    expect(detectorChain({ blockSocks: false, trackerDomains: [] })).toBe(DETECTORS);
    const engine = new Engine({ flowCapacity: 16, detectors: detectorChain({ blockSocks: false, trackerDomains: ['private-tracker.example'] }) });
    const answer = dnsMessage('tracker.opentrackr.org', [[TO_QUESTION, 1, [93, 158, 213, 92]]]);
    expect(verdict(engine, packet4('10.0.0.53', '10.0.0.1', 17, udp(53, 40000, answer)))).toBe(VERDICT_BITTORRENT);
    const rule = engine.flows.rule[engine.lastFlow];
    expect(engine.ruleNames[rule]).toBe('tracker-domain');
    expect(engine.strengthName(engine.lastFlow)).toBe('name');
    expect(engine.producerIsPeer(rule)).toBe(false);
    // A name is no proof: the address it resolves to is neither proven nor listed.
    expect(engine.proven.inserts + engine.announced.inserts).toBe(0);
  });
});
