import { formatIPv6 } from '../src/flow/address.js';
import { describe, it, expect } from 'vitest';
import { PacketDecoder } from '../src/packet/decode.js';
import {
  DECODED_MALFORMED,
  DECODED_NOT_IP,
  DECODED_OTHER_L4,
  DECODED_TCP_UDP,
  DECODED_UNKNOWN_LINK,
  PacketInfo,
  TCP_ACK,
  TCP_SYN,
} from '../src/packet/packet.js';
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
  ascii,
  capwap,
  concat,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_MPLS,
  ETHERTYPE_MPLS_MULTICAST,
  ETHERTYPE_PPPOE_SESSION,
  ETHERTYPE_QINQ,
  ETHERTYPE_QINQ_LEGACY,
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
  PROTO_ESP,
  PROTO_GRE,
  PROTO_ICMP,
  PROTO_ICMPV6,
  PROTO_IPIP,
  PROTO_IPV6,
  PROTO_NO_NEXT_HEADER,
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
} from './helpers/frames.js';

/** Bytes around the frame: the decoder must use absolute offsets and read none of them. */
const LEAD = 5;
const TRAIL = 11;
const FILLER = 0xee;

interface Decoded {
  status: number;
  info: PacketInfo;
}

function decodeFrame(frame: Uint8Array, linkType: number, decoder = new PacketDecoder()): Decoded {
  const buf = new Uint8Array(LEAD + frame.length + TRAIL).fill(FILLER);
  buf.set(frame, LEAD);
  const info = new PacketInfo();
  const status = decoder.decode(buf, LEAD, frame.length, linkType, info);
  return { status, info };
}

function address(info: PacketInfo, off: number): string {
  const b = info.buf;
  return info.family === 4 ? `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}` : formatIPv6(b, off);
}

/** What a flow table would take from the packet, in a form tests can compare whole. */
function summary({ status, info }: Decoded) {
  return {
    status,
    family: info.family,
    src: address(info, info.srcOff),
    dst: address(info, info.dstOff),
    l4: info.l4,
    sport: info.sport,
    dport: info.dport,
    payload: String.fromCharCode(...info.buf.subarray(info.payloadOff, info.payloadOff + info.payloadLen)),
    tunnelDepth: info.tunnelDepth,
  };
}

const PAYLOAD = ascii('hello');

const tcpOverIpv4 = ipv4(PROTO_TCP, tcp(40000, 6881, PAYLOAD), { src: '192.0.2.1', dst: '198.51.100.2' });
const udpOverIpv6 = ipv6(PROTO_UDP, udp(5353, 53, PAYLOAD), { src: '2001:db8::a', dst: 'fe80::1' });

const TCP_V4 = {
  status: DECODED_TCP_UDP,
  family: 4,
  src: '192.0.2.1',
  dst: '198.51.100.2',
  l4: PROTO_TCP,
  sport: 40000,
  dport: 6881,
  payload: 'hello',
  tunnelDepth: 0,
};
const UDP_V6 = {
  status: DECODED_TCP_UDP,
  family: 6,
  src: '2001:db8::a',
  dst: 'fe80::1',
  l4: PROTO_UDP,
  sport: 5353,
  dport: 53,
  payload: 'hello',
  tunnelDepth: 0,
};

/** The default addresses of the frame builders, as inner packets of tunnels use them. */
const INNER_TCP_V4 = { ...TCP_V4, src: '10.0.0.1', dst: '10.0.0.2', tunnelDepth: 1 };
const INNER_UDP_V6 = { ...UDP_V6, src: '2001:db8::1', dst: '2001:db8::2', tunnelDepth: 1 };
const innerTcpV4 = ipv4(PROTO_TCP, tcp(40000, 6881, PAYLOAD));
const innerUdpV6 = ipv6(PROTO_UDP, udp(5353, 53, PAYLOAD));

function outerUdp(dport: number, payload: Uint8Array): Uint8Array {
  return ethernet(ETHERTYPE_IPV4, ipv4(PROTO_UDP, udp(50000, dport, payload), { src: '172.16.0.1', dst: '172.16.0.2' }));
}

function outerUdpSummary(dport: number, payload: Uint8Array) {
  return {
    status: DECODED_TCP_UDP,
    family: 4,
    src: '172.16.0.1',
    dst: '172.16.0.2',
    l4: PROTO_UDP,
    sport: 50000,
    dport,
    payload: String.fromCharCode(...payload),
    tunnelDepth: 0,
  };
}

