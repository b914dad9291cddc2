/**
 * Bencoding (BEP 3) walked in place: positions into the caller's bytes, no decoded objects, no
 * strings. Every function takes the end of the readable range and returns -1 for anything that is
 * not well-formed bencoding there, so arbitrary bytes are safe input.
 */

const MAX_DEPTH = 32;
const D = 0x64; // 'd'
const L = 0x6c; // 'l'
const I = 0x69; // 'i'
const E = 0x65; // 'e'
const COLON = 0x3a;
const MINUS = 0x2d;

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/** Position just past the value that starts at `pos`, or -1. */
export function skipValue(buf: Uint8Array, pos: number, end: number): number {
  return skipAt(buf, pos, end, 0);
}

function skipAt(buf: Uint8Array, pos: number, end: number, depth: number): number {
  if (pos >= end || depth > MAX_DEPTH) return -1;
  const first = buf[pos];
  if (isDigit(first)) return skipString(buf, pos, end);
  if (first === I) {
    let at = pos + 1;
    if (at < end && buf[at] === MINUS) at++;
    const digits = at;
    while (at < end && isDigit(buf[at])) at++;
    return at > digits && at < end && buf[at] === E ? at + 1 : -1;
  }
  if (first === L || first === D) {
    let at = pos + 1;
    while (at < end && buf[at] !== E) {
      // Dictionary keys are strings; values and list items may be anything.
      if (first === D) {
        at = skipString(buf, at, end);
        if (at < 0) return -1;
      }
      at = skipAt(buf, at, end, depth + 1);
      if (at < 0) return -1;
    }
    return at < end ? at + 1 : -1;
  }
  return -1;
}

/** Position just past the byte string at `pos` ("<length>:<bytes>"), or -1. */
export function skipString(buf: Uint8Array, pos: number, end: number): number {
  const start = stringStart(buf, pos, end);
  return start < 0 ? -1 : start + stringLength(buf, pos);
}

/** Position of the first content byte of the byte string at `pos`, or -1 (also when it overruns `end`). */
export function stringStart(buf: Uint8Array, pos: number, end: number): number {
  let at = pos;
  let length = 0;
  while (at < end && isDigit(buf[at]) && at - pos < 8) {
    length = length * 10 + buf[at] - 0x30;
    at++;
  }
  if (at === pos || at >= end || buf[at] !== COLON) return -1;
  return at + 1 + length <= end ? at + 1 : -1;
}

/** Length of the byte string at `pos`, which stringStart accepted. */
export function stringLength(buf: Uint8Array, pos: number): number {
  let length = 0;
  for (let at = pos; isDigit(buf[at]); at++) length = length * 10 + buf[at] - 0x30;
  return length;
}

/**
 * Position of the value stored under `key` in the dictionary at `dictPos`, or -1 when the
 * dictionary has no such key or is malformed before it. What follows the key is not checked, so a
 * message cut short after the key still answers. `key` is the raw key bytes (no length prefix).
 */
export function findKey(buf: Uint8Array, dictPos: number, end: number, key: Uint8Array): number {
  if (dictPos >= end || buf[dictPos] !== D) return -1;
  let at = dictPos + 1;
  while (at < end && buf[at] !== E) {
    const keyStart = stringStart(buf, at, end);
    if (keyStart < 0) return -1;
    const keyEnd = keyStart + stringLength(buf, at);
    if (bytesEqual(buf, keyStart, keyEnd, key)) return keyEnd < end ? keyEnd : -1;
    at = skipAt(buf, keyEnd, end, 1);
    if (at < 0) return -1;
  }
  return -1;
}

/** Whether buf[start, end) holds exactly the bytes of `expected`. */
export function bytesEqual(buf: Uint8Array, start: number, end: number, expected: Uint8Array): boolean {
  if (end - start !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) if (buf[start + i] !== expected[i]) return false;
  return true;
}

/** ASCII bytes of a constant, for keys and signatures built once at load time. */
export function asciiBytes(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}
