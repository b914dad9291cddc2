import { describe, expect, it } from 'vitest';
import { formatIPv6 } from '../src/flow/address.js';
import { FlowTable } from '../src/flow/table.js';
import { IPPROTO_TCP, IPPROTO_UDP, PacketInfo, TCP_ACK, TCP_SYN } from '../src/packet/packet.js';
import { ipv4Address, ipv6Address } from './helpers/frames.js';

/** A decoded packet as the decoder would leave it: addresses at offsets 0 and 16 of its own buffer. */
function packet(src: string, sport: number, dst: string, dport: number, opts: { l4?: number; flags?: number; payload?: number } = {}): PacketInfo {
  const pkt = new PacketInfo();
  const v6 = src.includes(':');
  pkt.family = v6 ? 6 : 4;
  pkt.buf = new Uint8Array(32);
  writeAddress(pkt.buf, 0, src);
  writeAddress(pkt.buf, 16, dst);
  pkt.srcOff = 0;
  pkt.dstOff = 16;
  pkt.l4 = opts.l4 ?? IPPROTO_TCP;
  pkt.sport = sport;
  pkt.dport = dport;
  pkt.tcpFlags = opts.flags ?? TCP_ACK;
  pkt.payloadLen = opts.payload ?? 0;
  return pkt;
}

/** Tracks `pkt` as seen at `nowMs`. */
function track(table: FlowTable, pkt: PacketInfo, nowMs: number): number {
  table.clock.nowMs = nowMs;
  return table.track(pkt);
}

function writeAddress(buf: Uint8Array, off: number, text: string): void {
  buf.set(text.includes(':') ? ipv6Address(text) : ipv4Address(text), off);
}