describe('PacketDecoder: Ethernet', () => {
  it('decodes TCP over IPv4 with flags and unsigned sequence numbers', () => {
    const frame = ethernet(
      ETHERTYPE_IPV4,
      ipv4(PROTO_TCP, tcp(40000, 6881, PAYLOAD, { seq: 0xfffffff0, ack: 0x80000001, flags: TCP_SYN | TCP_ACK }), {
        src: '192.0.2.1',
        dst: '198.51.100.2',
      }),
    );
    const decoded = decodeFrame(frame, LINKTYPE_ETHERNET);
    expect(summary(decoded)).toEqual(TCP_V4);
    const { info } = decoded;
    expect(info.tcpSeq).toBe(0xfffffff0);
    expect(info.tcpAck).toBe(0x80000001);
    expect(info.tcpFlags).toBe(TCP_SYN | TCP_ACK);
    expect(info.ipOff).toBe(LEAD + 14);
    expect(info.srcOff).toBe(LEAD + 14 + 12);
    expect(info.payloadOff).toBe(LEAD + 14 + 20 + 20);
    expect(info.buf[info.payloadOff]).toBe('h'.charCodeAt(0));
  });

  it('decodes UDP over IPv6', () => {
    const { info, status } = decodeFrame(ethernet(ETHERTYPE_IPV6, udpOverIpv6), LINKTYPE_ETHERNET);
    expect(summary({ status, info })).toEqual(UDP_V6);
    expect(info.ipOff).toBe(LEAD + 14);
    expect(info.tcpFlags).toBe(0);
  });

  it('skips TCP options to find the payload', () => {
    const segment = tcp(1, 2, PAYLOAD, { options: [2, 4, 5, 0xb4, 1, 1, 4, 2] });
    expect(summary(decodeFrame(ethernet(ETHERTYPE_IPV4, ipv4(PROTO_TCP, segment)), LINKTYPE_ETHERNET)).payload).toBe('hello');
  });

  it.each([
    ['802.1Q', [[ETHERTYPE_VLAN, 10]]],
    ['QinQ 802.1ad', [[ETHERTYPE_QINQ, 100], [ETHERTYPE_VLAN, 10]]],
    ['legacy QinQ 0x9100, three deep', [[ETHERTYPE_QINQ_LEGACY, 7], [ETHERTYPE_QINQ, 100], [ETHERTYPE_VLAN, 10]]],
  ] as const)('peels %s tags', (_name, tags) => {
    const frame = ethernet(ETHERTYPE_IPV4, tcpOverIpv4, tags.map(([tpid, vid]) => [tpid, vid]));
    const decoded = decodeFrame(frame, LINKTYPE_ETHERNET);
    expect(summary(decoded)).toEqual(TCP_V4);
    expect(decoded.info.ipOff).toBe(LEAD + 14 + 4 * tags.length);
  });

  it('decodes PPPoE session frames carrying IPv4 and IPv6', () => {
    expect(summary(decodeFrame(ethernet(ETHERTYPE_PPPOE_SESSION, pppoeSession(0x0021, tcpOverIpv4)), LINKTYPE_ETHERNET))).toEqual(TCP_V4);
    expect(summary(decodeFrame(ethernet(ETHERTYPE_PPPOE_SESSION, pppoeSession(0x0057, udpOverIpv6)), LINKTYPE_ETHERNET))).toEqual(UDP_V6);
  });

  it('reports PPPoE control traffic (LCP) as not IP', () => {
    const lcp = pppoeSession(0xc021, Uint8Array.from([1, 1, 0, 4]));
    expect(decodeFrame(ethernet(ETHERTYPE_PPPOE_SESSION, lcp), LINKTYPE_ETHERNET).status).toBe(DECODED_NOT_IP);
  });

  it('follows an MPLS label stack to the bottom and picks IPv4 or IPv6 by version', () => {
    expect(summary(decodeFrame(ethernet(ETHERTYPE_MPLS, mpls([16], tcpOverIpv4)), LINKTYPE_ETHERNET))).toEqual(TCP_V4);
    expect(summary(decodeFrame(ethernet(ETHERTYPE_MPLS_MULTICAST, mpls([16, 17, 18], udpOverIpv6)), LINKTYPE_ETHERNET))).toEqual(UDP_V6);
  });

  it('reports an MPLS payload that is not IP as not IP', () => {
    const pseudowire = mpls([16], concat([0, 0, 0, 0], ethernet(ETHERTYPE_IPV4, tcpOverIpv4)));
    expect(decodeFrame(ethernet(ETHERTYPE_MPLS, pseudowire), LINKTYPE_ETHERNET).status).toBe(DECODED_NOT_IP);
  });

  it('decodes 802.3 frames with LLC/SNAP', () => {
    expect(summary(decodeFrame(ethernetSnap(ETHERTYPE_IPV4, tcpOverIpv4), LINKTYPE_ETHERNET))).toEqual(TCP_V4);
  });

  it('reports ARP and plain LLC (spanning tree) as not IP', () => {
    expect(decodeFrame(ethernet(ETHERTYPE_ARP, new Uint8Array(28)), LINKTYPE_ETHERNET).status).toBe(DECODED_NOT_IP);
    const stp = concat([1, 0x80, 0xc2, 0, 0, 0, 2, 0, 0, 0, 0, 2], u16(38), [0x42, 0x42, 0x03], new Array<number>(35).fill(0));
    expect(decodeFrame(stp, LINKTYPE_ETHERNET).status).toBe(DECODED_NOT_IP);
  });

  it('reports a frame shorter than the Ethernet header as malformed', () => {
    expect(decodeFrame(new Uint8Array(13), LINKTYPE_ETHERNET).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(ethernet(ETHERTYPE_VLAN, Uint8Array.from([0, 10])), LINKTYPE_ETHERNET).status).toBe(DECODED_MALFORMED);
  });
});

