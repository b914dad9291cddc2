import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, STRENGTH_EXACT } from '../../src/detect/detector.js';
import { httpTrackerDetector } from '../../src/detect/http-tracker.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner } from '../helpers/detector-run.js';
import { ascii, concat } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import { bencode, compactPeers, Conversation } from '../helpers/peer-wire.js';

const FIXTURES = resolve(import.meta.dirname, '../../fixtures/bt-http');
const DETECTORS = [httpTrackerDetector];

const INFO_HASH = Uint8Array.from({ length: 20 }, (_, i) => (i * 47 + 3) & 0xff);
const PEER_ID = ascii('-TR3000-a1b2c3d4e5f6');
const RANDOM_PEER_ID = Uint8Array.from({ length: 20 }, (_, i) => (i * 91 + 200) & 0xff);

/** Percent-encodes bytes the way clients do: unreserved characters kept unless `all`. */
function urlencode(bytes: Uint8Array, upper = false, all = false): string {
  let out = '';
  for (const byte of bytes) {
    const char = String.fromCharCode(byte);
    if (!all && /[A-Za-z0-9\-._~]/.test(char)) out += char;
    else out += `%${upper ? byte.toString(16).padStart(2, '0').toUpperCase() : byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

const HASH_PARAM = `info_hash=${urlencode(INFO_HASH)}`;
const PEER_PARAM = `peer_id=${urlencode(PEER_ID)}`;
const ANNOUNCE_QUERY = `${HASH_PARAM}&${PEER_PARAM}&port=51413&uploaded=0&downloaded=0&left=1048576&compact=1&event=started`;

function get(target: string, headers = 'User-Agent: curl/8.4.0\r\nAccept: */*\r\n'): Uint8Array {
  return ascii(`GET ${target} HTTP/1.1\r\nHost: tracker.example:6969\r\n${headers}\r\n`);
}

function ok(body: Uint8Array, headers = 'Content-Type: text/plain\r\n'): Uint8Array {
  return concat(ascii(`HTTP/1.1 200 OK\r\n${headers}Content-Length: ${body.length}\r\n\r\n`), body);
}

const PEERS = ['203.0.113.7:51413', '198.51.100.20:6881', '192.0.2.33:40001'];
const PEERS6 = ['[2001:db8::7]:51413', '[2001:db8:1::20]:6881'];
const COMPACT_BODY = bencode({ complete: 3, incomplete: 1, interval: 1800, 'min interval': 900, peers: compactPeers(...PEERS) });

/** Sends the request and then the response segments; returns the conversation. */
function exchange(request: Uint8Array, ...response: Uint8Array[]): Conversation {
  const conversation = new Conversation({ detectors: DETECTORS, serverPort: 6969 });
  conversation.send(0, request);
  for (const segment of response) conversation.send(1, segment);
  return conversation;
}

function verdictOf(...segments: [0 | 1, Uint8Array][]): number {
  const conversation = new Conversation({ detectors: DETECTORS, serverPort: 6969 });
  let verdict = VERDICT_UNDECIDED;
  for (const [dir, bytes] of segments) verdict = conversation.send(dir, bytes);
  return verdict;
}

/** Whether the endpoint ("address:port", "[address]:port") is listed to `host`: by default the Conversation's client. */
function knows(engine: Engine, endpoint: string, host = '10.0.0.1'): boolean {
  const colon = endpoint.lastIndexOf(':');
  const address = endpoint.slice(0, colon);
  const port = Number(endpoint.slice(colon + 1));
  return listedTo(engine, address.startsWith('[') ? address.slice(1, -1) : address, port, host);
}

describe('http-tracker detector (BEP 3, 7, 23, 48)', () => {
  const captures = readdirSync(FIXTURES).filter((name) => /^(announce|scrape)-/.test(name));

  it.each(captures)('matches every tracker flow of the lab capture %s', (name) => {
    const { flows, engine } = scanCapture(join(FIXTURES, name), { detectors: DETECTORS });
    expect(flows.length).toBeGreaterThanOrEqual(1);
    for (const flow of flows) {
      expect(flow).toMatchObject({ bittorrent: true, rule: 'http-tracker', payloadPackets: 1 });
    }
    if (name.startsWith('announce-')) {
      // The seeder the tracker listed to the client (10.77.0.2), and the client's own listening
      // endpoint from its port= parameter, listed to the tracker (10.77.0.1) it announced to.
      expect(knows(engine, '10.77.0.1:51413', '10.77.0.2')).toBe(true);
      expect(knows(engine, '10.77.0.2:51413', '10.77.0.1')).toBe(true);
      expect(knows(engine, '10.77.0.1:51413', '10.77.0.3')).toBe(false);
    }
    // A tracker's bytes never prove anyone a peer.
    expect(engine.proven.inserts).toBe(0);
  });

  it('is exact evidence that never names its producer a peer, be it the announcing client or the tracker', () => {
    expect(httpTrackerDetector.strength).toBe(STRENGTH_EXACT);
    expect(httpTrackerDetector.producerIsPeer).toBe(false);
    const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`));
    const flow = engine.lastFlow;
    expect(engine.ruleNames[engine.flows.rule[flow]]).toBe('http-tracker');
    expect(engine.strengthName(flow)).toBe('exact');
    expect(engine.flows.producer[flow]).toBe(0);
    expect(engine.producerIsPeer(engine.flows.rule[flow])).toBe(false);
  });

  it.each([
    ['an announce, libtorrent style', get(`/announce?${ANNOUNCE_QUERY}`)],
    ['an announce with upper-case escapes', get(`/announce?info_hash=${urlencode(INFO_HASH, true)}&peer_id=${urlencode(PEER_ID, true)}&port=6881`)],
    ['an announce with every byte escaped', get(`/announce?info_hash=${urlencode(INFO_HASH, false, true)}&peer_id=${urlencode(PEER_ID, false, true)}&port=6881`)],
    ['an announce through an HTTP proxy', get(`http://tracker.example:6969/announce?${ANNOUNCE_QUERY}`)],
    ['a private tracker with a passkey path', get(`/a1b2c3d4e5f60718/announce?${ANNOUNCE_QUERY}`)],
    ['a private tracker with a passkey parameter', get(`/announce.php?passkey=0123456789abcdef&${ANNOUNCE_QUERY}`)],
    ['info_hash and port only', get(`/announce?${HASH_PARAM}&port=6881`)],
    ['info_hash and an unknown peer_id only', get(`/announce?${HASH_PARAM}&peer_id=${urlencode(RANDOM_PEER_ID)}`)],
    ['parameters in another order', get(`/announce?port=6881&compact=1&${PEER_PARAM}&${HASH_PARAM}`)],
    ['an HTTP/1.0 request line with no headers', ascii(`GET /announce?${ANNOUNCE_QUERY} HTTP/1.0\r\n\r\n`)],
    ['a scrape', get(`/scrape?${HASH_PARAM}`)],
    ['a scrape of two torrents under a passkey', get(`/x9y8/scrape.php?${HASH_PARAM}&info_hash=${urlencode(RANDOM_PEER_ID)}`)],
  ])('matches %s', (_name, request) => {
    expect(verdictOf([0, request])).toBe(VERDICT_BITTORRENT);
  });

  it('matches over IPv6', () => {
    const conversation = new Conversation({ detectors: DETECTORS, client: '2001:db8::1', server: '2001:db8::2', serverPort: 6969 });
    expect(conversation.send(0, get(`/announce?${ANNOUNCE_QUERY}`))).toBe(VERDICT_BITTORRENT);
    expect(conversation.rule()).toBe('http-tracker');
  });

  it.each([
    ['a search with info and hash in its query', get('/search?q=info_hash+torrent&hash=9f86d081884c7d659a2f&info=1')],
    ['a 40-hex-digit info_hash', get(`/api/torrents?info_hash=${'ab'.repeat(20)}&port=8080&peer_id=${urlencode(PEER_ID)}`)],
    ['a 32-character base32 info_hash', get(`/magnet?info_hash=${'A'.repeat(32)}&port=8080`)],
    ['a 19-byte info_hash', get(`/announce?info_hash=${urlencode(INFO_HASH.subarray(1))}&${PEER_PARAM}&port=6881`)],
    ['a 21-byte info_hash', get(`/announce?info_hash=${urlencode(concat(INFO_HASH, [1]))}&${PEER_PARAM}&port=6881`)],
    ['one bad info_hash among good ones', get(`/scrape?${HASH_PARAM}&info_hash=abc`)],
    ['a bad escape in the info_hash', get(`/announce?info_hash=%zz${urlencode(INFO_HASH.subarray(1))}&${PEER_PARAM}&port=6881`)],
    ['peer_id and port without info_hash', get(`/announce?peer_id=${urlencode(RANDOM_PEER_ID)}&port=6881&left=0`)],
    ['a scrape path without info_hash', get('/scrape?page=2')],
    ['an info_hash alone, not on a scrape path', get(`/torrent?${HASH_PARAM}&format=json`)],
    ['an out-of-range port', get(`/announce?${HASH_PARAM}&port=65536`)],
    ['a REST API call', get('/api/v1/items?id=42&page=2&port=8080&hash=5d41402abc4b2a76b972', 'Accept: application/json\r\nAuthorization: Bearer abc.def\r\n')],
    [
      'a browser page load',
      get('/index.html?utm_source=feed&utm_medium=rss', 'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html\r\n'),
    ],
    ['a POST to an announce URL', ascii(`POST /announce?${ANNOUNCE_QUERY} HTTP/1.1\r\nHost: t\r\n\r\n`)],
    ['the announce parameters after a fragment mark', get(`/page#?${ANNOUNCE_QUERY}`)],
  ])('does not match %s', (_name, request) => {
    expect(verdictOf([0, request], [1, ok(ascii('{"ok":true}'), 'Content-Type: application/json\r\n')])).not.toBe(VERDICT_BITTORRENT);
  });

  it('decides a request split anywhere in its query once the rest arrives', () => {
    const request = get(`/announce?${ANNOUNCE_QUERY}`);
    const query = ascii('GET /announce?').length;
    for (let cut = query; cut < request.length; cut++) {
      expect(verdictOf([0, request.subarray(0, cut)], [0, request.subarray(cut)]), `cut at ${cut}`).toBe(VERDICT_BITTORRENT);
    }
  });

  it('waits for the rest of a request cut inside its first parameter', () => {
    const request = get(`/announce?${ANNOUNCE_QUERY}`);
    const cut = ascii('GET /announce?info_hash=%').length;
    const conversation = new Conversation({ detectors: DETECTORS, serverPort: 6969 });
    expect(conversation.send(0, request.subarray(0, cut))).toBe(VERDICT_UNDECIDED);
    expect(conversation.send(0, request.subarray(cut))).toBe(VERDICT_BITTORRENT);
  });

  describe('the answer without its request', () => {
    const serverFirst = (...segments: Uint8Array[]) => verdictOf(...segments.map((bytes): [0 | 1, Uint8Array] => [1, bytes]));

    it.each([
      ['compact IPv4 peers', ok(COMPACT_BODY)],
      ['compact IPv6 peers (BEP 7)', ok(bencode({ interval: 1800, peers: new Uint8Array(0), peers6: compactPeers(...PEERS6) }))],
      ['a list of peer dictionaries', ok(bencode({ interval: 900, peers: [{ ip: '203.0.113.7', 'peer id': PEER_ID, port: 51413 }] }))],
      ['an empty peer list', ok(bencode({ interval: 1800, peers: new Uint8Array(0) }))],
      ['a chunked body', concat(ascii('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), ascii(`${COMPACT_BODY.length.toString(16)}\r\n`), COMPACT_BODY, ascii('\r\n0\r\n\r\n'))],
    ])('matches a tracker answer with %s', (_name, response) => {
      expect(serverFirst(response)).toBe(VERDICT_BITTORRENT);
    });

    it('matches when the body comes in the segment after the headers', () => {
      const response = ok(COMPACT_BODY);
      const headers = response.length - COMPACT_BODY.length;
      expect(serverFirst(response.subarray(0, headers), response.subarray(headers))).toBe(VERDICT_BITTORRENT);
    });

    it.each([
      ['a JSON body', ok(ascii('{"interval":1800,"peers":[]}'))],
      ['a .torrent file', ok(bencode({ announce: 'http://tracker.example/announce', info: { length: 1, name: 'a', 'piece length': 16384, pieces: new Uint8Array(20) } }))],
      ['an interval without peers', ok(bencode({ interval: 1800, 'tracker id': 'x' }))],
      ['peers without an interval', ok(bencode({ peers: compactPeers(...PEERS) }))],
      ['a peer string of the wrong length', ok(bencode({ interval: 1800, peers: new Uint8Array(7) }))],
      ['an interval that is not an integer', ok(bencode({ interval: '1800', peers: compactPeers(...PEERS) }))],
      ['a failure reason', ok(bencode({ 'failure reason': 'unregistered torrent' }))],
      ['a 404 with a tracker body', concat(ascii('HTTP/1.1 404 Not Found\r\n\r\n'), COMPACT_BODY)],
      ['an HTML page', ok(ascii('<!doctype html><html><body>d8:intervali1800e5:peers0:e</body></html>'))],
    ])('does not match %s', (_name, response) => {
      expect(serverFirst(response)).not.toBe(VERDICT_BITTORRENT);
    });

    it('does not judge the answer to a request it saw', () => {
      expect(verdictOf([0, get('/status')], [1, ok(COMPACT_BODY)])).not.toBe(VERDICT_BITTORRENT);
    });

    it('does not take a retransmitted header segment for the body', () => {
      const response = ok(COMPACT_BODY);
      const headers = response.subarray(0, response.length - COMPACT_BODY.length);
      const conversation = new Conversation({ detectors: DETECTORS, serverPort: 6969 });
      conversation.send(1, headers);
      expect(conversation.send(1, headers, 0)).not.toBe(VERDICT_BITTORRENT);
    });
  });

  describe('learning peers', () => {
    it('lists the compact peers of the answer to the client, and the client announced port to the tracker', () => {
      const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`), ok(COMPACT_BODY));
      for (const peer of PEERS) expect(knows(engine, peer)).toBe(true);
      for (const peer of PEERS) expect(knows(engine, peer, '10.0.0.2')).toBe(false);
      expect(knows(engine, '10.0.0.1:51413', '10.0.0.2')).toBe(true);
      expect(knows(engine, '10.0.0.1:51413')).toBe(false);
      // The tracker is infrastructure, not a peer.
      expect(knows(engine, '10.0.0.2:6969')).toBe(false);
      expect(engine.announced.inserts).toBe(PEERS.length + 1);
    });

    it('caches the peers of an answer seen without its request', () => {
      const conversation = new Conversation({ detectors: DETECTORS, serverPort: 6969 });
      expect(conversation.send(1, ok(COMPACT_BODY))).toBe(VERDICT_BITTORRENT);
      for (const peer of PEERS) expect(knows(conversation.engine, peer)).toBe(true);
    });

    it('follows compact lists across segments, losing only the entry cut in two', () => {
      const peers = Array.from({ length: 10 }, (_, i) => `203.0.113.${i + 1}:${20000 + i}`);
      const peers6 = Array.from({ length: 10 }, (_, i) => `[2001:db8::${i + 1}]:${30000 + i}`);
      const body = bencode({ interval: 1800, peers: compactPeers(...peers), peers6: compactPeers(...peers6) });
      const response = ok(body);
      const text = Buffer.from(response).toString('latin1');
      // Cuts inside the 5th IPv4 entry and inside the 4th IPv6 entry.
      const cuts = [text.indexOf('5:peers60:') + 10 + 6 * 4 + 3, text.indexOf('6:peers6180:') + 12 + 18 * 3 + 7];
      const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`), response.subarray(0, cuts[0]), response.subarray(cuts[0], cuts[1]), response.subarray(cuts[1]));
      const learned = [...peers, ...peers6].filter((peer) => knows(engine, peer));
      const lost = [...peers, ...peers6].filter((peer) => !knows(engine, peer));
      expect(lost).toHaveLength(2);
      expect(learned).toHaveLength(18);
    });

    it('stops learning at a retransmission instead of reading it as peers', () => {
      const peers = Array.from({ length: 30 }, (_, i) => `203.0.113.${i + 1}:${20000 + i}`);
      const response = ok(bencode({ interval: 1800, peers: compactPeers(...peers) }));
      const cut = 200;
      const conversation = exchange(get(`/announce?${ANNOUNCE_QUERY}`), response.subarray(0, cut));
      const inserts = conversation.engine.announced.inserts;
      conversation.send(1, response.subarray(0, cut), 0);
      conversation.send(1, response.subarray(cut), cut);
      expect(conversation.engine.announced.inserts).toBe(inserts);
    });

    it('reads a chunked answer from its first segment only', () => {
      const peers = Array.from({ length: 30 }, (_, i) => `203.0.113.${i + 1}:${20000 + i}`);
      const body = bencode({ interval: 1800, peers: compactPeers(...peers) });
      const response = concat(ascii('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), ascii(`${body.length.toString(16)}\r\n`), body, ascii('\r\n0\r\n\r\n'));
      const cut = 150;
      const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`), response.subarray(0, cut), response.subarray(cut));
      const learned = peers.filter((peer) => knows(engine, peer)).length;
      expect(learned).toBeGreaterThan(10);
      expect(learned).toBeLessThan(30);
    });

    it('caches dotted-quad peers from a list of dictionaries', () => {
      const body = bencode({
        interval: 1800,
        peers: [
          { ip: '203.0.113.9', 'peer id': PEER_ID, port: 51413 },
          { ip: 'seed.example', 'peer id': PEER_ID, port: 6881 },
          { ip: '2001:db8::9', 'peer id': PEER_ID, port: 6881 },
          { ip: '198.51.100.300', port: 6881 },
        ],
      });
      const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`), ok(body));
      expect(knows(engine, '203.0.113.9:51413')).toBe(true);
      expect(engine.announced.inserts).toBe(2);
    });

    it('learns nothing from a failure', () => {
      const { engine } = exchange(get(`/announce?${ANNOUNCE_QUERY}`), ok(bencode({ 'failure reason': 'not registered' })));
      expect(engine.announced.inserts).toBe(1);
    });
  });

  describe('properties', () => {
    const requests = [get(`/announce?${ANNOUNCE_QUERY}`), get(`/scrape?${HASH_PARAM}`)];
    const responses = [ok(COMPACT_BODY), ok(bencode({ interval: 5, peers6: compactPeers(...PEERS6), peers: [{ ip: '203.0.113.9', port: 1 }] }))];
    const mutated = (seeds: Uint8Array[]) =>
      fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.nat()).map(([seed, flips, cut]) => {
        const bytes = seed.slice(0, 1 + (cut % seed.length));
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        return bytes;
      });
    const payload = fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 300 }), mutated(requests), mutated(responses));

    it('never throws nor reads outside the packet, whatever the segments', () => {
      const runner = new FlowRunner(httpTrackerDetector);
      fc.assert(
        fc.property(fc.array(fc.record({ dir: fc.constantFrom(0, 1), payload }), { minLength: 1, maxLength: 10 }), (datagrams) => {
          const result = runner.run(datagrams, true);
          expect(result.strayReads).toEqual([]);
          expect(result.strayStateWrites).toEqual([]);
        }),
      );
    });

    const webName = fc.constantFrom('q', 'id', 'hash', 'info', 'infohash', 'info-hash', 'peer', 'ports', 'page', 'token', 'utm_source', 'session', 'sig');
    const webValue = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789%-_.~+ABCDEF'.split('')), maxLength: 40 });
    const webRequest = fc
      .tuple(fc.array(fc.stringMatching(/^[a-z0-9._-]{1,12}$/), { maxLength: 4 }), fc.array(fc.tuple(webName, webValue), { maxLength: 8 }))
      .map(([segments, params]) => get(`/${segments.join('/')}?${params.map(([name, value]) => `${name}=${value}`).join('&')}`));

    it('never matches a web request without tracker parameters', () => {
      const runner = new FlowRunner(httpTrackerDetector);
      fc.assert(
        fc.property(webRequest, (request) => {
          expect(runner.run([{ dir: 0, payload: request }]).outcome).toBe(GIVE_UP);
        }),
      );
    });

    it('matches an announce of any parameter order and extras, however its query is cut', () => {
      const runner = new FlowRunner(httpTrackerDetector);
      const extra = fc.tuple(webName, webValue).map(([name, value]) => `${name}=${value}`);
      fc.assert(
        fc.property(fc.uint8Array({ minLength: 20, maxLength: 20 }), fc.shuffledSubarray([HASH_PARAM, PEER_PARAM, 'port=6881', 'left=0', 'compact=1'], { minLength: 5 }), fc.array(extra, { maxLength: 3 }), fc.nat(), (hash, params, extras, cut) => {
          const query = [...params.map((p) => (p === HASH_PARAM ? `info_hash=${urlencode(hash)}` : p)), ...extras].join('&');
          const request = get(`/announce?${query}`);
          const start = ascii('GET /announce?').length;
          const at = start + (cut % (request.length - start));
          const result = runner.run([{ dir: 0, payload: request.subarray(0, at) }, { dir: 0, payload: request.subarray(at) }]);
          expect(result.outcome).toBe(MATCH);
        }),
      );
    });
  });
});
