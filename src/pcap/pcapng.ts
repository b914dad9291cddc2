import { BIG_ENDIAN, LITTLE_ENDIAN, type ByteOrder } from './byte-order.js';
import { MAX_RECORD_BYTES, type ChunkedFile } from './chunked-file.js';
import type { CaptureResult, PacketSink } from './types.js';

/** Block type of the Section Header Block; the same in both byte orders, so it doubles as the file magic. */
export const SECTION_HEADER_BLOCK = 0x0a0d0d0a;
const INTERFACE_DESCRIPTION_BLOCK = 1;
const OBSOLETE_PACKET_BLOCK = 2;
const SIMPLE_PACKET_BLOCK = 3;
const ENHANCED_PACKET_BLOCK = 6;

const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const BYTE_ORDER_MAGIC_SWAPPED = 0x4d3c2b1a;

const OPTION_END = 0;
const OPTION_IF_TSRESOL = 9;
const OPTION_IF_TSOFFSET = 14;

interface Interface {
  linkType: number;
  snapLen: number;
  /** Timestamp units to milliseconds is `units * tsMul / tsDiv`; one of the two is 1, so only one rounding happens. */
  tsMul: number;
  tsDiv: number;
  tsOffsetMs: number;
}

/** True when the 32 bits after the SHB's type and length, read little-endian, are a byte-order magic. */
export function isByteOrderMagic(littleEndianValue: number): boolean {
  return littleEndianValue === BYTE_ORDER_MAGIC || littleEndianValue === BYTE_ORDER_MAGIC_SWAPPED;
}

/**
 * Reads a pcapng file positioned at its first Section Header Block. Counts delivered packets
 * and each interface's link type into `result`; returns the error that stopped reading, or
 * null at a clean end.
 */
export function readPcapng(file: ChunkedFile, sink: PacketSink, result: CaptureResult): string | null {
  let order: ByteOrder = LITTLE_ENDIAN;
  let interfaces: Interface[] = [];
  // Simple Packet Blocks carry no timestamp; reusing the previous one keeps time monotonic for flow ageing.
  let lastTsMs = 0;

  for (;;) {
    const blockAt = file.offset();
    if (!file.fill(8)) return file.available() === 0 ? null : `truncated block header at byte ${blockAt}`;
    const type = order.u32(file.buf, file.pos);
    if (type === SECTION_HEADER_BLOCK) {
      if (!file.fill(12)) return `truncated section header block at byte ${blockAt}`;
      const magic = file.buf.readUInt32LE(file.pos + 8);
      if (!isByteOrderMagic(magic)) {
        return `corrupt section header block at byte ${blockAt}: byte-order magic 0x${hex32(magic)}`;
      }
      order = magic === BYTE_ORDER_MAGIC ? LITTLE_ENDIAN : BIG_ENDIAN;
      interfaces = [];
    }
    const totalLen = order.u32(file.buf, file.pos + 4);
    const lengthProblem = blockLengthProblem(type, totalLen);
    if (lengthProblem !== null) return `corrupt ${blockName(type)} at byte ${blockAt}: ${lengthProblem}`;
    if (!file.fill(totalLen)) return `truncated ${blockName(type)} at byte ${blockAt}`;
    const { buf, pos } = file;
    const trailingLen = order.u32(buf, pos + totalLen - 4);
    if (trailingLen !== totalLen) {
      return `corrupt ${blockName(type)} at byte ${blockAt}: trailing length ${trailingLen} differs from leading length ${totalLen}`;
    }

    switch (type) {
      case INTERFACE_DESCRIPTION_BLOCK: {
        const described = describeInterface(buf, pos, totalLen, order);
        if (typeof described === 'string') return `corrupt interface description block at byte ${blockAt}: ${described}`;
        interfaces.push(described);
        result.linkTypes.push(described.linkType);
        break;
      }
      case ENHANCED_PACKET_BLOCK:
      case OBSOLETE_PACKET_BLOCK: {
        const interfaceId = type === ENHANCED_PACKET_BLOCK ? order.u32(buf, pos + 8) : order.u16(buf, pos + 8);
        if (interfaceId >= interfaces.length) {
          return `corrupt ${blockName(type)} at byte ${blockAt}: interface ${interfaceId} is not described (section has ${interfaces.length})`;
        }
        const capLen = order.u32(buf, pos + 20);
        if (capLen > totalLen - 32) {
          return `corrupt ${blockName(type)} at byte ${blockAt}: captured length ${capLen} exceeds the block`;
        }
        const iface = interfaces[interfaceId];
        const units = order.u32(buf, pos + 12) * 0x1_0000_0000 + order.u32(buf, pos + 16);
        lastTsMs = (units * iface.tsMul) / iface.tsDiv + iface.tsOffsetMs;
        sink(buf, pos + 28, capLen, order.u32(buf, pos + 24), iface.linkType, lastTsMs);
        result.packets++;
        break;
      }
      case SIMPLE_PACKET_BLOCK: {
        if (interfaces.length === 0) return `corrupt simple packet block at byte ${blockAt}: section has no interface`;
        const iface = interfaces[0];
        const origLen = order.u32(buf, pos + 8);
        let capLen = Math.min(origLen, totalLen - 16);
        if (iface.snapLen > 0 && capLen > iface.snapLen) capLen = iface.snapLen;
        sink(buf, pos + 12, capLen, origLen, iface.linkType, lastTsMs);
        result.packets++;
        break;
      }
      // Every other block (name resolution, statistics, decryption secrets, custom, ...) is skipped whole.
    }
    file.pos = pos + totalLen;
  }
}

