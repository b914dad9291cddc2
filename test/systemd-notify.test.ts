/**
 * The pieces of btwall.service's Type=notify and watchdog: sd_notify datagrams as a real unix
 * socket receives them (a path and an abstract name), WATCHDOG_USEC/WATCHDOG_PID, the packet-path
 * health that decides whether WATCHDOG=1 goes out, and the example environment file shipped with
 * the unit.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, loadConfig } from '../src/config/config.js';
import { DOWN_LIMIT_MS, PacketPathHealth, WEDGED_AFTER_MS, type QueueReading } from '../src/daemon/health.js';
import { notifyAddress, SystemdNotifier, watchdogIntervalMs } from '../src/ops/systemd-notify.js';

const quiet = pino({ level: 'silent' });

/** A unix datagram socket (python3: Node has none) printing each datagram it gets as a JSON line. */
function receiver(address: string, count: number): { ready: Promise<void>; datagrams: Promise<string[]> } {
  const script = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = sys.argv[1]
s.bind('\\0' + a[1:] if a.startswith('@') else a)
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;
  const child = spawn('python3', ['-c', script, address, String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let readyResolve!: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.startsWith('ready\n')) readyResolve();
  });
  const datagrams = new Promise<string[]>((resolve) =>
    child.on('exit', () =>
      resolve(
        out
          .split('\n')
          .slice(1)
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as string),
      ),
    ),
  );
  return { ready, datagrams };
}

describe('sd_notify', () => {
  const dir = mkdtempSync(join(tmpdir(), 'btwall-notify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('sends READY, STATUS (only when it changes), WATCHDOG and STOPPING to a socket path', async () => {
    const path = join(dir, 'notify.sock');
    const socket = receiver(path, 4);
    await socket.ready;
    const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: path }, quiet);
    expect(notifier.enabled).toBe(true);
    notifier.ready('inspecting queue 0');
    notifier.status('inspecting queue 0');
    notifier.watchdog();
    notifier.status('unhealthy: queue 0');
    notifier.stopping('stopping');
    expect(await socket.datagrams).toEqual(['READY=1\nSTATUS=inspecting queue 0', 'WATCHDOG=1', 'STATUS=unhealthy: queue 0', 'STOPPING=1\nSTATUS=stopping']);
  });

  it('speaks to an abstract socket written @name', async () => {
    const name = `@btwall-test-${process.pid}`;
    const socket = receiver(name, 1);
    await socket.ready;
    SystemdNotifier.fromEnv({ NOTIFY_SOCKET: name }, quiet).watchdog();
    expect(await socket.datagrams).toEqual(['WATCHDOG=1']);
  });

  it('does nothing outside systemd, and ignores an address it cannot use after saying why', () => {
    expect(SystemdNotifier.fromEnv({}, quiet).enabled).toBe(false);
    expect(notifyAddress('vsock:2:1234')).toMatch(/neither a path nor an abstract socket/);
    expect(notifyAddress(`/${'x'.repeat(200)}`)).toMatch(/longer than the 108 bytes/);
    expect([...(notifyAddress('@abc') as Buffer)]).toEqual([0, 0x61, 0x62, 0x63]);
    const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: 'relative/path' }, quiet);
    expect(notifier.enabled).toBe(false);
    // A socket that went away costs the message, not the daemon.
    expect(() => SystemdNotifier.fromEnv({ NOTIFY_SOCKET: join(dir, 'gone.sock') }, quiet).watchdog()).not.toThrow();
  });

  it('pets the watchdog at a sixth of WATCHDOG_USEC, and not when WATCHDOG_PID names another process', () => {
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42)).toBe(5_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42)).toBe(5_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '43' }, 42)).toBeNull();
    expect(watchdogIntervalMs({}, 42)).toBeNull();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42)).toBeNull();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42)).toBeNull();
  });
});

