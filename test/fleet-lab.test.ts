/**
 * The fleet lab: two gateways, each the real daemon between its own client and server (XDP on
 * both links), and one host running Debian's CrowdSec Local API (SQLite, its own config), which
 * each gateway reaches over its own management link. Each gateway is a machine (publishes its
 * bans) and a bouncer (enforces the LAPI's decisions), credentials made with cscli.
 *
 * Both labs use the same addresses (10.77.x), in separate namespaces: the peer caught by gateway A
 * at 10.77.2.2 is, on gateway B, B's server at 10.77.2.2, so B's enforcement is seen on a real path.
 */
import { existsSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BanMaps } from '../src/bans/xdp.js';
import { clientHello } from './helpers/names.js';
import { btwall, CLI, connects, peer, startDaemon, stopPeers, type LogLine, type RunningDaemon } from './helpers/daemon.js';
import { haveCrowdsec, Lapi } from '../src/bench/lapi.js';
import { canUseKernel, createNamespace, createTopology, deviceWith, type Namespace, type Topology } from './helpers/netns.js';

/** The lab's addresses, the same in both gateways' labs. */
const AT = {
  client: '10.77.1.2',
  peer: '10.77.2.2',
  /** Peers caught while the LAPI is down: one on each gateway. */
  peerDownA: '10.77.2.3',
  peerDownB: '10.77.2.4',
  /** What an operator bans by hand with cscli. */
  manual: '10.77.2.7',
  /** A server whose name is a tracker's: its flows are dropped, it is never banned, so never published. */
  named: '10.77.2.8',
  /** A user behind the gateways (LOCAL_CIDRS): a LAPI decision for it is refused. */
  localUser: '10.77.1.5',
};
const SINK_PORT = 7000;
const LAPI_PORT = 8080;
/** Each gateway's metrics endpoint, on its own loopback. */
const METRICS_PORT = 9760;
/** The bound on propagation. */
const WITHIN_MS = 2000;

interface Gateway {
  name: 'A' | 'B';
  net: Topology;
  pinDir: string;
  /** The gateway's address on its management link, and the LAPI's there. */
  ownAddress: string;
  lapiAddress: string;
  env: Record<string, string>;
  daemon: RunningDaemon | null;
  handshakePort: number;
}

/** Addresses in a gateway's XDP ban maps, read through the pins (the test runs in the host's mount namespace). */
function mapped(gw: Gateway): string[] {
  const maps = BanMaps.openPinned(gw.pinDir);
  if (maps === null) return [];
  try {
    return maps.list().map((b) => b.address);
  } finally {
    maps.close();
  }
}

