import { describe, expect, it } from 'vitest';
import { Clock } from '../src/flow/clock.js';
import { PeerCache } from '../src/flow/peers.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../src/engine/engine.js';
import { LINKTYPE_RAW } from '../src/packet/linktype.js';
import { ascii, concat, ipv4Address, ipv6Address, packet4, tcp, udp } from './helpers/frames.js';

function v4(text: string): Uint8Array {
  return Uint8Array.from(ipv4Address(text));
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

  it('never takes low ports, well-known services, unusable addresses or allowlisted ones', () => {
    const cache = new PeerCache(64, 1000, new Clock(), (_family, buf, off) => buf[off] === 10);
    expect(cache.add(4, v4('198.51.100.7'), 0, 443)).toBe(false);
    expect(cache.add(4, v4('198.51.100.7'), 0, 3478)).toBe(false);
    expect(cache.add(4, v4('198.51.100.7'), 0, 51820)).toBe(false);
    expect(cache.add(4, v4('127.0.0.1'), 0, 6881)).toBe(false);
    expect(cache.add(4, v4('239.192.152.143'), 0, 6771)).toBe(false);
    expect(cache.add(4, v4('10.8.0.2'), 0, 6881)).toBe(false);
    expect(cache.refused).toBe(6);
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

  it('reads compact peer lists (BEP 23) and node lists (BEP 5)', () => {
    const cache = new PeerCache(64, 1000, new Clock());
    const peers = concat(v4('198.51.100.1'), [0x1a, 0xe1], v4('198.51.100.2'), [0xc8, 0xd5]);
    cache.addCompact(4, peers, 0, 2, 6, 0);
    expect(cache.has(4, v4('198.51.100.1'), 0, 6881)).toBe(true);
    expect(cache.has(4, v4('198.51.100.2'), 0, 51413)).toBe(true);
    const nodes = concat(new Uint8Array(20).fill(9), v4('203.0.113.5'), [0x1a, 0xe2]);
    cache.addCompact(4, nodes, 0, 1, 26, 20);
    expect(cache.has(4, v4('203.0.113.5'), 0, 6882)).toBe(true);
  });
});

describe('peer-cache detector', () => {
  const HANDSHAKE = concat([19], ascii('BitTorrent protocol'), new Uint8Array(48));
  const send = (engine: Engine, frame: Uint8Array) => engine.process(frame, 0, frame.length, LINKTYPE_RAW);

  it('catches a new flow to a peer an earlier flow proved, from its first payload byte', () => {
    const engine = new Engine({ flowCapacity: 16 });
    expect(send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 51413, HANDSHAKE)))).toBe(VERDICT_BITTORRENT);
    const encrypted = Uint8Array.from({ length: 96 }, (_, i) => (i * 151 + 7) & 0xff);
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 6, tcp(40001, 51413, encrypted)))).toBe(VERDICT_BITTORRENT);
    expect(engine.ruleNames[engine.flows.rule[engine.lastFlow]]).toBe('peer-cache');
    // Clients listen for TCP and uTP on one port, so the cached endpoint covers both transports.
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 17, udp(40001, 51413, encrypted)))).toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 17, udp(40001, 51414, encrypted)))).toBe(VERDICT_CLEAN);
  });

  it("never names a flow between a cached endpoint and a service: the client is only using DNS or HTTPS", () => {
    const engine = new Engine({ flowCapacity: 16 });
    const ping = ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
    // A DHT query from the client's BitTorrent port caches that port (UDP initiators listen on it).
    expect(send(engine, packet4('192.0.2.5', '198.51.100.9', 17, udp(51413, 6881, ping)))).toBe(VERDICT_BITTORRENT);
    const dns = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x77, 0x77, 0x77, 0, 0, 1, 0, 1]);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.53', 17, udp(51413, 53, dns)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.80', 17, udp(51413, 443, ascii('quic-ish'))))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('192.0.2.5', '203.0.113.7', 17, udp(51413, 40000, ascii('another peer'))))).toBe(VERDICT_BITTORRENT);
  });

  it('does not remember the initiator of a TCP flow, nor a peer on a well-known port', () => {
    const engine = new Engine({ flowCapacity: 16 });
    send(engine, packet4('10.1.0.2', '198.51.100.9', 6, tcp(40000, 8080, HANDSHAKE)));
    const other = ascii('GET / HTTP/1.1\r\n\r\n');
    expect(send(engine, packet4('10.1.0.3', '198.51.100.9', 6, tcp(40001, 8080, other)))).not.toBe(VERDICT_BITTORRENT);
    expect(send(engine, packet4('10.1.0.9', '10.1.0.2', 6, tcp(5555, 40000, other)))).not.toBe(VERDICT_BITTORRENT);
  });
});
