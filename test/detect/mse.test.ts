import { existsSync, readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GIVE_UP, InspectContext, MATCH, MORE, STRENGTH_HEURISTIC } from '../../src/detect/detector.js';
import { mseDetector } from '../../src/detect/mse.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_UNDECIDED } from '../../src/engine/engine.js';
import { Clock } from '../../src/flow/clock.js';
import { PeerCache, PeerLists, TorrentingHosts } from '../../src/flow/peers.js';
import { LINKTYPE_RAW } from '../../src/packet/linktype.js';
import { IPPROTO_TCP, PacketInfo, TCP_ACK, TCP_SYN } from '../../src/packet/packet.js';
import { scanCapture } from '../helpers/capture.js';
import { ascii, concat, ipv4Address, packet4, tcp, u16, udp } from '../helpers/frames.js';

/** One TCP segment: its direction (0 from the initiator), its offset in that direction's stream, its bytes. */
interface Segment {
  dir: number;
  at: number;
  bytes: Uint8Array;
  /** Bytes of the other direction's stream its sender had received (its acknowledgement number past the other's ISN). */
  acked?: number;
}

/** A seeded xorshift32, so every run draws the same "random" bytes and exchanges. */
function randomSource(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

const next = randomSource(0x6d7365);
/** n random bytes: what every MSE byte looks like. */
function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = next() & 0xff;
  return out;
}

/**
 * n random bytes opening a direction (Ya, Yb and their padding), whose first byte reads as no
 * other protocol's header: mse gives up on a first segment framed like TLS or by a 2- or 4-byte
 * length (OpenVPN over TCP), as about 1 in 65,536 random keys is, and a test of segmentation must
 * not hang on that draw.
 */
function key(n: number): Uint8Array {
  const out = random(n);
  out[0] |= 0x80;
  return out;
}

const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(8), random(20), ascii('-TR4050-012345678901'));

/** One segment per burst, in order: [direction, bytes]... */
function bursts(...parts: [number, Uint8Array][]): Segment[] {
  const at = [0, 0];
  return parts.map(([dir, bytes]) => {
    const segment = { dir, at: at[dir], bytes, acked: at[dir ^ 1] };
    at[dir] += bytes.length;
    return segment;
  });
}

/** What a route that shows one direction carries of an exchange: that direction's segments, acknowledging the other's bytes. */
function oneWay(dir: number, segments: Segment[]): Segment[] {
  return segments.filter((segment) => segment.dir === dir);
}

/** A segment's acknowledgement number. */
function ackOf({ dir, acked }: Segment): number {
  return (ISN[dir ^ 1] + (acked ?? 0)) >>> 0;
}

/** Cuts one segment into pieces of the given sizes (the rest in a last piece). */
function cut(segment: Segment, ...sizes: number[]): Segment[] {
  const pieces: Segment[] = [];
  let from = 0;
  for (const size of [...sizes, segment.bytes.length]) {
    const to = Math.min(from + size, segment.bytes.length);
    if (to > from) pieces.push({ ...segment, at: segment.at + from, bytes: segment.bytes.subarray(from, to) });
    from = to;
  }
  return pieces;
}

/**
 * libtorrent, aria2: the handshake follows message 4 on its own (A's write of exactly 68), B answers
 * with its own and more, A goes on (extension handshake, bitfield: 235 bytes in the lab), and so
 * does B (unchoke, allowed fast: 50 bytes).
 */
function handshakeAfterSync(padA: number, padB: number, padC: number, padD: number, answer = 68 + 220, next: number | null = 235): Segment[] {
  const exchange: [number, Uint8Array][] = [[0, key(96 + padA)], [1, key(96 + padB)], [0, random(56 + padC)], [1, random(14 + padD)], [0, random(68)], [1, random(answer)]];
  if (next !== null) exchange.push([0, random(next)], [1, random(50)]);
  return bursts(...exchange);
}

/** Transmission, rtorrent: the handshake is IA in a 124-byte message 3; B writes its own right after message 4. */
function handshakeInSync(padA: number, padB: number, ...after: [number, number][]): Segment[] {
  return bursts([0, key(96 + padA)], [1, key(96 + padB)], [0, random(124)], [1, random(82)], [1, random(134)], ...after.map(([dir, n]): [number, Uint8Array] => [dir, random(n)]));
}

const ISN = [0xfffffff0, 0x7ffffff8]; // the initiator's close to wrap-around: sequence arithmetic must be modular

/**
 * Sends the segments of one connection (10.0.0.1:40000 to 10.0.0.2:port) through an engine running
 * mse alone; the initiator has spoken BitTorrent before unless `torrenting` is false. `opening`:
 * what the gateway saw before the segments: nothing, the initiator's SYN, or the SYN and the
 * responder's SYN-ACK.
 */
