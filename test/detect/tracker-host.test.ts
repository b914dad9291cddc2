import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE } from '../../src/detect/detector.js';
import { trackerHostDetector } from '../../src/detect/tracker-host.js';
import { Engine, VERDICT_CLEAN } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram } from '../helpers/detector-run.js';
import { ascii, concat, packet4, tcp } from '../helpers/frames.js';
import { overTcp } from '../helpers/tcp-stream.js';

const LAB_CAPTURE = join(resolve(import.meta.dirname, '../..'), 'fixtures/names/direct.pcap');

function request(host: string, head = 'GET /announce HTTP/1.1\r\n'): Uint8Array {
  return ascii(`${head}Host: ${host}\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n`);
}

describe('tracker-host (HTTP Host)', () => {
  const host = (segments: Datagram[]) => new FlowRunner(overTcp(trackerHostDetector)).run(segments, true);
  const fromClient = (...texts: string[]): Datagram[] => texts.map((text) => ({ dir: 0, payload: ascii(text) }));

  it.each([
    ['a tracker announce', request('tracker.opentrackr.org:1337')],
    ['a lower-case header and a trailing dot', ascii('GET /announce HTTP/1.1\r\nhost:open.stealth.si.\r\n\r\n')],
    ['a proxy CONNECT', ascii('CONNECT web.utorrent.com:443 HTTP/1.1\r\nHost: web.utorrent.com:443\r\n\r\n')],
  ])('matches %s', (_name, payload) => {
    const result = host([{ dir: 0, payload }]);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('matches a request head written over several segments', () => {
    expect(host(fromClient('GET /announce HTTP/1.1\r\n', 'Host: tracker.opentrackr.org\r\n\r\n')).outcome).toBe(MATCH);
    expect(host(fromClient('GET /announce HTTP/1.1\r\nUser-Agent: x\r\n', 'HOST: exodus.desync.com\r\n\r\n')).outcome).toBe(MATCH);
  });

  it.each([
    ['an ordinary host', fromClient('GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n')],
    ['a look-alike', fromClient('GET / HTTP/1.1\r\nHost: nottracker.opentrackr.org.example\r\n\r\n')],
    ['a name cut at the segment end', fromClient('GET / HTTP/1.1\r\nHost: web.utorrent.com')],
    ['a Host after the head ended', fromClient('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n', 'GET / HTTP/1.1\r\nHost: web.utorrent.com\r\n\r\n')],
    ['no Host header', fromClient('GET / HTTP/1.0\r\n\r\n')],
    ['a header whose name ends in host', fromClient('GET / HTTP/1.1\r\nX-Forwarded-Host: web.utorrent.com\r\nHost: example.com\r\n\r\n')],
    ['a server that speaks first', [{ dir: 1, payload: ascii('220 smtp ready\r\n') }, ...fromClient('GET / HTTP/1.1\r\nHost: web.utorrent.com\r\n\r\n')]],
    ['a request not at the start', fromClient('\r\nGET / HTTP/1.1\r\nHost: web.utorrent.com\r\n\r\n')],
    ['an IPv6 literal', fromClient('GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n')],
  ])('does not match %s', (_name, segments) => {
    const result = host(segments);
    expect(result.outcome).not.toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it.runIf(existsSync(LAB_CAPTURE))('matches libtorrent announcing to an HTTP tracker (fixtures/names/direct.pcap)', () => {
    const { flows } = scanCapture(LAB_CAPTURE, { detectors: [trackerHostDetector] });
    const matched = flows.filter((f) => f.bittorrent);
    expect(matched.length).toBeGreaterThanOrEqual(2);
    expect(matched.every((f) => f.responder === '10.79.0.2:1337')).toBe(true);
  });
});

describe('tracker-host on arbitrary input', () => {
  it('never throws, reads outside the payload or writes outside its state', () => {
    const payload = fc.uint8Array({ maxLength: 300 });
    const shaped = fc.oneof(payload, payload.map((tail) => concat(ascii('GET / HTTP/1.1\r\nHost:'), tail)), payload.map((tail) => concat(ascii('host:'), tail)));
    const runner = new FlowRunner(overTcp(trackerHostDetector));
    fc.assert(
      fc.property(fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: shaped }), { minLength: 1, maxLength: 8 }), (segments) => {
        const result = runner.run([{ dir: 0, payload: ascii('GET / HTTP/1.1\r\n') }, ...segments], true);
        expect([MATCH, MORE, GIVE_UP]).toContain(result.outcome);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
        expect(runner.run(segments, true).strayReads).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('leaves a flow clean at once when its first request names an ordinary host', () => {
    const engine = new Engine({ flowCapacity: 8, detectors: [trackerHostDetector] });
    const frame = packet4('10.0.0.1', '10.0.0.2', 6, tcp(40000, 80, request('www.example.com')));
    expect(engine.process(frame, 0, frame.length, LINKTYPE_RAW)).toBe(VERDICT_CLEAN);
  });
});
