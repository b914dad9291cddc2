import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { LINKTYPE_RAW } from '../src/packet/linktype.js';
import { CaptureSource } from '../src/pipeline/capture-source.js';
import {
  PACKET_ACCEPT,
  PACKET_ACCEPT_MARK_CLEAN,
  PACKET_DROP,
  PACKET_MARK_BITTORRENT,
  Pipeline,
  type DetectionEvent,
} from '../src/pipeline/pipeline.js';
import { NO_HOST_FACTS } from '../src/policy/settings.js';
import type { DroppedSegment } from '../src/bans/xdp.js';
import { detectorChain } from '../src/detect/registry.js';
import { clientHello } from './helpers/names.js';
import { ascii, gre, ipv4, packet4, PROTO_GRE, PROTO_TCP, tcp } from './helpers/frames.js';
import { ACK, dhtPeers, dhtPing, HANDSHAKE, ST_STATE, ST_SYN, SYN, TcpConnection, udp4, utpPacket, writeRawPcap } from './helpers/exchanges.js';

const USER = '10.8.0.2';
const OTHER_USER = '10.8.0.3';
const PEER = '198.51.100.9';
const WEB = '203.0.113.80';

function pipeline(env: Record<string, string> = {}): { pipeline: Pipeline; detections: DetectionEvent[] } {
  const p = new Pipeline(loadConfig(env), NO_HOST_FACTS);
  const detections: DetectionEvent[] = [];
  p.onDetection = (event) => detections.push(event);
  p.engine.clock.nowMs = 1_700_000_000_000;
  return { pipeline: p, detections };
}

const feed = (p: Pipeline, frames: Uint8Array[]) => frames.map((frame) => p.handle(frame, 0, frame.length, LINKTYPE_RAW));

/** Whether a connection opened and carrying a plain HTTP request adds no detection (monitor-only too): nothing known names it. */
function detectsNothing(p: Pipeline, detections: DetectionEvent[], c: TcpConnection): boolean {
  const before = detections.length;
  feed(p, c.open());
  feed(p, [c.segment(0, ascii('GET / HTTP/1.1\r\n\r\n'))]);
  return detections.length === before;
}

