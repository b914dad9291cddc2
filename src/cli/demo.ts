/**
 * `btwall demo`: the newcomer's first minute. Runs a short end-to-end lab (test/lab/e2e-lab.sh of
 * the repository: network namespaces it creates and removes, a LAN behind a gateway running the
 * real daemon, a seeder, a tracker and a web server on the other side), a real BitTorrent download
 * and an HTTPS download side by side, and says plainly what happened.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const DEMO_USAGE = `usage: btwall demo [--seconds N]

Builds a small lab in network namespaces (removed afterwards, also on Ctrl-C): one LAN client
downloading a torrent with aria2 from a libtorrent seeder (UDP tracker), another LAN host
downloading 20 MB over HTTPS, both through a gateway where btwall runs with its defaults.
Prints what was blocked, what was banned and what passed. Needs root, a repository checkout
(it runs test/lab/e2e-lab.sh) and the Debian packages \`make deps\` installs.
  --seconds N   how long the BitTorrent client is given (default 20)`;

const ROOT = resolve(import.meta.dirname, '../..');
const LAB = join(ROOT, 'test/lab/e2e-lab.sh');
const SCENARIO = 'udp-tracker';

interface Detection {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  l4: string;
  rule: string;
  strength: string;
  initiator: string;
  ban: { address: string; duration_s: number } | null;
  flow_packets: number;
}
interface DemoResult {
  elapsed_s: number;
  ordinary_hosts: string[];
  scenarios: { name: string; seeder: string; leecher: string; lan: string; pieces: number; complete: boolean }[];
  ordinary: { name: string; ok: boolean; detail: string }[];
  bans: { enforced: boolean; bans: { address: string; rule: string }[]; dropped: { v4: { packets: number } } };
}

function parseSeconds(args: string[]): number | null {
  if (args.length === 0) return 20;
  if (args.length === 2 && args[0] === '--seconds' && /^\d+$/.test(args[1]) && +args[1] >= 5 && +args[1] <= 600) return +args[1];
  return null;
}

/** The lab run to its end; Ctrl-C (or SIGTERM) reaches it too, and it removes what it built before this returns. */
function runLab(out: string, seconds: number): Promise<number> {
  return new Promise((done) => {
    const child = spawn('bash', [LAB, '--out', out, '--scenarios', SCENARIO, '--checks', 'https', '--window', String(seconds)], { stdio: ['ignore', 'ignore', 'inherit'] });
    const forward = (signal: NodeJS.Signals) => () => {
      process.stderr.write(`btwall demo: ${signal}: removing the lab\n`);
      child.kill(signal);
    };
    const onInt = forward('SIGINT');
    const onTerm = forward('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      done(code ?? (signal ? 130 : 1));
    });
  });
}

const flow = (d: Detection) => `${d.local.address}:${d.local.port} ${d.initiator === 'local' ? '->' : '<-'} ${d.remote.address}:${d.remote.port} (${d.l4})`;

/** What the run's facts say, for a person. */
function demoReport(result: DemoResult, detections: Detection[], seconds: number): string {
  const bt = result.scenarios[0];
  const [webHost] = result.ordinary_hosts;
  const https = result.ordinary.find((o) => o.name === 'https');
  const lines: string[] = [];
  const blocked = bt.pieces === 0;
  lines.push(
    blocked
      ? `BitTorrent (${bt.leecher} on ${bt.lan} downloading from a ${bt.seeder} seeder): BLOCKED, 0 pieces arrived in ${seconds} s`
      : `BitTorrent (${bt.leecher} on ${bt.lan} downloading from a ${bt.seeder} seeder): NOT blocked, ${bt.pieces} pieces arrived${bt.complete ? ' (complete)' : ''}`,
  );
  const seen = new Set<string>();
  for (const d of detections.filter((x) => x.local.address === bt.lan)) {
    const key = `${d.rule} ${d.remote.address}:${d.remote.port} ${d.initiator}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const ban = d.ban ? `; ${d.ban.address} banned in XDP for ${d.ban.duration_s} s` : '';
    lines.push(`  dropped ${flow(d)} after ${d.flow_packets} packet${d.flow_packets === 1 ? '' : 's'} by rule ${d.rule} (${d.strength} evidence)${ban}`);
  }
  for (const b of result.bans.bans) lines.push(`  ban list: ${b.address} (rule ${b.rule}), ${result.bans.enforced ? 'enforced by the XDP program on the gateway\'s links' : 'NOT enforced'}`);
  if (result.bans.bans.length) lines.push(`  the XDP program dropped ${result.bans.dropped.v4.packets} packets of banned peers`);
  if (https) {
    const speed = Number(/bytes\/s=([\d.]+)/.exec(https.detail)?.[1] ?? 0);
    lines.push(
      https.ok
        ? `HTTPS download of 20 MB on ${webHost}, side by side: completed at ${(speed / 1e6).toFixed(0)} MB/s, hash checked`
        : `HTTPS download of 20 MB on ${webHost}, side by side: FAILED (${https.detail})`,
    );
  }
  const falseAlarms = detections.filter((d) => d.local.address === webHost).length;
  lines.push(`False alarms: ${falseAlarms} (detections on the HTTPS host)`);
  return `${lines.join('\n')}\n`;
}

export async function demoCommand(args: string[]): Promise<number> {
  const seconds = parseSeconds(args);
  if (seconds === null) {
    process.stderr.write(`btwall demo: bad arguments\n${DEMO_USAGE}\n`);
    return 64;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('btwall demo: must run as root (it creates network namespaces and runs the daemon in one)\n');
    return 77;
  }
  if (!existsSync(LAB)) {
    process.stderr.write(`btwall demo: runs the lab of a repository checkout (${LAB} is missing); run it from a clone with make demo\n`);
    return 69;
  }
  const out = mkdtempSync(join(tmpdir(), 'btwall-demo-'));
  try {
    process.stdout.write(`btwall demo: building a lab in network namespaces (a LAN, a gateway running btwall, a seeder, a tracker and a web server beyond it); about ${seconds + 20} s\n`);
    const code = await runLab(out, seconds);
    if (code !== 0) {
      process.stderr.write(`btwall demo: the lab stopped (${code}); everything it built is removed\n`);
      return code;
    }
    const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as DemoResult;
    const log = join(out, 'detections.log');
    const detections = existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Detection) : [];
    process.stdout.write(demoReport(result, detections, seconds));
    process.stdout.write('The lab is removed: namespaces, daemon, rules and XDP pins.\n');
    return result.scenarios[0].pieces === 0 && result.ordinary.every((o) => o.ok) ? 0 : 1;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
