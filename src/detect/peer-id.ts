/**
 * BitTorrent client identification from the 20-byte peer id (BEP 20 and the client lists of
 * libtorrent, Transmission and Vuze): a database other detectors consult, not a detector.
 *
 * `peerIdClient` reads only the identifying prefix (at most 15 bytes) and returns a small client
 * code, 0 when no known convention matches; `peerIdClientName` turns a code into a name for logs.
 * The version characters are checked as strictly as each client writes them, so that random bytes
 * and random text rarely pass for a client: the rest of a peer id is random and proves nothing.
 * Measured on uniform random ids: none of 10^8 random 20-byte ids matched (about 1e-10 by the
 * tables, mostly the BitComet prefixes), 31 of 10^9 random printable-ASCII ids did (3.1e-8).
 */

import { asciiBytes, bytesEqual } from './bencode.js';

/** Character classes of a byte, as bits. */
const DIGIT = 1;
const HEX_UPPER = 2; // A-F
const HEX_LOWER = 4; // a-f
const UPPER_REST = 8; // G-Z
const LOWER_REST = 16; // g-z
const DASH = 32;
const DOT = 64;
const CONTROL = 128; // 0x00-0x1f
const OTHER = 256;

const CLASS_OF = new Uint16Array(256).fill(OTHER);
CLASS_OF.fill(CONTROL, 0, 0x20);
for (let c = 0x30; c <= 0x39; c++) CLASS_OF[c] = DIGIT;
for (let c = 0x41; c <= 0x5a; c++) CLASS_OF[c] = c <= 0x46 ? HEX_UPPER : UPPER_REST;
for (let c = 0x61; c <= 0x7a; c++) CLASS_OF[c] = c <= 0x66 ? HEX_LOWER : LOWER_REST;
CLASS_OF[0x2d] = DASH;
CLASS_OF[0x2e] = DOT;

/** Sets of classes one version position accepts. */
const N = DIGIT;
const UPPER_ALNUM = DIGIT | HEX_UPPER | UPPER_REST;
const HEX = DIGIT | HEX_UPPER | HEX_LOWER;
const ALNUM = DIGIT | HEX_UPPER | HEX_LOWER | UPPER_REST | LOWER_REST;
const ALPHA = HEX_UPPER | HEX_LOWER | UPPER_REST | LOWER_REST;
const ANY = 0x1ff;

/**
 * How a client writes the four version characters of `-XXvvvv-` and the byte after them
 * (positions 3 to 7 of the peer id).
 */
const AZ_STYLES = {
  /** Plain digits: -AZ5750-, -BC0200-. */
  digits: [N, N, N, N, DASH],
  /**
   * libtorrent's fingerprint, each part a digit or A-Z for 10-35: -LT20A0-, -qB4650-, -lt0D80-.
   * Also assumed for clients whose scheme is not documented (many are built on libtorrent).
   */
  libtorrent: [UPPER_ALNUM, UPPER_ALNUM, UPPER_ALNUM, UPPER_ALNUM, DASH],
  /** Three digits and a digit or a letter tag (Z/X dev, B beta): -TR3000-, -TR300Z-. */
  transmission: [N, N, N, UPPER_ALNUM, DASH],
  /** Hex digits and a mnemonic letter (B beta...): -UT355W-, -BT7a5W-. */
  utorrent: [HEX, HEX, HEX, ALNUM, DASH],
  /** A two-digit third part pushes the mnemonic over the dash: -UT3510B. */
  utorrentLong: [HEX, HEX, N, N, ALPHA],
  /** Deluge 1 wrote libtorrent's digits (-DE13F0-), Deluge 2 a release letter (-DE203s-). */
  deluge: [N, N, UPPER_ALNUM, ALNUM, DASH],
  /** Folx puts two raw bytes after its version digits. */
  folx: [N, N, ANY, ANY, DASH],
} as const;
type AzStyle = keyof typeof AZ_STYLES;

/**
 * Azureus-style clients (`-XXvvvv-`): BEP 20 and the lists of libtorrent, Transmission and Vuze.
 * A second style is an alternative form the same client also writes.
 */
