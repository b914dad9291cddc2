import { describe, expect, it } from 'vitest';
import { Clock } from '../src/flow/clock.js';
import { PeerCache, PeerLists, TorrentingHosts } from '../src/flow/peers.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../src/engine/engine.js';
import { LINKTYPE_RAW } from '../src/packet/linktype.js';
import { PacketInfo } from '../src/packet/packet.js';
import { ascii, concat, ipv4Address, ipv6Address, packet4, packet6, tcp, udp } from './helpers/frames.js';
import { isProven, listedTo, listTo, prove } from './helpers/listed.js';

function v4(text: string): Uint8Array {
  return Uint8Array.from(ipv4Address(text));
}

function v6(text: string): Uint8Array {
  return Uint8Array.from(ipv6Address(text));
}

describe('PeerCache', () => {
  it('remembers endpoints until their time to live runs out', () => {
    const clock = new Clock();
    const cache = new PeerCache(64, 1000, clock);
    expect(cache.add(4, v4('198.51.100.7'), 0, 51413)).toBe(true);
    expect(cache.has(4, v4('198.51.100.7'), 0, 51413)).toBe(true);
    expect(cache.has(4, v4('198.51.100.7'), 0, 51414)).toBe(false);
    expect(cache.has(4, v4('198.51.100.8'), 0, 51413)).toBe(false);
    clock.nowMs = 999;
    expect(cache.has(4, v4('198.51.100.7'), 0, 51413)).toBe(true);
    clock.nowMs = 1000;
    expect(cache.has(4, v4('198.51.100.7'), 0, 51413)).toBe(false);
  });

  it('keeps IPv6 and IPv4 apart', () => {
    const cache = new PeerCache(64, 1000, new Clock());
    const v6 = Uint8Array.from(ipv6Address('2001:db8::7'));
    cache.add(6, v6, 0, 6881);
    expect(cache.has(6, v6, 0, 6881)).toBe(true);
    expect(cache.has(4, v6, 12, 6881)).toBe(false);
  });

  it('never takes low ports, well-known services, proxies, unusable addresses or allowlisted ones', () => {
    const cache = new PeerCache(64, 1000, new Clock(), (_family, buf, off) => buf[off] === 10);
    expect(cache.add(4, v4('198.51.100.7'), 0, 443)).toBe(false);
    expect(cache.add(4, v4('198.51.100.7'), 0, 3478)).toBe(false);
    expect(cache.add(4, v4('198.51.100.7'), 0, 51820)).toBe(false);
    // Read from its middle, a SOCKS connection's tunnelled peer wire names the proxy.
    expect(cache.add(4, v4('198.51.100.7'), 0, 1080)).toBe(false);
    expect(cache.add(4, v4('127.0.0.1'), 0, 6881)).toBe(false);
    expect(cache.add(4, v4('239.192.152.143'), 0, 6771)).toBe(false);
    expect(cache.add(4, v4('10.8.0.2'), 0, 6881)).toBe(false);
    expect(cache.refused).toBe(7);
    expect(cache.inserts).toBe(0);
    expect(cache.has(4, v4('198.51.100.7'), 0, 443)).toBe(false);
  });

  it('stays within its capacity and keeps the newest entries', () => {
    const clock = new Clock();
    const cache = new PeerCache(256, 1_000_000, clock);
    const addr = new Uint8Array(4);
    for (let i = 0; i < 10_000; i++) {
      clock.nowMs = i;
      addr.set([198, 18, i >> 8, i & 0xff]);
      cache.add(4, addr, 0, 20000);
    }
    expect(cache.capacity).toBe(256);
    let recentFound = 0;
    for (let i = 9_990; i < 10_000; i++) {
      addr.set([198, 18, i >> 8, i & 0xff]);
      if (cache.has(4, addr, 0, 20000)) recentFound++;
    }
    expect(recentFound).toBe(10);
  });

  it('counts its live entries a bounded number of slots at a time, reporting each whole pass', () => {
    const clock = new Clock();
    const cache = new PeerCache(64, 1000, clock);
    for (let i = 0; i < 10; i++) cache.add(4, v4(`198.51.100.${i + 1}`), 0, 51413);
    clock.nowMs = 500;
    for (let i = 10; i < 13; i++) cache.add(4, v4(`198.51.100.${i + 1}`), 0, 51413);
    // 64 slots, 16 a call: the count is known after the fourth call, and 0 until then.
    expect([1, 2, 3].map(() => cache.countLive(500, 16))).toEqual([0, 0, 0]);
    expect(cache.countLive(500, 16)).toBe(13);
    // The first ten expire at 1000: the next whole pass counts the three left.
    expect(cache.countLive(1000, 64)).toBe(3);
  });

  it('forgets everything on clear()', () => {
    const cache = new PeerCache(64, 1000, new Clock(), undefined, true);
    cache.add(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0);
    expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(true);
    cache.clear();
    expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(false);
  });

  describe('scoped', () => {
    it('finds an entry only for the host it was listed to', () => {
      const cache = new PeerCache(64, 1000, new Clock(), undefined, true);
      expect(cache.scoped).toBe(true);
      expect(cache.add(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(true);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(true);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.3'), 0)).toBe(false);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51414, 4, v4('10.1.0.2'), 0)).toBe(false);
      // No scope at all is no host either.
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413)).toBe(false);
    });

    it('keeps one endpoint listed to two hosts as two entries, each with its own time to live', () => {
      const clock = new Clock();
      const cache = new PeerCache(64, 1000, clock, undefined, true);
      cache.add(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0);
      clock.nowMs = 500;
      cache.add(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.3'), 0);
      expect(cache.inserts).toBe(2);
      clock.nowMs = 1200;
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(false);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.3'), 0)).toBe(true);
    });

    it('keeps IPv4 and IPv6 scopes apart, and an IPv6 endpoint may be listed to an IPv4 host', () => {
      const cache = new PeerCache(64, 1000, new Clock(), undefined, true);
      // ::a01:2 holds the bytes of 10.1.0.2 in its last word: the same words, another family.
      const host6 = v6('::a01:2');
      cache.add(4, v4('198.51.100.7'), 0, 51413, 6, host6, 0);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 6, host6, 0)).toBe(true);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, host6, 12)).toBe(false);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0)).toBe(false);
      cache.add(6, v6('2001:db8::7'), 0, 6881, 4, v4('10.1.0.2'), 0);
      expect(cache.has(6, v6('2001:db8::7'), 0, 6881, 4, v4('10.1.0.2'), 0)).toBe(true);
      expect(cache.has(6, v6('2001:db8::7'), 0, 6881, 6, host6, 0)).toBe(false);
    });

    it('ignores the scope in an unscoped cache: a proven peer holds for every host', () => {
      const cache = new PeerCache(64, 1000, new Clock());
      cache.add(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.2'), 0);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413)).toBe(true);
      expect(cache.has(4, v4('198.51.100.7'), 0, 51413, 4, v4('10.1.0.3'), 0)).toBe(true);
    });
  });
});

