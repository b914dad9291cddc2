import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { MAX_TUNNEL_DEPTH, PacketDecoder } from '../src/packet/decode.js';
import { DECODE_STATUS_COUNT, DECODED_OTHER_L4, DECODED_TCP_UDP, PacketInfo } from '../src/packet/packet.js';
import {
  LINKTYPE_C_HDLC,
  LINKTYPE_ETHERNET,
  LINKTYPE_IPV4,
  LINKTYPE_IPV6,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_LINUX_SLL2,
  LINKTYPE_LOOP,
  LINKTYPE_NULL,
  LINKTYPE_PPI,
  LINKTYPE_PPP,
  LINKTYPE_PPP_ETHER,
  LINKTYPE_PPP_HDLC,
  LINKTYPE_RAW,
  LINKTYPE_RAW_DLT12,
  LINKTYPE_RAW_DLT14,
} from '../src/packet/linktype.js';
import {
  capwap,
  concat,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_MPLS,
  ETHERTYPE_PPPOE_SESSION,
  ETHERTYPE_TRANSPARENT_BRIDGING,
  ETHERTYPE_VLAN,
  ethernet,
  ethernetSnap,
  gre,
  greV1,
  gtpU,
  ipv4,
  ipv6,
  ipv6AuthenticationHeader,
  ipv6Extension,
  ipv6Fragment,
  mpls,
  pppoeSession,
  PROTO_GRE,
  PROTO_IPIP,
  PROTO_IPV6,
  PROTO_TCP,
  PROTO_UDP,
  tcp,
  teredoAuthentication,
  teredoOriginIndication,
  u16,
  u16le,
  u32,
  u32le,
  udp,
  vxlan,
  wlanData,
  type VlanTag,
} from './helpers/frames.js';

const SUPPORTED_LINK_TYPES = [
  LINKTYPE_NULL,
  LINKTYPE_ETHERNET,
  LINKTYPE_PPP,
  LINKTYPE_RAW_DLT12,
  LINKTYPE_RAW_DLT14,
  LINKTYPE_PPP_HDLC,
  LINKTYPE_PPP_ETHER,
  LINKTYPE_RAW,
  LINKTYPE_C_HDLC,
  LINKTYPE_LOOP,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_PPI,
  LINKTYPE_IPV4,
  LINKTYPE_IPV6,
  LINKTYPE_LINUX_SLL2,
];

/**
 * A view of `bytes` that records every index read outside [off, off + len): the decoder must
 * stay inside the capture even where an out-of-range read would quietly give undefined.
 */
