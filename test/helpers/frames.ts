/**
 * Frame builders for tests: each layer is a function from its fields and
 * payload to bytes, so a test states the stack it needs (checksums stay zero: nothing checks them).
 * Lengths are right unless a test overrides one to build a broken frame.
 */

export function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

export function u16(value: number): number[] {
  return [(value >>> 8) & 0xff, value & 0xff];
}

export function u32(value: number): number[] {
  return [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

export function u16le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff];
}

export function u32le(value: number): number[] {
  return u32(value).reverse();
}

export function ipv4Address(text: string): number[] {
  return text.split('.').map(Number);
}

export function ipv6Address(text: string): number[] {
  const [head, tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  return [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups].flatMap((g) => u16(parseInt(g, 16)));
}

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;
export const ETHERTYPE_QINQ_LEGACY = 0x9100;
export const ETHERTYPE_PPPOE_SESSION = 0x8864;
export const ETHERTYPE_MPLS = 0x8847;
export const ETHERTYPE_MPLS_MULTICAST = 0x8848;
export const ETHERTYPE_TRANSPARENT_BRIDGING = 0x6558;
export const ETHERTYPE_PPP = 0x880b;

export const PROTO_ICMP = 1;
export const PROTO_IPIP = 4;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_IPV6 = 41;
export const PROTO_GRE = 47;
export const PROTO_ESP = 50;
export const PROTO_ICMPV6 = 58;
export const PROTO_NO_NEXT_HEADER = 59;

/** A VLAN-style tag: its TPID and the 12-bit VLAN id. */
export type VlanTag = [tpid: number, vid: number];

export function ethernet(ethertype: number, payload: Uint8Array, tags: VlanTag[] = []): Uint8Array {
  const tagBytes = tags.flatMap(([tpid, vid]) => [...u16(tpid), ...u16(vid)]);
  return concat([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2], tagBytes, u16(ethertype), payload);
}

/** An 802.3 frame (length instead of ethertype) with LLC/SNAP carrying `ethertype`. */
export function ethernetSnap(ethertype: number, payload: Uint8Array): Uint8Array {
  const llcSnap = [0xaa, 0xaa, 0x03, 0, 0, 0, ...u16(ethertype)];
  return concat([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2], u16(llcSnap.length + payload.length), llcSnap, payload);
}

export function pppoeSession(pppProtocol: number, payload: Uint8Array): Uint8Array {
  return concat([0x11, 0x00, ...u16(0x1234), ...u16(2 + payload.length), ...u16(pppProtocol)], payload);
}

/** An MPLS label stack; the last label gets the bottom-of-stack bit. */
export function mpls(labels: number[], payload: Uint8Array): Uint8Array {
  const stack = labels.flatMap((label, i) => u32(((label << 12) | (i === labels.length - 1 ? 0x100 : 0) | 64) >>> 0));
  return concat(stack, payload);
}

export interface Ipv4Fields {
  src?: string;
  dst?: string;
  /** Option bytes, a multiple of 4 long. */
  options?: number[];
  /** Overrides the total length (header + payload). */
  totalLength?: number;
  /** Overrides the header length field, in 4-byte words. */
  ihl?: number;
  /** Fragment offset in 8-byte units. */
  fragmentOffset?: number;
  moreFragments?: boolean;
}

export function ipv4(proto: number, payload: Uint8Array, fields: Ipv4Fields = {}): Uint8Array {
  const options = fields.options ?? [];
  const headerLen = 20 + options.length;
  const flagsAndOffset = (fields.moreFragments ? 0x2000 : 0) | (fields.fragmentOffset ?? 0);
  return concat(
    [0x40 | (fields.ihl ?? headerLen / 4), 0, ...u16(fields.totalLength ?? headerLen + payload.length)],
    [0, 1, ...u16(flagsAndOffset), 64, proto, 0, 0],
    ipv4Address(fields.src ?? '10.0.0.1'),
    ipv4Address(fields.dst ?? '10.0.0.2'),
    options,
    payload,
  );
}

export interface Ipv6Fields {
  src?: string;
  dst?: string;
  /** Overrides the payload length field. */
  payloadLength?: number;
}

export function ipv6(next: number, payload: Uint8Array, fields: Ipv6Fields = {}): Uint8Array {
  return concat(
    [0x60, 0, 0, 0, ...u16(fields.payloadLength ?? payload.length), next, 64],
    ipv6Address(fields.src ?? '2001:db8::1'),
    ipv6Address(fields.dst ?? '2001:db8::2'),
    payload,
  );
}

/** Hop-by-hop, routing, destination options or mobility header: `units` of 8 bytes. */
export function ipv6Extension(next: number, units: number, payload: Uint8Array): Uint8Array {
  const header = new Array<number>(units * 8).fill(0);
  header[0] = next;
  header[1] = units - 1;
  return concat(header, payload);
}

/** Authentication header, `words` 4-byte words long in all. */
export function ipv6AuthenticationHeader(next: number, words: number, payload: Uint8Array): Uint8Array {
  const header = new Array<number>(words * 4).fill(0);
  header[0] = next;
  header[1] = words - 2;
  return concat(header, payload);
}

export function ipv6Fragment(next: number, offsetUnits: number, more: boolean, payload: Uint8Array): Uint8Array {
  return concat([next, 0, ...u16((offsetUnits << 3) | (more ? 1 : 0)), 0, 0, 0, 7], payload);
}

export interface TcpFields {
  seq?: number;
  ack?: number;
  flags?: number;
  /** Option bytes, a multiple of 4 long. */
  options?: number[];
  /** Overrides the data offset field, in 4-byte words. */
  dataOffset?: number;
}

export function tcp(sport: number, dport: number, payload: Uint8Array, fields: TcpFields = {}): Uint8Array {
  const options = fields.options ?? [];
  const dataOffset = fields.dataOffset ?? (20 + options.length) / 4;
  return concat(
    [...u16(sport), ...u16(dport), ...u32(fields.seq ?? 1000), ...u32(fields.ack ?? 0)],
    [dataOffset << 4, fields.flags ?? 0x18, ...u16(65535), 0, 0, 0, 0],
    options,
    payload,
  );
}

export function udp(sport: number, dport: number, payload: Uint8Array, length = 8 + payload.length): Uint8Array {
  return concat([...u16(sport), ...u16(dport), ...u16(length), 0, 0], payload);
}

export interface GreFields {
  checksum?: boolean;
  key?: boolean;
  sequence?: boolean;
}

export function gre(protocol: number, payload: Uint8Array, fields: GreFields = {}): Uint8Array {
  const flags = (fields.checksum ? 0x80 : 0) | (fields.key ? 0x20 : 0) | (fields.sequence ? 0x10 : 0);
  return concat(
    [flags, 0, ...u16(protocol)],
    fields.checksum ? [0, 0, 0, 0] : [],
    fields.key ? [0, 0, 0, 42] : [],
    fields.sequence ? [0, 0, 0, 7] : [],
    payload,
  );
}

/** PPTP's enhanced GRE (version 1) around a PPP frame. */
export function greV1(payload: Uint8Array, withSequence: boolean, withAck: boolean): Uint8Array {
  return concat(
    [0x20 | (withSequence ? 0x10 : 0), 0x01 | (withAck ? 0x80 : 0), ...u16(ETHERTYPE_PPP), ...u16(payload.length), ...u16(9)],
    withSequence ? [0, 0, 0, 3] : [],
    withAck ? [0, 0, 0, 2] : [],
    payload,
  );
}

/** A GTPv1-U header; each extension is its content (a multiple of 4 bytes, minus 2). */
export function gtpU(payload: Uint8Array, messageType = 0xff, sequence?: number, extensions: number[][] = []): Uint8Array {
  const hasOptional = sequence !== undefined || extensions.length > 0;
  const flags = 0x30 | (extensions.length > 0 ? 0x04 : 0) | (sequence !== undefined ? 0x02 : 0);
  const extensionBytes = extensions.flatMap((content, i) => [
    (content.length + 2) / 4,
    ...content,
    i === extensions.length - 1 ? 0 : 0x85,
  ]);
  const optional = hasOptional ? [...u16(sequence ?? 0), 0, extensions.length > 0 ? 0x85 : 0] : [];
  const body = concat(optional, extensionBytes, payload);
  return concat([flags, messageType, ...u16(body.length), ...u32(0x1234)], body);
}

export function vxlan(frame: Uint8Array): Uint8Array {
  return concat([0x08, 0, 0, 0, 0, 0x10, 0x20, 0], frame);
}

/** A CAPWAP data header of `headerWords` 4-byte words: an 802.3 frame, or a native 802.11 one when `wlan`. */
export function capwap(frame: Uint8Array, wlan: boolean, headerWords = 2): Uint8Array {
  const header = new Array<number>(headerWords * 4).fill(0);
  header[1] = headerWords << 3;
  header[2] = wlan ? (1 << 1) | 1 : 0;
  return concat(header, frame);
}

export interface WlanFields {
  /** Both To DS and From DS: a fourth address follows. */
  fourAddresses?: boolean;
  qos?: boolean;
  /** Frame control bytes in the swapped order some access points use. */
  swapFrameControl?: boolean;
  protectedFrame?: boolean;
}

/** An 802.11 data frame carrying `ethertype` behind LLC/SNAP. */
export function wlanData(ethertype: number, payload: Uint8Array, fields: WlanFields = {}): Uint8Array {
  const frameControl = fields.qos ? 0x88 : 0x08;
  const frameFlags = (fields.fourAddresses ? 0x03 : 0x01) | (fields.protectedFrame ? 0x40 : 0);
  const control = fields.swapFrameControl ? [frameFlags, frameControl] : [frameControl, frameFlags];
  return concat(
    control,
    [0, 0],
    new Array<number>(18).fill(0x11),
    [0, 0],
    fields.fourAddresses ? new Array<number>(6).fill(0x22) : [],
    fields.qos ? [0, 0] : [],
    [0xaa, 0xaa, 0x03, 0, 0, 0, ...u16(ethertype)],
    payload,
  );
}

export function teredoOriginIndication(payload: Uint8Array): Uint8Array {
  return concat([0x00, 0x00, 0xff, 0xff, 0xc0, 0x00, 0x02, 0x01], payload);
}

export function teredoAuthentication(clientId: number[], authValue: number[], payload: Uint8Array): Uint8Array {
  return concat([0x00, 0x01, clientId.length, authValue.length], clientId, authValue, new Array<number>(8).fill(0x55), [0], payload);
}

/** An IPv4 packet from src to dst around `payload`, written the way tests read: addresses first. */
export function packet4(src: string, dst: string, proto: number, payload: Uint8Array): Uint8Array {
  return ipv4(proto, payload, { src, dst });
}

export function packet6(src: string, dst: string, next: number, payload: Uint8Array): Uint8Array {
  return ipv6(next, payload, { src, dst });
}
