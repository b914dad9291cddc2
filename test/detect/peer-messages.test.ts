import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InspectContext, STRENGTH_EXACT, type Detector } from '../../src/detect/detector.js';
import { handshakeDetector } from '../../src/detect/handshake.js';
import { peerCacheDetector } from '../../src/detect/peer-cache.js';
import { peerMessagesDetector } from '../../src/detect/peer-messages.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { Clock } from '../../src/flow/clock.js';
import { PeerCache, PeerLists } from '../../src/flow/peers.js';
import { PacketDecoder } from '../../src/packet/decode.js';
import { DECODED_TCP_UDP, IPPROTO_TCP, PacketInfo } from '../../src/packet/packet.js';
import { readCapture } from '../../src/pcap/reader.js';
import { ascii, concat, ipv4Address, u16, u32 } from '../helpers/frames.js';
import { listedTo } from '../helpers/listed.js';
import {
  allowedFast,
  bencode,
  bitfield,
  cancel,
  choke,
  Conversation,
  extended,
  extensionHandshake,
  handshake,
  haveAll,
  haveNone,
  hashes,
  hashReject,
  hashRequest,
  have,
  interested,
  keepAlive,
  message,
  notInterested,
  pex,
  piece,
  port,
  rejectRequest,
  request,
  suggestPiece,
  unchoke,
} from '../helpers/peer-wire.js';

const CORPUS = resolve(import.meta.dirname, '../../../shared/corpus/ndpi');
const BLOCK = new Uint8Array(1 << 14).fill(0xc3);

/** Extension handshakes as real clients send them (BEP 10). */
const LIBTORRENT_EXTENSION_HANDSHAKE = bencode({
  complete_ago: -1,
  m: { lt_donthave: 7, share_mode: 8, upload_only: 3, ut_holepunch: 4, ut_metadata: 2, ut_pex: 1 },
  metadata_size: 31337,
  p: 51413,
  reqq: 500,
  v: 'qBittorrent/4.6.5',
  yourip: Uint8Array.from([198, 51, 100, 7]),
});
const TRANSMISSION_EXTENSION_HANDSHAKE = bencode({
  e: 1,
  ipv4: Uint8Array.from([203, 0, 113, 5]),
  m: { ut_holepunch: 4, ut_metadata: 3, ut_pex: 1 },
  metadata_size: 5020,
  p: 51413,
  reqq: 512,
  upload_only: 0,
  v: 'Transmission 4.0.5',
  yourip: Uint8Array.from([198, 51, 100, 7]),
});
/** Byte for byte from the corpus' bittorrent.pcap: µTorrent 3.4.5 leaves its `m` dict unsorted. */
const UTORRENT_EXTENSION_HANDSHAKE = concat(
  ascii('d1:ei0e4:ipv44:'),
  ipv4Address('82.58.216.115'),
  ascii('12:complete_agoi1e1:md11:upload_onlyi3e11:lt_donthavei7e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1e10:ut_commenti6ee'),
  ascii('13:metadata_sizei19009e1:pi38305e4:reqqi255e1:v15:\xce\xbcTorrent 3.4.52:ypi52907e6:yourip4:'),
  ipv4Address('82.55.205.1'),
  ascii('e'),
);
const UTORRENT_MAC_EXTENSION_HANDSHAKE = concat(
  ascii('d1:ei0e4:ipv44:'),
  ipv4Address('82.55.205.1'),
  ascii('4:ipv616:'),
  [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0xc6, 0x2c, 0x03, 0xff, 0xfe, 0x06, 0x49, 0xfe],
  ascii('12:complete_agoi1e1:md11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1e12:ut_recommendi5e10:ut_commenti6ee'),
  ascii('13:metadata_sizei19009e1:pi40959e4:reqqi255e1:v19:\xc2\xb5Torrent Mac 1.8.66:yourip4:'),
  ipv4Address('82.58.216.115'),
  ascii('e'),
);

/** Feeds `segments` ([direction, bytes]) to a fresh flow seen by peer-messages alone; returns the last verdict. */
function midStream(segments: [number, Uint8Array][]): number {
  const flow = new Conversation({ detectors: [peerMessagesDetector] });
  let verdict = VERDICT_UNDECIDED;
  for (const [dir, bytes] of segments) {
    verdict = flow.send(dir, bytes);
    if (verdict !== VERDICT_UNDECIDED) break;
  }
  return verdict;
}

