/**
 * Table sizes for the variables left unset (FLOW_CAPACITY, PEER_CACHE_SIZE, BAN_CAPACITY), from
 * the machine's memory: the smaller of MemTotal and the cgroup's memory limit (a VPS, a container,
 * a systemd MemoryMax). The tables of all queues and the XDP ban maps together take at most
 * TABLES_SHARE of it:
 *
 *   budget          = TABLES_SHARE × memory
 *   PEER_CACHE_SIZE = the largest power of two whose shared tables fit in PEER_SHARE × budget
 *   BAN_CAPACITY    = the largest power of two whose two ban maps fit in BAN_SHARE × budget
 *                     (none with XDP_MODE=off)
 *   FLOW_CAPACITY   = the largest power of two whose per-queue tables fit in
 *                     (budget − the shared tables − the ban maps) / queues
 *
 * each between its floor and its cap. The queues are the resolved ones (QUEUE_NUM=auto: the
 * cores), the bytes per flow those of the configured detectors (Pipeline.plannedMemory), so the
 * budget holds whatever else the configuration says. The rest of memory is for the daemon's heaps,
 * the kernel's queues and ban maps, and the machine itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Pipeline } from '../pipeline/pipeline.js';
import type { Config } from './config.js';

/** What the tables of all queues together may take of the machine's memory. */
export const TABLES_SHARE = 1 / 4;
/** What of that budget the peer caches (shared by all queues) may take; the flows get what the caches and ban maps leave. */
export const PEER_SHARE = 1 / 8;
/** What of that budget the XDP ban maps (kernel memory, IPv4 and IPv6) may take. */
export const BAN_SHARE = 1 / 8;
/** Fewer flows than this per queue would forget connections under an ordinary load; a machine too small for them is refused by the memory check. */
export const FLOW_CAPACITY_FLOOR = 2 ** 14;
/** The old fixed default: a gateway with more connections per queue than this sets FLOW_CAPACITY. */
export const FLOW_CAPACITY_CAP = 2 ** 20;
export const PEER_CACHE_FLOOR = 2 ** 12;
export const PEER_CACHE_CAP = 2 ** 17;
export const BAN_CAPACITY_FLOOR = 2 ** 12;
/** The old fixed default. */
export const BAN_CAPACITY_CAP = 2 ** 17;
/** sizeof(struct btw_ban) (bpf/btwall.h), the ban maps' value: a change shows in test/xdp.test.ts's memlock comparison. */
export const BAN_VALUE_BYTES = 48;

/**
 * What the kernel charges for a preallocated LRU hash: 832 bytes for the map, 32 per possible CPU
 * (the hash's 8 per-CPU lock counters), and per entry 64 bytes of element and bucket plus key and
 * value, each rounded up to 8 (the maps' memlock in /proc/PID/fdinfo on this 6.18 kernel: 896
 * bytes with 2 possible CPUs, 960 with 4; 120 bytes per ban4 entry, 128 per ban6, at every
 * capacity from 4096 to 262144; test/xdp.test.ts compares).
 */
const lruMapBytes = (entries: number, keyBytes: number, valueBytes: number, cpus: number) =>
  832 + 32 * cpus + entries * (64 + Math.ceil(keyBytes / 8) * 8 + Math.ceil(valueBytes / 8) * 8);

/** The ban4 and ban6 maps at this capacity, bytes of kernel memory. */
export function banMapsBytes(capacity: number, cpus = possibleCpus()): number {
  return lruMapBytes(capacity, 4, BAN_VALUE_BYTES, cpus) + lruMapBytes(capacity, 16, BAN_VALUE_BYTES, cpus);
}

let possibleCpuCount = 0;
/**
 * The CPUs the kernel may ever bring up (/sys/devices/system/cpu/possible: "0-3", "0,2-5"), for
 * which per-CPU memory is allocated whether they are online or not; the online ones without it.
 */
export function possibleCpus(): number {
  if (possibleCpuCount === 0) {
    let list = '';
    try {
      list = readFileSync('/sys/devices/system/cpu/possible', 'utf8');
    } catch {
      // No sysfs (a container without it): the online CPUs are the best figure there is.
    }
    possibleCpuCount = cpuListLength(list) || availableParallelism();
  }
  return possibleCpuCount;
}

/** How many CPUs a kernel CPU list ("0-3,6,8-9") names; 0 for anything else. */
export function cpuListLength(list: string): number {
  let count = 0;
  for (const part of list.trim().split(',')) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (range === null) return 0;
    const first = Number(range[1]);
    const last = range[2] === undefined ? first : Number(range[2]);
    if (last < first) return 0;
    count += last - first + 1;
  }
  return count;
}
/** Memory unknown (no /proc/meminfo): sized as for the smallest machine the defaults are made for. */
export const UNKNOWN_MEMORY_BYTES = 2 ** 30;

/** The memory the tables are sized from, and where the figure comes from. */
export interface MachineMemory {
  bytes: number;
  from: 'MemTotal' | 'cgroup memory limit' | 'unknown';
}

/** The figures loadConfig takes from the host; injected in tests. */
export interface HostResources {
  /** The CPUs this process may run on (its affinity mask), for QUEUE_NUM=auto. */
  cores: number;
  memory: MachineMemory;
}

/** How the table sizes of a configuration were chosen: what check-config and `btwall status` show. */
export interface TableSizing {
  memory: MachineMemory;
  /** TABLES_SHARE of the memory. */
  budgetBytes: number;
  flowCapacity: 'memory' | 'FLOW_CAPACITY';
  peerCacheSize: 'memory' | 'PEER_CACHE_SIZE';
  banCapacity: 'memory' | 'BAN_CAPACITY';
}