const AZUREUS_CLIENTS: readonly [code: string, name: string, style: AzStyle, alternative?: AzStyle][] = [
  ['7T', 'aTorrent', 'libtorrent'],
  ['AB', 'AnyEvent::BitTorrent', 'libtorrent'],
  ['AG', 'Ares', 'libtorrent'],
  ['A~', 'Ares', 'libtorrent'],
  ['AN', 'Ares', 'libtorrent'],
  ['AR', 'Arctic Torrent', 'libtorrent'],
  ['AT', 'Artemis', 'libtorrent'],
  ['AV', 'Avicora', 'libtorrent'],
  ['AX', 'BitPump', 'digits'],
  ['AZ', 'Azureus/Vuze', 'digits'],
  ['BB', 'BitBuddy', 'libtorrent'],
  ['BC', 'BitComet', 'digits'],
  ['BE', 'BitTorrent SDK', 'libtorrent'],
  ['BF', 'Bitflu', 'libtorrent'],
  ['BG', 'BTG', 'libtorrent'],
  ['BH', 'BitZilla', 'libtorrent'],
  ['BI', 'BiglyBT', 'digits'],
  ['BL', 'BitLord', 'libtorrent'],
  ['BM', 'BitMagnet', 'libtorrent'],
  ['BN', 'Baidu Netdisk', 'libtorrent'],
  ['BP', 'BitTorrent Pro', 'libtorrent'],
  ['BR', 'BitRocket', 'libtorrent'],
  ['BS', 'BTSlave', 'libtorrent'],
  ['BT', 'BitTorrent', 'utorrent', 'utorrentLong'],
  ['BW', 'BitWombat', 'libtorrent'],
  ['BX', 'BittorrentX', 'libtorrent'],
  ['CB', 'Shareaza Plus', 'libtorrent'],
  ['CD', 'Enhanced CTorrent', 'digits'],
  ['CT', 'CTorrent', 'libtorrent'],
  ['DE', 'Deluge', 'deluge'],
  ['DP', 'Propagate Data Client', 'libtorrent'],
  ['EB', 'EBit', 'libtorrent'],
  ['ES', 'Electric Sheep', 'libtorrent'],
  ['FC', 'FileCroc', 'libtorrent'],
  ['FD', 'Free Download Manager', 'libtorrent'],
  ['FG', 'FlashGet', 'digits'],
  ['FL', 'Folx', 'folx'],
  ['FT', 'FoxTorrent', 'libtorrent'],
  ['FW', 'FrostWire', 'libtorrent'],
  ['FX', 'Freebox BitTorrent', 'libtorrent'],
  ['GR', 'GetRight', 'libtorrent'],
  ['GS', 'GSTorrent', 'libtorrent'],
  ['HK', 'Hekate', 'libtorrent'],
  ['HL', 'Halite', 'libtorrent'],
  ['HN', 'Hydranode', 'libtorrent'],
  ['IL', 'iLivid', 'libtorrent'],
  ['KC', 'Koinonein', 'libtorrent'],
  ['KG', 'KGet', 'libtorrent'],
  ['KT', 'KTorrent', 'libtorrent'],
  ['LC', 'LeechCraft', 'libtorrent'],
  ['LH', 'LH-ABC', 'libtorrent'],
  ['LK', 'Linkage', 'libtorrent'],
  ['LP', 'Lphant', 'digits'],
  ['LT', 'libtorrent (Rasterbar)', 'libtorrent'],
  ['LW', 'LimeWire', 'libtorrent'],
  ['MG', 'MediaGet', 'libtorrent'],
  ['MK', 'Meerkat', 'libtorrent'],
  ['MO', 'MonoTorrent', 'libtorrent'],
  ['MP', 'MooPolice', 'libtorrent'],
  ['MR', 'Miro', 'libtorrent'],
  ['MT', 'Moonlight Torrent', 'libtorrent'],
  ['NE', 'BT Next Evolution', 'libtorrent'],
  ['NX', 'Net Transport', 'libtorrent'],
  ['OS', 'OneSwarm', 'digits'],
  ['OT', 'OmegaTorrent', 'libtorrent'],
  ['PC', 'CacheLogic', 'libtorrent'],
  ['PD', 'Pando', 'libtorrent'],
  ['PE', 'PeerProject', 'libtorrent'],
  ['PI', 'PicoTorrent', 'libtorrent'],
  ['PT', 'Popcorn Time', 'libtorrent'],
  ['QD', 'QQDownload', 'libtorrent'],
  ['QT', 'Qt 4 Torrent example', 'libtorrent'],
  ['RS', 'Rufus', 'libtorrent'],
  ['RT', 'Retriever', 'libtorrent'],
  ['RZ', 'RezTorrent', 'libtorrent'],
  ['S~', 'Shareaza', 'libtorrent'],
  ['SB', 'Swiftbit', 'libtorrent'],
  ['SD', 'Xunlei', 'libtorrent'],
  ['SG', 'GS Torrent', 'libtorrent'],
  ['SK', 'spark', 'libtorrent'],
  ['SM', 'SoMud', 'libtorrent'],
  ['SN', 'ShareNet', 'libtorrent'],
  ['SP', 'BitSpirit', 'libtorrent'],
  ['SS', 'SwarmScope', 'libtorrent'],
  ['ST', 'SymTorrent', 'libtorrent'],
  ['SZ', 'Shareaza', 'libtorrent'],
  ['TB', 'Torch', 'libtorrent'],
  ['TL', 'Tribler', 'libtorrent'],
  ['TN', 'Torrent.NET', 'libtorrent'],
  ['TR', 'Transmission', 'transmission'],
  ['TS', 'TorrentStorm', 'libtorrent'],
  ['TT', 'TuoTu', 'libtorrent'],
  ['UE', 'µTorrent Embedded', 'utorrent', 'utorrentLong'],
  ['UL', 'uLeecher!', 'libtorrent'],
  ['UM', 'µTorrent Mac', 'utorrent', 'utorrentLong'],
  ['UT', 'µTorrent', 'utorrent', 'utorrentLong'],
  ['UW', 'µTorrent Web', 'utorrent', 'utorrentLong'],
  ['VG', 'Vagaa', 'libtorrent'],
  ['WD', 'WebTorrent Desktop', 'digits'],
  ['WT', 'BitLet', 'libtorrent'],
  ['WW', 'WebTorrent', 'digits'],
  ['WY', 'FireTorrent', 'libtorrent'],
  ['XC', 'Xtorrent', 'libtorrent'],
  ['XF', 'Xfplay', 'libtorrent'],
  ['XL', 'Xunlei', 'libtorrent'],
  ['XS', 'XSwifter', 'libtorrent'],
  ['XT', 'XanTorrent', 'libtorrent'],
  ['XX', 'Xtorrent', 'libtorrent'],
  ['ZO', 'Zona', 'libtorrent'],
  ['ZT', 'ZipTorrent', 'libtorrent'],
  ['bk', 'BitKitten', 'libtorrent'],
  ['lt', 'rTorrent (libTorrent Rakshasa)', 'libtorrent'],
  ['pb', 'pbTorrent', 'libtorrent'],
  ['pX', 'pHoeniX', 'libtorrent'],
  ['qB', 'qBittorrent', 'libtorrent'],
  ['st', 'SharkTorrent', 'libtorrent'],
];

