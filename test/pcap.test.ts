import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readCapture } from '../src/pcap/reader.js';
import type { CaptureResult } from '../src/pcap/types.js';
import { pcapHeader } from './helpers/exchanges.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/pcap/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

interface DeliveredPacket {
  bytes: Buffer;
  origLen: number;
  linkType: number;
  tsMs: number;
}

function collect(path: string, chunkBytes?: number): { result: CaptureResult; packets: DeliveredPacket[] } {
  const packets: DeliveredPacket[] = [];
  const result = readCapture(
    path,
    (buf, off, capLen, origLen, linkType, tsMs) => {
      packets.push({ bytes: Buffer.from(buf.subarray(off, off + capLen)), origLen, linkType, tsMs });
    },
    chunkBytes === undefined ? undefined : { chunkBytes },
  );
  return { result, packets };
}

/** The generator fills every packet with tag, tag+1, tag+2, ... */
function expectTaggedPacket(bytes: Buffer, tag: number, capLen: number): void {
  expect(bytes.length).toBe(capLen);
  expect(bytes[0]).toBe(tag);
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== ((tag + i) & 0xff)) throw new Error(`packet ${tag.toString(16)} byte ${i} is ${bytes[i]}`);
  }
}

function expectTimestamps(packets: DeliveredPacket[], expected: number[]): void {
  expect(packets.length).toBe(expected.length);
  // Within half a microsecond: what a float64 of milliseconds since the epoch can hold.
  packets.forEach((p, i) => expect(p.tsMs).toBeCloseTo(expected[i], 3));
}

describe('classic pcap', () => {
  const microsecondFiles = ['le-us.pcap', 'be-us.pcap', 'modified-le.pcap', 'mislabelled.pcapng'];

  it.each(microsecondFiles)('%s: three Ethernet packets with microsecond timestamps', (name) => {
    const { result, packets } = collect(fixture(name));
    expect(result).toEqual({ format: 'pcap', packets: 3, linkTypes: [1], error: null });
    expectTaggedPacket(packets[0].bytes, 0x10, 60);
    expectTaggedPacket(packets[1].bytes, 0x20, 98);
    expectTaggedPacket(packets[2].bytes, 0x30, 150);
    expect(packets.map((p) => p.origLen)).toEqual([60, 1514, 150]);
    expect(packets.map((p) => p.linkType)).toEqual([1, 1, 1]);
    expectTimestamps(packets, [1_700_000_000_123.456, 1_700_000_001_000, 1_700_000_002_999.999]);
  });

  it.each(['le-ns.pcap', 'be-ns.pcap'])('%s: nanosecond timestamps', (name) => {
    const { result, packets } = collect(fixture(name));
    expect(result).toEqual({ format: 'pcap-ns', packets: 3, linkTypes: [1], error: null });
    expectTaggedPacket(packets[1].bytes, 0x20, 98);
    expectTimestamps(packets, [1_700_000_000_123.456789, 1_700_000_001_000.000001, 1_700_000_002_999.999999]);
  });

  it('takes the link type from the low 16 bits of the network field, ignoring the FCS bits', () => {
    expect(collect(fixture('be-ns.pcap')).packets.map((p) => p.linkType)).toEqual([1, 1, 1]);
  });

  it('accepts a record longer than the snaplen', () => {
    const { result, packets } = collect(fixture('over-snaplen.pcap'));
    expect(result).toEqual({ format: 'pcap', packets: 1, linkTypes: [101], error: null });
    expectTaggedPacket(packets[0].bytes, 0x45, 100);
    expect(packets[0].linkType).toBe(101);
    expectTimestamps(packets, [1000.002]);
  });

  it('delivers every complete record before a truncated one', () => {
    const { result, packets } = collect(fixture('truncated.pcap'));
    expect(result).toEqual({ format: 'pcap', packets: 2, linkTypes: [1], error: 'truncated packet record at byte 214' });
    expectTaggedPacket(packets[1].bytes, 0x20, 98);
  });

  it('stops at an impossible captured length', () => {
    const { result } = collect(fixture('huge-caplen.pcap'));
    expect(result).toEqual({
      format: 'pcap',
      packets: 1,
      linkTypes: [1],
      error: 'corrupt packet record at byte 100: captured length 2147483647 exceeds 262144',
    });
  });
});

