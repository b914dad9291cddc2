import { BIG_ENDIAN, LITTLE_ENDIAN, type ByteOrder } from './byte-order.js';
import { MAX_RECORD_BYTES, type ChunkedFile } from './chunked-file.js';
import type { CaptureFormat, CaptureResult, PacketSink } from './types.js';

/** What the magic number of a classic pcap file says about the rest of it. */
export interface PcapVariant {
  format: CaptureFormat;
  order: ByteOrder;
  /** Units of the record header's second timestamp field per millisecond. */
  fracPerMs: number;
  recordHeaderBytes: number;
}

const FILE_HEADER_BYTES = 24;
const RECORD_HEADER_BYTES = 16;
/** Alexey Kuznetzov's patched libpcap adds ifindex, protocol, pkt_type and padding to each record. */
const MODIFIED_RECORD_HEADER_BYTES = 24;

/**
 * Captured lengths up to this are accepted even above the file's snaplen: libpcap's own limit,
 * and some writers put a smaller snaplen in the header than they actually used.
 */
const PLAUSIBLE_CAPTURE_BYTES = 256 * 1024;

/** Looks up the first four bytes of a file, read big-endian; null when they are no pcap magic. */
export function pcapVariant(magic: number): PcapVariant | null {
  switch (magic) {
    case 0xa1b2c3d4: return { format: 'pcap', order: BIG_ENDIAN, fracPerMs: 1e3, recordHeaderBytes: RECORD_HEADER_BYTES };
    case 0xd4c3b2a1: return { format: 'pcap', order: LITTLE_ENDIAN, fracPerMs: 1e3, recordHeaderBytes: RECORD_HEADER_BYTES };
    case 0xa1b23c4d: return { format: 'pcap-ns', order: BIG_ENDIAN, fracPerMs: 1e6, recordHeaderBytes: RECORD_HEADER_BYTES };
    case 0x4d3cb2a1: return { format: 'pcap-ns', order: LITTLE_ENDIAN, fracPerMs: 1e6, recordHeaderBytes: RECORD_HEADER_BYTES };
    case 0xa1b2cd34: return { format: 'pcap', order: BIG_ENDIAN, fracPerMs: 1e3, recordHeaderBytes: MODIFIED_RECORD_HEADER_BYTES };
    case 0x34cdb2a1: return { format: 'pcap', order: LITTLE_ENDIAN, fracPerMs: 1e3, recordHeaderBytes: MODIFIED_RECORD_HEADER_BYTES };
    default: return null;
  }
}

/**
 * Reads a classic pcap file positioned at its first byte. Counts delivered packets and the
 * link type into `result`; returns the error that stopped reading, or null at a clean end.
 */
export function readPcap(file: ChunkedFile, variant: PcapVariant, sink: PacketSink, result: CaptureResult): string | null {
  if (!file.fill(FILE_HEADER_BYTES)) return 'truncated pcap file header at byte 0';
  const { order, fracPerMs, recordHeaderBytes } = variant;
  const snapLen = order.u32(file.buf, file.pos + 16);
  // The upper bits of the network field carry FCS information, not the link type.
  const linkType = order.u32(file.buf, file.pos + 20) & 0xffff;
  result.linkTypes.push(linkType);
  file.pos += FILE_HEADER_BYTES;
  const maxCapLen = Math.min(MAX_RECORD_BYTES - recordHeaderBytes, Math.max(PLAUSIBLE_CAPTURE_BYTES, snapLen));

  for (;;) {
    const recordAt = file.offset();
    if (!file.fill(recordHeaderBytes)) {
      return file.available() === 0 ? null : `truncated packet record at byte ${recordAt}`;
    }
    let { buf, pos } = file;
    const capLen = order.u32(buf, pos + 8);
    if (capLen > maxCapLen) {
      return `corrupt packet record at byte ${recordAt}: captured length ${capLen} exceeds ${maxCapLen}`;
    }
    const recordBytes = recordHeaderBytes + capLen;
    if (!file.fill(recordBytes)) return `truncated packet record at byte ${recordAt}`;
    ({ buf, pos } = file);
    const tsMs = order.u32(buf, pos) * 1000 + order.u32(buf, pos + 4) / fracPerMs;
    sink(buf, pos + recordHeaderBytes, capLen, order.u32(buf, pos + 12), linkType, tsMs);
    result.packets++;
    file.pos = pos + recordBytes;
  }
}
