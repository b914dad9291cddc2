/**
 * The XDP ban fast path, userspace side: loads bpf/btwall.bpf.c through the addon
 * (native/xdp.cc), attaches it to the configured interfaces, and reads and writes the ban maps
 * pinned under BPF_PIN_DIR. Names and layouts come from bpf/btwall.h, through the addon.
 *
 * A ban is an entry in ban4/ban6 (LRU hashes keyed by the address in network order) whose value
 * holds its expiry on CLOCK_BOOTTIME and the rule that proved the peer. The maps outlive the
 * daemon: a restart reuses them, `btwall bans` edits them whether or not the daemon runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { addressBytes, CidrSet } from '../config/cidr.js';
import { interfaceMatches, isInterfacePattern, type Cidr, type Config } from '../config/config.js';
import { formatAddress } from '../flow/address.js';
import { escalatedDurationS, NO_ESCALATION, type Escalation } from '../policy/escalation.js';
import type { BanOutcome, BanSink, BanTable, KernelBans } from './sink.js';

/** What the addon reports of a map (bpf_map_info). */
interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** One map through its own descriptor (native/xdp.cc BpfMap). */
interface NativeBpfMap {
  info(): MapInfo;
  lookup(key: Uint8Array, value: Uint8Array): boolean;
  update(key: Uint8Array, value: Uint8Array, flags: number): void;
  delete(key: Uint8Array): boolean;
  /** Every entry: `count` keys and values, back to back. */
  dump(): { count: number; keys: Buffer; values: Buffer };
  deleteKeys(keys: Uint8Array): number;
  sumPerCpu(): Float64Array;
  close(): void;
}

/** A loaded BPF object file (native/xdp.cc XdpObject). */
export interface NativeXdpObject {
  mapFd(name: string): number;
  programId(name: string): number;
  /** replaceProgramId 0: only where the device has no program in that mode. */
  attach(ifindex: number, program: string, modeFlags: number, replaceProgramId: number): void;
  testRun(program: string, frame: Uint8Array, repeat: number): TestRun;
  close(): void;
}

/** One BPF_PROG_TEST_RUN: the program's verdict and its mean time. */
export interface TestRun {
  retval: number;
  durationNs: number;
}

/** A ring buffer of fixed-size records (native/xdp.cc BpfRing). */
interface NativeBpfRing {
  /** Every record waiting, back to back. */
  consume(): Buffer;
  close(): void;
}

/** A TCP segment of a banned address the program dropped and reported, to be answered with resets. */
export interface DroppedSegment {
  family: 4 | 6;
  source: string;
  destination: string;
  sourcePort: number;
  destinationPort: number;
  seq: number;
  ack: number;
  /** The TCP flags byte. */
  flags: number;
  /** Payload bytes. */
  length: number;
}

interface XdpLayout {
  programEthernet: string;
  programL3: string;
  mapBan4: string;
  mapBan6: string;
  mapDrops: string;
  mapOwn4: string;
  mapOwn6: string;
  mapSettings: string;
  mapSegments: string;
  ownCapacity: number;
  banBytes: number;
  banExpires: number;
  banForget: number;
  banCount: number;
  banRule: number;
  ruleBytes: number;
  dropsBytes: number;
  dropsPackets: number;
  dropsBytesField: number;
  dropsResets: number;
  settingsBytes: number;
  settingsResetTcp: number;
  segmentBytes: number;
  segmentFamily: number;
  segmentFlags: number;
  segmentSourcePort: number;
  segmentDestinationPort: number;
  segmentSeq: number;
  segmentAck: number;
  segmentLength: number;
  segmentSource: number;
  segmentDestination: number;
  dropsV4: number;
  dropsV6: number;
  dropsSlots: number;
  mapTypeLruHash: number;
  mapTypeHash: number;
  mapTypePercpuArray: number;
  updateAny: number;
  modeGeneric: number;
  modeNative: number;
  modeOffload: number;
  xdpPass: number;
  xdpDrop: number;
}

interface XdpAddon {
  XdpObject: new (path: string, pinRoot: string, maxEntries: Record<string, number>) => NativeXdpObject;
  BpfMap: new (source: string | number) => NativeBpfMap;
  BpfRing: new (mapFd: number, recordBytes: number) => NativeBpfRing;
  takeLibbpfLog(): { level: 'warn' | 'info' | 'debug'; message: string }[];
  setLibbpfDebug(on: boolean): void;
  bootTimeNs(): bigint;
  linkInfo(name: string): { index: number; type: number } | null;
  interfaces(): { name: string; index: number }[];
  xdpDetach(ifindex: number, modeFlags: number, programId: number): void;
  xdpQuery(ifindex: number): Record<XdpMode, number>;
  progInfo(id: number): { name: string; mapIds: number[] } | null;
  /** NETDEV_XDP_ACT_* bits of a device, or null when the kernel cannot say (before 6.3). */
  xdpFeatures(ifindex: number): number | null;
  isBpffs(path: string): boolean;
  mountBpffs(path: string): void;
  layout: XdpLayout;
}

const nativeDir = fileURLToPath(new URL('../../native/build/', import.meta.url));
const native = (createRequire(import.meta.url)(`${nativeDir}btwall.node`) as { xdp: XdpAddon }).xdp;
const layout = native.layout;