describe('pcapng', () => {
  it.each(['le.pcapng', 'be.pcapng'])('%s: EPB, SPB and obsolete PB delivered, NRB and ISB skipped', (name) => {
    const { result, packets } = collect(fixture(name));
    expect(result).toEqual({ format: 'pcapng', packets: 6, linkTypes: [1], error: null });
    expectTaggedPacket(packets[0].bytes, 0x10, 60);
    expectTaggedPacket(packets[1].bytes, 0x20, 98);
    // SPB: 132 bytes in the block, original 300, snaplen 128.
    expectTaggedPacket(packets[2].bytes, 0x30, 128);
    // SPB: original 61, padded to 64 in the block.
    expectTaggedPacket(packets[3].bytes, 0x40, 61);
    expectTaggedPacket(packets[4].bytes, 0x50, 54);
    expectTaggedPacket(packets[5].bytes, 0x60, 150);
    expect(packets.map((p) => p.origLen)).toEqual([60, 1514, 300, 61, 54, 150]);
    expect(packets.map((p) => p.linkType)).toEqual([1, 1, 1, 1, 1, 1]);
    // Simple Packet Blocks have no timestamp of their own and repeat the previous packet's.
    expectTimestamps(packets, [
      1_700_000_000_123.456, 1_700_000_001_000, 1_700_000_001_000, 1_700_000_001_000, 1_700_000_002_500, 1_700_000_003_000.001,
    ]);
  });

  it('gives each packet its own interface link type, resolution and offset', () => {
    const { result, packets } = collect(fixture('two-interfaces.pcapng'));
    expect(result).toEqual({ format: 'pcapng', packets: 3, linkTypes: [1, 101], error: null });
    expect(packets.map((p) => p.linkType)).toEqual([101, 1, 101]);
    expectTaggedPacket(packets[0].bytes, 0x45, 40);
    expectTaggedPacket(packets[1].bytes, 0x10, 60);
    // Interface 1: 2^-20 s units plus 1700000000 s; interface 0: nanoseconds.
    expectTimestamps(packets, [1_700_000_005_500, 1_700_000_000_123.456789, 1_700_000_006_000]);
  });

  it('starts afresh at each section: new byte order, new interface list', () => {
    const { result, packets } = collect(fixture('two-sections.pcapng'));
    expect(result).toEqual({ format: 'pcapng', packets: 2, linkTypes: [1, 1, 101], error: null });
    expect(packets.map((p) => p.linkType)).toEqual([1, 101]);
    expectTaggedPacket(packets[1].bytes, 0x45, 40);
    expectTimestamps(packets, [1_700_000_000_000, 1_700_000_000_250]);
  });

  it('delivers every complete block before a truncated one', () => {
    const { result, packets } = collect(fixture('truncated.pcapng'));
    expect(result).toEqual({ format: 'pcapng', packets: 1, linkTypes: [1], error: 'truncated enhanced packet block at byte 220' });
    expectTaggedPacket(packets[0].bytes, 0x10, 60);
  });

  it.each([
    ['corrupt-length.pcapng', 1, 'corrupt enhanced packet block at byte 180: total length 34 is not a multiple of 4'],
    ['trailing-mismatch.pcapng', 0, 'corrupt enhanced packet block at byte 88: trailing length 40 differs from leading length 36'],
    ['unknown-interface.pcapng', 1, 'corrupt enhanced packet block at byte 180: interface 1 is not described (section has 1)'],
    ['caplen-exceeds-block.pcapng', 0, 'corrupt enhanced packet block at byte 88: captured length 12 exceeds the block'],
  ])('%s: stops with the problem and its offset', (name, packets, error) => {
    expect(collect(fixture(name)).result).toEqual({ format: 'pcapng', packets, linkTypes: [1], error });
  });
});

describe('files that are not captures', () => {
  it('recognises the format by magic number, not by name', () => {
    expect(collect(fixture('not-a-capture.pcap')).result).toEqual({
      format: null, packets: 0, linkTypes: [], error: 'not a pcap or pcapng file (magic 0x7b0a2020)',
    });
  });

  it('reports an empty file', () => {
    expect(collect(fixture('empty.pcap')).result).toEqual({
      format: null, packets: 0, linkTypes: [], error: 'not a pcap or pcapng file (only 0 bytes)',
    });
  });

  it('reports a missing file', () => {
    const { result } = collect(fixture('no-such-file.pcap'));
    expect(result.format).toBeNull();
    expect(result.error).toMatch(/^ENOENT: /);
  });

  it('reports a directory', () => {
    const { result } = collect(FIXTURES);
    expect(result.format).toBeNull();
    expect(result.error).toMatch(/^EISDIR: /);
  });
});

describe('chunked reading', () => {
  const captures = readdirSync(FIXTURES).filter((name) => !name.endsWith('.mjs'));

  it.each(captures)('%s: chunks of 64, 7 and 1 bytes give the same packets as the default', (name) => {
    const whole = collect(fixture(name));
    for (const chunkBytes of [64, 7, 1]) expect(collect(fixture(name), chunkBytes)).toEqual(whole);
  });

  it('rejects a chunk size that is not a positive integer', () => {
    expect(() => readCapture(fixture('le-us.pcap'), () => {}, { chunkBytes: 0 })).toThrow(RangeError);
  });

  it('lets an exception from the sink propagate', () => {
    expect(() => readCapture(fixture('le-us.pcap'), () => { throw new Error('sink failed'); })).toThrow('sink failed');
  });

  describe('a capture many chunks long', () => {
    const dir = mkdtempSync(join(tmpdir(), 'btwall-pcap-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('streams every record, whatever its alignment to the chunk', () => {
      const records: Buffer[] = [];
      records.push(pcapHeader(1));
      const count = 2000;
      for (let i = 0; i < count; i++) {
        const len = 40 + ((i * 37) % 1400);
        const record = Buffer.alloc(16 + len);
        record.writeUInt32LE(i, 0);
        record.writeUInt32LE(len, 8);
        record.writeUInt32LE(len, 12);
        record.fill(i & 0xff, 16);
        records.push(record);
      }
      const path = join(dir, 'many.pcap');
      writeFileSync(path, Buffer.concat(records));

      let seen = 0;
      const result = readCapture(path, (buf, off, capLen, _origLen, _linkType, tsMs) => {
        const i = seen++;
        if (tsMs !== i * 1000 || capLen !== 40 + ((i * 37) % 1400) || buf[off] !== (i & 0xff) || buf[off + capLen - 1] !== (i & 0xff)) {
          throw new Error(`record ${i} delivered wrongly`);
        }
      }, { chunkBytes: 4096 });
      expect(result).toEqual({ format: 'pcap', packets: count, linkTypes: [1], error: null });
    });
  });
});
