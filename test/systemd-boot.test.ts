/**
 * The shipped unit booted for real: systemd (Debian's, as PID 1 of a systemd-nspawn container over
 * an overlay of this machine's root) runs `make install`'s btwall.service with all of its
 * sandboxing, in a network namespace of the test's own with one veth pair and no route anywhere.
 * It checks READY=1 only once the rules and the XDP program are in place, the STATUS= line, the
 * watchdog being petted and, when the daemon stops answering, firing and restarting it; reload;
 * and a clean stop that removes the rules.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseKernel, createNamespace, type Namespace } from './helpers/netns.js';

const ROOT = join(import.meta.dirname, '..');
const NAME = `btwsd-${process.pid}`;
const BASE = `/tmp/${NAME}`;
const MERGED = join(BASE, 'root');
/** The container's bpffs: a directory of the host's, bound at the container's /sys/fs/bpf. */
const HOST_BPF = `/sys/fs/bpf/${NAME}`;
/** Short, so that the watchdog's firing is seen within the test. */
const WATCHDOG_S = 3;

const canBoot = canUseKernel() && spawnSync('systemd-nspawn', ['--version']).status === 0;

/** A process's name, or '' when it is gone. */
function commOf(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe.runIf(canBoot)('btwall.service under systemd', () => {
  let net: Namespace;
  let container: ChildProcess | null = null;
  let init = 0;

  /** A command inside the container (its mount, pid and network namespaces). */
  const inside = (args: string[]) => spawnSync('nsenter', ['-t', String(init), '-m', '-u', '-i', '-n', '-p', '--', ...args], { encoding: 'utf8', timeout: 60_000 });
  const show = (property: string) => inside(['systemctl', 'show', 'btwall.service', '-p', property, '--value']).stdout.trim();
  const journal = () => inside(['journalctl', '-u', 'btwall.service', '--no-pager', '-o', 'cat']).stdout;
  const nfqueueRules = () => net.must('iptables', ['-S']).split('\n').filter((line) => line.includes('NFQUEUE')).length;
  const xdpAttached = () => /prog\/xdp id \d+ name btwall_eth/.test(net.must('ip', ['-d', 'link', 'show', 'btwsd0']));

  async function until(what: string, ok: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the unit's journal:\n${journal().split('\n').slice(-30).join('\n')}`);
      await sleep(200);
    }
  }

  beforeAll(async () => {
    mkdirSync(join(BASE, 'upper'), { recursive: true });
    mkdirSync(join(BASE, 'work'), { recursive: true });
    mkdirSync(MERGED, { recursive: true });
    const mount = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/,upperdir=${BASE}/upper,workdir=${BASE}/work`, MERGED], { encoding: 'utf8' });
    if (mount.status !== 0) throw new Error(`overlay mount: ${mount.stderr}`);
    const install = spawnSync('make', ['-s', 'install', `DESTDIR=${MERGED}`], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    if (install.status !== 0) throw new Error(`make install: ${install.stdout}${install.stderr}`);

    net = createNamespace('sd');
    net.must('ip', ['link', 'add', 'btwsd0', 'type', 'veth', 'peer', 'name', 'btwsd1']);
    net.must('ip', ['link', 'set', 'btwsd0', 'up']);
    net.must('ip', ['link', 'set', 'btwsd1', 'up']);
    mkdirSync(HOST_BPF, { recursive: true });

    const etc = join(MERGED, 'etc');
    // The shipped example with the one variable it needs set, as an operator would edit it.
    const example = readFileSync(join(ROOT, 'systemd', 'btwall.env'), 'utf8');
    writeFileSync(join(etc, 'default', 'btwall'), `${example}\nINTERFACE=btwsd0\nQUEUE_NUM=0\nCHAINS=INPUT\n`);
    mkdirSync(join(etc, 'systemd', 'system', 'btwall.service.d'), { recursive: true });
    writeFileSync(join(etc, 'systemd', 'system', 'btwall.service.d', 'test.conf'), `[Service]\nWatchdogSec=${WATCHDOG_S}\n`);
    // Only what btwall needs: not the services this machine has enabled.
    writeFileSync(join(etc, 'systemd', 'system', 'btwall-test.target'), '[Unit]\nDescription=btwall boot test\nRequires=basic.target\nAfter=basic.target\n');
    writeFileSync(join(etc, 'machine-id'), `${spawnSync('systemd-id128', ['new'], { encoding: 'utf8' }).stdout.trim()}\n`);

    // No machined or D-Bus on the host: --register=no --keep-unit. nspawn's seccomp filter denies
    // bpf(2) unless asked, and its capability set has no CAP_BPF: both granted, as a host has them.
    container = spawn(
      'systemd-nspawn',
      ['-q', '-D', MERGED, '--boot', '--register=no', '--keep-unit', `--network-namespace-path=/run/netns/${net.name}`, '--link-journal=no', '--capability=all', '--system-call-filter=bpf', `--bind=${HOST_BPF}:/sys/fs/bpf`, '--', '--unit=btwall-test.target'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    container.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const child = spawnSync('pgrep', ['-P', String(container.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
      // nspawn's own short-lived children come and go before its init is there.
      if (child && commOf(child) === 'systemd') {
        init = Number(child);
        if (inside(['systemctl', 'is-system-running', '--wait']).stdout.trim() !== '') break;
      }
      if (Date.now() > deadline || container.exitCode !== null) throw new Error(`the container did not boot: ${stderr}`);
      await sleep(200);
    }
  }, 360_000);

  afterAll(async () => {
    if (container !== null && container.exitCode === null) {
      // SIGTERM asks the container's systemd to power off; it stops btwall on the way.
      container.kill('SIGTERM');
      const gone = new Promise((resolve) => container!.once('exit', resolve));
      await Promise.race([gone, sleep(30_000)]);
      if (container.exitCode === null) container.kill('SIGKILL');
    }
    spawnSync('umount', ['-l', MERGED]);
    rmSync(BASE, { recursive: true, force: true });
    rmSync(HOST_BPF, { recursive: true, force: true });
    net?.delete();
  }, 60_000);

  it('passes systemd-analyze verify and rates OK (4.0 or lower) in systemd-analyze security', () => {
    const unit = join(MERGED, 'usr', 'local', 'lib', 'systemd', 'system', 'btwall.service');
    const verify = inside(['systemd-analyze', 'verify', '--man=no', unit.slice(MERGED.length)]);
    expect({ status: verify.status, output: (verify.stdout + verify.stderr).trim() }).toEqual({ status: 0, output: '' });
    const security = inside(['systemd-analyze', 'security', '--offline=true', unit.slice(MERGED.length)]);
    const score = Number(/Overall exposure level for btwall\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
    expect(score).toBeLessThanOrEqual(4.0);
  });

  it('is active only once its rules and XDP program are in place, says what it does, and is petted by the watchdog', async () => {
    expect(nfqueueRules()).toBe(0);
    const start = inside(['systemctl', 'start', 'btwall.service']);
    // Type=notify: `systemctl start` returns once READY=1 came.
    expect({ status: start.status, stderr: start.stderr }).toEqual({ status: 0, stderr: '' });
    expect(show('ActiveState')).toBe('active');
    expect(nfqueueRules()).toBeGreaterThan(0);
    expect(xdpAttached()).toBe(true);
    expect(show('StatusText')).toBe('inspecting queue 0; dropping, bans in XDP');
    // The ban maps are pinned in the host's bpffs, where `btwall bans` finds them.
    expect(readFileSync(`/proc/${init}/mounts`, 'utf8')).toContain('/sys/fs/bpf');
    expect(spawnSync('ls', [join(HOST_BPF, 'btwall')], { encoding: 'utf8' }).stdout).toMatch(/ban4/);
    const first = Number(show('WatchdogTimestampMonotonic'));
    await until('a second watchdog ping', () => Number(show('WatchdogTimestampMonotonic')) > first, WATCHDOG_S * 2000);
    expect(show('NRestarts')).toBe('0');
  }, 60_000);

  it('reloads on `systemctl reload` (SIGHUP to the daemon alone) and stays active', () => {
    const pid = show('MainPID');
    expect(inside(['systemctl', 'reload', 'btwall.service']).status).toBe(0);
    expect(show('ActiveState')).toBe('active');
    expect(show('MainPID')).toBe(pid);
    expect(journal()).toContain('detection log reopened');
    // The daemon read BTWALL_ENV_FILE, the unit's /etc/default/btwall, again.
    expect(journal()).toMatch(/"envFile":\{"path":"\/etc\/default\/btwall","found":true\}.*"msg":"configuration reloaded"/);
  });

  it('is killed by the watchdog when it stops answering, and restarted with its rules and XDP program', async () => {
    const pid = show('MainPID');
    inside(['kill', '-STOP', pid]);
    await until('the watchdog restart', () => show('NRestarts') === '1' && show('ActiveState') === 'active' && show('MainPID') !== pid, 30_000);
    expect(journal()).toMatch(/Watchdog timeout \(limit 3s\)/);
    expect(nfqueueRules()).toBeGreaterThan(0);
    expect(xdpAttached()).toBe(true);
  }, 60_000);

  it('withholds the watchdog while the kernel queues packets to a broker that takes none, and is restarted', async () => {
    const pid = show('MainPID');
    const broker = inside(['pgrep', '-f', 'btwall-queue']).stdout.trim().split('\n')[0];
    expect(broker).toMatch(/^\d+$/);
    inside(['kill', '-STOP', broker]);
    // Local UDP goes through INPUT, so through the queue the stuck broker holds (no packet leaves the
    // namespace); a new socket each time, a new flow: only a flow's first packets are queued.
    const sender = spawn('nsenter', [`--net=/run/netns/${net.name}`, 'python3', '-c', 'import socket, time\nend = time.time() + 20\nwhile time.time() < end:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x" * 64, ("127.0.0.1", 9))\n    time.sleep(0.01)'], { stdio: 'ignore' });
    try {
      await until('the watchdog restart', () => show('NRestarts') === '2' && show('ActiveState') === 'active' && show('MainPID') !== pid, 30_000);
    } finally {
      sender.kill();
    }
    expect(journal()).toMatch(/the kernel queued \d+ packets since the last check and its broker took none/);
  }, 60_000);

  it('stops cleanly: STOPPING, exit 0, the rules removed', () => {
    const stop = inside(['systemctl', 'stop', 'btwall.service']);
    expect(stop.status).toBe(0);
    expect({ state: show('ActiveState'), result: show('Result'), status: show('ExecMainStatus') }).toEqual({ state: 'inactive', result: 'success', status: '0' });
    expect(nfqueueRules()).toBe(0);
    expect(journal()).toContain('"msg":"btwall stopped"');
  });

  it('is removed by make uninstall, which keeps the environment file the operator edited', () => {
    const uninstall = spawnSync('make', ['-s', 'uninstall', `DESTDIR=${MERGED}`], { cwd: ROOT, encoding: 'utf8' });
    expect(uninstall.status).toBe(0);
    expect(uninstall.stdout).toContain(`kept ${MERGED}/etc/default/btwall: it holds your settings`);
    for (const path of ['usr/local/lib/btwall', 'usr/local/bin/btwall', 'usr/local/lib/systemd/system/btwall.service', 'etc/logrotate.d/btwall']) expect({ path, exists: lstatSync(join(MERGED, path), { throwIfNoEntry: false }) !== undefined }).toEqual({ path, exists: false });
    expect(existsSync(join(MERGED, 'etc/default/btwall'))).toBe(true);
  });
});
