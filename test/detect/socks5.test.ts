import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE, STRENGTH_ANNOUNCED, STRENGTH_CACHE, STRENGTH_EXACT, STRENGTH_RESPONSE } from '../../src/detect/detector.js';
import { dhtDetector } from '../../src/detect/dht.js';
import { handshakeDetector } from '../../src/detect/handshake.js';
import { signatureDetector } from '../../src/detect/signatures.js';
import { trackerSniDetector } from '../../src/detect/tracker-sni.js';
import { udpTrackerDetector } from '../../src/detect/udp-tracker.js';
import { createSocks5Detector } from '../../src/detect/socks5.js';
import { socks5ProxyDetector } from '../../src/detect/socks5-proxy.js';
import { DETECTORS, detectorChain } from '../../src/detect/registry.js';

const socks5Detector = DETECTORS.find((detector) => detector.name === 'socks5')!;
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram } from '../helpers/detector-run.js';
import { ascii, concat, u16, u32 } from '../helpers/frames.js';
import { listTo, listedTo, prove } from '../helpers/listed.js';
import { clientHello } from '../helpers/names.js';
import { overTcp } from '../helpers/tcp-stream.js';

const ROOT = resolve(import.meta.dirname, '../..');
const LAB_CAPTURE = join(ROOT, 'fixtures/names/socks5.pcap');

const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8), new Uint8Array(20).fill(7), ascii('-qB4650-012345678901'));
const DHT_PING = ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
const DHT_PONG = ascii('d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re');

const GREETING = [5, 1, 0];
const NO_AUTH = [5, 0];
const connect4 = [5, 1, 0, 1, 10, 0, 0, 3, ...u16(6881)];
const REPLY = [5, 0, 0, 1, 10, 0, 0, 2, ...u16(40000)];

const client = (...parts: (number[] | Uint8Array)[]): Datagram => ({ dir: 0, payload: concat(...parts) });
const server = (...parts: (number[] | Uint8Array)[]): Datagram => ({ dir: 1, payload: concat(...parts) });

const stream = (segments: Datagram[], detector = socks5Detector) => new FlowRunner(overTcp(detector)).run(segments, true);
const datagrams = (list: Datagram[]) => new FlowRunner(socks5Detector).run(list, true);

/** The four negotiation messages of a CONNECT without authentication. */
const NEGOTIATION = [client(GREETING), server(NO_AUTH), client(connect4), server(REPLY)];

/** A SOCKS5 UDP header for an IPv4 peer. */
const udpHeader = (port = 6881) => [0, 0, 0, 1, 10, 0, 0, 3, ...u16(port)];

describe("socks5 detector: the operator's names inside the tunnel", () => {
  it('takes TRACKER_DOMAINS for TLS, HTTP and DNS through the proxy, as outside', () => {
    const chain = detectorChain({ blockSocks: false, trackerDomains: ['private-tracker.example'] });
    const inner = chain.find((d) => d.name === 'socks5')!;
    const hello = [...NEGOTIATION, client(clientHello('announce.private-tracker.example'))];
    expect(stream(hello).outcome).not.toBe(MATCH);
    expect(stream(hello, inner).outcome).toBe(MATCH);
    const host = [...NEGOTIATION, client(ascii('GET / HTTP/1.1\r\nHost: private-tracker.example\r\n\r\n'))];
    expect(stream(host).outcome).not.toBe(MATCH);
    expect(stream(host, inner).outcome).toBe(MATCH);
    // DNS through UDP ASSOCIATE: the header names the resolver's port 53.
    const name = (label: string) => [label.length, ...ascii(label)];
    const question = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...name('private-tracker'), ...name('example'), 0, 0, 1, 0, 1];
    const dns = [client(udpHeader(53), question)];
    expect(datagrams(dns).outcome).not.toBe(MATCH);
    expect(new FlowRunner(inner).run(dns, true)).toMatchObject({ outcome: MATCH, strayReads: [] });
  });
});