/**
 * Shad0w's style (BEP 20): one letter, up to five version characters padded with dashes, then
 * "---": `S58B-----`, `T03I-----`. The characters encode 0-63 as 0-9A-Za-z.-; versions are small,
 * so a digit (the major version) comes first and the rest are digits, A-Z or '.'.
 */
const SHADOW_CLIENTS: readonly [letter: string, name: string][] = [
  ['A', 'ABC'],
  ['O', 'Osprey Permaseed'],
  ['Q', 'BTQueue'],
  ['R', 'Tribler'],
  ['S', 'Shad0w'],
  ['T', 'BitTornado'],
  ['U', 'UPnP NAT BitTorrent'],
];

/**
 * Clients with a prefix of their own: the literal text, then one class set per version byte.
 * Checked before Shad0w's style, whose letters some of them start with.
 */
const PREFIX_CLIENTS: readonly [prefix: string, version: readonly number[], name: string][] = [
  ['XBT', [N, N, N, ALNUM], 'XBT Client'],
  // BitComet before 0.59, its mods and BitLord: the version as two raw bytes, major 0.
  ['exbc', [CONTROL, ANY], 'BitComet'],
  ['FUTB', [CONTROL, ANY], 'BitComet'],
  ['xUTB', [CONTROL, ANY], 'BitComet'],
  ['AZ2500BT', [], 'BitTyrant'],
  ['TIX', [N, N, N, N], 'Tixati'],
  ['DNA', [N, N, N, N, N, N], 'BitTorrent DNA'],
  ['QVOD', [N, N, N, N], 'QVOD'],
  ['btpd/', [N], 'BT Protocol Daemon'],
  ['Pando-', [], 'Pando'],
];

