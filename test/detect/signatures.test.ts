import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH } from '../../src/detect/detector.js';
import { signatureDetector } from '../../src/detect/signatures.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram } from '../helpers/detector-run.js';
import { ascii, concat, u32 } from '../helpers/frames.js';
import { overTcp } from '../helpers/tcp-stream.js';

const ROOT = resolve(import.meta.dirname, '../..');
const CORPUS = resolve(ROOT, '../shared/corpus/ndpi');
const BITTORRENT_CAPTURES = new Set(['bittorrent.pcap', 'bittorrent_utp.pcap', 'bt_search.pcap', 'targusdataspeed_false_positives.pcap', 'tls_torrent.pcapng']);

const HASH = '\x8a'.repeat(20);
const NODE_ID = 'abcdefghij0123456789';

const run = (datagrams: Datagram[]) => new FlowRunner(signatureDetector).run(datagrams, true);
const runTcp = (segments: Datagram[]) => new FlowRunner(overTcp(signatureDetector)).run(segments, true);
const one = (payload: Uint8Array, dir = 0) => run([{ dir, payload }]);

function http(head: string, body = ''): Uint8Array {
  return ascii(`${head}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
}

describe('signature detector', () => {
  it.each([
    ['a DHT get_peers query behind a 4-byte prefix', concat(u32(7), ascii(`d1:ad2:id20:${NODE_ID}9:info_hash20:${HASH}e1:q9:get_peers1:t2:aa1:y1:qe`))],
    ['a DHT response with values', ascii(`d2:ip6:\x0a\x00\x00\x01\x1a\xe11:rd2:id20:${NODE_ID}5:token2:xy6:valuesl6:\x0a\x00\x00\x02\x1a\xe1ee1:t2:aa1:y1:re`)],
    ['a .torrent served over HTTP', http('HTTP/1.1 200 OK\r\nContent-Type: application/x-bittorrent', `d8:announce35:http://tracker.example:6969/announce4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:${HASH}ee`)],
    ['a .torrent behind an unhelpful content type', http('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream', `d13:creation datei1700000000e4:infod5:filesle`)],
    ['a v2 .torrent', ascii(`d4:infod9:file treed1:ad0:d6:lengthi1e11:pieces root32:${HASH}${HASH.slice(0, 12)}eee12:meta versioni2eee`)],
    ['an HTTP tracker answer', http('HTTP/1.1 200 OK', 'd8:intervali1800e5:peers0:e')],
    ['an HTTP tracker failure', http('HTTP/1.0 200 OK', 'd14:failure reason13:not registerede')],
    ['an HTTP announce behind a proxy', ascii(`GET http://t.example/announce.php?passkey=x&info_hash=%8a%8a&peer_id=-qB4650-&port=6881 HTTP/1.1\r\n\r\n`)],
    ['a BEP 10 extension handshake without its BEP 3 handshake', ascii('d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei4096e1:pi6881e4:reqqi500e1:v10:qBit 4.6.0e')],
    ['a BEP 9 metadata request', concat(u32(27), [20, 2], ascii('d8:msg_typei0e5:piecei0ee'))],
    ['a BEP 11 PEX message', concat(u32(30), [20, 1], ascii('d5:added6:\x0a\x00\x00\x02\x1a\xe17:added.f1:\x00e'))],
    ['a handshake after an obfuscating prefix', concat([0x05, 0x00], [19], ascii('BitTorrent protocol'))],
    ['a UDP tracker connect inside other framing', concat([0, 0, 0, 1, 10, 0, 0, 2, 0x1a, 0xe1], [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4])],
    ['a magnet link sent to a web UI', http('POST /api/v2/torrents/add HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded', `urls=magnet:?xt=urn:btih:${'c'.repeat(40)}`)],
    ['a v2 magnet link in a request', ascii(`GET /add?uri=magnet:?xt=urn:btmh:1220${'d'.repeat(64)} HTTP/1.1\r\n\r\n`)],
  ])('matches %s', (_name, payload) => {
    const result = one(payload);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('scans a TCP flow until the responder has sent its first payload packet, the initiator\'s first four at most', () => {
    const torrent = { dir: 1, payload: http('HTTP/1.1 200 OK\r\nContent-Type: application/x-bittorrent', 'd8:announce3:urle') };
    const request = { dir: 0, payload: ascii('GET /file.torrent HTTP/1.1\r\nHost: example.org\r\n\r\n') };
    const reply = { dir: 1, payload: ascii('HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n') };
    expect(runTcp([request, torrent]).outcome).toBe(MATCH);
    expect(runTcp([request, request, request, torrent]).outcome).toBe(MATCH);
    expect(runTcp([request, request, request, request, torrent]).outcome).toBe(GIVE_UP);
    expect(runTcp([request, reply, torrent])).toMatchObject({ outcome: GIVE_UP, decidedAt: 1 });
  });

  it('scans the first datagram of a UDP flow only: each is a whole message', () => {
    const dht = { dir: 1, payload: ascii(`d1:rd2:id20:${NODE_ID}e1:t2:aa1:y1:re`) };
    expect(run([dht]).outcome).toBe(MATCH);
    expect(run([{ dir: 0, payload: ascii('hello') }, dht])).toMatchObject({ outcome: GIVE_UP, decidedAt: 0 });
  });

  it('does not count a page listing magnet links: that is web browsing, not BitTorrent traffic', () => {
    const page = http('HTTP/1.1 200 OK\r\nContent-Type: text/html', `<a href="magnet:?xt=urn:btih:${'c'.repeat(40)}&dn=ubuntu">Ubuntu</a>`);
    expect(runTcp([{ dir: 0, payload: ascii('GET /search?q=ubuntu HTTP/1.1\r\n\r\n') }, { dir: 1, payload: page }]).outcome).toBe(GIVE_UP);
    expect(one(page, 0).outcome).toBe(MATCH);
  });

  it.each([
    ['an ordinary web page', http('HTTP/1.1 200 OK\r\nContent-Type: text/html', '<p>The announce list and the info dictionary are described in BEP 3; ask your tracker for its interval.</p>')],
    ['near misses of every kind', ascii('d1:ad2:id19: 1:rd2:id2:6:target19:7:added.x 4:info 8:announc 13:announce_list info_hash: urn:btih urn:sha1: 12:piece_length')],
    ['a JSON API answer', ascii('{"info_hash":"8a8a","announce":"udp://x","interval":1800,"complete":3}')],
    ['a DNS query for a tracker', Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, ...ascii('tracker'), 0, 0, 1, 0, 1])],
    ['zeros', new Uint8Array(1400)],
  ])('does not match %s', (_name, payload) => {
    expect(one(payload).outcome).toBe(GIVE_UP);
  });

  it('scans the first 64 bytes of a packet, and 1500 of one that starts an HTTP message', () => {
    const dht = ascii(`d1:ad2:id20:${NODE_ID}e1:q4:ping1:t2:aa1:y1:qe`);
    expect(one(concat(new Uint8Array(64 - 12), dht)).outcome).toBe(MATCH);
    expect(one(concat(new Uint8Array(64 - 11), dht)).outcome).toBe(GIVE_UP);
    const head = (length: number) => ascii(`HTTP/1.1 200 OK\r\nX-Filler: ${'x'.repeat(length - 31)}\r\n\r\n`);
    expect(head(1000).length).toBe(1000);
    expect(one(concat(head(1500 - 11), ascii('d8:announce3:urle'))).outcome).toBe(MATCH);
    expect(one(concat(head(1500 - 10), ascii('d8:announce3:urle'))).outcome).toBe(GIVE_UP);
    expect(one(concat(ascii('PUT '), new Uint8Array(1400), ascii('d8:announce3:urle'))).outcome).toBe(MATCH);
  });

  it('never throws or reads outside the payload, and random bytes never match', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: fc.uint8Array({ maxLength: 1600 }) }), { minLength: 1, maxLength: 5 }), (datagrams) => {
        for (const result of [run(datagrams), runTcp(datagrams)]) {
          expect(result.outcome).not.toBe(MATCH);
          expect(result.strayReads).toEqual([]);
        }
      }),
      { numRuns: 300 },
    );
  });

  it.runIf(existsSync(CORPUS))('flags nothing in the corpus but BitTorrent captures', () => {
    const flagged: string[] = [];
    for (const file of readdirSync(CORPUS).filter((f) => /\.(pcap|pcapng|cap)$/.test(f) && !BITTORRENT_CAPTURES.has(f))) {
      for (const f of scanCapture(join(CORPUS, file), { detectors: [signatureDetector] }).flows) if (f.bittorrent) flagged.push(`${file} ${f.responder}`);
    }
    expect(flagged).toEqual([]);
  });

  it.runIf(existsSync(CORPUS))('catches the peer and DHT flows of the corpus BitTorrent captures', () => {
    const caught = (file: string) => scanCapture(join(CORPUS, file), { detectors: [signatureDetector] }).flows.filter((f) => f.bittorrent).length;
    expect(caught('bittorrent.pcap')).toBe(24);
    expect(caught('targusdataspeed_false_positives.pcap')).toBe(2);
  });
});
