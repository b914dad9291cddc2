import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { asciiBytes, findKey, skipValue, stringLength, stringStart } from '../../src/detect/bencode.js';

const bytes = asciiBytes;

describe('bencode walker', () => {
  it.each([
    ['i42e', 4],
    ['i-3e', 4],
    ['4:spam', 6],
    ['0:', 2],
    ['le', 2],
    ['l4:spami42ee', 12],
    ['d3:cow3:moo4:spam4:eggse', 24],
    ['d1:ad1:bli1ei2eeee', 18],
  ])('skips %s', (text, length) => {
    expect(skipValue(bytes(text + 'XYZ'), 0, text.length + 3)).toBe(length);
  });

  it.each(['', 'i42', 'ie', 'i-e', '5:spam', 'l4:spam', 'd3:cowe', 'di1e3:mooe', 'x', '4spam', 'd'.repeat(40) + 'e'.repeat(40)])(
    'rejects %j',
    (text) => {
      expect(skipValue(bytes(text), 0, text.length)).toBe(-1);
    },
  );

  it('finds a key in a dictionary and nothing in other values', () => {
    const message = bytes('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
    const q = findKey(message, 0, message.length, bytes('q'));
    expect(String.fromCharCode(...message.subarray(stringStart(message, q, message.length), q + 6))).toBe('ping');
    expect(stringLength(message, q)).toBe(4);
    const args = findKey(message, 0, message.length, bytes('a'));
    expect(findKey(message, args, message.length, bytes('id'))).toBeGreaterThan(args);
    expect(findKey(message, 0, message.length, bytes('id'))).toBe(-1);
    expect(findKey(message, 0, message.length - 1, bytes('y'))).toBe(message.length - 4);
    expect(findKey(message, 0, message.length - 4, bytes('y'))).toBe(-1);
    expect(findKey(bytes('l1:qe'), 0, 5, bytes('q'))).toBe(-1);
  });

  it('never throws and stays within bounds on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(200), (data, cut) => {
        const end = Math.min(cut, data.length);
        const skipped = skipValue(data, 0, end);
        expect(skipped === -1 || (skipped > 0 && skipped <= end)).toBe(true);
        const found = findKey(data, 0, end, bytes('y'));
        expect(found === -1 || (found > 0 && found <= end)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});
