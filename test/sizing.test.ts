import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { machineProblems, MEMORY_RESERVE_BYTES, tablesMemory, type Machine } from '../src/config/machine.js';
import {
  BAN_CAPACITY_CAP,
  BAN_SHARE,
  banMapsBytes,
  cgroupLimitBytes,
  cgroupLimitFiles,
  cpuListLength,
  FLOW_CAPACITY_CAP,
  FLOW_CAPACITY_FLOOR,
  machineMemory,
  memTotalBytes,
  PEER_CACHE_CAP,
  PEER_SHARE,
  TABLES_SHARE,
  type MachineMemory,
} from '../src/config/sizing.js';

const GiB = 2 ** 30;
const ram = (bytes: number): MachineMemory => ({ bytes, from: 'MemTotal' });
const sized = (bytes: number, cores: number, env: Record<string, string> = {}) => loadConfig(env, { cores, memory: ram(bytes) });
const isPowerOfTwo = (n: number) => Number.isInteger(Math.log2(n));

/** A machine whose MemAvailable is `available` and that has what else the checks look for. */
function machineWith(available: number): Machine {
  return {
    link: () => ({ index: 2, type: 1 }),
    supports: () => true,
    isBpffs: () => true,
    exists: () => true,
    memAvailableBytes: () => available,
  };
}

