/**
 * Names that mean BitTorrent: tracker hosts and BitTorrent clients' own service endpoints, and the
 * matching of a name against such a list, shared by the detectors that find names in DNS
 * questions (tracker-domain.ts), TLS server names (tracker-sni.ts) and HTTP Host headers
 * (tracker-host.ts). A listed domain covers itself and every name under it, by label:
 * foo.utorrent.com is under utorrent.com, notutorrent.com is not.
 *
 * Three detectors rather than one, because they differ where the Detector contract makes them
 * differ: a DNS flow runs to a resolver, a TLS or HTTP flow to the named host itself (a name is
 * only a name: `name` evidence drops flows and never bans); each has its own transports, budget and state; and
 * their rule names tell the operator which evidence decided. Each exports a factory over a
 * DomainList, so an operator's own domains ([...DEFAULT_DOMAINS, ...extra]) reach all three.
 */
import { asciiBytes } from './bencode.js';
import { ByteMatcher, START_STATE } from './matcher.js';

/** Public tracker hosts (HTTP, UDP and WebTorrent trackers): nothing else answers at these names. */
export const TRACKER_DOMAINS: readonly string[] = [
  'tracker.opentrackr.org',
  'open.stealth.si',
  'tracker.torrent.eu.org',
  'exodus.desync.com',
  'openbittorrent.com',
  'publicbt.com',
  'open.demonii.com',
  'tracker.coppersurfer.tk',
  'tracker.leechers-paradise.org',
  'tracker.internetwarriors.net',
  'tracker.pirateparty.gr',
  'tracker.istole.it',
  'tracker.ccc.de',
  'tracker.tiny-vps.com',
  'tracker.dler.org',
  'tracker.moeking.me',
  'tracker.files.fm',
  'tracker1.bt.moack.co.kr',
  'opentracker.i2p.rocks',
  'open.tracker.cl',
  'explodie.org',
  'p4p.arenabg.com',
  '9.rarbg.com',
  '9.rarbg.me',
  '9.rarbg.to',
  'nyaa.tracker.wf',
  // Rutracker's announce hosts are bt.t-ru.org, bt2.t-ru.org...: the domain serves nothing else.
  't-ru.org',
  // Russian ISPs answer this name with their own local tracker.
  'retracker.local',
  // Trackers of free software distributions: still BitTorrent.
  'torrent.ubuntu.com',
  'torrent.fedoraproject.org',
  'bt1.archive.org',
  'bt2.archive.org',
  // WebTorrent (BitTorrent over WebRTC) signalling trackers.
  'tracker.openwebtorrent.com',
  'tracker.webtorrent.dev',
  'tracker.btorrent.xyz',
];

/**
 * Endpoints only BitTorrent clients talk to: DHT bootstrap routers, uTorrent Web, the clients'
 * update, statistics and port-check services. The projects' websites are not here: reading about
 * a client is not using BitTorrent (they are in TORRENT_SITE_DOMAINS).
 */
export const CLIENT_SERVICE_DOMAINS: readonly string[] = [
  'router.utorrent.com',
  'router.bittorrent.com',
  'router.bitcomet.com',
  'dht.transmissionbt.com',
  'dht.libtorrent.org',
  'dht.aelitis.com',
  'router.silotis.us',
  'web.utorrent.com',
  'update.utorrent.com',
  'bench.utorrent.com',
  'update.bittorrent.com',
  'portcheck.transmissionbt.com',
];

/**
 * Torrent index sites and BitTorrent clients' websites: browsing one is web traffic, not
 * BitTorrent, so they are not in the default list; an operator who blocks the sites by policy adds
 * this list to the configured domains.
 */