describe('peer-messages detector (BEP 3 message stream without its handshake)', () => {
  it.each([
    ['a downloader: have, interested and pipelined requests in one segment', [[0, concat(have(3), interested(), request(7, 0), request(7, 16384), request(7, 32768))]]],
    ['requests one per segment', [[0, request(1, 0)], [0, request(1, 16384)], [0, request(1, 32768)]]],
    ['a bitfield, have and unchoke', [[1, concat(bitfield([0xff, 0xfe, 0x00, 0x80]), have(9))], [1, unchoke()]]],
    ['a 16 KiB piece over twelve segments and the next request', [[1, piece(12, 49152, BLOCK)], [0, request(12, 65536)], [0, interested()]]],
    ['keep-alives between the messages', [[0, concat(keepAlive(), have(1), keepAlive(), keepAlive(), have(2))], [0, concat(keepAlive(), notInterested())]]],
    ['two messages each way, as seen in the corpus (port, extended)', [[1, concat(port(60163), extended(3, Uint8Array.of(1)))], [0, concat(port(40959), extended(3, Uint8Array.of(0)))]]],
    ['BEP 6 fast messages', [[1, concat(haveAll(), allowedFast(4), allowedFast(9))], [0, concat(suggestPiece(4), rejectRequest(4, 0))]]],
    ['a cancel after choke', [[1, choke()], [0, concat(cancel(5, 0), cancel(5, 16384))]]],
    ['BEP 52 hash request, hashes and reject', [[0, hashRequest(0, 0, 8, 0)], [1, concat(hashes(0, 0, 8, 0), hashReject(0, 8, 8, 0))]]],
    ['have none then interested and a have', [[0, concat(haveNone(), interested())], [1, have(0)]]],
  ] as [string, [number, Uint8Array][]][])('matches %s', (_name, segments) => {
    expect(midStream(segments)).toBe(VERDICT_BITTORRENT);
  });

  it.each([
    ['libtorrent (qBittorrent)', LIBTORRENT_EXTENSION_HANDSHAKE],
    ['Transmission', TRANSMISSION_EXTENSION_HANDSHAKE],
    ['µTorrent 3.4.5', UTORRENT_EXTENSION_HANDSHAKE],
    ['µTorrent Mac 1.8.6', UTORRENT_MAC_EXTENSION_HANDSHAKE],
  ])('matches the extension handshake of %s followed by two messages', (_name, dict) => {
    expect(midStream([[0, concat(extensionHandshake(dict), bitfield([0x0f]), unchoke())]])).toBe(VERDICT_BITTORRENT);
  });

  it.each([
    ['keep-alives only', [[0, concat(keepAlive(), keepAlive())], [1, keepAlive()], [0, keepAlive()]]],
    ['one-byte messages only', [[0, concat(choke(), unchoke(), interested(), notInterested())], [1, concat(haveAll(), haveNone())]]],
    ['two strong messages and nothing else', [[0, have(1)], [1, request(1, 0)]]],
    ['an extension handshake whose dict has no m', [[0, concat(extensionHandshake({ v: 'x', p: 6881 }), bitfield([1]), unchoke())]]],
    ['a have of an absurd piece index', [[0, concat(message(4, u32(0x7f000000)), interested(), unchoke())]]],
    ['a request for an oversized block', [[0, concat(request(1, 0, 1 << 20), interested(), unchoke())]]],
    ['a request for nothing', [[0, concat(request(1, 0, 0), interested(), unchoke())]]],
    ['a port message for port 0', [[0, concat(port(0), interested(), unchoke())]]],
    ['a message id no BEP defines', [[0, concat(message(11, u32(1)), have(1), interested(), unchoke())]]],
    ['a malformed message that breaks an otherwise good chain', [[0, concat(have(1), have(2), message(4, u32(3), [0]), have(4))], [0, have(5)]]],
    ['a request for an absurd piece index', [[0, concat(request(0x7f000000, 0), interested(), unchoke())]]],
    ['a request at an absurd offset in its piece', [[0, concat(request(1, 0x40000000), interested(), unchoke())]]],
    ['a BEP 52 hash request for an absurd layer', [[0, concat(hashRequest(1 << 24, 0, 8, 0), interested(), unchoke())]]],
    ['16 KiB pieces off the block boundaries alone', [[1, concat(piece(1, 100, BLOCK), piece(1, 16484, BLOCK), piece(1, 32868, BLOCK))]]],
  ] as [string, [number, Uint8Array][]][])('does not match %s', (_name, segments) => {
    expect(midStream(segments)).not.toBe(VERDICT_BITTORRENT);
  });

  it('counts a piece of another block size, but not as strong evidence', () => {
    const odd = new Uint8Array(1000);
    expect(midStream([[1, concat(piece(1, 16384, odd), piece(1, 17384, odd), piece(1, 18384, odd))]])).not.toBe(VERDICT_BITTORRENT);
    expect(midStream([[1, concat(piece(1, 16384, odd), piece(1, 17384, odd), have(2))]])).toBe(VERDICT_BITTORRENT);
  });

  it('counts an extension handshake cut over segments, but reads its dict (strong evidence) only whole', () => {
    const stream = concat(extensionHandshake(LIBTORRENT_EXTENSION_HANDSHAKE), bitfield([0x0f]), unchoke());
    expect(midStream([[0, stream]])).toBe(VERDICT_BITTORRENT);
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    expect(flow.sendCut(0, stream, [40])).toBe(VERDICT_UNDECIDED);
    expect(flow.send(0, have(1))).toBe(VERDICT_BITTORRENT);
  });

  it('resynchronises at the next segment after a segment that started mid-message', () => {
    const tail = piece(3, 0, BLOCK).subarray(5000, 6448);
    expect(midStream([[1, tail], [0, concat(request(3, 16384), request(3, 32768), interested())]])).toBe(VERDICT_BITTORRENT);
  });

  describe('in a download met mid-way, finds a 16 KiB piece inside a segment: bulk data whose message boundaries TCP puts anywhere', () => {
    /** Four 16 KiB pieces of one 64 KiB piece, from `from` bytes in, in segments of `size` bytes, from the responder. */
    const bulk = (from: number, size: number) => {
      // Byte i of each block is the top byte of i times a Knuth multiplier (0 at 13153: stream offset 13166).
      const data = Uint8Array.from({ length: 1 << 14 }, (_, i) => (i * 2654435761) >>> 24);
      const stream = concat(...[0, 1, 2, 3].map((block) => piece(77, block << 14, data))).subarray(from);
      return Array.from({ length: Math.ceil(stream.length / size) }, (_, i): [number, Uint8Array] => [1, stream.subarray(i * size, (i + 1) * size)]);
    };

    it.each([
      ['inside a piece, in 4 KiB segments', bulk(5000, 4096)],
      ['inside a piece, segments of 7000 bytes', bulk(123, 7000)],
      // 42 segments: the third piece ends past the 32 payload packets read outside a chain.
      ['inside a piece, in MSS-sized segments', bulk(5000, 1448)],
      // A zero byte of the first piece's data opens the second segment (the first one searched),
      // which reads as a length until it breaks.
      ['past a zero byte of a piece, in 5 KiB segments', bulk(13166 - 5120, 5120)],
      ['with requests and haves the other way', [[0, request(77, 0)] as [number, Uint8Array], ...bulk(5000, 4096), [0, have(76)] as [number, Uint8Array]]],
    ] as [string, [number, Uint8Array][]][])('%s', (_name, segments) => {
      expect(midStream(segments)).toBe(VERDICT_BITTORRENT);
    });

    /** A direction's stream cut into segments of `size` bytes. */
    const cutInto = (stream: Uint8Array, size: number) =>
      Array.from({ length: Math.ceil(stream.length / size) }, (_, i): [number, Uint8Array] => [1, stream.subarray(i * size, (i + 1) * size)]);
    const data = Uint8Array.from({ length: 1 << 14 }, (_, i) => (i * 2654435761) >>> 24);
    /**
     * `lead` bytes of filler, then a piece message with header `header` (13 bytes), its block and
     * three haves: the chain a header found by the search starts. The default lead puts the header
     * past the first 5 KiB of a direction, which is never searched, in segments of up to 5 KiB.
     */
    const pieceThenHaves = (header: Uint8Array, blockLength = 1 << 14, lead = 2 * 5120 + 700) =>
      concat(new Uint8Array(lead).fill(0xa5), header, data.subarray(0, blockLength), have(1), have(2), have(3));

    it('and only there: not in a connection seen from its SYN, nor where the other direction is bulk too, nor in short segments, nor in the first 5 KiB of a direction', () => {
      const fromSyn = new Conversation({ detectors: [peerMessagesDetector] });
      fromSyn.syn();
      fromSyn.sent[1] = 5000;
      expect(bulk(5000, 4096).map(([dir, bytes]) => fromSyn.send(dir, bytes))).not.toContain(VERDICT_BITTORRENT);
      const bothWays = bulk(5000, 4096).flatMap((segment): [number, Uint8Array][] => [[0, new Uint8Array(4096).fill(0x5a)], segment]);
      expect(midStream(bothWays)).not.toBe(VERDICT_BITTORRENT);
      // A piece and three haves: searched, a chain in full-sized segments (an MSS, or coalesced);
      // in 1000-byte ones, or 700 bytes into a direction, no segment starts at a message.
      const header = piece(77, 0, data).subarray(0, 13);
      const stream = pieceThenHaves(header);
      expect(midStream(cutInto(stream, 5120))).toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(stream, 1448))).toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(stream, 1000))).not.toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(pieceThenHaves(header, 1 << 14, 700), 1448))).not.toBe(VERDICT_BITTORRENT);
    });

    it('and stops searching a direction 20 KiB after it began: a piece stream shows a header in every 16,397 bytes', () => {
      // The header in the eighth 4 KiB segment: the search read the second to the seventh.
      const late = pieceThenHaves(piece(77, 0, data).subarray(0, 13), 1 << 14, 7 * 4096 + 700);
      expect(midStream(cutInto(late, 4096))).not.toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(late.subarray(4096), 4096))).toBe(VERDICT_BITTORRENT);
      // Counted by their bytes: in segments of 2856 (two IPv6 MSS), a header 15,000 bytes in, in the sixth, is searched.
      const at15k = pieceThenHaves(piece(77, 0, data).subarray(0, 13), 1 << 14, 15000);
      expect(midStream(cutInto(at15k, 2856))).toBe(VERDICT_BITTORRENT);
      // One GSO segment of 30,000 bytes is a bulk run alone: searched, though it takes the direction past the limit.
      expect(midStream(cutInto(pieceThenHaves(piece(77, 0, data).subarray(0, 13), 1 << 14, 20000), 30000))).toBe(VERDICT_BITTORRENT);
    });

    it('and never takes a piece header off a block boundary or of another block size', () => {
      const header = (length: number, begin: number) => concat(u32(length), [7], u32(77), u32(begin));
      expect(midStream(cutInto(pieceThenHaves(header(16393, 0)), 4096))).toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(pieceThenHaves(header(16393, 100)), 4096))).not.toBe(VERDICT_BITTORRENT);
      expect(midStream(cutInto(pieceThenHaves(header(16393 + 1, 0), (1 << 14) + 1), 4096))).not.toBe(VERDICT_BITTORRENT);
    });

    it('never matches random coalesced segments one way, with or without a piece header cut at their end', () => {
      const header = piece(1, 0, BLOCK).subarray(0, 13);
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.uint8Array({ minLength: 4096, maxLength: 20000 }), fc.integer({ min: 1, max: 13 })), { minLength: 1, maxLength: 32 }), (segments) => {
          const withHeaders = segments.map(([bytes, cut]): [number, Uint8Array] => [1, concat(bytes, header.subarray(0, cut))]);
          expect(midStream(withHeaders)).not.toBe(VERDICT_BITTORRENT);
        }),
        { numRuns: 50 },
      );
    });
  });

  it('follows retransmissions and overlapping segments', () => {
    const stream = concat(have(1), have(2), request(2, 0));
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    expect(flow.send(0, stream.subarray(0, 7), 0)).toBe(VERDICT_UNDECIDED);
    expect(flow.send(0, stream.subarray(0, 7), 0)).toBe(VERDICT_UNDECIDED);
    expect(flow.send(0, stream.subarray(3, 15), 3)).toBe(VERDICT_UNDECIDED);
    expect(flow.send(0, stream.subarray(10), 10)).toBe(VERDICT_BITTORRENT);
  });

  it('keeps the chain across a gap in the capture when the stream resumes at a message boundary', () => {
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    expect(flow.send(0, concat(have(1), have(2)), 0)).toBe(VERDICT_UNDECIDED);
    // 17 bytes (a request) never captured.
    expect(flow.send(0, interested(), 18 + 17)).toBe(VERDICT_BITTORRENT);
  });

  it('reads on past 32 payload packets only in a flow met mid-way whose chain is under way', () => {
    // A 60,000-byte bitfield (a chain under way for 60 segments), then two haves: three messages.
    const stream = concat(u32(60_001), [5], new Uint8Array(60_000).fill(0xff), have(1), have(2));
    const cuts = Array.from({ length: Math.ceil(stream.length / 1000) - 1 }, (_, i) => (i + 1) * 1000);
    const midWay = new Conversation({ detectors: [peerMessagesDetector] });
    expect(midWay.sendCut(0, stream, cuts)).toBe(VERDICT_BITTORRENT);
    const fromSyn = new Conversation({ detectors: [peerMessagesDetector] });
    fromSyn.syn();
    expect(fromSyn.sendCut(0, stream, cuts)).not.toBe(VERDICT_BITTORRENT);
  });

  it('gives up at its budget of 32 payload packets', () => {
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    const record = concat([0x17, 3, 3], u16(64), new Uint8Array(64).fill(0x4e));
    const verdicts = Array.from({ length: 33 }, (_, i) => flow.send(i % 2, record));
    expect(verdicts.slice(0, 32).every((v) => v === VERDICT_UNDECIDED)).toBe(true);
    expect(verdicts[32]).toBe(VERDICT_CLEAN);
  });

  it('gives up at once on a flow that opens with text both ways', () => {
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    expect(flow.send(0, ascii('GET /announce?info_hash=%12 HTTP/1.1\r\nHost: t\r\n\r\n'))).toBe(VERDICT_UNDECIDED);
    expect(flow.send(0, have(1))).toBe(VERDICT_UNDECIDED);
    expect(flow.send(1, ascii('HTTP/1.1 200 OK\r\n\r\n'))).toBe(VERDICT_CLEAN);
  });

  it('keeps looking when only one direction opened with text (the tail of a piece of a text file)', () => {
    expect(midStream([[1, ascii('chapter one\r\n')], [0, request(1, 0)], [0, concat(request(1, 16384), interested())]])).toBe(VERDICT_BITTORRENT);
  });

  describe('gives the same verdict however the stream is cut into segments', () => {
    /** Messages whose evidence does not depend on where segments fall (an extension handshake does: it must be whole). */
    const messageArb = fc.oneof(
      fc.constantFrom(keepAlive(), choke(), unchoke(), interested(), notInterested(), haveAll(), haveNone()),
      fc.nat(1 << 20).map(have),
      fc.tuple(fc.nat(5000), fc.nat(64)).map(([index, block]) => request(index, block * 16384)),
      fc.tuple(fc.nat(5000), fc.nat(64)).map(([index, block]) => cancel(index, block * 16384)),
      fc.integer({ min: 1, max: 65535 }).map(port),
      fc.uint8Array({ minLength: 1, maxLength: 40 }).map(bitfield),
      fc.tuple(fc.nat(5000), fc.integer({ min: 1, max: 3000 })).map(([index, length]) => piece(index, 0, new Uint8Array(length))),
      fc.tuple(fc.integer({ min: 1, max: 20 }), fc.uint8Array({ maxLength: 30 })).map(([id, payload]) => extended(id, payload)),
      fc.tuple(fc.nat(3), fc.nat(100), fc.integer({ min: 1, max: 4 })).map(([base, index, length]) => hashes(base, index, length, 0)),
    );

    it('as a property over message sequences and cut points', () => {
      fc.assert(
        fc.property(fc.array(messageArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(4000), { maxLength: 12 }), (messages, cuts) => {
          const stream = concat(...messages);
          const whole = midStream([[0, stream]]);
          const flow = new Conversation({ detectors: [peerMessagesDetector] });
          const cutVerdict = flow.sendCut(0, stream, cuts.map((c) => c % stream.length));
          expect(whole === VERDICT_BITTORRENT).toBe(cutVerdict === VERDICT_BITTORRENT);
        }),
      );
    });

    it('at every byte boundary', () => {
      // 31 bytes: one byte per segment stays within the budget of 32 payload packets.
      const stream = concat(have(4), interested(), request(4, 16384));
      for (let cut = 1; cut < stream.length; cut++) {
        expect(new Conversation({ detectors: [peerMessagesDetector] }).sendCut(0, stream, [cut])).toBe(VERDICT_BITTORRENT);
      }
      const everyByte = Array.from({ length: stream.length }, (_, i) => i);
      expect(new Conversation({ detectors: [peerMessagesDetector] }).sendCut(0, stream, everyByte)).toBe(VERDICT_BITTORRENT);
    });
  });
});

