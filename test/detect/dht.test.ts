import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE, STRENGTH_EXACT } from '../../src/detect/detector.js';
import { dhtDetector } from '../../src/detect/dht.js';
import { peerCacheDetector } from '../../src/detect/peer-cache.js';
import { Engine, VERDICT_BITTORRENT } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram, type FlowEndpoints } from '../helpers/detector-run.js';
import { ascii, concat, ipv4Address, ipv6Address, packet4, PROTO_TCP, PROTO_UDP, tcp, u16, udp } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import {
  dhcpDiscover,
  dnsQuery,
  dnsResponse,
  dtlsClientHello,
  filler,
  quicInitial,
  rtpPacket,
  stunBindingRequest,
  stunBindingResponse,
  wireguardData,
  wireguardInitiation,
} from '../helpers/udp-lookalikes.js';

const ROOT = resolve(import.meta.dirname, '../..');
const LAB_CAPTURE = resolve(ROOT, 'fixtures/dht/lab.pcap');
const CORPUS_CAPTURE = resolve(ROOT, '../shared/corpus/ndpi/targusdataspeed_false_positives.pcap');

/** A bencoded value: integers, byte strings (a JS string is taken byte per char), lists, dictionaries. */
type Value = number | string | Uint8Array | Value[] | { [key: string]: Value } | Unsorted;

/** A dictionary written with its keys in the given order (bencoding wants them sorted). */
class Unsorted {
  constructor(readonly entries: [string, Value][]) {}
}