describe('pipeline: what each abuse gets', () => {
  it('drops a handshake a local user writes to a web server, and bans nobody', () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(USER, 50000, WEB, 443);
    expect(feed(p, c.open())).toEqual([PACKET_ACCEPT, PACKET_ACCEPT, PACKET_ACCEPT]);
    expect(feed(p, [c.segment(0, HANDSHAKE)])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections).toHaveLength(1);
    expect(detections[0]).toMatchObject({ rule: 'handshake', strength: 'exact', producer: 'initiator' });
    expect(detections[0].decision).toMatchObject({ action: 'drop', ban: null });
    // Another user's flow to the same server is untouched: nothing was remembered for everyone.
    const other = new TcpConnection(OTHER_USER, 50001, WEB, 443);
    feed(p, other.open());
    expect(feed(p, [other.segment(0, ascii('\x16\x03\x01 tls-ish hello'))])).not.toContain(PACKET_MARK_BITTORRENT);
  });

  it("copies a detection's payload out of the packet's buffer, even a Buffer (the queue's shared memory), whose slice is a view", () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(USER, 50002, WEB, 443);
    feed(p, c.open());
    const frame = c.segment(0, HANDSHAKE);
    const memory = Buffer.alloc(1 << 20);
    memory.set(frame, 4096);
    p.handle(memory, 4096, frame.length, LINKTYPE_RAW);
    expect(detections).toHaveLength(1);
    // Posted to the main thread, the payload takes its own bytes, not the megabyte around it.
    expect(detections[0].payload.buffer.byteLength).toBe(HANDSHAKE.length);
    expect(Buffer.from(detections[0].payload).equals(Buffer.from(HANDSHAKE))).toBe(true);
  });

  it('bans a remote peer that connects in and sends its handshake, and then drops its port for every user', () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(PEER, 40000, USER, 51413);
    feed(p, c.open());
    expect(feed(p, [c.segment(0, HANDSHAKE)])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections[0].decision.ban).toEqual({ family: 4, address: PEER, durationS: 18000 });
    expect(detections[0].decision.reason).toBe(`ban: ${PEER} sent handshake bytes (exact) over TCP after a handshake seen both ways`);
  });

  it("bans a remote peer that answers a local user's connection with its own handshake first", () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(USER, 50000, PEER, 6881);
    feed(p, c.open());
    feed(p, [c.segment(0, ascii('hello'))]);
    expect(feed(p, [c.segment(1, HANDSHAKE)])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections[0]).toMatchObject({ producer: 'responder', decision: { ban: { address: PEER } } });
    // The proven peer is caught for another user at the SYN, as `cache`, with no second ban; the
    // SYN dropped before conntrack confirmed it, its retransmission comes to the queue again, and
    // is marked again (its connection is a new conntrack entry).
    const syn = new TcpConnection(OTHER_USER, 50002, PEER, 6881).open()[0];
    expect(feed(p, [syn, syn])).toEqual([PACKET_MARK_BITTORRENT, PACKET_MARK_BITTORRENT]);
    expect(detections[1]).toMatchObject({ rule: 'peer-cache', strength: 'cache', flowPackets: 1, decision: { ban: null } });
  });

  it('bans no one for a blind spoof: a forged SYN and a handshake that does not acknowledge the local SYN-ACK', () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(PEER, 40000, USER, 51413);
    feed(p, c.open().slice(0, 2));
    // The spoofer never saw the SYN-ACK, so it guesses the acknowledgement number.
    expect(feed(p, [c.segment(0, HANDSHAKE, 0x18, { ack: 0x12345678 })])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections[0].decision.ban).toBeNull();
    expect(detections[0].decision.reason).toContain('do not acknowledge');
  });

  it('bans no one for a TCP connection caught mid-way (no handshake seen)', () => {
    const { pipeline: p, detections } = pipeline();
    const c = new TcpConnection(PEER, 40000, USER, 51413);
    feed(p, [c.segment(0, HANDSHAKE)]);
    expect(detections[0].decision.reason).toBe("no ban: the gateway did not see this TCP connection's handshake both ways");
  });

  it.each(['8.8.8.8', '192.0.2.53', PEER])('drops an unsolicited DHT query "from" %s, and bans nobody', (source) => {
    const { pipeline: p, detections } = pipeline();
    expect(feed(p, [udp4(source, 6881, USER, 51413, dhtPing())])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections[0]).toMatchObject({ rule: 'dht', strength: 'exact', producer: 'initiator', decision: { ban: null } });
  });

  it('drops spoofed uTP and UDP tracker datagrams without banning their sources', () => {
    const { pipeline: p, detections } = pipeline();
    // A uTP pair where the "answer" comes before any local SYN: nothing answers a local query.
    feed(p, [udp4(PEER, 6881, USER, 51413, utpPacket(ST_SYN, 7000, 100, 0)), udp4(USER, 51413, PEER, 6881, utpPacket(ST_STATE, 7000, 500, 100))]);
    // A connect request from outside.
    const connect = Uint8Array.from([0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]);
    feed(p, [udp4('192.0.2.99', 6969, USER, 40000, connect)]);
    expect(detections.map((d) => d.decision.ban)).toEqual([null, null]);
  });

  it("bans the remote end of a uTP connection that answers the local SYN", () => {
    const { pipeline: p, detections } = pipeline();
    expect(feed(p, [udp4(USER, 51413, PEER, 6881, utpPacket(ST_SYN, 7000, 100, 0))])).toEqual([PACKET_ACCEPT]);
    expect(feed(p, [udp4(PEER, 6881, USER, 51413, utpPacket(ST_STATE, 7000, 500, 100))])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections[0]).toMatchObject({ rule: 'utp', strength: 'response', producer: 'responder', decision: { ban: { address: PEER } } });
  });

  it('bans on a uTP answer only when it came in on another interface than the SYN', () => {
    const syn = udp4(USER, 51413, PEER, 6881, utpPacket(ST_SYN, 7000, 100, 0));
    const state = udp4(PEER, 6881, USER, 51413, utpPacket(ST_STATE, 7000, 500, 100));
    const forged = pipeline();
    forged.pipeline.handle(syn, 0, syn.length, LINKTYPE_RAW, 3);
    forged.pipeline.handle(state, 0, state.length, LINKTYPE_RAW, 3);
    expect(forged.detections[0].decision.reason).toContain('same interface');
    const real = pipeline();
    real.pipeline.handle(syn, 0, syn.length, LINKTYPE_RAW, 3);
    real.pipeline.handle(state, 0, state.length, LINKTYPE_RAW, 4);
    expect(real.detections[0].decision.ban?.address).toBe(PEER);
  });

  it('drops flows that names of trackers lead to, and bans no one: DNS, TLS server name, HTTP Host', () => {
    const { pipeline: p, detections } = pipeline();
    const name = (label: string) => [label.length, ...ascii(label)];
    const question = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...name('tracker'), ...name('opentrackr'), ...name('org'), 0, 0, 1, 0, 1]);
    feed(p, [udp4(USER, 40000, '192.0.2.53', 53, question)]);
    const host = new TcpConnection(USER, 50010, WEB, 80);
    feed(p, host.open());
    feed(p, [host.segment(0, ascii('GET /announce HTTP/1.1\r\nHost: tracker.opentrackr.org\r\n\r\n'))]);
    expect(detections.length).toBe(2);
    for (const d of detections) expect(d.decision).toMatchObject({ action: 'drop', ban: null });
    expect(detections[0]).toMatchObject({ rule: 'tracker-domain', strength: 'name' });
  });

  it("a poisoned peer list drops only its receiver's flows to the listed server, and bans nothing", () => {
    const { pipeline: p, detections } = pipeline({ MONITOR_ONLY: 'true' });
    // The user's DHT query is BitTorrent; in monitor mode the answer still arrives and is read.
    feed(p, [udp4(USER, 51413, PEER, 6881, dhtPing()), udp4(PEER, 6881, USER, 51413, dhtPeers([`${WEB}:8443`, `${WEB}:9000`]))]);
    // Decided at the SYN: a connection attempt to a listed peer need never carry a byte.
    const toListed = new TcpConnection(USER, 50020, WEB, 9000);
    feed(p, toListed.open().slice(0, 1));
    expect(detections.at(-1)).toMatchObject({ rule: 'peer-cache', strength: 'announced', responder: WEB, flowPackets: 1, decision: { ban: null } });
    expect(detectsNothing(p, detections, new TcpConnection(OTHER_USER, 50021, WEB, 9000))).toBe(true);
    // A listed well-known service port is never taken.
    expect(detectsNothing(p, detections, new TcpConnection(USER, 50022, WEB, 8443))).toBe(true);
  });

  it("lists an HTTP tracker to the client whose connection it answered, seen alone (a route that shows what the LAN receives): that host's next connection to it is dropped at the tracker's first packet, no one else's", () => {
    const { pipeline: p, detections } = pipeline();
    const TRACKER = '203.0.113.69';
    const announce = new TcpConnection(USER, 50030, TRACKER, 6970);
    const received = (frames: Uint8Array[]) => frames.filter((_, i) => i % 2 === 1);
    feed(p, received(announce.open()));
    announce.segment(0, ascii('GET /announce?info_hash=...'));
    const answer = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 54\r\n\r\nd8:completei1e10:incompletei1e8:intervali1800e5:peers6:\xc6\x33\x64\x65\xc7\x38e';
    expect(feed(p, [announce.segment(1, Uint8Array.from(answer, (c) => c.charCodeAt(0)))])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections.at(-1)).toMatchObject({ rule: 'http-tracker', producer: 'responder', decision: { ban: null } });
    // The scrape on a new connection: its answer (a 404, say) carries nothing of BitTorrent.
    const scrape = new TcpConnection(USER, 50031, TRACKER, 6970);
    expect(feed(p, received(scrape.open()))).toEqual([PACKET_MARK_BITTORRENT]);
    expect(detections.at(-1)).toMatchObject({ rule: 'peer-cache', strength: 'announced', responder: TRACKER, decision: { ban: null } });
    expect(detectsNothing(p, detections, new TcpConnection(OTHER_USER, 50032, TRACKER, 6970))).toBe(true);
  });

  it("lists no server for the host's request alone: a web page can have a browser send an announce to any web server, or through its proxy", () => {
    const { pipeline: p, detections } = pipeline();
    for (const [i, target] of ['/announce', 'http://tracker.example/announce'].entries()) {
      const request = new TcpConnection(USER, 50040 + 2 * i, WEB, 8118);
      feed(p, request.open());
      const announce = `GET ${target}?info_hash=%dd%cc%c6%7b%20%8cpX%eeJF%28%7f%fd%09r%f2%a8x%dd&peer_id=-TR3000-4ma7cv2fdlsf&port=52000&uploaded=0&downloaded=0&left=262144&compact=1 HTTP/1.1\r\nHost: x\r\n\r\n`;
      expect(feed(p, [request.segment(0, ascii(announce))])).toEqual([PACKET_MARK_BITTORRENT]);
      expect(detections.at(-1)).toMatchObject({ rule: 'http-tracker', producer: 'initiator' });
      const next = new TcpConnection(USER, 50041 + 2 * i, WEB, 8118);
      expect(feed(p, next.open())).not.toContain(PACKET_MARK_BITTORRENT);
    }
  });

  it('drops a BitTorrent flow inside a GRE tunnel packet by packet, never marks the tunnel, never bans', () => {
    const { pipeline: p, detections } = pipeline();
    const inner = (payload: Uint8Array, flags = 0x18) => packet4(PEER, USER, PROTO_TCP, tcp(40000, 51413, payload, { flags, seq: 1, ack: 1 }));
    const tunnelled = (frame: Uint8Array) => ipv4(PROTO_GRE, gre(0x0800, frame), { src: '192.0.2.1', dst: '192.0.2.2' });
    expect(feed(p, [tunnelled(inner(new Uint8Array(0), SYN))])).toEqual([PACKET_ACCEPT]);
    expect(feed(p, [tunnelled(inner(HANDSHAKE)), tunnelled(inner(ascii('more')))])).toEqual([PACKET_DROP, PACKET_DROP]);
    expect(detections[0]).toMatchObject({ tunnelled: true, initiator: PEER, decision: { markConnection: false, ban: null } });
    // A clean flow in the tunnel leaves the tunnel unmarked too, so the next inner flow is still inspected.
    const web = (from: string, to: string, sport: number, dport: number, text: string) => tunnelled(packet4(from, to, PROTO_TCP, tcp(sport, dport, ascii(text))));
    feed(p, [web(USER, WEB, 50030, 80, 'GET / HTTP/1.1\r\n\r\n')]);
    expect(feed(p, [web(WEB, USER, 80, 50030, 'HTTP/1.1 200 OK\r\n\r\n')])).toEqual([PACKET_ACCEPT]);
  });

  it('marks a clean flow at its decision, so the kernel keeps the rest out of the queue', () => {
    const { pipeline: p } = pipeline();
    const c = new TcpConnection(USER, 50040, WEB, 80);
    feed(p, c.open());
    expect(feed(p, [c.segment(0, ascii('GET / HTTP/1.1\r\n\r\n')), c.segment(1, ascii('HTTP/1.1 200 OK\r\n\r\n'))])).toEqual([PACKET_ACCEPT, PACKET_ACCEPT_MARK_CLEAN]);
  });

  it('in monitor-only mode accepts everything and reports the drop and ban it would have made', () => {
    const { pipeline: p, detections } = pipeline({ MONITOR_ONLY: 'true' });
    const c = new TcpConnection(PEER, 40000, USER, 51413);
    expect(feed(p, [...c.open(), c.segment(0, HANDSHAKE), c.segment(0, ascii('x'))])).toEqual(Array(5).fill(PACKET_ACCEPT));
    expect(detections[0].decision).toMatchObject({ action: 'drop', enforce: false, ban: { address: PEER } });
  });
});

