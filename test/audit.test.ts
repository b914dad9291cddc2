import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Audit, type AuditQuery } from '../src/audit/query.js';
import { readLogFile, rotatedFiles, type ReadProblem } from '../src/audit/read.js';
import { auditRecord, type LogEntry } from '../src/audit/record.js';
import { parseCidr } from '../src/config/config.js';
import { parseDuration, parseTime } from '../src/cli/audit.js';
import type { DetectionEvent } from '../src/pipeline/pipeline.js';

const CLI = join(resolve(import.meta.dirname, '..'), 'dist/cli/main.js');
const T0 = Date.UTC(2026, 10, 21, 9, 0, 0);
const MINUTE = 60_000;

interface Flow {
  local: string;
  remote: string;
  minute: number;
  rule?: string;
  /** The remote peer connected in and was banned. */
  banned?: boolean;
  monitor?: boolean;
}

/** The JSON line the daemon writes for a flow between a local host and a remote one. */
function line(flow: Flow): string {
  const inbound = flow.banned === true;
  const event: DetectionEvent = {
    timeMs: T0 + flow.minute * MINUTE,
    flow: 1,
    l4: 'tcp',
    tunnelled: false,
    initiator: inbound ? flow.remote : flow.local,
    initiatorPort: inbound ? 40000 : 51000,
    responder: inbound ? flow.local : flow.remote,
    responderPort: inbound ? 51413 : 6881,
    initiatorLocal: !inbound,
    responderLocal: inbound,
    rule: flow.rule ?? 'handshake',
    strength: 'exact',
    producer: 'initiator',
    flowPackets: 4,
    decision: {
      action: 'drop',
      markConnection: true,
      enforce: flow.monitor !== true,
      ban: inbound ? { family: 4, address: flow.remote, durationS: 18000 } : null,
      rateLimited: false,
      reason: inbound ? `ban: ${flow.remote} sent handshake bytes (exact) over TCP after a handshake seen both ways` : `no ban: the BitTorrent bytes came from the local end ${flow.local}`,
      remember: null,
      cut: false,
    },
    payload: new Uint8Array(68),
    tcpSeq: 0,
    tcpSeqEnd: 0,
    tcpAck: 0,
  };
  return `${JSON.stringify(auditRecord(event, 'eth0', 256))}\n`;
}

const lostNote = (minute: number, count: number) =>
  `${JSON.stringify({ time: new Date(T0 + minute * MINUTE).toISOString(), lost_records: count, first_lost: new Date(T0 + (minute - 1) * MINUTE).toISOString(), error: 'ENOSPC' })}\n`;

async function read(file: string): Promise<{ entries: LogEntry[]; problems: ReadProblem[] }> {
  const entries: LogEntry[] = [];
  const problems: ReadProblem[] = [];
  await readLogFile(file, (e) => entries.push(e), (p) => problems.push(p));
  return { entries, problems };
}

function audit(entries: LogEntry[], query: AuditQuery = {}) {
  const a = new Audit(query);
  for (const entry of entries) a.add(entry);
  return a.report();
}

const cidr = (text: string) => [parseCidr(text)!];

