import { asciiBytes } from './bencode.js';
import { GIVE_UP, MATCH, MORE, OVER_TCP, OVER_UDP, type Detector, type InspectContext, STRENGTH_HEURISTIC } from './detector.js';
import { ByteMatcher } from './matcher.js';
import { IPPROTO_TCP } from '../packet/packet.js';

/**
 * Byte strings that only BitTorrent software writes, each long and structured enough (a bencoded
 * key with its length prefix and the first byte of its value, a URL parameter with its separator)
 * not to turn up by chance in other traffic. Found anywhere in the scanned bytes of a payload
 * packet (see hasSignature), in either direction.
 */
const ANY_DIRECTION: readonly string[] = [
  // BEP 3 peer wire handshake, wherever it starts (behind a proxy's or an obfuscator's prefix).
  '\x13BitTorrent protocol',
  // BEP 5 DHT (KRPC): the query and response bodies with their node id, and their typical arguments.
  'd1:ad2:id20:',
  '1:rd2:id20:',
  '9:info_hash20:',
  '6:target20:',
  '6:valuesl6:',
  '12:implied_porti',
  '17:sample_infohashes',
  // BEP 15 UDP tracker connect request: the protocol magic and action 0.
  '\x00\x00\x04\x17\x27\x10\x19\x80\x00\x00\x00\x00',
  // BEP 10 extension handshake and the extensions it names (BEP 9, 11, 21, 54, 55; libtorrent's lt_donthave).
  '11:ut_metadatai',
  '6:ut_pexi',
  '12:ut_holepunchi',
  '11:upload_onlyi',
  '12:lt_donthavei',
  '13:metadata_sizei',
  '6:yourip4:',
  '6:yourip16:',
  // BEP 9 metadata messages.
  'd8:msg_typei',
  // BEP 11 peer exchange.
  '7:added.f',
  '8:added6.f',
  // BEP 3 / 12 / 19 / 52 metainfo (.torrent files, fetched over HTTP or as metadata).
  'd8:announce',
  '13:announce-list',
  '13:creation datei',
  '12:piece lengthi',
  '4:infod',
  '8:url-listl',
  '12:piece layersd',
  '9:file treed',
  '11:pieces root',
  '12:meta versioni',
  'application/x-bittorrent',
  // BEP 3 / 23 / 48 HTTP tracker announces, scrapes and their bencoded answers.
  '?info_hash=',
  '&info_hash=',
  '8:intervali',
  '8:completei',
  '10:incompletei',
  '14:failure reason',
  'd5:filesd20:',
];

/**
 * Magnet links (BEP 9 v1 `urn:btih:`, BEP 52 v2 `urn:btmh:`) count only from the flow's initiator:
 * sent in a request, they hand a download to a BitTorrent client, its web UI, a seedbox or a
 * torrent-to-cloud service. A page that lists magnet links (a response) is an index site: browsing
 * one is web traffic, a policy choice for the domain lists, and the swarm traffic that follows a
 * click is caught by the protocol detectors.
 */
const FROM_INITIATOR_ONLY: readonly string[] = ['urn:btih:', 'urn:btmh:'];

const responderMatcher = new ByteMatcher(ANY_DIRECTION.map(asciiBytes));
const initiatorMatcher = new ByteMatcher([...ANY_DIRECTION, ...FROM_INITIATOR_ONLY].map(asciiBytes));

/**
 * Bytes of a payload packet scanned. Framings that put a BitTorrent message behind a prefix (a
 * proxy's header, a length, an obfuscator's few bytes) keep the prefix short; only HTTP puts
 * headers of any size before a body (a .torrent, a tracker's answer), and only HTTP messages start
 * with a method or a status line. Scanning every packet in full would cost random-looking traffic
 * (most of it) several times what the rest of the chain does.
 */
const PREFIX_SCAN_BYTES = 64;
const HTTP_SCAN_BYTES = 1500;
/** Payload packets of a TCP flow scanned at most (an initiator that writes its first message in pieces). */
const SIGNATURE_BUDGET = 4;
const SPACE = 0x20;
const HTTP_VERSION = asciiBytes('HTTP/');

/** Whether buf[start, end) starts like an HTTP message: an upper-case token and a space, or "HTTP/". */
function startsLikeHttp(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end && i - start < 8 && buf[i] >= 0x41 && buf[i] <= 0x5a) i++;
  if (i - start >= 3 && i < end && buf[i] === SPACE) return true;
  if (end - start < HTTP_VERSION.length) return false;
  for (let k = 0; k < HTTP_VERSION.length; k++) if (buf[start + k] !== HTTP_VERSION[k]) return false;
  return true;
}

/** Whether buf[start, end) holds a signature that counts in direction `dir` (0 from the initiator) where it is scanned. */
function hasSignature(buf: Uint8Array, start: number, end: number, dir: number): boolean {
  const matcher = dir === 0 ? initiatorMatcher : responderMatcher;
  const scanned = startsLikeHttp(buf, start, end) ? HTTP_SCAN_BYTES : PREFIX_SCAN_BYTES;
  return matcher.firstMatch(buf, start, Math.min(end, start + scanned)) >= 0;
}

/**
 * The catch-all: known BitTorrent byte strings (BEP 3, 5, 9, 10, 11, 12, 15, 19, 23, 52 keys and
 * markers, magnet links sent by the initiator) in the first PREFIX_SCAN_BYTES bytes of a payload
 * packet (HTTP_SCAN_BYTES of an HTTP message), in one Aho–Corasick pass. Where every BitTorrent
 * protocol says what it is: the first datagram of a UDP flow (each is a whole message), and over
 * TCP the first message each side sends, i.e. the payload packets up to and including the
 * responder's first (at most SIGNATURE_BUDGET). It runs late, after the exact protocol detectors,
 * to catch what they miss: messages behind a prefix or inside another framing, metainfo and
 * tracker traffic over HTTP. Bannable (the flow speaks BitTorrent), but it proves no peers: the
 * other end may be a tracker, a web server handing out a .torrent or a proxy.
 */
export const signatureDetector: Detector = {
  name: 'signature',
  transports: OVER_TCP | OVER_UDP,
  budget: SIGNATURE_BUDGET,
  stateBytes: 0,
  strength: STRENGTH_HEURISTIC,
  producerIsPeer: true,
  inspect(ctx: InspectContext): number {
    const pkt = ctx.pkt;
    if (hasSignature(pkt.buf, pkt.payloadOff, pkt.payloadOff + pkt.payloadLen, ctx.dir)) return MATCH;
    if (pkt.l4 !== IPPROTO_TCP) return GIVE_UP;
    // Both sides have spoken once the flow has more payload packets than this direction.
    return ctx.flowIndex > ctx.dirIndex ? GIVE_UP : MORE;
  },
};