describe('peer-messages against other length-prefixed protocols', () => {
  const tlsRecord = (type: number, length: number) => concat([type, 3, 3], u16(length), new Uint8Array(length).fill(0x9d));
  const h2Frame = (type: number, flags: number, stream: number, payload: Uint8Array) =>
    concat([(payload.length >>> 16) & 0xff, (payload.length >>> 8) & 0xff, payload.length & 0xff, type, flags], u32(stream), payload);
  const grpc = (payload: Uint8Array) => concat([0], u32(payload.length), payload);
  const pgMessage = (type: string, body: Uint8Array | number[]) => concat(ascii(type), u32(body.length + 4), body);
  const mysqlPacket = (sequence: number, body: Uint8Array) => concat([body.length & 0xff, (body.length >>> 8) & 0xff, body.length >>> 16, sequence], body);
  const netbios = (smb: Uint8Array) => concat([0], [(smb.length >>> 16) & 0xff, (smb.length >>> 8) & 0xff, smb.length & 0xff], smb);
  const smb2 = (command: number) => concat([0xfe], ascii('SMB'), u16(64).reverse(), new Uint8Array(6), u16(command).reverse(), new Uint8Array(52), new Uint8Array(36).fill(1));
  const kafka = (apiKey: number, correlation: number) => {
    const body = concat(u16(apiKey), u16(9), u32(correlation), u16(7), ascii('console'), new Uint8Array(12));
    return concat(u32(body.length), body);
  };

  it.each([
    ['TLS application data records', [[0, concat(tlsRecord(0x17, 100), tlsRecord(0x17, 5))], [1, tlsRecord(0x17, 1400)], [0, tlsRecord(0x15, 2)]]],
    [
      'HTTP/2 frames (SETTINGS, WINDOW_UPDATE, HEADERS, DATA, PING, RST_STREAM)',
      [
        [0, concat(h2Frame(4, 0, 0, new Uint8Array(18)), h2Frame(8, 0, 0, Uint8Array.of(0, 0xf, 0, 1)))],
        [1, concat(h2Frame(4, 1, 0, new Uint8Array(0)), h2Frame(1, 5, 1, new Uint8Array(0x1d).fill(0x82)))],
        [0, concat(h2Frame(1, 4, 3, new Uint8Array(13)), h2Frame(0, 1, 3, new Uint8Array(5)), h2Frame(6, 0, 0, new Uint8Array(8)))],
        [1, concat(h2Frame(3, 0, 3, new Uint8Array(4)), h2Frame(0, 0, 1, new Uint8Array(1)), h2Frame(0, 1, 1, new Uint8Array(3)))],
      ],
    ],
    [
      'gRPC messages in HTTP/2 DATA frames',
      [[0, h2Frame(0, 0, 1, grpc(new Uint8Array(5)))], [1, h2Frame(0, 0, 1, concat(grpc(Uint8Array.of(8, 1)), grpc(new Uint8Array(13))))], [1, h2Frame(1, 5, 1, new Uint8Array(13))]],
    ],
    [
      'PostgreSQL startup, authentication and rows',
      [
        [0, Uint8Array.of(0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f)],
        [0, concat(u32(41), u32(0x30000), ascii('user\0postgres\0database\0postgres\0\0'))],
        [1, concat(pgMessage('R', u32(0)), pgMessage('S', ascii('client_encoding\0UTF8\0')), pgMessage('K', new Uint8Array(8)), pgMessage('Z', ascii('I')))],
        [1, concat(pgMessage('T', new Uint8Array(27)), pgMessage('D', new Uint8Array(11)), pgMessage('C', ascii('SELECT 1\0')))],
      ],
    ],
    [
      'MySQL greeting, login and query',
      [
        [1, mysqlPacket(0, concat([10], ascii('8.0.36\0'), new Uint8Array(60)))],
        [0, mysqlPacket(1, new Uint8Array(85))],
        [1, mysqlPacket(2, Uint8Array.of(0, 0, 0, 2, 0, 0, 0))],
        [0, mysqlPacket(0, concat([3], ascii('SELECT 1')))],
        [0, mysqlPacket(0, Uint8Array.of(1))],
      ],
    ],
    ['SMB2 over NetBIOS', [[0, netbios(smb2(0))], [1, netbios(smb2(0))], [0, netbios(smb2(1))], [1, netbios(smb2(3))]]],
    ['RDP (TPKT)', [[0, Uint8Array.of(3, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0)], [1, Uint8Array.of(3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 0, 0, 0, 0)]]],
    ['Kafka requests and responses', [[0, concat(kafka(3, 1), kafka(0, 2))], [1, concat(u32(8), u32(1), u32(0))], [0, kafka(1, 3)], [1, concat(u32(5), u32(2), [0])]]],
    ['DNS over TCP', [[0, concat(u16(29), Uint8Array.of(0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0), new Uint8Array(17))], [1, concat(u16(45), Uint8Array.of(0x12, 0x34, 0x81, 0x80), new Uint8Array(41))]]],
    [
      'SSH with an encrypt-then-MAC cipher (plaintext lengths, multiples of 16)',
      [[0, concat(u32(32), Uint8Array.of(5), new Uint8Array(31 + 16).fill(0x07))], [1, concat(u32(48), Uint8Array.of(20), new Uint8Array(47 + 16).fill(0x14))], [0, concat(u32(16), Uint8Array.of(7), new Uint8Array(15 + 16))]],
    ],
  ] as [string, [number, Uint8Array][]][])('does not match %s', (_name, segments) => {
    expect(midStream(segments)).not.toBe(VERDICT_BITTORRENT);
  });

  it('never matches random TCP streams, however they are cut', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1 }), fc.uint8Array({ minLength: 1, maxLength: 1500 })), { minLength: 1, maxLength: 32 }),
        (segments) => {
          expect(midStream(segments)).not.toBe(VERDICT_BITTORRENT);
        },
      ),
    );
  });
});

