/**
 * Decodes one captured frame down to its innermost IP packet and transport header, filling a
 * reused PacketInfo with offsets into the caller's buffer. It runs once per packet, so nothing
 * here allocates, and every read is checked against the captured length first: no input makes
 * decode throw or look outside [off, off + len).
 *
 * Link layers: Ethernet (any number of VLAN/QinQ tags, PPPoE session, MPLS, 802.3 LLC/SNAP);
 * raw IP (101, 12, 14 by version nibble; 228 IPv4; 229 IPv6); Linux cooked SLL and SLL2;
 * BSD null (address family in either byte order) and LOOP; PPP (optional address/control,
 * 1- or 2-byte protocol) and Cisco HDLC framing under the PPP link types; C_HDLC; PPP_ETHER
 * (PPPoE); PPI wrapping one of the others.
 * Network: IPv4 with options and fragments; IPv6 with hop-by-hop, routing, destination
 * options, fragment, AH and mobility headers.
 * Transport: TCP (ports, flags, seq, ack) and UDP; the payload is clipped to every enclosing
 * length and to the capture.
 * Tunnels, up to MAX_TUNNEL_DEPTH deep: IP-in-IP (4in4, 6in4, 4in6, 6in6), GRE (version 0,
 * and PPTP's version 1 carrying PPP), GTP-U, VXLAN, CAPWAP data (802.3 and 802.11 frames) and
 * Teredo. When the inner packet does not decode cleanly the outer packet is reported as it
 * was, so a tunnel port carrying something else stays an ordinary UDP flow.
 */
import {
  DECODE_STATUS_COUNT,
  DECODED_MALFORMED,
  DECODED_NOT_IP,
  DECODED_OTHER_L4,
  DECODED_TCP_UDP,
  DECODED_UNKNOWN_LINK,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type PacketInfo,
} from './packet.js';
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
} from './linktype.js';

/** Tunnel headers removed at most; deeper nesting is reported as the packet at this depth. */
export const MAX_TUNNEL_DEPTH = 4;

const ETHERNET_HEADER_LEN = 14;
const SLL_HEADER_LEN = 16;
const SLL_PROTOCOL_AT = 14;
const SLL2_HEADER_LEN = 20;
const PPI_HEADER_MIN_LEN = 8;
const PPPOE_HEADER_LEN = 6;
const LLC_SNAP_HEADER_LEN = 8;
const IPV4_HEADER_MIN_LEN = 20;
const IPV6_HEADER_LEN = 40;
const TCP_HEADER_MIN_LEN = 20;
const UDP_HEADER_LEN = 8;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const ETHERTYPE_QINQ_LEGACY = 0x9100;
const ETHERTYPE_PPPOE_SESSION = 0x8864;
const ETHERTYPE_MPLS_UNICAST = 0x8847;
const ETHERTYPE_MPLS_MULTICAST = 0x8848;
const ETHERTYPE_TRANSPARENT_BRIDGING = 0x6558;
const ETHERTYPE_PPP = 0x880b;
/** Type/length values up to this are 802.3 lengths: an LLC header follows instead of a payload type. */
const ETHER_MAX_LENGTH = 1500;

const PPP_IPV4 = 0x0021;
const PPP_IPV6 = 0x0057;

const BSD_AF_INET = 2;
/** AF_INET6 differs per system: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30. */
const BSD_AF_INET6_LINUX = 10;
const BSD_AF_INET6_BSD = 24;
const BSD_AF_INET6_FREEBSD = 28;
const BSD_AF_INET6_DARWIN = 30;

const IPPROTO_HOPOPTS = 0;
const IPPROTO_IPIP = 4;
const IPPROTO_IPV6 = 41;
const IPPROTO_ROUTING = 43;
const IPPROTO_FRAGMENT = 44;
const IPPROTO_GRE = 47;
const IPPROTO_AH = 51;
const IPPROTO_DSTOPTS = 60;
const IPPROTO_MOBILITY = 135;

const UDP_PORT_GTP_U = 2152;
const UDP_PORT_VXLAN = 4789;
const UDP_PORT_CAPWAP_DATA = 5247;
const UDP_PORT_TEREDO = 3544;

