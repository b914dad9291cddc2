/**
 * `npm run bench:soak [-- SECONDS] [--flows N] [--sample S]`, as root: `btwall run` on the gateway
 * of a client/gateway/server lab for SECONDS (600 by default) under mixed traffic (soak-traffic.ts:
 * N new flows a second, 1 in 10 BitTorrent, and remote peers proving themselves, which get banned),
 * printing every S seconds (30) the daemon's RSS and open descriptors, its flows, the bans in the
 * maps, and the queue counters. Once the flow table is full, RSS, descriptors, flows and bans
 * should stay flat, and the counters add up: seen by the queue rules = inspected + uninspected
 * (+ dropped by the kernel), and packets handed to JavaScript = decided + accepted by the watchdog.
 * The summary compares the first sample with a full table against the last. Figures, not a test.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { collectLogLines, createLab, finish, output, poll, type Lab, type LogLine } from './lab.js';
import { requireOrExit } from './requirements.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = resolve(ROOT, 'dist/cli/main.js');
const TRAFFIC = resolve(ROOT, 'dist/bench/soak-traffic.js');
const NETS = { v4: '10.93', v6: 'fd93' };
const FLOW_CAPACITY = 32768;
const PEERS = 100;

interface Options {
  seconds: number;
  flows: number;
  sample: number;
}

function options(): Options {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { flows: { type: 'string', default: '1000' }, sample: { type: 'string', default: '30' } } });
  const whole = (name: string, text: string, min: number, max: number) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be a whole number from ${min} to ${max}`);
    return n;
  };
  return { seconds: whole('SECONDS', positionals[0] ?? '600', 10, 86_400), flows: whole('--flows', values.flows, 10, 20_000), sample: whole('--sample', values.sample, 1, 3600) };
}

function deviceWith(lab: Lab, ns: 'gateway' | 'server', address: string): string {
  const line = lab[ns].must('ip', ['-o', 'addr', 'show']).split('\n').find((l) => l.includes(` ${address}/`));
  if (line === undefined) throw new Error(`no device with ${address}`);
  return line.split(/\s+/)[1];
}

function processFacts(pid: number): { rssMB: number; fds: number } {
  const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return { rssMB: Math.round(rssKb / 1024), fds: readdirSync(`/proc/${pid}/fd`).length };
}

interface Sample {
  seconds: number;
  rssMB: number;
  fds: number;
  flows: number;
  bans: number;
  line: LogLine;
}

const n = (line: LogLine, key: string) => Number(line[key] ?? 0);

function row(sample: Sample): string {
  return [
    `${String(sample.seconds).padStart(5)} s`,
    `rss ${String(sample.rssMB).padStart(4)} MB`,
    `fds ${String(sample.fds).padStart(3)}`,
    `flows ${String(sample.flows).padStart(6)} (evicted ${n(sample.line, 'flowsEvicted')})`,
    `bans ${String(sample.bans).padStart(3)} (made ${n(sample.line, 'bans')}, xdp drops ${n(sample.line, 'droppedV4Packets')})`,
    counters(sample.line),
  ].join('  ');
}

function counters(l: LogLine): string {
  const addsUp = n(l, 'seenByRules') - n(l, 'inspected') - n(l, 'uninspected') - n(l, 'kernelDropped');
  const handed = n(l, 'packets') - n(l, 'verdicts') - n(l, 'watchdogAccepted');
  return [
    `seen ${n(l, 'seenByRules')} = inspected ${n(l, 'inspected')} + uninspected ${n(l, 'uninspected')} (queue full ${n(l, 'uninspectedQueueFull')}, watchdog ${n(l, 'uninspectedWatchdog')}, restarting ${n(l, 'uninspectedRestarting')}) + dropped ${n(l, 'kernelDropped')}${addsUp === 0 ? '' : ` MISSING ${addsUp}`}`,
    `handed ${n(l, 'packets')} = decided + watchdog${handed === 0 ? '' : ` (${handed} in flight)`}`,
  ].join('  ');
}

async function main(): Promise<number> {
  const o = options();
  requireOrExit('bench:soak', {
    root: 'the soak creates network namespaces, firewall rules and XDP bans',
    commands: { ip: 'iproute2', nsenter: 'util-linux', iptables: 'iptables' },
    files: { [CLI]: 'build btwall first: make build', [TRAFFIC]: 'build btwall first: make build' },
  });
  const lab = createLab('so', NETS);
  const pinDir = `/sys/fs/bpf/btwall-soak-${process.pid}`;
  try {
    const serverDevice = deviceWith(lab, 'server', lab.serverV4);
    const peers = Array.from({ length: PEERS }, (_, i) => `${NETS.v4}.2.${10 + i}`);
    for (const address of peers) lab.server.must('ip', ['addr', 'add', `${address}/24`, 'dev', serverDevice]);
    const env = {
      ...process.env,
      QUEUE_NUM: '0',
      INTERFACE: [deviceWith(lab, 'gateway', `${NETS.v4}.1.1`), deviceWith(lab, 'gateway', `${NETS.v4}.2.1`)].join(','),
      BPF_PIN_DIR: pinDir,
      LOCAL_CIDRS: `${NETS.v4}.1.0/24,${NETS.v6}:1::/64`,
      DETECTION_LOG: '',
      LOG_LEVEL: 'info',
      FLOW_CAPACITY: String(FLOW_CAPACITY),
      PEER_CACHE_SIZE: '4096',
      BAN_DURATION: '60',
      CLEANUP_INTERVAL: '30',
      STATS_INTERVAL: String(o.sample),
    };
    const daemon = lab.gateway.start(process.execPath, [CLI, 'run'], env);
    const lines: LogLine[] = [];
    collectLogLines(daemon, lines);
    const daemonOut = { stderr: '' };
    daemon.stderr!.setEncoding('utf8').on('data', (text: string) => (daemonOut.stderr += text));
    await poll('btwall to start', 20_000, () => {
      if (daemon.exitCode !== null) throw new Error(`btwall run exited ${daemon.exitCode}: ${daemonOut.stderr.trim()}`);
      return lines.some((l) => l.msg === 'btwall running');
    });
    const start = Date.now();
    lab.server.start(process.execPath, [TRAFFIC, 'server', lab.serverV4, `${NETS.v4}.1.2`, peers.join(','), String(o.seconds + 5)]);
    const client = lab.client.start(process.execPath, [TRAFFIC, 'client', lab.serverV4, String(o.flows), String(o.seconds)]);
    const clientOut = output(client);
    process.stdout.write(`btwall soak: ${o.seconds} s, ${o.flows} new flows/s (1 in 10 BitTorrent), ${PEERS} remote peers proving themselves every 2 s in turn, FLOW_CAPACITY ${FLOW_CAPACITY}, BAN_DURATION 60 s; a row every ${o.sample} s\n`);
    const samples: Sample[] = [];
    let seen = 0;
    while (Date.now() - start < o.seconds * 1000) {
      await new Promise((r) => setTimeout(r, 250));
      if (daemon.exitCode !== null) throw new Error(`btwall run exited ${daemon.exitCode}: ${daemonOut.stderr.trim()}`);
      const stats = lines.filter((l) => l.msg === 'stats');
      if (stats.length === seen) continue;
      seen = stats.length;
      const listed = JSON.parse(lab.gateway.must('env', [`BPF_PIN_DIR=${pinDir}`, process.execPath, CLI, 'bans', 'list', '--json'])) as { bans: unknown[] };
      const line = stats.at(-1)!;
      const sample = { seconds: Math.round((Date.now() - start) / 1000), ...processFacts(daemon.pid!), flows: n(line, 'flows'), bans: listed.bans.length, line };
      samples.push(sample);
      process.stdout.write(`${row(sample)}\n`);
    }
    await finish(client, 20_000, 'the soak client');
    daemon.kill('SIGTERM');
    await finish(daemon, 20_000, 'btwall run');
    const last = lines.filter((l) => l.msg === 'stats').at(-1);
    if (last !== undefined) process.stdout.write(`at stop: ${counters(last)}\n`);
    process.stdout.write(`traffic: ${clientOut.stdout.trim()}\n`);
    // SOAK_DAEMON_LOG=FILE keeps the daemon's log lines for a closer look.
    if (process.env.SOAK_DAEMON_LOG) writeFileSync(process.env.SOAK_DAEMON_LOG, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
    const warnings = lines.filter((l) => l.msg.startsWith('uninspected traffic')).length;
    const full = samples.filter((s) => s.flows >= FLOW_CAPACITY * 0.95);
    if (full.length < 2) {
      process.stdout.write(`the flow table did not fill (${samples.at(-1)?.flows ?? 0} of ${FLOW_CAPACITY} flows) within the run: run longer or with more --flows\n`);
      return 0;
    }
    const [first, end] = [full[0], full.at(-1)!];
    process.stdout.write(
      `table full from ${first.seconds} s: rss ${first.rssMB} -> ${end.rssMB} MB (${end.rssMB - first.rssMB >= 0 ? '+' : ''}${end.rssMB - first.rssMB}), fds ${first.fds} -> ${end.fds}, flows ${first.flows} -> ${end.flows}, bans ${first.bans} -> ${end.bans}; uninspected-traffic warnings: ${warnings}\n`,
    );
    return 0;
  } finally {
    await lab.destroy();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`bench:soak failed: ${error.stack ?? error.message}\n`);
    process.exit(2);
  },
);