describe('PacketDecoder: other link types', () => {
  it.each([
    ['RAW (101)', LINKTYPE_RAW],
    ['DLT_RAW 12', LINKTYPE_RAW_DLT12],
    ['DLT_RAW 14', LINKTYPE_RAW_DLT14],
  ])('picks the IP version of %s by its first nibble', (_name, linkType) => {
    expect(summary(decodeFrame(tcpOverIpv4, linkType))).toEqual(TCP_V4);
    expect(summary(decodeFrame(udpOverIpv6, linkType))).toEqual(UDP_V6);
  });

  it('reports raw IP with another version as malformed', () => {
    const version5 = Uint8Array.from(tcpOverIpv4);
    version5[0] = 0x55;
    expect(decodeFrame(version5, LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
  });

  it('decodes LINKTYPE_IPV4 and LINKTYPE_IPV6, each only its own version', () => {
    expect(summary(decodeFrame(tcpOverIpv4, LINKTYPE_IPV4))).toEqual(TCP_V4);
    expect(summary(decodeFrame(udpOverIpv6, LINKTYPE_IPV6))).toEqual(UDP_V6);
    expect(decodeFrame(udpOverIpv6, LINKTYPE_IPV4).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(tcpOverIpv4, LINKTYPE_IPV6).status).toBe(DECODED_MALFORMED);
  });

  it('decodes Linux cooked captures, SLL and SLL2', () => {
    const sll = (protocol: number) => [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, ...u16(protocol)];
    const sll2 = (protocol: number) => [...u16(protocol), 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    expect(summary(decodeFrame(concat(sll(ETHERTYPE_IPV4), tcpOverIpv4), LINKTYPE_LINUX_SLL))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat(sll(ETHERTYPE_IPV6), udpOverIpv6), LINKTYPE_LINUX_SLL))).toEqual(UDP_V6);
    expect(summary(decodeFrame(concat(sll2(ETHERTYPE_IPV4), tcpOverIpv4), LINKTYPE_LINUX_SLL2))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat(sll2(ETHERTYPE_IPV6), udpOverIpv6), LINKTYPE_LINUX_SLL2))).toEqual(UDP_V6);
    expect(decodeFrame(concat(sll(ETHERTYPE_ARP), new Uint8Array(28)), LINKTYPE_LINUX_SLL).status).toBe(DECODED_NOT_IP);
    expect(decodeFrame(new Uint8Array(15), LINKTYPE_LINUX_SLL).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(new Uint8Array(19), LINKTYPE_LINUX_SLL2).status).toBe(DECODED_MALFORMED);
  });

  it('reads the BSD null address family in either byte order', () => {
    expect(summary(decodeFrame(concat(u32le(2), tcpOverIpv4), LINKTYPE_NULL))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat(u32(2), tcpOverIpv4), LINKTYPE_NULL))).toEqual(TCP_V4);
    for (const inet6 of [10, 24, 28, 30]) {
      expect(summary(decodeFrame(concat(u32le(inet6), udpOverIpv6), LINKTYPE_NULL))).toEqual(UDP_V6);
      expect(summary(decodeFrame(concat(u32(inet6), udpOverIpv6), LINKTYPE_NULL))).toEqual(UDP_V6);
    }
  });

  it('falls back to the IP version for an unknown BSD address family', () => {
    expect(summary(decodeFrame(concat(u32le(99), tcpOverIpv4), LINKTYPE_NULL))).toEqual(TCP_V4);
    expect(decodeFrame(concat(u32le(7), [0x11, 0x22, 0x33]), LINKTYPE_NULL).status).toBe(DECODED_NOT_IP);
    expect(decodeFrame(Uint8Array.from([2, 0, 0]), LINKTYPE_NULL).status).toBe(DECODED_MALFORMED);
  });

  it('reads the LOOP address family in network order', () => {
    expect(summary(decodeFrame(concat(u32(2), tcpOverIpv4), LINKTYPE_LOOP))).toEqual(TCP_V4);
    for (const inet6 of [24, 28, 30]) {
      expect(summary(decodeFrame(concat(u32(inet6), udpOverIpv6), LINKTYPE_LOOP))).toEqual(UDP_V6);
    }
  });

  it.each([
    ['PPP', LINKTYPE_PPP],
    ['PPP in HDLC-like framing', LINKTYPE_PPP_HDLC],
  ])('decodes %s with or without address/control and with a compressed protocol', (_name, linkType) => {
    expect(summary(decodeFrame(concat([0xff, 0x03, 0x00, 0x21], tcpOverIpv4), linkType))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat([0x00, 0x21], tcpOverIpv4), linkType))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat([0x21], tcpOverIpv4), linkType))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat([0xff, 0x03, 0x00, 0x57], udpOverIpv6), linkType))).toEqual(UDP_V6);
    expect(decodeFrame(Uint8Array.from([0xff, 0x03, 0xc0, 0x21, 1, 1, 0, 4]), linkType).status).toBe(DECODED_NOT_IP);
  });

  it.each([
    ['PPP', LINKTYPE_PPP],
    ['PPP in HDLC-like framing', LINKTYPE_PPP_HDLC],
    ['Cisco HDLC', LINKTYPE_C_HDLC],
  ])('decodes Cisco HDLC framing under %s', (_name, linkType) => {
    expect(summary(decodeFrame(concat([0x0f, 0x00, ...u16(ETHERTYPE_IPV4)], tcpOverIpv4), linkType))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat([0x8f, 0x00, ...u16(ETHERTYPE_IPV6)], udpOverIpv6), linkType))).toEqual(UDP_V6);
    const slarp = concat([0x8f, 0x00, 0x80, 0x35], new Array<number>(18).fill(0));
    expect(decodeFrame(slarp, linkType).status).toBe(DECODED_NOT_IP);
  });

  it('decodes PPP_ETHER (PPPoE without the Ethernet header)', () => {
    expect(summary(decodeFrame(pppoeSession(0x0021, tcpOverIpv4), LINKTYPE_PPP_ETHER))).toEqual(TCP_V4);
    expect(summary(decodeFrame(pppoeSession(0x0057, udpOverIpv6), LINKTYPE_PPP_ETHER))).toEqual(UDP_V6);
  });

  it('decodes the frame inside a PPI header, skipping its fields', () => {
    const ppi = (headerLen: number, dlt: number) => concat([0, 0, ...u16le(headerLen), ...u32le(dlt)], new Array<number>(headerLen - 8).fill(0x77));
    expect(summary(decodeFrame(concat(ppi(8, LINKTYPE_ETHERNET), ethernet(ETHERTYPE_IPV4, tcpOverIpv4)), LINKTYPE_PPI))).toEqual(TCP_V4);
    expect(summary(decodeFrame(concat(ppi(32, LINKTYPE_RAW), udpOverIpv6), LINKTYPE_PPI))).toEqual(UDP_V6);
  });

  it('does not nest PPI and rejects bad PPI header lengths', () => {
    const nested = concat([0, 0, ...u16le(8), ...u32le(LINKTYPE_PPI)], [0, 0, ...u16le(8), ...u32le(LINKTYPE_RAW)], tcpOverIpv4);
    expect(decodeFrame(nested, LINKTYPE_PPI).status).toBe(DECODED_UNKNOWN_LINK);
    expect(decodeFrame(concat([0, 0, ...u16le(4), ...u32le(LINKTYPE_RAW)], tcpOverIpv4), LINKTYPE_PPI).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(concat([0, 0, ...u16le(200), ...u32le(LINKTYPE_RAW)], tcpOverIpv4), LINKTYPE_PPI).status).toBe(DECODED_MALFORMED);
  });

  it('reports link types it does not know', () => {
    expect(decodeFrame(tcpOverIpv4, 147).status).toBe(DECODED_UNKNOWN_LINK);
    expect(decodeFrame(concat([0, 0, ...u16le(8), ...u32le(147)], tcpOverIpv4), LINKTYPE_PPI).status).toBe(DECODED_UNKNOWN_LINK);
  });
});

