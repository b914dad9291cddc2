/**
 * The detection log as an operator uses it, in the client <-> gateway <-> server lab: two local
 * users make BitTorrent flows and a remote peer connects in and is banned, and `btwall audit
 * --json` attributes each flow to the right host, the ban to the peer, and answers who talked to
 * an address at a time. Then the shipped logrotate snippet rotates the log (compressing, with
 * SIGHUP) three times under a stream of detections, and not one record is lost or split.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AuditReport } from '../src/audit/query.js';
import { btwall, CLI, peer, startDaemon, stopIfRunning, stopPeers, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Topology } from './helpers/netns.js';

const ALICE = '10.77.1.2';
const BOB = '10.77.1.3';
const SERVER = '10.77.2.2';
/** A second remote address: the one Bob's DHT client talks to. */
const DHT_NODE = '10.77.2.3';
/** A remote peer that connects in to Alice. */
const PEER = '10.77.2.9';
const SNIPPET = resolve(import.meta.dirname, '../logrotate/btwall');

const canRotate = spawnSync('logrotate', ['--version']).status === 0;

describe.runIf(canUseKernel())('detection log audits', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;

  const start = (log: string) => startDaemon(net.gateway, { DETECTION_LOG: log, LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64', VERDICT_TIMEOUT_MS: '3000' });
  const audit = (args: string[], log: string) => {
    const run = btwall(net.gateway, ['audit', '--json', ...args], { DETECTION_LOG: log });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    return JSON.parse(run.stdout) as AuditReport;
  };
  const detections = () => daemon!.lines.filter((l) => l.msg === 'BitTorrent detected');

  async function detected(count: number, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (detections().length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }

  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    net = createTopology('au');
    net.client.must('ip', ['addr', 'add', `${BOB}/24`, 'dev', net.clientDevice]);
    const serverDevice = deviceWith(net.server, SERVER);
    for (const address of [DHT_NODE, PEER]) net.server.must('ip', ['addr', 'add', `${address}/24`, 'dev', serverDevice]);
    work = mkdtempSync(join(tmpdir(), 'btwall-audit-lab-'));
  });
  afterEach(() => stopIfRunning(daemon));
  afterAll(() => {
    stopPeers();
    net?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('btwall audit --json attributes each flow to the local host that made it, and the ban to the peer', async () => {
    const log = join(work, 'hosts', 'detections.log');
    daemon = start(log);
    await daemon.waitFor('btwall running');
    // Alice: two handshakes out to the server.
    const sink = peer(net.server, 'tcp-sink', 6881, 3000);
    await sink.ready;
    const [sent] = await peer(net.client, 'tcp-send', SERVER, 6881, 'handshake', 800, 2, ALICE).done;
    expect(sent.connected).toBe(2);
    // Bob: three DHT queries to another remote address.
    expect((await peer(net.client, 'udp-flows', DHT_NODE, 6890, 3, 20, BOB, 21000).done).at(-1)).toEqual({ sent: 3 });
    // A remote peer connects in to Alice and sends its handshake: it proves itself and is banned.
    const aliceSink = peer(net.client, 'tcp-sink', 6882, 3000);
    await aliceSink.ready;
    const beforeBan = new Date().toISOString();
    await peer(net.server, 'tcp-send', ALICE, 6882, 'handshake', 800, 1, PEER).done;
    await detected(6);
    expect(await daemon.stop()).toBe(0);

    const report = audit([], log);
    expect(report.hosts.map((h) => [h.local, h.detections, h.rules])).toEqual([
      [ALICE, 3, { handshake: 3 }],
      [BOB, 3, { dht: 3 }],
    ]);
    expect(report.bans).toEqual([
      expect.objectContaining({ remote: PEER, local: ALICE, rule: 'handshake', action: 'drop', duration_s: 18000, reason: `ban: ${PEER} sent handshake bytes (exact) over TCP after a handshake seen both ways` }),
    ]);
    expect(report.bans[0].time >= beforeBan).toBe(true);
    // Each record names the local end by LOCAL_CIDRS, whoever opened the flow.
    const records = readFileSync(log, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records.find((r) => (r.remote as { address: string }).address === PEER)).toMatchObject({ local: { address: ALICE, port: 6882 }, initiator: 'remote', direction: 'remote', local_ends: 1 });
    expect(records.filter((r) => r.rule === 'dht').every((r) => (r.local as { address: string }).address === BOB && r.direction === 'local')).toBe(true);

    // The copyright-notice question: who talked BitTorrent to DHT_NODE around now? Bob only.
    const at = audit(['--remote', DHT_NODE, '--at', new Date().toISOString(), '--window', '10m'], log);
    expect(at.hosts.map((h) => [h.local, h.detections])).toEqual([[BOB, 3]]);
    expect(audit(['--local', ALICE], log).hosts.map((h) => h.local)).toEqual([ALICE]);
  });

  it.runIf(canRotate)('the shipped logrotate snippet rotates under a stream of detections and loses or splits no record', async () => {
    const dir = join(work, 'rotate');
    const log = join(dir, 'detections.log');
    daemon = start(log);
    await daemon.waitFor('btwall running');
    // The snippet as shipped, for this log and this daemon (not a systemd service here).
    const snippet = readFileSync(SNIPPET, 'utf8');
    expect(snippet).toContain('/var/log/btwall/detections.log {');
    expect(snippet).toContain('systemctl reload btwall.service');
    const config = join(work, 'logrotate.conf');
    writeFileSync(config, snippet.replace('/var/log/btwall/detections.log', log).replace(/systemctl reload btwall\.service/, `kill -HUP ${daemon.process.pid}`), { mode: 0o644 });
    const rotate = () => {
      const run = spawnSync('logrotate', ['-f', '-s', join(work, 'logrotate.state'), config], { encoding: 'utf8' });
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
    };
    const flows = 600;
    const stream = peer(net.client, 'udp-flows', SERVER, 6900, flows, 4, ALICE, 22000).done;
    // Each rotation once the stream has added records since the last one (notifempty skips an empty log).
    for (let i = 1; i <= 3; i++) {
      await detected(i * 100);
      rotate();
    }
    expect((await stream).at(-1)).toEqual({ sent: flows });
    await detected(flows);
    expect(await daemon.stop()).toBe(0);
    expect(detections()).toHaveLength(flows);
    expect(daemon.lines.filter((l) => l.msg === 'detection log reopened')).toHaveLength(3);

    // Three rotations with delaycompress: the log, .1 as it was written, .2.gz and .3.gz.
    expect(readdirSync(dir).sort()).toEqual(['detections.log', 'detections.log.1', 'detections.log.2.gz', 'detections.log.3.gz']);
    const lines = readdirSync(dir).flatMap((name) => {
      const bytes = readFileSync(join(dir, name));
      const text = (name.endsWith('.gz') ? gunzipSync(bytes) : bytes).toString('utf8');
      if (text !== '') expect(text.endsWith('\n')).toBe(true);
      return text.split('\n').filter((l) => l !== '');
    });
    // Every line is one whole record, and every detection has one.
    const ports = lines.map((l) => (JSON.parse(l) as { local: { port: number } }).local.port);
    expect(ports).toHaveLength(flows);
    expect(new Set(ports).size).toBe(flows);
    expect(readdirSync(dir).filter((name) => readFileSync(join(dir, name)).length > 0).length).toBeGreaterThanOrEqual(3);
    const report = audit([], log);
    expect(report.records).toBe(flows);
    expect(report.hosts).toEqual([expect.objectContaining({ local: ALICE, detections: flows, rules: { dht: flows } })]);
  });
});
