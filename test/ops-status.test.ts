/** `btwall status`: the control socket, the report and its two printings. */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DryRunBanSink } from '../src/bans/sink.js';
import { loadConfig } from '../src/config/config.js';
import { askDaemon, ControlServer, ControlSocketError } from '../src/ops/control.js';
import { QueueCounters } from '../src/ops/queue-counters.js';
import { formatStatus, statusReport } from '../src/ops/status.js';
import { detectionSummary, RECENT_DETECTIONS, Telemetry } from '../src/ops/telemetry.js';
import { PACKET_ACCEPT, PACKET_MARK_BITTORRENT } from '../src/pipeline/pipeline.js';
import { detectionEvent } from './helpers/detections.js';

const silent = pino({ level: 'silent' });
const CLI = join(resolve(import.meta.dirname, '..'), 'bin/btwall');

describe('control socket', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'btwall-control-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('answers commands as JSON on a socket only root may use, in a directory it creates 0700, and removes it at close', async () => {
    const path = join(work, 'run', 'control.sock');
    const server = await ControlServer.listen(path, { status: () => ({ up: true }), broken: () => Promise.reject(new Error('no maps')) }, silent);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(work, 'run')).mode & 0o777).toBe(0o700);
    expect(await askDaemon(path, 'status')).toEqual({ ok: true, result: { up: true } });
    expect(await askDaemon(path, 'broken')).toEqual({ ok: false, error: 'no maps' });
    expect(await askDaemon(path, 'toString')).toEqual({ ok: false, error: 'unknown command "toString"; known: status, broken' });
    // A second daemon with the same socket is refused while the first answers.
    await expect(ControlServer.listen(path, {}, silent)).rejects.toThrow(/another btwall daemon answers/);
    await server.close();
    expect(() => statSync(path)).toThrow();
    await expect(askDaemon(path, 'status')).rejects.toThrow(/no daemon is listening/);
  });

  it('replaces a socket a dead daemon left; refuses a file that is not a socket and a directory others may write', async () => {
    const dir = join(work, 'stale');
    mkdirSync(dir, { mode: 0o700 });
    const path = join(dir, 'control.sock');
    // A socket nobody listens on any more, as a daemon killed with -9 leaves it (node unlinks its own at close).
    const bound = spawnSync('/usr/bin/python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
    expect(bound.status).toBe(0);
    expect(statSync(path).isSocket()).toBe(true);
    const server = await ControlServer.listen(path, { status: () => 1 }, silent);
    expect(await askDaemon(path, 'status')).toEqual({ ok: true, result: 1 });
    await server.close();

    const file = join(dir, 'file.sock');
    writeFileSync(file, 'keep me');
    await expect(ControlServer.listen(file, {}, silent)).rejects.toThrow(new ControlSocketError(`${file} exists and is not a socket; it is not replaced`));
    const open = join(work, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    await expect(ControlServer.listen(join(open, 'control.sock'), {}, silent)).rejects.toThrow(/writable by group or others \(mode 0777\)/);
  });

  it('btwall status says when no daemon answers, and exits 1', () => {
    const run = spawnSync(CLI, ['status'], { encoding: 'utf8', env: { ...process.env, CONTROL_SOCKET: join(work, 'nobody.sock') } });
    expect(run.status).toBe(1);
    expect(run.stderr).toBe(`btwall status: cannot ask the daemon at ${join(work, 'nobody.sock')}: no daemon is listening (is btwall running, with this CONTROL_SOCKET?)\n`);
    expect(spawnSync(CLI, ['status', '--yaml'], { encoding: 'utf8' }).status).toBe(64);
  });
});

