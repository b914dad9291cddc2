/**
 * ACTION=throttle with a real BitTorrent client (python3-libtorrent, TCP only, no DHT, LSD, UPnP or
 * NAT-PMP) through the client <-> gateway <-> server lab: the download runs, limited to RATE for
 * its local host, while another local host's HTTP download through the same gateway is not.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { btClient, startDaemon, stopIfRunning, stopPeers, type Peer, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Topology } from './helpers/netns.js';

const SEED_PORT = 6992;
const HTTP_PORT = 8081;
const OTHER_HOST = '10.77.1.3';
const RATE_BITS = 512_000;
/** Seconds of the download measured, after the first seconds (the bucket's burst) are left out. */
const WARM_UP_S = 4;
const MEASURED_S = 16;

describe.runIf(canUseKernel())('throttling BitTorrent with a real client', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;
  let seeder: Peer;

  beforeAll(async () => {
    net = createTopology('t');
    net.client.must('ip', ['addr', 'add', `${OTHER_HOST}/24`, 'dev', deviceWith(net.client, '10.77.1.2')]);
    work = mkdtempSync(join(tmpdir(), 'btwall-throttle-'));
    seeder = btClient(net.server, 'seed', work, SEED_PORT, 32, 110);
    await seeder.ready;
  });
  afterAll(async () => {
    await stopIfRunning(daemon);
    stopPeers();
    net?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('limits the download to RATE within 20 %, bans nobody, and leaves another host\'s HTTP download alone', async () => {
    daemon = startDaemon(net.gateway, { XDP_MODE: 'off', DETECTION_LOG: '', VERDICT_TIMEOUT_MS: '3000', ACTION: 'throttle', RATE: '512kbit', LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64' });
    await daemon.waitFor('btwall running');
    const dir = join(work, 'leech');
    mkdirSync(dir, { recursive: true });
    const torrent = seeder.lines[0].torrent as string;
    // No limit of the client's own: the gateway's is the only one.
    const client = btClient(net.client, 'leech', dir, torrent, net.serverV4, SEED_PORT, 0, WARM_UP_S + MEASURED_S + 1);
    const detection = await daemon.waitFor('BitTorrent detected', { destinationPort: SEED_PORT });
    expect(detection).toMatchObject({ action: 'throttled to RATE', ban: 'none' });

    // Meanwhile another local host downloads over plain HTTP from the same server.
    const http = spawn('nsenter', [`--net=/run/netns/${net.server.name}`, '/usr/bin/python3', '-m', 'http.server', String(HTTP_PORT), '--bind', net.serverV4, '--directory', work], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 1000));
      const curl = spawnSync('nsenter', [`--net=/run/netns/${net.client.name}`, 'curl', '-s', '-o', '/dev/null', '--interface', OTHER_HOST, '-w', '%{speed_download} %{size_download}', `http://${net.serverV4}:${HTTP_PORT}/data`], { encoding: 'utf8' });
      const [httpBytesPerS, httpBytes] = curl.stdout.trim().split(' ').map(Number);
      expect(httpBytes).toBe(32 << 20);
      const httpBits = httpBytesPerS * 8;
      expect(httpBits).toBeGreaterThan(20 * RATE_BITS);

      await client.done;
      const progress = client.lines.filter((l) => l.event === 'progress') as { received: number; time: number }[];
      const start = progress.find((p) => p.time >= progress[0].time + WARM_UP_S)!;
      const end = progress.at(-1)!;
      // Payload only: the gateway counts IP packets, headers included (a few per cent more).
      const bits = ((end.received - start.received) * 8) / (end.time - start.time);
      console.log(`throttled BitTorrent download: ${Math.round(bits / 1000)} kbit/s payload over ${(end.time - start.time).toFixed(1)} s (RATE 512 kbit); other host's HTTP: ${Math.round(httpBits / 1e6)} Mbit/s`);
      expect(bits).toBeGreaterThan(0.8 * RATE_BITS);
      expect(bits).toBeLessThan(1.2 * RATE_BITS);
      expect(daemon.lines.some((l) => l.msg === 'ban (dry run: not enforced in the kernel)' || l.msg === 'banned')).toBe(false);
    } finally {
      http.kill('SIGTERM');
    }
  });
});