describe('capture source: the kernel part of the inline path', () => {
  const work = mkdtempSync(join(tmpdir(), 'btwall-pipeline-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  function scanFrames(frames: Uint8Array[], env: Record<string, string> = {}): DetectionEvent[] {
    const config = loadConfig(env);
    const p = new Pipeline(config, NO_HOST_FACTS);
    const detections: DetectionEvent[] = [];
    p.onDetection = (event) => detections.push(event);
    const path = join(work, `capture-${Math.random().toString(36).slice(2)}.pcap`);
    writeRawPcap(path, frames);
    let error: string | null = 'not read';
    void new CaptureSource([path], config.inspectPackets, { fileEnd: (_file, result) => (error = result.error) }).run(p);
    expect(error).toBeNull();
    return detections;
  }

  it('inspects only the first INSPECT_PACKETS packets of a connection, as the connbytes rule does', () => {
    const c = new TcpConnection(USER, 50050, PEER, 6881);
    const frames = [...c.open()];
    // Twenty segments without payload: nothing to inspect, but the kernel counts them.
    for (let i = 0; i < 10; i++) frames.push(c.segment(0, new Uint8Array(0), ACK), c.segment(1, new Uint8Array(0), ACK));
    frames.push(c.segment(0, HANDSHAKE));
    expect(scanFrames(frames, { INSPECT_PACKETS: '20' })).toHaveLength(0);
    expect(scanFrames(frames, { INSPECT_PACKETS: '30' })).toHaveLength(1);
  });

  it('never shows a clean connection to the pipeline again once it is marked', () => {
    const c = new TcpConnection(USER, 50060, WEB, 80);
    // Clean at the answer; a handshake later in the same connection is never seen, as inline.
    const frames = [...c.open(), c.segment(0, ascii('GET / HTTP/1.1\r\n\r\n')), c.segment(1, ascii('HTTP/1.1 200 OK\r\n\r\n')), c.segment(0, HANDSHAKE)];
    expect(scanFrames(frames)).toHaveLength(0);
  });

  it('keeps queueing a UDP flow dropped at its first datagram, which left no connection to mark', () => {
    const frames = [udp4(USER, 51413, PEER, 6881, dhtPing()), udp4(PEER, 6881, USER, 51413, dhtPeers([`${WEB}:9000`]))];
    const listed = new TcpConnection(USER, 50070, WEB, 9000);
    frames.push(...listed.open(), listed.segment(0, ascii('GET / HTTP/1.1\r\n\r\n')));
    // Past a one-packet window the answer is still queued, and the peer it lists is learned.
    const detections = scanFrames(frames, { INSPECT_PACKETS: '4' });
    expect(detections.map((d) => d.rule)).toEqual(['dht', 'peer-cache']);
    // Once the flow's connection is marked (a second packet before the decision), the answer is not queued.
    const marked = scanFrames([udp4(USER, 51413, PEER, 6881, ascii('d1:xi1ee')), ...frames], { INSPECT_PACKETS: '4' });
    expect(marked.map((d) => d.rule)).toEqual(['dht']);
  });
});

describe('the flow table hash', () => {
  it('is seeded at random, so no sender can aim flows at one bucket', () => {
    const a = pipeline().pipeline.engine.flows as unknown as { hashSeed: number };
    const b = pipeline().pipeline.engine.flows as unknown as { hashSeed: number };
    expect(a.hashSeed).not.toBe(b.hashSeed);
  });
});

describe('pipeline: the detection event', () => {
  it("copies the deciding payload out of the packet source's buffer, even a Buffer's (the queue's shared memory)", () => {
    const { pipeline: p, detections } = pipeline();
    const frame = udp4(USER, 51000, PEER, 6881, dhtPing());
    // A frame inside a large Buffer, as a queue batch hands it over.
    const ring = Buffer.alloc(1 << 20);
    ring.set(frame, 4096);
    p.handle(ring, 4096, frame.length, LINKTYPE_RAW);
    expect(detections).toHaveLength(1);
    const { payload } = detections[0];
    expect(Buffer.from(payload)).toEqual(Buffer.from(dhtPing()));
    // Posted to the main thread, a view would clone the whole megabyte per detection.
    expect(payload.buffer.byteLength).toBe(payload.length);
    ring.fill(0);
    expect(Buffer.from(payload)).toEqual(Buffer.from(dhtPing()));
  });

  it('says which ends are local by LOCAL_CIDRS', () => {
    const { pipeline: p, detections } = pipeline({ LOCAL_CIDRS: '10.8.0.0/24' });
    const inbound = new TcpConnection(PEER, 40000, USER, 51413);
    feed(p, inbound.open());
    feed(p, [inbound.segment(0, HANDSHAKE)]);
    feed(p, [udp4(USER, 51000, OTHER_USER, 6881, dhtPing()), udp4(PEER, 51001, WEB, 6881, dhtPing())]);
    expect(detections.map((d) => [d.initiatorLocal, d.responderLocal])).toEqual([
      [false, true],
      [true, true],
      [false, false],
    ]);
  });
});

describe('pipeline: a connection it cut (CUT_ESTABLISHED)', () => {
  /** The connection a local user's handshake decided and cut, and the later segments each end sends. */
  const cutConnection = (env: Record<string, string> = {}) => {
    const { pipeline: p, detections } = pipeline(env);
    const segments: DroppedSegment[] = [];
    p.onCutSegment = (segment) => segments.push(segment);
    const c = new TcpConnection(USER, 50030, PEER, 6881);
    feed(p, c.open());
    expect(feed(p, [c.segment(0, HANDSHAKE)])).toEqual([PACKET_MARK_BITTORRENT]);
    return { p, c, segments, cut: detections[0].decision.cut };
  };

  it("answers its next few packets each way with the numbers they carry: the deciding packet's are stale once data in flight arrived", () => {
    const { p, c, segments, cut } = cutConnection();
    expect(cut).toBe(true);
    // The peer's data in flight (queued behind the deciding packet), then the user's retransmissions of what was dropped.
    const inFlight = Array.from({ length: 4 }, () => c.segment(1, new Uint8Array(1448).fill(7)));
    const retransmissions = Array.from({ length: 5 }, () => c.segment(0, new Uint8Array(17).fill(1)));
    expect(feed(p, [...inFlight, ...retransmissions])).toEqual(Array(9).fill(PACKET_MARK_BITTORRENT));
    expect(segments.map((s) => s.source)).toEqual([PEER, PEER, PEER, USER, USER, USER]);
    expect(segments[0]).toMatchObject({ family: 4, source: PEER, sourcePort: 6881, destination: USER, destinationPort: 50030, length: 1448 });
    // The user's packet acknowledges all the peer's data: what its end now expects.
    expect(segments[3]).toMatchObject({ source: USER, sourcePort: 50030, ack: (0x22222222 + 1 + 4 * 1448) >>> 0, length: 17 });
  });

  it('answers no reset, and nothing at all of a connection it did not cut', () => {
    const { p, c, segments } = cutConnection();
    feed(p, [c.segment(0, new Uint8Array(0), 0x14)]);
    expect(segments).toEqual([]);
    const uncut = cutConnection({ CUT_ESTABLISHED: 'false' });
    expect(uncut.cut).toBe(false);
    feed(uncut.p, [uncut.c.segment(0, new Uint8Array(17).fill(1))]);
    expect(uncut.segments).toEqual([]);
  });
});

describe('pipeline: a reload (SIGHUP)', () => {
  it('rebuilds the name rules over new TRACKER_DOMAINS for new flows, and leaves a name half-read by the old ones to the other rules', () => {
    const { pipeline: p, detections } = pipeline();
    const hello = clientHello('tracker.example.net');
    const cut = 60;
    const before = new TcpConnection(USER, 50020, WEB, 443);
    feed(p, before.open());
    // The server name starts in the first segment and ends in the second.
    expect(feed(p, [before.segment(0, hello.subarray(0, hello.length - 6))])).toEqual([PACKET_ACCEPT]);
    p.reconfigure(loadConfig({ TRACKER_DOMAINS: 'example.net' }), NO_HOST_FACTS);
    expect(feed(p, [before.segment(0, hello.subarray(hello.length - 6))])).not.toContain(PACKET_MARK_BITTORRENT);
    const after = new TcpConnection(USER, 50021, WEB, 443);
    feed(p, after.open());
    expect(feed(p, [after.segment(0, hello.subarray(0, cut)), after.segment(0, hello.subarray(cut))])).toEqual([PACKET_ACCEPT, PACKET_MARK_BITTORRENT]);
    expect(detections.map((d) => [d.rule, d.initiatorPort])).toEqual([['tracker-sni', 50021]]);
  });

  it('keeps flows and proven peers, and decides from then on with the new policy settings and allowlist', () => {
    const { pipeline: p, detections } = pipeline();
    // The peer answers a local user's connection with its handshake: proven at its listening port.
    const peerConnection = new TcpConnection(USER, 50029, PEER, 6881);
    feed(p, peerConnection.open());
    feed(p, [peerConnection.segment(1, HANDSHAKE)]);
    expect(detections[0].decision.ban).toMatchObject({ address: PEER, durationS: 18000 });
    p.reconfigure(loadConfig({ BAN_DURATION: '60', ALLOW_CIDRS: '203.0.113.0/24' }), NO_HOST_FACTS);
    // The decided flow keeps its verdict; the proven peer is still caught at another user's SYN.
    expect(feed(p, [peerConnection.segment(1, ascii('more'))])).toEqual([PACKET_MARK_BITTORRENT]);
    expect(feed(p, [new TcpConnection(OTHER_USER, 50030, PEER, 6881).open()[0]])).toEqual([PACKET_MARK_BITTORRENT]);
    const second = new TcpConnection('198.51.100.10', 40001, USER, 51413);
    feed(p, second.open());
    feed(p, [second.segment(0, HANDSHAKE)]);
    expect(detections.at(-1)!.decision.ban).toMatchObject({ address: '198.51.100.10', durationS: 60 });
    // An allowlisted peer is exempt from bans and never remembered.
    const allowed = new TcpConnection(USER, 50032, WEB, 6881);
    feed(p, allowed.open());
    feed(p, [allowed.segment(1, HANDSHAKE)]);
    expect(detections.at(-1)!.decision).toMatchObject({ ban: null, reason: `no ban: ${WEB} is exempt (ALLOW_CIDRS)` });
    expect(feed(p, [new TcpConnection(OTHER_USER, 50031, WEB, 6881).open()[0]])).toEqual([PACKET_ACCEPT]);
  });

  it('refuses a chain of another shape, which the flows\' state is not laid out for', () => {
    const { pipeline: p } = pipeline();
    expect(() => p.engine.replaceDetectors(detectorChain({ blockSocks: true }))).toThrow(RangeError);
  });
});