function verdictOf(segments: Segment[], responderPort = 51413, opening: 'syn' | 'handshake' | 'none' = 'none', torrenting = true): { verdict: number; rule: string; strength: string } {
  const engine = new Engine({ flowCapacity: 8, detectors: [mseDetector] });
  if (torrenting) engine.torrenting.mark(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0);
  const frame = (dir: number, bytes: Uint8Array, seq: number, ack: number, flags = 0x18) =>
    dir === 0
      ? packet4('10.0.0.1', '10.0.0.2', 6, tcp(40000, responderPort, bytes, { seq, ack, flags }))
      : packet4('10.0.0.2', '10.0.0.1', 6, tcp(responderPort, 40000, bytes, { seq, ack, flags }));
  let verdict = VERDICT_UNDECIDED;
  if (opening !== 'none') {
    const syn = frame(0, new Uint8Array(0), (ISN[0] - 1) >>> 0, 0, TCP_SYN);
    engine.process(syn, 0, syn.length, LINKTYPE_RAW);
  }
  if (opening === 'handshake') {
    const synAck = frame(1, new Uint8Array(0), (ISN[1] - 1) >>> 0, ISN[0], TCP_SYN | TCP_ACK);
    engine.process(synAck, 0, synAck.length, LINKTYPE_RAW);
  }
  for (const segment of segments) {
    const packet = frame(segment.dir, segment.bytes, (ISN[segment.dir] + segment.at) >>> 0, ackOf(segment));
    verdict = engine.process(packet, 0, packet.length, LINKTYPE_RAW);
    if (verdict !== VERDICT_UNDECIDED) break;
  }
  const flow = engine.lastFlow;
  return { verdict, rule: flow >= 0 ? engine.ruleNames[engine.flows.rule[flow]] : '', strength: flow >= 0 ? engine.strengthName(flow) : '' };
}

function named(segments: Segment[], responderPort?: number): boolean {
  const { verdict, rule } = verdictOf(segments, responderPort);
  return verdict === VERDICT_BITTORRENT && rule === 'mse';
}

/**
 * Runs mse alone over a connection the way the engine does (budget, per-direction packet
 * indexes), without building frames: fast enough for hundreds of thousands of random exchanges.
 * With `guard`, the payload buffer is a Proxy that records every read outside the payload and the
 * two addresses (the peer cache may read those).
 */
class DirectRunner {
  readonly pkt = new PacketInfo();
  readonly ctx = new InspectContext();
  readonly strayReads: number[] = [];
  private readonly plain = new Uint8Array(8 + 2048);
  private readonly guarded: Uint8Array;
  private payloadEnd = 0;