describe('socks5 detector: CONNECT', () => {
  it.each([
    ['the BitTorrent handshake after a plain negotiation', [...NEGOTIATION, client(HANDSHAKE)]],
    ['the remote peer answering first', [...NEGOTIATION, server(HANDSHAKE)]],
    [
      'username/password authentication and a domain name',
      [client([5, 2, 0, 2]), server([5, 2]), client([1, 3], ascii('lab'), [3], ascii('pwd')), server([1, 0]), client([5, 1, 0, 3, 11], ascii('peer.lan.ex'), u16(6881)), server(REPLY), client(HANDSHAKE)],
    ],
    ['an IPv6 peer', [client(GREETING), server(NO_AUTH), client([5, 1, 0, 4, ...new Array<number>(15).fill(0), 1], u16(6881)), server([5, 0, 0, 4, ...new Array<number>(16).fill(0), 0, 80]), client(HANDSHAKE)]],
    ['greeting, request and handshake in one segment', [client(GREETING, connect4, HANDSHAKE), server(NO_AUTH, REPLY, HANDSHAKE)]],
    ['the handshake cut over two segments', [...NEGOTIATION, client(HANDSHAKE.subarray(0, 7)), client(HANDSHAKE.subarray(7))]],
    ['an HTTP tracker announce', [...NEGOTIATION, client(ascii('GET /announce?info_hash=%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a%8a&peer_id=-qB4650-012345678901&port=6881&uploaded=0&downloaded=0&left=0 HTTP/1.1\r\nHost: t.example:6969\r\n\r\n'))]],
    ['TLS to a tracker', [...NEGOTIATION, client(clientHello('tracker.opentrackr.org'))]],
    // A capture that began after the greeting: the first message seen is a later one, from either side.
    ['a negotiation seen from the method selection on', [server(NO_AUTH), client(connect4), server(REPLY), client(HANDSHAKE)]],
    ['a negotiation seen from the request on', [client(connect4), server(REPLY), server(HANDSHAKE)]],
    ['a negotiation seen from the reply on', [server(REPLY), client(HANDSHAKE)]],
  ])('matches %s', (_name, segments) => {
    const result = stream(segments);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
    expect(result.strayStateWrites).toEqual([]);
  });

  it('reads a flow seen from a later negotiation message as the client greeting would have been read', () => {
    // A method selection asks for authentication next; a refusal and a failed reply open no tunnel.
    expect(stream([server([5, 2]), client([1, 3], ascii('lab'), [3], ascii('pwd')), server([1, 0]), client(connect4), server(REPLY), client(HANDSHAKE)]).outcome).toBe(MATCH);
    expect(stream([server([5, 0xff]), client(HANDSHAKE)]).outcome).toBe(GIVE_UP);
    expect(stream([server([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]), client(HANDSHAKE)]).outcome).toBe(GIVE_UP);
    // A greeting stays a greeting: a tunnel follows only its answer.
    expect(stream([client(GREETING), client(HANDSHAKE)]).outcome).toBe(GIVE_UP);
  });

  it('decides a CONNECT towards a known peer at the request, as the engine decides a SYN', () => {
    // The client (10.0.0.1) asks the proxy for 10.0.0.3:6881 and nothing follows yet.
    const attempt = [client(GREETING), server(NO_AUTH), client([5, 1, 0, 1, 10, 0, 0, 3, ...u16(6881)])];
    const listedRunner = new FlowRunner(overTcp(socks5Detector));
    listTo(listedRunner, '10.0.0.3', 6881, '10.0.0.1');
    expect(listedRunner.run(attempt, true)).toMatchObject({ outcome: MATCH, decidedAt: 2, strength: STRENGTH_ANNOUNCED, strayReads: [] });
    const provenRunner = new FlowRunner(overTcp(socks5Detector));
    prove(provenRunner, '10.0.0.3', 6881);
    expect(provenRunner.run(attempt, true)).toMatchObject({ outcome: MATCH, strength: STRENGTH_CACHE });
    // Listed to another host only, or not at all: the request proves nothing.
    const elsewhere = new FlowRunner(overTcp(socks5Detector));
    listTo(elsewhere, '10.0.0.3', 6881, '10.0.0.9');
    expect(elsewhere.run(attempt, true).outcome).toBe(MORE);
    expect(stream(attempt).outcome).toBe(MORE);
  });

  it('runs the same detectors inside as outside: learned peers too', () => {
    // A datagram through the relay to a peer the tracker listed to this client: peer-cache, inside.
    const runner = new FlowRunner(socks5Detector);
    listTo(runner, '10.0.0.3', 6881, '10.0.0.1');
    expect(runner.run([client(udpHeader(), ascii('opaque bytes'))], true)).toMatchObject({ outcome: MATCH, strength: STRENGTH_ANNOUNCED });
    expect(new FlowRunner(socks5Detector).run([client(udpHeader(), ascii('opaque bytes'))], true).outcome).not.toBe(MATCH);
  });

  it('never calls its producer a peer: the other end is the proxy', () => {
    expect(socks5Detector.producerIsPeer).toBe(false);
    expect(socks5ProxyDetector.producerIsPeer).toBe(false);
    // The evidence is as strong as what the tunnel carried: a handshake is exact.
    expect(stream([...NEGOTIATION, client(HANDSHAKE)]).strength).toBe(STRENGTH_EXACT);
  });

  it.each([
    ['HTTP to an ordinary site', [...NEGOTIATION, client(ascii('GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n')), server(ascii('HTTP/1.1 200 OK\r\n\r\n'))]],
    ['TLS to an ordinary site', [...NEGOTIATION, client(clientHello('www.example.com')), server([0x16, 3, 3, 0, 4, 2, 0, 0, 0])]],
    ['a refused connection', [client(GREETING), server(NO_AUTH), client(connect4), server([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]), client(HANDSHAKE)]],
    ['no acceptable method', [client(GREETING), server([5, 0xff]), client(HANDSHAKE)]],
    ['a failed authentication', [client([5, 1, 2]), server([5, 2]), client([1, 1, 0x61, 1, 0x62]), server([1, 1]), client(HANDSHAKE)]],
    ['a UDP ASSOCIATE control connection', [client(GREETING), server(NO_AUTH), client([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]), server(REPLY)]],
    ['a BIND request', [client(GREETING), server(NO_AUTH), client([5, 2, 0, 1, 10, 0, 0, 3, 0, 21]), server(REPLY), client(HANDSHAKE)]],
    ['SOCKS4', [client([4, 1, ...u16(6881), 10, 0, 0, 3, 0]), server([0, 0x5a, 0, 0, 0, 0, 0, 0]), client(HANDSHAKE)]],
    ['a plain handshake (the handshake detector\'s job)', [client(HANDSHAKE)]],
    ['a greeting cut short', [client([5, 3, 0]), server(NO_AUTH), client(connect4), server(REPLY), client(HANDSHAKE)]],
  ])('does not match %s', (_name, segments) => {
    const result = stream(segments);
    expect(result.outcome).not.toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('never throws, reads outside the payload or writes outside its state', () => {
    const bytes = fc.uint8Array({ maxLength: 120 });
    const message = fc.oneof(bytes, fc.constantFrom(...[GREETING, NO_AUTH, connect4, REPLY, [1, 0], [5, 2]].map((m) => Uint8Array.from(m))), fc.constant(HANDSHAKE.subarray(0, 30)), fc.constant(DHT_PING));
    const segments = fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: message }), { minLength: 1, maxLength: 12 });
    const runner = new FlowRunner(overTcp(socks5Detector));
    fc.assert(
      fc.property(segments, (list) => {
        const result = runner.run([...NEGOTIATION, ...list], true);
        expect([MATCH, MORE, GIVE_UP]).toContain(result.outcome);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
        const unframed = runner.run(list, true);
        expect(unframed.strayReads).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('socks5 detector: UDP ASSOCIATE', () => {
  const utpSyn = [0x41, 0, ...u16(0x1234), ...u32(1), ...u32(0), ...u32(0x100000), ...u16(1), ...u16(0)];
  const utpState = [0x21, 0, ...u16(0x1234), ...u32(2), ...u32(5), ...u32(0x100000), ...u16(77), ...u16(1)];

  it.each([
    ['a DHT query', [client(udpHeader(), DHT_PING)]],
    ['a DHT response from the relay', [server(udpHeader(), DHT_PONG)]],
    ['a DHT query to an IPv6 node', [client([0, 0, 0, 4, ...new Array<number>(15).fill(0), 1, ...u16(6881)], DHT_PING)]],
    ['a DHT query to a named node', [client([0, 0, 0, 3, 9], ascii('node.lan.'), u16(6881), DHT_PING)]],
    ['a uTP connection', [client(udpHeader(), utpSyn), server(udpHeader(), utpState)]],
    ['a UDP tracker connect', [client(udpHeader(6969), [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4])]],
  ])('matches %s', (_name, list) => {
    const result = datagrams(list);
    expect(result.outcome).toBe(MATCH);
    expect(result.strayReads).toEqual([]);
    expect(result.strayStateWrites).toEqual([]);
  });

  it('lists the nodes a tunnelled DHT response names to the host behind the proxy', () => {
    const node = [...ascii('n'.repeat(20)), 10, 0, 0, 9, ...u16(51413)];
    const response = concat(ascii('d1:rd2:id20:mnopqrstuvwxyz1234565:nodes26:'), node, ascii('e1:t2:aa1:y1:re'));
    const runner = new FlowRunner(socks5Detector);
    expect(runner.run([server(udpHeader(), response)], true).outcome).toBe(MATCH);
    // The relay (10.0.0.2) sent the list to the client (10.0.0.1).
    expect(listedTo(runner, '10.0.0.9', 51413, '10.0.0.1')).toBe(true);
    expect(listedTo(runner, '10.0.0.9', 51413, '10.0.0.2')).toBe(false);
  });

  it('gives the strength of what it tunnelled: a uTP SYN answered through the relay is a response', () => {
    expect(datagrams([client(udpHeader(), utpSyn), server(udpHeader(), utpState)]).strength).toBe(STRENGTH_RESPONSE);
    expect(datagrams([client(udpHeader(), DHT_PING)]).strength).toBe(STRENGTH_EXACT);
  });

  it.each([
    ['a fragment (FRAG 1)', [client([0, 0, 1, 1, 10, 0, 0, 3, ...u16(6881)], DHT_PING)]],
    ['a non-zero reserved field', [client([1, 0, 0, 1, 10, 0, 0, 3, ...u16(6881)], DHT_PING)]],
    ['an unknown address type', [client([0, 0, 0, 2, 10, 0, 0, 3, ...u16(6881)], DHT_PING)]],
    ['a header and nothing else', [client(udpHeader())]],
    ['DNS through the relay', [client(udpHeader(53), [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])]],
    ['one uTP-shaped datagram alone', [client(udpHeader(), utpSyn)]],
    ['zeros', [client(new Array<number>(64).fill(0))]],
  ])('does not match %s', (_name, list) => {
    const result = datagrams(list);
    expect(result.outcome).not.toBe(MATCH);
    expect(result.strayReads).toEqual([]);
  });

  it('never throws, reads outside the payload or writes outside its state', () => {
    const data = fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.constant(DHT_PING), fc.constant(Uint8Array.from(utpSyn)));
    const header = fc.oneof(fc.constant(Uint8Array.from(udpHeader())), fc.uint8Array({ maxLength: 12 }), fc.constant(Uint8Array.from([0, 0, 0, 3, 200])));
    const list = fc.array(fc.record({ dir: fc.integer({ min: 0, max: 1 }), payload: fc.tuple(header, data).map(([h, d]) => concat(h, d)) }), { minLength: 1, maxLength: 8 });
    const runner = new FlowRunner(socks5Detector);
    fc.assert(
      fc.property(list, (flow) => {
        const result = runner.run(flow, true);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe.runIf(existsSync(LAB_CAPTURE))('socks5 detector on libtorrent behind a SOCKS5 proxy (fixtures/names/socks5.pcap)', () => {
  const flagged = (detector = socks5Detector) => scanCapture(LAB_CAPTURE, { detectors: [detector] }).flows.filter((f) => f.bittorrent);
  const isRelay = (responder: string) => responder.startsWith('10.79.0.2:') && responder !== '10.79.0.2:1080';

  it('matches every tunnel but the UDP ASSOCIATE control connection and a CONNECT the proxy refused', () => {
    const { flows } = scanCapture(LAB_CAPTURE, { detectors: [socks5Detector] });
    const toProxy = flows.filter((f) => f.responder === '10.79.0.2:1080');
    expect(toProxy.length).toBeGreaterThanOrEqual(8);
    // The refused one is libtorrent dialling its own address, which a DHT node had handed back to it.
    expect(toProxy.filter((f) => !f.bittorrent)).toHaveLength(2);
    expect(flows.filter((f) => isRelay(f.responder)).map((f) => f.bittorrent)).toEqual([true]);
  });

  it('finds what each tunnel carries with the inner detector made for it', () => {
    // One peer connection (username/password, then the BEP 3 handshake), HTTPS and HTTP announces, UDP tracker and DHT datagrams.
    expect(flagged(createSocks5Detector('socks5', [handshakeDetector, dhtDetector])).map((f) => f.responder)).toEqual(['10.79.0.2:1080']);
    expect(flagged(createSocks5Detector('socks5', [trackerSniDetector, dhtDetector])).length).toBeGreaterThanOrEqual(2);
    expect(flagged(createSocks5Detector('socks5', [signatureDetector, udpTrackerDetector])).some((f) => isRelay(f.responder))).toBe(true);
  });
});

describe('socks5-proxy detector (BLOCK_SOCKS)', () => {
  const ordinary = [...NEGOTIATION, client(ascii('GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n'))];

  it('matches a tunnel whatever it carries, where the BitTorrent rule does not', () => {
    expect(stream(ordinary).outcome).not.toBe(MATCH);
    expect(stream(ordinary, socks5ProxyDetector).outcome).toBe(MATCH);
    expect(new FlowRunner(socks5ProxyDetector).run([{ dir: 0, payload: concat(udpHeader(), ascii('hello')) }], true).outcome).toBe(MATCH);
  });

  it('does not match a negotiation that never opens a tunnel, nor what is not SOCKS5', () => {
    expect(stream([client(GREETING), server([5, 0xff]), client(ascii('GET /'))], socks5ProxyDetector).outcome).not.toBe(MATCH);
    expect(stream([client(ascii('GET / HTTP/1.1\r\n\r\n'))], socks5ProxyDetector).outcome).not.toBe(MATCH);
  });

  it('joins the chain only with BLOCK_SOCKS, right after the BitTorrent-in-SOCKS5 rule', () => {
    expect(detectorChain({ blockSocks: false })).toBe(DETECTORS);
    const names = detectorChain({ blockSocks: true }).map((d) => d.name);
    expect(names.indexOf('socks5-proxy')).toBe(names.indexOf('socks5') + 1);
    expect(names).toHaveLength(DETECTORS.length + 1);
  });
});