describe('packet-path health', () => {
  const reading = (queue: number, sampledAtMs: number, packets: number, verdicts: number, watchdogAccepted = 0, kernelQueued: number | null = null): QueueReading => ({ queue, sampledAtMs, packets, verdicts, watchdogAccepted, kernelQueued });

  it('is healthy while every queue answers what it is handed, or is simply idle', () => {
    const health = new PacketPathHealth();
    expect(health.check(1_000, [reading(0, 900, 10, 10), reading(1, 950, 0, 0)])).toBeNull();
    expect(health.check(2_000, [reading(0, 1_900, 500, 490, 10), reading(1, 1_950, 0, 0)])).toBeNull();
    // Overloaded but answering: some batches left to the broker's watchdog, most decided.
    expect(health.check(3_000, [reading(0, 2_900, 900, 700, 210), reading(1, 2_950, 0, 0)])).toBeNull();
  });

  it('is unhealthy when a worker stops sampling (its event loop is wedged)', () => {
    const health = new PacketPathHealth();
    expect(health.check(1_000, [reading(0, 900, 10, 10)])).toBeNull();
    expect(health.check(900 + WEDGED_AFTER_MS + 1, [reading(0, 900, 10, 10)])).toMatch(/^queue 0: its worker has not run for 5\.0 s$/);
  });

  it('is unhealthy when batches were handed and every one was left to the broker', () => {
    const health = new PacketPathHealth();
    health.check(1_000, [reading(0, 900, 10, 10)]);
    expect(health.check(2_000, [reading(0, 1_900, 74, 10, 64)])).toBe("queue 0: 64 packets handed to it since the last check and none answered (the broker's watchdog accepted them)");
    // The same sample again (the worker samples once a second): the verdict stands until the next.
    expect(health.check(2_100, [reading(0, 1_900, 74, 10, 64)])).toMatch(/^queue 0: 64 packets handed/);
    expect(health.check(2_600, [reading(0, 2_500, 80, 16, 64)])).toBeNull();
  });

  it('is unhealthy when the kernel queues packets to a bound broker that takes none (stuck: the kernel then fails open)', () => {
    const health = new PacketPathHealth();
    health.check(1_000, [reading(0, 900, 10, 10, 0, 10)]);
    // Traffic taken as it is queued: healthy.
    expect(health.check(2_000, [reading(0, 1_900, 50, 50, 0, 50)])).toBeNull();
    expect(health.check(3_000, [reading(0, 2_900, 50, 50, 0, 4_000)])).toBe('queue 0: the kernel queued 3950 packets since the last check and its broker took none');
  });

  it('leaves a queue being restarted to the daemon until its restarts have failed for too long', () => {
    const health = new PacketPathHealth();
    health.down(1, 1_000);
    expect(health.check(2_000, [reading(0, 1_900, 0, 0), reading(1, 500, 0, 0)])).toBeNull();
    expect(health.check(1_000 + DOWN_LIMIT_MS + 1, [reading(0, 1_000 + DOWN_LIMIT_MS, 0, 0), reading(1, 500, 0, 0)])).toMatch(/^queue 1: down for 30\.0 s, its restarts are failing$/);
    health.up(1);
    expect(health.check(40_000, [reading(0, 39_900, 0, 0), reading(1, 39_950, 0, 0)])).toBeNull();
  });
});

describe('the example environment file (systemd/btwall.env)', () => {
  const lines = readFileSync(join(import.meta.dirname, '..', 'systemd', 'btwall.env'), 'utf8').split('\n');
  const settings = lines.filter((line) => /^#[A-Z_]+=/.test(line)).map((line) => line.slice(1).split(/=(.*)/s, 2) as [string, string]);

  it('names only variables btwall reads, each with its default value', () => {
    expect(settings.length).toBeGreaterThan(20);
    // A machine fixed here, so that the sizes chosen from memory are the same in every load.
    const host = { cores: 2, memory: { bytes: 4 * 2 ** 30, from: 'MemTotal' as const } };
    const defaults = loadConfig({ INTERFACE: 'eth0' }, host);
    for (const [name, value] of settings) {
      expect(CONFIG_VARIABLES).toContain(name);
      expect({ name, config: loadConfig({ INTERFACE: 'eth0', [name]: value || (name === 'INTERFACE' ? 'eth0' : '') }, host) }).toEqual({ name, config: defaults });
    }
  });

  it('sets nothing until the operator uncomments a line', () => {
    expect(lines.filter((line) => line.trim() !== '' && !line.startsWith('#'))).toEqual([]);
  });
});
