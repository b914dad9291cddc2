/**
 * The operations side of a real daemon on the lab gateway: its Prometheus scrape (linted by
 * Debian's promtool) moves as BitTorrent flows are dropped and a peer is banned, `btwall status`
 * answers over the control socket, and the webhook receives the detections.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { btwall, CLI, peer, startDaemon, tearDownLab, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Topology } from './helpers/netns.js';

const CLIENT4 = '10.77.1.2';
const SERVER4 = '10.77.2.2';
const METRICS_PORT = 9760;
const WEBHOOK_PORT = 9761;

/** Samples of a Prometheus text exposition: `name{labels}` -> value. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    found.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return found;
}

describe.runIf(canUseKernel())('metrics, status and webhook of a running daemon', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-ops`;

  /** One scrape of the daemon's /metrics, from inside the gateway (the endpoint is on its loopback). */
  const scrape = async () => {
    const [response] = await peer(net.gateway, 'http-get', `http://127.0.0.1:${METRICS_PORT}/metrics`).done;
    expect(response.status).toBe(200);
    expect(response.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    return response.body as string;
  };

  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    if (spawnSync('promtool', ['--version']).status !== 0) throw new Error("promtool is missing: make test installs Debian's prometheus package");
    net = createTopology('o');
    work = mkdtempSync(join(tmpdir(), 'btwall-ops-'));
  });
  afterAll(() => tearDownLab(daemon, net, [pinDir, work]));

  it('counts a dropped BitTorrent flow and a ban in a scrape promtool accepts, tells them in btwall status, and posts them to the webhook', async () => {
    const receiver = peer(net.gateway, 'http-sink', WEBHOOK_PORT, 60_000);
    await receiver.ready;
    const control = join(work, 'run', 'control.sock');
    daemon = startDaemon(net.gateway, {
      INTERFACE: [deviceWith(net.gateway, '10.77.1.1'), deviceWith(net.gateway, '10.77.2.1')].join(','),
      BPF_PIN_DIR: pinDir,
      LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64',
      DETECTION_LOG: '',
      // One queue, so that every flow's packets count under queue="0".
      QUEUE_NUM: '0',
      VERDICT_TIMEOUT_MS: '3000',
      STATS_INTERVAL: '1',
      METRICS_ADDR: `127.0.0.1:${METRICS_PORT}`,
      CONTROL_SOCKET: control,
      WEBHOOK_URL: `http://hook:secret@127.0.0.1:${WEBHOOK_PORT}/btwall?token=abc`,
    });
    await daemon.waitFor('btwall running');
    expect(statSync(control).mode & 0o777).toBe(0o600);
    const before = samples(await scrape());
    expect(before.get('btwall_detections_total{rule="handshake",strength="exact"}')).toBeUndefined();
    expect(before.get('btwall_bans_active{family="ipv4"}')).toBe(0);

    // A local client's handshake: the flow is dropped, nobody banned (a local user's bytes never ban).
    const outbound = peer(net.server, 'tcp-sink', 6881, 3000);
    await outbound.ready;
    await peer(net.client, 'tcp-send', SERVER4, 6881, 'handshake', 1500).done;
    // The handshake never reaches the sink (CUT_ESTABLISHED may reset the connection it opened).
    expect((await outbound.done).filter((l) => l.event === 'closed' && l.bytes !== 0)).toEqual([]);
    // The remote peer's handshake to the local client: proof, so it is banned, and XDP drops its packets.
    const inbound = peer(net.client, 'tcp-sink', 6882, 3000);
    await inbound.ready;
    await peer(net.server, 'tcp-send', CLIENT4, 6882, 'handshake', 1500).done;
    await daemon.waitFor('banned', { address: SERVER4 });
    const [refused] = await peer(net.client, 'tcp-send', SERVER4, 7000, 'text', 700).done;
    expect(refused.connected).toBe(0);
    // The workers copy their tables' sizes and the brokers' counters once a second.
    await new Promise((r) => setTimeout(r, 1200));

    const text = await scrape();
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect({ status: lint.status, problems: lint.stdout + lint.stderr }).toEqual({ status: 0, problems: '' });
    const after = samples(text);
    const moved = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    expect(after.get('btwall_detections_total{rule="handshake",strength="exact"}')).toBe(2);
    expect(moved('btwall_bans_total{outcome="skipped_by_policy"}')).toBe(1);
    expect(moved('btwall_bans_total{outcome="added"}')).toBe(1);
    expect(after.get('btwall_bans_active{family="ipv4"}')).toBe(1);
    expect(moved('btwall_xdp_dropped_packets_total{family="ipv4"}')).toBeGreaterThan(0);
    expect(moved('btwall_packets_inspected_total{queue="0",verdict="drop",mark="bittorrent"}')).toBe(2);
    expect(moved('btwall_packets_inspected_total{queue="0",verdict="accept",mark="none"}')).toBeGreaterThan(0);
    expect(moved('btwall_batch_packets_count{queue="0"}')).toBeGreaterThan(0);
    expect(after.get('btwall_batch_engine_seconds_count{queue="0"}')).toBe(after.get('btwall_batch_engine_seconds_bucket{queue="0",le="+Inf"}'));
    expect(moved('btwall_queue_batches_total{queue="0"}')).toBeGreaterThan(0);
    expect(after.get('btwall_flows_tracked{queue="0"}')).toBeGreaterThan(0);
    // The local client's handshake listed the server's listening endpoint for that client; the
    // banned peer opened its flow, so no listening port of its is known to remember it by.
    expect(after.get('btwall_peers_listed')).toBe(1);
    expect(after.get('btwall_peers_proven')).toBe(0);
    expect(after.get('btwall_webhook_queued_detections')).toBeDefined();

    const status = btwall(net.gateway, ['status', '--json'], { CONTROL_SOCKET: control });
    expect(status.stderr).toBe('');
    const report = JSON.parse(status.stdout) as Record<string, any>;
    expect(report.uptimeS).toBeGreaterThan(0);
    // The webhook's credentials and token are not shown.
    expect(report.config.webhookUrl).toBe(`http://REDACTED:REDACTED@127.0.0.1:${WEBHOOK_PORT}/btwall?REDACTED`);
    expect(report.counters.detections.total).toBe(2);
    expect(report.counters.bans.added).toBe(1);
    expect(report.bans.active).toEqual({ ipv4: 1, ipv6: 0 });
    expect(report.bans.list.map((b: { address: string; rule: string }) => [b.address, b.rule])).toEqual([[SERVER4, 'handshake']]);
    expect(report.detections.map((d: { remote: { address: string }; ban: unknown }) => [d.remote.address, d.ban])).toEqual([
      [SERVER4, { address: SERVER4, duration_s: 18000 }],
      [SERVER4, null],
    ]);
    const human = btwall(net.gateway, ['status'], { CONTROL_SOCKET: control });
    expect(human.stdout).toMatch(/^ {2}active +IPv4 1, IPv6 0$/m);
    expect(human.stdout).toMatch(/^ {2}handshake \(exact\) +2$/m);

    // Both detections, in the order they happened, with the fields an operator acts on (batching: test/ops-webhook.test.ts).
    type Post = { method: string; path: string; contentType: string; authorization: string; body: { source: string; detections: Record<string, unknown>[] } };
    const posts = () => receiver.lines.filter((l) => l.event === 'request') as Post[];
    const posted = () => posts().flatMap((p) => p.body.detections);
    const deadline = Date.now() + 10_000;
    while (posted().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const basic = `Basic ${Buffer.from('hook:secret').toString('base64')}`;
    expect(new Set(posts().map((p) => JSON.stringify([p.method, p.path, p.contentType, p.authorization, p.body.source])))).toEqual(
      new Set([JSON.stringify(['POST', '/btwall?token=abc', 'application/json', basic, 'btwall'])]),
    );
    expect(posted().map((d) => [d.local, d.remote, d.rule, d.strength, d.action, d.ban])).toEqual([
      [{ address: CLIENT4, port: expect.any(Number) }, { address: SERVER4, port: 6881 }, 'handshake', 'exact', 'drop', null],
      [{ address: CLIENT4, port: 6882 }, { address: SERVER4, port: expect.any(Number) }, 'handshake', 'exact', 'drop', { address: SERVER4, duration_s: 18000 }],
    ]);
    expect(posted().every((d) => typeof d.time === 'string' && d.interface !== undefined)).toBe(true);

    expect(await daemon.stop()).toBe(0);
    expect(existsSync(control)).toBe(false);
  });
});