function guardedBuffer(bytes: Uint8Array, off: number, len: number, strayReads: number[]): Uint8Array {
  return new Proxy(bytes, {
    get(target, property) {
      if (typeof property === 'string' && /^\d+$/.test(property)) {
        const index = Number(property);
        if (index < off || index >= off + len) strayReads.push(index);
        return target[index];
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Decodes `frame` placed between filler bytes and checks every reported offset stays in the capture. */
function decodeWithinBounds(frame: Uint8Array, linkType: number, lead: number, trail: number): { status: number; info: PacketInfo } {
  const bytes = new Uint8Array(lead + frame.length + trail).fill(0x45);
  bytes.set(frame, lead);
  const strayReads: number[] = [];
  const info = new PacketInfo();
  const status = new PacketDecoder().decode(guardedBuffer(bytes, lead, frame.length, strayReads), lead, frame.length, linkType, info);
  const end = lead + frame.length;
  expect(strayReads).toEqual([]);
  expect(Number.isInteger(status) && status >= 0 && status < DECODE_STATUS_COUNT).toBe(true);
  expect(info.payloadLen).toBeGreaterThanOrEqual(0);
  expect(info.payloadOff).toBeGreaterThanOrEqual(lead);
  expect(info.payloadOff + info.payloadLen).toBeLessThanOrEqual(end);
  expect(info.tunnelDepth).toBeGreaterThanOrEqual(0);
  expect(info.tunnelDepth).toBeLessThanOrEqual(MAX_TUNNEL_DEPTH);
  if (status === DECODED_TCP_UDP || status === DECODED_OTHER_L4) {
    const addressLen = info.family === 4 ? 4 : 16;
    expect([4, 6]).toContain(info.family);
    expect(info.ipOff).toBeGreaterThanOrEqual(lead);
    for (const addressOff of [info.srcOff, info.dstOff]) {
      expect(addressOff).toBeGreaterThan(info.ipOff);
      expect(addressOff + addressLen).toBeLessThanOrEqual(end);
    }
    for (const field of [info.l4, info.sport, info.dport, info.tcpFlags, info.tcpSeq, info.tcpAck]) {
      expect(Number.isInteger(field) && field >= 0).toBe(true);
    }
  }
  return { status, info };
}

const innerTcp = ipv4(PROTO_TCP, tcp(40000, 6881, Uint8Array.from([1, 2, 3])));
const innerUdp6 = ipv6(PROTO_UDP, udp(5353, 53, Uint8Array.from([4, 5, 6])));

function overUdp(dport: number, payload: Uint8Array): Uint8Array {
  return ethernet(ETHERTYPE_IPV4, ipv4(PROTO_UDP, udp(50000, dport, payload)));
}

/** Valid frames reaching every decoding path, for mutation. */
const SEED_FRAMES: [linkType: number, frame: Uint8Array][] = [
  [LINKTYPE_ETHERNET, ethernet(ETHERTYPE_IPV4, innerTcp, [[0x88a8, 1], [ETHERTYPE_VLAN, 2]])],
  [LINKTYPE_ETHERNET, ethernet(ETHERTYPE_PPPOE_SESSION, pppoeSession(0x0057, innerUdp6))],
  [LINKTYPE_ETHERNET, ethernet(ETHERTYPE_MPLS, mpls([1, 2], innerTcp))],
  [LINKTYPE_ETHERNET, ethernetSnap(ETHERTYPE_IPV6, innerUdp6)],
  [LINKTYPE_RAW, ipv4(PROTO_TCP, tcp(1, 2, Uint8Array.from([7]), { options: [2, 4, 5, 0xb4] }), { options: [1, 1, 1, 0] })],
  [LINKTYPE_RAW, ipv6(0, ipv6Extension(43, 1, ipv6Extension(51, 1, ipv6AuthenticationHeader(44, 4, ipv6Fragment(PROTO_UDP, 0, true, udp(1, 2, Uint8Array.from([9])))))))],
  [LINKTYPE_LINUX_SLL, concat([0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, ...u16(ETHERTYPE_IPV4)], innerTcp)],
  [LINKTYPE_LINUX_SLL2, concat([...u16(ETHERTYPE_IPV6), 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0], innerUdp6)],
  [LINKTYPE_NULL, concat(u32le(30), innerUdp6)],
  [LINKTYPE_LOOP, concat(u32(2), innerTcp)],
  [LINKTYPE_PPP, concat([0xff, 0x03, 0x00, 0x21], innerTcp)],
  [LINKTYPE_PPP, concat([0x0f, 0x00, ...u16(ETHERTYPE_IPV4)], innerTcp)],
  [LINKTYPE_C_HDLC, concat([0x8f, 0x00, ...u16(ETHERTYPE_IPV6)], innerUdp6)],
  [LINKTYPE_PPP_ETHER, pppoeSession(0x0021, innerTcp)],
  [LINKTYPE_PPI, concat([0, 0, ...u16le(12), ...u32le(LINKTYPE_ETHERNET), 0, 0, 0, 0], ethernet(ETHERTYPE_IPV4, innerTcp))],
  [LINKTYPE_RAW, ipv6(PROTO_IPIP, ipv4(PROTO_IPV6, innerUdp6))],
  [LINKTYPE_RAW, ipv4(PROTO_GRE, gre(ETHERTYPE_TRANSPARENT_BRIDGING, ethernet(ETHERTYPE_IPV4, innerTcp), { checksum: true, key: true, sequence: true }))],
  [LINKTYPE_RAW, ipv4(PROTO_GRE, greV1(concat([0xff, 0x03, 0x00, 0x21], innerTcp), true, true))],
  [LINKTYPE_ETHERNET, overUdp(2152, gtpU(innerTcp, 0xff, 1, [[0x10, 0x01], [1, 2, 3, 4, 5, 6]]))],
  [LINKTYPE_ETHERNET, overUdp(4789, vxlan(ethernet(ETHERTYPE_IPV6, innerUdp6)))],
  [LINKTYPE_ETHERNET, overUdp(5247, capwap(ethernet(ETHERTYPE_IPV4, innerTcp), false))],
  [LINKTYPE_ETHERNET, overUdp(5247, capwap(wlanData(ETHERTYPE_IPV4, innerTcp, { qos: true, fourAddresses: true }), true, 4))],
  [LINKTYPE_ETHERNET, overUdp(3544, teredoAuthentication([1], [2, 3], teredoOriginIndication(innerUdp6)))],
];

describe('PacketDecoder properties', () => {
  it('never throws or strays outside the capture on arbitrary bytes, for every link type', () => {
    fc.assert(
      // Lengths drawn evenly: fast-check's default sizing seldom reaches the lengths where headers end.
      fc.property(fc.nat(160).chain((len) => fc.uint8Array({ minLength: len, maxLength: len })), fc.nat(8), fc.nat(8), (frame, lead, trail) => {
        for (const linkType of [...SUPPORTED_LINK_TYPES, 147]) decodeWithinBounds(frame, linkType, lead, trail);
      }),
      { numRuns: 1500 },
    );
  });

  it('never throws or strays outside the capture on mutated and truncated valid frames', () => {
    fc.assert(
      fc.property(
        fc.nat(SEED_FRAMES.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 6 }),
        fc.nat(),
        (seed, mutations, cut) => {
          const [linkType, valid] = SEED_FRAMES[seed];
          const frame = Uint8Array.from(valid);
          for (const [at, value] of mutations) frame[at % frame.length] = value;
          decodeWithinBounds(frame.subarray(0, cut % (frame.length + 1)), linkType, 3, 5);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('decodes every seed frame to its inner TCP or UDP packet', () => {
    for (const [linkType, frame] of SEED_FRAMES) {
      expect(decodeWithinBounds(frame, linkType, 0, 0).status).toBe(DECODED_TCP_UDP);
    }
  });

  it('reads back the ports, sequence numbers, flags and payload it was given, behind any VLAN tags', () => {
    fc.assert(
      fc.property(
        fc.record({
          sport: fc.nat(0xffff),
          dport: fc.nat(0xffff),
          seq: fc.nat(0xffffffff),
          ack: fc.nat(0xffffffff),
          flags: fc.nat(0xff),
          optionWords: fc.nat(10),
          payload: fc.uint8Array({ maxLength: 64 }),
          vlanIds: fc.array(fc.nat(0xfff), { maxLength: 3 }),
        }),
        ({ sport, dport, seq, ack, flags, optionWords, payload, vlanIds }) => {
          const options = new Array<number>(optionWords * 4).fill(1);
          const tags = vlanIds.map((vid): VlanTag => [ETHERTYPE_VLAN, vid]);
          const frame = ethernet(ETHERTYPE_IPV4, ipv4(PROTO_TCP, tcp(sport, dport, payload, { seq, ack, flags, options })), tags);
          const { status, info } = decodeWithinBounds(frame, LINKTYPE_ETHERNET, 0, 0);
          expect(status).toBe(DECODED_TCP_UDP);
          expect([info.sport, info.dport, info.tcpSeq, info.tcpAck, info.tcpFlags]).toEqual([sport, dport, seq, ack, flags]);
          expect(info.buf.subarray(info.payloadOff, info.payloadOff + info.payloadLen)).toEqual(payload);
        },
      ),
    );
  });
});