const GRE_CHECKSUM = 0x80;
const GRE_ROUTING = 0x40;
const GRE_KEY = 0x20;
const GRE_SEQUENCE = 0x10;
/** PPTP's enhanced GRE keeps the acknowledgment flag in the second byte. */
const GRE_ACK = 0x80;

const GTP_VERSION_1 = 1;
const GTP_PROTOCOL_TYPE_GTP = 0x10;
const GTP_EXTENSION = 0x04;
const GTP_OPTIONAL_FIELDS = 0x07;
const GTP_G_PDU = 0xff;
const GTP_HEADER_LEN = 8;
const GTP_OPTIONAL_FIELDS_LEN = 4;

const VXLAN_HEADER_LEN = 8;
const VXLAN_VNI_VALID = 0x08;

const CAPWAP_HEADER_MIN_LEN = 8;
const CAPWAP_WBID_IEEE80211 = 1;

const WLAN_HEADER_LEN = 24;
/** Protocol version 0 (bits 0-1) and type 2, data (bits 2-3). */
const WLAN_DATA_FRAME_CONTROL = 0x08;
const WLAN_TO_DS_FROM_DS = 0x03;
const WLAN_PROTECTED = 0x40;
const WLAN_ORDER = 0x80;
const WLAN_SUBTYPE_NO_BODY = 0x04;
const WLAN_SUBTYPE_QOS = 0x08;
const WLAN_ADDR4_LEN = 6;
const WLAN_QOS_CONTROL_LEN = 2;
const WLAN_HT_CONTROL_LEN = 4;

const TEREDO_ORIGIN_INDICATION_LEN = 8;
/** Authentication indicator: 2-byte type, two 1-byte lengths, then nonce (8) and confirmation (1). */
const TEREDO_AUTH_FIXED_LEN = 13;

const TUNNEL_IPV4 = 0;
const TUNNEL_IPV6 = 1;
const TUNNEL_GRE = 2;
const TUNNEL_GTP_U = 3;
const TUNNEL_VXLAN = 4;
const TUNNEL_CAPWAP = 5;
const TUNNEL_TEREDO = 6;
const TUNNEL_NONE = -1;

/** PacketInfo fields a tunnel overwrites, saved per depth so a failed inner decode can restore them. */
const SAVED_FIELDS = 9;

function read16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}

function read16le(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8);
}