describe('table sizes from the machine memory', () => {
  it('gives a 1 GB machine tables well under its memory, leaving the reserve and the machine room', () => {
    for (const cores of [1, 2]) {
      const config = sized(GiB, cores, { INTERFACE: 'eth0' });
      const tables = tablesMemory(config);
      expect(tables.totalBytes + tables.banMapsBytes).toBeLessThanOrEqual(GiB * TABLES_SHARE);
      // What a 1 GB VPS has available after boot (about 700 MB) holds the tables, the ban maps and the reserve.
      expect(tables.totalBytes + tables.banMapsBytes + MEMORY_RESERVE_BYTES).toBeLessThan(0.5 * GiB);
      expect(machineProblems(config, machineWith(700 * 2 ** 20))).toEqual([]);
      expect(config.flowCapacity).toBeGreaterThanOrEqual(FLOW_CAPACITY_FLOOR);
      expect(tables.sizes).toEqual({
        flowCapacity: { value: config.flowCapacity, from: 'memory' },
        peerCacheSize: { value: config.peerCacheSize, from: 'memory' },
        banCapacity: { value: config.banCapacity, from: 'memory' },
      });
      expect(tables.banMapsBytes).toBe(banMapsBytes(config.banCapacity));
    }
    // The old fixed default (1 M flows) would not have fitted there.
    expect(machineProblems(sized(GiB, 2, { INTERFACE: 'eth0', FLOW_CAPACITY: '1048576' }), machineWith(700 * 2 ** 20))).toEqual([expect.stringContaining('FLOW_CAPACITY="1048576"')]);
  });

  it('takes the largest powers of two that fit the budget, the flows split across the resolved queues', () => {
    for (const [bytes, cores] of [[GiB, 1], [GiB, 8], [2 * GiB, 2], [4 * GiB, 2], [16 * GiB, 1], [16 * GiB, 8]] as const) {
      const config = sized(bytes, cores);
      const tables = tablesMemory(config);
      const budget = Math.floor(bytes * TABLES_SHARE);
      expect(config.tableSizing.budgetBytes).toBe(budget);
      expect(tables.queueCount).toBe(cores);
      expect(isPowerOfTwo(config.flowCapacity) && isPowerOfTwo(config.peerCacheSize) && isPowerOfTwo(config.banCapacity)).toBe(true);
      expect(tables.totalBytes + tables.banMapsBytes).toBeLessThanOrEqual(budget);
      expect(tables.sharedBytes).toBeLessThanOrEqual(budget * PEER_SHARE);
      expect(tables.banMapsBytes).toBeLessThanOrEqual(budget * BAN_SHARE);
      // Twice the flows would not fit in what the shared tables leave each queue, unless the cap stopped them.
      const doubled = tablesMemory(sized(bytes, cores, { FLOW_CAPACITY: String(config.flowCapacity * 2), PEER_CACHE_SIZE: String(config.peerCacheSize), BAN_CAPACITY: String(config.banCapacity) }));
      if (config.flowCapacity < FLOW_CAPACITY_CAP) expect(doubled.totalBytes + doubled.banMapsBytes).toBeGreaterThan(budget);
      if (config.banCapacity < BAN_CAPACITY_CAP) expect(banMapsBytes(config.banCapacity * 2)).toBeGreaterThan(budget * BAN_SHARE);
      const morePeers = tablesMemory(sized(bytes, cores, { PEER_CACHE_SIZE: String(config.peerCacheSize * 2) }));
      if (config.peerCacheSize < PEER_CACHE_CAP) expect(morePeers.sharedBytes).toBeGreaterThan(budget * PEER_SHARE);
    }
    // More queues, fewer flows each; more memory, more flows, up to the cap.
    expect(sized(GiB, 8).flowCapacity).toBeLessThan(sized(GiB, 1).flowCapacity);
    expect(sized(2 * GiB, 2).flowCapacity).toBeGreaterThan(sized(GiB, 2).flowCapacity);
    expect(sized(16 * GiB, 8).flowCapacity).toBe(FLOW_CAPACITY_CAP);
    // Without XDP there are no ban maps, and their share goes to the flows.
    const noXdp = tablesMemory(sized(GiB, 1, { XDP_MODE: 'off' }));
    expect(noXdp.banMapsBytes).toBe(0);
    expect(sized(900 * 2 ** 20, 1, { XDP_MODE: 'off' }).flowCapacity).toBeGreaterThan(sized(900 * 2 ** 20, 1).flowCapacity);
    // QUEUE_NUM=auto on 64 cores resolves to 16 queues, and the flows are split 16 ways, not 64.
    expect(sized(4 * GiB, 64).flowCapacity).toBe(sized(4 * GiB, 16, { QUEUE_NUM: '0-15' }).flowCapacity);
  });

  it('sizes from the cgroup limit when it is below MemTotal', () => {
    expect(machineMemory(16 * GiB, GiB)).toEqual({ bytes: GiB, from: 'cgroup memory limit' });
    expect(machineMemory(GiB, 16 * GiB)).toEqual({ bytes: GiB, from: 'MemTotal' });
    expect(machineMemory(GiB, null)).toEqual({ bytes: GiB, from: 'MemTotal' });
    expect(machineMemory(null, null)).toEqual({ bytes: GiB, from: 'unknown' });
    const limited = loadConfig({}, { cores: 2, memory: machineMemory(16 * GiB, GiB) });
    expect(limited.flowCapacity).toBe(sized(GiB, 2).flowCapacity);
    expect(tablesMemory(limited).memory).toEqual({ bytes: GiB, from: 'cgroup memory limit', budgetBytes: GiB * TABLES_SHARE });
    // A size set by hand is checked against the cgroup's limit when it is below MemAvailable: the host has 8 GiB free, the daemon may take 1 GiB.
    const handSized = loadConfig({ INTERFACE: 'eth0', FLOW_CAPACITY: '2097152' }, { cores: 1, memory: machineMemory(16 * GiB, GiB) });
    expect(machineProblems(handSized, machineWith(8 * GiB))).toEqual([expect.stringMatching(/^FLOW_CAPACITY="2097152", .* but this machine has 1024 MB available \(the daemon's cgroup memory limit\)/)]);
    expect(machineProblems({ ...handSized, tableSizing: { ...handSized.tableSizing, memory: ram(16 * GiB) } }, machineWith(8 * GiB))).toEqual([]);
  });

  it('reads MemTotal and the cgroup limit files', () => {
    expect(memTotalBytes('MemTotal:        1004256 kB\nMemFree:          212340 kB\n')).toBe(1004256 * 1024);
    expect(memTotalBytes('MemFree: 1 kB\n')).toBeNull();
    expect(cgroupLimitBytes('536870912\n')).toBe(512 * 2 ** 20);
    expect(cgroupLimitBytes('max\n')).toBeNull();
    // v2 and v1 each: the full path first, then its tails, for a mount whose root is the process's own cgroup.
    expect(cgroupLimitFiles('0::/system.slice/btwall.service\n4:memory:/lxc/ct1\n3:cpu:/x\n')).toEqual([
      ['/sys/fs/cgroup/system.slice/btwall.service/memory.max', '/sys/fs/cgroup/btwall.service/memory.max', '/sys/fs/cgroup/memory.max'],
      ['/sys/fs/cgroup/memory/lxc/ct1/memory.limit_in_bytes', '/sys/fs/cgroup/memory/ct1/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.limit_in_bytes'],
    ]);
    expect(cgroupLimitFiles('0::/\n')).toEqual([['/sys/fs/cgroup/memory.max']]);
  });

  it('keeps the values of variables that are set, and says which sizes came from where', () => {
    const config = sized(GiB, 2, { FLOW_CAPACITY: '4096' });
    expect(config.flowCapacity).toBe(4096);
    expect(config.tableSizing).toMatchObject({ flowCapacity: 'FLOW_CAPACITY', peerCacheSize: 'memory' });
    expect(sized(GiB, 2, { PEER_CACHE_SIZE: '2048' })).toMatchObject({ peerCacheSize: 2048, tableSizing: { flowCapacity: 'memory', peerCacheSize: 'PEER_CACHE_SIZE' } });
    expect(sized(GiB, 2, { BAN_CAPACITY: '5000' })).toMatchObject({ banCapacity: 5000, tableSizing: { banCapacity: 'BAN_CAPACITY', flowCapacity: 'memory' } });
    // A machine too small even for the floors is refused by the memory check, naming the sizes as sized.
    const tiny = sized(16 * 2 ** 20, 1, { INTERFACE: 'eth0' });
    expect(tiny.flowCapacity).toBe(FLOW_CAPACITY_FLOOR);
    expect(machineProblems(tiny, machineWith(200 * 2 ** 20))).toEqual([
      expect.stringMatching(/^FLOW_CAPACITY unset \(16384, sized from memory\), PEER_CACHE_SIZE unset \(\d+, sized from memory\), BAN_CAPACITY unset \(4096, sized from memory\), QUEUE_NUM="auto \(0\)": the tables need .*, the XDP ban maps 1 MB and 256 MB more/),
    ]);
  });
});

describe('the XDP ban maps', () => {
  it("count the kernel's per-CPU part for every possible CPU, as read from a kernel CPU list", () => {
    expect(cpuListLength('0-1\n')).toBe(2);
    expect(cpuListLength('0-3,6,8-9')).toBe(7);
    expect(cpuListLength('')).toBe(0);
    expect(cpuListLength('3-1')).toBe(0);
    expect(cpuListLength('a')).toBe(0);
    // 896 bytes a map with 2 possible CPUs, 960 with 4 (fdinfo memlock on 6.18), and 120 and 128 per entry.
    expect(banMapsBytes(4096, 2)).toBe(2 * 896 + 4096 * (120 + 128));
    expect(banMapsBytes(4096, 4) - banMapsBytes(4096, 2)).toBe(2 * 64);
  });
});