/** The compiled program (Makefile: bpf/build/btwall.bpf.o). */
export const BPF_OBJECT = fileURLToPath(new URL('../../bpf/build/btwall.bpf.o', import.meta.url));
/** Where bpffs is mounted when it is not yet. */
export const BPFFS = '/sys/fs/bpf';

/** linux/netdev.h: the driver runs XDP programs (native mode); the NIC runs them itself (offload). */
const NETDEV_XDP_ACT_BASIC = 1;
const NETDEV_XDP_ACT_HW_OFFLOAD = 16;

/** What the kernel says of this network namespace's devices, read only: nothing is loaded or attached. */
export const devices = {
  link: (name: string): { index: number; type: number } | null => native.linkInfo(name),
  list: (): { name: string; index: number }[] => native.interfaces(),
  isBpffs: (path: string): boolean => native.isBpffs(path),
  /** Whether the device's driver supports the mode; null when the kernel cannot say (attaching will). */
  supports(ifindex: number, mode: XdpMode): boolean | null {
    if (mode === 'generic') return true;
    const features = native.xdpFeatures(ifindex);
    if (features === null) return null;
    return (features & (mode === 'native' ? NETDEV_XDP_ACT_BASIC : NETDEV_XDP_ACT_HW_OFFLOAD)) !== 0;
  },
  /** Whether the device is a veth (rtnetlink's link kind, as `ip -d link` shows it). Read at attach time only. */
  isVeth(name: string): boolean {
    const shown = spawnSync('ip', ['-d', '-j', 'link', 'show', 'dev', name], { encoding: 'utf8' });
    if (shown.status !== 0) return false;
    const [link] = JSON.parse(shown.stdout) as { linkinfo?: { info_kind?: string } }[];
    return link?.linkinfo?.info_kind === 'veth';
  },
};
const NS_PER_S = 1_000_000_000n;

/** The attachment modes; XDP_MODE=off attaches nothing, XDP_MODE=auto picks one of these per device. */
export type XdpMode = Exclude<Config['xdpMode'], 'off' | 'auto'>;

/**
 * The modes to try on a device, in order. `auto`: native where the driver says it runs XDP
 * programs, generic where it says it does not; where the kernel cannot say (before 6.3) native is
 * tried first, generic if the driver refuses it. A veth gets generic: native XDP on a veth turns
 * TSO off on its peer (TCP through it slows to a few Gbit/s).
 */
export function modesToTry(mode: XdpMode | 'auto', native: boolean | null, veth = false): XdpMode[] {
  if (mode !== 'auto') return [mode];
  return native === false || veth ? ['generic'] : ['native', 'generic'];
}
export const XDP_PASS = layout.xdpPass;
export const XDP_DROP = layout.xdpDrop;

const MODE_FLAGS: Record<XdpMode, number> = { generic: layout.modeGeneric, native: layout.modeNative, offload: layout.modeOffload };
const MODES = Object.keys(MODE_FLAGS) as XdpMode[];

/** Which entry point a device needs: frames with an Ethernet header, or starting at the IP header. */
export type LinkKind = 'ethernet' | 'l3';

const PROGRAMS: Record<LinkKind, string> = { ethernet: layout.programEthernet, l3: layout.programL3 };
const OUR_PROGRAMS = new Set(Object.values(PROGRAMS));

/** ARPHRD_* (linux/if_arp.h) of devices whose XDP frames carry an Ethernet header. */
const ETHERNET_LINK_TYPES = new Set([1 /* ETHER: Ethernet, veth, bridges, VLAN and macvlan devices, gretap */, 772 /* LOOPBACK */]);
/** ...and of devices without a link header: frames start at the IP header. */
const L3_LINK_TYPES = new Set([
  0xfffe /* NONE: WireGuard, tun */,
  519 /* RAWIP: cellular modems */,
  512 /* PPP */,
  768 /* TUNNEL: IPIP */,
  769 /* TUNNEL6: IP6IP6 */,
  776 /* SIT */,
  778 /* IPGRE */,
  823 /* IP6GRE */,
]);

export function linkKind(arphrd: number): LinkKind | null {
  if (ETHERNET_LINK_TYPES.has(arphrd)) return 'ethernet';
  if (L3_LINK_TYPES.has(arphrd)) return 'l3';
  return null;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** libbpf's own messages (buffered by the addon) into the daemon's log. */
function forwardLibbpfLog(log: Logger): void {
  for (const line of native.takeLibbpfLog()) log[line.level]({ libbpf: true }, line.message);
}

const NO_CIDRS = new CidrSet([]);

/** Loopback and link-local: never banned, in userspace and in the program alike. */
const BUILT_IN_NEVER_BAN = new CidrSet([
  { family: 4, address: '127.0.0.0', prefix: 8 },
  { family: 4, address: '169.254.0.0', prefix: 16 },
  { family: 6, address: '::1', prefix: 128 },
  { family: 6, address: 'fe80::', prefix: 10 },
]);

/** An IPv4 or IPv6 address in text, as its family and bytes (network order); null if it is neither. */
export function parseAddress(text: string): { family: 4 | 6; bytes: Uint8Array } | null {
  const family = isIP(text);
  if (family === 0) return null;
  return { family: family as 4 | 6, bytes: addressBytes(family as 4 | 6, text) };
}

/** This host's addresses in this network namespace, as /32 and /128 prefixes. */
export function ownAddresses(): Cidr[] {
  const own: Cidr[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const family = a.family === 'IPv4' ? 4 : 6;
      own.push({ family, address: a.address, prefix: family === 4 ? 32 : 128 });
    }
  }
  return own;
}

