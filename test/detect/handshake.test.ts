import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { STRENGTH_EXACT } from '../../src/detect/detector.js';
import { handshakeDetector } from '../../src/detect/handshake.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { ascii, concat, packet4, tcp } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import { Conversation, extensionHandshake, handshake, pex } from '../helpers/peer-wire.js';

const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8).fill(0), new Uint8Array(20).fill(7), ascii('-qB4650-012345678901'));
const ISN = 0xfffffff0; // close to wrap-around, so sequence arithmetic must be modular

/** Sends `segments` (offset into the stream, bytes) from client to server; returns the last verdict. */
function send(segments: [number, Uint8Array][], fromServer = false): number {
  const engine = new Engine({ flowCapacity: 8, detectors: [handshakeDetector] });
  let verdict = VERDICT_UNDECIDED;
  for (const [offset, bytes] of segments) {
    const segment = fromServer
      ? tcp(6881, 40000, bytes, { seq: (ISN + offset) >>> 0 })
      : tcp(40000, 6881, bytes, { seq: (ISN + offset) >>> 0 });
    const frame = fromServer ? packet4('10.0.0.2', '10.0.0.1', 6, segment) : packet4('10.0.0.1', '10.0.0.2', 6, segment);
    verdict = engine.process(frame, 0, frame.length, LINKTYPE_RAW);
    if (verdict !== VERDICT_UNDECIDED) break;
  }
  return verdict;
}

describe('handshake detector (BEP 3)', () => {
  it.each([
    ['whole handshake in one segment', [[0, HANDSHAKE]]],
    ['just the 20-byte prefix', [[0, HANDSHAKE.subarray(0, 20)]]],
    ['one byte per segment', Array.from({ length: 20 }, (_, i) => [i, HANDSHAKE.subarray(i, i + 1)])],
    ['a retransmitted first segment', [[0, HANDSHAKE.subarray(0, 5)], [0, HANDSHAKE.subarray(0, 5)], [5, HANDSHAKE.subarray(5)]]],
    ['overlapping segments', [[0, HANDSHAKE.subarray(0, 10)], [4, HANDSHAKE.subarray(4, 15)], [15, HANDSHAKE.subarray(15)]]],
    ['a segment after a gap, then the gap filled', [[0, HANDSHAKE.subarray(0, 5)], [10, HANDSHAKE.subarray(10)], [5, HANDSHAKE.subarray(5)]]],
  ] as [string, [number, Uint8Array][]][])('matches %s', (_name, segments) => {
    expect(send(segments)).toBe(VERDICT_BITTORRENT);
  });

  it('matches a handshake sent first by the responder', () => {
    expect(send([[0, HANDSHAKE]], true)).toBe(VERDICT_BITTORRENT);
  });

  it.each([
    ['a near miss in the last byte', concat([19], ascii('BitTorrent protocoL'))],
    ['the prefix not at the start of the stream', concat(ascii('x'), HANDSHAKE)],
    ['a different length byte', concat([18], ascii('BitTorrent protocol'))],
    ['TLS ClientHello', Uint8Array.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])],
    ['SSH banner', ascii('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')],
  ])('does not match %s', (_name, bytes) => {
    expect(send([[0, bytes]])).not.toBe(VERDICT_BITTORRENT);
  });

  it('gives up once both directions started with something else', () => {
    const engine = new Engine({ flowCapacity: 8, detectors: [handshakeDetector] });
    const request = packet4('10.0.0.1', '10.0.0.2', 6, tcp(40000, 6881, ascii('GET / HTTP/1.0\r\n\r\n')));
    const reply = packet4('10.0.0.2', '10.0.0.1', 6, tcp(6881, 40000, ascii('HTTP/1.0 200 OK\r\n\r\n')));
    expect(engine.process(request, 0, request.length, LINKTYPE_RAW)).toBe(VERDICT_UNDECIDED);
    expect(engine.process(reply, 0, reply.length, LINKTYPE_RAW)).toBe(VERDICT_CLEAN);
  });

  it('gives the same verdict however the stream is cut into segments and reordered', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: HANDSHAKE.length - 1 }), { maxLength: 12 }),
        fc.boolean(),
        (cuts, swapFirstTwo) => {
          const bounds = [0, ...cuts.sort((a, b) => a - b), HANDSHAKE.length];
          const segments: [number, Uint8Array][] = [];
          for (let i = 0; i + 1 < bounds.length; i++) segments.push([bounds[i], HANDSHAKE.subarray(bounds[i], bounds[i + 1])]);
          // A reordered later segment arrives before its predecessor; the retransmission repairs it.
          if (swapFirstTwo && segments.length > 2) segments.splice(1, 0, segments[2]);
          expect(send(segments)).toBe(VERDICT_BITTORRENT);
        },
      ),
    );
  });
});

describe('handshake detector after the match', () => {
  const CLIENT = '10.0.0.1';
  const SERVER = '10.0.0.2';

  it('walks the messages after both 68-byte handshakes for the peers they name, each listed to the end that read it', () => {
    const flow = new Conversation({ detectors: [handshakeDetector] });
    // The extension handshake shares the matching segment, which learn() never sees: inspect reads it.
    expect(flow.send(0, concat(handshake(), extensionHandshake({ m: { ut_pex: 2 }, p: 51413 })))).toBe(VERDICT_BITTORRENT);
    // The client's listen port, told to the server.
    expect(listedTo(flow.engine, CLIENT, 51413, SERVER)).toBe(true);
    expect(listedTo(flow.engine, CLIENT, 51413, CLIENT)).toBe(false);
    flow.sendCut(1, concat(handshake('-TR4050-abcdefghijkl'), extensionHandshake({ m: { ut_pex: 6 } })), [20, 68]);
    flow.send(1, pex(2, ['192.0.2.5:6881']));
    flow.send(0, pex(6, ['192.0.2.6:6881']));
    expect(listedTo(flow.engine, '192.0.2.5', 6881, CLIENT)).toBe(true);
    expect(listedTo(flow.engine, '192.0.2.5', 6881, SERVER)).toBe(false);
    expect(listedTo(flow.engine, '192.0.2.6', 6881, SERVER)).toBe(true);
    expect(listedTo(flow.engine, '192.0.2.6', 6881, CLIENT)).toBe(false);
    // Neither end is proven by the engine: that is the policy's.
    expect(flow.engine.proven.inserts).toBe(0);
  });

  it('is exact evidence from a peer, produced by the side whose handshake matched', () => {
    expect(handshakeDetector.strength).toBe(STRENGTH_EXACT);
    expect(handshakeDetector.producerIsPeer).toBe(true);
    const flow = new Conversation({ detectors: [handshakeDetector] });
    flow.send(0, ascii('hello'));
    expect(flow.send(1, handshake())).toBe(VERDICT_BITTORRENT);
    expect(flow.engine.strengthName(flow.engine.lastFlow)).toBe('exact');
    expect(flow.engine.flows.producer[flow.engine.lastFlow]).toBe(1);
  });
});
