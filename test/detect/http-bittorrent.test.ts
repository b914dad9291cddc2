import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH } from '../../src/detect/detector.js';
import { httpBittorrentDetector } from '../../src/detect/http-bittorrent.js';
import { VERDICT_BITTORRENT, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner } from '../helpers/detector-run.js';
import { ascii, concat } from '../helpers/frames.js';
import { Conversation } from '../helpers/peer-wire.js';

const FIXTURES = resolve(import.meta.dirname, '../../fixtures/bt-http');
const DETECTORS = [httpBittorrentDetector];
const WEB_SEED_PORT = 8000;

function request(target: string, headers: string, method = 'GET'): Uint8Array {
  return concat(ascii(`${method} ${target} HTTP/1.1\r\nHost: seed.example\r\n`), Buffer.from(headers, 'utf8'), ascii('\r\n'));
}

function webSeedGet(userAgent: string): Uint8Array {
  return request('/files/ubuntu.iso', `Range: bytes=65536-131071\r\nUser-Agent: ${userAgent}\r\nAccept: */*\r\n`);
}

function verdictOf(...segments: Uint8Array[]): number {
  const conversation = new Conversation({ detectors: DETECTORS, serverPort: 80 });
  let verdict = VERDICT_UNDECIDED;
  for (const segment of segments) verdict = conversation.send(0, segment);
  return verdict;
}

const HASH = '%3d5bGF%2c%d28%5c6%bbY%c7%1a%81g%0eW%dd%89';