function read32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function read32le(b: Uint8Array, i: number): number {
  return (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
}

function isBsdInet6(af: number): boolean {
  return af === BSD_AF_INET6_LINUX || af === BSD_AF_INET6_BSD || af === BSD_AF_INET6_FREEBSD || af === BSD_AF_INET6_DARWIN;
}

/** AA AA 03 (SNAP) + OUI + ethertype; a plain LLC header (STP, NetBIOS, ...) carries no IP. */
function isSnapHeader(b: Uint8Array, pos: number, end: number): boolean {
  return pos + LLC_SNAP_HEADER_LEN <= end && b[pos] === 0xaa && b[pos + 1] === 0xaa && b[pos + 2] === 0x03;
}

function isWlanDataFrameControl(frameControl: number): boolean {
  return (frameControl & 0x0f) === WLAN_DATA_FRAME_CONTROL;
}

function udpTunnelKind(sport: number, dport: number): number {
  if (sport === UDP_PORT_GTP_U || dport === UDP_PORT_GTP_U) return TUNNEL_GTP_U;
  if (sport === UDP_PORT_VXLAN || dport === UDP_PORT_VXLAN) return TUNNEL_VXLAN;
  if (sport === UDP_PORT_CAPWAP_DATA || dport === UDP_PORT_CAPWAP_DATA) return TUNNEL_CAPWAP;
  if (sport === UDP_PORT_TEREDO || dport === UDP_PORT_TEREDO) return TUNNEL_TEREDO;
  return TUNNEL_NONE;
}

function ipTunnelKind(proto: number): number {
  if (proto === IPPROTO_IPIP) return TUNNEL_IPV4;
  if (proto === IPPROTO_IPV6) return TUNNEL_IPV6;
  if (proto === IPPROTO_GRE) return TUNNEL_GRE;
  return TUNNEL_NONE;
}

export class PacketDecoder {
  /** Packets decoded so far, indexed by the DECODED_* status they got. */
  readonly counts = new Float64Array(DECODE_STATUS_COUNT);
  private readonly savedOuter = new Float64Array(MAX_TUNNEL_DEPTH * SAVED_FIELDS);

  /**
   * Decodes the frame at buf[off, off + len) (len = captured length) of the given link type into
   * `out` and returns its DECODED_* status. Offsets in `out` are absolute into buf; on
   * DECODED_OTHER_L4 the payload is everything after the IP headers.
   */
  decode(buf: Uint8Array, off: number, len: number, linkType: number, out: PacketInfo): number {
    out.buf = buf;
    out.family = 0;
    out.ipOff = off;
    out.srcOff = off;
    out.dstOff = off;
    out.l4 = 0;
    out.sport = 0;
    out.dport = 0;
    out.tcpFlags = 0;
    out.tcpSeq = 0;
    out.tcpAck = 0;
    out.payloadOff = off;
    out.payloadLen = 0;
    out.tunnelDepth = 0;
    const status = off >= 0 && len >= 0 && off + len <= buf.length
      ? this.decodeLink(buf, off, off + len, linkType, out, true)
      : DECODED_MALFORMED;
    this.counts[status]++;
    return status;
  }

  private decodeLink(b: Uint8Array, pos: number, end: number, linkType: number, out: PacketInfo, allowPpi: boolean): number {
    switch (linkType) {
      case LINKTYPE_ETHERNET:
        return this.decodeEthernet(b, pos, end, out);
      case LINKTYPE_RAW:
      case LINKTYPE_RAW_DLT12:
      case LINKTYPE_RAW_DLT14:
        return this.decodeIpByVersion(b, pos, end, out, DECODED_MALFORMED);
      case LINKTYPE_IPV4:
        return this.decodeIpv4(b, pos, end, out);
      case LINKTYPE_IPV6:
        return this.decodeIpv6(b, pos, end, out);
      case LINKTYPE_LINUX_SLL:
        if (pos + SLL_HEADER_LEN > end) return DECODED_MALFORMED;
        return this.decodeEthertype(b, pos + SLL_HEADER_LEN, end, read16(b, pos + SLL_PROTOCOL_AT), out);
      case LINKTYPE_LINUX_SLL2:
        if (pos + SLL2_HEADER_LEN > end) return DECODED_MALFORMED;
        return this.decodeEthertype(b, pos + SLL2_HEADER_LEN, end, read16(b, pos), out);
      case LINKTYPE_NULL:
        return this.decodeNull(b, pos, end, out);
      case LINKTYPE_LOOP:
        return this.decodeLoop(b, pos, end, out);
      case LINKTYPE_PPP:
      case LINKTYPE_PPP_HDLC:
        return this.decodePppOrCiscoHdlc(b, pos, end, out);
      case LINKTYPE_C_HDLC:
        return this.decodeCiscoHdlc(b, pos, end, out);
      case LINKTYPE_PPP_ETHER:
        return this.decodePppoe(b, pos, end, out);
      case LINKTYPE_PPI:
        return allowPpi ? this.decodePpi(b, pos, end, out) : DECODED_UNKNOWN_LINK;
      default:
        return DECODED_UNKNOWN_LINK;
    }
  }

  private decodeEthernet(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + ETHERNET_HEADER_LEN > end) return DECODED_MALFORMED;
    return this.decodeEthertype(b, pos + ETHERNET_HEADER_LEN, end, read16(b, pos + 12), out);
  }

  /** Dispatches on an ethertype, peeling VLAN tags and LLC/SNAP headers in a loop rather than by recursion. */
  private decodeEthertype(b: Uint8Array, pos: number, end: number, ethertype: number, out: PacketInfo): number {
    for (;;) {
      switch (ethertype) {
        case ETHERTYPE_IPV4:
          return this.decodeIpv4(b, pos, end, out);
        case ETHERTYPE_IPV6:
          return this.decodeIpv6(b, pos, end, out);
        case ETHERTYPE_VLAN:
        case ETHERTYPE_QINQ:
        case ETHERTYPE_QINQ_LEGACY:
          if (pos + 4 > end) return DECODED_MALFORMED;
          ethertype = read16(b, pos + 2);
          pos += 4;
          continue;
        case ETHERTYPE_PPPOE_SESSION:
          return this.decodePppoe(b, pos, end, out);
        case ETHERTYPE_MPLS_UNICAST:
        case ETHERTYPE_MPLS_MULTICAST:
          return this.decodeMpls(b, pos, end, out);
        default:
          if (ethertype > ETHER_MAX_LENGTH || !isSnapHeader(b, pos, end)) return DECODED_NOT_IP;
          ethertype = read16(b, pos + 6);
          pos += LLC_SNAP_HEADER_LEN;
          continue;
      }
    }
  }

  private decodeMpls(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    for (;;) {
      if (pos + 4 > end) return DECODED_MALFORMED;
      const bottomOfStack = (b[pos + 2] & 0x01) !== 0;
      pos += 4;
      if (bottomOfStack) return this.decodeIpByVersion(b, pos, end, out, DECODED_NOT_IP);
    }
  }

  /** PPPoE session header, then PPP; the PPPoE length bounds the PPP frame. */
  private decodePppoe(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + PPPOE_HEADER_LEN > end) return DECODED_MALFORMED;
    const pppEnd = Math.min(end, pos + PPPOE_HEADER_LEN + read16(b, pos + 4));
    return this.decodePpp(b, pos + PPPOE_HEADER_LEN, pppEnd, out);
  }

  /** The PPP link types also hold Cisco HDLC captures (address 0x0F or 0x8F, control 0x00). */
  private decodePppOrCiscoHdlc(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 4 <= end && (b[pos] === 0x0f || b[pos] === 0x8f) && b[pos + 1] === 0x00) {
      return this.decodeEthertype(b, pos + 4, end, read16(b, pos + 2), out);
    }
    return this.decodePpp(b, pos, end, out);
  }

  private decodeCiscoHdlc(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 4 > end) return DECODED_MALFORMED;
    return this.decodeEthertype(b, pos + 4, end, read16(b, pos + 2), out);
  }

  /** Address/control FF 03 may be elided, and a protocol with an odd first byte is compressed to that byte. */
  private decodePpp(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 2 <= end && b[pos] === 0xff && b[pos + 1] === 0x03) pos += 2;
    if (pos >= end) return DECODED_MALFORMED;
    let protocol = b[pos];
    if ((protocol & 0x01) !== 0) {
      pos += 1;
    } else {
      if (pos + 2 > end) return DECODED_MALFORMED;
      protocol = read16(b, pos);
      pos += 2;
    }
    if (protocol === PPP_IPV4) return this.decodeIpv4(b, pos, end, out);
    if (protocol === PPP_IPV6) return this.decodeIpv6(b, pos, end, out);
    return DECODED_NOT_IP;
  }

  /** The address family is in the writer's byte order, which the capture does not record. */
  private decodeNull(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 4 > end) return DECODED_MALFORMED;
    const afBig = read32(b, pos);
    const afLittle = read32le(b, pos);
    pos += 4;
    if (afBig === BSD_AF_INET || afLittle === BSD_AF_INET) return this.decodeIpv4(b, pos, end, out);
    if (isBsdInet6(afBig) || isBsdInet6(afLittle)) return this.decodeIpv6(b, pos, end, out);
    return this.decodeIpByVersion(b, pos, end, out, DECODED_NOT_IP);
  }

  private decodeLoop(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 4 > end) return DECODED_MALFORMED;
    const af = read32(b, pos);
    pos += 4;
    if (af === BSD_AF_INET) return this.decodeIpv4(b, pos, end, out);
    if (isBsdInet6(af)) return this.decodeIpv6(b, pos, end, out);
    return this.decodeIpByVersion(b, pos, end, out, DECODED_NOT_IP);
  }

  /** PPI header: version, flags, little-endian length and inner link type; the frame follows the header. */
  private decodePpi(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + PPI_HEADER_MIN_LEN > end) return DECODED_MALFORMED;
    const headerLen = read16le(b, pos + 2);
    if (headerLen < PPI_HEADER_MIN_LEN || pos + headerLen > end) return DECODED_MALFORMED;
    return this.decodeLink(b, pos + headerLen, end, read32le(b, pos + 4), out, false);
  }

  /** `otherVersion` is the status for a version nibble that is neither 4 nor 6. */
  private decodeIpByVersion(b: Uint8Array, pos: number, end: number, out: PacketInfo, otherVersion: number): number {
    if (pos >= end) return DECODED_MALFORMED;
    const version = b[pos] >> 4;
    if (version === 4) return this.decodeIpv4(b, pos, end, out);
    if (version === 6) return this.decodeIpv6(b, pos, end, out);
    return otherVersion;
  }

  private decodeIpv4(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + IPV4_HEADER_MIN_LEN > end) return DECODED_MALFORMED;
    const versionIhl = b[pos];
    if (versionIhl >> 4 !== 4) return DECODED_MALFORMED;
    const headerLen = (versionIhl & 0x0f) << 2;
    if (headerLen < IPV4_HEADER_MIN_LEN || pos + headerLen > end) return DECODED_MALFORMED;
    const totalLen = read16(b, pos + 2);
    if (totalLen < headerLen) return DECODED_MALFORMED;
    out.family = 4;
    out.ipOff = pos;
    out.srcOff = pos + 12;
    out.dstOff = pos + 16;
    const fragmentOffset = ((b[pos + 6] & 0x1f) << 8) | b[pos + 7];
    const ipEnd = Math.min(pos + totalLen, end);
    return this.decodeTransport(b, pos + headerLen, ipEnd, b[pos + 9], fragmentOffset !== 0, out);
  }

  private decodeIpv6(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + IPV6_HEADER_LEN > end) return DECODED_MALFORMED;
    if (b[pos] >> 4 !== 6) return DECODED_MALFORMED;
    const payloadLen = read16(b, pos + 4);
    // A zero payload length announces a jumbogram, whose real length sits in hop-by-hop options.
    const ipEnd = payloadLen === 0 ? end : Math.min(pos + IPV6_HEADER_LEN + payloadLen, end);
    out.family = 6;
    out.ipOff = pos;
    out.srcOff = pos + 8;
    out.dstOff = pos + 24;
    let next = b[pos + 6];
    let hdr = pos + IPV6_HEADER_LEN;
    for (;;) {
      switch (next) {
        case IPPROTO_HOPOPTS:
        case IPPROTO_ROUTING:
        case IPPROTO_DSTOPTS:
        case IPPROTO_MOBILITY: {
          if (hdr + 8 > ipEnd) return DECODED_MALFORMED;
          const extLen = (b[hdr + 1] + 1) << 3;
          if (hdr + extLen > ipEnd) return DECODED_MALFORMED;
          next = b[hdr];
          hdr += extLen;
          continue;
        }
        case IPPROTO_AH: {
          if (hdr + 8 > ipEnd) return DECODED_MALFORMED;
          const extLen = (b[hdr + 1] + 2) << 2;
          if (hdr + extLen > ipEnd) return DECODED_MALFORMED;
          next = b[hdr];
          hdr += extLen;
          continue;
        }
        case IPPROTO_FRAGMENT: {
          if (hdr + 8 > ipEnd) return DECODED_MALFORMED;
          const fragmentOffset = read16(b, hdr + 2) >> 3;
          next = b[hdr];
          hdr += 8;
          if (fragmentOffset !== 0) return this.decodeTransport(b, hdr, ipEnd, next, true, out);
          continue;
        }
        default:
          return this.decodeTransport(b, hdr, ipEnd, next, false, out);
      }
    }
  }

  /** A non-first fragment has no transport header, only its protocol number. */
  private decodeTransport(b: Uint8Array, pos: number, end: number, proto: number, laterFragment: boolean, out: PacketInfo): number {
    out.l4 = proto;
    out.sport = 0;
    out.dport = 0;
    out.payloadOff = pos;
    out.payloadLen = end - pos;
    if (laterFragment) return DECODED_OTHER_L4;
    if (proto === IPPROTO_TCP) return this.decodeTcp(b, pos, end, out);
    if (proto === IPPROTO_UDP) return this.decodeUdp(b, pos, end, out);
    const tunnel = ipTunnelKind(proto);
    if (tunnel === TUNNEL_NONE || out.tunnelDepth >= MAX_TUNNEL_DEPTH) return DECODED_OTHER_L4;
    return this.decodeTunnel(tunnel, b, pos, end, out, DECODED_OTHER_L4);
  }

  private decodeTcp(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + TCP_HEADER_MIN_LEN > end) return DECODED_MALFORMED;
    const headerLen = (b[pos + 12] >> 4) << 2;
    if (headerLen < TCP_HEADER_MIN_LEN || pos + headerLen > end) return DECODED_MALFORMED;
    out.sport = read16(b, pos);
    out.dport = read16(b, pos + 2);
    // Inline: a 32-bit unsigned value returned from a helper would be boxed on the heap.
    out.tcpSeq = ((b[pos + 4] << 24) | (b[pos + 5] << 16) | (b[pos + 6] << 8) | b[pos + 7]) >>> 0;
    out.tcpAck = ((b[pos + 8] << 24) | (b[pos + 9] << 16) | (b[pos + 10] << 8) | b[pos + 11]) >>> 0;
    out.tcpFlags = b[pos + 13];
    out.payloadOff = pos + headerLen;
    out.payloadLen = end - pos - headerLen;
    return DECODED_TCP_UDP;
  }

  private decodeUdp(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + UDP_HEADER_LEN > end) return DECODED_MALFORMED;
    const udpLen = read16(b, pos + 4);
    if (udpLen < UDP_HEADER_LEN) return DECODED_MALFORMED;
    const udpEnd = Math.min(pos + udpLen, end);
    const sport = read16(b, pos);
    const dport = read16(b, pos + 2);
    out.sport = sport;
    out.dport = dport;
    out.payloadOff = pos + UDP_HEADER_LEN;
    out.payloadLen = udpEnd - pos - UDP_HEADER_LEN;
    const tunnel = udpTunnelKind(sport, dport);
    if (tunnel === TUNNEL_NONE || out.tunnelDepth >= MAX_TUNNEL_DEPTH) return DECODED_TCP_UDP;
    return this.decodeTunnel(tunnel, b, pos + UDP_HEADER_LEN, udpEnd, out, DECODED_TCP_UDP);
  }

  /**
   * Decodes the packet inside a tunnel whose outer packet is already in `out` with status
   * `outerStatus`. An inner packet that is not clean IP is more likely something else on the
   * tunnel's port or protocol than a broken tunnel, so the outer packet is restored instead.
   */
  private decodeTunnel(tunnel: number, b: Uint8Array, pos: number, end: number, out: PacketInfo, outerStatus: number): number {
    const depth = out.tunnelDepth;
    this.saveOuter(out, depth);
    out.tunnelDepth = depth + 1;
    const status = this.decodeTunnelPayload(tunnel, b, pos, end, out);
    if (status === DECODED_TCP_UDP || status === DECODED_OTHER_L4) return status;
    this.restoreOuter(out, depth);
    return outerStatus;
  }

  private decodeTunnelPayload(tunnel: number, b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    switch (tunnel) {
      case TUNNEL_IPV4:
        return this.decodeIpv4(b, pos, end, out);
      case TUNNEL_IPV6:
        return this.decodeIpv6(b, pos, end, out);
      case TUNNEL_GRE:
        return this.decodeGre(b, pos, end, out);
      case TUNNEL_GTP_U:
        return this.decodeGtpU(b, pos, end, out);
      case TUNNEL_VXLAN:
        return this.decodeVxlan(b, pos, end, out);
      case TUNNEL_CAPWAP:
        return this.decodeCapwap(b, pos, end, out);
      default:
        return this.decodeTeredo(b, pos, end, out);
    }
  }

  private saveOuter(out: PacketInfo, depth: number): void {
    const saved = this.savedOuter;
    const at = depth * SAVED_FIELDS;
    saved[at] = out.family;
    saved[at + 1] = out.ipOff;
    saved[at + 2] = out.srcOff;
    saved[at + 3] = out.dstOff;
    saved[at + 4] = out.l4;
    saved[at + 5] = out.sport;
    saved[at + 6] = out.dport;
    saved[at + 7] = out.payloadOff;
    saved[at + 8] = out.payloadLen;
  }

  /** Tunnels start only from UDP or IP-protocol outers, so the TCP fields were zero. */
  private restoreOuter(out: PacketInfo, depth: number): void {
    const saved = this.savedOuter;
    const at = depth * SAVED_FIELDS;
    out.family = saved[at];
    out.ipOff = saved[at + 1];
    out.srcOff = saved[at + 2];
    out.dstOff = saved[at + 3];
    out.l4 = saved[at + 4];
    out.sport = saved[at + 5];
    out.dport = saved[at + 6];
    out.payloadOff = saved[at + 7];
    out.payloadLen = saved[at + 8];
    out.tcpFlags = 0;
    out.tcpSeq = 0;
    out.tcpAck = 0;
    out.tunnelDepth = depth;
  }

  /**
   * GRE version 0 carries an ethertype (0x6558: a whole Ethernet frame); PPTP's version 1 carries
   * PPP. Source-routed GRE (R bit, RFC 1701) is obsolete and not followed.
   */
  private decodeGre(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + 4 > end) return DECODED_MALFORMED;
    const flags = b[pos];
    const version = b[pos + 1] & 0x07;
    const protocol = read16(b, pos + 2);
    let hdr = pos + 4;
    if (version === 0) {
      if ((flags & GRE_ROUTING) !== 0) return DECODED_NOT_IP;
      if ((flags & GRE_CHECKSUM) !== 0) hdr += 4;
      if ((flags & GRE_KEY) !== 0) hdr += 4;
      if ((flags & GRE_SEQUENCE) !== 0) hdr += 4;
      if (hdr > end) return DECODED_MALFORMED;
      if (protocol === ETHERTYPE_TRANSPARENT_BRIDGING) return this.decodeEthernet(b, hdr, end, out);
      return this.decodeEthertype(b, hdr, end, protocol, out);
    }
    if (version !== 1 || protocol !== ETHERTYPE_PPP) return DECODED_NOT_IP;
    hdr += 4; // payload length and call id, always present
    if ((flags & GRE_SEQUENCE) !== 0) hdr += 4;
    if ((b[pos + 1] & GRE_ACK) !== 0) hdr += 4;
    if (hdr > end) return DECODED_MALFORMED;
    return this.decodePpp(b, hdr, end, out);
  }

  /**
   * GTPv1-U: only G-PDUs carry user packets. Any of the E/S/PN flags adds the 4-byte
   * sequence/N-PDU/next-type field; extension headers, each length-prefixed in 4-byte units,
   * chain through their last byte until a next type of 0.
   */
  private decodeGtpU(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + GTP_HEADER_LEN > end) return DECODED_MALFORMED;
    const flags = b[pos];
    if (flags >> 5 !== GTP_VERSION_1 || (flags & GTP_PROTOCOL_TYPE_GTP) === 0 || b[pos + 1] !== GTP_G_PDU) {
      return DECODED_NOT_IP;
    }
    let hdr = pos + GTP_HEADER_LEN;
    if ((flags & GTP_OPTIONAL_FIELDS) !== 0) {
      if (hdr + GTP_OPTIONAL_FIELDS_LEN > end) return DECODED_MALFORMED;
      let nextType = (flags & GTP_EXTENSION) !== 0 ? b[hdr + 3] : 0;
      hdr += GTP_OPTIONAL_FIELDS_LEN;
      while (nextType !== 0) {
        if (hdr >= end) return DECODED_MALFORMED;
        const extLen = b[hdr] << 2;
        if (extLen === 0 || hdr + extLen > end) return DECODED_MALFORMED;
        nextType = b[hdr + extLen - 1];
        hdr += extLen;
      }
    }
    return this.decodeIpByVersion(b, hdr, end, out, DECODED_NOT_IP);
  }

  private decodeVxlan(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + VXLAN_HEADER_LEN > end) return DECODED_MALFORMED;
    if ((b[pos] & VXLAN_VNI_VALID) === 0) return DECODED_NOT_IP;
    return this.decodeEthernet(b, pos + VXLAN_HEADER_LEN, end, out);
  }

  /**
   * CAPWAP data channel (RFC 5415): preamble 0 (type 1 is DTLS, unreadable), HLEN in 4-byte
   * words, then an 802.3 frame, or a native 802.11 frame when T is set and WBID is 1.
   */
  private decodeCapwap(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + CAPWAP_HEADER_MIN_LEN > end) return DECODED_MALFORMED;
    if (b[pos] !== 0) return DECODED_NOT_IP;
    const headerLen = (b[pos + 1] >> 3) << 2;
    if (headerLen < CAPWAP_HEADER_MIN_LEN || pos + headerLen > end) return DECODED_MALFORMED;
    const wirelessBinding = (b[pos + 2] >> 1) & 0x1f;
    const nativeFrame = (b[pos + 2] & 0x01) !== 0;
    if (!nativeFrame) return this.decodeEthernet(b, pos + headerLen, end, out);
    if (wirelessBinding !== CAPWAP_WBID_IEEE80211) return DECODED_NOT_IP;
    return this.decodeIeee80211Data(b, pos + headerLen, end, out);
  }

  /** 802.11 data frame: only unencrypted frames with a body can hold an LLC/SNAP-framed packet. */
  private decodeIeee80211Data(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    if (pos + WLAN_HEADER_LEN > end) return DECODED_MALFORMED;
    let frameControl = b[pos];
    let frameFlags = b[pos + 1];
    // Some access points (Cisco's among them) send the two frame control bytes swapped; the
    // version bits, always 0, and the data type tell which order this frame uses.
    if (!isWlanDataFrameControl(frameControl)) {
      frameControl = b[pos + 1];
      frameFlags = b[pos];
      if (!isWlanDataFrameControl(frameControl)) return DECODED_NOT_IP;
    }
    const subtype = frameControl >> 4;
    if ((frameFlags & WLAN_PROTECTED) !== 0 || (subtype & WLAN_SUBTYPE_NO_BODY) !== 0) return DECODED_NOT_IP;
    let hdr = pos + WLAN_HEADER_LEN;
    if ((frameFlags & WLAN_TO_DS_FROM_DS) === WLAN_TO_DS_FROM_DS) hdr += WLAN_ADDR4_LEN;
    if ((subtype & WLAN_SUBTYPE_QOS) !== 0) {
      hdr += WLAN_QOS_CONTROL_LEN;
      if ((frameFlags & WLAN_ORDER) !== 0) hdr += WLAN_HT_CONTROL_LEN;
    }
    if (!isSnapHeader(b, hdr, end)) return DECODED_NOT_IP;
    return this.decodeEthertype(b, hdr + LLC_SNAP_HEADER_LEN, end, read16(b, hdr + 6), out);
  }

  /**
   * Teredo (RFC 4380): optional authentication and origin indication headers, then IPv6.
   * Anything else on port 3544 is plain UDP, so the IPv6 header must look whole.
   */
  private decodeTeredo(b: Uint8Array, pos: number, end: number, out: PacketInfo): number {
    let hdr = pos;
    if (hdr + 4 <= end && b[hdr] === 0x00 && b[hdr + 1] === 0x01) {
      hdr += TEREDO_AUTH_FIXED_LEN + b[hdr + 2] + b[hdr + 3];
    }
    if (hdr + 2 <= end && b[hdr] === 0x00 && b[hdr + 1] === 0x00) hdr += TEREDO_ORIGIN_INDICATION_LEN;
    if (hdr + IPV6_HEADER_LEN > end) return DECODED_NOT_IP;
    if (b[hdr] >> 4 !== 6 || hdr + IPV6_HEADER_LEN + read16(b, hdr + 4) > end) return DECODED_NOT_IP;
    return this.decodeIpv6(b, hdr, end, out);
  }
}