function bytesOf(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

function benc(value: Value): Uint8Array {
  if (typeof value === 'number') return ascii(`i${value}e`);
  if (typeof value === 'string') return benc(bytesOf(value));
  if (value instanceof Uint8Array) return concat(ascii(`${value.length}:`), value);
  if (Array.isArray(value)) return concat(ascii('l'), ...value.map(benc), ascii('e'));
  const entries = value instanceof Unsorted ? value.entries : Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return concat(ascii('d'), ...entries.flatMap(([key, item]) => [benc(key), benc(item)]), ascii('e'));
}

const NODE_ID = filler(20, 1);
const OTHER_ID = filler(20, 2);
const INFO_HASH = filler(20, 3);
const TOKEN = filler(8, 4);
const VERSION = concat(ascii('LT'), [0x02, 0x00]);

/** A compact IPv4 peer (BEP 5), IPv6 peer (BEP 32) or node (20-byte id, then the peer). */
function peer4(address: string, port: number): Uint8Array {
  return Uint8Array.from([...ipv4Address(address), ...u16(port)]);
}
function peer6(address: string, port: number): Uint8Array {
  return Uint8Array.from([...ipv6Address(address), ...u16(port)]);
}
function node(id: Uint8Array, peer: Uint8Array): Uint8Array {
  return concat(id, peer);
}

function query(method: string, args: { [key: string]: Value }, extra: { [key: string]: Value } = {}): Uint8Array {
  return benc({ a: { id: NODE_ID, ...args }, q: method, t: 'aa', y: 'q', ...extra });
}
function response(body: { [key: string]: Value }, extra: { [key: string]: Value } = {}): Uint8Array {
  return benc({ r: { id: OTHER_ID, ...body }, t: 'aa', y: 'r', ...extra });
}
function error(code: number, message: string): Uint8Array {
  return benc({ e: [code, message], t: 'aa', y: 'e' });
}

const MUTABLE_ITEM = { k: filler(32, 5), seq: 4, sig: filler(64, 6), v: 'Hello World!' };
const NODES = concat(node(filler(20, 7), peer4('198.51.100.7', 51413)), node(filler(20, 8), peer4('203.0.113.9', 6881)));
const NODES6 = node(filler(20, 9), peer6('2001:db8::77', 51413));

/** Messages from the BEPs, one of each kind, as their first datagram. */
const QUERIES: [string, Uint8Array][] = [
  ['ping (BEP 5)', query('ping', {})],
  ['find_node', query('find_node', { target: OTHER_ID })],
  ['get_peers', query('get_peers', { info_hash: INFO_HASH })],
  ['get_peers asking for both families (BEP 32)', query('get_peers', { info_hash: INFO_HASH, want: ['n4', 'n6'] })],
  ['get_peers with scrape and noseed (BEP 33)', query('get_peers', { info_hash: INFO_HASH, noseed: 1, scrape: 1 })],
  ['announce_peer with a port', query('announce_peer', { implied_port: 0, info_hash: INFO_HASH, port: 6881, token: TOKEN })],
  ['announce_peer with implied_port', query('announce_peer', { implied_port: 1, info_hash: INFO_HASH, port: 0, token: TOKEN })],
  ['get of an item (BEP 44)', query('get', { seq: 3, target: INFO_HASH })],
  ['put of an immutable item (BEP 44)', query('put', { token: TOKEN, v: 'Hello World!' })],
  ['put of a mutable item (BEP 44)', query('put', { ...MUTABLE_ITEM, cas: 3, salt: 'foobar', token: TOKEN })],
  ['sample_infohashes (BEP 51)', query('sample_infohashes', { target: OTHER_ID })],
  ['a read-only node query (BEP 43)', query('get_peers', { info_hash: INFO_HASH }, { ro: 1, v: VERSION })],
];

const RESPONSES: [string, Uint8Array][] = [
  ['ping or announce_peer response', response({})],
  ['find_node response with nodes', response({ nodes: NODES })],
  ['find_node response with nodes6 (BEP 32)', response({ nodes6: NODES6 })],
  ['get_peers response with values', response({ token: TOKEN, values: [peer4('192.0.2.50', 6881), peer6('2001:db8::50', 6881)] })],
  ['get_peers response with no values', response({ nodes: NODES, token: TOKEN, values: [] })],
  ['get_peers scrape response (BEP 33)', response({ BFpe: filler(256, 10), BFsd: filler(256, 11), token: TOKEN })],
  ['get response with a mutable item (BEP 44)', response({ ...MUTABLE_ITEM, nodes: NODES, nodes6: NODES6, token: TOKEN })],
  ['sample_infohashes response (BEP 51)', response({ interval: 21600, nodes: NODES, num: 1234, samples: concat(INFO_HASH, OTHER_ID) })],
  ['response with the requester address (BEP 42) and a version', response({ nodes: NODES }, { ip: peer4('192.0.2.1', 40000), v: VERSION })],
  ['generic error', error(201, 'A Generic Error Ocurred')],
  ['method unknown error', error(204, 'Method Unknown')],
];

function run(datagrams: Datagram[], endpoints?: FlowEndpoints) {
  return new FlowRunner(dhtDetector, endpoints).run(datagrams, true);
}

const IPV6_ENDPOINTS: FlowEndpoints = { family: 6, initiator: '2001:db8::1', initiatorPort: 6881, responder: '2001:db8::2', responderPort: 51413 };

describe('DHT detector (BEP 5 KRPC and extensions)', () => {
  it.each([...QUERIES, ...RESPONSES])('matches %s as the first datagram, from either side, over IPv4 and IPv6', (_name, message) => {
    for (const dir of [0, 1]) {
      for (const endpoints of [undefined, IPV6_ENDPOINTS]) {
        const outcome = run([{ dir, payload: message }], endpoints);
        expect(outcome).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_EXACT, strayReads: [] });
      }
    }
  });

  it('is exact evidence from a peer', () => {
    expect(dhtDetector.strength).toBe(STRENGTH_EXACT);
    expect(dhtDetector.producerIsPeer).toBe(true);
  });

  it('does not rely on the keys being sorted', () => {
    const unsorted = benc(
      new Unsorted([
        ['y', 'q'],
        ['t', 'xy'],
        ['q', 'get_peers'],
        ['a', new Unsorted([['info_hash', INFO_HASH], ['id', NODE_ID]])],
      ]),
    );
    expect(run([{ dir: 0, payload: unsorted }]).outcome).toBe(MATCH);
  });

  it('matches the reply when the query before it used a method it does not know', () => {
    const unknownQuery = query('vote', { target: INFO_HASH, vote: 5 });
    expect(run([{ dir: 0, payload: unknownQuery }]).outcome).toBe(MORE);
    expect(run([{ dir: 0, payload: unknownQuery }, { dir: 1, payload: error(204, 'Method Unknown') }])).toMatchObject({ outcome: MATCH, decidedAt: 1 });
  });

  const NEAR_MISSES: [string, Uint8Array][] = [
    ['a bencoded dictionary without the KRPC keys', benc({ foo: 'bar', spam: ['a', 'b'] })],
    ['a torrent file fragment', benc({ announce: 'http://tracker.example/announce', info: { length: 1, name: 'x', 'piece length': 16384 } })],
    ['no transaction id', benc({ a: { id: NODE_ID }, q: 'ping', y: 'q' })],
    ['an integer transaction id', benc({ a: { id: NODE_ID }, q: 'ping', t: 7, y: 'q' })],
    ['no message type', benc({ a: { id: NODE_ID }, q: 'ping', t: 'aa' })],
    ['an unknown message type', benc({ a: { id: NODE_ID }, q: 'ping', t: 'aa', y: 'x' })],
    ['a two-letter message type', benc({ a: { id: NODE_ID }, q: 'ping', t: 'aa', y: 'qq' })],
    ['a query without arguments', benc({ q: 'ping', t: 'aa', y: 'q' })],
    ['a query without a method', benc({ a: { id: NODE_ID }, t: 'aa', y: 'q' })],
    ['an unknown method', query('vote', { target: INFO_HASH })],
    ['a query arguments list', benc({ a: [NODE_ID], q: 'ping', t: 'aa', y: 'q' })],
    ['a 19-byte node id', benc({ a: { id: NODE_ID.subarray(1) }, q: 'ping', t: 'aa', y: 'q' })],
    ['an integer node id', benc({ a: { id: 5 }, q: 'ping', t: 'aa', y: 'q' })],
    ['arguments without a node id', benc({ a: { target: INFO_HASH }, q: 'find_node', t: 'aa', y: 'q' })],
    ['a 19-byte info-hash', query('get_peers', { info_hash: INFO_HASH.subarray(1) })],
    ['a response without a body', benc({ t: 'aa', y: 'r' })],
    ['a response body without a node id', benc({ r: { nodes: NODES }, t: 'aa', y: 'r' })],
    ['nodes that are not 26-byte entries', response({ nodes: NODES.subarray(1) })],
    ['nodes6 that are not 38-byte entries', response({ nodes6: concat(NODES6, [0]) })],
    ['nodes given as a list', response({ nodes: [NODES] })],
    ['a 7-byte peer in values', response({ token: TOKEN, values: [filler(7, 1)] })],
    ['values given as one string', response({ token: TOKEN, values: peer4('192.0.2.50', 6881) })],
    ['samples that are not 20-byte hashes', response({ samples: filler(30, 1) })],
    ['a short scrape bloom filter', response({ BFsd: filler(128, 1) })],
    ['an integer token', response({ token: 5 })],
    ['an error that is not a list', benc({ e: 'A Generic Error Ocurred', t: 'aa', y: 'e' })],
    ['an error list in the wrong order', benc({ e: ['A Generic Error Ocurred', 201], t: 'aa', y: 'e' })],
    ['an error with a code only', benc({ e: [201], t: 'aa', y: 'e' })],
    ['a repeated key', concat(ascii('d1:t2:aa'), query('ping', {}).subarray(1))],
    ['a byte after the dictionary', concat(query('ping', {}), ascii('\n'))],
    ['a list instead of a dictionary', benc(['a', { id: NODE_ID }, 'q', 'ping', 't', 'aa', 'y', 'q'])],
    ['JSON', ascii(`{"a":{"id":"${'x'.repeat(20)}"},"q":"ping","t":"aa","y":"q"}`)],
    ['text starting with d', ascii('d1:ad2:id20:hello, this is not bencoding at all\r\n')],
    ['an empty datagram', new Uint8Array(0)],
    ['a lone d', ascii('d')],
    ['an empty dictionary', ascii('de')],
    ['a DNS query whose id reads "d1"', dnsQuery('router.bittorrent.com', 0x6431)],
    ['a DNS response whose id reads "d1"', dnsResponse('router.bittorrent.com', 0x6431)],
    ['a STUN binding request', stunBindingRequest()],
    ['a STUN binding response', stunBindingResponse()],
    ['a DTLS ClientHello', dtlsClientHello()],
    ['a QUIC Initial', quicInitial()],
    ['a DHCP discover', dhcpDiscover()],
    ['a WireGuard handshake', wireguardInitiation()],
    ['WireGuard data', wireguardData(7)],
    ['RTP', rtpPacket(1, 160)],
  ];

  it.each(NEAR_MISSES)('does not match %s', (_name, payload) => {
    for (const dir of [0, 1]) {
      const outcome = run([{ dir, payload }]);
      expect(outcome.outcome).not.toBe(MATCH);
      expect(outcome.strayReads).toEqual([]);
    }
  });

  it('does not match any message cut short, and reads nothing past the cut', () => {
    for (const [, message] of [...QUERIES, ...RESPONSES]) {
      for (let length = 0; length < message.length; length++) {
        const outcome = run([{ dir: 0, payload: message.subarray(0, length) }]);
        expect(outcome.outcome).not.toBe(MATCH);
        expect(outcome.strayReads).toEqual([]);
      }
    }
  });

  it('gives up at the first datagram that does not open a dictionary', () => {
    expect(run([{ dir: 0, payload: rtpPacket(1, 160) }])).toMatchObject({ outcome: GIVE_UP, decidedAt: 0 });
    expect(run([{ dir: 0, payload: dnsQuery('example.com', 0x1234) }])).toMatchObject({ outcome: GIVE_UP, decidedAt: 0 });
    // One DNS id in 256 opens with 'd': the answer ends it.
    const dns = [dnsQuery('example.com', 0x6431), dnsResponse('example.com', 0x6431)];
    expect(run(dns.map((payload, dir) => ({ dir, payload })))).toMatchObject({ outcome: GIVE_UP, decidedAt: 1 });
  });

  it('waits after a dictionary it cannot read, until the other side answers otherwise or the window ends', () => {
    const unreadable = query('vote', { target: INFO_HASH });
    expect(run([{ dir: 0, payload: unreadable }, { dir: 1, payload: rtpPacket(1, 160) }])).toMatchObject({ outcome: GIVE_UP, decidedAt: 1 });
    expect(run([{ dir: 0, payload: unreadable }, { dir: 1, payload: unreadable }])).toMatchObject({ outcome: GIVE_UP, decidedAt: 1 });
    const oneSided = Array.from({ length: 8 }, () => ({ dir: 0, payload: unreadable }));
    expect(run(oneSided)).toMatchObject({ outcome: GIVE_UP, decidedAt: 3 });
    // A query cut short by the capture's snap length, then a whole one.
    expect(run([{ dir: 0, payload: query('ping', {}).subarray(0, 30) }, { dir: 0, payload: query('ping', {}) }]).outcome).toBe(MATCH);
  });

  it('never throws, reads out of bounds or matches on arbitrary datagrams', () => {
    const datagram = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.uint8Array({ maxLength: 300 }).map((bytes) => concat(ascii('d1:'), bytes)),
    );
    fc.assert(
      fc.property(fc.array(fc.record({ dir: fc.constantFrom(0, 1), payload: datagram }), { minLength: 1, maxLength: 4 }), (datagrams) => {
        const outcome = run(datagrams);
        expect(outcome.strayReads).toEqual([]);
        expect(outcome.outcome).not.toBe(MATCH);
      }),
      { numRuns: 3000 },
    );
  });

  it('never matches well-formed bencoded dictionaries with other keys, nor reads out of bounds on any byte changed', () => {
    const { value } = fc.letrec<{ value: Value }>((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        fc.integer(),
        fc.string({ maxLength: 24 }),
        fc.uint8Array({ maxLength: 40 }),
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), tie('value'), { maxKeys: 5 }),
      ),
    }));
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 6 }), value, { minKeys: 1, maxKeys: 6 }), (dict) => {
        expect(run([{ dir: 0, payload: benc(dict) }]).outcome).not.toBe(MATCH);
      }),
      { numRuns: 2000 },
    );
    const messages = [...QUERIES, ...RESPONSES].map(([, message]) => message);
    fc.assert(
      fc.property(fc.constantFrom(...messages), fc.nat(), fc.integer({ min: 0, max: 255 }), (message, at, byte) => {
        const changed = message.slice();
        changed[at % changed.length] = byte;
        expect(run([{ dir: 0, payload: changed }]).strayReads).toEqual([]);
      }),
      { numRuns: 3000 },
    );
  });
});