/**
 * Why an address may not be banned, or null when it may: loopback, link-local and this host's own
 * addresses (the program ignores bans on them too), and `allow` (ALLOW_CIDRS).
 */
export function banRefusal(family: 4 | 6, address: Uint8Array, own: CidrSet, allow = NO_CIDRS): string | null {
  if (BUILT_IN_NEVER_BAN.contains(family, address, 0)) return 'loopback or link-local address';
  if (own.contains(family, address, 0)) return "one of this host's own addresses";
  if (allow.contains(family, address, 0)) return 'allowlisted (ALLOW_CIDRS)';
  return null;
}

export interface BanEntry {
  family: 4 | 6;
  address: string;
  /** Seconds until the ban expires (> 0: expired entries are not listed). */
  remainingS: number;
  rule: string;
  /** Bans of this address in a row (BAN_ESCALATION), this one included. */
  count: number;
}

/** What a ban did: how long it runs from now, and how many bans in a row it makes. */
export interface BanResult {
  outcome: 'added' | 'extended' | 'kept';
  remainingS: number;
  count: number;
}

export interface DropCounters {
  packets: number;
  bytes: number;
  /** Of the packets, the TCP segments reported to be answered with resets (CUT_ESTABLISHED). */
  resets: number;
}

/** A map's entries, as the addon dumps them. */
interface MapEntries {
  count: number;
  keys: Buffer;
  values: Buffer;
}

/** ban4, ban6 and the drop counters: through the loaded program's descriptors, or the pins. */
export class BanMaps {
  private readonly value = Buffer.alloc(layout.banBytes);

  private constructor(
    private readonly v4: NativeBpfMap,
    private readonly v6: NativeBpfMap,
    private readonly dropCounters: NativeBpfMap,
  ) {}

  /** The maps pinned at pinDir, or null when nothing is pinned there (no daemon ever ran with it). */
  static openPinned(pinDir: string): BanMaps | null {
    const paths = [layout.mapBan4, layout.mapBan6, layout.mapDrops].map((name) => join(pinDir, name));
    if (!paths.every((path) => existsSync(path))) return null;
    const [v4, v6, drops] = paths.map((path) => new native.BpfMap(path));
    return new BanMaps(v4, v6, drops);
  }

  static ofObject(object: NativeXdpObject): BanMaps {
    const open = (name: string) => new native.BpfMap(object.mapFd(name));
    return new BanMaps(open(layout.mapBan4), open(layout.mapBan6), open(layout.mapDrops));
  }

  private map(family: 4 | 6): NativeBpfMap {
    return family === 4 ? this.v4 : this.v6;
  }

  /**
   * Bans `address` (network order, first 4 or 16 bytes) for `baseS` from now, escalated when its
   * last ban ended within the escalation window (`escalation.factor` 1: `baseS` exactly, as an
   * operator's manual ban is, but still counted). A ban in force is kept if it runs longer (a
   * re-ban never shortens one) and is the same ban, not one more in the count. The outcome says
   * whether it was new (`added`), lengthened (`extended`; an expired entry not yet swept counts as
   * new) or left as it was (`kept`).
   */
  ban(family: 4 | 6, address: Uint8Array, baseS: number, rule: string, escalation: Escalation): BanResult {
    const key = address.subarray(0, family === 4 ? 4 : 16);
    const now = native.bootTimeNs();
    const value = this.value;
    let count = 1;
    let outcome: BanResult['outcome'] = 'added';
    if (this.map(family).lookup(key, value)) {
      const current = value.readBigUInt64LE(layout.banExpires);
      const previous = value.readUInt32LE(layout.banCount);
      if (current > now) count = Math.max(previous, 1);
      else if (value.readBigUInt64LE(layout.banForget) > now) count = previous + 1;
      if (current > now && current >= now + BigInt(escalatedDurationS(baseS, count, escalation)) * NS_PER_S) return { outcome: 'kept', remainingS: Number(current - now) / 1e9, count };
      if (current > now) outcome = 'extended';
    }
    const durationS = escalatedDurationS(baseS, count, escalation);
    const expires = now + BigInt(durationS) * NS_PER_S;
    value.fill(0);
    value.writeBigUInt64LE(expires, layout.banExpires);
    value.writeBigUInt64LE(expires + BigInt(escalation.windowS) * NS_PER_S, layout.banForget);
    value.writeUInt32LE(count, layout.banCount);
    value.write(rule, layout.banRule, layout.ruleBytes - 1, 'utf8');
    this.map(family).update(key, value, layout.updateAny);
    return { outcome, remainingS: durationS, count };
  }

  /** How many bans are in force, per family, without listing them. */
  active(): { v4: number; v6: number } {
    const now = native.bootTimeNs();
    const live = (family: 4 | 6) => {
      const entries = this.map(family).dump();
      let count = 0;
      for (let i = 0; i < entries.count; i++) if (entries.values.readBigUInt64LE(i * layout.banBytes + layout.banExpires) > now) count++;
      return count;
    };
    return { v4: live(4), v6: live(6) };
  }

  /** Lifts a ban at once; false when there was none. */
  unban(family: 4 | 6, address: Uint8Array): boolean {
    return this.map(family).delete(address.subarray(0, family === 4 ? 4 : 16));
  }

