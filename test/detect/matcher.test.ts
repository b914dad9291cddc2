import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteMatcher, MatchList, START_STATE } from '../../src/detect/matcher.js';
import { ascii } from '../helpers/frames.js';

/** Every (id, end) pair, by end, longest first at each end: what scan must report. */
function naiveMatches(patterns: Uint8Array[], text: Uint8Array, fold: boolean): [number, number][] {
  const norm = (b: number) => (fold && b >= 0x41 && b <= 0x5a ? b | 0x20 : b);
  const found: [number, number][] = [];
  for (let end = 1; end <= text.length; end++) {
    const here: [number, number][] = [];
    patterns.forEach((p, id) => {
      if (p.length > end) return;
      for (let i = 0; i < p.length; i++) if (norm(p[i]) !== norm(text[end - p.length + i])) return;
      // A repeated pattern answers with its first id.
      const first = patterns.findIndex((q) => q.length === p.length && q.every((b, i) => norm(b) === norm(p[i])));
      if (first === id) here.push([id, end]);
    });
    here.sort((a, b) => patterns[b[0]].length - patterns[a[0]].length);
    found.push(...here);
  }
  return found;
}

function scanAll(matcher: ByteMatcher, text: Uint8Array, capacity = 4096): [number, number][] {
  const out = new MatchList(capacity);
  const count = matcher.scan(text, 0, text.length, out);
  return Array.from({ length: count }, (_, i) => [out.ids[i], out.ends[i]] as [number, number]);
}

describe('ByteMatcher (Aho–Corasick)', () => {
  const classic = ['he', 'she', 'his', 'hers'].map(ascii);

  it('finds every occurrence, overlapping ones included, by end offset', () => {
    const matcher = new ByteMatcher(classic);
    expect(scanAll(matcher, ascii('ushers'))).toEqual([[1, 4], [0, 4], [3, 6]]);
  });

  it('firstMatch returns the match that ends first, and where it ends', () => {
    const matcher = new ByteMatcher(classic);
    const text = ascii('xxushers');
    expect(matcher.firstMatch(text, 0, text.length)).toBe(1);
    expect(matcher.matchEnd).toBe(6);
    expect(matcher.firstMatch(text, 0, 5)).toBe(-1);
    expect(matcher.firstMatch(text, 6, text.length)).toBe(-1);
  });

  it('prefers the longest of several patterns ending at the same byte', () => {
    const matcher = new ByteMatcher(['com', '.com', 'x.com'].map(ascii));
    const text = ascii('ax.com');
    expect(matcher.firstMatch(text, 0, text.length)).toBe(2);
  });

  it('reads only buf[start, end)', () => {
    const matcher = new ByteMatcher([ascii('abc')]);
    const text = ascii('abcabc');
    expect(matcher.firstMatch(text, 1, 6)).toBe(0);
    expect(matcher.matchEnd).toBe(6);
    expect(matcher.firstMatch(text, 1, 5)).toBe(-1);
  });

  it('folds ASCII case only when asked, in patterns and input alike', () => {
    const folding = new ByteMatcher([ascii('Host:')], { caseInsensitive: true });
    const exact = new ByteMatcher([ascii('Host:')]);
    for (const text of ['HOST:', 'host:', 'hOsT:']) {
      expect(folding.firstMatch(ascii(text), 0, text.length)).toBe(0);
      expect(exact.firstMatch(ascii(text), 0, text.length)).toBe(-1);
    }
    // Folding is ASCII letters only: 0xc8 and 0xe8 (È/è in Latin-1) stay distinct.
    const latin = new ByteMatcher([Uint8Array.of(0xe8)], { caseInsensitive: true });
    expect(latin.firstMatch(Uint8Array.of(0xc8), 0, 1)).toBe(-1);
  });

  it('matches across chunks when the caller keeps the state', () => {
    const matcher = new ByteMatcher([ascii('announce')]);
    let state = START_STATE;
    let found = -1;
    for (const chunk of ['xx ann', 'oun', 'ce yy']) {
      for (const byte of ascii(chunk)) {
        state = matcher.next(state, byte);
        if (matcher.matchAt(state) >= 0) found = matcher.matchAt(state);
      }
    }
    expect(found).toBe(0);
  });

  it('stops at the capacity of the match list', () => {
    const matcher = new ByteMatcher([ascii('a')]);
    const out = new MatchList(3);
    expect(matcher.scan(ascii('aaaaa'), 0, 5, out)).toBe(3);
    expect(out.count).toBe(3);
  });

  it('handles every byte value, 0x00 and 0xff included', () => {
    const matcher = new ByteMatcher([Uint8Array.of(0, 0xff, 0), Uint8Array.of(0xff)]);
    expect(scanAll(matcher, Uint8Array.of(1, 0, 0xff, 0, 0xff))).toEqual([[1, 3], [0, 4], [1, 5]]);
  });

  it('refuses an empty pattern', () => {
    expect(() => new ByteMatcher([ascii('a'), new Uint8Array(0)])).toThrow(RangeError);
  });

  it('agrees with a naive matcher on arbitrary patterns and text', () => {
    // A small alphabet makes overlaps, shared prefixes and repeated patterns likely.
    const byte = fc.constantFrom(0x41, 0x61, 0x62, 0x42, 0x2e, 0x00, 0xff);
    const bytes = (min: number, max: number) => fc.array(byte, { minLength: min, maxLength: max }).map((a) => Uint8Array.from(a));
    fc.assert(
      fc.property(fc.array(bytes(1, 5), { minLength: 1, maxLength: 8 }), bytes(0, 40), fc.boolean(), (patterns, text, fold) => {
        const matcher = new ByteMatcher(patterns, { caseInsensitive: fold });
        const expected = naiveMatches(patterns, text, fold);
        expect(scanAll(matcher, text)).toEqual(expected);
        const first = matcher.firstMatch(text, 0, text.length);
        if (expected.length === 0) expect(first).toBe(-1);
        else {
          expect(first).toBe(expected[0][0]);
          expect(matcher.matchEnd).toBe(expected[0][1]);
        }
      }),
      { numRuns: 500 },
    );
  });
});
