/**
 * Real clients, real blocking: the end-to-end lab (test/lab/e2e-lab.sh) with the real daemon on a
 * routed gateway (FORWARD chain, XDP bans on its interfaces; one LAN segment bridged by it, whose
 * frames br_netfilter passes through FORWARD too), dual-stack. Four runs, each every scenario at
 * once from its own LAN host while the ordinary traffic runs from another: ACTION=drop and
 * ACTION=monitor, each on a bare path and with a 30 ms WAN round trip. The lab reports facts
 * (pieces on the leecher's disk, the client's own counter, the detection log, the ban list, each
 * ordinary check's outcome); this file judges them.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseKernel } from './helpers/netns.js';

const ROOT = resolve(import.meta.dirname, '..');
const LAB = join(ROOT, 'test/lab/e2e-lab.sh');
/** How long a blocked leecher is watched: nothing may arrive within it. */
const WINDOW_S = 60;
const RTT_MS = 30;

interface Scenario {
  name: string;
  seeder: string;
  leecher: string;
  /** The LAN address its client uses (IPv6 for a *-v6 scenario). */
  lan: string;
  /** Its LAN host's IPv6 address (every LAN host has one). */
  lan6: string;
  /** The WAN peers of the scenario: the only addresses a ban may name (with the DHT nodes). */
  peers: string[];
  /** Its peers on the leecher's own LAN segment (lsd's seeder): local hosts, never banned. */
  lan_peers: string[];
  complete: boolean;
  pieces: number;
  client_received: number | null;
}
interface Ordinary {
  name: string;
  ok: boolean;
  detail: string;
}
interface LabResult {
  action: string;
  elapsed_s: number;
  services: Record<string, string>;
  dht_nodes: string[];
  ordinary_hosts: [string, string];
  /** The ordinary host's IPv6 address, where the IPv6 checks come from. */
  ordinary_host6: string;
  scenarios: Scenario[];
  ordinary: Ordinary[];
  bans: { enforced: boolean; bans: { address: string; rule: string }[] };
}
interface Detection {
  local: { address: string };
  remote: { address: string; port: number };
  rule: string;
  direction: string;
  action: string;
  ban: { address: string } | null;
}

/** The rule that must name each scenario's flows when btwall drops them. */
const BLOCKED_BY: Record<string, string> = {
  plain: 'handshake', // and http-tracker for the announce
  encrypted: 'mse', // the seeder's MSE connection in to the leecher
  utp: 'utp',
  'udp-tracker': 'udp-tracker',
  dht: 'dht',
  pex: 'handshake',
  socks5: 'socks5',
  webseed: 'http-bittorrent',
  lsd: 'lsd', // the leecher's own multicast announce on its bridged LAN segment
  'plain-v6': 'handshake', // peers and tracker over IPv6 only
};
const SCENARIOS = Object.keys(BLOCKED_BY);
const ORDINARY = ['dns', 'https', 'https-after-tracker-name', 'https-v6', 'http', 'scp', 'iperf3-tcp', 'iperf3-udp', 'stun', 'turn'];

interface Run {
  action: 'drop' | 'monitor';
  rtt: number;
}
const RUNS: Run[] = [
  { action: 'drop', rtt: 0 },
  { action: 'monitor', rtt: 0 },
  { action: 'drop', rtt: RTT_MS },
  { action: 'monitor', rtt: RTT_MS },
];
const label = (r: Run) => `${r.action}, ${r.rtt ? `${r.rtt} ms WAN round trip` : 'bare path'}`;

/** One lab run to its end; rejects with its output when it fails. */
function runLab(run: Run, out: string): Promise<{ result: LabResult; detections: Detection[]; seconds: number }> {
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn('bash', [LAB, '--out', out, '--action', run.action, '--rtt', String(run.rtt), '--window', String(run.action === 'drop' ? WINDOW_S : 90)], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.on('exit', (code) => {
      children.delete(child);
      if (code !== 0) return fail(new Error(`e2e-lab.sh (${label(run)}) exited ${code}:\n${output}`));
      const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as LabResult;
      const log = join(out, 'detections.log');
      const detections = existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Detection) : [];
      done({ result, detections, seconds: (Date.now() - started) / 1000 });
    });
  });
}
const children = new Set<ReturnType<typeof spawn>>();