  /** Bans in force, IPv4 first, each family in address order. */
  list(): BanEntry[] {
    const now = native.bootTimeNs();
    const bans: BanEntry[] = [];
    for (const family of [4, 6] as const) {
      const entries = this.map(family).dump();
      const keySize = family === 4 ? 4 : 16;
      const sorted: [Buffer, BanEntry][] = [];
      for (let i = 0; i < entries.count; i++) {
        const value = entries.values.subarray(i * layout.banBytes, (i + 1) * layout.banBytes);
        const expires = value.readBigUInt64LE(layout.banExpires);
        if (expires <= now) continue;
        const key = entries.keys.subarray(i * keySize, (i + 1) * keySize);
        const ruleField = value.subarray(layout.banRule, layout.banRule + layout.ruleBytes);
        const end = ruleField.indexOf(0);
        sorted.push([
          key,
          {
            family,
            address: formatAddress(family, key),
            remainingS: Number(expires - now) / 1e9,
            rule: ruleField.toString('utf8', 0, end < 0 ? ruleField.length : end),
            count: value.readUInt32LE(layout.banCount),
          },
        ]);
      }
      sorted.sort((a, b) => Buffer.compare(a[0], b[0]));
      for (const [, ban] of sorted) bans.push(ban);
    }
    return bans;
  }

  /** Deletes every ban; returns how many there were (expired ones not yet deleted included). */
  flush(): number {
    let deleted = 0;
    for (const family of [4, 6] as const) deleted += this.map(family).deleteKeys(this.map(family).dump().keys);
    return deleted;
  }

  /** Deletes the bans that have expired and whose escalation window is over; returns how many. */
  sweep(): number {
    const now = native.bootTimeNs();
    let deleted = 0;
    for (const family of [4, 6] as const) {
      const entries = this.map(family).dump();
      const keySize = family === 4 ? 4 : 16;
      const expired: Buffer[] = [];
      for (let i = 0; i < entries.count; i++) {
        if (entries.values.readBigUInt64LE(i * layout.banBytes + layout.banForget) <= now) expired.push(entries.keys.subarray(i * keySize, (i + 1) * keySize));
      }
      if (expired.length > 0) deleted += this.map(family).deleteKeys(Buffer.concat(expired));
    }
    return deleted;
  }

  /**
   * Writes back entries dumped from an older map (another capacity), those remembered longest
   * last: they survive an LRU that overflows.
   */
  restore(family: 4 | 6, entries: MapEntries): number {
    const now = native.bootTimeNs();
    const keySize = family === 4 ? 4 : 16;
    const live: number[] = [];
    const expires = (i: number) => entries.values.readBigUInt64LE(i * layout.banBytes + layout.banForget);
    for (let i = 0; i < entries.count; i++) if (expires(i) > now) live.push(i);
    live.sort((a, b) => (expires(a) < expires(b) ? -1 : expires(a) > expires(b) ? 1 : 0));
    for (const i of live) {
      this.map(family).update(entries.keys.subarray(i * keySize, (i + 1) * keySize), entries.values.subarray(i * layout.banBytes, (i + 1) * layout.banBytes), layout.updateAny);
    }
    return live.length;
  }

  /** What the program dropped since the maps were created, per family. */
  drops(): { v4: DropCounters; v6: DropCounters } {
    const sums = this.dropCounters.sumPerCpu();
    const words = layout.dropsBytes / 8;
    const slot = (index: number): DropCounters => ({
      packets: sums[index * words + layout.dropsPackets / 8],
      bytes: sums[index * words + layout.dropsBytesField / 8],
      resets: sums[index * words + layout.dropsResets / 8],
    });
    return { v4: slot(layout.dropsV4), v6: slot(layout.dropsV6) };
  }

  /** The kernel's id of ban4: a program that uses it enforces these bans. */
  banMapId(): number {
    return this.v4.info().id;
  }

  close(): void {
    this.v4.close();
    this.v6.close();
    this.dropCounters.close();
  }
}

/** Mounts bpffs at /sys/fs/bpf when the pin directory is under it and it is not mounted; creates the directory. */
function preparePinDir(pinDir: string): void {
  if ((pinDir === BPFFS || pinDir.startsWith(`${BPFFS}/`)) && !native.isBpffs(BPFFS)) native.mountBpffs(BPFFS);
  mkdirSync(pinDir, { recursive: true, mode: 0o700 });
  if (!native.isBpffs(pinDir)) throw new Error(`${pinDir} is not on a bpf filesystem`);
}

interface CarriedBans {
  family: 4 | 6;
  entries: MapEntries;
}

/**
 * libbpf refuses to reuse a pinned map whose type, sizes or capacity differ from the object's.
 * Such pins are removed before loading; ban maps that only changed capacity (BAN_CAPACITY) hand
 * their bans over to the new maps.
 */