function blockLengthProblem(type: number, totalLen: number): string | null {
  const minimum = minimumBlockLength(type);
  if (totalLen < minimum) return `total length ${totalLen} is below ${minimum}`;
  if (totalLen % 4 !== 0) return `total length ${totalLen} is not a multiple of 4`;
  if (totalLen > MAX_RECORD_BYTES) return `total length ${totalLen} exceeds ${MAX_RECORD_BYTES}`;
  return null;
}

/** Type, both lengths, and the fixed fields of the block body. */
function minimumBlockLength(type: number): number {
  switch (type) {
    case SECTION_HEADER_BLOCK: return 28;
    case INTERFACE_DESCRIPTION_BLOCK: return 20;
    case ENHANCED_PACKET_BLOCK:
    case OBSOLETE_PACKET_BLOCK: return 32;
    case SIMPLE_PACKET_BLOCK: return 16;
    default: return 12;
  }
}

/** Returns the interface an IDB describes, or what is wrong with the block. */
function describeInterface(buf: Buffer, pos: number, totalLen: number, order: ByteOrder): Interface | string {
  const iface: Interface = {
    linkType: order.u16(buf, pos + 8),
    snapLen: order.u32(buf, pos + 12),
    tsMul: 1,
    tsDiv: 1000, // microseconds unless if_tsresol says otherwise
    tsOffsetMs: 0,
  };
  const optionsEnd = pos + totalLen - 4;
  for (let at = pos + 16; at + 4 <= optionsEnd; ) {
    const code = order.u16(buf, at);
    const len = order.u16(buf, at + 2);
    if (code === OPTION_END) break;
    const valueAt = at + 4;
    if (valueAt + len > optionsEnd) return `option ${code} at block offset ${at - pos} overruns the block`;
    if (code === OPTION_IF_TSRESOL && len >= 1) {
      setTimestampResolution(iface, buf[valueAt]);
    } else if (code === OPTION_IF_TSOFFSET && len >= 8) {
      const highFirst = order === BIG_ENDIAN;
      const high = order.i32(buf, highFirst ? valueAt : valueAt + 4);
      const low = order.u32(buf, highFirst ? valueAt + 4 : valueAt);
      iface.tsOffsetMs = (high * 0x1_0000_0000 + low) * 1000;
    }
    at = valueAt + ((len + 3) & ~3);
  }
  return iface;
}

/** if_tsresol: high bit clear means units of 10^-n seconds, set means 2^-n seconds. */
function setTimestampResolution(iface: Interface, resolution: number): void {
  const exponent = resolution & 0x7f;
  if (resolution & 0x80) {
    iface.tsMul = 1000 / 2 ** exponent;
    iface.tsDiv = 1;
  } else if (exponent >= 3) {
    iface.tsMul = 1;
    iface.tsDiv = 10 ** (exponent - 3);
  } else {
    iface.tsMul = 10 ** (3 - exponent);
    iface.tsDiv = 1;
  }
}

function blockName(type: number): string {
  switch (type) {
    case SECTION_HEADER_BLOCK: return 'section header block';
    case INTERFACE_DESCRIPTION_BLOCK: return 'interface description block';
    case OBSOLETE_PACKET_BLOCK: return 'packet block';
    case SIMPLE_PACKET_BLOCK: return 'simple packet block';
    case ENHANCED_PACKET_BLOCK: return 'enhanced packet block';
    default: return `block of type 0x${hex32(type)}`;
  }
}

export function hex32(value: number): string {
  return value.toString(16).padStart(8, '0');
}
