/** Integer readers for one byte order, picked once per file (pcap) or per section (pcapng). */
export interface ByteOrder {
  u16(buf: Buffer, off: number): number;
  u32(buf: Buffer, off: number): number;
  i32(buf: Buffer, off: number): number;
}

export const LITTLE_ENDIAN: ByteOrder = {
  u16: (buf, off) => buf.readUInt16LE(off),
  u32: (buf, off) => buf.readUInt32LE(off),
  i32: (buf, off) => buf.readInt32LE(off),
};

export const BIG_ENDIAN: ByteOrder = {
  u16: (buf, off) => buf.readUInt16BE(off),
  u32: (buf, off) => buf.readUInt32BE(off),
  i32: (buf, off) => buf.readInt32BE(off),
};