describe('PacketDecoder: IPv4', () => {
  it('skips IPv4 options', () => {
    for (const optionWords of [1, 4, 10]) {
      const options = new Array<number>(optionWords * 4).fill(1);
      const decoded = decodeFrame(ipv4(PROTO_TCP, tcp(40000, 6881, PAYLOAD), { src: '192.0.2.1', dst: '198.51.100.2', options }), LINKTYPE_RAW);
      expect(summary(decoded)).toEqual(TCP_V4);
    }
  });

  it('decodes the transport header of a first fragment', () => {
    const firstFragment = ipv4(PROTO_UDP, udp(1000, 2000, PAYLOAD, 8 + 3000), { moreFragments: true });
    const decoded = decodeFrame(firstFragment, LINKTYPE_RAW);
    expect(decoded.status).toBe(DECODED_TCP_UDP);
    expect(summary(decoded)).toMatchObject({ sport: 1000, dport: 2000, payload: 'hello' });
  });

  it('gives a later fragment its protocol but no ports', () => {
    const laterFragment = ipv4(PROTO_UDP, udp(1000, 2000, PAYLOAD), { fragmentOffset: 185, moreFragments: true });
    const decoded = decodeFrame(laterFragment, LINKTYPE_RAW);
    expect(summary(decoded)).toMatchObject({ status: DECODED_OTHER_L4, family: 4, src: '10.0.0.1', dst: '10.0.0.2', l4: PROTO_UDP, sport: 0, dport: 0 });
    expect(decoded.info.payloadLen).toBe(8 + PAYLOAD.length);
  });

  it('reports protocols without ports as other L4, with addresses', () => {
    const decoded = decodeFrame(ethernet(ETHERTYPE_IPV4, ipv4(PROTO_ICMP, Uint8Array.from([8, 0, 0, 0, 0, 1, 0, 1]))), LINKTYPE_ETHERNET);
    expect(summary(decoded)).toMatchObject({ status: DECODED_OTHER_L4, family: 4, src: '10.0.0.1', dst: '10.0.0.2', l4: PROTO_ICMP, sport: 0, dport: 0 });
    expect(decoded.info.ipOff).toBe(LEAD + 14);
  });

  it('leaves Ethernet padding out of the payload', () => {
    const padded = ethernet(ETHERTYPE_IPV4, concat(ipv4(PROTO_UDP, udp(1, 2, ascii('x'))), new Array<number>(17).fill(0)));
    expect(summary(decodeFrame(padded, LINKTYPE_ETHERNET)).payload).toBe('x');
  });

  it('clips the payload to a capture shorter than the total length', () => {
    const snapped = tcpOverIpv4.subarray(0, tcpOverIpv4.length - 2);
    expect(summary(decodeFrame(snapped, LINKTYPE_RAW))).toEqual({ ...TCP_V4, payload: 'hel' });
  });

  it('rejects impossible header and total lengths', () => {
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD), { ihl: 4 }), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD), { ihl: 15 }), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD), { totalLength: 19 }), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    const options = [1, 1, 1, 1];
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD), { options, totalLength: 20 }), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
  });

  it('reports a transport header cut by the IP total length as malformed', () => {
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD), { totalLength: 20 + 19 }), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
  });
});

