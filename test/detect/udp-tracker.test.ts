import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE, STRENGTH_EXACT, STRENGTH_HEURISTIC, STRENGTH_RESPONSE } from '../../src/detect/detector.js';
import { udpTrackerDetector } from '../../src/detect/udp-tracker.js';
import { FlowRunner, type Datagram, type FlowEndpoints } from '../helpers/detector-run.js';
import { ascii, concat, ipv4Address, ipv6Address, u16, u32 } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import { dhcpDiscover, dnsQuery, dtlsClientHello, filler, quicInitial, stunBindingRequest, wireguardInitiation } from '../helpers/udp-lookalikes.js';

const PROTOCOL_ID = [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80];
const CONNECTION_ID = [0x8a, 0x41, 0x2c, 0x07, 0xd3, 0x19, 0x55, 0xe0];
const TRACKER4: FlowEndpoints = { family: 4, initiator: '10.0.0.1', initiatorPort: 51413, responder: '198.51.100.7', responderPort: 6969 };
const TRACKER6: FlowEndpoints = { family: 6, initiator: '2001:db8::1', initiatorPort: 51413, responder: '2001:db8:ff::7', responderPort: 1337 };

const connectRequest = (tid: number) => concat(PROTOCOL_ID, u32(0), u32(tid));
const connectResponse = (tid: number) => concat(u32(0), u32(tid), CONNECTION_ID);

interface AnnounceFields {
  tid: number;
  /** The 8-byte connection id (default CONNECTION_ID). */
  connectionId?: number[];
  event?: number;
  options?: number[];
}

/** BEP 15 announce request: 98 bytes, then BEP 41 options. */
function announceRequest(f: AnnounceFields): Uint8Array {
  return concat(
    f.connectionId ?? CONNECTION_ID,
    u32(1),
    u32(f.tid),
    filler(20, 31),
    ascii('-TR3000-k8hj0wgej6ch'),
    [0, 0, 0, 0, ...u32(0)],
    [0, 0, 0, 0, ...u32(1_048_576)],
    [0, 0, 0, 0, ...u32(0)],
    u32(f.event ?? 2),
    u32(0),
    u32(0x5eed),
    u32(0xffffffff),
    u16(51413),
    f.options ?? [],
  );
}

/** Announce response with compact peers: [address, port] each, 6 bytes over IPv4, 18 over IPv6. */
function announceResponse(tid: number, peers: [string, number][]): Uint8Array {
  const compact = peers.flatMap(([address, port]) => [...(address.includes(':') ? ipv6Address(address) : ipv4Address(address)), ...u16(port)]);
  return concat(u32(1), u32(tid), u32(1800), u32(3), u32(peers.length - 3), compact);
}

const scrapeRequest = (tid: number, hashes: number) => concat(CONNECTION_ID, u32(2), u32(tid), filler(20 * hashes, 41));
const scrapeResponse = (tid: number, hashes: number) => concat(u32(2), u32(tid), filler(12 * hashes, 42));
const errorResponse = (tid: number) => concat(u32(3), u32(tid), ascii('torrent not registered'));

const client = (payload: Uint8Array): Datagram => ({ dir: 0, payload });
const tracker = (payload: Uint8Array): Datagram => ({ dir: 1, payload });

const PEERS4: [string, number][] = [
  ['203.0.113.5', 6881],
  ['203.0.113.6', 51413],
  ['198.51.100.99', 40000],
  ['192.0.2.200', 1200],
];
const PEERS6: [string, number][] = [
  ['2001:db8:1::5', 6881],
  ['2001:db8:2::6', 51413],
  ['2001:db8:3::7', 40000],
];

/** Whether the peer is listed to `host` (by default the client the tracker answered). */
function knows(runner: FlowRunner, [address, port]: [string, number], host = TRACKER4.initiator): boolean {
  return listedTo(runner, address, port, host);
}

