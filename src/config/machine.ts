/**
 * The daemon's configuration against this machine: what the schema (config.ts) cannot know. Each
 * problem names its variable and what is wrong, and `btwall run` refuses them all with exit 78
 * before any rule, queue or XDP program is touched. Everything here only reads.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { BPFFS, devices, linkKind } from '../bans/xdp.js';
import { Pipeline } from '../pipeline/pipeline.js';
import { sharedTableBytes, type SharedTables } from '../pipeline/shared-tables.js';
import { isInterfacePattern, type Config } from './config.js';
import { configBanMapsBytes, type TableSizing } from './sizing.js';

/** What the tables may not take of MemAvailable: the daemon's heaps, the queues' shared memory, the rest of the machine. */
export const MEMORY_RESERVE_BYTES = 256 * 2 ** 20;
/** The most elements one typed array holds in this Node.js (V8's limit, 2^32). */
const MAX_TYPED_ARRAY_BYTES = 2 ** 32;

/** The machine as the checks see it: injectable, so they are unit-tested without a kernel. */
export interface Machine {
  link(name: string): { index: number; type: number } | null;
  /** Whether the device's driver supports the XDP mode; null when the kernel cannot say. */
  supports(ifindex: number, mode: 'generic' | 'native' | 'offload'): boolean | null;
  isBpffs(path: string): boolean;
  exists(path: string): boolean;
  /** /proc/meminfo MemAvailable, bytes; null when unknown. */
  memAvailableBytes(): number | null;
}

export function memAvailableBytes(meminfo: string): number | null {
  const kb = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo)?.[1];
  return kb === undefined ? null : Number(kb) * 1024;
}

export const thisMachine: Machine = {
  link: devices.link,
  supports: devices.supports,
  isBpffs: devices.isBpffs,
  exists: existsSync,
  memAvailableBytes: () => memAvailableBytes(readFileSync('/proc/meminfo', 'utf8')),
};

const MB = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MB`;
const shown = (name: string, value: string) => `${name}=${JSON.stringify(value)}`;
/** A table size as set, or as sized from memory when its variable is unset. */
const sizeShown = (name: string, value: number, from: string) => (from === name ? shown(name, String(value)) : `${name} unset (${value}, sized from memory)`);

function interfaceProblems(config: Config, machine: Machine): string[] {
  const named = shown('INTERFACE', config.interfaces.join(','));
  if (config.xdpMode === 'off') {
    return config.interfaces.length === 0 ? [] : [`${shown('XDP_MODE', 'off')}: attaches no XDP program, yet ${named} names interfaces for it; unset INTERFACE or choose auto, generic, native or offload`];
  }
  if (config.interfaces.length === 0) {
    return [`${named}: no interface for the XDP ban program, so bans would not be enforced in the kernel; name the interfaces (patterns such as wg*,ppp* too), or set XDP_MODE=off to run without kernel bans`];
  }
  const problems: string[] = [];
  for (const name of config.interfaces.filter((item) => !isInterfacePattern(item))) {
    const link = machine.link(name);
    if (link === null) {
      problems.push(`${named}: no interface ${name} in this network namespace (a device that comes and goes is named by a pattern, such as ${name}*)`);
      continue;
    }
    if (linkKind(link.type) === null) {
      problems.push(`${named}: ${name} has link type ${link.type} (ARPHRD), neither Ethernet nor a bare IP device: the XDP program cannot parse its frames`);
      continue;
    }
    // auto takes native or generic, whichever the device has: nothing to refuse.
    if (config.xdpMode !== 'auto' && machine.supports(link.index, config.xdpMode) === false) {
      const what = config.xdpMode === 'native' ? 'has no native XDP support in its driver; use XDP_MODE=generic' : 'cannot run XDP programs on the NIC itself (no hardware offload); use XDP_MODE=native or generic';
      problems.push(`${shown('XDP_MODE', config.xdpMode)}: ${name} ${what}`);
    }
  }
  return problems;
}

/** The pin directory, or its nearest existing ancestor (it is created there), must be on bpffs; under /sys/fs/bpf it is mounted when it is not. */
function pinDirProblems(config: Config, machine: Machine): string[] {
  if (config.xdpMode === 'off') return [];
  const dir = config.bpfPinDir;
  if (!machine.isBpffs(BPFFS) && (dir === BPFFS || dir.startsWith(`${BPFFS}/`))) return [];
  let existing = dir;
  while (!machine.exists(existing) && existing !== '/') existing = dirname(existing);
  if (machine.isBpffs(existing)) return [];
  return [`${shown('BPF_PIN_DIR', dir)}: ${existing === dir ? dir : `${existing} (where ${dir} would be created)`} is not on a bpf filesystem, so the ban maps cannot be pinned there; use a directory under ${BPFFS}, or mount one (mount -t bpf bpf DIR)`];
}

/** The tables of every queue, against what one array may hold and what the machine has available. */
function memoryProblems(config: Config, machine: Machine): string[] {
  const planned = Pipeline.plannedMemory(config);
  if (planned.largestArrayBytes > MAX_TYPED_ARRAY_BYTES) {
    const perFlow = planned.largestArrayBytes / config.flowCapacity;
    return [
      `${shown('FLOW_CAPACITY', String(config.flowCapacity))}: the detectors' state of that many flows (${perFlow} bytes each) would be one array of ${MB(planned.largestArrayBytes)}, more than the ${MB(MAX_TYPED_ARRAY_BYTES)} one array can hold; at most ${Math.floor(MAX_TYPED_ARRAY_BYTES / perFlow)} flows per queue (use a QUEUE_NUM range for more)`,
    ];
  }
  const memAvailable = machine.memAvailableBytes();
  // MemAvailable is the host's; a cgroup limit below it (a container, MemoryMax=) is what this daemon may take.
  const memory = config.tableSizing.memory;
  const limited = memory.from === 'cgroup memory limit' && (memAvailable === null || memory.bytes < memAvailable);
  const available = limited ? memory.bytes : memAvailable;
  const tables = tablesMemory(config);
  if (available === null || tables.totalBytes + tables.banMapsBytes + MEMORY_RESERVE_BYTES <= available) return [];
  const sizing = config.tableSizing;
  const bans = tables.banMapsBytes > 0;
  return [
    `${sizeShown('FLOW_CAPACITY', config.flowCapacity, sizing.flowCapacity)}, ${sizeShown('PEER_CACHE_SIZE', config.peerCacheSize, sizing.peerCacheSize)}, ${bans ? `${sizeShown('BAN_CAPACITY', config.banCapacity, sizing.banCapacity)}, ` : ''}${shown('QUEUE_NUM', tables.queues)}: the tables need ${MB(tables.totalBytes)} (${MB(tables.perQueueBytes)} per queue, ${tables.queueCount} queue${tables.queueCount === 1 ? '' : 's'}, ${MB(tables.sharedBytes)} shared by all)${bans ? `, the XDP ban maps ${MB(tables.banMapsBytes)}` : ''} and ${MB(MEMORY_RESERVE_BYTES)} more for the rest of the daemon, but this machine has ${MB(available)} available (${limited ? "the daemon's cgroup memory limit" : 'MemAvailable in /proc/meminfo'}); lower FLOW_CAPACITY or PEER_CACHE_SIZE${bans ? ' or BAN_CAPACITY' : ''}, or set fewer queues in QUEUE_NUM`,
  ];
}

