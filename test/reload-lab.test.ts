/**
 * SIGHUP on the lab gateway: the daemon reads BTWALL_ENV_FILE again and applies its live settings
 * (a ban's duration, the allowlist in the BTWALL chain, ACTION, the log level, the detection log) without
 * losing the bans in its XDP maps, names the restart-only variable that changed, refuses an invalid
 * file whole (status still shows the configuration in force), and a worker restarted after a
 * crash runs with the reloaded configuration, not the start's.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { btwall, CLI, connects, peer, startDaemon, tearDownLab, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Topology } from './helpers/netns.js';

const EXIT_WORKER = resolve(import.meta.dirname, 'helpers/exit-worker.mjs');
const CLIENT4 = '10.77.1.2';
const CLIENT6 = 'fd77:1::2';
const SERVER4 = '10.77.2.2';
const SERVER6 = 'fd77:2::2';
/** A second address of the server, allowlisted by the reload. */
const OTHER4 = '10.77.2.3';

describe.runIf(canUseKernel())('SIGHUP reloads BTWALL_ENV_FILE on a running daemon', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-reload`;
  const inspectPort = 20_000 + ((process.pid + 7) % 20_000);

  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    net = createTopology('rl');
    net.server.must('ip', ['addr', 'add', `${OTHER4}/24`, 'dev', deviceWith(net.server, SERVER4)]);
    work = mkdtempSync(join(tmpdir(), 'btwall-reload-'));
  });
  afterAll(() => tearDownLab(daemon, net, [pinDir, work]));

  it('applies the live settings, keeps bans, names what needs a restart, refuses an invalid file whole, and restarted workers get the reloaded configuration', async () => {
    const control = join(work, 'control.sock');
    const envFile = join(work, 'btwall.env');
    const firstLog = join(work, 'first.log');
    const secondLog = join(work, 'second.log');
    const bans = () =>
      JSON.parse(btwall(net.gateway, ['bans', 'list', '--json'], { BPF_PIN_DIR: pinDir }).stdout) as { bans: { address: string; remainingS: number }[]; dropped: { v6: { packets: number; resets: number } } };
    const status = () => {
      const answer = btwall(net.gateway, ['status', '--json'], { CONTROL_SOCKET: control });
      expect(answer.stderr).toBe('');
      return JSON.parse(answer.stdout) as { config: Record<string, unknown>; restartPending: string[] };
    };
    /** The first line with `msg` the daemon logged after its first `from` lines, waiting up to 10 s. */
    const lineAfter = async (from: number, msg: string) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const found = daemon!.lines.slice(from).find((l) => l.msg === msg);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no "${msg}" after line ${from}; log: ${JSON.stringify(daemon!.lines.slice(from))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    /** Sends SIGHUP; `line(msg)` is the first line with `msg` logged after it. */
    const reload = () => {
      const from = daemon!.lines.length;
      daemon!.process.kill('SIGHUP');
      return { line: (msg: string) => lineAfter(from, msg) };
    };
    let port = 6881;
    /** The server, from `server`, connects in to the client and sends a handshake; what the client's sink got. */
    const handshake = async (server: string) => {
      const sink = peer(net.client, 'tcp-sink', port, 3000);
      await sink.ready;
      await peer(net.server, 'tcp-send', server.includes(':') ? CLIENT6 : CLIENT4, port++, 'handshake', 1500, 1, server).done;
      return (await sink.done).filter((l) => l.event === 'closed').reduce((sum, l) => sum + Number(l.bytes), 0);
    };

    writeFileSync(envFile, ['# the lab gateway', 'LOCAL_CIDRS=10.77.1.0/24,fd77:1::/64', 'BAN_DURATION=600', `DETECTION_LOG=${firstLog}`, ''].join('\n'));
    daemon = startDaemon(net.gateway, {
      BTWALL_ENV_FILE: envFile,
      INTERFACE: [deviceWith(net.gateway, '10.77.1.1'), deviceWith(net.gateway, '10.77.2.1')].join(','),
      BPF_PIN_DIR: pinDir,
      CONTROL_SOCKET: control,
      // One queue: the worker the test ends is the one every flow goes through.
      QUEUE_NUM: '0',
      VERDICT_TIMEOUT_MS: '3000',
      NODE_OPTIONS: `--inspect=127.0.0.1:${inspectPort}`,
    });
    expect(await daemon.waitFor('btwall running')).toMatchObject({ envFile: { path: envFile, found: true }, detectionLog: firstLog });
    expect(status().config).toMatchObject({ banDurationS: 600, logLevel: 'info', allowCidrs: [] });

    expect(await handshake(SERVER4)).toBe(0);
    expect(await daemon.waitFor('banned', { address: SERVER4 })).toMatchObject({ durationS: 600 });

    // Live: BAN_DURATION, ALLOW_CIDRS, LOG_LEVEL, DETECTION_LOG; FLOW_CAPACITY only at a restart.
    const reloadedFile = ['LOCAL_CIDRS=10.77.1.0/24,fd77:1::/64', 'BAN_DURATION="900"', `ALLOW_CIDRS=${OTHER4}/32`, 'LOG_LEVEL=debug', `DETECTION_LOG=${secondLog}`, 'FLOW_CAPACITY=4096'];
    writeFileSync(envFile, [...reloadedFile, ''].join('\n'));
    const first = reload();
    expect(await first.line('configuration reloaded')).toMatchObject({
      envFile: { path: envFile, found: true },
      changed: ['BAN_DURATION', 'ALLOW_CIDRS', 'LOG_LEVEL', 'DETECTION_LOG'],
      restartNeeded: ['FLOW_CAPACITY'],
    });
    expect(await first.line('changed variables wait for a restart; their running values stay')).toMatchObject({ variables: ['FLOW_CAPACITY'] });
    expect(bans().bans.map((b) => b.address)).toEqual([SERVER4]);
    const reloaded = status();
    expect(reloaded.config).toMatchObject({ banDurationS: 900, logLevel: 'debug', allowCidrs: [{ family: 4, address: OTHER4, prefix: 32 }], detectionLog: secondLog, flowCapacity: 1 << 20 });
    expect(reloaded.restartPending).toEqual(['FLOW_CAPACITY']);
    // The allowlist is in the chain: the allowlisted address's handshake goes through, not queued.
    expect(net.gateway.must('iptables', ['-S', 'BTWALL'])).toContain(`-A BTWALL -s ${OTHER4}/32 -j RETURN`);
    expect(await handshake(OTHER4)).toBe(68);
    // A new ban lasts the new BAN_DURATION; its record goes to the new detection log.
    expect(await handshake(SERVER6)).toBe(0);
    expect(await daemon.waitFor('banned', { address: SERVER6 })).toMatchObject({ durationS: 900 });
    const records = () => readFileSync(secondLog, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as { remote: { address: string } });
    expect(records().map((r) => r.remote.address)).toEqual([SERVER6]);
    expect(readFileSync(firstLog, 'utf8')).not.toContain(SERVER6);

    // Invalid: refused whole, with start-up's words, and nothing changes.
    writeFileSync(envFile, ['BAN_DURATION=soon', `ALLOW_CIDRS=${OTHER4}/32`, 'LOG_LEVEL=debug', ''].join('\n'));
    const refused = await reload().line('reload refused; the configuration in force stays');
    expect(refused.problems).toEqual(['BAN_DURATION="soon": must be a whole number']);
    writeFileSync(envFile, ['BAN_DURATION=60', 'ALLOW_CIDRS 10.0.0.0/8', ''].join('\n'));
    const unparsed = await reload().line('reload refused; the configuration in force stays');
    expect(unparsed.problems).toEqual([`BTWALL_ENV_FILE=${JSON.stringify(envFile)}: line 2: "ALLOW_CIDRS 10.0.0.0/8" is no assignment (KEY=VALUE)`]);
    expect(status().config).toMatchObject({ banDurationS: 900, logLevel: 'debug', detectionLog: secondLog });
    expect(bans().bans.map((b) => b.address).sort()).toEqual([SERVER4, SERVER6]);
    expect(net.gateway.must('iptables', ['-S', 'BTWALL'])).toContain(`-A BTWALL -s ${OTHER4}/32 -j RETURN`);

    // A worker restarted after a crash runs with the configuration in force, not the start's.
    const exit = spawnSync('nsenter', [`--net=/run/netns/${net.gateway.name}`, process.execPath, '--experimental-websocket', EXIT_WORKER, String(inspectPort), '0'], { encoding: 'utf8' });
    expect(exit.stdout.trim(), exit.stderr).toBe('{"exited":0}');
    await daemon.waitFor('queue worker restarted', { queue: 0 });
    /** Lifts SERVER4's ban, so that its bytes reach the queue again. */
    const lift = () => {
      const lifted = btwall(net.gateway, ['bans', 'del', SERVER4], { BPF_PIN_DIR: pinDir });
      expect(lifted.status, lifted.stderr).toBe(0);
    };
    lift();
    const restarted = daemon.lines.length;
    expect(await handshake(SERVER4)).toBe(0);
    expect(await lineAfter(restarted, 'banned')).toMatchObject({ address: SERVER4, durationS: 900 });

    // ACTION=monitor, live: the chain drops nothing, the XDP program drops the banned address's
    // segments without answering them with resets any more, and a handshake passes, logged as what would have been done.
    const resets = bans().dropped.v6.resets;
    expect(await connects(net.client, SERVER6, 7000)).toBe(false);
    expect(bans().dropped.v6.resets).toBeGreaterThan(resets);
    writeFileSync(envFile, [...reloadedFile, 'ACTION=monitor', ''].join('\n'));
    expect(await reload().line('configuration reloaded')).toMatchObject({ changed: ['ACTION'], restartNeeded: ['FLOW_CAPACITY'] });
    expect(net.gateway.must('iptables', ['-S', 'BTWALL'])).not.toContain('-j DROP');
    const monitoredDrops = bans().dropped.v6;
    expect(await connects(net.client, SERVER6, 7000)).toBe(false);
    const afterMonitor = bans().dropped.v6;
    expect(afterMonitor.packets).toBeGreaterThan(monitoredDrops.packets);
    expect(afterMonitor.resets).toBe(monitoredDrops.resets);
    lift();
    const monitored = daemon.lines.length;
    expect(await handshake(SERVER4)).toBe(68);
    expect(await lineAfter(monitored, 'BitTorrent detected')).toMatchObject({ source: SERVER4, action: 'monitor only (accepted; would drop)', ban: `would ban ${SERVER4} for 900 s` });
    expect(daemon.lines.slice(monitored).some((l) => l.msg === 'banned')).toBe(false);

    // LOG_LEVEL=warn, live: the reload's own info line is not written, its warning is.
    writeFileSync(envFile, [...reloadedFile.filter((line) => !line.startsWith('LOG_LEVEL=')), 'ACTION=monitor', 'LOG_LEVEL=warn', ''].join('\n'));
    const before = daemon.lines.filter((l) => l.msg === 'configuration reloaded').length;
    expect(await reload().line('changed variables wait for a restart; their running values stay')).toMatchObject({ variables: ['FLOW_CAPACITY'] });
    expect(daemon.lines.filter((l) => l.msg === 'configuration reloaded')).toHaveLength(before);
    expect(status().config).toMatchObject({ logLevel: 'warn' });
    expect(await daemon.stop()).toBe(0);
  });
});
