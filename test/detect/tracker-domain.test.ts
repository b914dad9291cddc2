import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE, STRENGTH_NAME } from '../../src/detect/detector.js';
import { DEFAULT_DOMAIN_LIST, DomainList } from '../../src/detect/domains.js';
import { createTrackerDomainDetector, trackerDomainDetector } from '../../src/detect/tracker-domain.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram } from '../helpers/detector-run.js';
import { concat, ipv4Address, ipv6Address, packet4, tcp, u16, udp } from '../helpers/frames.js';
import { dnsMessage, TO_QUESTION } from '../helpers/names.js';

const LAB_CAPTURE = join(resolve(import.meta.dirname, '../..'), 'fixtures/names/direct.pcap');

describe('tracker-domain (DNS)', () => {
  const dns = (flows: Datagram[], detector = trackerDomainDetector, ports: [number, number] = [40000, 53]) =>
    new FlowRunner(detector, { family: 4, initiator: '10.0.0.1', initiatorPort: ports[0], responder: '10.0.0.2', responderPort: ports[1] }).run(flows, true);

  it.each([
    ['a query for a tracker', dnsMessage('tracker.opentrackr.org')],
    ['a query for a DHT router', dnsMessage('router.utorrent.com')],
    ['a query with 0x20 case randomisation', dnsMessage('RoUtEr.BiTtOrReNt.CoM')],
    ['an AAAA query for a rutracker announce host', dnsMessage('bt3.t-ru.org')],
    ['a response only (capture started late)', dnsMessage('tracker.opentrackr.org', [[TO_QUESTION, 1, [10, 1, 2, 3]]])],
  ])('matches %s', (_name, message) => {
    const result = dns([{ dir: 0, payload: message }]);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('is name evidence whose producer is no peer: the other end is a resolver', () => {
    expect(trackerDomainDetector.strength).toBe(STRENGTH_NAME);
    expect(trackerDomainDetector.producerIsPeer).toBe(false);
    const result = dns([{ dir: 0, payload: dnsMessage('tracker.opentrackr.org') }]);
    expect(result.outcome).toBe(MATCH);
    expect(result.strength).toBe(STRENGTH_NAME);
  });

  it.each([
    ['a look-alike name', dnsMessage('notutorrent.com')],
    ['a listed name followed by another domain', dnsMessage('router.utorrent.com.example.net')],
    ['an ordinary name', dnsMessage('www.example.com')],
    ['a project website', dnsMessage('www.qbittorrent.org')],
    ['an inverse query (opcode 1)', dnsMessage('tracker.opentrackr.org', undefined, 0x0900)],
    ['no question', Uint8Array.from([0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
    ['a name cut short', dnsMessage('tracker.opentrackr.org').subarray(0, 25)],
    ['a compression pointer loop', Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1])],
    ['random bytes', Uint8Array.from({ length: 40 }, (_, i) => (i * 37 + 11) & 0xff)],
  ])('does not match %s', (_name, message) => {
    const result = dns([{ dir: 0, payload: message }]);
    expect(result.outcome).not.toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('looks only at flows between a client port and port 53', () => {
    const query = [{ dir: 0, payload: dnsMessage('tracker.opentrackr.org') }];
    expect(dns(query, trackerDomainDetector, [53, 53]).outcome).toBe(GIVE_UP);
    expect(dns(query, trackerDomainDetector, [40000, 5353]).outcome).toBe(GIVE_UP);
    expect(dns(query, trackerDomainDetector, [53, 40000]).outcome).toBe(MATCH);
  });

  it('matches a later question of a flow that asked something else first', () => {
    expect(dns([{ dir: 0, payload: dnsMessage('example.com') }, { dir: 0, payload: dnsMessage('open.stealth.si') }]).outcome).toBe(MATCH);
  });

  it('matches a query over TCP (length-prefixed)', () => {
    const engine = new Engine({ flowCapacity: 8, detectors: [trackerDomainDetector] });
    const message = dnsMessage('exodus.desync.com');
    const frame = packet4('10.0.0.1', '10.0.0.2', 6, tcp(40000, 53, concat(u16(message.length), message)));
    expect(engine.process(frame, 0, frame.length, LINKTYPE_RAW)).toBe(VERDICT_BITTORRENT);
  });

  it('learns nothing from the answers: a name never lists nor proves an address', () => {
    expect(trackerDomainDetector.learn).toBeUndefined();
    const runner = new FlowRunner(createTrackerDomainDetector(new DomainList(['opentrackr.org'])), { family: 4, initiator: '10.0.0.1', initiatorPort: 40000, responder: '10.0.0.2', responderPort: 53 });
    const response = dnsMessage('tracker.opentrackr.org', [
      [TO_QUESTION, 1, ipv4Address('10.1.1.1')],
      [TO_QUESTION, 28, ipv6Address('2001:db8::7')],
    ]);
    const result = runner.run([{ dir: 0, payload: dnsMessage('tracker.opentrackr.org') }, { dir: 1, payload: response }], true);
    expect(result).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_NAME });
    expect(runner.announced.inserts + runner.proven.inserts).toBe(0);
  });

  it.runIf(existsSync(LAB_CAPTURE))('matches the lab client resolving its trackers and DHT router (fixtures/names/direct.pcap)', () => {
    const { flows, engine } = scanCapture(LAB_CAPTURE, { detectors: [trackerDomainDetector] });
    const matched = flows.filter((f) => f.bittorrent);
    expect(matched.length).toBeGreaterThanOrEqual(4);
    expect(matched.every((f) => f.responder === '10.79.0.2:53')).toBe(true);
    expect(engine.announced.inserts + engine.proven.inserts).toBe(0);
  });
});

describe('tracker-domain on arbitrary input', () => {
  it('never throws, reads outside the payload or writes outside its state', () => {
    const payload = fc.uint8Array({ maxLength: 300 });
    const shaped = fc.oneof(
      payload,
      fc.tuple(fc.constantFrom(dnsMessage('x.t-ru.org'), dnsMessage('tracker.opentrackr.org', [[TO_QUESTION, 1, [1, 2, 3, 4]]])), fc.nat(80), payload).map(([m, cut, tail]) => concat(m.subarray(0, cut), tail)),
    );
    const runner = new FlowRunner(createTrackerDomainDetector(DEFAULT_DOMAIN_LIST), { family: 4, initiator: '10.0.0.1', initiatorPort: 40000, responder: '10.0.0.2', responderPort: 53 });
    fc.assert(
      fc.property(fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: shaped }), { minLength: 1, maxLength: 8 }), (datagrams) => {
        const result = runner.run(datagrams, true);
        expect([MATCH, MORE, GIVE_UP]).toContain(result.outcome);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('leaves an ordinary DNS flow open for its next questions', () => {
    const datagram = packet4('10.0.0.1', '10.0.0.2', 17, udp(40000, 53, dnsMessage('www.example.com')));
    expect(new Engine({ flowCapacity: 8, detectors: [trackerDomainDetector] }).process(datagram, 0, datagram.length, LINKTYPE_RAW)).toBe(VERDICT_UNDECIDED);
  });
});