describe('http-bittorrent detector (BEP 17, BEP 19, client User-Agents)', () => {
  it.each(['webseed-transmission.pcap', 'webseed-libtorrent.pcap'])('matches the web seed requests of the lab capture %s', (name) => {
    const { flows } = scanCapture(join(FIXTURES, name), { detectors: DETECTORS });
    const webSeed = flows.filter((flow) => flow.responder.endsWith(`:${WEB_SEED_PORT}`));
    expect(webSeed.length).toBeGreaterThanOrEqual(1);
    for (const flow of webSeed) expect(flow).toMatchObject({ bittorrent: true, rule: 'http-bittorrent', payloadPackets: 1 });
  });

  it("leaves aria2's web seed requests alone: they are its ordinary downloads", () => {
    const { flows } = scanCapture(join(FIXTURES, 'webseed-aria2.pcap'), { detectors: DETECTORS });
    expect(flows.filter((flow) => flow.bittorrent)).toEqual([]);
  });

  it.each([
    'Transmission/3.00',
    'qBittorrent/4.5.2',
    'libtorrent/2.0.8.0',
    'rtorrent/0.9.8/0.13.8',
    'uTorrent/3550(46096)',
    'uTorrentMac/1870(43796)',
    'µTorrent/2210(25302)',
    'BTWebClient/3550(46096)',
    'BitTorrent/7.10.5',
    'Deluge/2.0.3 libtorrent/2.0.8.0',
    'Deluge 1.3.15',
    'Azureus 5.7.6.0;Windows 10;Java 1.8.0_191',
    'BiglyBT 3.2.0.0;Linux;Java 11.0.19',
    'BitComet/2.04',
    'KTorrent/5.0.1',
    'Enhanced-CTorrent/dnh3.3.2',
    'WebTorrent/2.1.0 (https://webtorrent.io)',
  ])('matches a GET from %s', (userAgent) => {
    expect(verdictOf(webSeedGet(userAgent))).toBe(VERDICT_BITTORRENT);
  });

  it.each([
    ['a lower-case header name', request('/a.bin', 'user-agent: Transmission/4.0.5\r\n')],
    ['an upper-case header name and no blank', request('/a.bin', 'USER-AGENT:qBittorrent/4.6.5\r\n')],
    ['a BEP 17 seed request', request(`/seed?info_hash=${HASH}&piece=12&ranges=0-16383`, 'Accept: */*\r\n')],
    ["Vuze's web seed path", request(`/webseed?info_hash=${HASH}`, '')],
    ["BitComet's persistent seed", request(`/data?fid=${'0123456789abcdef0123'.repeat(2)}&size=1048576`, 'User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)\r\n')],
  ])('matches %s', (_name, bytes) => {
    expect(verdictOf(bytes)).toBe(VERDICT_BITTORRENT);
  });

  it('reads the rest of a header block cut by the first segment', () => {
    const bytes = webSeedGet('Transmission/3.00');
    const text = Buffer.from(bytes).toString('latin1');
    for (const cut of [text.indexOf('Range'), text.indexOf('65536'), text.indexOf('User-Agent')]) {
      const conversation = new Conversation({ detectors: DETECTORS, serverPort: 80 });
      expect(conversation.send(0, bytes.subarray(0, cut))).toBe(VERDICT_UNDECIDED);
      expect(conversation.send(0, bytes.subarray(cut))).toBe(VERDICT_BITTORRENT);
    }
  });

  it.each([
    ['a browser download', webSeedGet('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36')],
    ['curl', webSeedGet('curl/8.4.0')],
    ['wget', webSeedGet('Wget/1.21.3')],
    ['aria2, which downloads anything', webSeedGet('aria2/1.36.0')],
    ['a client name later in the User-Agent', webSeedGet('Mozilla/5.0 (compatible; Transmission/3.00)')],
    ['a client name without a version', webSeedGet('Transmission/')],
    ['a remote-control GUI', webSeedGet('Transmission Remote GUI 5.18')],
    ['a look-alike product name', webSeedGet('TransmissionBT/1.0')],
    ['a look-alike header name', request('/a.bin', 'X-User-Agent: qBittorrent/4.5.2\r\n')],
    ['a client User-Agent on a POST (Transmission RPC)', request('/transmission/rpc', 'User-Agent: Transmission/3.00\r\n', 'POST')],
    ['a REST API call with a hash', request('/api/v1/blobs?hash=5d41402abc4b2a76b972&piece=3', 'Accept: application/json\r\n')],
    ['a 40-hex-digit info_hash with a piece', request(`/seed?info_hash=${'ab'.repeat(20)}&piece=1`, '')],
    ['a short BitComet fid', request('/data?fid=abc&size=1', '')],
    ['no User-Agent at all', request('/a.bin', 'Range: bytes=0-1\r\n')],
  ])('does not match %s', (_name, bytes) => {
    expect(verdictOf(bytes)).not.toBe(VERDICT_BITTORRENT);
  });

  it('looks at the first request of a flow only', () => {
    const first = webSeedGet('curl/8.4.0');
    const conversation = new Conversation({ detectors: DETECTORS, serverPort: 80 });
    conversation.send(0, first);
    conversation.send(1, ascii('HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\n\r\n'));
    expect(conversation.send(0, webSeedGet('Transmission/3.00'))).not.toBe(VERDICT_BITTORRENT);
  });

  it('does not look at responses', () => {
    const conversation = new Conversation({ detectors: DETECTORS, serverPort: 80 });
    expect(conversation.send(1, ascii('HTTP/1.1 200 OK\r\nServer: Transmission/3.00\r\n\r\n'))).not.toBe(VERDICT_BITTORRENT);
  });

  describe('properties', () => {
    const header = fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,16}$/), fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 }));
    const userAgent = fc.oneof(
      fc.constantFrom(
        'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
        'curl/8.4.0',
        'Wget/1.21.3',
        'aria2/1.36.0',
        'okhttp/4.12.0',
        'Dalvik/2.1.0 (Linux; U; Android 13)',
        'python-requests/2.31.0',
        'Go-http-client/1.1',
        'Valve/Steam HTTP Client 1.0',
      ),
      fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
    );
    const webRequest = fc
      .tuple(fc.stringMatching(/^\/[A-Za-z0-9._~\/-]{0,30}(\?[A-Za-z0-9=&%._-]{0,40})?$/), fc.array(header, { maxLength: 6 }), userAgent)
      .map(([target, headers, ua]) => request(target, `${headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}User-Agent: ${ua}\r\n`));

    it('never matches an ordinary web request', () => {
      const runner = new FlowRunner(httpBittorrentDetector);
      fc.assert(
        fc.property(webRequest, (bytes) => {
          expect(runner.run([{ dir: 0, payload: bytes }]).outcome).toBe(GIVE_UP);
        }),
      );
    });

    it('never throws nor reads outside the packet, whatever the segments', () => {
      const runner = new FlowRunner(httpBittorrentDetector);
      const seeds = [webSeedGet('Transmission/3.00'), request(`/seed?info_hash=${HASH}&piece=12`, ''), request(`/data?fid=${'ab'.repeat(20)}&size=1`, '')];
      const mutated = fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.nat()).map(([seed, flips, cut]) => {
        const bytes = seed.slice(0, 1 + (cut % seed.length));
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        return bytes;
      });
      const payload = fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 300 }), mutated, webRequest);
      fc.assert(
        fc.property(fc.array(fc.record({ dir: fc.constantFrom(0, 1), payload }), { minLength: 1, maxLength: 4 }), (datagrams) => {
          const result = runner.run(datagrams, true);
          expect(result.strayReads).toEqual([]);
          expect(result.strayStateWrites).toEqual([]);
          expect([MATCH, GIVE_UP, 0]).toContain(result.outcome);
        }),
      );
    });
  });
});