export const TORRENT_SITE_DOMAINS: readonly string[] = [
  'thepiratebay.org',
  '1337x.to',
  'rarbg.to',
  'yts.mx',
  'nyaa.si',
  'rutracker.org',
  'rutor.info',
  'nnmclub.to',
  'kinozal.tv',
  'torrentgalaxy.to',
  'eztv.re',
  'limetorrents.lol',
  'torlock.com',
  'magnetdl.com',
  'btdig.com',
  'torrentleech.org',
  'iptorrents.com',
  'academictorrents.com',
  'linuxtracker.org',
  'utorrent.com',
  'bittorrent.com',
  'qbittorrent.org',
  'transmissionbt.com',
  'deluge-torrent.org',
  'bitcomet.com',
  'vuze.com',
  'biglybt.com',
  'tixati.com',
  'webtorrent.io',
];

/** What the domain detectors look for unless told otherwise. */
export const DEFAULT_DOMAINS: readonly string[] = [...TRACKER_DOMAINS, ...CLIENT_SERVICE_DOMAINS];

const DOT = 0x2e;
/** Ends every name fed to the matcher, so a listed domain matches only as the name's last labels. */
const NAME_END = 0x00;
/** Longest host name (RFC 1035): a longer one is no name at all. */
export const MAX_NAME_LENGTH = 253;
const LABEL_PATTERN = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/;

/** Bytes a listed name can be made of (letters, digits, '-', '_', '.'): a name with any other byte is in no list. */
const NAME_BYTE = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.') NAME_BYTE[c.charCodeAt(0)] = 1;

/**
 * A list of domains, matched by label boundary and without regard to case. Names are fed byte by
 * byte (from a packet, a DNS label sequence or a stream cut over several segments) into an
 * Aho–Corasick automaton over the patterns ".<domain>\0": the leading dot stands for the label
 * boundary, the NUL for the end of the name.
 */
export class DomainList {
  /** The domains, normalised: lower case, no leading "*." or dot, no trailing dot. */
  readonly domains: readonly string[];
  /** The state to feed a name's first byte into. */
  readonly nameStart: number;
  private readonly matcher: ByteMatcher;

  /** Throws a RangeError naming the first entry that is not a domain name. */
  constructor(domains: readonly string[]) {
    this.domains = domains.map(normaliseDomain);
    this.matcher = new ByteMatcher(
      this.domains.map((d) => asciiBytes(`.${d}\0`)),
      { caseInsensitive: true },
    );
    this.nameStart = this.matcher.next(START_STATE, DOT);
  }

  /** The state after one more byte of the name ('.' between labels), or -1 when no listed name holds that byte. */
  nameByte(state: number, byte: number): number {
    return NAME_BYTE[byte] === 0 ? -1 : this.matcher.next(state, byte);
  }

  /** The state after the boundary between two labels. */
  labelBoundary(state: number): number {
    return this.matcher.next(state, DOT);
  }

  /** Index in `domains` of the listed domain that the name fed so far is, or lies under; -1 for none. */
  nameEnd(state: number): number {
    return this.matcher.matchAt(this.matcher.next(state, NAME_END));
  }

  /** The same for a dotted name held whole in buf[start, end); one trailing dot is allowed. */
  matchDotted(buf: Uint8Array, start: number, end: number): number {
    const last = end > start && buf[end - 1] === DOT ? end - 1 : end;
    if (last <= start) return -1;
    let state = this.nameStart;
    for (let i = start; i < last; i++) {
      state = this.nameByte(state, buf[i]);
      if (state < 0) return -1;
    }
    return this.nameEnd(state);
  }
}

function normaliseDomain(entry: string): string {
  const name = entry.trim().toLowerCase().replace(/^\*?\./, '').replace(/\.$/, '');
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !name.split('.').every((label) => label.length <= 63 && LABEL_PATTERN.test(label))) {
    throw new RangeError(`not a domain name: ${JSON.stringify(entry)}`);
  }
  return name;
}

/** DEFAULT_DOMAINS, matched: what the registry's detectors look for. */
export const DEFAULT_DOMAIN_LIST = new DomainList(DEFAULT_DOMAINS);
