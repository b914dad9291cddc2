import { ChunkedFile, ReadFailure } from './chunked-file.js';
import { pcapVariant, readPcap } from './pcap.js';
import { hex32, isByteOrderMagic, readPcapng, SECTION_HEADER_BLOCK } from './pcapng.js';
import type { CaptureResult, PacketSink } from './types.js';

const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;

export interface ReadCaptureOptions {
  /** Size of the read buffer; records larger than it grow it. Small values exercise records spanning reads. */
  chunkBytes?: number;
}

/**
 * Streams every packet of a pcap or pcapng file (recognised by magic number, whatever its name)
 * into `sink`. Problems with the file itself (unreadable, not a capture, truncated, corrupt) are
 * reported in the result's `error`, after every packet before the problem has been delivered;
 * only an exception thrown by `sink` propagates.
 */
export function readCapture(path: string, sink: PacketSink, options?: ReadCaptureOptions): CaptureResult {
  const chunkBytes = options?.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  const result: CaptureResult = { format: null, packets: 0, linkTypes: [], error: null };
  let file: ChunkedFile;
  try {
    file = ChunkedFile.open(path, chunkBytes);
  } catch (err) {
    result.error = (err as Error).message;
    return result;
  }
  try {
    result.error = readByMagic(file, sink, result);
  } catch (err) {
    if (!(err instanceof ReadFailure)) throw err;
    result.error = err.message;
  } finally {
    file.close();
  }
  return result;
}

function readByMagic(file: ChunkedFile, sink: PacketSink, result: CaptureResult): string | null {
  if (!file.fill(4)) return `not a pcap or pcapng file (only ${file.available()} bytes)`;
  const magic = file.buf.readUInt32BE(file.pos);
  const pcap = pcapVariant(magic);
  if (pcap !== null) {
    result.format = pcap.format;
    return readPcap(file, pcap, sink, result);
  }
  // A file cut inside its first SHB is still recognisably pcapng; readPcapng reports the truncation.
  if (magic === SECTION_HEADER_BLOCK && (!file.fill(12) || isByteOrderMagic(file.buf.readUInt32LE(file.pos + 8)))) {
    result.format = 'pcapng';
    return readPcapng(file, sink, result);
  }
  return `not a pcap or pcapng file (magic 0x${hex32(magic)})`;
}
