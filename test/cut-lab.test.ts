/**
 * CUT_ESTABLISHED with a real BitTorrent client (python3-libtorrent, no DHT, LSD, UPnP, NAT-PMP or
 * encryption) through the client <-> gateway <-> server lab: a download the daemon decides is reset
 * at once, both ends told; and a download that was running before the daemon started is found in
 * its sampled packets and cut within seconds.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { btClient, startDaemon, stopIfRunning, stopPeers, type Peer, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, type Namespace, type Topology } from './helpers/netns.js';

const SEED_PORT = 6991;

describe.runIf(canUseKernel())('cutting BitTorrent connections with a real client', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;
  let seeder: Peer;
  let torrent: string;

  beforeAll(async () => {
    net = createTopology('k');
    work = mkdtempSync(join(tmpdir(), 'btwall-cut-'));
    seeder = btClient(net.server, 'seed', work, SEED_PORT, 64, 110);
    await seeder.ready;
    torrent = seeder.lines[0].torrent as string;
  });
  afterEach(async () => {
    await stopIfRunning(daemon);
    daemon = null;
  });
  afterAll(() => {
    stopPeers();
    net?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** A leecher in its own directory, downloading from the seeder at most `rateKBps`. */
  const leech = (name: string, rateKBps: number, lifetimeS: number) => {
    const dir = join(work, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    return btClient(net.client, 'leech', dir, torrent, net.serverV4, SEED_PORT, rateKBps, lifetimeS);
  };
  const until = async (what: () => boolean, ms: number) => {
    const deadline = Date.now() + ms;
    while (!what() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    return what();
  };
  const done = (p: Peer) => Math.max(0, ...p.lines.filter((l) => l.event === 'progress').map((l) => Number(l.done)));
  /** TCP connections in ESTABLISHED in a namespace matching an ss filter. */
  const established = (ns: Namespace, filter: string) => ns.must('ss', ['-Htn', 'state', 'established', `( ${filter} )`]).split('\n').filter(Boolean).length;
  const resets = (p: Peer) => p.lines.filter((l) => l.event === 'peer-error' && /reset/i.test(String(l.message)));

  it('resets a connection it decides: the client hears it at once, the seeder too, and nothing is downloaded', async () => {
    daemon = startDaemon(net.gateway, { XDP_MODE: 'off', DETECTION_LOG: '', VERDICT_TIMEOUT_MS: '3000', LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64' });
    await daemon.waitFor('btwall running');
    const started = Date.now();
    const client = leech('decided', 2000, 6);
    expect(await until(() => resets(client).length > 0, 5000)).toBe(true);
    const heardMs = Number(resets(client)[0].time) * 1000 - started;
    const cut = await daemon.waitFor('connection cut', { responder: `${net.serverV4}:${SEED_PORT}` });
    expect(cut).toMatchObject({ conntrackDeleted: true });
    // The seeder's side is gone too (a connection that was never handed to a torrent raises no alert there).
    expect(await until(() => established(net.server, `sport = :${SEED_PORT}`) === 0, 1000)).toBe(true);
    await client.done;
    expect(done(client)).toBe(0);
    console.log(`decided download: client saw the reset ${Math.round(heardMs)} ms after starting`);
  });

  it('cuts a download that started before the daemon within seconds of the start', async () => {
    const client = leech('before', 400, 40);
    expect(await until(() => done(client) > 1 << 20, 15_000)).toBe(true);
    const before = resets(client).length;
    daemon = startDaemon(net.gateway, { XDP_MODE: 'off', DETECTION_LOG: '', VERDICT_TIMEOUT_MS: '3000', LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64' });
    await daemon.waitFor('btwall running');
    const runningAt = Date.now();
    expect(await until(() => resets(client).length > before, 10_000)).toBe(true);
    const cutMs = Number(resets(client).at(-1)!.time) * 1000 - runningAt;
    // Caught mid-stream: no handshake seen, so no ban, whatever the bytes.
    const detection = await daemon.waitFor('BitTorrent detected');
    expect(detection.ban).toBe('none');
    const doneAtCut = done(client);
    // The piece in flight may still be counted (its hash checked) shortly after; then nothing more:
    // a reconnection would be dropped (and cut) at its handshake.
    await new Promise((r) => setTimeout(r, 1500));
    const settled = done(client);
    await new Promise((r) => setTimeout(r, 3000));
    expect(done(client)).toBe(settled);
    expect(daemon.lines.filter((l) => l.msg === 'connection cut').length).toBeGreaterThanOrEqual(1);
    console.log(`download before the daemon: cut ${Math.round(cutMs)} ms after "btwall running", ${doneAtCut} bytes done by then`);
  });
});
