import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE } from '../../src/detect/detector.js';
import { trackerSniDetector } from '../../src/detect/tracker-sni.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner } from '../helpers/detector-run.js';
import { ascii, concat, packet4, tcp } from '../helpers/frames.js';
import { clientHello } from '../helpers/names.js';
import { overTcp } from '../helpers/tcp-stream.js';

const ROOT = resolve(import.meta.dirname, '../..');
const LAB_CAPTURE = join(ROOT, 'fixtures/names/direct.pcap');
const TLS_TORRENT = resolve(ROOT, '../shared/corpus/ndpi/tls_torrent.pcapng');

describe('tracker-sni (TLS ClientHello)', () => {
  const sni = (segments: Uint8Array[], detector = trackerSniDetector) =>
    new FlowRunner(overTcp(detector)).run(segments.map((payload) => ({ dir: 0, payload })), true);

  it.each([
    ['a tracker', 'tracker.opentrackr.org'],
    ['uTorrent Web', 'web.utorrent.com'],
    ['a WebTorrent tracker, upper case', 'TRACKER.OPENWEBTORRENT.COM'],
  ])('matches a ClientHello to %s', (_name, host) => {
    const result = sni([clientHello(host)]);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('matches however the ClientHello is cut into segments', () => {
    // 1500 bytes of padding first: the name sits in the second segment, as in a post-quantum ClientHello.
    const hello = clientHello('router.bittorrent.com', { paddingBefore: 1500 });
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: hello.length - 1 }), { maxLength: 4 }), (cuts) => {
        const bounds = [0, ...cuts.sort((a, b) => a - b), hello.length];
        const segments = bounds.slice(1).map((end, i) => hello.subarray(bounds[i], end));
        expect(sni(segments).outcome).toBe(MATCH);
      }),
    );
  });

  it('skips a retransmitted segment and waits out a gap', () => {
    const hello = clientHello('tracker.opentrackr.org', { paddingBefore: 600 });
    const engine = new Engine({ flowCapacity: 8, detectors: [trackerSniDetector] });
    const send = (offset: number, bytes: Uint8Array) => {
      const frame = packet4('10.0.0.1', '10.0.0.2', 6, tcp(40000, 443, bytes, { seq: (0xfffffe00 + offset) >>> 0 }));
      return engine.process(frame, 0, frame.length, LINKTYPE_RAW);
    };
    expect(send(0, hello.subarray(0, 300))).toBe(VERDICT_UNDECIDED);
    expect(send(0, hello.subarray(0, 300))).toBe(VERDICT_UNDECIDED);
    expect(send(500, hello.subarray(500))).toBe(VERDICT_UNDECIDED);
    expect(send(200, hello.subarray(200, 500))).toBe(VERDICT_UNDECIDED);
    expect(send(500, hello.subarray(500))).toBe(VERDICT_BITTORRENT);
  });

  it.each([
    ['an ordinary site', [clientHello('www.example.com')]],
    ['a look-alike', [clientHello('notutorrent.com')]],
    ['a listed name as a prefix', [clientHello('web.utorrent.com.example.net')]],
    ['no server_name', [clientHello('', { noServerName: true })]],
    ['HTTP', [ascii('GET / HTTP/1.1\r\nHost: web.utorrent.com\r\n\r\n')]],
    ['a server hello record', [Uint8Array.from([0x16, 0x03, 0x03, 0x00, 0x31, 0x02, 0x00, 0x00, 0x2d])]],
    ['an SSL 2 record', [Uint8Array.from([0x16, 0x02, 0x00, 0x00, 0x31, 0x01, 0x00, 0x00, 0x2d])]],
    ['a cut ClientHello', [clientHello('web.utorrent.com').subarray(0, 100)]],
  ])('does not match %s', (_name, segments) => {
    const result = sni(segments);
    expect(result.outcome).not.toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it.runIf(existsSync(TLS_TORRENT))('matches HTTPS to web.utorrent.com (corpus tls_torrent.pcapng)', () => {
    const { flows } = scanCapture(TLS_TORRENT, { detectors: [trackerSniDetector] });
    expect(flows.filter((f) => f.bittorrent).map((f) => f.responder)).toEqual(['10.10.10.1:443']);
  });

  it.runIf(existsSync(LAB_CAPTURE))('matches libtorrent announcing to an HTTPS tracker (fixtures/names/direct.pcap)', () => {
    const { flows } = scanCapture(LAB_CAPTURE, { detectors: [trackerSniDetector] });
    const matched = flows.filter((f) => f.bittorrent);
    expect(matched.length).toBeGreaterThanOrEqual(2);
    expect(matched.every((f) => f.responder === '10.79.0.2:443')).toBe(true);
  });
});

describe('tracker-sni on arbitrary input', () => {
  it('never throws, reads outside the payload or writes outside its state', () => {
    const payload = fc.uint8Array({ maxLength: 300 });
    const shaped = fc.oneof(payload, fc.tuple(fc.nat(120), payload).map(([cut, tail]) => concat(clientHello('web.utorrent.com').subarray(0, cut), tail)));
    const runner = new FlowRunner(overTcp(trackerSniDetector));
    fc.assert(
      fc.property(fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: shaped }), { minLength: 1, maxLength: 8 }), (segments) => {
        const result = runner.run(segments, true);
        expect([MATCH, MORE, GIVE_UP]).toContain(result.outcome);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});
