import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, MATCH, MORE, STRENGTH_EXACT, STRENGTH_RESPONSE } from '../../src/detect/detector.js';
import { packetType, utpDetector } from '../../src/detect/utp.js';
import { scanCapture } from '../helpers/capture.js';
import { FlowRunner, type Datagram } from '../helpers/detector-run.js';
import { ascii, concat, u16, u32 } from '../helpers/frames.js';
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
  wireguardResponse,
} from '../helpers/udp-lookalikes.js';

const ROOT = resolve(import.meta.dirname, '../..');
const CORPUS_CAPTURE = resolve(ROOT, '../shared/corpus/ndpi/bittorrent_utp.pcap');
const FIXTURE = join(ROOT, 'fixtures/utp/libtorrent-utp.pcap');

const ST_DATA = 0;
const ST_FIN = 1;
const ST_STATE = 2;
const ST_RESET = 3;
const ST_SYN = 4;
const EXT_SACK = 1;
const EXT_BITS = 2;
const EXT_CLOSE_REASON = 3;

interface UtpFields {
  type: number;
  id: number;
  seq: number;
  ack: number;
  ts?: number;
  tsDiff?: number;
  wnd?: number;
  /** Extension chain: [type, content] in order. */
  extensions?: [number, number[]][];
  payload?: Uint8Array;
  version?: number;
}

/** A BEP 29 packet, field by field. */
function utp(f: UtpFields): Uint8Array {
  const ext = f.extensions ?? [];
  const chain = ext.flatMap(([, content], i) => [i + 1 < ext.length ? ext[i + 1][0] : 0, content.length, ...content]);
  return concat(
    [(f.type << 4) | (f.version ?? 1), ext.length > 0 ? ext[0][0] : 0, ...u16(f.id)],
    u32(f.ts ?? 0x10eeb2f0),
    u32(f.tsDiff ?? 0),
    u32(f.wnd ?? 0x100000),
    u16(f.seq),
    u16(f.ack),
    chain,
    f.payload ?? [],
  );
}

const from = (dir: number, payload: Uint8Array): Datagram => ({ dir, payload });
const hex = (text: string) => Uint8Array.from(text.replace(/\s/g, '').match(/../g)!, (byte) => parseInt(byte, 16));
const DHT_GET_PEERS = ascii('d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe');

/**
 * A connection caught after its SYN: the initiator sends data with id `id`, the responder
 * acknowledges with id `id + idGap`; each round is one packet each way.
 */
function midFlow(rounds: number, id = 0x5303, idGap = -1, seq = 0xfff0, ack = 0x49c6): Datagram[] {
  const datagrams: Datagram[] = [];
  for (let r = 0; r < rounds; r++) {
    const ts = 0x10000000 + r * 40_000;
    datagrams.push(from(0, utp({ type: ST_DATA, id, seq: (seq + r) & 0xffff, ack, ts, payload: filler(100, r + 1) })));
    datagrams.push(from(1, utp({ type: ST_STATE, id: (id + idGap) & 0xffff, seq: (ack + 1) & 0xffff, ack: (seq + r) & 0xffff, ts: 0x70000000 + r * 40_000 })));
  }
  return datagrams;
}

const runner = new FlowRunner(utpDetector);