/** What check-config prints of the tables: the queues, what each table takes at its size, and where the sizes came from. */
export interface TablesMemory {
  queues: string;
  queueCount: number;
  perQueueBytes: number;
  sharedBytes: number;
  /** The daemon's own tables: perQueueBytes × queueCount + sharedBytes. */
  totalBytes: number;
  /** The XDP ban maps (IPv4 and IPv6, BAN_CAPACITY entries each): kernel memory, outside totalBytes; 0 with XDP_MODE=off. */
  banMapsBytes: number;
  /** Each queue's flow table (with the per-flow arrival and action arrays), and the tables all queues share, bytes. */
  perTableBytes: { flowsPerQueue: number } & Record<keyof SharedTables, number>;
  /** Each size, and whether its variable set it or the machine's memory did (src/config/sizing.ts). */
  sizes: {
    flowCapacity: { value: number; from: TableSizing['flowCapacity'] };
    peerCacheSize: { value: number; from: TableSizing['peerCacheSize'] };
    banCapacity: { value: number; from: TableSizing['banCapacity'] };
  };
  /** The memory the sizes come from, and the tables' share of it. */
  memory: TableSizing['memory'] & { budgetBytes: number };
}

export function tablesMemory(config: Config): TablesMemory {
  const { first, last, auto } = config.queues;
  const planned = Pipeline.plannedMemory(config);
  const queueCount = last - first + 1;
  const range = first === last ? String(first) : `${first}-${last}`;
  const sizing = config.tableSizing;
  return {
    queues: auto ? `auto (${range})` : range,
    queueCount,
    perQueueBytes: planned.perQueueBytes,
    sharedBytes: planned.sharedBytes,
    totalBytes: planned.perQueueBytes * queueCount + planned.sharedBytes,
    banMapsBytes: configBanMapsBytes(config),
    perTableBytes: { flowsPerQueue: planned.perQueueBytes, ...sharedTableBytes(config) },
    sizes: {
      flowCapacity: { value: config.flowCapacity, from: sizing.flowCapacity },
      peerCacheSize: { value: config.peerCacheSize, from: sizing.peerCacheSize },
      banCapacity: { value: config.banCapacity, from: sizing.banCapacity },
    },
    memory: { ...sizing.memory, budgetBytes: sizing.budgetBytes },
  };
}

/** Every way this configuration cannot run on this machine, each naming its variable; empty when it can. */
export function machineProblems(config: Config, machine: Machine = thisMachine): string[] {
  return [...interfaceProblems(config, machine), ...pinDirProblems(config, machine), ...memoryProblems(config, machine)];
}