const CLIENT = '192.0.2.10';
const NODE = '198.51.100.20';

function dhtDatagram(fromClient: boolean, payload: Uint8Array): Uint8Array {
  return fromClient ? packet4(CLIENT, NODE, PROTO_UDP, udp(6881, 51413, payload)) : packet4(NODE, CLIENT, PROTO_UDP, udp(51413, 6881, payload));
}

function learningEngine(): Engine {
  return new Engine({ flowCapacity: 64, detectors: [dhtDetector, peerCacheDetector] });
}

function send(engine: Engine, frame: Uint8Array): string {
  const verdict = engine.process(frame, 0, frame.length, LINKTYPE_RAW);
  return verdict === VERDICT_BITTORRENT ? engine.ruleNames[engine.flows.rule[engine.lastFlow]] : '';
}

/** Whether address:port is listed to `host` (by default the client, which received the responses). */
function cached(engine: Engine, address: string, port: number, host = CLIENT): boolean {
  return listedTo(engine, address, port, host);
}

describe('DHT peer learning', () => {
  const answer = response({
    nodes: NODES,
    nodes6: NODES6,
    token: TOKEN,
    values: [peer4('192.0.2.50', 6881), peer6('2001:db8::50', 6882)],
  });

  it('reads the response that follows the matched query: values and nodes are listed to the host it reached', () => {
    const engine = learningEngine();
    expect(send(engine, dhtDatagram(true, query('get_peers', { info_hash: INFO_HASH })))).toBe('dht');
    expect(cached(engine, '192.0.2.50', 6881)).toBe(false);
    send(engine, dhtDatagram(false, answer));
    expect(cached(engine, '192.0.2.50', 6881)).toBe(true);
    expect(cached(engine, '2001:db8::50', 6882)).toBe(true);
    expect(cached(engine, '198.51.100.7', 51413)).toBe(true);
    expect(cached(engine, '203.0.113.9', 6881)).toBe(true);
    expect(cached(engine, '2001:db8::77', 51413)).toBe(true);
    // To the client only: the node that sent them, and everyone else, were told nothing.
    expect(cached(engine, '192.0.2.50', 6881, NODE)).toBe(false);
    expect(cached(engine, '192.0.2.50', 6881, '192.0.2.99')).toBe(false);
    expect(engine.proven.inserts).toBe(0);
    // A later flow of the client to a listed peer is BitTorrent from its first (here encrypted-looking) byte.
    const toPeer = packet4(CLIENT, '192.0.2.50', PROTO_TCP, tcp(50000, 6881, filler(96, 9)));
    expect(send(engine, toPeer)).toBe('peer-cache');
    expect(engine.strengthName(engine.lastFlow)).toBe('announced');
    const toNode = packet4(CLIENT, '198.51.100.7', PROTO_UDP, udp(6881, 51413, filler(96, 9)));
    expect(send(engine, toNode)).toBe('peer-cache');
    // Another host's flow to the same peer is not: the list did not reach it.
    const otherHost = packet4('192.0.2.99', '192.0.2.50', PROTO_TCP, tcp(50000, 6881, filler(96, 9)));
    expect(send(engine, otherHost)).toBe('');
    const elsewhere = packet4(CLIENT, '192.0.2.51', PROTO_TCP, tcp(50000, 6881, filler(96, 9)));
    expect(send(engine, elsewhere)).toBe('');
  });

  it('learns from a response that is the first datagram seen of its flow', () => {
    const engine = learningEngine();
    expect(send(engine, dhtDatagram(false, answer))).toBe('dht');
    expect(engine.flows.producer[engine.lastFlow]).toBe(0);
    expect(cached(engine, '192.0.2.50', 6881)).toBe(true);
    expect(cached(engine, '2001:db8::77', 51413)).toBe(true);
  });

  it('lists the port an announce_peer names for its sender to the node it announced to, unless it is implied', () => {
    const engine = learningEngine();
    send(engine, dhtDatagram(true, query('announce_peer', { implied_port: 0, info_hash: INFO_HASH, port: 49152, token: TOKEN })));
    expect(cached(engine, CLIENT, 49152, NODE)).toBe(true);
    expect(cached(engine, CLIENT, 49152, CLIENT)).toBe(false);
    expect(engine.announced.inserts).toBe(1);
    // The engine itself remembers neither end of the flow: that is the policy's call.
    expect(cached(engine, CLIENT, 6881, NODE)).toBe(false);
    expect(engine.proven.inserts).toBe(0);
    const implied = learningEngine();
    send(implied, dhtDatagram(true, query('announce_peer', { implied_port: 1, info_hash: INFO_HASH, port: 49152, token: TOKEN })));
    expect(cached(implied, CLIENT, 49152, NODE)).toBe(false);
    expect(implied.announced.inserts).toBe(0);
    const outOfRange = learningEngine();
    expect(send(outOfRange, dhtDatagram(true, query('announce_peer', { info_hash: INFO_HASH, port: 6881 + 65536, token: TOKEN })))).toBe('dht');
    expect(outOfRange.announced.inserts + outOfRange.announced.refused).toBe(0);
  });

  it('learns nothing from a malformed response, and nothing once the budget is spent', () => {
    const engine = learningEngine();
    send(engine, dhtDatagram(true, query('get_peers', { info_hash: INFO_HASH })));
    send(engine, dhtDatagram(false, response({ nodes: concat(NODES, [0]), token: TOKEN, values: [peer4('192.0.2.50', 6881)] })));
    expect(cached(engine, '192.0.2.50', 6881)).toBe(false);
    for (let i = 2; i < dhtDetector.budget; i++) send(engine, dhtDatagram(true, query('ping', {})));
    send(engine, dhtDatagram(false, answer));
    expect(cached(engine, '192.0.2.50', 6881)).toBe(false);
    expect(engine.announced.inserts).toBe(0);
  });

  it('keeps learning through a long flow, every datagram guarded', () => {
    const runner = new FlowRunner(dhtDetector);
    const datagrams: Datagram[] = [{ dir: 0, payload: query('get_peers', { info_hash: INFO_HASH }) }];
    for (let i = 1; i < dhtDetector.budget - 1; i++) datagrams.push({ dir: i % 2, payload: i % 2 ? answer : query('ping', {}) });
    datagrams.push({ dir: 1, payload: response({ values: [peer4('192.0.2.77', 7000)], token: TOKEN }) });
    const outcome = runner.run(datagrams, true);
    expect(outcome).toMatchObject({ outcome: MATCH, decidedAt: 0, strayReads: [] });
    // FlowRunner's responder answered its initiator, 10.0.0.1.
    expect(listedTo(runner, '192.0.2.77', 7000, '10.0.0.1')).toBe(true);
    expect(listedTo(runner, '192.0.2.77', 7000, '10.0.0.2')).toBe(false);
  });
});