function unpinIncompatible(pinDir: string, capacity: number, log: Logger): CarriedBans[] {
  const expected: [string, 4 | 6 | null, Omit<MapInfo, 'id' | 'name' | 'flags'>][] = [
    [layout.mapBan4, 4, { type: layout.mapTypeLruHash, keySize: 4, valueSize: layout.banBytes, maxEntries: capacity }],
    [layout.mapBan6, 6, { type: layout.mapTypeLruHash, keySize: 16, valueSize: layout.banBytes, maxEntries: capacity }],
    [layout.mapDrops, null, { type: layout.mapTypePercpuArray, keySize: 4, valueSize: layout.dropsBytes, maxEntries: layout.dropsSlots }],
  ];
  const carried: CarriedBans[] = [];
  for (const [name, family, want] of expected) {
    const path = join(pinDir, name);
    if (!existsSync(path)) continue;
    const map = new native.BpfMap(path);
    try {
      const info = map.info();
      const sameLayout = info.type === want.type && info.keySize === want.keySize && info.valueSize === want.valueSize && info.flags === 0;
      if (sameLayout && info.maxEntries === want.maxEntries) continue;
      const carry = sameLayout && family !== null;
      if (carry) carried.push({ family, entries: map.dump() });
      log.warn({ map: path, maxEntries: info.maxEntries, newMaxEntries: want.maxEntries, carried: carry }, carry ? 'ban map capacity changed: its bans move to a new map' : 'pinned map has another layout: replaced, its entries dropped');
      unlinkSync(path);
    } finally {
      map.close();
    }
  }
  return carried;
}

/** Where the program runs, for detach and the status. */
export interface Attachment {
  name: string;
  ifindex: number;
  kind: LinkKind;
  mode: XdpMode;
  programId: number;
}

/** The loaded ban program: its maps (pinned), its own-address maps, attach, detach, test runs. */
export class XdpProgram {
  readonly maps: BanMaps;
  private readonly own: Record<4 | 6, NativeBpfMap>;
  /** Keys now in own4/own6, as `family/hex`. */
  private ownKeys = new Set<string>();

  private readonly settings: NativeBpfMap;
  private readonly segments: NativeBpfRing;

  private constructor(private readonly object: NativeXdpObject) {
    this.maps = BanMaps.ofObject(object);
    this.own = { 4: new native.BpfMap(object.mapFd(layout.mapOwn4)), 6: new native.BpfMap(object.mapFd(layout.mapOwn6)) };
    this.settings = new native.BpfMap(object.mapFd(layout.mapSettings));
    this.segments = new native.BpfRing(object.mapFd(layout.mapSegments), layout.segmentBytes);
  }

  /** The TCP segments of banned addresses dropped and reported since the last call (with resets on). */
  takeSegments(): DroppedSegment[] {
    const records = this.segments.consume();
    const taken: DroppedSegment[] = [];
    for (let at = 0; at + layout.segmentBytes <= records.length; at += layout.segmentBytes) {
      const family = records[at + layout.segmentFamily] === 4 ? 4 : 6;
      taken.push({
        family,
        source: formatAddress(family, records, at + layout.segmentSource),
        destination: formatAddress(family, records, at + layout.segmentDestination),
        sourcePort: records.readUInt16BE(at + layout.segmentSourcePort),
        destinationPort: records.readUInt16BE(at + layout.segmentDestinationPort),
        seq: records.readUInt32BE(at + layout.segmentSeq),
        ack: records.readUInt32BE(at + layout.segmentAck),
        flags: records[at + layout.segmentFlags],
        length: records.readUInt32LE(at + layout.segmentLength),
      });
    }
    return taken;
  }

  /** Whether dropped TCP segments are answered with a reset to their sender (CUT_ESTABLISHED). */
  setResetTcp(on: boolean): void {
    const value = Buffer.alloc(layout.settingsBytes);
    value.writeUInt32LE(on ? 1 : 0, layout.settingsResetTcp);
    this.settings.update(new Uint8Array(4), value, layout.updateAny);
  }

  /**
   * Loads the program. The ban maps pinned at pinDir are reused, bans and expiries included;
   * where there are none, new ones are created and pinned (bpffs is mounted if need be).
   */
  static load(pinDir: string, capacity: number, log: Logger): XdpProgram {
    native.setLibbpfDebug(log.isLevelEnabled('debug'));
    let object: NativeXdpObject;
    let carried: CarriedBans[];
    try {
      preparePinDir(pinDir);
      carried = unpinIncompatible(pinDir, capacity, log);
      object = new native.XdpObject(BPF_OBJECT, pinDir, { [layout.mapBan4]: capacity, [layout.mapBan6]: capacity });
    } finally {
      forwardLibbpfLog(log);
    }
    const program = new XdpProgram(object);
    for (const { family, entries } of carried) program.maps.restore(family, entries);
    return program;
  }

  /**
   * Attaches the entry point the device's link type needs, in `mode` (`auto`: see modesToTry). A
   * btwall program already there (a crashed run, another XDP_MODE) is replaced; any other XDP
   * program is left alone and reported.
   */
  attach(name: string, mode: XdpMode | 'auto'): Attachment {
    const link = native.linkInfo(name);
    if (link === null) throw new Error(`no interface ${name} in this network namespace`);
    const kind = linkKind(link.type);
    if (kind === null) throw new Error(`link type ${link.type} (ARPHRD) is neither Ethernet nor a bare IP device`);
    const modes = mode === 'auto' ? modesToTry(mode, devices.supports(link.index, 'native'), devices.isVeth(name)) : [mode];
    const program = PROGRAMS[kind];
    const refused: string[] = [];
    let cause: unknown;
    for (const tried of modes) {
      const replace = this.clearOthers(link.index, tried);
      try {
        this.object.attach(link.index, program, MODE_FLAGS[tried], replace);
        return { name, ifindex: link.index, kind, mode: tried, programId: this.object.programId(program) };
      } catch (error) {
        const hint = tried === 'offload' ? ' (offload needs a NIC that runs BPF itself, with LRU hash maps; use native)' : '';
        refused.push(`${modes.length > 1 ? `${tried}: ` : ''}${errorMessage(error)}${hint}`);
        cause = error;
      }
    }
    throw new Error(refused.join('; '), { cause });
  }