describe('status report', () => {
  const config = loadConfig({ XDP_MODE: 'off', WEBHOOK_URL: 'https://ops:pw@hooks.example/x' });

  function telemetry(): Telemetry {
    const t = new Telemetry({ first: 0, last: 1 });
    const q0 = new QueueCounters(t.queues.get(0)!.buffer);
    const q1 = new QueueCounters(t.queues.get(1)!.buffer);
    q0.packet(PACKET_ACCEPT);
    q1.packet(PACKET_ACCEPT);
    q1.packet(PACKET_MARK_BITTORRENT);
    for (let i = 0; i < RECENT_DETECTIONS + 5; i++) {
      const event = { ...detectionEvent('handshake', 'exact'), initiatorPort: 40000 + i };
      t.detection(detectionSummary(event, 'eth1'), event, null);
    }
    const banned = detectionEvent('utp', 'response', { ban: { family: 4, address: '198.51.100.9', durationS: 18000 } });
    t.detection(detectionSummary(banned, null), banned, 'not_enforced');
    return t;
  }

  it('adds up the queues, keeps the latest detections newest first, and redacts secrets', () => {
    const report = statusReport('9.9.9', config, telemetry(), new DryRunBanSink(silent), null, null, []);
    expect(Object.keys(report)).toEqual(['version', 'pid', 'startedAt', 'uptimeS', 'config', 'restartPending', 'counters', 'bans', 'fleet', 'detections']);
    expect(report.fleet).toBeNull();
    expect(report.counters.packets).toEqual({ inspected: 3, accepted: 2, dropped: 1, markedClean: 0, markedBittorrent: 1, markedThrottle: 0 });
    expect(report.counters.detections).toEqual({
      total: RECENT_DETECTIONS + 6,
      byRule: [
        { rule: 'handshake', strength: 'exact', count: RECENT_DETECTIONS + 5 },
        { rule: 'utp', strength: 'response', count: 1 },
      ],
    });
    expect(report.counters.bans).toMatchObject({ not_enforced: 1, skipped_by_policy: RECENT_DETECTIONS + 5 });
    expect(report.detections).toHaveLength(RECENT_DETECTIONS);
    expect(report.detections[0]).toMatchObject({ rule: 'utp', interface: null, ban: { address: '198.51.100.9', duration_s: 18000 } });
    expect(report.detections[1].local.port).toBe(40000 + RECENT_DETECTIONS + 4);
    expect(report.bans).toMatchObject({ enforced: false, interfaces: [], active: null, dropped: null, list: [] });
    expect(report.config.webhookUrl).toBe('https://REDACTED:REDACTED@hooks.example/x');
    // The report goes over the socket as JSON: nothing in it that JSON would lose.
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('prints plain aligned sections for people', () => {
    const fleet = { lapiUrl: 'http://10.0.0.5:8080', lapiReachable: true, lastSyncMs: Date.UTC(2026, 11, 3, 8, 0, 1), decisionsReceived: 12, decisionsRejected: 2, decisionsLifted: 3, published: 5, queued: 0, publishDropped: 0 };
    const report = statusReport('9.9.9', config, telemetry(), new DryRunBanSink(silent), { sent: 4, dropped: 0, rejected: 0, failedRequests: 1, queued: 2 }, fleet, []);
    const text = formatStatus({ ...report, pid: 42, uptimeS: 3723, startedAt: '2026-12-03T07:00:00.000Z' });
    const lines = text.split('\n');
    expect(lines[0]).toBe('btwall 9.9.9, pid 42, up 1h 2m 3s (since 2026-12-03T07:00:00.000Z)');
    const packets = lines.slice(lines.indexOf('packets') + 1, lines.indexOf('packets') + 4);
    expect(packets).toEqual(['  inspected     3', '  accepted      2 (0 with their connection marked clean)', '  dropped       1 (1 with their connection marked BitTorrent)']);
    expect(text).toContain('\ndetections\n  total              26\n  handshake (exact)  25\n  utp (response)     1\n');
    expect(text).toContain('  outcomes     not_enforced 1, skipped_by_policy 25\n');
    // Where the XDP program is, each interface in the mode XDP_MODE=auto took for it.
    expect(text).toMatch(/^ {2}XDP +on no interface$/m);
    const xdp = [{ name: 'eth0', kind: 'ethernet', mode: 'native' }, { name: 'wg0', kind: 'l3', mode: 'generic' }];
    expect(formatStatus({ ...report, bans: { ...report.bans, interfaces: xdp } })).toMatch(/^ {2}XDP +eth0 native, wg0 generic$/m);
    expect(text).toContain('webhook\n  detections  sent 4, queued 2, dropped 0, rejected 0; failed requests 1\n');
    expect(text).toContain(
      'fleet (CrowdSec Local API)\n  lapi       http://10.0.0.5:8080/: reachable\n  last sync  2026-12-03T08:00:01.000Z\n  decisions  received 12, rejected by local policy 2, lifted 3\n  published  5, queued 0, dropped 0\n',
    );
    const table = lines.slice(lines.indexOf('last detections (newest first)') + 1, lines.indexOf('last detections (newest first)') + 3);
    // Columns as wide as their longest value (an action may be longer than the ones here).
    const words = (line: string) => line.trim().split(/ {2,}/);
    expect(words(table[0])).toEqual(['TIME', 'LOCAL', 'REMOTE', 'RULE', 'STRENGTH', 'ACTION', 'BAN']);
    expect(words(table[1])).toEqual(['2026-12-03T08:00:00.000Z', '10.8.0.2:50000', '198.51.100.9:6881', 'utp', 'response', 'drop', '198.51.100.9 5h 0m 0s']);
    expect(table[0].indexOf('BAN')).toBe(table[1].indexOf('198.51.100.9 5h'));
    expect(text).toMatch(/^ {2}webhookUrl {16}"https:\/\/REDACTED:REDACTED@hooks\.example\/x"$/m);
    expect(text).not.toContain('waiting for a restart');
  });

  it('names the variables a reload changed that wait for a restart', () => {
    const report = statusReport('9.9.9', config, telemetry(), new DryRunBanSink(silent), null, null, ['FLOW_CAPACITY', 'XDP_MODE']);
    expect(report.restartPending).toEqual(['FLOW_CAPACITY', 'XDP_MODE']);
    expect(formatStatus(report)).toMatch(/\nchanged, waiting for a restart: FLOW_CAPACITY, XDP_MODE\n$/);
  });
});