describe('btwall audit', () => {
  let dir = '';
  beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), 'btwall-audit-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  describe('reading logs', () => {
    it('reads plain and gzipped files alike, whatever their names say', async () => {
      const text = line({ local: '10.0.0.2', remote: '198.51.100.9', minute: 0 }) + line({ local: '10.0.0.3', remote: '198.51.100.9', minute: 1 });
      writeFileSync(join(dir, 'a.log.2.gz'), gzipSync(text));
      writeFileSync(join(dir, 'b.log'), gzipSync(text));
      writeFileSync(join(dir, 'c.log.1'), text);
      for (const name of ['a.log.2.gz', 'b.log', 'c.log.1']) {
        const { entries, problems } = await read(join(dir, name));
        expect(problems).toEqual([]);
        expect(entries.map((e) => (e.kind === 'detection' ? e.record.local.address : ''))).toEqual(['10.0.0.2', '10.0.0.3']);
      }
    });

    it('reports a corrupt line and a truncated last line with their numbers, and reads the rest', async () => {
      const file = join(dir, 'detections.log');
      const whole = line({ local: '10.0.0.2', remote: '198.51.100.9', minute: 0 });
      writeFileSync(file, whole + '{"time": "2026-11-21T09:00:00.000Z", "local": 5}\n' + 'garbage\n' + whole + whole.slice(0, 120));
      const { entries, problems } = await read(file);
      expect(entries).toHaveLength(2);
      expect(problems).toEqual([
        { file, line: 2, message: '"local" is not an address and port' },
        { file, line: 3, message: expect.stringMatching(/^not a whole JSON record \(/) },
        { file, line: 5, message: expect.stringMatching(/^the last line is cut short \(not a whole JSON record .*\): the file ended without a newline, mid-record$/) },
      ]);
    });

    it('reads a gzip file cut short as far as it goes, and says so', async () => {
      const text = Array.from({ length: 3000 }, (_, i) => line({ local: `10.0.${i >> 8}.${i & 255}`, remote: '198.51.100.9', minute: i })).join('');
      const gz = gzipSync(text);
      const file = join(dir, 'detections.log.3.gz');
      writeFileSync(file, gz.subarray(0, gz.length >> 1));
      const { entries, problems } = await read(file);
      expect(entries.length).toBeGreaterThan(100);
      expect(entries.length).toBeLessThan(3000);
      expect(problems.at(-1)).toEqual({ file, message: expect.stringMatching(/^unexpected end of file after line \d+; the lines before it were read$/) });
    });

    it('skips text-format records, counting them, and reads the JSON ones around them', async () => {
      const file = join(dir, 'detections.log');
      const block = ['='.repeat(80), 'Timestamp:    2026-11-21 09:55:01.123', 'Source:       10.8.0.2:51000', '', 'Hex Dump:', '00000000  13 42', '', ''].join('\n');
      writeFileSync(file, block + block + line({ local: '10.0.0.2', remote: '198.51.100.9', minute: 0 }));
      const { entries, problems } = await read(file);
      expect(entries).toHaveLength(1);
      expect(problems).toEqual([{ file, message: '2 text-format records skipped: audit reads the records of DETECTION_LOG_FORMAT=json' }]);
    });

    it('finds the log and its rotated copies, oldest first, and nothing else', () => {
      const path = join(dir, 'detections.log');
      const names = ['detections.log', 'detections.log.1', 'detections.log.2.gz', 'detections.log-20261120', 'detections.log-20261119.gz', 'detections.log.bak', 'detections.log.1.tmp', 'other.log'];
      names.forEach((name, i) => {
        writeFileSync(join(dir, name), '');
        utimesSync(join(dir, name), 1_700_000_000 - i * 100, 1_700_000_000 - i * 100);
      });
      expect(rotatedFiles(path)).toEqual(['detections.log-20261119.gz', 'detections.log-20261120', 'detections.log.2.gz', 'detections.log.1', 'detections.log'].map((n) => join(dir, n)));
      expect(rotatedFiles(join(dir, 'missing', 'detections.log'))).toEqual([]);
    });
  });

  describe('queries', () => {
    const flows: Flow[] = [
      { local: '10.0.0.2', remote: '198.51.100.9', minute: 0 },
      { local: '10.0.0.2', remote: '198.51.100.9', minute: 5, rule: 'dht' },
      { local: '10.0.0.2', remote: '203.0.113.7', minute: 50 },
      { local: '10.0.0.3', remote: '198.51.100.9', minute: 30 },
      { local: '10.0.0.3', remote: '203.0.113.7', minute: 31, banned: true },
      { local: '10.0.0.4', remote: '203.0.113.8', minute: 40, banned: true, monitor: true },
    ];
    async function entries(): Promise<LogEntry[]> {
      const file = join(dir, 'detections.log');
      writeFileSync(file, flows.map(line).join('') + lostNote(45, 3));
      return (await read(file)).entries;
    }
    const at = (minute: number) => new Date(T0 + minute * MINUTE).toISOString();

    it('counts detections per local host by rule, with the first and last time, busiest first', async () => {
      const report = audit(await entries());
      expect(report.hosts).toEqual([
        { local: '10.0.0.2', detections: 3, rules: { handshake: 2, dht: 1 }, first: at(0), last: at(50) },
        { local: '10.0.0.3', detections: 2, rules: { handshake: 2 }, first: at(30), last: at(31) },
        { local: '10.0.0.4', detections: 1, rules: { handshake: 1 }, first: at(40), last: at(40) },
      ]);
      expect(report.records).toBe(6);
      expect(report.lost_records).toBe(3);
    });

    it('lists each ban with when and why, and says which were only what MONITOR_ONLY would have done', async () => {
      expect(audit(await entries()).bans).toEqual([
        { remote: '203.0.113.7', time: at(31), rule: 'handshake', reason: 'ban: 203.0.113.7 sent handshake bytes (exact) over TCP after a handshake seen both ways', local: '10.0.0.3', duration_s: 18000, action: 'drop' },
        { remote: '203.0.113.8', time: at(40), rule: 'handshake', reason: 'ban: 203.0.113.8 sent handshake bytes (exact) over TCP after a handshake seen both ways', local: '10.0.0.4', duration_s: 18000, action: 'monitor' },
      ]);
    });

    it('filters by time and by local and remote address or CIDR', async () => {
      const all = await entries();
      expect(audit(all, { sinceMs: T0 + 30 * MINUTE, untilMs: T0 + 40 * MINUTE }).hosts.map((h) => [h.local, h.detections])).toEqual([
        ['10.0.0.3', 2],
        ['10.0.0.4', 1],
      ]);
      expect(audit(all, { local: cidr('10.0.0.2') }).hosts.map((h) => h.local)).toEqual(['10.0.0.2']);
      expect(audit(all, { remote: cidr('203.0.113.0/24') }).hosts.map((h) => [h.local, h.detections])).toEqual([
        ['10.0.0.2', 1],
        ['10.0.0.3', 1],
        ['10.0.0.4', 1],
      ]);
      // A lost-records note outside the period does not count.
      expect(audit(all, { untilMs: T0 + 40 * MINUTE }).lost_records).toBe(0);
    });

    it('answers who talked to an address around a time, closest first, within the window only', async () => {
      const all = await entries();
      const report = audit(all, { remote: cidr('198.51.100.9'), at: { timeMs: T0 + 28 * MINUTE, windowMs: 30 * MINUTE } });
      expect(report.at).toEqual({ time: at(28), window_s: 1800 });
      expect(report.hosts.map((h) => [h.local, h.nearest, h.detections])).toEqual([
        ['10.0.0.3', at(30), 1],
        ['10.0.0.2', at(5), 2],
      ]);
      const narrow = audit(all, { remote: cidr('198.51.100.9'), at: { timeMs: T0 + 28 * MINUTE, windowMs: 10 * MINUTE } });
      expect(narrow.hosts.map((h) => h.local)).toEqual(['10.0.0.3']);
    });

    it('reads times and durations as documented, and refuses others', () => {
      expect(parseTime('--at', '2026-11-21T09:55:00Z')).toBe(Date.UTC(2026, 10, 21, 9, 55));
      expect(parseTime('--at', '2026-11-21T10:55:00.5+01:00')).toBe(Date.UTC(2026, 10, 21, 9, 55, 0, 500));
      expect(parseTime('--at', '2026-11-21 09:55')).toBe(new Date(2026, 10, 21, 9, 55).getTime());
      expect(parseTime('--since', '2026-11-21')).toBe(new Date(2026, 10, 21).getTime());
      expect(() => parseTime('--at', 'yesterday')).toThrow('--at takes a time like 2026-11-21T09:55:00Z, got "yesterday"');
      expect(() => parseTime('--at', '2026-13-40')).toThrow('--at takes a time');
      expect([parseDuration('--window', '90'), parseDuration('--window', '30m'), parseDuration('--window', '2h')]).toEqual([90_000, 1_800_000, 7_200_000]);
      expect(() => parseDuration('--window', '0')).toThrow('--window takes a duration');
    });
  });

  describe('the command', () => {
    const run = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, [CLI, 'audit', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

    it('reads the current and rotated logs of DETECTION_LOG, gzip included, and prints JSON for tools', () => {
      const path = join(dir, 'detections.log');
      writeFileSync(`${path}.2.gz`, gzipSync(line({ local: '10.0.0.2', remote: '198.51.100.9', minute: 0 })));
      writeFileSync(`${path}.1`, line({ local: '10.0.0.3', remote: '203.0.113.7', minute: 10, banned: true }));
      writeFileSync(path, line({ local: '10.0.0.2', remote: '198.51.100.9', minute: 20 }));
      const result = run(['--json'], { DETECTION_LOG: path });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      const report = JSON.parse(result.stdout);
      expect(report.hosts.map((h: { local: string; detections: number }) => [h.local, h.detections])).toEqual([
        ['10.0.0.2', 2],
        ['10.0.0.3', 1],
      ]);
      expect(report.bans).toEqual([expect.objectContaining({ remote: '203.0.113.7', time: new Date(T0 + 10 * MINUTE).toISOString(), rule: 'handshake', reason: expect.stringContaining('ban: 203.0.113.7') })]);
    });

    it('prints tables for people, reports bad lines on stderr and exits 1, still answering', () => {
      const path = join(dir, 'detections.log');
      writeFileSync(path, line({ local: '10.0.0.3', remote: '203.0.113.7', minute: 10, banned: true }));
      appendFileSync(path, '{"time":"2026-11-2');
      const result = run([path]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^btwall audit: ${path}:2: the last line is cut short`));
      expect(result.stdout).toContain('Detections by local host (1 records):');
      expect(result.stdout).toMatch(/LOCAL\s+DETECTIONS\s+FIRST\s+LAST\s+RULES\n10\.0\.0\.3\s+1\s+2026-11-21T09:10:00\.000Z\s+2026-11-21T09:10:00\.000Z\s+handshake 1/);
      expect(result.stdout).toMatch(/Bans \(1; .*\):\nTIME\s+BANNED\s+LOCAL\s+RULE\s+BAN\s+REASON\n2026-11-21T09:10:00\.000Z\s+203\.0\.113\.7\s+10\.0\.0\.3\s+handshake\s+18000 s\s+ban: 203\.0\.113\.7 sent/);
      const at = run(['--remote', '203.0.113.7', '--at', '2026-11-21T09:00:00Z', path]);
      expect(at.stdout).toMatch(/^Local hosts that talked BitTorrent with 203\.0\.113\.7 within 3600 s of 2026-11-21T09:00:00\.000Z, closest first:\nLOCAL\s+NEAREST/);
    });

    it('refuses bad usage with exit 64 and says what is wrong', () => {
      for (const [args, message] of [
        [['--at', '2026-11-21T09:00:00Z', 'x'], '--at asks who talked to an address then: give the address with --remote'],
        [['--since', 'soon', 'x'], '--since takes a time'],
        [['--local', '10.0.0.300', 'x'], '--local takes an IPv4 or IPv6 address or CIDR, got "10.0.0.300"'],
        [['--window', '5m', 'x'], '--window goes with --at'],
        [['--bogus', 'x'], "Unknown option '--bogus'"],
      ] as const) {
        const result = run([...args]);
        expect(result.status).toBe(64);
        expect(result.stderr).toContain(message);
      }
      const missing = run([], { DETECTION_LOG: join(dir, 'none.log') });
      expect(missing.status).toBe(1);
      expect(missing.stderr).toContain(`no detection log at ${join(dir, 'none.log')} (DETECTION_LOG)`);
    });
  });
});
