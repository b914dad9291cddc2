import { asciiBytes } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_NAME } from './detector.js';
import { DEFAULT_DOMAIN_LIST, type DomainList } from './domains.js';
import { ByteMatcher } from './matcher.js';

const SPACE = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
const HOST_HEADER = asciiBytes('host:');
/** Header line starts that matter: the Host header (id 0), and the empty line that ends the header block. */
const HOST_LINE = 0;
const headLines = new ByteMatcher([asciiBytes('\nhost:'), asciiBytes('\n\r\n'), asciiBytes('\n\n')], { caseInsensitive: true });
const MIN_METHOD = 3;
const MAX_METHOD = 7;
/** Per-flow state: the request head has begun (and whether the last segment ended a line). */
const HEAD_STARTED = 1;
const HEAD_AT_LINE_START = 2;
/** Segments of the request head searched for Host: an application may write the request line apart. */
const HOST_BUDGET = 3;

/** Whether buf[start, end) starts like a request line: an upper-case method token, then a space. */
function startsRequest(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end && i - start <= MAX_METHOD && buf[i] >= 0x41 && buf[i] <= 0x5a) i++;
  return i - start >= MIN_METHOD && i < end && buf[i] === SPACE;
}

/**
 * The Host header (RFC 9110 7.2) of the first HTTP/1.x request of a flow (its head may span
 * HOST_BUDGET segments) names a listed host. The value must end inside the segment, so a name cut at a segment boundary
 * never passes for a shorter listed one. Bannable: the other end is the named host (or an HTTP
 * proxy asked for it). Budget: HOST_BUDGET payload packets.
 */
export function createTrackerHostDetector(list: DomainList): Detector {
  return {
    name: 'tracker-host',
    transports: OVER_TCP,
    budget: HOST_BUDGET,
    stateBytes: 1,
    strength: STRENGTH_NAME,
    producerIsPeer: false,
    inspect(ctx: InspectContext): number {
      const pkt = ctx.pkt;
      const buf = pkt.buf;
      const start = pkt.payloadOff;
      const end = start + pkt.payloadLen;
      const at = ctx.stateOff;
      const head = ctx.state[at];
      if (ctx.dir !== 0) return head === 0 ? GIVE_UP : MORE;
      if (head === 0 && !startsRequest(buf, start, end)) return GIVE_UP;
      if ((head & HEAD_AT_LINE_START) !== 0) {
        // The previous segment ended a line, so this one starts the next (headLines wants the LF before it).
        if (startsHostLine(buf, start, end)) return hostValueListed(list, buf, start + HOST_HEADER.length, end) ? MATCH : GIVE_UP;
        if (buf[start] === CR || buf[start] === LF) return GIVE_UP;
      }
      const found = headLines.firstMatch(buf, start, end);
      if (found === HOST_LINE) return hostValueListed(list, buf, headLines.matchEnd, end) ? MATCH : GIVE_UP;
      if (found >= 0) return GIVE_UP;
      ctx.state[at] = HEAD_STARTED | (buf[end - 1] === LF ? HEAD_AT_LINE_START : 0);
      return MORE;
    },
  };
}

/** Whether buf[start, end) begins with "host:" in any case (the colon is unchanged by the case bit). */
function startsHostLine(buf: Uint8Array, start: number, end: number): boolean {
  if (end - start < HOST_HEADER.length) return false;
  for (let k = 0; k < HOST_HEADER.length; k++) if ((buf[start + k] | 0x20) !== HOST_HEADER[k]) return false;
  return true;
}

/** Whether the Host value at buf[at] (blanks, host, optional :port, then CR or LF inside the segment) is listed. */
function hostValueListed(list: DomainList, buf: Uint8Array, at: number, end: number): boolean {
  let i = at;
  while (i < end && (buf[i] === SPACE || buf[i] === TAB)) i++;
  const nameStart = i;
  while (i < end && buf[i] !== COLON && buf[i] !== CR && buf[i] !== LF && buf[i] !== SPACE && buf[i] !== TAB) i++;
  const nameEnd = i;
  while (i < end && buf[i] !== CR && buf[i] !== LF) i++;
  return i < end && list.matchDotted(buf, nameStart, nameEnd) >= 0;
}

/** Over DEFAULT_DOMAINS: the registry's. */
export const trackerHostDetector = createTrackerHostDetector(DEFAULT_DOMAIN_LIST);