/**
 * Prefixes followed by a three-part version, each part 1 to 3 digits: `M4-3-6--` (Mainline, and
 * Queen Bee with Q), `A2-1-36-0-` (aria2), `-ML2.7.2-` (MLDonkey). `padTo` > 0: dashes fill the
 * id up to that position (Mainline style); 0: one dash follows the version.
 */
const DOTTED_CLIENTS: readonly [prefix: string, separator: string, padTo: number, name: string][] = [
  ['M', '-', 8, 'Mainline'],
  ['Q', '-', 8, 'Queen Bee'],
  ['A2-', '-', 0, 'aria2'],
  ['-ML', '.', 0, 'MLDonkey'],
];

/** Client names by code; code 0 is "not recognised". */
const NAMES: string[] = ['unknown'];
const CODE_OF_NAME = new Map<string, number>();
function codeOf(name: string): number {
  let code = CODE_OF_NAME.get(name);
  if (code === undefined) {
    code = NAMES.length;
    NAMES.push(name);
    CODE_OF_NAME.set(name, code);
  }
  return code;
}

/**
 * Azureus-style lookup by the two code bytes (each below 0x80): client code, style index, and
 * alternative style index + 1 (0 for none).
 */
const AZ_CODE = new Uint8Array(1 << 14);
const AZ_STYLE = new Uint8Array(1 << 14);
const AZ_ALTERNATIVE = new Uint8Array(1 << 14);
const AZ_STYLE_NAMES = Object.keys(AZ_STYLES) as AzStyle[];
/** Version masks of every style, 5 per style. */
const AZ_MASKS = Uint16Array.from(AZ_STYLE_NAMES.flatMap((style) => AZ_STYLES[style]));
const AZ_MASK_COUNT = 5;
for (const [code, name, style, alternative] of AZUREUS_CLIENTS) {
  const key = (code.charCodeAt(0) << 7) | code.charCodeAt(1);
  AZ_CODE[key] = codeOf(name);
  AZ_STYLE[key] = AZ_STYLE_NAMES.indexOf(style);
  if (alternative !== undefined) AZ_ALTERNATIVE[key] = AZ_STYLE_NAMES.indexOf(alternative) + 1;
}

const SHADOW_CODE = new Uint8Array(128);
for (const [letter, name] of SHADOW_CLIENTS) SHADOW_CODE[letter.charCodeAt(0)] = codeOf(name);

const PREFIXES = PREFIX_CLIENTS.map(([prefix]) => asciiBytes(prefix));
const PREFIX_VERSIONS = PREFIX_CLIENTS.map(([, version]) => Uint16Array.from(version));
const PREFIX_CODES = Uint8Array.from(PREFIX_CLIENTS, ([, , name]) => codeOf(name));

const DOTTED_PREFIXES = DOTTED_CLIENTS.map(([prefix]) => asciiBytes(prefix));
const DOTTED_SEPARATORS = Uint8Array.from(DOTTED_CLIENTS, ([, separator]) => separator.charCodeAt(0));
const DOTTED_PAD_TO = Uint8Array.from(DOTTED_CLIENTS, ([, , padTo]) => padTo);
const DOTTED_CODES = Uint8Array.from(DOTTED_CLIENTS, ([, , , name]) => codeOf(name));

// Codes live in Uint8Arrays (here and in detectors' per-flow state).
if (NAMES.length > 256) throw new RangeError('peer-id client codes must fit a byte');

/** Client names indexed by code (index 0: not recognised), for logs and reports. */
export const PEER_ID_CLIENT_NAMES: readonly string[] = NAMES;

/** Length of the Shad0w-style prefix: letter, five version-or-dash bytes, "---". */
const SHADOW_PREFIX_LEN = 9;

/** Code for "not recognised". */
export const UNKNOWN_CLIENT = 0;

/**
 * The client whose peer id starts at buf[off]: a small code (0 when no convention matches).
 * Reads only buf[off, end), and only the identifying prefix. Allocates nothing.
 */
