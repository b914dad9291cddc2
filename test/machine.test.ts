import { describe, expect, it } from 'vitest';
import { interfaceMatches, loadConfig } from '../src/config/config.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { machineProblems, memAvailableBytes, type Machine } from '../src/config/machine.js';

/** A machine with eth0 (Ethernet, native XDP) and wg0 (no link header, generic only), bpffs on /sys/fs/bpf, 8 GiB available. */
function machine(overrides: Partial<Machine> = {}): Machine {
  const links: Record<string, { index: number; type: number }> = { eth0: { index: 2, type: 1 }, wg0: { index: 3, type: 0xfffe }, can0: { index: 4, type: 280 } };
  return {
    link: (name) => links[name] ?? null,
    supports: (index, mode) => mode === 'generic' || (mode === 'native' && index === 2),
    isBpffs: (path) => path === '/sys/fs/bpf' || path.startsWith('/sys/fs/bpf/'),
    exists: (path) => ['/', '/sys', '/sys/fs', '/sys/fs/bpf', '/tmp'].includes(path),
    memAvailableBytes: () => 8 * 2 ** 30,
    ...overrides,
  };
}

const problems = (env: Record<string, string>, m = machine()) => machineProblems(loadConfig(env), m);

describe('the configuration against the machine', () => {
  it('accepts named devices that exist and support the mode, and patterns that match nothing yet', () => {
    expect(problems({ INTERFACE: 'eth0,wg0,ppp*' })).toEqual([]);
    expect(problems({ INTERFACE: 'eth0', XDP_MODE: 'native' })).toEqual([]);
    // auto (the default) takes native or generic, whichever each device has: wg0 has no native XDP and is not refused.
    expect(loadConfig({}).xdpMode).toBe('auto');
    expect(problems({ INTERFACE: 'eth0,wg0', XDP_MODE: 'auto' })).toEqual([]);
    expect(problems({ INTERFACE: 'wg0' }, machine({ supports: (_, mode) => mode === 'generic' }))).toEqual([]);
    expect(problems({ XDP_MODE: 'off' })).toEqual([]);
    // A kernel that cannot say (before 6.3) leaves it to the attach.
    expect(problems({ INTERFACE: 'wg0', XDP_MODE: 'offload' }, machine({ supports: () => null }))).toEqual([]);
  });

  it('refuses a missing device, an unsupported link type or mode, and running without XDP unasked', () => {
    expect(problems({})).toEqual([expect.stringMatching(/^INTERFACE="": .*XDP_MODE=off/)]);
    expect(problems({ INTERFACE: 'eth0,eth9' })).toEqual([expect.stringMatching(/^INTERFACE="eth0,eth9": no interface eth9 .*eth9\*/)]);
    expect(problems({ INTERFACE: 'can0' })).toEqual([expect.stringMatching(/^INTERFACE="can0": can0 has link type 280/)]);
    expect(problems({ INTERFACE: 'wg0', XDP_MODE: 'native' })).toEqual([expect.stringMatching(/^XDP_MODE="native": wg0 has no native XDP support/)]);
    expect(problems({ INTERFACE: 'eth0', XDP_MODE: 'offload' })).toEqual([expect.stringMatching(/^XDP_MODE="offload": eth0 cannot run XDP programs on the NIC itself/)]);
    expect(problems({ INTERFACE: 'eth0', XDP_MODE: 'off' })).toEqual([expect.stringMatching(/^XDP_MODE="off": .*INTERFACE="eth0"/)]);
  });

  it('wants the pin directory on bpffs, or under /sys/fs/bpf where it is mounted on demand', () => {
    expect(problems({ INTERFACE: 'eth0', BPF_PIN_DIR: '/sys/fs/bpf/a/b' })).toEqual([]);
    expect(problems({ INTERFACE: 'eth0', BPF_PIN_DIR: '/tmp/pins' })).toEqual([expect.stringMatching(/^BPF_PIN_DIR="\/tmp\/pins": \/tmp \(where \/tmp\/pins would be created\) is not on a bpf filesystem/)]);
    const unmounted = machine({ isBpffs: () => false });
    expect(problems({ INTERFACE: 'eth0' }, unmounted)).toEqual([]);
    // Without XDP nothing is pinned.
    expect(problems({ XDP_MODE: 'off', BPF_PIN_DIR: '/tmp/pins' })).toEqual([]);
  });

  it('checks the tables against MemAvailable, naming the figures, and against what one array holds', () => {
    const small = machine({ memAvailableBytes: () => 512 * 2 ** 20 });
    // 1 M flows take over 300 MB per queue: with the 256 MB reserve, more than 512 MB.
    const big = { FLOW_CAPACITY: '1048576', PEER_CACHE_SIZE: '65536', BAN_CAPACITY: '131072' };
    const planned = Pipeline.plannedMemory(loadConfig(big));
    const mb = (bytes: number) => Math.round(bytes / 2 ** 20);
    expect(mb(planned.perQueueBytes)).toBeGreaterThan(300);
    expect(problems({ INTERFACE: 'eth0', QUEUE_NUM: '0', ...big }, small)).toEqual([
      `FLOW_CAPACITY="1048576", PEER_CACHE_SIZE="65536", BAN_CAPACITY="131072", QUEUE_NUM="0": the tables need ${mb(planned.perQueueBytes + planned.sharedBytes)} MB (${mb(planned.perQueueBytes)} MB per queue, 1 queue, ${mb(planned.sharedBytes)} MB shared by all), the XDP ban maps 31 MB and 256 MB more for the rest of the daemon, but this machine has 512 MB available (MemAvailable in /proc/meminfo); lower FLOW_CAPACITY or PEER_CACHE_SIZE or BAN_CAPACITY, or set fewer queues in QUEUE_NUM`,
    ]);
    expect(problems({ INTERFACE: 'eth0', FLOW_CAPACITY: '262144', QUEUE_NUM: '0' }, small)).toEqual([]);
    expect(problems({ INTERFACE: 'eth0', FLOW_CAPACITY: '262144', QUEUE_NUM: '0-3' }, small)).toEqual([expect.stringContaining('QUEUE_NUM="0-3"')]);
    expect(problems({ INTERFACE: 'eth0', FLOW_CAPACITY: '67108864' }, machine({ memAvailableBytes: () => 2 ** 50 }))).toEqual([
      expect.stringMatching(/^FLOW_CAPACITY="67108864": .* more than the 4096 MB one array can hold; at most \d+ flows per queue/),
    ]);
  });

  it('reads MemAvailable and matches interface patterns', () => {
    expect(memAvailableBytes('MemTotal:       24683568 kB\nMemFree: 1 kB\nMemAvailable:   24056332 kB\n')).toBe(24056332 * 1024);
    expect(memAvailableBytes('MemTotal: 1 kB\n')).toBeNull();
    expect(['wg0', 'wg-office', 'ppp12', 'eth0', 'xwg0'].filter((n) => interfaceMatches('wg*', n) || interfaceMatches('ppp?2', n))).toEqual(['wg0', 'wg-office', 'ppp12']);
    expect(interfaceMatches('eth0.5', 'eth0x5')).toBe(false);
  });
});