describe('peer wire walkers never read outside the payload', () => {
  const DETECTORS: Detector[] = [peerMessagesDetector, handshakeDetector];
  const MARGIN = 32;

  it('for arbitrary segments in both directions, with arbitrary sequence numbers', () => {
    const segmentArb = fc.record({
      dir: fc.integer({ min: 0, max: 1 }),
      seqJump: fc.oneof(fc.constant(0), fc.integer({ min: -3000, max: 3000 }), fc.nat()),
      payload: fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 600 }),
        // Coalesced, searched for a piece's header: one planted anywhere, cut by the end or not.
        fc
          .tuple(fc.uint8Array({ minLength: 4096, maxLength: 6000 }), fc.nat())
          .map(([bytes, at]) => {
            const out = bytes.slice();
            const from = at % out.length;
            out.set(piece(1, 0, BLOCK).subarray(0, Math.min(13, out.length - from)), from);
            return out;
          }),
        fc.array(fc.constantFrom(have(1), request(1, 0), port(7000), pex(1, ['192.0.2.1:6881']), extensionHandshake(LIBTORRENT_EXTENSION_HANDSHAKE), handshake(), keepAlive()), { minLength: 1, maxLength: 4 })
          .chain((messages) => fc.tuple(fc.constant(concat(...messages)), fc.nat(), fc.nat()))
          .map(([stream, a, b]) => stream.subarray(Math.min(a, b) % stream.length, Math.max(a, b) % stream.length + 1)),
      ),
    });
    fc.assert(
      fc.property(fc.array(segmentArb, { minLength: 1, maxLength: 24 }), fc.integer({ min: 0, max: 3 }), (segments, mode) => {
        const detector = DETECTORS[mode & 1];
        const learning = mode >= 2;
        const state = new Uint8Array(detector.stateBytes + 2 * MARGIN);
        const ctx = new InspectContext();
        ctx.state = state;
        ctx.stateOff = MARGIN;
        const clock = new Clock();
        const announced = new PeerCache(64, 60_000, clock, undefined, true);
        ctx.proven = new PeerCache(64, 60_000, clock);
        const seq = [0xfffff000, 0x10];
        const dirIndex = [0, 0];
        segments.forEach(({ dir, seqJump, payload }, flowIndex) => {
          // The packet: addresses, then the payload, inside a buffer whose other bytes must stay unread.
          const bytes = concat(new Uint8Array(MARGIN), ipv4Address('10.0.0.1'), ipv4Address('10.0.0.2'), payload, new Uint8Array(MARGIN));
          const payloadOff = MARGIN + 8;
          const stray: number[] = [];
          const pkt = new PacketInfo();
          pkt.buf = new Proxy(bytes, {
            get(target, property) {
              if (typeof property === 'string' && /^\d+$/.test(property)) {
                const index = Number(property);
                if (index < MARGIN || index >= payloadOff + payload.length) stray.push(index);
                return target[index];
              }
              const value: unknown = Reflect.get(target, property, target);
              return typeof value === 'function' ? value.bind(target) : value;
            },
          });
          pkt.family = 4;
          pkt.l4 = IPPROTO_TCP;
          pkt.srcOff = dir === 0 ? MARGIN : MARGIN + 4;
          pkt.dstOff = dir === 0 ? MARGIN + 4 : MARGIN;
          pkt.sport = dir === 0 ? 40000 : 6881;
          pkt.dport = dir === 0 ? 6881 : 40000;
          pkt.payloadOff = payloadOff;
          pkt.payloadLen = payload.length;
          seq[dir] = (seq[dir] + seqJump) >>> 0;
          pkt.tcpSeq = seq[dir];
          seq[dir] = (seq[dir] + payload.length) >>> 0;
          ctx.pkt = pkt;
          ctx.peers = new PeerLists(announced, pkt);
          ctx.dir = dir;
          ctx.dirIndex = dirIndex[dir]++;
          ctx.flowIndex = flowIndex;
          if (learning) detector.learn!(ctx);
          else detector.inspect(ctx);
          expect(stray).toEqual([]);
        });
        expect(state.subarray(0, MARGIN).every((b) => b === 0)).toBe(true);
        expect(state.subarray(MARGIN + detector.stateBytes).every((b) => b === 0)).toBe(true);
      }),
    );
  });
});

