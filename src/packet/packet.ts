/**
 * The result of decoding one packet: offsets into the caller's buffer, never copies.
 * One instance is reused for every packet, so nothing here may be kept past the next decode.
 */
export class PacketInfo {
  /** The buffer every offset below refers to. */
  buf: Uint8Array = new Uint8Array(0);
  /** 4 or 6: family of the innermost IP header. */
  family = 0;
  /** Offset of the innermost IP header. */
  ipOff = 0;
  /** Offsets of the source and destination addresses (4 bytes for IPv4, 16 for IPv6). */
  srcOff = 0;
  dstOff = 0;
  /** IP protocol number of the innermost transport header (6 TCP, 17 UDP, anything else). */
  l4 = 0;
  /** Transport ports, 0 when the packet carries none. */
  sport = 0;
  dport = 0;
  /** TCP only: flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10), sequence and ack numbers. */
  tcpFlags = 0;
  tcpSeq = 0;
  tcpAck = 0;
  /** Transport payload (on DECODED_OTHER_L4: everything after the IP headers), clipped to both the IP length and the captured length. */
  payloadOff = 0;
  payloadLen = 0;
  /** Tunnel headers (IP-in-IP, GRE, GTP-U, VXLAN, CAPWAP, Teredo) removed to reach the innermost packet. */
  tunnelDepth = 0;
}

/** Decode status codes (the return value of PacketDecoder.decode). */
export const DECODED_TCP_UDP = 0;
/** IP, but no transport ports to key a flow on: ICMP, ESP, a non-first fragment, ... */
export const DECODED_OTHER_L4 = 1;
/** Not IP at all: ARP, LLDP, STP, ... */
export const DECODED_NOT_IP = 2;
/** Truncated header, impossible length, bad version: counted and skipped. */
export const DECODED_MALFORMED = 3;
/** The link type is not one we can decode. */
export const DECODED_UNKNOWN_LINK = 4;
export const DECODE_STATUS_COUNT = 5;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