/** MemTotal of /proc/meminfo, bytes; null when absent. */
export function memTotalBytes(meminfo: string): number | null {
  const kb = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo)?.[1];
  return kb === undefined ? null : Number(kb) * 1024;
}

/** A cgroup limit file's figure (v2 memory.max, v1 memory.limit_in_bytes); null for `max` (none). */
export function cgroupLimitBytes(text: string): number | null {
  const value = text.trim();
  return /^\d+$/.test(value) ? Number(value) : null;
}

/** The smaller of MemTotal and the cgroup limit (a limit above MemTotal limits nothing). */
export function machineMemory(memTotal: number | null, cgroupLimit: number | null): MachineMemory {
  if (cgroupLimit !== null && (memTotal === null || cgroupLimit < memTotal)) return { bytes: cgroupLimit, from: 'cgroup memory limit' };
  if (memTotal !== null) return { bytes: memTotal, from: 'MemTotal' };
  return { bytes: UNKNOWN_MEMORY_BYTES, from: 'unknown' };
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Where this process's memory cgroup may have its limit file, most likely first: v2 (`0::/path`)
 * memory.max, v1 (`N:memory:/path`) memory.limit_in_bytes. The mount's root need not be the
 * hierarchy's (a container sees its own cgroup at the root, and /proc/self/cgroup may still name
 * the full path), so the path is tried whole, then without its leading parts, down to the root.
 */
export function cgroupLimitFiles(selfCgroup: string): string[][] {
  const candidates: string[][] = [];
  for (const line of selfCgroup.split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (path === undefined) continue;
    const parts = path.split('/').filter((part) => part !== '');
    const under = (mount: string, file: string) => parts.map((_, i) => `${mount}/${parts.slice(i).join('/')}/${file}`).concat(`${mount}/${file}`);
    if (controllers === '') candidates.push(under(CGROUP_ROOT, 'memory.max'));
    if (controllers.split(',').includes('memory')) candidates.push(under(`${CGROUP_ROOT}/memory`, 'memory.limit_in_bytes'));
  }
  return candidates;
}

const readOrNull = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
};

/** This host's memory, as the tables are sized from it. */
export function hostMemory(): MachineMemory {
  const meminfo = readOrNull('/proc/meminfo');
  const limits = cgroupLimitFiles(readOrNull('/proc/self/cgroup') ?? '')
    .map((files) => files.find((path) => existsSync(path)))
    .map((path) => (path === undefined ? null : cgroupLimitBytes(readOrNull(path) ?? '')))
    .filter((bytes): bytes is number => bytes !== null);
  return machineMemory(meminfo === null ? null : memTotalBytes(meminfo), limits.length === 0 ? null : Math.min(...limits));
}

/** The largest power of two from `floor` to `cap` whose bytes fit in `budget`; `floor` when none does. */
function largestFitting(floor: number, cap: number, budget: number, bytes: (size: number) => number): number {
  let size = floor;
  while (size * 2 <= cap && bytes(size * 2) <= budget) size *= 2;
  return size;
}

/** The kernel memory of a configuration's ban maps: none without an XDP program. */
export function configBanMapsBytes(config: Pick<Config, 'xdpMode' | 'banCapacity'>): number {
  return config.xdpMode === 'off' ? 0 : banMapsBytes(config.banCapacity);
}

/**
 * The configuration with FLOW_CAPACITY, PEER_CACHE_SIZE and BAN_CAPACITY sized from memory where
 * `explicit` says the variable was not set (its parsed value is kept where it was).
 */
export function sizeTables(
  config: Omit<Config, 'tableSizing'>,
  memory: MachineMemory,
  explicit: { flowCapacity: boolean; peerCacheSize: boolean; banCapacity: boolean },
): Config {
  const budgetBytes = Math.floor(memory.bytes * TABLES_SHARE);
  const queueCount = config.queues.last - config.queues.first + 1;
  const peerCacheSize = explicit.peerCacheSize
    ? config.peerCacheSize
    : largestFitting(PEER_CACHE_FLOOR, PEER_CACHE_CAP, budgetBytes * PEER_SHARE, (size) => Pipeline.plannedMemory({ ...config, peerCacheSize: size }).sharedBytes);
  const banCapacity = explicit.banCapacity ? config.banCapacity : largestFitting(BAN_CAPACITY_FLOOR, BAN_CAPACITY_CAP, budgetBytes * BAN_SHARE, banMapsBytes);
  const withPeers = { ...config, peerCacheSize, banCapacity };
  const flowBudget = (budgetBytes - Pipeline.plannedMemory(withPeers).sharedBytes - configBanMapsBytes(withPeers)) / queueCount;
  const flowCapacity = explicit.flowCapacity
    ? config.flowCapacity
    : largestFitting(FLOW_CAPACITY_FLOOR, FLOW_CAPACITY_CAP, flowBudget, (size) => Pipeline.plannedMemory({ ...withPeers, flowCapacity: size }).perQueueBytes);
  const tableSizing: TableSizing = {
    memory,
    budgetBytes,
    flowCapacity: explicit.flowCapacity ? 'FLOW_CAPACITY' : 'memory',
    peerCacheSize: explicit.peerCacheSize ? 'PEER_CACHE_SIZE' : 'memory',
    banCapacity: explicit.banCapacity ? 'BAN_CAPACITY' : 'memory',
  };
  return { ...withPeers, flowCapacity, tableSizing };
}