describe('PEX learning (BEP 11)', () => {
  const detectors = [handshakeDetector, peerMessagesDetector, peerCacheDetector];
  const CLIENT = '10.0.0.1';
  const SERVER = '10.0.0.2';
  /** Whether the endpoint is listed to `host`: by default the server, which receives what the client sends. */
  const has = (engine: Engine, address: string, port: number, host = SERVER) => listedTo(engine, address, port, host);

  /** A plaintext connection up to the extension handshakes: the client assigns ut_pex 1, the server 5. */
  function connected(engine?: Engine): Conversation {
    const flow = new Conversation({ detectors, ...(engine ? { engine } : {}) });
    expect(flow.send(0, concat(handshake(), extensionHandshake({ m: { ut_metadata: 2, ut_pex: 1 }, p: 51413, v: 'qBittorrent/4.6.5' })))).toBe(VERDICT_BITTORRENT);
    expect(flow.rule()).toBe('handshake');
    flow.send(1, handshake('-TR4050-abcdefghijkl'));
    flow.send(1, concat(extensionHandshake({ m: { ut_metadata: 3, ut_pex: 5 }, v: 'Transmission 4.0.5' }), bitfield([0xff])));
    return flow;
  }

  it('caches the added and added6 peers of a ut_pex message after the handshake, and not the dropped ones', () => {
    const flow = connected();
    flow.send(0, pex(5, ['192.0.2.10:6881', '198.51.100.20:51413'], ['[2001:db8::9]:6000'], ['203.0.113.99:7000']));
    const engine = flow.engine;
    expect(has(engine, '192.0.2.10', 6881)).toBe(true);
    expect(has(engine, '198.51.100.20', 51413)).toBe(true);
    expect(has(engine, '2001:db8::9', 6000)).toBe(true);
    expect(has(engine, '203.0.113.99', 7000)).toBe(false);
    // Listed to the server, which received the message; not to the client that sent it.
    expect(has(engine, '192.0.2.10', 6881, CLIENT)).toBe(false);
  });

  it("decides a later flow of the host a peer was PEX-listed to by the peer cache, and no other host's", () => {
    const flow = connected();
    flow.send(1, pex(1, ['192.0.2.44:24000']));
    const encrypted = Uint8Array.from({ length: 96 }, (_, i) => (i * 37 + 11) & 0xff);
    const later = new Conversation({ engine: flow.engine, client: CLIENT, server: '192.0.2.44', clientPort: 41000, serverPort: 24000 });
    expect(later.send(0, encrypted)).toBe(VERDICT_BITTORRENT);
    expect(later.rule()).toBe('peer-cache');
    expect(flow.engine.strengthName(flow.engine.lastFlow)).toBe('announced');
    const otherHost = new Conversation({ engine: flow.engine, client: '10.0.0.3', server: '192.0.2.44', clientPort: 41000, serverPort: 24000 });
    expect(otherHost.send(0, encrypted)).not.toBe(VERDICT_BITTORRENT);
  });

  it('reads ut_pex only under the id the receiver assigned once that is known', () => {
    const flow = connected();
    flow.send(0, pex(1, ['192.0.2.10:6881']));
    expect(has(flow.engine, '192.0.2.10', 6881)).toBe(false);
    flow.send(1, pex(1, ['192.0.2.11:6881']));
    expect(has(flow.engine, '192.0.2.11', 6881, CLIENT)).toBe(true);
  });

  it('learns the listen port of the extension handshake and the DHT port of a port message', () => {
    const flow = connected();
    flow.send(1, port(6999));
    // Each told to the other end.
    expect(has(flow.engine, CLIENT, 51413)).toBe(true);
    expect(has(flow.engine, SERVER, 6999, CLIENT)).toBe(true);
    expect(has(flow.engine, SERVER, 6999)).toBe(false);
  });

  it('learns across the handshake and extension handshake arriving in pieces', () => {
    const flow = new Conversation({ detectors });
    const opening = concat(handshake(), extensionHandshake({ m: { ut_pex: 3 } }));
    expect(flow.sendCut(0, opening, [10, 30, 70, 75])).toBe(VERDICT_BITTORRENT);
    flow.sendCut(1, concat(handshake(), extensionHandshake({ m: { ut_pex: 9 } })), [68]);
    flow.sendCut(0, concat(have(1), pex(9, ['192.0.2.77:6881'])), [3, 12]);
    expect(has(flow.engine, '192.0.2.77', 6881)).toBe(true);
  });

  it('caches the entries a PEX message cut by the segment end holds', () => {
    const flow = connected();
    const message = pex(5, ['192.0.2.1:1111', '192.0.2.2:2222', '192.0.2.3:3333']);
    const entries = Buffer.from(message).indexOf('5:added18:') + '5:added18:'.length;
    flow.send(0, message.subarray(0, entries + 2 * 6 + 3));
    expect(has(flow.engine, '192.0.2.1', 1111)).toBe(true);
    expect(has(flow.engine, '192.0.2.2', 2222)).toBe(true);
    expect(has(flow.engine, '192.0.2.3', 3333)).toBe(false);
  });

  it('learns from a flow decided mid-stream, recognising ut_pex by its dictionary', () => {
    const flow = new Conversation({ detectors });
    expect(flow.send(0, concat(have(1), have(2), request(2, 0)))).toBe(VERDICT_BITTORRENT);
    expect(flow.rule()).toBe('peer-messages');
    // Exact evidence, from the side whose messages completed the proof.
    expect(flow.engine.strengthName(flow.engine.lastFlow)).toBe('exact');
    expect(flow.engine.flows.producer[flow.engine.lastFlow]).toBe(0);
    flow.send(1, concat(piece(2, 0, BLOCK.subarray(0, 100)), pex(4, ['192.0.2.50:50000'])));
    expect(has(flow.engine, '192.0.2.50', 50000, CLIENT)).toBe(true);
    // The engine proves no endpoint of the flow itself (the policy decides; mid-stream it never bans).
    expect(flow.engine.proven.inserts).toBe(0);
    expect(has(flow.engine, SERVER, 6881, CLIENT)).toBe(false);
  });

  it('does not learn before the flow is decided', () => {
    const flow = new Conversation({ detectors: [peerMessagesDetector] });
    expect(flow.send(0, concat(pex(1, ['192.0.2.60:6881']), port(7001)))).toBe(VERDICT_UNDECIDED);
    expect(has(flow.engine, '192.0.2.60', 6881)).toBe(false);
    expect(has(flow.engine, '10.0.0.1', 7001)).toBe(false);
    const other = new Conversation({ detectors: [peerMessagesDetector], clientPort: 40001 });
    expect(other.send(0, extensionHandshake({ m: { ut_pex: 1 }, p: 7002 }))).toBe(VERDICT_UNDECIDED);
    expect(has(other.engine, '10.0.0.1', 7002)).toBe(false);
  });

  it('ignores an added string that is not whole compact entries', () => {
    const flow = connected();
    flow.send(0, extended(5, bencode({ added: concat(ipv4Address('192.0.2.80'), u16(6881), [0]) })));
    expect(has(flow.engine, '192.0.2.80', 6881)).toBe(false);
  });

  it('stops reading a matched flow at the handshake budget of 64 payload packets', () => {
    const flow = connected();
    // connected() sent payload packets 0 to 2.
    for (let i = 3; i < 63; i++) flow.send(i % 2, have(i));
    flow.send(0, pex(5, ['192.0.2.70:6881']));
    flow.send(0, pex(5, ['192.0.2.71:6881']));
    expect(has(flow.engine, '192.0.2.70', 6881)).toBe(true);
    expect(has(flow.engine, '192.0.2.71', 6881)).toBe(false);
  });
});