describe('FlowTable', () => {
  it('puts both directions of a connection in one flow and knows which side opened it', () => {
    const table = new FlowTable(16, 60_000, 0);
    const syn = track(table, packet('10.0.0.9', 40000, '10.0.0.1', 6881, { flags: TCP_SYN }), 1);
    expect(table.created).toBe(true);
    expect(table.direction).toBe(0);
    const synAck = track(table, packet('10.0.0.1', 6881, '10.0.0.9', 40000, { flags: TCP_SYN | TCP_ACK }), 2);
    expect(synAck).toBe(syn);
    expect(table.created).toBe(false);
    expect(table.direction).toBe(1);
    track(table, packet('10.0.0.9', 40000, '10.0.0.1', 6881, { payload: 68 }), 3);
    expect(table.size).toBe(1);
    expect(table.port(syn, 0)).toBe(40000);
    expect(table.port(syn, 1)).toBe(6881);
    const addr = new Uint8Array(16);
    table.address(syn, 0, addr);
    expect([...addr.subarray(0, 4)]).toEqual([10, 0, 0, 9]);
    expect(table.packets[syn * 2]).toBe(2);
    expect(table.packets[syn * 2 + 1]).toBe(1);
    expect(table.payloadPackets[syn * 2]).toBe(1);
    expect(table.payloadBytes[syn * 2]).toBe(68);
    expect(table.tcpFlags[syn * 2]).toBe(TCP_SYN | TCP_ACK);
    expect(table.tcpFlags[syn * 2 + 1]).toBe(TCP_SYN | TCP_ACK);
  });

  it('takes the receiver of a SYN-ACK seen first as the initiator', () => {
    const table = new FlowTable(4, 60_000, 0);
    const flow = track(table, packet('10.0.0.1', 6881, '10.0.0.9', 40000, { flags: TCP_SYN | TCP_ACK }), 1);
    expect(table.direction).toBe(1);
    expect(table.port(flow, 0)).toBe(40000);
  });

  it('keeps flows apart by transport, port and address family', () => {
    const table = new FlowTable(16, 60_000, 0);
    const a = track(table, packet('10.0.0.1', 1000, '10.0.0.2', 2000), 1);
    const b = track(table, packet('10.0.0.1', 1000, '10.0.0.2', 2000, { l4: IPPROTO_UDP }), 1);
    const c = track(table, packet('10.0.0.1', 1000, '10.0.0.2', 2001), 1);
    const d = track(table, packet('::a00:1', 1000, '::a00:2', 2000), 1);
    const e = track(table, packet('10.0.0.1', 1000, '10.0.0.1', 2000), 1);
    const f = track(table, packet('10.0.0.1', 2000, '10.0.0.1', 1000), 1);
    expect(new Set([a, b, c, d, e]).size).toBe(5);
    expect(f).toBe(e);
    expect(table.family(d)).toBe(6);
    expect(table.l4(b)).toBe(IPPROTO_UDP);
  });

  it('never grows past its capacity: a full table evicts the least recently used flow', () => {
    const table = new FlowTable(3, 60_000, 0);
    const released: number[] = [];
    table.onRelease = (flow) => released.push(table.port(flow, 0));
    track(table, packet('10.0.0.1', 1, '10.0.0.2', 80), 1);
    track(table, packet('10.0.0.1', 2, '10.0.0.2', 80), 2);
    track(table, packet('10.0.0.1', 3, '10.0.0.2', 80), 3);
    track(table, packet('10.0.0.2', 80, '10.0.0.1', 1), 4); // port 1 is used again, so port 2 is now the oldest
    track(table, packet('10.0.0.1', 4, '10.0.0.2', 80), 5);
    expect(released).toEqual([2]);
    expect(table.size).toBe(3);
    expect(table.evicted).toBe(1);
    for (let port = 10; port < 1000; port++) track(table, packet('10.0.0.1', port, '10.0.0.2', 80), 6 + port);
    expect(table.size).toBe(3);
    expect(table.evicted).toBe(991);
  });

  it('releases idle flows as new ones arrive, and starts over on endpoints idle past the timeout', () => {
    const table = new FlowTable(8, 1000, 0);
    const released: number[] = [];
    table.onRelease = (flow) => released.push(table.port(flow, 0));
    track(table, packet('10.0.0.1', 1, '10.0.0.2', 80), 0);
    track(table, packet('10.0.0.1', 2, '10.0.0.2', 80), 500);
    track(table, packet('10.0.0.1', 3, '10.0.0.2', 80), 1200);
    expect(released).toEqual([1]);
    expect(table.size).toBe(2);
    expect(table.expired).toBe(1);
    track(table, packet('10.0.0.2', 80, '10.0.0.1', 2), 5000);
    expect(table.created).toBe(true);
    expect(released).toEqual([1, 2, 3]);
    expect(table.size).toBe(1);
    expect(table.expired).toBe(3);
  });

  it("keeps the sequence number of each direction's first SYN, which a later SYN cannot move", () => {
    const table = new FlowTable(16, 60_000, 0);
    const withSeq = (pkt: PacketInfo, seq: number) => {
      pkt.tcpSeq = seq;
      return pkt;
    };
    const flow = track(table, withSeq(packet('10.0.0.9', 40000, '10.0.0.1', 6881, { flags: TCP_SYN }), 0xfffffff0), 1);
    track(table, withSeq(packet('10.0.0.1', 6881, '10.0.0.9', 40000, { flags: TCP_SYN | TCP_ACK }), 0x12345678), 2);
    // A retransmitted (or forged) SYN, and a data segment.
    track(table, withSeq(packet('10.0.0.9', 40000, '10.0.0.1', 6881, { flags: TCP_SYN }), 7), 3);
    track(table, withSeq(packet('10.0.0.9', 40000, '10.0.0.1', 6881, { payload: 68 }), 0xfffffff1), 4);
    expect(table.synSeq[flow * 2]).toBe(0xfffffff0);
    expect(table.synSeq[flow * 2 + 1]).toBe(0x12345678);
    // No SYN seen: no sequence number kept.
    const late = track(table, withSeq(packet('10.0.0.9', 40001, '10.0.0.1', 6881, { payload: 10 }), 99), 5);
    expect(table.tcpFlags[late * 2] & TCP_SYN).toBe(0);
    expect(table.synSeq[late * 2]).toBe(0);
  });

  it('zeroes detector state and counters when a slot is reused', () => {
    const table = new FlowTable(1, 60_000, 4);
    const flow = track(table, packet('10.0.0.1', 1, '10.0.0.2', 80, { payload: 10 }), 0);
    table.state.fill(7, flow * 4, flow * 4 + 4);
    table.verdict[flow] = 2;
    table.rule[flow] = 3;
    table.strength[flow] = 2;
    table.producer[flow] = 1;
    const reused = track(table, packet('10.0.0.1', 2, '10.0.0.2', 80), 1);
    expect(reused).toBe(flow);
    expect([...table.state.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    expect(table.verdict[reused]).toBe(0);
    expect(table.rule[reused]).toBe(0);
    expect(table.strength[reused]).toBe(0);
    expect(table.producer[reused]).toBe(0);
    expect(table.payloadBytes[reused * 2]).toBe(0);
  });

  it('finds every flow again after many inserts and releases (chains stay intact)', () => {
    const table = new FlowTable(64, 10, 0);
    for (let round = 0; round < 20; round++) {
      const now = round * 100;
      const ids = new Map<number, number>();
      for (let port = 0; port < 64; port++) ids.set(port, track(table, packet('192.0.2.1', port + round, '192.0.2.2', 443), now));
      expect(table.size).toBe(64);
      for (let port = 0; port < 64; port++) {
        expect(track(table, packet('192.0.2.2', 443, '192.0.2.1', port + round), now)).toBe(ids.get(port));
        expect(table.created).toBe(false);
      }
    }
    expect(table.evicted).toBe(0);
  });

  it('states its memory per flow', () => {
    const table = new FlowTable(1000, 1, 16);
    expect(table.bytesPerFlow).toBeGreaterThan(100);
    expect(table.bytesPerFlow).toBeLessThan(200);
  });
});

describe('formatIPv6', () => {
  it.each([
    ['2001:db8::1', '2001:db8::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['fe80::', 'fe80::'],
  ])('%s prints as %s', (input, expected) => {
    const bytes = new Uint8Array(16);
    writeAddress(bytes, 0, input);
    expect(formatIPv6(bytes)).toBe(expected);
  });
});