describe('PeerLists', () => {
  /** A packet from 203.0.113.5 (the tracker or DHT node) to 10.1.0.2 (the host receiving the list). */
  function listPacket(): PacketInfo {
    const pkt = new PacketInfo();
    pkt.family = 4;
    pkt.buf = concat(v4('203.0.113.5'), v4('10.1.0.2'));
    pkt.srcOff = 0;
    pkt.dstOff = 4;
    return pkt;
  }

  it('lists an endpoint to the receiver of the current packet, not its sender', () => {
    const lists = new PeerLists(new PeerCache(64, 1000, new Clock(), undefined, true), listPacket());
    expect(lists.add(4, v4('198.51.100.1'), 0, 6881)).toBe(true);
    expect(listedTo({ announced: lists.cache }, '198.51.100.1', 6881, '10.1.0.2')).toBe(true);
    expect(listedTo({ announced: lists.cache }, '198.51.100.1', 6881, '203.0.113.5')).toBe(false);
    expect(lists.accepts(4, v4('198.51.100.1'), 0, 443)).toBe(false);
    expect(lists.add(4, v4('198.51.100.1'), 0, 443)).toBe(false);
  });

  it('reads compact peer lists (BEP 23) and node lists (BEP 5), for the receiver', () => {
    const announced = new PeerCache(64, 1000, new Clock(), undefined, true);
    const lists = new PeerLists(announced, listPacket());
    const peers = concat(v4('198.51.100.1'), [0x1a, 0xe1], v4('198.51.100.2'), [0xc8, 0xd5]);
    lists.addCompact(4, peers, 0, 2, 6, 0);
    expect(listedTo({ announced }, '198.51.100.1', 6881, '10.1.0.2')).toBe(true);
    expect(listedTo({ announced }, '198.51.100.2', 51413, '10.1.0.2')).toBe(true);
    expect(listedTo({ announced }, '198.51.100.2', 51413, '10.1.0.3')).toBe(false);
    const nodes = concat(new Uint8Array(20).fill(9), v4('203.0.113.6'), [0x1a, 0xe2]);
    lists.addCompact(4, nodes, 0, 1, 26, 20);
    expect(listedTo({ announced }, '203.0.113.6', 6882, '10.1.0.2')).toBe(true);
    const peers6 = concat(v6('2001:db8::9'), [0x1a, 0xe3]);
    lists.addCompact(6, peers6, 0, 1, 18, 0);
    expect(listedTo({ announced }, '2001:db8::9', 6883, '10.1.0.2')).toBe(true);
    expect(announced.inserts).toBe(4);
  });
});

