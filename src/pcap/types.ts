/**
 * Called once per captured packet. `buf` is the reader's own chunk buffer: the bytes at
 * [off, off + capLen) are valid only during the call (the next chunk overwrites them).
 * `tsMs` is the capture timestamp in milliseconds since the epoch (fractional).
 */
export type PacketSink = (buf: Buffer, off: number, capLen: number, origLen: number, linkType: number, tsMs: number) => void;

export type CaptureFormat = 'pcap' | 'pcap-ns' | 'pcapng';

export interface CaptureResult {
  /** Format found by magic number, or null when the file is neither pcap nor pcapng. */
  format: CaptureFormat | null;
  /** Packets handed to the sink. */
  packets: number;
  /** Link types seen (one per pcap file, one per pcapng interface). */
  linkTypes: number[];
  /** The problem that stopped reading (truncated, corrupt, unreadable), or null when the whole file was read. */
  error: string | null;
}