  /**
   * Detaches btwall programs attached in modes other than `mode`; returns the id of ours in
   * `mode` (to replace), 0 when there is none. Throws when another XDP program is attached.
   */
  private clearOthers(ifindex: number, mode: XdpMode): number {
    const attached = native.xdpQuery(ifindex);
    let replace = 0;
    for (const other of MODES) {
      const id = attached[other];
      if (id === 0) continue;
      const info = native.progInfo(id);
      if (info !== null && !OUR_PROGRAMS.has(info.name)) throw new Error(`another XDP program (${info.name}, id ${id}, ${other} mode) is attached; btwall does not replace it`);
      if (other === mode) replace = id;
      else native.xdpDetach(ifindex, MODE_FLAGS[other], id);
    }
    return replace;
  }

  /** Removes the program from the device if it is still the one there; false when it was gone. */
  detach(attachment: Attachment): boolean {
    try {
      native.xdpDetach(attachment.ifindex, MODE_FLAGS[attachment.mode], attachment.programId);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENODEV' || code === 'EEXIST' || code === 'ENOENT') return false;
      throw error;
    }
  }

  /** Whether the attachment's program is still the one on its device (interfaces come and go). */
  isAttached(attachment: Attachment): boolean {
    const link = native.linkInfo(attachment.name);
    return link !== null && link.index === attachment.ifindex && native.xdpQuery(link.index)[attachment.mode] === attachment.programId;
  }

  /** Makes own4/own6 exactly these addresses: bans on them are ignored by the program. */
  setOwnAddresses(addresses: readonly Cidr[]): void {
    const wanted = new Map<string, { family: 4 | 6; key: Uint8Array }>();
    for (const a of addresses.slice(0, layout.ownCapacity)) {
      const key = addressBytes(a.family, a.address);
      wanted.set(`${a.family}/${Buffer.from(key).toString('hex')}`, { family: a.family, key });
    }
    const one = Uint8Array.of(1);
    for (const id of this.ownKeys) {
      if (wanted.has(id)) continue;
      const [family, hex] = id.split('/');
      this.own[Number(family) as 4 | 6].delete(Buffer.from(hex, 'hex'));
    }
    for (const [id, { family, key }] of wanted) if (!this.ownKeys.has(id)) this.own[family].update(key.subarray(0, family === 4 ? 4 : 16), one, layout.updateAny);
    this.ownKeys = new Set(wanted.keys());
  }

  /** BPF_PROG_TEST_RUN: the verdict (XDP_PASS, XDP_DROP) on one frame, and ns per run over `repeat` runs. */
  testRun(kind: LinkKind, frame: Uint8Array, repeat = 1): TestRun {
    return this.object.testRun(PROGRAMS[kind], frame, repeat);
  }

  /** Closes the program; attachments stay until detached, pinned maps stay for good. */
  close(): void {
    this.maps.close();
    this.own[4].close();
    this.own[6].close();
    this.settings.close();
    this.segments.close();
    this.object.close();
  }
}

/** Any XDP object file (the benchmark's reference program): loaded, nothing pinned. */
export function loadXdpObject(path: string, log: Logger): NativeXdpObject {
  try {
    return new native.XdpObject(path, '', {});
  } finally {
    forwardLibbpfLog(log);
  }
}

/** Attaches a program of any object to a device, in a mode; nothing attached there may be replaced. */
export function attachXdpObject(object: NativeXdpObject, program: string, name: string, mode: XdpMode): Attachment {
  const link = native.linkInfo(name);
  if (link === null) throw new Error(`no interface ${name} in this network namespace`);
  object.attach(link.index, program, MODE_FLAGS[mode], 0);
  return { name, ifindex: link.index, kind: linkKind(link.type) ?? 'ethernet', mode, programId: object.programId(program) };
}

export function detachXdp(attachment: Attachment): void {
  native.xdpDetach(attachment.ifindex, MODE_FLAGS[attachment.mode], attachment.programId);
}

/** The interfaces of this network namespace where a program that uses these ban maps is attached. */
export function enforcement(maps: BanMaps): { name: string; mode: XdpMode }[] {
  const banMap = maps.banMapId();
  const ours = new Map<number, boolean>();
  const uses = (id: number) => {
    if (!ours.has(id)) ours.set(id, native.progInfo(id)?.mapIds.includes(banMap) ?? false);
    return ours.get(id)!;
  };
  const found: { name: string; mode: XdpMode }[] = [];
  for (const { name, index } of native.interfaces()) {
    let attached: Record<XdpMode, number>;
    try {
      attached = native.xdpQuery(index);
    } catch {
      continue; // gone since it was listed
    }
    for (const mode of MODES) if (attached[mode] !== 0 && uses(attached[mode])) found.push({ name, mode });
  }
  return found;
}

/** The ban maps as a BanTable: quiet writes for bans decided elsewhere, with the same refusals as the sink's own bans. */
export class XdpBanTable implements BanTable {
  constructor(
    private readonly maps: BanMaps,
    /** This host's addresses now. */
    private readonly own: () => CidrSet,
  ) {}

  put(address: string, durationS: number, rule: string): boolean {
    const parsed = parseAddress(address);
    if (parsed === null || banRefusal(parsed.family, parsed.bytes, this.own()) !== null) return false;
    // A decision from the fleet lasts what the fleet says: no escalation of its own.
    this.maps.ban(parsed.family, parsed.bytes, durationS, rule, NO_ESCALATION);
    return true;
  }