/** `btwall demo` to its end: its exit code and what it printed. */
function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'demo', '--seconds', '10'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('exit', (code) => {
      children.delete(child);
      done({ code, stdout, stderr });
    });
  });
}

describe.runIf(canUseKernel())('end-to-end lab: real clients through the btwall gateway', () => {
  const work = mkdtempSync(join(tmpdir(), 'btwall-e2e-'));
  const runs = new Map<Run, ReturnType<typeof runLab>>();
  let demo: ReturnType<typeof runDemo>;

  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('build first: make test builds before testing');
    // Two runs at a time (separate namespace sets, daemons and pin directories): the machine has
    // two cores, and most of a run is waiting out its window.
    let previous: Promise<unknown>[] = [];
    RUNS.forEach((run, i) => {
      const after = previous[i - 2] ?? Promise.resolve();
      const p = after.catch(() => {}).then(() => runLab(run, join(work, `${run.action}-${run.rtt}`)));
      p.catch(() => {});
      runs.set(run, p);
      previous = [...previous, p];
    });
    // The demo is a lab of its own: it goes with the last run.
    demo = previous[2].catch(() => {}).then(runDemo);
  });
  afterAll(() => {
    for (const child of children) child.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  it('btwall demo: the BitTorrent download blocked and its peer banned in XDP, HTTPS beside it completed, no false alarm', { timeout: 900_000 }, async () => {
    const { code, stdout, stderr } = await demo;
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/^BitTorrent \(aria2 on [\d.]+ downloading from a libtorrent seeder\): BLOCKED, 0 pieces arrived in 10 s$/m);
    expect(stdout).toMatch(/dropped .* after \d+ packets? by rule udp-tracker \(exact evidence\)/);
    expect(stdout).toMatch(/by rule handshake \(exact evidence\); 198\.51\.100\.\d+ banned in XDP for 18000 s/);
    expect(stdout).toMatch(/^HTTPS download of 20 MB on [\d.]+, side by side: completed at \d+ MB\/s, hash checked$/m);
    expect(stdout).toMatch(/^False alarms: 0 /m);
    console.log(stdout);
  });

  for (const run of RUNS) {
    describe(label(run), () => {
      const get = async () => {
        const r = await runs.get(run)!;
        return { ...r, of: (name: string) => r.result.scenarios.find((s) => s.name === name)! };
      };

      it('runs every scenario and every ordinary check', { timeout: 900_000 }, async () => {
        const { result, seconds } = await get();
        expect(result.scenarios.map((s) => s.name)).toEqual(SCENARIOS);
        expect(result.ordinary.map((o) => o.name).sort()).toEqual([...ORDINARY, 'tracker-name-dns', 'tracker-name-https'].sort());
        console.log(`${label(run)}: ${seconds.toFixed(0)} s (leechers ran ${result.elapsed_s} s); ${result.scenarios.map((s) => `${s.name} ${s.seeder}->${s.leecher} ${s.pieces} pieces`).join(', ')}`);
      });

      for (const name of SCENARIOS) {
        if (run.action === 'drop') {
          it(`${name}: the leecher gets no piece within ${WINDOW_S} s, and the detection log names ${BLOCKED_BY[name]}`, { timeout: 900_000 }, async () => {
            const { of, detections, result } = await get();
            const s = of(name);
            expect(s.pieces).toBe(0);
            expect(s.complete).toBe(false);
            if (s.client_received !== null) expect(s.client_received).toBe(0);
            const mine = detections.filter((d) => d.local.address === s.lan);
            expect(mine.every((d) => d.action === 'drop')).toBe(true);
            expect([...new Set(mine.map((d) => d.rule))]).toContain(BLOCKED_BY[name]);
            if (name === 'plain-v6') {
              // Its announce reached the IPv6 tracker (the request itself was seen, and dropped),
              // and the seeder that connected in over IPv6 is banned by its own handshake.
              expect(mine.some((d) => d.rule === 'http-tracker' && d.remote.address === result.services.tracker6)).toBe(true);
              expect(result.bans.bans.map((b) => b.address)).toContain(s.peers[0]);
            }
          });
        } else {
          it(`${name}: completes (hash checked) and is logged with the drop the policy would have made`, { timeout: 900_000 }, async () => {
            const { of, detections } = await get();
            const s = of(name);
            expect(s.complete).toBe(true);
            const mine = detections.filter((d) => d.local.address === s.lan);
            expect(mine.length).toBeGreaterThan(0);
            expect(mine.every((d) => d.action === 'monitor')).toBe(true);
            if (name === 'pex') {
              // No tracker, no DHT, no LSD, and the leecher was told only of the first peer: a
              // connection to the second one was learnt by PEX.
              expect(mine.some((d) => d.remote.address === s.peers[1])).toBe(true);
            }
            if (name === 'lsd') {
              // No tracker, DHT or PEX, and neither peer was told of the other: their connection
              // on the LAN segment, seen by the gateway's bridge, was learnt by LSD.
              const ends = (d: Detection) => [d.local.address, d.remote.address].sort().join(' ');
              expect(detections.some((d) => d.rule === 'handshake' && ends(d) === [s.lan, ...s.lan_peers].sort().join(' '))).toBe(true);
            }
          });
        }
      }

      it('bans only WAN peers whose own bytes were BitTorrent: never a service, the gateway or a LAN host', { timeout: 900_000 }, async () => {
        const { result, detections } = await get();
        const peers = new Set([...result.scenarios.flatMap((s) => s.peers), ...result.dht_nodes]);
        const never = [...Object.values(result.services), ...result.ordinary_hosts, result.ordinary_host6, ...result.scenarios.flatMap((s) => [s.lan, s.lan6, ...s.lan_peers])];
        const banned = result.bans.bans.map((b) => b.address);
        // Under monitor nothing is enforced; what would have been banned is in the log.
        const wouldBan = detections.filter((d) => d.ban).map((d) => d.ban!.address);
        if (run.action === 'monitor') expect(banned).toEqual([]);
        for (const address of [...banned, ...wouldBan]) {
          expect(peers.has(address), `${address} banned`).toBe(true);
          expect(never).not.toContain(address);
        }
        for (const address of banned) {
          const proof = detections.find((d) => d.ban?.address === address);
          expect(proof?.direction, `the detection that banned ${address}`).toBe('remote');
        }
        expect(result.bans.enforced).toBe(true);
        console.log(`${label(run)}: banned ${JSON.stringify(result.bans.bans.map((b) => `${b.address} (${b.rule})`))}; would have banned ${JSON.stringify([...new Set(wouldBan)])}`);
      });

      it('ordinary traffic passes untouched while BitTorrent runs from the other LAN hosts: zero detections for it', { timeout: 900_000 }, async () => {
        const { result, detections } = await get();
        for (const name of ORDINARY) {
          const check = result.ordinary.find((o) => o.name === name)!;
          expect(check.ok, `${name}: ${check.detail}`).toBe(true);
        }
        const [host] = result.ordinary_hosts;
        expect(detections.filter((d) => d.local.address === host || d.local.address === result.ordinary_host6)).toEqual([]);
        console.log(`${label(run)}: ${result.ordinary.map((o) => `${o.name}: ${o.detail.split('\n')[0]}`).join('; ')}`);
      });

      it('the listed tracker name on the web server\'s address: dropped (name evidence) under drop, the site itself passes, the address is never banned', { timeout: 900_000 }, async () => {
        const { result, detections } = await get();
        const [, namesHost] = result.ordinary_hosts;
        const byName = detections.filter((d) => d.local.address === namesHost);
        expect(new Set(byName.map((d) => d.rule))).toEqual(new Set(['tracker-domain', 'tracker-sni']));
        expect(byName.every((d) => d.ban === null)).toBe(true);
        const outcome = (name: string) => result.ordinary.find((o) => o.name === name)!.ok;
        expect(outcome('tracker-name-dns')).toBe(run.action === 'monitor');
        expect(outcome('tracker-name-https')).toBe(run.action === 'monitor');
        expect(outcome('https-after-tracker-name')).toBe(true);
        expect(result.bans.bans.map((b) => b.address)).not.toContain(result.services.web);
      });
    });
  }
});
