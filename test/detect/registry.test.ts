import { describe, expect, it } from 'vitest';
import { TrackerAddresses } from '../../src/detect/domains.js';
import { DETECTORS, detectorChain } from '../../src/detect/registry.js';
import { Engine, VERDICT_BITTORRENT } from '../../src/engine/engine.js';
import { Clock } from '../../src/flow/clock.js';
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

  it('hands the addresses a listed tracker name resolves to to the address sink, and leaves the chain alone otherwise', () => {
    const clock = new Clock();
    const reported: string[] = [];
    class Recording extends TrackerAddresses {
      override add(family: number, buf: Uint8Array, off: number): boolean {
        reported.push(Array.from(buf.subarray(off, off + (family === 4 ? 4 : 16))).join('.'));
        return super.add(family, buf, off);
      }
    }
    const engine = new Engine({ clock, flowCapacity: 16, detectors: detectorChain({ blockSocks: false, trackerAddresses: new Recording(64, 60_000, clock) }) });
    const answer = dnsMessage('tracker.opentrackr.org', [[TO_QUESTION, 1, [93, 158, 213, 92]]]);
    expect(verdict(engine, packet4('10.0.0.1', '10.0.0.53', 17, udp(40000, 53, answer)))).toBe(VERDICT_BITTORRENT);
    expect(reported).toEqual(['93.158.213.92']);
    expect(detectorChain({ blockSocks: false })).toBe(DETECTORS);
  });
});