describe('uTP detector (BEP 29)', () => {
  describe('seen one way only (an asymmetric route)', () => {
    const oneWay = (rounds: number, dir: number, id = 0x5303) =>
      Array.from({ length: rounds }, (_, r) => from(dir, utp({ type: ST_DATA, id, seq: (0xfff0 + r) & 0xffff, ack: 0x49c6, ts: 0x10000000 + r * 40_000, payload: filler(100, r + 1) })));

    it('names the SYN side going on with the ids its SYN announced', () => {
      const syn = from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 }));
      const next = from(0, utp({ type: ST_DATA, id: 0x5303, seq: 0xe7f6, ack: 0x1234, payload: filler(30) }));
      // Exact, from the opener's own bytes: never a ban over UDP, where only an answer to a local query is proof.
      expect(runner.run([syn, next])).toMatchObject({ outcome: MATCH, decidedAt: 1, strength: STRENGTH_EXACT });
      expect(runner.run([syn, from(0, utp({ type: ST_DATA, id: 0x5303, seq: 0xe7f8, ack: 0x1234, payload: filler(30) }))]).outcome).toBe(MORE);
      expect(runner.run([syn, from(0, utp({ type: ST_DATA, id: 0x5304, seq: 0xe7f6, ack: 0x1234, payload: filler(30) }))]).outcome).toBe(MORE);
    });

    it.each([0, 1])('names a run of six consistent packets from direction %i when the other never speaks, not five', (dir) => {
      expect(runner.run(oneWay(6, dir))).toMatchObject({ outcome: MATCH, decidedAt: 5, strength: STRENGTH_EXACT });
      expect(runner.run(oneWay(5, dir)).outcome).toBe(MORE);
      // A side that answers takes the flow back to the two-way rule.
      expect(runner.run([...oneWay(5, 0), from(1, utp({ type: ST_STATE, id: 0x7777, seq: 1, ack: 1 })), ...oneWay(1, 0)]).outcome).toBe(MORE);
    });
  });

  it.each([
    ['SYN answered by ST_STATE', [from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0, wnd: 0 })), from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }))], 1],
    [
      'libutp SYN with its extension bits, answered with a selective ack and a close reason',
      [
        from(0, utp({ type: ST_SYN, id: 0xffff, seq: 1, ack: 0, extensions: [[EXT_BITS, [0, 0, 0, 0, 0, 0, 0, 0]]] })),
        from(1, utp({ type: ST_STATE, id: 0xffff, seq: 0x8000, ack: 1, extensions: [[EXT_SACK, [1, 0, 0, 0]], [EXT_CLOSE_REASON, [0, 0, 0, 0]]] })),
      ],
      1,
    ],
    ['SYN refused with ST_RESET', [from(0, utp({ type: ST_SYN, id: 0x1234, seq: 77, ack: 0 })), from(1, utp({ type: ST_RESET, id: 0x1234, seq: 5, ack: 77, wnd: 0 }))], 1],
    [
      'a retransmitted SYN, then the answer',
      [from(0, utp({ type: ST_SYN, id: 9, seq: 3, ack: 0 })), from(0, utp({ type: ST_SYN, id: 9, seq: 3, ack: 0 })), from(1, utp({ type: ST_STATE, id: 9, seq: 40, ack: 3 }))],
      2,
    ],
    [
      'DHT messages on the same socket before the SYN (bittorrent_utp.pcap)',
      [from(0, DHT_GET_PEERS), from(0, DHT_GET_PEERS), from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 })), from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }))],
      3,
    ],
    [
      'the loopback flow of bittorrent_utp.pcap (real capture)',
      [
        from(0, hex('4100 4567 ed63 9296 0000 0000 0010 0000 23c6 0000')),
        from(1, hex('2100 4567 ed63 9341 0000 0000 0010 0000 4567 23c6')),
        from(0, hex('0100 4568 ed7a 591d 0000 00a7 0010 0000 23c7 4566 626c 610a')),
      ],
      1,
    ],
    ['a flow caught mid-way, responder id one below', midFlow(3, 0x5303, -1), 5],
    ['a flow caught mid-way, responder id one above', midFlow(3, 0x5302, 1), 5],
    ['a flow caught mid-way across id and sequence wrap-around', midFlow(4, 0xffff, 1, 0xfffe, 0xffff), 5],
    [
      'a flow caught mid-way with a lost packet and a reordered timestamp',
      [
        ...midFlow(1),
        from(0, utp({ type: ST_DATA, id: 0x5303, seq: 0xfff3, ack: 0x49c6, ts: 0x10010000, payload: filler(20) })),
        from(0, utp({ type: ST_DATA, id: 0x5303, seq: 0xfff2, ack: 0x49c6, ts: 0x1000ffff, payload: filler(20) })),
        from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xfff3, ts: 0x70001000, extensions: [[EXT_SACK, [0, 0, 0, 1]]] })),
        from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xfff3, ts: 0x70002000 })),
      ],
      5,
    ],
  ] as [string, Datagram[], number][])('matches %s', (_name, datagrams, decidingPacket) => {
    expect(runner.run(datagrams)).toMatchObject({ outcome: MATCH, decidedAt: decidingPacket });
  });

  describe('evidence', () => {
    const syn = from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 }));
    const answer = from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }));

    it('is exact by default and names a peer', () => {
      expect(utpDetector.strength).toBe(STRENGTH_EXACT);
      expect(utpDetector.producerIsPeer).toBe(true);
    });

    it.each([
      ['a STATE answering the SYN', [syn, answer], 1],
      ['a RESET refusing the SYN', [syn, from(1, utp({ type: ST_RESET, id: 0x5302, seq: 5, ack: 0xe7f5, wnd: 0 }))], 1],
      ['the answer to a retransmitted SYN', [syn, syn, answer], 2],
      ['the initiator answering a SYN from the responder', [from(1, utp({ type: ST_SYN, id: 9, seq: 3, ack: 0 })), from(0, utp({ type: ST_STATE, id: 9, seq: 40, ack: 3 }))], 1],
    ] as [string, Datagram[], number][])('calls %s a response', (_name, datagrams, decidingPacket) => {
      expect(runner.run(datagrams)).toMatchObject({ outcome: MATCH, decidedAt: decidingPacket, strength: STRENGTH_RESPONSE });
    });

    it('calls a run caught mid-way exact: nothing in it answers what the other side sent first', () => {
      expect(runner.run(midFlow(3))).toMatchObject({ outcome: MATCH, decidedAt: 5, strength: STRENGTH_EXACT });
      // A SYN seen, then a run with other ids: exact too.
      expect(runner.run([syn, ...midFlow(3)])).toMatchObject({ outcome: MATCH, decidedAt: 6, strength: STRENGTH_EXACT });
    });

    it("calls an \"answer\" exact when the SYN's own side sent anything but SYNs, as a reflection would return it", () => {
      // The SYN's side sends a STATE with the SYN's id, and the other side sends it back: the bytes
      // answer nothing the other side could only know from the SYN.
      const ownState = from(0, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }));
      expect(runner.run([syn, ownState, answer])).toMatchObject({ outcome: MATCH, decidedAt: 2, strength: STRENGTH_EXACT });
      // Sent before the SYN, and echoed after it, the same.
      expect(runner.run([ownState, syn, answer])).toMatchObject({ outcome: MATCH, decidedAt: 2, strength: STRENGTH_EXACT });
      const ownReset = from(0, utp({ type: 3, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }));
      expect(runner.run([ownReset, syn, from(1, utp({ type: 3, id: 0x5302, seq: 0x49c7, ack: 0xe7f5 }))])).toMatchObject({ outcome: MATCH, strength: STRENGTH_EXACT });
      // Any data of the SYN's side before the answer: an opener waits for the answer.
      const ownData = from(0, utp({ type: ST_DATA, id: 0x5302, seq: 0xe7f6, ack: 0, payload: filler(20) }));
      expect(runner.run([syn, ownData, answer])).toMatchObject({ outcome: MATCH, decidedAt: 2, strength: STRENGTH_EXACT });
      // A retransmitted SYN leaves the answer a response.
      expect(runner.run([syn, syn, answer])).toMatchObject({ outcome: MATCH, decidedAt: 2, strength: STRENGTH_RESPONSE });
    });
  });

  it.each([
    ['a SYN alone', [from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 }))]],
    ['a SYN answered with another id', [from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 })), from(1, utp({ type: ST_STATE, id: 0x5303, seq: 1, ack: 0xe7f5 }))]],
    ['a SYN answered without acknowledging it', [from(0, utp({ type: ST_SYN, id: 0x5302, seq: 0xe7f5, ack: 0 })), from(1, utp({ type: ST_STATE, id: 0x5302, seq: 1, ack: 0xe7f4 }))]],
    ['a SYN "answered" from its own side', [from(0, utp({ type: ST_SYN, id: 7, seq: 8, ack: 0 })), from(0, utp({ type: ST_STATE, id: 7, seq: 1, ack: 8 }))]],
    ['mid-flow, but only two packets each way', midFlow(2)],
    ['mid-flow with ids two apart', midFlow(6, 0x5303, -2)],
    ['mid-flow with equal ids', midFlow(6, 0x5303, 0)],
    ['mid-flow with acknowledgements unrelated to the other side', midFlow(6).map((d, i) => (d.dir === 1 ? from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: (i * 7919) & 0xffff })) : d))],
    [
      'mid-flow with an implausible window',
      midFlow(6).map((d, i) => (d.dir === 1 ? from(1, utp({ type: ST_STATE, id: 0x5302, seq: 0x49c7, ack: (0xfff0 + (i >> 1)) & 0xffff, wnd: 0xffffffff })) : d)),
    ],
    [
      'mid-flow with timestamps jumping about',
      midFlow(6).map((d, i) => (d.dir === 0 ? from(0, utp({ type: ST_DATA, id: 0x5303, seq: 0xfff0 + (i >> 1), ack: 0x49c6, ts: (i * 0x9e3779b1) >>> 0, payload: filler(9) })) : d)),
    ],
    ['only resets both ways', Array.from({ length: 8 }, (_, i) => from(i & 1, utp({ type: ST_RESET, id: 100 + (i & 1), seq: i, ack: i })))],
  ] as [string, Datagram[]][])('does not match %s', (_name, datagrams) => {
    expect(runner.run(datagrams).outcome).not.toBe(MATCH);
  });

  it('rejects the 20-byte DNS query that parses as a uTP SYN, and its answer', () => {
    const query = dnsQuery('ab', 0x4100);
    expect(query.length).toBe(20);
    expect(packetType(query, 0, query.length)).toBe(ST_SYN); // the look-alike the reference daemon flags
    const answer = dnsResponse('ab', 0x4100);
    expect(runner.run([from(0, query)]).outcome).toBe(MORE);
    expect(runner.run([from(0, query), from(0, query), from(1, answer)]).outcome).toBe(GIVE_UP);
  });

  // Most look-alikes are not uTP headers at all and are dropped at once; a DNS query with id 0x01xx
  // and its answer are well-formed uTP data packets, and only the missing correlation keeps them out.
  it.each([
    ['DNS', [from(0, dnsQuery('example.com', 0x0100)), from(1, dnsResponse('example.com', 0x0100))], MORE],
    ['DNS with ids that look like uTP state packets', [from(0, dnsQuery('a.example', 0x2100)), from(1, dnsResponse('a.example', 0x2100))], GIVE_UP],
    ['STUN', [from(0, stunBindingRequest()), from(1, stunBindingResponse())], GIVE_UP],
    ['DTLS', [from(0, dtlsClientHello()), from(1, dtlsClientHello())], GIVE_UP],
    ['QUIC', [from(0, quicInitial()), from(1, quicInitial())], GIVE_UP],
    ['DHCP', [from(0, dhcpDiscover())], GIVE_UP],
    ['WireGuard', [from(0, wireguardInitiation()), from(1, wireguardResponse()), from(0, wireguardData(0)), from(1, wireguardData(0)), from(0, wireguardData(1))], GIVE_UP],
    ['RTP', Array.from({ length: 12 }, (_, i) => from(i & 1, rtpPacket(i, i * 160))), GIVE_UP],
  ] as [string, Datagram[], number][])('does not match %s', (_name, datagrams, outcome) => {
    expect(runner.run(datagrams).outcome).toBe(outcome);
  });

  it('accepts a WireGuard initiation as a uTP data header, which is why one datagram never decides', () => {
    const initiation = wireguardInitiation();
    expect(packetType(initiation, 0, initiation.length)).toBe(ST_DATA);
    expect(runner.run([from(0, initiation)]).outcome).toBe(MORE);
  });

  it.each([
    ['version 0', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, version: 0 }), -1],
    ['type 5', utp({ type: 5, id: 1, seq: 1, ack: 1 }), -1],
    ['a 19-byte header', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1 }).subarray(0, 19), -1],
    ['data without data', utp({ type: ST_DATA, id: 1, seq: 1, ack: 1 }), -1],
    ['a state packet carrying data', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, payload: filler(4) }), -1],
    ['a FIN', utp({ type: ST_FIN, id: 1, seq: 1, ack: 1 }), ST_FIN],
    ['an unknown extension', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: [[9, [0, 0, 0, 0]]] }), -1],
    ['a selective ack of 3 bytes', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: [[EXT_SACK, [0, 0, 0]]] }), -1],
    ['extension bits of 4 bytes', utp({ type: ST_SYN, id: 1, seq: 1, ack: 0, extensions: [[EXT_BITS, [0, 0, 0, 0]]] }), -1],
    ['an extension running past the datagram', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: [[EXT_SACK, [0, 0, 0, 0]]] }).subarray(0, 24), -1],
    ['an extension header cut short', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: [[EXT_SACK, [0, 0, 0, 0]]] }).subarray(0, 21), -1],
    [
      'five chained extensions',
      utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: Array.from({ length: 5 }, (): [number, number[]] => [EXT_SACK, [0, 0, 0, 0]]) }),
      -1,
    ],
    ['four chained extensions', utp({ type: ST_STATE, id: 1, seq: 1, ack: 1, extensions: Array.from({ length: 4 }, (): [number, number[]] => [EXT_SACK, [0, 0, 0, 0]]) }), ST_STATE],
  ])('reads %s as packet type %i', (_name, packet, type) => {
    expect(packetType(packet, 0, packet.length)).toBe(type);
  });

  it('reads nothing outside the datagram and keeps to its state bytes, whatever the datagrams', () => {
    const header = fc.record({
      type: fc.integer({ min: 0, max: 5 }),
      id: fc.integer({ min: 0, max: 0xffff }),
      seq: fc.integer({ min: 0, max: 0xffff }),
      ack: fc.integer({ min: 0, max: 0xffff }),
      extensions: fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 12 })), { maxLength: 5 }),
      payload: fc.uint8Array({ maxLength: 40 }),
    });
    const datagram = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      header.map((fields) => utp(fields)),
      header.chain((fields) => fc.integer({ min: 0, max: 40 }).map((cut) => utp(fields).subarray(0, cut))),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 1 }), datagram), { maxLength: 24 }), (flow) => {
        const result = runner.run(flow.map(([dir, payload]) => from(dir, payload)), true);
        expect(result.strayReads).toEqual([]);
        expect(result.strayStateWrites).toEqual([]);
        expect([MORE, MATCH, GIVE_UP]).toContain(result.outcome);
      }),
      { numRuns: 2000 },
    );
  });

  it('matches every consistent mid-flow capture and no flow whose ids are not one apart', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: -3, max: 3 }),
        (id, seq, ack, idGap) => {
          const outcome = runner.run(midFlow(4, id, idGap, seq, ack)).outcome;
          expect(outcome === MATCH).toBe(idGap === 1 || idGap === -1);
        },
      ),
    );
  });

  it('calls no flow of random datagrams uTP: 200,000 flows, and 50,000 more of random well-formed headers', () => {
    let seed = 0x9e3779b9;
    const next = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    const random = (length: number) => {
      const bytes = new Uint8Array(length);
      for (let i = 0; i < length; i++) bytes[i] = next() & 0xff;
      return bytes;
    };
    const flowOf = (datagram: () => Uint8Array) => Array.from({ length: 2 + (next() % 7) }, (_, i) => from(i === 0 ? 0 : next() & 1, datagram()));
    let matched = 0;
    for (let f = 0; f < 200_000; f++) if (runner.run(flowOf(() => random(20 + (next() % 60)))).outcome === MATCH) matched++;
    // Valid headers of random types with random ids, numbers and times: only the correlation across
    // the two directions stands between these and a match.
    const wellFormed = () => {
      const type = next() % 5;
      const bytes = random(type === ST_DATA ? 20 + 1 + (next() % 40) : 20);
      bytes[0] = (type << 4) | 1;
      bytes[1] = 0;
      return bytes;
    };
    for (let f = 0; f < 50_000; f++) if (runner.run(flowOf(wellFormed)).outcome === MATCH) matched++;
    expect(matched).toBe(0);
  });

  it.skipIf(!existsSync(CORPUS_CAPTURE))('catches both uTP flows of bittorrent_utp.pcap, the loopback one included', () => {
    const { flows } = scanCapture(CORPUS_CAPTURE, { detectors: [utpDetector] });
    const utpFlows = flows.filter((f) => f.rule === 'utp').map((f) => [f.initiator, f.responder].sort().join(' '));
    expect(utpFlows.sort()).toEqual(['127.0.0.1:33333 127.0.0.1:49861', '192.168.1.5:40959 82.243.113.43:64969']);
  });

  it('catches a libtorrent uTP transfer (fixture) from its SYN, and from mid-flow without it', () => {
    const whole = scanCapture(FIXTURE, { detectors: [utpDetector] }).flows;
    expect(whole).toEqual([expect.objectContaining({ initiator: '10.29.0.1:6881', responder: '10.29.0.2:6881', rule: 'utp', payloadPackets: 2 })]);
    // From every point of the transfer that leaves a few packets each way.
    for (let missed = 1; missed <= 120; missed++) {
      const late = scanCapture(FIXTURE, { detectors: [utpDetector], keep: (index) => index >= missed }).flows;
      expect(late).toEqual([expect.objectContaining({ rule: 'utp' })]);
      expect(late[0].payloadPackets).toBeLessThanOrEqual(utpDetector.budget);
    }
  });
});