  lift(address: string): boolean {
    const parsed = parseAddress(address);
    return parsed !== null && this.maps.unban(parsed.family, parsed.bytes);
  }

  entries(): { address: string; rule: string }[] {
    return this.maps.list();
  }
}

export class XdpUnavailableError extends Error {}

export interface XdpBanSinkOptions {
  /** Exact device names, and patterns (wg*) for devices that come and go. */
  interfaces: string[];
  /** `auto`: decided per device as it is attached (modesToTry). */
  mode: XdpMode | 'auto';
  pinDir: string;
  capacity: number;
  escalation: Escalation;
  /** Answer dropped TCP segments with resets (CUT_ESTABLISHED with ACTION=drop). */
  resetTcp: boolean;
}

/** How often the segments the program reported are read: a reset comes this much after the segment, at most. */
const SEGMENT_POLL_MS = 50;
/** How soon after a link change the devices are looked at again: one burst of changes, one look. */
const RESCAN_DELAY_MS = 100;
/** A link monitor that ended is started again after this. */
const MONITOR_RESTART_MS = 1000;

/**
 * Bans in the kernel: the program on every configured interface, the maps pinned so bans outlive
 * the daemon. Devices that appear later (a VPN's tun, ppp or WireGuard device matching a pattern,
 * or a named one re-created) get the program as soon as rtnetlink reports them, and those that go
 * are released: `ip -o monitor link`, a child process, tells of every link change (no native code
 * of ours; iproute2 is a dependency already, and a monitor that ends is restarted, with the sweep
 * as the fallback). Each sweep also refreshes the gateway's own addresses.
 */
export class XdpBanSink implements BanSink {
  readonly enforced = true;
  readonly table: BanTable;
  /** Attachments by device name. */
  private readonly attached = new Map<string, Attachment>();
  /** Why a device is not attached, so a failure is logged once, not at every look. */
  private readonly failures = new Map<string, string>();
  private own = new CidrSet([]);
  private swept = 0;
  private refused = 0;
  /** Devices that got the program after start, and devices released because they went away. */
  private attachedLater = 0;
  private released = 0;
  private monitor: ChildProcess | null = null;
  private rescanTimer: NodeJS.Timeout | null = null;
  private segmentTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Who answers the TCP segments of banned addresses the program reports (the connection cutter). */
  onSegments: ((segments: DroppedSegment[]) => void) | null = null;

  private constructor(
    private readonly program: XdpProgram,
    private readonly options: XdpBanSinkOptions,
    private readonly log: Logger,
  ) {
    this.table = new XdpBanTable(program.maps, () => this.own);
  }

  /**
   * Loads and attaches; throws XdpUnavailableError when the program cannot be loaded or a named
   * interface cannot take it (a pattern may match nothing yet).
   */
  static open(options: XdpBanSinkOptions, log: Logger): XdpBanSink {
    let program: XdpProgram;
    try {
      program = XdpProgram.load(options.pinDir, options.capacity, log);
    } catch (error) {
      throw new XdpUnavailableError(`cannot load the XDP program: ${errorMessage(error)}`, { cause: error });
    }
    const sink = new XdpBanSink(program, options, log);
    program.setResetTcp(options.resetTcp);
    sink.refreshOwnAddresses();
    sink.attachMissing(false);
    const named = options.interfaces.filter((item) => !isInterfacePattern(item));
    const failed = named.filter((name) => sink.failures.has(name));
    if (failed.length > 0) {
      sink.close();
      throw new XdpUnavailableError(`the XDP program could not be attached to ${failed.map((name) => `${name} (${sink.failures.get(name)})`).join(', ')}`);
    }
    for (const [name, reason] of sink.failures) log.error({ interface: name, reason }, 'XDP program not attached to this interface; the others enforce bans');
    sink.startMonitor();
    sink.segmentTimer = setInterval(() => sink.takeSegments(), SEGMENT_POLL_MS).unref();
    log.info({ interfaces: sink.describeAttached(), patterns: options.interfaces.filter(isInterfacePattern), pinDir: options.pinDir, bans: program.maps.list().length }, 'XDP bans enforced');
    return sink;
  }

  private takeSegments(): void {
    const segments = this.program.takeSegments();
    if (segments.length > 0) this.onSegments?.(segments);
  }

  /** Turns the resets to banned addresses' TCP segments on or off (a reload of ACTION or CUT_ESTABLISHED). */
  setResetTcp(on: boolean): void {
    this.program.setResetTcp(on);
  }

  /** For the startup line: where bans are enforced. */
  describe(): string {
    const patterns = this.options.interfaces.filter(isInterfacePattern);
    const on = this.describeAttached();
    return `enforced in the kernel by XDP on ${on.length > 0 ? on.join(', ') : 'no interface yet'}${patterns.length > 0 ? `, and on devices matching ${patterns.join(', ')} as they appear` : ''}`;
  }

  ban(address: string, durationS: number, rule: string): BanOutcome {
    const parsed = parseAddress(address);
    // ALLOW_CIDRS was applied by the caller (the daemon's ban policy).
    const refusal = parsed === null ? 'not an IP address' : banRefusal(parsed.family, parsed.bytes, this.own);
    if (parsed === null || refusal !== null) {
      this.refused++;
      this.log.warn({ address, rule, reason: refusal }, 'not banned');
      return 'refused';
    }
    try {
      const { outcome, remainingS, count } = this.program.maps.ban(parsed.family, parsed.bytes, durationS, rule, this.options.escalation);
      this.log.info({ address, durationS, remainingS: Math.round(remainingS), count, rule, enforced: true, outcome }, 'banned');
      return outcome;
    } catch (error) {
      this.log.error({ address, rule, err: error }, 'ban failed');
      return 'failed';
    }
  }