describe('peer-cache detector', () => {
  const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(48));
  const ENCRYPTED = Uint8Array.from({ length: 96 }, (_, i) => (i * 151 + 7) & 0xff);
  const send = (engine: Engine, frame: Uint8Array) => engine.process(frame, 0, frame.length, LINKTYPE_RAW);
  const rule = (engine: Engine) => engine.ruleNames[engine.flows.rule[engine.lastFlow]];

  it('catches a flow from any host to a proven peer from its first payload byte, as cache evidence', () => {
    const engine = new Engine({ flowCapacity: 16 });
    expect(prove(engine, '198.51.100.9', 51413)).toBe(true);
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 6, tcp(40001, 51413, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    expect(engine.strengthName(engine.lastFlow)).toBe('cache');
    expect(engine.flows.producer[engine.lastFlow]).toBe(0);
    expect(engine.producerIsPeer(engine.flows.rule[engine.lastFlow])).toBe(true);
    // Any host: a proven peer is not scoped.
    expect(send(engine, packet4('10.1.0.4', '198.51.100.9', 6, tcp(40001, 51413, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    // Clients listen for TCP and uTP on one port, so the cached endpoint covers both transports.
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 17, udp(40001, 51413, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 17, udp(40001, 51414, ENCRYPTED)))).toBe(VERDICT_CLEAN);
    // The peer's own packets name it as well, from its side of the flow.
    expect(send(engine, packet4('198.51.100.9', '10.1.0.5', 17, udp(51413, 40002, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    expect(engine.flows.producer[engine.lastFlow]).toBe(0);
  });

  it("catches the flows of the host a peer was listed to, as announced evidence, and no other host's", () => {
    const engine = new Engine({ flowCapacity: 16 });
    expect(listTo(engine, '198.51.100.9', 51413, '10.1.0.2')).toBe(true);
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 51413, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    expect(engine.strengthName(engine.lastFlow)).toBe('announced');
    // The listed peer calling the host it was listed to.
    expect(send(engine, packet4('198.51.100.9', '10.1.0.2', 17, udp(51413, 40000, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
    expect(engine.strengthName(engine.lastFlow)).toBe('announced');
    // Another host, both ways: the list was not sent to it.
    expect(send(engine, packet4('192.0.2.99', '198.51.100.9', 6, tcp(40000, 51413, ENCRYPTED)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.99', '198.51.100.9', 17, udp(40000, 51413, ENCRYPTED)))).toBe(VERDICT_CLEAN);
    expect(send(engine, packet4('198.51.100.9', '192.0.2.99', 17, udp(51413, 40001, ENCRYPTED)))).toBe(VERDICT_CLEAN);
  });

  it('marks the end that reached the known endpoint torrenting, and not the endpoint: the flow shows no bytes that would have', () => {
    const engine = new Engine({ flowCapacity: 16 });
    const has = (address: string) => engine.torrenting.has(4, Uint8Array.from(ipv4Address(address)), 0);
    listTo(engine, '198.51.100.9', 51413, '10.1.0.2');
    prove(engine, '198.51.100.10', 51413);
    expect(has('10.1.0.2')).toBe(false);
    send(engine, packet4('198.51.100.9', '10.1.0.2', 6, tcp(51413, 40000, ENCRYPTED)));
    expect(has('10.1.0.2')).toBe(true);
    send(engine, packet4('10.1.0.3', '198.51.100.10', 6, tcp(40000, 51413, ENCRYPTED)));
    expect(has('10.1.0.3')).toBe(true);
    expect(has('198.51.100.9') || has('198.51.100.10')).toBe(false);
  });

  it('keeps IPv6 hosts and peers to their own lists', () => {
    const engine = new Engine({ flowCapacity: 16 });
    listTo(engine, '2001:db8::9', 6881, '2001:db8:1::2');
    expect(send(engine, packet6('2001:db8:1::2', '2001:db8::9', 17, udp(40000, 6881, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(engine.strengthName(engine.lastFlow)).toBe('announced');
    expect(send(engine, packet6('2001:db8:1::3', '2001:db8::9', 17, udp(40000, 6881, ENCRYPTED)))).toBe(VERDICT_CLEAN);
  });

  it('names a proven peer cache evidence even where it was listed too', () => {
    const engine = new Engine({ flowCapacity: 16 });
    listTo(engine, '198.51.100.9', 51413, '10.1.0.2');
    prove(engine, '198.51.100.9', 51413);
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 51413, ENCRYPTED)))).toBe(VERDICT_BITTORRENT);
    expect(engine.strengthName(engine.lastFlow)).toBe('cache');
  });

  it('never names a flow between a cached endpoint and a service: the client is only using DNS or HTTPS', () => {
    const engine = new Engine({ flowCapacity: 16 });
    // The client's own BitTorrent port, proven (a UDP initiator listens on it) and listed to a host.
    prove(engine, '192.0.2.5', 51413);
    listTo(engine, '192.0.2.6', 51413, '203.0.113.53');
    const dns = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x77, 0x77, 0x77, 0, 0, 1, 0, 1]);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.53', 17, udp(51413, 53, dns)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.80', 17, udp(51413, 443, ascii('quic-ish'))))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.6', '203.0.113.53', 17, udp(51413, 53, dns)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.7', 17, udp(51413, 40000, ascii('another peer'))))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('peer-cache');
  });

  it('is caught by nothing the engine remembers itself: a match proves and lists no endpoint', () => {
    const engine = new Engine({ flowCapacity: 16 });
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 51413, HANDSHAKE)))).toBe(VERDICT_BITTORRENT);
    expect(rule(engine)).toBe('handshake');
    expect(engine.proven.inserts).toBe(0);
    expect(engine.announced.inserts).toBe(0);
    expect(isProven(engine, '198.51.100.9', 51413)).toBe(false);
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 6, tcp(40001, 51413, ENCRYPTED)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40002, 51413, ENCRYPTED)))).not.toBe(VERDICT_BITTORRENT);
  });

  it('refuses a peer on a well-known port, so flows to it stay undecided by the cache', () => {
    const engine = new Engine({ flowCapacity: 16 });
    expect(prove(engine, '198.51.100.9', 8080)).toBe(false);
    expect(listTo(engine, '198.51.100.9', 8080, '10.1.0.3')).toBe(false);
    const other = ascii('GET / HTTP/1.1\r\n\r\n');
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 6, tcp(40001, 8080, other)))).not.toBe(VERDICT_BITTORRENT);
  });

  it('forgets both tables on reset()', () => {
    const engine = new Engine({ flowCapacity: 16 });
    prove(engine, '198.51.100.9', 51413);
    listTo(engine, '198.51.100.10', 51413, '10.1.0.2');
    engine.reset();
    expect(isProven(engine, '198.51.100.9', 51413)).toBe(false);
    expect(listedTo(engine, '198.51.100.10', 51413, '10.1.0.2')).toBe(false);
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 51413, ENCRYPTED)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('10.1.0.2', '198.51.100.10', 6, tcp(40000, 51413, ENCRYPTED)))).not.toBe(VERDICT_BITTORRENT);
  });
});

describe('TorrentingHosts sightings', () => {
  const v6 = (text: string) => Uint8Array.from(ipv6Address(text));
  /** The host and an end side by side in one buffer, as in a packet: host at 0, end at 16. */
  const sight = (hosts: TorrentingHosts, host: string, end: string) => hosts.sighted(6, concat(v6(host), v6(end)), 0, 16);

  it('counts an IPv6 end by its /64: many addresses of one network are one end', () => {
    const hosts = new TorrentingHosts(4096, 60_000, new Clock());
    expect(sight(hosts, 'fd00::1', '2001:db8:1:1::10')).toBe(false);
    expect(sight(hosts, 'fd00::1', '2001:db8:1:1::11')).toBe(false);
    expect(sight(hosts, 'fd00::1', '2001:db8:1:1:abcd::1')).toBe(false);
    expect(hosts.has(6, v6('fd00::1'), 0)).toBe(false);
    // Another /64 is a second end: the host is marked.
    expect(sight(hosts, 'fd00::1', '2001:db8:1:2::10')).toBe(true);
    expect(hosts.has(6, v6('fd00::1'), 0)).toBe(true);
  });
});