  constructor() {
    this.ctx.pkt = this.pkt;
    const clock = new Clock();
    this.ctx.peers = new PeerLists(new PeerCache(64, 3_600_000, clock, undefined, true), this.pkt);
    this.ctx.proven = new PeerCache(64, 3_600_000, clock);
    this.ctx.torrenting = new TorrentingHosts(64, 3_600_000, clock);
    this.torrenting(true);
    this.ctx.state = new Uint8Array(mseDetector.stateBytes + 8);
    this.ctx.stateOff = 4;
    this.pkt.family = 4;
    this.pkt.l4 = IPPROTO_TCP;
    this.pkt.payloadOff = 8;
    this.guarded = new Proxy(this.plain, {
      get: (target, property) => {
        if (typeof property === 'string' && /^\d+$/.test(property)) {
          const index = Number(property);
          if (index >= this.payloadEnd) this.strayReads.push(index);
          return target[index];
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  /** Whether the initiator spoke BitTorrent before: with it, what the shape evidence alone names. */
  torrenting(on: boolean): void {
    this.ctx.torrenting.clear();
    if (on) this.ctx.torrenting.mark(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0);
  }

  /** The outcome: MATCH, GIVE_UP (by the detector or the budget) or MORE when the segments ran out. */
  run(segments: readonly Segment[], responderPort = 51413, guard = false): number {
    const { ctx, pkt, plain } = this;
    ctx.state.fill(0);
    pkt.buf = guard ? this.guarded : plain;
    const packets = [0, 0];
    let flowIndex = 0;
    for (const segment of segments) {
      const { dir, at, bytes } = segment;
      if (bytes.length === 0) continue;
      if (flowIndex >= mseDetector.budget) return GIVE_UP;
      plain.set(dir === 0 ? [...ipv4Address('10.0.0.1'), ...ipv4Address('10.0.0.2')] : [...ipv4Address('10.0.0.2'), ...ipv4Address('10.0.0.1')]);
      plain.set(bytes, 8);
      this.payloadEnd = 8 + bytes.length;
      pkt.srcOff = 0;
      pkt.dstOff = 4;
      pkt.sport = dir === 0 ? 40000 : responderPort;
      pkt.dport = dir === 0 ? responderPort : 40000;
      pkt.tcpSeq = (ISN[dir] + at) >>> 0;
      pkt.tcpAck = ackOf(segment);
      pkt.payloadLen = bytes.length;
      ctx.dir = dir;
      ctx.dirIndex = packets[dir]++;
      ctx.flowIndex = flowIndex++;
      const outcome = mseDetector.inspect(ctx);
      if (outcome !== MORE) return outcome;
    }
    return MORE;
  }
}

describe('mse detector (Message Stream Encryption)', () => {
  describe('names the handshake of each way clients send the BEP 3 handshake behind it', () => {
    it.each([
      ['after message 4, with pads', handshakeAfterSync(200, 37, 100, 300)],
      ['after message 4, no pads at all', handshakeAfterSync(0, 0, 0, 0)],
      ['after message 4, the largest pads', handshakeAfterSync(512, 512, 512, 512)],
      ['after message 4, answered by the bare 68-byte handshake (aria2)', handshakeAfterSync(10, 300, 231, 99, 68)],
      ['inside message 3, then bare messages from both sides (Transmission)', handshakeInSync(285, 123, [0, 169], [1, 43], [0, 5], [1, 5])],
      ['inside message 3, then a keep-alive and an interested (rtorrent)', bursts([0, random(508)], [1, random(109)], [0, random(124)], [1, random(199)], [0, random(121)], [1, random(4)], [0, random(5)])],
      [
        'inside message 3 with a padded message 4, three bare messages',
        bursts([0, random(300)], [1, random(200)], [0, random(124)], [1, random(14 + 40 + 68 + 150)], [0, random(190)], [1, random(5)], [0, random(9)], [1, random(17)]),
      ],
      [
        'plaintext selected: the handshake right after message 4 (crypto_select 1)',
        bursts([0, random(250)], [1, random(400)], [0, random(124)], [1, concat(random(14 + 20), HANDSHAKE)]),
      ],
    ])('%s', (_name, segments) => {
      expect(named(segments)).toBe(true);
    });

    it('names nothing by shape between hosts that never spoke BitTorrent otherwise', () => {
      expect(verdictOf(handshakeAfterSync(200, 37, 100, 300), 51413, 'none', false).verdict).toBe(VERDICT_UNDECIDED);
      expect(verdictOf(handshakeInSync(285, 123, [0, 169], [1, 43]), 51413, 'none', false).verdict).toBe(VERDICT_UNDECIDED);
      // The plaintext handshake after MSE is the protocol itself, not a shape.
      const plaintext = bursts([0, random(250)], [1, random(400)], [0, random(124)], [1, concat(random(14 + 20), HANDSHAKE)]);
      expect(verdictOf(plaintext, 51413, 'none', false).verdict).toBe(VERDICT_BITTORRENT);
      // A host the engine saw speak BitTorrent (here a DHT query from it) gives the context.
      const engine = new Engine({ flowCapacity: 8 });
      const query = ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
      const dht = packet4('10.0.0.1', '10.0.0.9', 17, udp(40001, 6881, query));
      expect(engine.process(dht, 0, dht.length, LINKTYPE_RAW)).toBe(VERDICT_BITTORRENT);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0)).toBe(true);
    });

    it('names a host by shape once it showed it with two different ends, and a flow with the same end again counts once', () => {
      const engine = new Engine({ flowCapacity: 64, detectors: [mseDetector] });
      let flowPort = 40000;
      const shaped = (client: string, peer: string) => {
        const port = flowPort++;
        let verdict = VERDICT_UNDECIDED;
        for (const { dir, at, bytes } of handshakeAfterSync(200, 37, 100, 300)) {
          const packet =
            dir === 0 ? packet4(client, peer, 6, tcp(port, 51413, bytes, { seq: (ISN[0] + at) >>> 0, flags: 0x18 })) : packet4(peer, client, 6, tcp(51413, port, bytes, { seq: (ISN[1] + at) >>> 0, flags: 0x18 }));
          verdict = engine.process(packet, 0, packet.length, LINKTYPE_RAW);
          if (verdict !== VERDICT_UNDECIDED) break;
        }
        return verdict;
      };
      // One end, again and again: a host and its one server (a VPN, a proxy) never count more than once.
      for (let i = 0; i < 4; i++) expect(shaped('10.0.0.1', '198.51.100.7')).toBe(VERDICT_UNDECIDED);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0)).toBe(false);
      // The second end names the flow and marks the host: its later shaped flows are named at once.
      expect(shaped('10.0.0.1', '198.51.100.9')).toBe(VERDICT_BITTORRENT);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0)).toBe(true);
      expect(shaped('10.0.0.1', '198.51.100.7')).toBe(VERDICT_BITTORRENT);
      // Another host's sightings are its own.
      expect(shaped('10.0.0.2', '198.51.100.20')).toBe(VERDICT_UNDECIDED);
      // A responder counts its ends too: a seeder that two hosts reach in the shape is named by the second.
      expect(shaped('10.0.0.3', '198.51.100.30')).toBe(VERDICT_UNDECIDED);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('198.51.100.30')), 0)).toBe(false);
      expect(shaped('10.0.0.4', '198.51.100.30')).toBe(VERDICT_BITTORRENT);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('198.51.100.30')), 0)).toBe(true);
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('10.0.0.4')), 0)).toBe(false);
    });

    it("names a host's first shaped flow at its next write once a second end marked the host", () => {
      const engine = new Engine({ flowCapacity: 64, detectors: [mseDetector] });
      const send = (client: string, peer: string, port: number, segments: Segment[]) => {
        let verdict = VERDICT_UNDECIDED;
        for (const segment of segments) {
          const { dir, at, bytes } = segment;
          const fields = { seq: (ISN[dir] + at) >>> 0, ack: ackOf(segment), flags: 0x18 };
          const packet = dir === 0 ? packet4(client, peer, 6, tcp(port, 51413, bytes, fields)) : packet4(peer, client, 6, tcp(51413, port, bytes, fields));
          verdict = engine.process(packet, 0, packet.length, LINKTYPE_RAW);
        }
        return verdict;
      };
      const first = handshakeAfterSync(200, 37, 100, 300);
      expect(send('10.0.0.1', '198.51.100.7', 40000, first)).toBe(VERDICT_UNDECIDED);
      expect(send('10.0.0.1', '198.51.100.9', 40001, handshakeAfterSync(150, 20, 30, 0))).toBe(VERDICT_BITTORRENT);
      // The first flow's next write, a request from the initiator.
      const sent = first.filter((segment) => segment.dir === 0).reduce((sum, segment) => sum + segment.bytes.length, 0);
      expect(send('10.0.0.1', '198.51.100.7', 40000, [{ dir: 0, at: sent, bytes: random(17) }])).toBe(VERDICT_BITTORRENT);
    });

    it('names most encrypted peer connections of the lab swarms with no other evidence at all, from the second peer of each host on', () => {
      // Three hosts per capture, MSE required, nothing else read: each host's first shaped connection passes.
      const captures = ['fixtures/lab/bt', 'fixtures/lab/bt-rtt'].flatMap((dir) => readdirSync(dir).filter((name) => name.includes('encrypted')).map((name) => `${dir}/${name}`));
      const namedIn = (everyHostTorrenting: boolean) =>
        captures.reduce((sum, capture) => sum + scanCapture(capture, { detectors: [mseDetector], everyHostTorrenting }).flows.filter((f) => f.bittorrent).length, 0);
      const inContext = namedIn(true);
      const alone = namedIn(false);
      expect(inContext).toBeGreaterThanOrEqual(66);
      expect(alone).toBeLessThan(inContext);
      expect(alone).toBeGreaterThanOrEqual(Math.ceil(inContext * 0.85));
    });

    it('is heuristic evidence: shape and entropy, which never ban', () => {
      expect(mseDetector.strength).toBe(STRENGTH_HEURISTIC);
      expect(mseDetector.producerIsPeer).toBe(true);
      expect(verdictOf(handshakeAfterSync(200, 37, 100, 300))).toEqual({ verdict: VERDICT_BITTORRENT, rule: 'mse', strength: 'heuristic' });
    });

    it('names a plaintext handshake after MSE even on a service port, where length evidence alone is not enough', () => {
      const segments = bursts([0, random(400)], [1, random(150)], [0, random(300)], [1, random(80)], [0, random(68)], [1, concat(HANDSHAKE, random(200))]);
      expect(named(segments, 443)).toBe(true);
      expect(named(handshakeAfterSync(400 - 96, 150 - 96, 244, 66), 443)).toBe(false);
      // A flow that stops at B's answer has too little evidence on random-looking bytes (the peer cache may still know it).
      expect(named(handshakeAfterSync(200, 37, 100, 300, 68 + 220, null))).toBe(false);
    });
  });

  describe('reads one side alone, where the route shows one direction', () => {
    // Writes of the initiator alone (libtorrent leecher): key, message 3, handshake, extension
    // handshake, requests and haves; the responder's key and message 4 go another way.
    const initiatorAlone = (...after: number[]) =>
      oneWay(0, bursts([0, random(246)], [1, random(300)], [0, random(176)], [0, random(68)], [1, random(82)], [0, random(287)], ...after.map((n): [number, Uint8Array] => [0, random(n)])));
    // Writes of the responder alone: its key, then message 4 and its handshake as `writes`, after A's message 3.
    const responderAlone = (...writes: number[]) => oneWay(1, bursts([0, random(300)], [1, random(512)], [0, random(176)], ...writes.map((n): [number, Uint8Array] => [1, random(n)])));
    it('names the initiator alone by its exact handshake, whatever follows it (a connection closed right after, coalesced writes)', () => {
      expect(verdictOf(initiatorAlone()).verdict).toBe(VERDICT_BITTORRENT);
      expect(named(initiatorAlone(1448, 1448))).toBe(true);
      expect(named(oneWay(0, bursts([0, random(246)], [1, random(200)], [0, random(124)])))).toBe(true);
      expect(named(oneWay(0, bursts([0, random(246)], [1, random(200)], [0, random(176)], [0, random(69)], [0, random(34)], [0, random(9)])))).toBe(false);
      expect(verdictOf(initiatorAlone(34, 9), 51413, 'none', false).verdict).toBe(VERDICT_UNDECIDED);
    });

    it("reads nothing into one side's shape where the other end's packets are seen: its silence is its own, no asymmetric route", () => {
      expect(verdictOf(initiatorAlone(), 51413, 'syn').verdict).toBe(VERDICT_BITTORRENT);
      expect(verdictOf(initiatorAlone(), 51413, 'handshake').verdict).toBe(VERDICT_UNDECIDED);
      // The responder's message 4 with its handshake; the initiator's SYN and ACKs are on the route.
      const runner = new DirectRunner();
      expect(runner.run(responderAlone(82))).toBe(MATCH);
      runner.ctx.otherSeen = true;
      expect(runner.run(responderAlone(82))).not.toBe(MATCH);
    });

    it("counts one side's shape as no sighting: a host that shows it with many ends is not marked by it", () => {
      const engine = new Engine({ flowCapacity: 64, detectors: [mseDetector] });
      for (const [port, peer] of [[40000, '198.51.100.7'], [40001, '198.51.100.9'], [40002, '198.51.100.11']] as const) {
        for (const segment of initiatorAlone(34, 9)) {
          const packet = packet4('10.0.0.1', peer, 6, tcp(port, 51413, segment.bytes, { seq: (ISN[0] + segment.at) >>> 0, ack: ackOf(segment), flags: 0x18 }));
          expect(engine.process(packet, 0, packet.length, LINKTYPE_RAW)).toBe(VERDICT_UNDECIDED);
        }
      }
      expect(engine.torrenting.has(4, Uint8Array.from(ipv4Address('10.0.0.1')), 0)).toBe(false);
    });

    it('names the responder alone by its exact message 4 with its handshake (Transmission seeding), or its 68-byte handshake after message 4 (aria2)', () => {
      expect(new DirectRunner().run(responderAlone(82))).toBe(MATCH);
      expect(new DirectRunner().run(responderAlone(14))).toBe(MATCH);
      expect(new DirectRunner().run(responderAlone(40, 68))).toBe(MATCH);
      expect(new DirectRunner().run(responderAlone(83, 177, 5))).not.toBe(MATCH);
      expect(new DirectRunner().run(responderAlone(40, 69, 1448))).not.toBe(MATCH);
    });

    it("names the responder alone by its answer to the initiator's 68-byte handshake, which its acknowledgements show (libtorrent seeding: message 4 with a random PadD)", () => {
      // B's key, message 4 (14 + 47 of PadD), then its handshake with its extension handshake, after A's handshake.
      const answer = (handshake: number, reply: number) =>
        oneWay(1, bursts([0, random(253)], [1, random(198)], [0, random(488)], [1, random(61)], [0, random(handshake)], [1, random(reply)]));
      expect(new DirectRunner().run(answer(68, 271))).toBe(MATCH);
      expect(new DirectRunner().run(answer(69, 271))).not.toBe(MATCH);
      expect(new DirectRunner().run(answer(67, 271))).not.toBe(MATCH);
      // An answer shorter than a handshake, or A's handshake written with more (no telling length).
      expect(new DirectRunner().run(answer(68, 60))).not.toBe(MATCH);
      expect(new DirectRunner().run(answer(68 + 203, 271))).not.toBe(MATCH);
    });

    it("reads the unseen side's turns in the acknowledgement numbers: no message 3 before a key of B's, no message 4 before message 3", () => {
      // The initiator's key in two segments, the second acknowledging nothing of B's.
      expect(named(oneWay(0, bursts([0, random(150)], [0, random(100)], [1, random(300)], [0, random(124)])))).toBe(true);
      // Writes of the initiator's that acknowledge no key of B's, or more than one.
      expect(named(bursts([0, random(246)], [0, random(176)], [0, random(68)]))).toBe(false);
      expect(named(bursts([0, random(246)], [0, random(124)]))).toBe(false);
      expect(named(oneWay(0, bursts([0, random(246)], [1, random(300)], [1, random(400)], [0, random(176)], [0, random(68)])))).toBe(false);
      // The responder's exact lengths before any message 3 reached it: its key burst going on.
      expect(new DirectRunner().run(bursts([1, random(512)], [1, random(82)]))).not.toBe(MATCH);
      expect(new DirectRunner().run(oneWay(1, bursts([0, random(300)], [1, random(512)], [0, random(51)], [1, random(14)])))).not.toBe(MATCH);
      expect(new DirectRunner().run(oneWay(1, bursts([0, random(300)], [1, random(400)], [1, random(82)], [0, random(124)], [1, random(14)])))).toBe(MATCH);
    });

    it('gives the initiator-alone reading up when the responder answers after a key burst too long for MSE', () => {
      expect(named(bursts([0, random(246)], [0, random(400)], [1, random(300)], [0, random(68)]))).toBe(false);
    });

    it('takes a first segment longer than any key burst for no MSE, whatever the initiator writes next (VMess, B unseen)', () => {
      expect(named(bursts([0, random(695)], [0, random(124)], [0, random(142)]))).toBe(false);
    });

    it("gives the reading up when the responder's first write is longer than any key burst, whoever writes next", () => {
      expect(named(bursts([0, random(200)], [1, random(700)], [0, random(124)], [0, random(68)]))).toBe(false);
    });

    it('flags the one-direction captures of the lab where a side writes its handshake exactly', () => {
      // fixtures/lab/bt-rtt with only what the seeder sends, or only what is sent to it.
      const oneWay = (capture: string, seeder: string, keep: 'to' | 'from') =>
        scanCapture(`fixtures/lab/bt-rtt/${capture}`, { detectors: [mseDetector], everyHostTorrenting: true, sentBy: (source) => (source === seeder) === (keep === 'from') }).flows.filter(
          (f) => f.bittorrent && (f.initiator.startsWith(seeder) || f.responder.startsWith(seeder)),
        ).length;
      expect(oneWay('libtorrent-encrypted-rtt25.pcap', '198.51.100.11', 'to')).toBe(2);
      expect(oneWay('qbittorrent-encrypted-from-transmission-rtt40.pcap', '198.51.100.11', 'from')).toBe(2);
    });
  });

  describe('follows the stream however TCP cuts it', () => {
    const flow = handshakeAfterSync(300, 412, 200, 100);
    it.each([
      ['Ya+PadA in two segments', [...cut(flow[0], 150), ...flow.slice(1)]],
      ['every message in several segments', flow.flatMap((segment, i) => (i === 4 ? [segment] : cut(segment, 96, 50)))],
      ['a retransmitted Yb', [flow[0], flow[1], flow[1], ...flow.slice(2)]],
      ['message 3 reordered', [flow[0], flow[1], ...cut(flow[2], 100).reverse(), ...flow.slice(3)]],
      ['a segment of message 3 the capture missed', [flow[0], flow[1], cut(flow[2], 100)[1], ...flow.slice(3)]],
    ] as [string, Segment[]][])('%s', (_name, segments) => {
      expect(named(segments)).toBe(true);
    });

    it('names any cut of any handshake into segments', () => {
      // Writes that TCP never cuts: Ya and Yb open their direction's first segment whole (96 bytes
      // at least), and a segment whose exact length is evidence (a handshake written on its own,
      // the write that answers it) is one write of less than a segment.
      const cuttable = { after: [true, true, true, true, false, false], inSync: [true, true, true, false, true, true, false, false, false] };
      fc.assert(
        fc.property(
          fc.tuple(fc.nat(512), fc.nat(512), fc.nat(512), fc.nat(512)),
          fc.boolean(),
          fc.array(fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 2 }), { minLength: 9, maxLength: 9 }),
          ([padA, padB, padC, padD], inSync, cutsPerBurst) => {
            const flow = inSync ? handshakeInSync(padA, padB, [0, 200], [1, 5], [0, 9], [1, 17]) : handshakeAfterSync(padA, padB, padC, padD);
            const canCut = inSync ? cuttable.inSync : cuttable.after;
            const segments = flow.flatMap((segment, i) =>
              canCut[i] ? cut(segment, ...cutsPerBurst[i].map((size, j) => (i < 2 && j === 0 ? 96 + size : size))) : [segment],
            );
            expect(named(segments)).toBe(true);
          },
        ),
        { numRuns: 60 },
      );
    });
  });

  describe('does not name look-alikes', () => {
    const tlsRecord = (type: number, n: number) => concat([type, 0x03, 0x03], u16(n - 5), random(n - 5));
    it.each([
      [
        'TLS with MSE-like sizes (ClientHello, ServerHello, Finished, ...)',
        bursts([0, tlsRecord(0x16, 517)], [1, tlsRecord(0x16, 155)], [0, tlsRecord(0x14, 64)], [1, tlsRecord(0x17, 300)], [0, tlsRecord(0x17, 68)], [1, tlsRecord(0x17, 200)]),
      ],
      [
        'SSH with MSE-like sizes',
        bursts([0, concat(ascii('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'), random(300))], [1, random(400)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(100)]),
      ],
      ['a sparse binary protocol', bursts([0, new Uint8Array(300).fill(1, 0, 20)], [1, random(200)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(100)])],
      [
        'a protocol framed by a 2-byte length (OpenVPN over TCP)',
        bursts([0, concat(u16(298), random(298))], [1, random(200)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(100)]),
      ],
      ["A's next burst one byte longer than the handshake", bursts([0, random(300)], [1, random(200)], [0, random(100)], [1, random(50)], [0, random(69)], [1, random(100)])],
      ["B's answer to a 68-byte burst shorter than its own handshake", bursts([0, random(300)], [1, random(200)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(40)])],
      ['a 68-byte burst after a message 3 that had room for IA', bursts([0, random(300)], [1, random(200)], [0, random(600)], [1, random(50)], [0, random(68)], [1, random(100)])],
      ['only bare messages, no exact length in the handshake', bursts([0, random(300)], [1, random(200)], [0, random(300)], [1, random(300)], [0, random(5)], [1, random(9)])],
      ['an obfs4 client handshake (longer than Ya and the largest PadA)', bursts([0, random(1400)], [0, random(3000)], [1, random(300)])],
      ['a proxied server flight longer than Yb and the largest PadB', bursts([0, random(300)], [1, random(1400)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(100)])],
      ['Ya cut before its 96 bytes', bursts([0, random(60)], [0, random(200)], [1, random(200)], [0, random(100)], [1, random(50)], [0, random(68)], [1, random(100)])],
      ['a message 3 shorter than its fixed fields', bursts([0, random(300)], [1, random(200)], [0, random(55)], [1, random(50)], [0, random(68)], [1, random(100)])],
      ['a message 4 shorter than its fixed fields', bursts([0, random(300)], [1, random(200)], [0, random(100)], [1, random(13)], [0, random(68)], [1, random(100)])],
    ])('%s', (_name, segments) => {
      expect(named(segments)).toBe(false);
    });

    it('gives up when the responder speaks first and the initiator then does', () => {
      const { verdict } = verdictOf(bursts([1, random(300)], [0, random(200)]), 51413, 'syn');
      expect(verdict).not.toBe(VERDICT_BITTORRENT);
      // The responder alone may be a route that shows one direction; the initiator speaking after it is no MSE.
      expect(new DirectRunner().run(bursts([1, random(300)]))).toBe(MORE);
      expect(new DirectRunner().run(bursts([1, random(300)], [0, random(200)]))).toBe(GIVE_UP);
    });
  });

  describe('on real captures', () => {
    // libtorrent 2.0 in two namespaces, one capture per encryption setting (fixtures/mse/make-fixtures.sh).
    it.each(['rc4', 'plaintext', 'both', 'enabled'])('names every connection of libtorrent with %s', (name) => {
      const { flows, engine } = scanCapture(`fixtures/mse/${name}.pcap`, { detectors: [mseDetector], everyHostTorrenting: true });
      expect(flows.length).toBeGreaterThanOrEqual(6);
      expect(flows.length).toBe(engine.flows.size);
      expect(flows.every((flow) => flow.rule === 'mse')).toBe(true);
    });

    // Shadowsocks AEAD and VMess carrying keep-alive HTTP(S) with small responses: a third of their
    // connections open with the MSE shape (fixtures/mse/make-proxy-fixtures.sh).
    it.each(['proxy-shadowsocks', 'proxy-vmess'])('names no connection in %s', (name) => {
      const { flows, engine } = scanCapture(`fixtures/mse/${name}.pcap`, { detectors: [mseDetector], everyHostTorrenting: true });
      expect(engine.flows.size).toBeGreaterThanOrEqual(36);
      expect(flows.filter((flow) => flow.bittorrent)).toEqual([]);
    });

    const lab = 'fixtures/lab/bt';
    // A handshake the responder never answered ("unfinished": Ya+PadA, then nothing) is one random
    // blob, which only the peer cache can name; every answered one counts.
    it.skipIf(!existsSync(`${lab}/truth.json`))('names at least 95 % of the answered MSE connections of the client lab, and no flow that is not BitTorrent', () => {
      type Label = { l4: string; a: string; b: string; bittorrent: boolean; encrypted?: boolean; crypto?: string };
      const truth = JSON.parse(readFileSync(`${lab}/truth.json`, 'utf8')) as Record<string, Label[]>;
      let encrypted = 0;
      let caught = 0;
      for (const [capture, labels] of Object.entries(truth)) {
        if (!existsSync(`${lab}/${capture}`)) continue;
        const key = (x: string, y: string) => [x, y].sort().join(' ');
        const named = new Set(
          scanCapture(`${lab}/${capture}`, { detectors: [mseDetector], everyHostTorrenting: true })
            .flows.filter((f) => f.bittorrent)
            .map((f) => key(f.initiator, f.responder)),
        );
        const tcpLabels = labels.filter((f) => f.l4 === 'tcp');
        const encryptedKeys = tcpLabels.filter((f) => f.encrypted && f.crypto !== 'unfinished').map((f) => key(f.a, f.b));
        const bittorrentKeys = new Set(tcpLabels.filter((f) => f.bittorrent).map((f) => key(f.a, f.b)));
        encrypted += encryptedKeys.length;
        caught += encryptedKeys.filter((k) => named.has(k)).length;
        // aria2 opens with MSE even when plaintext is allowed: those flows are named, rightly.
        expect([...named].filter((k) => !bittorrentKeys.has(k))).toEqual([]);
      }
      expect(encrypted).toBeGreaterThan(0);
      expect(caught / encrypted).toBeGreaterThanOrEqual(0.95);
    });

    const clean = 'fixtures/lab/clean';
    const cleanCaptures = existsSync(clean) ? readdirSync(clean).filter((name) => name.endsWith('.pcap')) : [];
    it.skipIf(cleanCaptures.length === 0)('names nothing in the clean lab (Shadowsocks, obfs4, VMess, TLS, SSH, ...)', () => {
      for (const name of cleanCaptures) {
        const { flows } = scanCapture(`${clean}/${name}`, { detectors: [mseDetector], everyHostTorrenting: true });
        expect(flows.filter((flow) => flow.bittorrent).map((flow) => `${name} ${flow.initiator}`)).toEqual([]);
      }
    });
  });

  describe('on random exchanges', () => {
    const runner = new DirectRunner();
    /** Random payload bytes for a segment: a window into one large random pool. */
    const pool = random(1 << 16);
    const draw = randomSource(0x5eed);
    const segmentOf = (dir: number, at: number[]) => {
      const length = 1 + (draw() % 1460);
      const from = draw() % (pool.length - length);
      const segment = { dir, at: at[dir], bytes: pool.subarray(from, from + length), acked: at[dir ^ 1] };
      at[dir] += length;
      return segment;
    };

    const exchanges = (sideOf: (i: number) => number, count: number, torrenting: boolean) => {
      runner.torrenting(torrenting);
      let named = 0;
      for (let n = 0; n < count; n++) {
        const at = [0, 0];
        const segments: Segment[] = [];
        const segmentCount = 2 + (draw() % 11);
        for (let i = 0; i < segmentCount; i++) segments.push(segmentOf(sideOf(i), at));
        if (runner.run(segments) === MATCH) named++;
      }
      return named;
    };
    const sides: [string, (i: number) => number][] = [
      ['each segment from either side', (i) => (i === 0 ? 0 : draw() & 1)],
      ['the sides taking turns, one segment each', (i) => i & 1],
    ];

    it.each(sides)('names none of 100,000 exchanges of 2-12 random segments of 1-1460 random bytes between hosts that never spoke BitTorrent, %s', (_name, sideOf) => {
      expect(exchanges(sideOf, 100_000, false)).toBe(0);
    });

    // The shape alone, for a host that torrents: random writes of random lengths take the shape of
    // both sides a few times in 100,000 exchanges (the exact lengths are few, 0 and 2 with this
    // seed); the initiator's alone, ahead of the responder's first write, would need a message 3
    // that acknowledges a key of the responder's. The bench measures both over many more.
    it.each(sides)('names at most 10 of 100,000 such exchanges of a torrenting host by shape alone, %s', (_name, sideOf) => {
      expect(exchanges(sideOf, 100_000, true)).toBeLessThanOrEqual(10);
    });

    it('never throws nor reads outside the payload and addresses, whatever the segments', () => {
      const mseSized = fc.constantFrom(4, 5, 14, 56, 68, 82, 96, 124, 300, 526, 568, 608, 609, 636);
      const segment = fc.record({
        dir: fc.integer({ min: 0, max: 1 }),
        length: fc.oneof(mseSized, fc.integer({ min: 0, max: 1460 })),
        seqShift: fc.oneof(fc.constant(0), fc.integer({ min: -2000, max: 70_000 })),
        fill: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 255 })),
      });
      fc.assert(
        fc.property(fc.array(segment, { maxLength: 40 }), fc.integer({ min: 0, max: 65535 }), (drawn, port) => {
          const at = [0, 0];
          const segments = drawn.map(({ dir, length, seqShift, fill }) => {
            const bytes = fill < 0 ? random(length) : new Uint8Array(length).fill(fill);
            const s = { dir, at: (at[dir] + seqShift) >>> 0, bytes };
            at[dir] = (s.at + length) >>> 0;
            return s;
          });
          runner.strayReads.length = 0;
          expect([MATCH, MORE, GIVE_UP]).toContain(runner.run(segments, port, true));
          expect(runner.strayReads).toEqual([]);
        }),
        { numRuns: 300 },
      );
    });
  });
});