describe('DHT in real captures', () => {
  it('matches every flow of the libtorrent lab capture on its first datagram (fixtures/dht/lab.pcap)', () => {
    const { flows, engine } = scanCapture(LAB_CAPTURE, { detectors: [dhtDetector] });
    // Three nodes, each pair talking over IPv4 and over IPv6.
    expect(flows.length).toBe(6);
    for (const flow of flows) expect(flow).toMatchObject({ bittorrent: true, rule: 'dht', payloadPackets: 1 });
    // The nodes, values and announced ports of the rest of each flow; the flows' own endpoints are the policy's.
    expect(engine.announced.inserts).toBeGreaterThan(100);
    expect(engine.proven.inserts).toBe(0);
    // Each node was told about each of the others.
    for (const hosts of [['10.77.0.1', '10.77.0.2', '10.77.0.3'], ['fd77::1', 'fd77::2', 'fd77::3']]) {
      for (const node of hosts) for (const host of hosts) if (node !== host) expect(cached(engine, node, 6881, host), `${node} to ${host}`).toBe(true);
    }
  });

  it.runIf(existsSync(CORPUS_CAPTURE))('matches the two DHT flows of the shared corpus and learns the nodes they return', () => {
    const { flows, engine } = scanCapture(CORPUS_CAPTURE, { detectors: [dhtDetector] });
    const dht = flows.filter((flow) => flow.rule === 'dht');
    expect(dht.map((flow) => flow.responder).sort()).toEqual(['79.164.55.123:5001', '89.64.45.227:5201']);
    // Each find_node response's 8 nodes, listed to the client that asked.
    expect(engine.announced.inserts).toBeGreaterThanOrEqual(2 * 8);
    expect(engine.proven.inserts).toBe(0);
  });
});