export function peerIdClient(buf: Uint8Array, off: number, end: number): number {
  if (end - off < 2) return UNKNOWN_CLIENT;
  const first = buf[off];
  if (first === 0x2d) {
    const azureus = azureusClient(buf, off, end);
    if (azureus !== UNKNOWN_CLIENT) return azureus;
  }
  for (let i = 0; i < PREFIXES.length; i++) {
    if (hasPrefix(buf, off, end, PREFIXES[i]) && matchesClasses(buf, off + PREFIXES[i].length, end, PREFIX_VERSIONS[i], 0, PREFIX_VERSIONS[i].length)) {
      return PREFIX_CODES[i];
    }
  }
  for (let i = 0; i < DOTTED_PREFIXES.length; i++) {
    if (hasPrefix(buf, off, end, DOTTED_PREFIXES[i]) && dottedVersionMatches(buf, off, end, i)) return DOTTED_CODES[i];
  }
  if (first < 0x80 && SHADOW_CODE[first] !== UNKNOWN_CLIENT && shadowVersionMatches(buf, off, end)) return SHADOW_CODE[first];
  return UNKNOWN_CLIENT;
}

/** Name of a client code, for logs and reports. */
export function peerIdClientName(code: number): string {
  return code > 0 && code < NAMES.length ? NAMES[code] : NAMES[UNKNOWN_CLIENT];
}

function azureusClient(buf: Uint8Array, off: number, end: number): number {
  if (end - off < 8) return UNKNOWN_CLIENT;
  const a = buf[off + 1];
  const b = buf[off + 2];
  if (a >= 0x80 || b >= 0x80) return UNKNOWN_CLIENT;
  const key = (a << 7) | b;
  const code = AZ_CODE[key];
  if (code === UNKNOWN_CLIENT) return UNKNOWN_CLIENT;
  if (matchesClasses(buf, off + 3, end, AZ_MASKS, AZ_STYLE[key] * AZ_MASK_COUNT, AZ_MASK_COUNT)) return code;
  const alternative = AZ_ALTERNATIVE[key];
  if (alternative === 0) return UNKNOWN_CLIENT;
  return matchesClasses(buf, off + 3, end, AZ_MASKS, (alternative - 1) * AZ_MASK_COUNT, AZ_MASK_COUNT) ? code : UNKNOWN_CLIENT;
}

/** Whether buf[at + i] is of a class in masks[from + i] for each i < count, all before `end`. */
function matchesClasses(buf: Uint8Array, at: number, end: number, masks: Uint16Array, from: number, count: number): boolean {
  if (end - at < count) return false;
  for (let i = 0; i < count; i++) if ((CLASS_OF[buf[at + i]] & masks[from + i]) === 0) return false;
  return true;
}

function hasPrefix(buf: Uint8Array, off: number, end: number, prefix: Uint8Array): boolean {
  return end - off >= prefix.length && bytesEqual(buf, off, off + prefix.length, prefix);
}

/** Checks the three-part version after dotted client i's prefix, and what must follow it. */
function dottedVersionMatches(buf: Uint8Array, off: number, end: number, client: number): boolean {
  const separator = DOTTED_SEPARATORS[client];
  let at = off + DOTTED_PREFIXES[client].length;
  for (let part = 0; part < 3; part++) {
    if (part > 0) {
      if (at >= end || buf[at] !== separator) return false;
      at++;
    }
    const digits = at;
    while (at < end && at - digits < 3 && CLASS_OF[buf[at]] === DIGIT) at++;
    if (at === digits) return false;
  }
  const padTo = DOTTED_PAD_TO[client];
  if (padTo === 0) return at < end && buf[at] === 0x2d;
  // Mainline style: the version and its dash padding fill the first padTo bytes.
  if (at >= off + padTo || end - off < padTo) return false;
  for (; at < off + padTo; at++) if (buf[at] !== 0x2d) return false;
  return true;
}

/** Shad0w's style after the letter: a digit, version characters, then dashes only, up to position 8. */
function shadowVersionMatches(buf: Uint8Array, off: number, end: number): boolean {
  if (end - off < SHADOW_PREFIX_LEN || CLASS_OF[buf[off + 1]] !== DIGIT) return false;
  let padding = false;
  for (let i = 2; i < SHADOW_PREFIX_LEN; i++) {
    const cls = CLASS_OF[buf[off + i]];
    if (cls === DASH) padding = true;
    else if (padding || i >= SHADOW_PREFIX_LEN - 3 || (cls & (UPPER_ALNUM | DOT)) === 0) return false;
  }
  return true;
}
