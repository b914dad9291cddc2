/**
 * HTTP/1.x messages read in place (RFC 9112, query strings per the URL standard): request target,
 * query parameters, percent-decoding and header fields located by offsets, header names compared
 * case-insensitively, nothing allocated. Shared by the detectors of BitTorrent over HTTP.
 * Every function reads only buf[from, end) and returns positions or small integers.
 */

import { asciiBytes } from './bencode.js';

export const GET_PREFIX = asciiBytes('GET ');
export const HTTP1_PREFIX = asciiBytes('HTTP/1.');

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const HASH = 0x23;
const PERCENT = 0x25;
const AMPERSAND = 0x26;
const SLASH = 0x2f;
const COLON = 0x3a;
const EQUALS = 0x3d;
const QUESTION = 0x3f;
const TAB = 0x09;

/** Whether buf[at, end) starts with the bytes of `prefix`. */
export function startsWith(buf: Uint8Array, at: number, end: number, prefix: Uint8Array): boolean {
  if (end - at < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[at + i] !== prefix[i]) return false;
  return true;
}

/** Whether `byte` ends a request target: space, a control byte or DEL. */
function endsTarget(byte: number): boolean {
  return byte <= SP || byte === 0x7f;
}

/**
 * Position of the '?' that starts the query of the request target at `target`, -1 when the
 * target ends without one, -2 when `end` comes first.
 */
export function queryMark(buf: Uint8Array, target: number, end: number): number {
  for (let at = target; at < end; at++) {
    const byte = buf[at];
    if (byte === QUESTION) return at;
    if (endsTarget(byte) || byte === HASH) return -1;
  }
  return -2;
}

/** Start of the last path segment of the target buf[target, mark): just past its last '/'. */
export function lastSegmentStart(buf: Uint8Array, target: number, mark: number): number {
  for (let at = mark - 1; at >= target; at--) if (buf[at] === SLASH) return at + 1;
  return target;
}

/**
 * End of the query parameter at `at`: the position of the '&' after it, of the byte that ends the
 * target (space, CR, LF, '#'), or `end` when the parameter runs to the end of the bytes.
 */
export function parameterEnd(buf: Uint8Array, at: number, end: number): number {
  for (; at < end; at++) {
    const byte = buf[at];
    if (byte === AMPERSAND || byte === HASH || endsTarget(byte)) return at;
  }
  return end;
}

/** Whether the parameter ending at `paramEnd` (from parameterEnd) is followed by another one. */
export function anotherParameterFollows(buf: Uint8Array, paramEnd: number, end: number): boolean {
  return paramEnd < end && buf[paramEnd] === AMPERSAND;
}

/** Position of the '=' between a parameter's name and value in buf[at, paramEnd), or paramEnd. */
export function nameEnd(buf: Uint8Array, at: number, paramEnd: number): number {
  for (; at < paramEnd; at++) if (buf[at] === EQUALS) return at;
  return paramEnd;
}

/** Value of a hex digit, -1 for any other byte. */
export function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
}

/**
 * Percent-decodes the value buf[from, to) into out (as much as fits) and returns its decoded
 * length, or -1 when a '%' is not followed by two hex digits. '+' stays '+': in a tracker query
 * it only ever stands for itself or a space, one byte either way.
 */
export function percentDecode(buf: Uint8Array, from: number, to: number, out: Uint8Array): number {
  let length = 0;
  for (let at = from; at < to; at++) {
    let byte = buf[at];
    if (byte === PERCENT) {
      if (to - at < 3) return -1;
      const high = hexValue(buf[at + 1]);
      const low = hexValue(buf[at + 2]);
      if (high < 0 || low < 0) return -1;
      byte = (high << 4) | low;
      at += 2;
    }
    if (length < out.length) out[length] = byte;
    length++;
  }
  return length;
}

/** Whether buf[from, to) is 1 to `maxDigits` decimal digits. */
export function isDecimal(buf: Uint8Array, from: number, to: number, maxDigits: number): boolean {
  if (to <= from || to - from > maxDigits) return false;
  for (let at = from; at < to; at++) if (buf[at] < 0x30 || buf[at] > 0x39) return false;
  return true;
}

/** Value of the decimal digits buf[from, to), which isDecimal accepted with at most 9 digits. */
export function decimalValue(buf: Uint8Array, from: number, to: number): number {
  let value = 0;
  for (let at = from; at < to; at++) value = value * 10 + buf[at] - 0x30;
  return value;
}

/** Position just past the LF that ends the line at `at`, or -1 when `end` comes first. */
export function nextLine(buf: Uint8Array, at: number, end: number): number {
  for (; at < end; at++) if (buf[at] === LF) return at + 1;
  return -1;
}

/** Whether the line at `at` is the empty line that ends a header block. */
function isEmptyLine(buf: Uint8Array, at: number, end: number): boolean {
  return at < end && (buf[at] === LF || (buf[at] === CR && at + 1 < end && buf[at + 1] === LF));
}

/** Header lookups: the header block ended without the field. */
export const HEADER_ABSENT = -1;
/** Header lookups: the bytes ended inside the header block. */
export const HEADER_CUT = -2;

/**
 * Start of the value (past the colon and blanks) of header field `name` (lowercase ASCII, no
 * colon) among the header lines from `at` (the start of a line), HEADER_ABSENT or HEADER_CUT.
 */
export function findHeader(buf: Uint8Array, at: number, end: number, name: Uint8Array): number {
  while (at < end) {
    if (isEmptyLine(buf, at, end)) return HEADER_ABSENT;
    if (headerNameIs(buf, at, end, name)) {
      let value = at + name.length + 1;
      while (value < end && (buf[value] === SP || buf[value] === TAB)) value++;
      return value < end ? value : HEADER_CUT;
    }
    const next = nextLine(buf, at, end);
    if (next < 0) return HEADER_CUT;
    at = next;
  }
  return HEADER_CUT;
}

/** Position of the first byte after the header block whose lines start at `at`, or HEADER_CUT. */
export function headerBlockEnd(buf: Uint8Array, at: number, end: number): number {
  while (at < end) {
    if (isEmptyLine(buf, at, end)) return buf[at] === CR ? at + 2 : at + 1;
    const next = nextLine(buf, at, end);
    if (next < 0) return HEADER_CUT;
    at = next;
  }
  return HEADER_CUT;
}

/** Whether the line at `at` is header field `name` (lowercase ASCII), compared case-insensitively. */
function headerNameIs(buf: Uint8Array, at: number, end: number, name: Uint8Array): boolean {
  if (end - at <= name.length) return false;
  for (let i = 0; i < name.length; i++) {
    const byte = buf[at + i];
    const lower = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
    if (lower !== name[i]) return false;
  }
  return buf[at + name.length] === COLON;
}