describe('PacketDecoder: IPv6', () => {
  it('walks hop-by-hop, routing and destination options headers', () => {
    const chain = ipv6Extension(43, 1, ipv6Extension(60, 3, ipv6Extension(PROTO_UDP, 2, udp(5353, 53, PAYLOAD))));
    const decoded = decodeFrame(ipv6(0, chain, { src: '2001:db8::a', dst: 'fe80::1' }), LINKTYPE_RAW);
    expect(summary(decoded)).toEqual(UDP_V6);
    expect(decoded.info.payloadOff).toBe(LEAD + 40 + 8 + 24 + 16 + 8);
  });

  it('skips an authentication header', () => {
    const decoded = decodeFrame(ipv6(51, ipv6AuthenticationHeader(PROTO_UDP, 6, udp(5353, 53, PAYLOAD)), { src: '2001:db8::a', dst: 'fe80::1' }), LINKTYPE_RAW);
    expect(summary(decoded)).toEqual(UDP_V6);
  });

  it('decodes the first fragment and gives later ones no ports', () => {
    const first = ipv6(44, ipv6Fragment(PROTO_UDP, 0, true, udp(5353, 53, PAYLOAD)), { src: '2001:db8::a', dst: 'fe80::1' });
    expect(summary(decodeFrame(first, LINKTYPE_RAW))).toEqual(UDP_V6);
    const later = ipv6(0, ipv6Extension(44, 1, ipv6Fragment(PROTO_UDP, 100, false, PAYLOAD)));
    expect(summary(decodeFrame(later, LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, family: 6, l4: PROTO_UDP, sport: 0, dport: 0, payload: 'hello' });
  });

  it('reports ESP, no-next-header and mobility as other L4', () => {
    expect(summary(decodeFrame(ipv6(PROTO_ESP, new Uint8Array(16)), LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, l4: PROTO_ESP });
    expect(summary(decodeFrame(ipv6(PROTO_NO_NEXT_HEADER, new Uint8Array(0)), LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, l4: PROTO_NO_NEXT_HEADER });
    const mobility = ipv6(135, ipv6Extension(PROTO_NO_NEXT_HEADER, 2, new Uint8Array(0)));
    expect(summary(decodeFrame(mobility, LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, l4: PROTO_NO_NEXT_HEADER });
    const icmp = decodeFrame(ipv6(PROTO_ICMPV6, Uint8Array.from([128, 0, 0, 0])), LINKTYPE_RAW);
    expect(summary(icmp)).toMatchObject({ status: DECODED_OTHER_L4, family: 6, src: '2001:db8::1', dst: '2001:db8::2', l4: PROTO_ICMPV6 });
  });

  it('reports an extension header running past the packet as malformed', () => {
    expect(decodeFrame(ipv6(0, ipv6Extension(PROTO_UDP, 1, new Uint8Array(0)).subarray(0, 6)), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    const overlong = ipv6Extension(PROTO_UDP, 1, udp(1, 2, PAYLOAD));
    overlong[1] = 5;
    expect(decodeFrame(ipv6(0, overlong), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
  });

  it('bounds the packet by the payload length, or by the capture for a jumbogram', () => {
    const padded = concat(ipv6(PROTO_UDP, udp(1, 2, PAYLOAD)), [0xaa, 0xbb]);
    expect(summary(decodeFrame(padded, LINKTYPE_RAW)).payload).toBe('hello');
    const jumbo = ipv6(PROTO_TCP, tcp(1, 2, PAYLOAD), { payloadLength: 0 });
    expect(summary(decodeFrame(jumbo, LINKTYPE_RAW)).payload).toBe('hello');
  });
});

describe('PacketDecoder: transport lengths', () => {
  it('rejects a TCP data offset below 5 or past the capture', () => {
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD, { dataOffset: 4 })), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    expect(decodeFrame(ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD, { dataOffset: 15 })), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
  });

  it('rejects a UDP length below 8 and clips the payload to the UDP length', () => {
    expect(decodeFrame(ipv4(PROTO_UDP, udp(1, 2, PAYLOAD, 7)), LINKTYPE_RAW).status).toBe(DECODED_MALFORMED);
    expect(summary(decodeFrame(ipv4(PROTO_UDP, udp(1, 2, PAYLOAD, 8 + 3)), LINKTYPE_RAW)).payload).toBe('hel');
    expect(summary(decodeFrame(ipv4(PROTO_UDP, udp(1, 2, PAYLOAD, 8 + 500)), LINKTYPE_RAW)).payload).toBe('hello');
  });

  it('survives truncation at every byte of a TCP/IPv4 frame', () => {
    expectTruncationsSafe(ethernet(ETHERTYPE_IPV4, tcpOverIpv4), 14 + 20 + 20);
  });

  it('survives truncation at every byte of a UDP/IPv6 frame', () => {
    expectTruncationsSafe(ethernet(ETHERTYPE_IPV6, udpOverIpv6), 14 + 40 + 8);
  });
});

/** Every prefix shorter than the headers is malformed; longer ones decode with the payload cut where the capture ends. */
function expectTruncationsSafe(frame: Uint8Array, headersLen: number): void {
  for (let len = 0; len <= frame.length; len++) {
    const decoded = decodeFrame(frame.subarray(0, len), LINKTYPE_ETHERNET);
    const { info } = decoded;
    if (len < headersLen) {
      expect(decoded.status, `length ${len}`).toBe(DECODED_MALFORMED);
    } else {
      expect(decoded.status, `length ${len}`).toBe(DECODED_TCP_UDP);
      expect(summary(decoded).payload).toBe('hello'.slice(0, len - headersLen));
    }
    for (const offset of [info.ipOff, info.srcOff, info.dstOff, info.payloadOff, info.payloadOff + info.payloadLen]) {
      expect(offset).toBeGreaterThanOrEqual(LEAD);
      expect(offset).toBeLessThanOrEqual(LEAD + len);
    }
  }
}

describe('PacketDecoder: tunnels', () => {
  it.each([
    ['4in4', ipv4(PROTO_IPIP, innerTcpV4), INNER_TCP_V4],
    ['6in4', ipv4(PROTO_IPV6, innerUdpV6), INNER_UDP_V6],
    ['4in6', ipv6(PROTO_IPIP, innerTcpV4, { src: 'fd00::1', dst: 'fd00::2' }), INNER_TCP_V4],
    ['6in6', ipv6(PROTO_IPV6, innerUdpV6, { src: 'fd00::1', dst: 'fd00::2' }), INNER_UDP_V6],
  ])('decodes IP-in-IP %s to the inner packet', (_name, packet, expected) => {
    expect(summary(decodeFrame(packet, LINKTYPE_RAW))).toEqual(expected);
  });

  it('decodes GRE version 0 with and without optional fields', () => {
    expect(summary(decodeFrame(ipv4(PROTO_GRE, gre(ETHERTYPE_IPV4, innerTcpV4)), LINKTYPE_RAW))).toEqual(INNER_TCP_V4);
    const allFields = gre(ETHERTYPE_IPV6, innerUdpV6, { checksum: true, key: true, sequence: true });
    expect(summary(decodeFrame(ipv4(PROTO_GRE, allFields), LINKTYPE_RAW))).toEqual(INNER_UDP_V6);
  });

  it('decodes Ethernet bridged over GRE', () => {
    const bridged = gre(ETHERTYPE_TRANSPARENT_BRIDGING, ethernet(ETHERTYPE_IPV4, innerTcpV4, [[ETHERTYPE_VLAN, 5]]), { key: true });
    expect(summary(decodeFrame(ipv6(PROTO_GRE, bridged), LINKTYPE_RAW))).toEqual(INNER_TCP_V4);
  });

  it('decodes PPTP enhanced GRE carrying PPP', () => {
    for (const [withSequence, withAck] of [[false, false], [true, false], [true, true], [false, true]]) {
      const pptp = greV1(concat([0xff, 0x03, 0x00, 0x21], innerTcpV4), withSequence, withAck);
      expect(summary(decodeFrame(ipv4(PROTO_GRE, pptp), LINKTYPE_RAW))).toEqual(INNER_TCP_V4);
    }
  });

  it('keeps a GRE packet whose payload is not IP as the outer packet', () => {
    const arpOverGre = ipv4(PROTO_GRE, gre(ETHERTYPE_TRANSPARENT_BRIDGING, ethernet(ETHERTYPE_ARP, new Uint8Array(28))));
    expect(summary(decodeFrame(arpOverGre, LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, family: 4, l4: PROTO_GRE, tunnelDepth: 0 });
  });

  it('decodes GTP-U G-PDUs with optional fields and extension headers', () => {
    expect(summary(decodeFrame(outerUdp(2152, gtpU(innerTcpV4)), LINKTYPE_ETHERNET))).toEqual(INNER_TCP_V4);
    expect(summary(decodeFrame(outerUdp(2152, gtpU(innerUdpV6, 0xff, 77)), LINKTYPE_ETHERNET))).toEqual(INNER_UDP_V6);
    const extensions = [[0x10, 0x01], [1, 2, 3, 4, 5, 6]];
    expect(summary(decodeFrame(outerUdp(2152, gtpU(innerTcpV4, 0xff, 78, extensions)), LINKTYPE_ETHERNET))).toEqual(INNER_TCP_V4);
  });

  it('keeps GTP-U signalling (echo request) as the outer UDP packet', () => {
    const echo = gtpU(new Uint8Array(0), 0x01, 5);
    expect(summary(decodeFrame(outerUdp(2152, echo), LINKTYPE_ETHERNET))).toEqual(outerUdpSummary(2152, echo));
  });

  it('decodes VXLAN to the inner Ethernet frame', () => {
    expect(summary(decodeFrame(outerUdp(4789, vxlan(ethernet(ETHERTYPE_IPV4, innerTcpV4))), LINKTYPE_ETHERNET))).toEqual(INNER_TCP_V4);
  });

  it('keeps VXLAN carrying ARP as the outer UDP packet', () => {
    const arp = vxlan(ethernet(ETHERTYPE_ARP, new Uint8Array(28)));
    expect(summary(decodeFrame(outerUdp(4789, arp), LINKTYPE_ETHERNET))).toEqual(outerUdpSummary(4789, arp));
  });

  it('decodes CAPWAP data carrying 802.3 frames', () => {
    expect(summary(decodeFrame(outerUdp(5247, capwap(ethernet(ETHERTYPE_IPV4, innerTcpV4), false)), LINKTYPE_ETHERNET))).toEqual(INNER_TCP_V4);
  });

  it.each([
    ['a plain data frame', {}],
    ['a QoS data frame', { qos: true }],
    ['a four-address frame', { fourAddresses: true, qos: true }],
    ['swapped frame control', { swapFrameControl: true }],
  ])('decodes CAPWAP data carrying 802.11: %s', (_name, fields) => {
    const frame = capwap(wlanData(ETHERTYPE_IPV4, innerTcpV4, fields), true, 4);
    expect(summary(decodeFrame(outerUdp(5247, frame), LINKTYPE_ETHERNET))).toEqual(INNER_TCP_V4);
  });

  it('keeps CAPWAP with an encrypted 802.11 frame as the outer UDP packet', () => {
    const frame = capwap(wlanData(ETHERTYPE_IPV4, innerTcpV4, { protectedFrame: true }), true);
    expect(summary(decodeFrame(outerUdp(5247, frame), LINKTYPE_ETHERNET))).toMatchObject({ status: DECODED_TCP_UDP, dport: 5247, tunnelDepth: 0 });
  });

  it('decodes Teredo, bare and behind origin indication and authentication headers', () => {
    expect(summary(decodeFrame(outerUdp(3544, innerUdpV6), LINKTYPE_ETHERNET))).toEqual(INNER_UDP_V6);
    expect(summary(decodeFrame(outerUdp(3544, teredoOriginIndication(innerUdpV6)), LINKTYPE_ETHERNET))).toEqual(INNER_UDP_V6);
    const authenticated = teredoAuthentication([1, 2, 3], [4, 5], teredoOriginIndication(innerUdpV6));
    expect(summary(decodeFrame(outerUdp(3544, authenticated), LINKTYPE_ETHERNET))).toEqual(INNER_UDP_V6);
  });

  it('keeps a Teredo-port datagram that is not IPv6 as the outer UDP packet', () => {
    const notIpv6 = ascii('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
    expect(summary(decodeFrame(outerUdp(3544, notIpv6), LINKTYPE_ETHERNET))).toEqual(outerUdpSummary(3544, notIpv6));
    const truncatedIpv6 = innerUdpV6.subarray(0, innerUdpV6.length - 1);
    expect(summary(decodeFrame(outerUdp(3544, truncatedIpv6), LINKTYPE_ETHERNET))).toEqual(outerUdpSummary(3544, truncatedIpv6));
  });

  it('restores the outer packet when the inner transport header is broken', () => {
    const brokenInner = ipv4(PROTO_TCP, tcp(1, 2, PAYLOAD, { dataOffset: 3 }));
    expect(summary(decodeFrame(outerUdp(4789, vxlan(ethernet(ETHERTYPE_IPV4, brokenInner))), LINKTYPE_ETHERNET))).toMatchObject({
      status: DECODED_TCP_UDP,
      src: '172.16.0.1',
      l4: PROTO_UDP,
      dport: 4789,
      tunnelDepth: 0,
    });
    const decoded = decodeFrame(ipv4(PROTO_IPIP, brokenInner, { src: '192.0.2.9' }), LINKTYPE_RAW);
    expect(summary(decoded)).toMatchObject({ status: DECODED_OTHER_L4, src: '192.0.2.9', l4: PROTO_IPIP, sport: 0, dport: 0, tunnelDepth: 0 });
    expect(decoded.info.tcpFlags).toBe(0);
  });

  it('decodes tunnels inside tunnels', () => {
    const gtpInVxlan = outerUdp(4789, vxlan(ethernet(ETHERTYPE_IPV4, ipv4(PROTO_UDP, udp(2152, 2152, gtpU(innerTcpV4))))));
    expect(summary(decodeFrame(gtpInVxlan, LINKTYPE_ETHERNET))).toEqual({ ...INNER_TCP_V4, tunnelDepth: 2 });
  });

  it('stops after four tunnel headers', () => {
    let packet = innerTcpV4;
    for (let i = 0; i < 5; i++) packet = ipv4(PROTO_IPIP, packet);
    expect(summary(decodeFrame(packet, LINKTYPE_RAW))).toMatchObject({ status: DECODED_OTHER_L4, l4: PROTO_IPIP, tunnelDepth: 4 });
  });
});

describe('PacketDecoder: counts and arguments', () => {
  it('counts each status', () => {
    const decoder = new PacketDecoder();
    decodeFrame(tcpOverIpv4, LINKTYPE_RAW, decoder);
    decodeFrame(tcpOverIpv4, LINKTYPE_RAW, decoder);
    decodeFrame(ipv4(PROTO_ICMP, new Uint8Array(8)), LINKTYPE_RAW, decoder);
    decodeFrame(ethernet(ETHERTYPE_ARP, new Uint8Array(28)), LINKTYPE_ETHERNET, decoder);
    decodeFrame(new Uint8Array(3), LINKTYPE_RAW, decoder);
    decodeFrame(tcpOverIpv4, 9999, decoder);
    expect(Array.from(decoder.counts)).toEqual([2, 1, 1, 1, 1]);
  });

  it('reports a range outside the buffer as malformed instead of reading it', () => {
    const decoder = new PacketDecoder();
    const info = new PacketInfo();
    expect(decoder.decode(tcpOverIpv4, 10, tcpOverIpv4.length, LINKTYPE_RAW, info)).toBe(DECODED_MALFORMED);
    expect(decoder.decode(tcpOverIpv4, -1, 10, LINKTYPE_RAW, info)).toBe(DECODED_MALFORMED);
    expect(decoder.decode(tcpOverIpv4, 0, -1, LINKTYPE_RAW, info)).toBe(DECODED_MALFORMED);
  });

  it('resets every field between packets', () => {
    const decoder = new PacketDecoder();
    const info = new PacketInfo();
    const buf = concat(ethernet(ETHERTYPE_IPV4, tcpOverIpv4), ethernet(ETHERTYPE_ARP, new Uint8Array(28)));
    const tcpFrameLen = 14 + tcpOverIpv4.length;
    decoder.decode(buf, 0, tcpFrameLen, LINKTYPE_ETHERNET, info);
    expect(decoder.decode(buf, tcpFrameLen, buf.length - tcpFrameLen, LINKTYPE_ETHERNET, info)).toBe(DECODED_NOT_IP);
    expect(info).toMatchObject({ family: 0, l4: 0, sport: 0, dport: 0, tcpFlags: 0, tcpSeq: 0, payloadLen: 0, tunnelDepth: 0 });
  });
});