it('peer-messages is exact evidence from a peer', () => {
  expect(peerMessagesDetector.strength).toBe(STRENGTH_EXACT);
  expect(peerMessagesDetector.producerIsPeer).toBe(true);
});

describe('peer-messages on the corpus', () => {
  const capture = join(CORPUS, 'bittorrent.pcap');

  /** Runs the peer-messages detector alone over a capture with each TCP flow's first `skip` payload packets removed. */
  function midStreamView(path: string, skip: number): string[] {
    const engine = new Engine({ flowCapacity: 4096, detectors: [peerMessagesDetector] });
    const decoder = new PacketDecoder();
    const pkt = new PacketInfo();
    const skipped = new Map<string, number>();
    const matched = new Set<string>();
    readCapture(path, (buf, off, capLen, _origLen, linkType, tsMs) => {
      if (decoder.decode(buf, off, capLen, linkType, pkt) === DECODED_TCP_UDP && pkt.l4 === IPPROTO_TCP && pkt.payloadLen > 0) {
        const a = `${Array.from(buf.subarray(pkt.srcOff, pkt.srcOff + 4)).join('.')}:${pkt.sport}`;
        const b = `${Array.from(buf.subarray(pkt.dstOff, pkt.dstOff + 4)).join('.')}:${pkt.dport}`;
        const key = a < b ? `${a} ${b}` : `${b} ${a}`;
        const seen = skipped.get(key) ?? 0;
        if (seen < skip) {
          skipped.set(key, seen + 1);
          return;
        }
        engine.clock.nowMs = tsMs;
        if (engine.process(buf, off, capLen, linkType) === VERDICT_BITTORRENT) matched.add(key);
      }
    });
    return [...matched].sort();
  }

  it.skipIf(!existsSync(capture))('catches the plaintext peer flows of bittorrent.pcap seen without their first payload packet', () => {
    // Each of these shows at least three whole messages after its first packet. The eleven others
    // cannot be: after the handshake they carry only the rest of an extension handshake (cut at
    // an unknown place) and at most two messages (a port and an upload_only) before the capture ends.
    const clientPorts = midStreamView(capture, 1).map((flow) => flow.match(/192\.168\.1\.3:(\d+)/)![1]);
    expect(clientPorts.sort()).toEqual(['52895', '52897', '52903', '52906', '52907', '52911', '52912', '52914', '52915', '52917', '52921', '52922', '52927']);
  });

  it.skipIf(!existsSync(CORPUS))('flags nothing but BitTorrent flows in mid-stream views of every corpus capture', () => {
    const flagged = new Set<string>();
    for (const name of readdirSync(CORPUS).filter((n) => !n.endsWith('.json'))) {
      for (const skip of [1, 3]) if (midStreamView(join(CORPUS, name), skip).length > 0) flagged.add(name);
    }
    expect([...flagged]).toEqual(['bittorrent.pcap']);
  });
});

it('peer-messages is registered among the heuristics, before the peer cache', async () => {
  const { DETECTORS } = await import('../../src/detect/registry.js');
  const names = DETECTORS.map((d) => d.name);
  expect(names).toContain('peer-messages');
  expect(names.indexOf('peer-messages')).toBeLessThan(names.indexOf('peer-cache'));
  expect(names.indexOf('peer-messages')).toBeGreaterThan(names.indexOf('handshake'));
});
