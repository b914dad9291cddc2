import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PEER_ID_CLIENT_NAMES, peerIdClient, peerIdClientName, UNKNOWN_CLIENT } from '../../src/detect/peer-id.js';
import { ascii, concat } from '../helpers/frames.js';

/** A 20-byte peer id: the prefix, then random-looking filler. */
function peerId(prefix: string | Uint8Array): Uint8Array {
  const head = typeof prefix === 'string' ? ascii(prefix) : prefix;
  const tail = Uint8Array.from({ length: 20 - head.length }, (_, i) => (0x9e + 37 * i) & 0xff);
  return concat(head, tail);
}

function clientOf(id: Uint8Array): string {
  return peerIdClientName(peerIdClient(id, 0, id.length));
}

/** Deterministic bytes for rate measurements (xorshift32), so a failure reproduces. */
function randomBytes(count: number, seed: number, printableOnly: boolean): Uint8Array {
  const out = new Uint8Array(count);
  let x = seed;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = printableOnly ? 0x20 + ((x >>> 0) % 95) : x & 0xff;
  }
  return out;
}

describe('peer id client database (BEP 20)', () => {
  it.each([
    // Seen on the wire in this repository's lab captures (fixtures/bt-http).
    ['-TR3000-20n4fwsq4cx1', 'Transmission'],
    ['-qB4520-SjzaVDCya7Nx', 'qBittorrent'],
    ['-LT2080-(RFZA~zYvkfR', 'libtorrent (Rasterbar)'],
    ['-lt0D80-', 'rTorrent (libTorrent Rakshasa)'],
    ['-DE203s-Z8aylVn0G5us', 'Deluge'],
    ['-CD0303-', 'Enhanced CTorrent'],
    ['A2-1-36-0-K', 'aria2'],
    // BEP 20 and the client lists.
    ['-TR300Z-', 'Transmission'],
    ['-TR0072-', 'Transmission'],
    ['-qB4650-', 'qBittorrent'],
    ['-LT20A0-', 'libtorrent (Rasterbar)'],
    ['-DE13F0-', 'Deluge'],
    ['-AZ5750-', 'Azureus/Vuze'],
    ['-AZ2060-', 'Azureus/Vuze'],
    ['-UT355W-', 'µTorrent'],
    ['-UT2210-', 'µTorrent'],
    ['-UT3510B', 'µTorrent'],
    ['-UT360B-', 'µTorrent'],
    ['-BT7a5W-', 'BitTorrent'],
    ['-UM1870-', 'µTorrent Mac'],
    ['-BC0200-', 'BitComet'],
    ['-BI3710-', 'BiglyBT'],
    ['-KT4130-', 'KTorrent'],
    ['-FG0190-', 'FlashGet'],
    ['-XL0012-', 'Xunlei'],
    ['-SD0100-', 'Xunlei'],
    ['-WW0105-', 'WebTorrent'],
    ['-A~0123-', 'Ares'],
    ['-ML2.7.2-', 'MLDonkey'],
    ['M4-3-6--', 'Mainline'],
    ['M4-20-8-', 'Mainline'],
    ['M7-10-1-', 'Mainline'],
    ['Q1-0-0--', 'Queen Bee'],
    ['S58B-----', 'Shad0w'],
    ['T03I-----', 'BitTornado'],
    ['A310-----', 'ABC'],
    ['O0123----', 'Osprey Permaseed'],
    ['Q1234----', 'BTQueue'],
    ['R34------', 'Tribler'],
    ['XBT054d-', 'XBT Client'],
    ['TIX0283-', 'Tixati'],
    ['AZ2500BT', 'BitTyrant'],
    ['DNA010203', 'BitTorrent DNA'],
    ['btpd/0.16', 'BT Protocol Daemon'],
  ])('recognises %s as %s', (prefix, name) => {
    expect(clientOf(peerId(prefix))).toBe(name);
  });

  it.each([
    ['exbc with two raw version bytes', concat(ascii('exbc'), [0, 0x2a], ascii('LORD'))],
    ['FUTB (Solidox mod)', concat(ascii('FUTB'), [0, 0x2a])],
  ])('recognises %s', (_name, prefix) => {
    expect(peerIdClient(peerId(prefix), 0, 20)).not.toBe(UNKNOWN_CLIENT);
  });

  it.each([
    ['an unknown two-letter code', '-YY1234-'],
    ['a letter where Transmission writes digits', '-TR30a0-'],
    ['a letter where Azureus writes digits', '-AZ57x0-'],
    ['no dash after the version', '-qB4650x'],
    ['a space in the version', '-LT20 0-'],
    ['a Mainline version without dash padding', 'M4-3-6x-'],
    ['a Mainline part of four digits', 'M1000-1-1'],
    ['Shad0w style with a byte after the padding', 'S58B--x--'],
    ['Shad0w style without the trailing dashes', 'T03I-x---'],
    ['an aria2 prefix without version', 'A2-x-36-0-'],
    ['all dashes', '--------------------'],
    ['a User-Agent', 'Mozilla/5.0 (X11; L'],
    ['a request line', 'GET / HTTP/1.1\r\n'],
  ])('does not recognise %s', (_name, prefix) => {
    expect(clientOf(peerId(prefix))).toBe('unknown');
  });

  it('does not recognise twenty zero bytes', () => {
    expect(peerIdClient(new Uint8Array(20), 0, 20)).toBe(UNKNOWN_CLIENT);
  });

  it('reads the id where it lies and never past `end`', () => {
    const buf = concat(ascii('peer_id='), ascii('-TR3000-'), ascii('abcdefghijkl'));
    expect(clientOf(buf)).toBe('unknown');
    expect(peerIdClientName(peerIdClient(buf, 8, buf.length))).toBe('Transmission');
    // The prefix needs 8 bytes: cut before the closing dash, it is not recognised.
    expect(peerIdClient(buf, 8, 15)).toBe(UNKNOWN_CLIENT);
    expect(peerIdClient(buf, 8, 16)).not.toBe(UNKNOWN_CLIENT);
  });

  it('knows more than 100 clients, and names each code', () => {
    expect(PEER_ID_CLIENT_NAMES.length).toBeGreaterThan(100);
    expect(PEER_ID_CLIENT_NAMES.length).toBeLessThanOrEqual(256);
    expect(peerIdClientName(0)).toBe('unknown');
    expect(peerIdClientName(PEER_ID_CLIENT_NAMES.length)).toBe('unknown');
    expect(new Set(PEER_ID_CLIENT_NAMES).size).toBe(PEER_ID_CLIENT_NAMES.length);
  });

  it('never reads outside [off, end) and always returns a code with a name', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), fc.nat(4), fc.nat(4), (bytes, lead, trail) => {
        const buf = new Uint8Array(lead + bytes.length + trail).fill(0x2d);
        buf.set(bytes, lead);
        const reads: number[] = [];
        const guarded = new Proxy(buf, {
          get(target, property) {
            if (typeof property === 'string' && /^\d+$/.test(property)) reads.push(Number(property));
            return Reflect.get(target, property, target) as unknown;
          },
        });
        const code = peerIdClient(guarded, lead, lead + bytes.length);
        expect(reads.every((index) => index >= lead && index < lead + bytes.length)).toBe(true);
        expect(Number.isInteger(code) && code >= 0 && code < PEER_ID_CLIENT_NAMES.length).toBe(true);
      }),
    );
  });

  // Smaller runs of the measurement behind the rates in the detector's documentation (10^8 samples
  // each): they bound the same rates, so a loosened version rule fails here.
  it('matches random 20-byte ids less than once in 10^6', () => {
    const bytes = randomBytes(20 * 1_000_000, 0x2545f491, false);
    let matches = 0;
    for (let off = 0; off < bytes.length; off += 20) if (peerIdClient(bytes, off, off + 20) !== UNKNOWN_CLIENT) matches++;
    expect(matches).toBeLessThanOrEqual(1);
  });

  it('matches random printable ASCII ids less than 5 times in 10^6', () => {
    const bytes = randomBytes(20 * 1_000_000, 0x1b873593, true);
    let matches = 0;
    for (let off = 0; off < bytes.length; off += 20) if (peerIdClient(bytes, off, off + 20) !== UNKNOWN_CLIENT) matches++;
    expect(matches).toBeLessThanOrEqual(5);
  });
});