/** Milliseconds from `sinceMs` until `test` holds (checked every 10 ms), failing past `ms`. */
async function within(what: string, sinceMs: number, test: () => boolean, ms: number): Promise<number> {
  for (;;) {
    if (test()) return Date.now() - sinceMs;
    if (Date.now() - sinceMs > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.runIf(canUseKernel() && haveCrowdsec())('ban sharing through a real CrowdSec Local API', () => {
  let lapiHost: Namespace;
  let lapi: Lapi;
  const gateways: Gateway[] = [];
  const [A, B] = [0, 1].map((i) => () => gateways[i]);

  /** The gateway's server, from `address`, connects in to its client and sends its handshake; resolves with the daemon's `banned` line. */
  async function catchPeer(gw: Gateway, address: string): Promise<LogLine> {
    const port = gw.handshakePort++;
    const sink = peer(gw.net.client, 'tcp-sink', port, 3000);
    await sink.ready;
    await peer(gw.net.server, 'tcp-send', AT.client, port, 'handshake', 800, 1, address).done;
    return gw.daemon!.waitFor('banned', { address });
  }

  /** The LAPI's decisions (cscli decisions list -o json) on an address. */
  const lapiDecisions = (address: string) => lapi.decisions().filter((d) => d.value === address);

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    lapiHost = createNamespace('fl');
    lapi = new Lapi(`0.0.0.0:${LAPI_PORT}`, lapiHost);
    for (const [index, name] of (['A', 'B'] as const).entries()) {
      const net = createTopology(`f${name.toLowerCase()}`);
      const id = `fl${process.pid % 100000}${name}`;
      const [ownAddress, lapiAddress] = [`10.78.${index + 1}.1`, `10.78.${index + 1}.2`];
      const made = spawnSync('ip', ['link', 'add', `${id}g`, 'netns', net.gateway.name, 'type', 'veth', 'peer', 'name', `${id}l`, 'netns', lapiHost.name], { encoding: 'utf8' });
      if (made.status !== 0) throw new Error(`veth for gateway ${name}: ${made.stderr}`);
      net.gateway.must('ip', ['addr', 'add', `${ownAddress}/24`, 'dev', `${id}g`]);
      net.gateway.must('ip', ['link', 'set', `${id}g`, 'up']);
      lapiHost.must('ip', ['addr', 'add', `${lapiAddress}/24`, 'dev', `${id}l`]);
      lapiHost.must('ip', ['link', 'set', `${id}l`, 'up']);
      const serverDevice = deviceWith(net.server, AT.peer);
      for (const extra of [AT.peerDownA, AT.peerDownB, AT.manual, AT.named]) net.server.must('ip', ['addr', 'add', `${extra}/24`, 'dev', serverDevice]);
      const machine = `btwall-gw${name}-${process.pid}`;
      const password = `lab-password-${name}-${process.pid}`;
      lapi.addMachine(machine, password);
      if (index === 0) lapi.useMachineForCscli(machine, password);
      gateways.push({
        name,
        net,
        pinDir: `/sys/fs/bpf/btwall-test-${process.pid}-fleet${name}`,
        ownAddress,
        lapiAddress,
        env: {
          INTERFACE: [deviceWith(net.gateway, '10.77.1.1'), deviceWith(net.gateway, '10.77.2.1')].join(','),
          LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64',
          DETECTION_LOG: '',
          BAN_DURATION: '3600',
          STATS_INTERVAL: '1',
          CROWDSEC_LAPI_URL: `http://${lapiAddress}:${LAPI_PORT}`,
          CROWDSEC_API_KEY: lapi.addBouncer(`btwall-gw${name}`),
          CROWDSEC_MACHINE_ID: machine,
          CROWDSEC_MACHINE_PASSWORD: password,
          CROWDSEC_ORIGINS: 'btwall,cscli',
          METRICS_ADDR: `127.0.0.1:${METRICS_PORT}`,
          CONTROL_SOCKET: `/run/btwall-test-${process.pid}-fleet${name}/control.sock`,
        },
        daemon: null,
        handshakePort: 6881,
      });
    }
    for (const gw of gateways) {
      gw.env.BPF_PIN_DIR = gw.pinDir;
      await peer(gw.net.server, 'tcp-sink', SINK_PORT, 170_000).ready;
    }
    await lapi.start();
    for (const gw of gateways) {
      gw.daemon = startDaemon(gw.net.gateway, gw.env);
      const running = await gw.daemon.waitFor('btwall running');
      expect(running.bans).toContain(`shared through the CrowdSec Local API at http://${gw.lapiAddress}:${LAPI_PORT}`);
      await gw.daemon.waitFor('CrowdSec decisions stream read in full');
    }
  }, 60_000);

  afterAll(async () => {
    stopPeers();
    for (const gw of gateways) {
      if (gw.daemon?.running) await gw.daemon.stop();
      gw.net.destroy();
      rmSync(gw.pinDir, { recursive: true, force: true });
      rmSync(dirname(gw.env.CONTROL_SOCKET), { recursive: true, force: true });
    }
    lapi?.destroy();
    lapiHost?.delete();
  });

  it(`a peer caught on gateway A is in gateway B's XDP map within ${WITHIN_MS} ms, dropped there, and listed by cscli with btwall's scenario`, async () => {
    expect(await connects(B().net.client, AT.peer, SINK_PORT)).toBe(true);
    // A name is evidence to drop, never to ban: nothing of it is published.
    await peer(A().net.client, 'tcp-send', AT.named, SINK_PORT, `hex:${Buffer.from(clientHello('tracker.opentrackr.org')).toString('hex')}`, 800).done;
    await A().daemon!.waitFor('BitTorrent detected', { rule: 'tracker-sni', destination: AT.named });
    const banned = await catchPeer(A(), AT.peer);
    const latencyMs = await within('A → LAPI → B', banned.time as number, () => mapped(B()).includes(AT.peer), WITHIN_MS);
    console.log(`fleet lab: peer banned on gateway A, in gateway B's XDP map ${latencyMs} ms later (poll interval 1 s)`);
    expect(await connects(B().net.client, AT.peer, SINK_PORT)).toBe(false);
    const listed = lapiDecisions(AT.peer);
    expect(listed).toEqual([expect.objectContaining({ scenario: 'btwall/bittorrent-handshake', type: 'ban', origin: 'crowdsec' })]);
    // B enforces what it received and publishes none of it back: one decision, A's.
    await new Promise((r) => setTimeout(r, 1500));
    expect(lapiDecisions(AT.peer)).toHaveLength(1);
    expect(lapiDecisions(AT.named)).toEqual([]);
    expect(mapped(B())).not.toContain(AT.named);
    expect(B().daemon!.lines.some((l) => l.msg === 'banned' && l.address === AT.peer)).toBe(false);
  });

  it(`cscli decisions add is enforced on both gateways within ${WITHIN_MS} ms, and cscli decisions delete lifts it`, async () => {
    for (const gw of gateways) expect(await connects(gw.net.client, AT.manual, SINK_PORT)).toBe(true);
    const added = Date.now();
    lapi.cscli(['decisions', 'add', '--ip', AT.manual, '--duration', '1h']);
    const addedMs = await Promise.all(gateways.map((gw) => within(`cscli ban on ${gw.name}`, added, () => mapped(gw).includes(AT.manual), WITHIN_MS)));
    for (const gw of gateways) expect(await connects(gw.net.client, AT.manual, SINK_PORT)).toBe(false);
    const deleted = Date.now();
    lapi.cscli(['decisions', 'delete', '--ip', AT.manual]);
    const liftedMs = await Promise.all(gateways.map((gw) => within(`cscli unban on ${gw.name}`, deleted, () => !mapped(gw).includes(AT.manual), WITHIN_MS)));
    console.log(`fleet lab: cscli decisions add in the maps of A and B after ${addedMs.join(' and ')} ms; delete lifted after ${liftedMs.join(' and ')} ms`);
    for (const gw of gateways) expect(await connects(gw.net.client, AT.manual, SINK_PORT)).toBe(true);
  });

  it('with the LAPI stopped for 30 s both gateways keep blocking and banning; the bans made meanwhile reach it when it returns, and the maps match it after resync', async () => {
    await lapi.stop();
    const stopped = Date.now();
    for (const gw of gateways) await gw.daemon!.waitFor('cannot read the CrowdSec decisions stream; bans in place stay, a full resync follows when it answers');
    // Bans from before stay enforced; new peers are caught and cut off locally.
    expect(await connects(B().net.client, AT.peer, SINK_PORT)).toBe(false);
    await catchPeer(A(), AT.peerDownA);
    await catchPeer(B(), AT.peerDownB);
    expect(await connects(A().net.client, AT.peerDownA, SINK_PORT)).toBe(false);
    expect(await connects(B().net.client, AT.peerDownB, SINK_PORT)).toBe(false);
    for (const gw of gateways) await gw.daemon!.waitFor('cannot publish bans to the CrowdSec Local API; queueing them');
    await new Promise((r) => setTimeout(r, Math.max(0, stopped + 30_000 - Date.now())));
    expect(mapped(A())).not.toContain(AT.peerDownB);

    await lapi.start();
    const returned = Date.now();
    // Published when it answers again (the stream's first answer cuts the publisher's backoff short).
    const publishedMs = await within('the queued bans published', returned, () => lapiDecisions(AT.peerDownA).length === 1 && lapiDecisions(AT.peerDownB).length === 1, 10_000);
    const fleetBans = () => lapi.decisions().map((d) => d.value).sort();
    const resyncedMs = await within('maps matching the LAPI', returned, () => gateways.every((gw) => JSON.stringify(mapped(gw).sort()) === JSON.stringify(fleetBans())), 10_000);
    console.log(`fleet lab: LAPI back after ${Math.round((returned - stopped) / 1000)} s; queued bans published ${publishedMs} ms later, both maps matched it ${resyncedMs} ms later`);
    expect(fleetBans()).toEqual([AT.peer, AT.peerDownA, AT.peerDownB].sort());
    expect(await connects(A().net.client, AT.peerDownB, SINK_PORT)).toBe(false);
    expect(await connects(B().net.client, AT.peerDownA, SINK_PORT)).toBe(false);
    for (const gw of gateways) await gw.daemon!.waitFor('CrowdSec Local API reached again; publishing the queued bans');
  }, 70_000);

  it("refuses a LAPI decision for an address in the gateway's LOCAL_CIDRS, or its own address, and counts it", async () => {
    const rejected = (gw: Gateway) => (gw.daemon!.lines.filter((l) => l.msg === 'stats').at(-1)?.fleetDecisionsRejected as number | undefined) ?? 0;
    const before = gateways.map(rejected);
    lapi.cscli(['decisions', 'add', '--ip', AT.localUser, '--duration', '1h']);
    lapi.cscli(['decisions', 'add', '--ip', A().ownAddress, '--duration', '1h']);
    for (const gw of gateways) {
      const refused = await gw.daemon!.waitFor('CrowdSec decision refused: the address is never banned here', { address: AT.localUser });
      expect(refused.reason).toContain('LOCAL_CIDRS');
    }
    const own = await A().daemon!.waitFor('CrowdSec decision refused: the address is never banned here', { address: A().ownAddress });
    expect(own.reason).toBe("one of the gateway's own addresses");
    // At least: a full read after a failed poll (a loaded machine) counts them again.
    await within('the refusals counted', Date.now(), () => rejected(A()) >= before[0] + 2 && rejected(B()) >= before[1] + 1, 3000);
    expect(mapped(A())).not.toContain(AT.localUser);
    expect(mapped(B())).not.toContain(AT.localUser);
    // B has no such address: it enforces the ban (from its next poll on).
    await within("A's address banned on B", Date.now(), () => mapped(B()).includes(A().ownAddress), 3000);
    expect(mapped(A())).not.toContain(A().ownAddress);
  });

  it("tells the link's state in btwall status and the metrics: reachable, synced, received, rejected, published", async () => {
    for (const gw of gateways) {
      const status = btwall(gw.net.gateway, ['status', '--json'], { CONTROL_SOCKET: gw.env.CONTROL_SOCKET });
      expect(status.stderr).toBe('');
      const fleet = (JSON.parse(status.stdout) as { fleet: Record<string, unknown> }).fleet;
      expect(fleet).toMatchObject({ lapiUrl: `${gw.env.CROWDSEC_LAPI_URL}/`, lapiReachable: true, queued: 0, publishDropped: 0 });
      expect(Date.now() - (fleet.lastSyncMs as number)).toBeLessThan(10_000);
      // A published its two bans (the first peer, one made while the LAPI was down), B its one; A refused
      // two decisions (a local user, its own address), B one.
      expect(fleet.published).toBe(gw === A() ? 2 : 1);
      expect(fleet.decisionsRejected).toBeGreaterThanOrEqual(gw === A() ? 2 : 1);
      expect(fleet.decisionsReceived).toBeGreaterThanOrEqual((fleet.decisionsRejected as number) + 1);
      const [scrape] = await peer(gw.net.gateway, 'http-get', `http://127.0.0.1:${METRICS_PORT}/metrics`).done;
      const text = scrape.body as string;
      expect(text).toContain(`btwall_fleet_lapi_up{lapi="${gw.env.CROWDSEC_LAPI_URL}/"} 1\n`);
      expect(text).toContain(`btwall_fleet_bans_published_total ${fleet.published}\n`);
      expect(text).toMatch(/^btwall_fleet_last_sync_timestamp_seconds\{lapi="[^"]+"\} \d/m);
      expect(Number(/^btwall_fleet_decisions_rejected_total (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(fleet.decisionsRejected as number);
    }
  });
});
