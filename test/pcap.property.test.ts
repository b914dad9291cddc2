import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { readCapture } from '../src/pcap/reader.js';
import type { CaptureResult } from '../src/pcap/types.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/pcap/', import.meta.url));
const VALID_FIXTURES = ['le-us.pcap', 'be-ns.pcap', 'modified-le.pcap', 'le.pcapng', 'be.pcapng', 'two-interfaces.pcapng', 'two-sections.pcapng'];
const fixtureBytes = new Map(VALID_FIXTURES.map((name) => [name, readFileSync(join(FIXTURES, name))]));

const dir = mkdtempSync(join(tmpdir(), 'btwall-pcap-prop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const scratch = join(dir, 'capture');

/** Packet summaries as delivered, plus the result; throws if the sink is handed a range outside its buffer. */
function readChecked(bytes: Uint8Array, chunkBytes: number): { result: CaptureResult; packets: string[] } {
  writeFileSync(scratch, bytes);
  const packets: string[] = [];
  const result = readCapture(scratch, (buf, off, capLen, origLen, linkType, tsMs) => {
    if (!Number.isInteger(off) || !Number.isInteger(capLen) || off < 0 || capLen < 0 || off + capLen > buf.length) {
      throw new Error(`sink range [${off}, ${off + capLen}) outside a ${buf.length}-byte buffer`);
    }
    packets.push(`${capLen}/${origLen}/${linkType}/${tsMs}/${buf.toString('hex', off, off + capLen)}`);
  }, { chunkBytes });
  expect(result.packets).toBe(packets.length);
  return { result, packets };
}

const chunkBytes = fc.integer({ min: 1, max: 512 });
const magics = [
  [0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d],
  [0x34, 0xcd, 0xb2, 0xa1], [0x0a, 0x0d, 0x0d, 0x0a],
];

describe('readCapture on hostile input', () => {
  it('never throws and keeps every sink range inside the buffer, for arbitrary bytes', () => {
    // Arbitrary tails behind each real magic, so the parsers rather than the magic check see the garbage.
    const withMagic = fc.tuple(fc.constantFrom(...magics), fc.uint8Array({ maxLength: 600 })).map(([magic, rest]) => {
      const bytes = new Uint8Array(4 + rest.length);
      bytes.set(magic);
      bytes.set(rest, 4);
      // pcapng needs a byte-order magic at offset 8 to be recognised at all.
      if (magic[0] === 0x0a && bytes.length >= 12) bytes.set(rest[0] & 1 ? [0x4d, 0x3c, 0x2b, 0x1a] : [0x1a, 0x2b, 0x3c, 0x4d], 8);
      return bytes;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), withMagic), chunkBytes, (bytes, chunk) => {
        readChecked(bytes, chunk);
      }),
      { numRuns: 400 },
    );
  });

  it('never throws on a valid capture with bytes changed', () => {
    const flip = fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) });
    fc.assert(
      fc.property(fc.constantFrom(...VALID_FIXTURES), fc.array(flip, { minLength: 1, maxLength: 8 }), chunkBytes, (name, flips, chunk) => {
        const bytes = Buffer.from(fixtureBytes.get(name)!);
        for (const { at, value } of flips) bytes[at % bytes.length] = value;
        readChecked(bytes, chunk);
      }),
      { numRuns: 400 },
    );
  });

  it('delivers a prefix of the full capture\'s packets when the file is cut anywhere', () => {
    fc.assert(
      fc.property(fc.constantFrom(...VALID_FIXTURES), fc.nat(), chunkBytes, (name, cutSeed, chunk) => {
        const bytes = fixtureBytes.get(name)!;
        const full = readChecked(bytes, 1 << 20);
        const cutAt = cutSeed % (bytes.length + 1);
        const cut = readChecked(bytes.subarray(0, cutAt), chunk);
        expect(full.packets.slice(0, cut.packets.length)).toEqual(cut.packets);
        if (cutAt >= 4) expect(cut.result.format).toBe(full.result.format);
      }),
      { numRuns: 400 },
    );
  });
});