  list(): BanEntry[] {
    return this.program.maps.list();
  }

  kernel(): KernelBans {
    const active = this.program.maps.active();
    const drops = this.program.maps.drops();
    const interfaces = [...this.attached.values()].map(({ name, kind, mode }) => ({ name, kind, mode }));
    return { active: { ipv4: active.v4, ipv6: active.v6 }, dropped: { ipv4: drops.v4, ipv6: drops.v6 }, interfaces };
  }

  sweep(): number {
    let deleted = 0;
    try {
      deleted = this.program.maps.sweep();
      this.swept += deleted;
      this.refreshOwnAddresses();
    } catch (error) {
      this.log.error({ err: error }, 'ban sweep failed');
    }
    this.attachMissing(true);
    return deleted;
  }

  stats(): Record<string, number> {
    const drops = this.program.maps.drops();
    return {
      xdpInterfaces: this.attached.size,
      xdpAttachedLater: this.attachedLater,
      xdpReleased: this.released,
      bansSwept: this.swept,
      bansRefused: this.refused,
      droppedV4Packets: drops.v4.packets,
      droppedV4Bytes: drops.v4.bytes,
      droppedV6Packets: drops.v6.packets,
      droppedV6Bytes: drops.v6.bytes,
      resetRequestsV4: drops.v4.resets,
      resetRequestsV6: drops.v6.resets,
    };
  }

  /** Detaches from every interface; the maps stay pinned, so the bans come back with the daemon. */
  close(): void {
    this.closed = true;
    if (this.rescanTimer !== null) clearTimeout(this.rescanTimer);
    if (this.segmentTimer !== null) clearInterval(this.segmentTimer);
    this.monitor?.kill('SIGTERM');
    for (const attachment of this.attached.values()) {
      try {
        this.program.detach(attachment);
      } catch (error) {
        this.log.error({ interface: attachment.name, err: error }, 'XDP detach failed');
      }
    }
    this.attached.clear();
    this.program.close();
  }

  private describeAttached(): string[] {
    return [...this.attached.values()].map((a) => `${a.name} (${a.kind}, ${a.mode})`);
  }

  private refreshOwnAddresses(): void {
    const own = ownAddresses();
    this.own = new CidrSet(own);
    this.program.setOwnAddresses(own);
  }

  /** Every link change: look again at the devices shortly (a burst of messages makes one look). */
  private startMonitor(): void {
    if (this.closed) return;
    const monitor = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.monitor = monitor;
    monitor.stdout.on('data', () => {
      this.rescanTimer ??= setTimeout(() => {
        this.rescanTimer = null;
        if (!this.closed) this.attachMissing(true);
      }, RESCAN_DELAY_MS);
    });
    monitor.on('error', (error) => this.log.error({ err: error }, 'cannot run ip monitor link: devices that appear get the XDP program at the next sweep'));
    monitor.on('exit', (code, signal) => {
      if (this.closed) return;
      this.log.warn({ code, signal }, 'ip monitor link ended; restarting it');
      setTimeout(() => this.startMonitor(), MONITOR_RESTART_MS).unref();
    });
    monitor.unref();
  }

  /** The configured devices present now: named ones, and those matching a pattern. */
  private wanted(): string[] {
    const names = new Set(this.options.interfaces.filter((item) => !isInterfacePattern(item)));
    const patterns = this.options.interfaces.filter(isInterfacePattern);
    if (patterns.length > 0) {
      for (const { name } of devices.list()) if (patterns.some((pattern) => interfaceMatches(pattern, name))) names.add(name);
    }
    return [...names];
  }

  /**
   * Releases attachments whose device went away (or was renamed out of the configuration) and
   * attaches wherever the program is not (any more); `report` logs what changed.
   */
  private attachMissing(report: boolean): void {
    const wanted = this.wanted();
    for (const [name, attachment] of this.attached) {
      if (wanted.includes(name) && this.program.isAttached(attachment)) continue;
      this.attached.delete(name);
      if (wanted.includes(name)) continue; // re-created, or its program removed: attached again below
      // Gone, the kernel took the program with the device (nothing to detach); renamed, it is detached.
      const detached = this.program.detach(attachment);
      this.released++;
      this.failures.delete(name);
      this.log.info({ interface: name, detached }, 'XDP interface gone; released');
    }
    for (const name of wanted) {
      if (this.attached.has(name)) continue;
      try {
        const attachment = this.program.attach(name, this.options.mode);
        this.attached.set(name, attachment);
        if (report) this.attachedLater++;
        // Every device, at start and later: with XDP_MODE=auto the mode is known only here.
        this.log.info({ interface: name, kind: attachment.kind, mode: attachment.mode, xdpMode: this.options.mode }, 'XDP program attached');
        this.failures.delete(name);
      } catch (error) {
        const reason = errorMessage(error);
        if (report && this.failures.get(name) !== reason) this.log.error({ interface: name, reason }, 'XDP program not attached to this interface; the others enforce bans');
        this.failures.set(name, reason);
      }
    }
  }
}