describe('UDP tracker detector (BEP 15)', () => {
  it.each([
    ['a connect request alone', [client(connectRequest(0x1d2e3f40))], 0],
    [
      'connect, announce and its answer',
      [client(connectRequest(0xdeadbeef)), tracker(connectResponse(0xdeadbeef)), client(announceRequest({ tid: 0x01020304 })), tracker(announceResponse(0x01020304, PEERS4))],
      0,
    ],
    ['an announce caught without its connect, and its answer', [client(announceRequest({ tid: 0x01020304 })), tracker(announceResponse(0x01020304, PEERS4))], 1],
    [
      'an announce with BEP 41 options (NOP, URLData, end of options) and its answer',
      [client(announceRequest({ tid: 77, options: [1, 2, 9, ...ascii('/announce'), 0, 0xff] })), tracker(announceResponse(77, PEERS4))],
      1,
    ],
    ['a retransmitted announce, then its answer', [client(announceRequest({ tid: 5 })), client(announceRequest({ tid: 5 })), tracker(announceResponse(5, PEERS4))], 2],
    ['a scrape of three torrents and its answer', [client(scrapeRequest(0x0badcafe, 3)), tracker(scrapeResponse(0x0badcafe, 3))], 1],
    ['an announce refused with an error', [client(announceRequest({ tid: 0x600d })), tracker(errorResponse(0x600d))], 1],
  ] as [string, Datagram[], number][])('matches %s', (_name, datagrams, decidingPacket) => {
    expect(new FlowRunner(udpTrackerDetector, TRACKER4).run(datagrams)).toMatchObject({ outcome: MATCH, decidedAt: decidingPacket });
  });

  describe('evidence', () => {
    const run = (datagrams: Datagram[]) => new FlowRunner(udpTrackerDetector, TRACKER4).run(datagrams);

    it('is exact by default', () => {
      expect(udpTrackerDetector.strength).toBe(STRENGTH_EXACT);
      expect(udpTrackerDetector.producerIsPeer).toBe(true);
    });

    it('calls a connect request exact: its magic is the whole protocol structure', () => {
      expect(run([client(connectRequest(0x1d2e3f40))])).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_EXACT });
      expect(run([tracker(connectRequest(0x1d2e3f40))])).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_EXACT });
    });

    it.each([
      ['an announce response', [client(announceRequest({ tid: 0x01020304 })), tracker(announceResponse(0x01020304, PEERS4))]],
      ['the answer to a retransmitted announce', [client(announceRequest({ tid: 5 })), client(announceRequest({ tid: 5 })), tracker(announceResponse(5, PEERS4))]],
      ['a scrape response', [client(scrapeRequest(0x0badcafe, 3)), tracker(scrapeResponse(0x0badcafe, 3))]],
      ['an error answering an announce', [client(announceRequest({ tid: 0x600d })), tracker(errorResponse(0x600d))]],
      ['an announce response to a request from the responder side', [tracker(announceRequest({ tid: 0x0a0b })), client(announceResponse(0x0a0b, PEERS4))]],
    ] as [string, Datagram[]][])('calls %s a response', (_name, datagrams) => {
      expect(run(datagrams)).toMatchObject({ outcome: MATCH, decidedAt: datagrams.length - 1, strength: STRENGTH_RESPONSE });
    });

    it('calls an announce response that opens a flow, its request on another route, heuristic, and lists its peers to the host it reaches', () => {
      const runner = new FlowRunner(udpTrackerDetector, TRACKER4);
      expect(runner.run([tracker(announceResponse(0x01020304, PEERS4))])).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_HEURISTIC });
      // The host's connection attempts to them are all that route shows of the peers.
      expect(PEERS4.every((peer) => knows(runner, peer))).toBe(true);
      expect(PEERS4.some((peer) => knows(runner, peer, TRACKER4.responder))).toBe(false);
      const afterConnect = new FlowRunner(udpTrackerDetector, TRACKER4);
      afterConnect.run([tracker(connectResponse(8)), tracker(announceResponse(9, PEERS4))]);
      expect(PEERS4.every((peer) => knows(afterConnect, peer))).toBe(true);
      expect(run([client(announceResponse(7, PEERS4.slice(0, 3)))])).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_HEURISTIC });
      // After the connect response that opened the flow; a connect response alone decides nothing.
      expect(run([tracker(connectResponse(8)), tracker(announceResponse(9, PEERS4))])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_HEURISTIC });
      expect(run([tracker(connectResponse(8)), tracker(connectResponse(8))])).toMatchObject({ outcome: GIVE_UP, decidedAt: 1 });
      expect(run([tracker(filler(16, 3)), tracker(announceResponse(9, PEERS4))])).toMatchObject({ outcome: GIVE_UP, decidedAt: 0 });
    });

    it.each([
      ['a zero transaction id', concat(u32(1), u32(0), u32(1800), u32(3), u32(1), filler(6, 1))],
      ['a zero interval', concat(u32(1), u32(5), u32(0), u32(3), u32(1), filler(6, 1))],
      ['an interval of days', concat(u32(1), u32(5), u32(200_000), u32(3), u32(1), filler(6, 1))],
      ['a leecher count of 2^24', concat(u32(1), u32(5), u32(1800), u32(1 << 24), u32(1), filler(6, 1))],
      ['a seeder count of 2^24', concat(u32(1), u32(5), u32(1800), u32(3), u32(1 << 24), filler(6, 1))],
      ['a ragged peer list', concat(u32(1), u32(5), u32(1800), u32(3), u32(1), filler(7, 1))],
      ['another action', concat(u32(0x101), u32(5), u32(1800), u32(3), u32(1), filler(6, 1))],
    ])('gives a flow up that opens with an answer with %s', (_name, payload) => {
      expect(run([tracker(payload)])).toMatchObject({ outcome: GIVE_UP, decidedAt: 0 });
    });

    it('calls a request reflected back exact: its first bytes are the request\'s own, no tracker answered', () => {
      // A connection id that reads as action and transaction id: sent back as it is (a UDP echo),
      // the request looks like its own answer.
      const asAnnounce = announceRequest({ tid: 0x01020304, connectionId: [...u32(1), ...u32(0x01020304)] });
      expect(run([client(asAnnounce), tracker(asAnnounce)])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_EXACT });
      const asError = announceRequest({ tid: 0x600d, connectionId: [...u32(3), ...u32(0x600d)] });
      expect(run([client(asError), tracker(asError)])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_EXACT });
      // A datagram that is a request itself is no tracker's answer, whatever it answers.
      expect(run([client(announceRequest({ tid: 0x01020304 })), tracker(asAnnounce)])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_EXACT });
    });

    it('leaves an echo nothing but requests to send back', () => {
      const answer = announceResponse(9, PEERS4);
      // The asker sends the "answer" first, then the request, for an echo to return the first: the
      // flow is decided at the first datagram, an unasked answer from the asker, which never bans.
      expect(run([client(answer), client(announceRequest({ tid: 9 })), tracker(answer)])).toMatchObject({ outcome: MATCH, decidedAt: 0, strength: STRENGTH_HEURISTIC });
      // Two crossed announces whose connection ids read as each other's action and transaction id.
      const crossed = (tid: number, other: number) => announceRequest({ tid, connectionId: [...u32(1), ...u32(other)] });
      expect(run([client(crossed(0x11223344, 0x55667788)), client(crossed(0x55667788, 0x11223344)), tracker(crossed(0x11223344, 0x55667788))])).toMatchObject({
        outcome: MATCH,
        strength: STRENGTH_EXACT,
      });
      // A real exchange stays a response.
      expect(run([client(announceRequest({ tid: 9 })), tracker(answer)])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_RESPONSE });
    });
  });

  it('learns the compact IPv4 peers of an announce response, in the matching flow and after a connect matched it', () => {
    for (const flow of [
      [client(announceRequest({ tid: 9 })), tracker(announceResponse(9, PEERS4))],
      [client(connectRequest(8)), tracker(connectResponse(8)), client(announceRequest({ tid: 9 })), tracker(announceResponse(9, PEERS4))],
    ]) {
      const runner = new FlowRunner(udpTrackerDetector, TRACKER4);
      expect(runner.run(flow).outcome).toBe(MATCH);
      expect(PEERS4.map((peer) => knows(runner, peer))).toEqual([true, true, true, true]);
      // To the client that received the list, not to the tracker or anyone else.
      expect(PEERS4.some((peer) => knows(runner, peer, TRACKER4.responder) || knows(runner, peer, '10.0.0.3'))).toBe(false);
    }
  });

  it('learns 18-byte IPv6 peers from a tracker reached over IPv6', () => {
    const runner = new FlowRunner(udpTrackerDetector, TRACKER6);
    expect(runner.run([client(connectRequest(8)), tracker(connectResponse(8)), client(announceRequest({ tid: 9 })), tracker(announceResponse(9, PEERS6))]).outcome).toBe(MATCH);
    expect(PEERS6.map((peer) => knows(runner, peer, TRACKER6.initiator))).toEqual([true, true, true]);
    expect(PEERS6.some((peer) => knows(runner, peer, TRACKER6.responder))).toBe(false);
  });

  it('learns nothing from an answer to another transaction, or with a ragged peer list', () => {
    for (const answer of [announceResponse(10, PEERS4), concat(announceResponse(9, PEERS4), [1])]) {
      const runner = new FlowRunner(udpTrackerDetector, TRACKER4);
      runner.run([client(connectRequest(8)), tracker(connectResponse(8)), client(announceRequest({ tid: 9 })), tracker(answer)]);
      expect(PEERS4.some((peer) => knows(runner, peer))).toBe(false);
    }
  });

  it.each([
    ['a connect request one byte long', [client(concat(connectRequest(1), [0]))], GIVE_UP],
    ['the protocol id with action 1', [client(concat(PROTOCOL_ID, u32(1), u32(1)))], GIVE_UP],
    ['an announce alone', [client(announceRequest({ tid: 3 }))], MORE],
    ['an answer to another transaction', [client(announceRequest({ tid: 3 })), tracker(announceResponse(4, PEERS4))], GIVE_UP],
    ['an answer from the asking side', [client(announceRequest({ tid: 3 })), client(announceResponse(3, PEERS4))], GIVE_UP],
    ['an answer with a ragged peer list', [client(announceRequest({ tid: 3 })), tracker(concat(announceResponse(3, PEERS4), [0, 0]))], GIVE_UP],
    ['a scrape answered for another number of torrents', [client(scrapeRequest(3, 3)), tracker(scrapeResponse(3, 2))], GIVE_UP],
    ['an announce with event 4', [client(announceRequest({ tid: 3, event: 4 })), tracker(announceResponse(3, PEERS4))], GIVE_UP],
    ['an announce with transaction id 0', [client(announceRequest({ tid: 0 })), tracker(announceResponse(0, PEERS4))], GIVE_UP],
    ['an announce with an unknown BEP 41 option', [client(announceRequest({ tid: 3, options: [7, 1, 0] })), tracker(announceResponse(3, PEERS4))], GIVE_UP],
    ['an announce whose URLData runs past the datagram', [client(announceRequest({ tid: 3, options: [2, 20, 0x2f] })), tracker(announceResponse(3, PEERS4))], GIVE_UP],
    ['an announce cut at 97 bytes', [client(announceRequest({ tid: 3 }).subarray(0, 97)), tracker(announceResponse(3, PEERS4))], GIVE_UP],
    ['a zero-filled 98-byte datagram with action 1 answered by zeros', [client(concat(new Uint8Array(11), [1], new Uint8Array(86))), tracker(concat(u32(3), u32(0), new Uint8Array(8)))], GIVE_UP],
    ['DNS', [client(dnsQuery('tracker.example', 0x4172)), tracker(dnsQuery('tracker.example', 0x4172))], GIVE_UP],
    ['STUN', [client(stunBindingRequest())], GIVE_UP],
    ['DTLS', [client(dtlsClientHello())], GIVE_UP],
    ['QUIC', [client(quicInitial())], GIVE_UP],
    ['DHCP', [client(dhcpDiscover())], GIVE_UP],
    ['WireGuard', [client(wireguardInitiation())], GIVE_UP],
  ] as [string, Datagram[], number][])('does not match %s', (_name, datagrams, outcome) => {
    expect(new FlowRunner(udpTrackerDetector, TRACKER4).run(datagrams).outcome).toBe(outcome);
  });

  it('reads nothing outside the datagrams and keeps to its state bytes, whatever they hold', () => {
    const runner = new FlowRunner(udpTrackerDetector, TRACKER4);
    const messages = [connectRequest(7), connectResponse(7), announceRequest({ tid: 7, options: [1, 2, 3, 0x61, 0x62, 0x63] }), announceResponse(7, PEERS4), scrapeRequest(7, 2), scrapeResponse(7, 2), errorResponse(7)];
    const datagram = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 160 }),
      fc.tuple(fc.constantFrom(...messages), fc.integer({ min: 1, max: 130 })).map(([message, cut]) => message.subarray(0, cut)),
      fc.tuple(fc.constantFrom(...messages), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([message, at, byte]) => {
        const copy = message.slice();
        copy[at % copy.length] = byte;
        return copy;
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 1 }), datagram), { maxLength: 10 }), (flow) => {
        const result = runner.run(flow.map(([dir, payload]) => ({ dir, payload })), true);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
      }),
      { numRuns: 3000 },
    );
  });
});
