import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseLogLine, type AuditRecord } from '../src/audit/record.js';
import { DetectionLog, detectionRecord, formatDetection, hexDump, type Detection, type DetectionLogOptions } from '../src/daemon/detection-log.js';
import { NODE_IO, RecordFile, UnsafeLogError, type FileIo, type LossReport, type Losses } from '../src/daemon/log-file.js';
import type { DetectionEvent } from '../src/pipeline/pipeline.js';

const handshake = Uint8Array.from([19, ...Buffer.from('BitTorrent protocol'), 0, 0, 0, 0, 0, 0x10, 0, 5]);

function detection(payload: Uint8Array, destination = '198.51.100.9'): Detection {
  return {
    timeMs: Date.UTC(2026, 10, 21, 9, 55, 1, 123),
    interface: 'eth0',
    protocol: 'TCP',
    source: '10.8.0.2',
    sourcePort: 51000,
    destination,
    destinationPort: 6881,
    rule: 'handshake',
    evidence: 'exact, from the initiator',
    action: 'dropped',
    ban: '10.8.0.2 for 3600 s',
    reason: 'exact evidence from a local peer',
    payload,
  };
}

function event(overrides: Partial<DetectionEvent> = {}): DetectionEvent {
  return {
    timeMs: 1_763_718_901_123,
    flow: 3,
    l4: 'udp',
    tunnelled: false,
    initiator: '10.8.0.2',
    initiatorPort: 51000,
    responder: '198.51.100.9',
    responderPort: 6881,
    initiatorLocal: true,
    responderLocal: false,
    rule: 'utp',
    strength: 'response',
    producer: 'responder',
    flowPackets: 2,
    decision: { action: 'drop', markConnection: true, enforce: true, ban: { family: 4, address: '198.51.100.9', durationS: 3600 }, rateLimited: false, reason: 'answered the SYN', remember: { as: 'proven', end: 1 }, cut: false },
    payload: handshake,
    tcpSeq: 0,
    tcpSeqEnd: 0,
    tcpAck: 0,
    ...overrides,
  };
}

/** A LossReport that keeps what it was told. */
function lossCollector(): LossReport & { failures: string[]; recoveries: Losses[] } {
  const failures: string[] = [];
  const recoveries: Losses[] = [];
  return { failures, recoveries, failing: (error) => failures.push(error.message), recovered: (losses) => recoveries.push({ ...losses }) };
}

function openLog(path: string, options: Partial<DetectionLogOptions> = {}): DetectionLog {
  return new DetectionLog({ path, format: 'json', payloadBytes: 256, ...options }, lossCollector());
}

const jsonLines = (path: string): AuditRecord[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as AuditRecord);

describe('detection log', () => {
  let dir = '';
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('writes the reference block format: header fields, hex dump and printable text', () => {
    const text = formatDetection(detection(handshake, '2001:db8::9'), 256);
    const lines = text.split('\n');
    expect(lines[0]).toBe('='.repeat(80));
    expect(lines).toContain('Interface:    eth0');
    expect(lines).toContain('Source:       10.8.0.2:51000');
    expect(lines).toContain('Destination:  [2001:db8::9]:6881');
    expect(lines).toContain('Detection:    handshake');
    expect(lines).toContain('Evidence:     exact, from the initiator');
    expect(lines).toContain('Action:       dropped');
    expect(lines).toContain('Ban:          10.8.0.2 for 3600 s');
    expect(lines).toContain('Reason:       exact evidence from a local peer');
    // What matched, how strongly, then what was done about it, in that order.
    const at = (prefix: string) => lines.findIndex((line) => line.startsWith(prefix));
    expect([at('Detection:'), at('Evidence:'), at('Action:'), at('Ban:'), at('Reason:'), at('Payload Size:')]).toEqual([6, 7, 8, 9, 10, 11]);
    expect(lines).toContain('Payload Size: 28 bytes');
    expect(lines).toContain('00000000  13 42 69 74 54 6f 72 72  65 6e 74 20 70 72 6f 74  |.BitTorrent prot|');
    expect(lines).toContain('.BitTorrent protocol........');
  });

  it('shows at most the bytes it is given and says so', () => {
    const text = formatDetection(detection(new Uint8Array(1400).fill(0x41)), 512);
    expect(text).toContain('Payload Size: 1400 bytes (showing first 512 bytes)');
    expect(hexDump(new Uint8Array(1400)).split('\n')).toHaveLength(88);
    expect(text).toContain('000001f0  41 41');
    expect(text).not.toContain('00000200  ');
  });

  it('appends to a file only root can read, and reopens it after rotation', () => {
    dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
    const path = join(dir, 'sub', 'detections.log');
    const log = openLog(path, { format: 'text' });
    expect(log.write(event(), 'eth0')).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'sub')).mode & 0o777).toBe(0o700);
    renameSync(path, `${path}.1`);
    log.write(event(), 'eth0');
    log.reopen();
    log.write(event(), 'eth0');
    log.close();
    expect(readFileSync(`${path}.1`, 'utf8').split('='.repeat(80)).length - 1).toBe(2);
    expect(readFileSync(path, 'utf8').split('='.repeat(80)).length - 1).toBe(1);
  });

  it('tightens an existing file to mode 0600', () => {
    dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
    const path = join(dir, 'detections.log');
    writeFileSync(path, '', { mode: 0o644 });
    openLog(path).close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  describe('detectionRecord', () => {
    it('builds the record of an enforced detection with a ban', () => {
      const record = detectionRecord(event(), 'eth1');
      expect(record).toEqual({
        timeMs: 1_763_718_901_123,
        interface: 'eth1',
        protocol: 'UDP',
        source: '10.8.0.2',
        sourcePort: 51000,
        destination: '198.51.100.9',
        destinationPort: 6881,
        rule: 'utp',
        evidence: 'response, from the responder',
        action: 'dropped',
        ban: '198.51.100.9 for 3600 s',
        reason: 'answered the SYN',
        payload: handshake,
      });
      expect(formatDetection(record, 256).split('\n')).toContain('Evidence:     response, from the responder');
    });

    it('says what monitor-only mode would have done, and when nothing is banned', () => {
      const monitored = detectionRecord(event({ decision: { action: 'drop', markConnection: true, enforce: false, ban: { family: 4, address: '198.51.100.9', durationS: 600 }, rateLimited: false, reason: 'r', remember: null, cut: false } }), 'eth0');
      expect(monitored.action).toBe('monitor only (accepted; would drop)');
      expect(monitored.ban).toBe('would ban 198.51.100.9 for 600 s');
      const unbanned = detectionRecord(event({ l4: 'tcp', rule: 'http-tracker', strength: 'exact', producer: 'initiator', decision: { action: 'drop', markConnection: true, enforce: true, ban: null, rateLimited: false, reason: 'a tracker is never banned', remember: null, cut: false } }), 'eth0');
      expect(unbanned.protocol).toBe('TCP');
      expect(unbanned.ban).toBe('none');
      expect(unbanned.reason).toBe('a tracker is never banned');
      expect(unbanned.evidence).toBe('exact, from the initiator');
    });

    it('marks evidence found inside a tunnel', () => {
      expect(detectionRecord(event({ tunnelled: true }), 'eth0').evidence).toBe('response, from the responder (inside a tunnel)');
    });
  });

  describe('json records', () => {
    /** A remote peer connected in to a local host and sent the handshake. */
    const inbound = event({
      l4: 'tcp',
      initiator: '198.51.100.9',
      initiatorPort: 40000,
      initiatorLocal: false,
      responder: '10.8.0.2',
      responderPort: 51413,
      responderLocal: true,
      rule: 'handshake',
      strength: 'exact',
      producer: 'initiator',
      flowPackets: 4,
      decision: { action: 'drop', markConnection: true, enforce: true, ban: { family: 4, address: '198.51.100.9', durationS: 18000 }, rateLimited: false, reason: 'ban: 198.51.100.9 sent handshake bytes (exact) over TCP after a handshake seen both ways', remember: { as: 'proven', end: 1 }, cut: false },
    });

    it('writes one object per line, every field named, local and remote by LOCAL_CIDRS', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const log = openLog(path);
      log.write(inbound, 'eth1');
      log.write(event(), null);
      log.close();
      const text = readFileSync(path, 'utf8');
      expect(text.endsWith('\n')).toBe(true);
      const [first, second] = jsonLines(path);
      expect(first).toEqual({
        time: '2025-11-21T09:55:01.123Z',
        local: { address: '10.8.0.2', port: 51413 },
        remote: { address: '198.51.100.9', port: 40000 },
        l4: 'tcp',
        interface: 'eth1',
        rule: 'handshake',
        strength: 'exact',
        direction: 'remote',
        initiator: 'remote',
        action: 'drop',
        ban: { address: '198.51.100.9', duration_s: 18000 },
        reason: 'ban: 198.51.100.9 sent handshake bytes (exact) over TCP after a handshake seen both ways',
        flow_packets: 4,
        tunnelled: false,
        local_ends: 1,
        payload_bytes: 28,
        payload: Buffer.from(handshake).toString('hex'),
      });
      // The local host opened the uTP flow and the remote end's bytes matched.
      expect(second).toMatchObject({ local: { address: '10.8.0.2', port: 51000 }, remote: { address: '198.51.100.9', port: 6881 }, interface: null, l4: 'udp', direction: 'remote', initiator: 'local' });
      for (const line of text.trimEnd().split('\n')) expect(parseLogLine(line).kind).toBe('detection');
    });

    it('says monitor for what MONITOR_ONLY let through, with the ban it would have made', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const log = openLog(path);
      log.write({ ...inbound, decision: { ...inbound.decision, enforce: false } }, 'eth0');
      log.write(event({ producer: 'initiator', decision: { action: 'drop', markConnection: true, enforce: true, ban: null, rateLimited: false, reason: 'no ban: local', remember: { as: 'listed', end: 1 }, cut: false } }), 'eth0');
      log.close();
      const [monitored, local] = jsonLines(path);
      expect(monitored).toMatchObject({ action: 'monitor', ban: { address: '198.51.100.9', duration_s: 18000 } });
      expect(local).toMatchObject({ action: 'drop', ban: null, reason: 'no ban: local', direction: 'local', initiator: 'local' });
    });

    it('takes the initiator as local when both or neither end is local, and says how many were', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const log = openLog(path);
      log.write(event({ initiatorLocal: false, responderLocal: false }), 'eth0');
      log.write(event({ initiator: '10.8.0.3', initiatorLocal: true, responder: '10.8.0.2', responderLocal: true }), 'eth0');
      log.close();
      const [neither, both] = jsonLines(path);
      expect(neither).toMatchObject({ local: { address: '10.8.0.2' }, remote: { address: '198.51.100.9' }, local_ends: 0, initiator: 'local' });
      expect(both).toMatchObject({ local: { address: '10.8.0.3' }, remote: { address: '10.8.0.2' }, local_ends: 2 });
    });

    it('keeps at most DETECTION_LOG_PAYLOAD_BYTES of the payload, in hex, and says how long it was', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const payload = Uint8Array.from({ length: 1400 }, (_, i) => i & 0xff);
      for (const payloadBytes of [256, 0]) {
        const log = openLog(path, { payloadBytes });
        log.write(event({ payload }), 'eth0');
        log.close();
      }
      const [bounded, none] = jsonLines(path);
      expect(bounded.payload_bytes).toBe(1400);
      expect(bounded.payload).toBe(Buffer.from(payload.subarray(0, 256)).toString('hex'));
      expect(none).toMatchObject({ payload_bytes: 1400, payload: '' });
    });
  });

  describe('opening the log safely', () => {
    const root = process.getuid?.() === 0;
    const refusal = (path: string): string => {
      try {
        openLog(path).close();
      } catch (error) {
        if (error instanceof UnsafeLogError) return error.message;
        throw error;
      }
      return 'opened';
    };

    it('refuses a symbolic link at the path and leaves its target as it was', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const target = join(dir, 'precious');
      writeFileSync(target, 'keep me\n', { mode: 0o644 });
      chmodSync(target, 0o644);
      symlinkSync(target, join(dir, 'detections.log'));
      expect(refusal(join(dir, 'detections.log'))).toBe(`${join(dir, 'detections.log')} is a symbolic link; the log must be a regular file`);
      expect(readFileSync(target, 'utf8')).toBe('keep me\n');
      expect(statSync(target).mode & 0o777).toBe(0o644);
      // A dangling link is refused too (open would otherwise create its target).
      symlinkSync(join(dir, 'elsewhere'), join(dir, 'dangling.log'));
      expect(refusal(join(dir, 'dangling.log'))).toContain('is a symbolic link');
      expect(() => statSync(join(dir, 'elsewhere'))).toThrow();
    });

    it('on reopen, refuses a link planted after rotation and goes on writing to the file it has', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const target = join(dir, 'precious');
      writeFileSync(target, 'keep me\n');
      const log = openLog(path);
      renameSync(path, `${path}.1`);
      symlinkSync(target, path);
      expect(() => log.reopen()).toThrow(UnsafeLogError);
      expect(log.write(event(), 'eth0')).toBe(true);
      log.close();
      expect(readFileSync(target, 'utf8')).toBe('keep me\n');
      expect(jsonLines(`${path}.1`)).toHaveLength(1);
    });

    it('refuses what is not a regular file with one name: a directory, a FIFO (without hanging), a hard link', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      mkdirSync(join(dir, 'adir'));
      expect(refusal(join(dir, 'adir'))).toBe(`${join(dir, 'adir')} is a directory; the log must be a regular file`);
      expect(spawnSync('mkfifo', [join(dir, 'fifo')]).status).toBe(0);
      expect(refusal(join(dir, 'fifo'))).toContain('is a FIFO');
      writeFileSync(join(dir, 'one'), '');
      linkSync(join(dir, 'one'), join(dir, 'two'));
      expect(refusal(join(dir, 'two'))).toBe(`${join(dir, 'two')} has 2 hard links; the log must have one name only`);
    });

    it('refuses a directory it cannot create, naming it', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      writeFileSync(join(dir, 'file'), '');
      expect(refusal(join(dir, 'file', 'sub', 'detections.log'))).toMatch(new RegExp(`^cannot create the directory ${join(dir, 'file', 'sub')}: ENOTDIR`));
    });

    it('refuses a directory, or one above it, that group or others may write; a sticky one above is fine', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const logDir = join(dir, 'logs');
      mkdirSync(logDir);
      chmodSync(logDir, 0o775);
      expect(refusal(join(logDir, 'd.log'))).toBe(`the directory ${logDir} is writable by group or others (mode 0775); only root may write there (chmod go-w)`);
      chmodSync(logDir, 0o700);
      chmodSync(dir, 0o777);
      expect(refusal(join(logDir, 'd.log'))).toContain(`the directory ${dir} is writable by group or others (mode 0777)`);
      chmodSync(dir, 0o1777);
      expect(refusal(join(logDir, 'd.log'))).toBe('opened');
      // The log's own directory may not be sticky and writable: anyone could plant the file first.
      chmodSync(logDir, 0o1777);
      expect(refusal(join(logDir, 'd.log'))).toContain(`the directory ${logDir} is writable`);
    });

    it.runIf(root)('refuses a directory or a file that root does not own', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const logDir = join(dir, 'logs');
      mkdirSync(logDir, { mode: 0o700 });
      writeFileSync(join(dir, 'theirs.log'), '');
      chownSync(join(dir, 'theirs.log'), 65534, 65534);
      expect(refusal(join(dir, 'theirs.log'))).toBe(`${join(dir, 'theirs.log')} is owned by uid 65534, not root`);
      chownSync(logDir, 65534, 65534);
      expect(refusal(join(logDir, 'd.log'))).toBe(`the directory ${logDir} is owned by uid 65534, not root`);
    });
  });

  describe('records written whole, losses counted', () => {
    const note = (losses: Losses) => `{"lost_records":${losses.count}}\n`;

    /** A file whose first `failures` writes fail as `how` says, then work. */
    function failingFile(how: 'error' | 'short', failures: number, truncateFails = false) {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'records');
      const fd = openSync(path, 'a', 0o600);
      let left = failures;
      const io: FileIo = {
        ...NODE_IO,
        write: (target, bytes) => {
          if (left === 0) return NODE_IO.write(target, bytes);
          left--;
          if (how === 'error') throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          return writeSync(target, bytes.subarray(0, bytes.length >> 1));
        },
        truncate: (target, length) => {
          if (truncateFails) throw new Error('EIO');
          NODE_IO.truncate(target, length);
        },
      };
      const report = lossCollector();
      return { path, report, file: new RecordFile(fd, note, report, io) };
    }

    it('counts records the disk refused, reports the first failure once, and writes the count before the next record', () => {
      const { path, report, file } = failingFile('error', 3);
      expect(file.append('{"n":1}\n', 1000)).toBe(false);
      expect(file.append('{"n":2}\n', 2000)).toBe(false);
      expect(file.append('{"n":3}\n', 3000)).toBe(false);
      expect(file.lost).toBe(3);
      expect(report.failures).toEqual(['ENOSPC: no space left on device, write']);
      expect(report.recoveries).toEqual([]);
      expect(file.append('{"n":4}\n', 4000)).toBe(true);
      expect(file.lost).toBe(0);
      expect(report.recoveries).toEqual([{ count: 3, firstMs: 1000, error: 'ENOSPC: no space left on device, write' }]);
      file.close();
      expect(readFileSync(path, 'utf8')).toBe('{"lost_records":3}\n{"n":4}\n');
    });

    it('cuts a short write off again, so no half record stays in the file', () => {
      const { path, report, file } = failingFile('short', 1);
      expect(file.append('{"n":1,"pad":"0123456789"}\n', 1000)).toBe(false);
      expect(readFileSync(path, 'utf8')).toBe('');
      expect(report.failures[0]).toMatch(/^short write: 13 of 27 bytes/);
      expect(file.append('{"n":2}\n', 2000)).toBe(true);
      file.close();
      expect(readFileSync(path, 'utf8')).toBe('{"lost_records":1}\n{"n":2}\n');
    });

    it('ends the line of a half record it could not cut off, so the next record is a line of its own', () => {
      const { path, file } = failingFile('short', 1, true);
      file.append('{"n":1,"pad":"0123456789"}\n', 1000);
      file.append('{"n":2}\n', 2000);
      file.close();
      expect(readFileSync(path, 'utf8')).toBe('{"n":1,"pad":\n{"lost_records":1}\n{"n":2}\n');
    });

    it('counts every record lost on a descriptor that always fails (/dev/full)', () => {
      const report = lossCollector();
      const file = new RecordFile(openSync('/dev/full', 'w'), note, report);
      for (let i = 0; i < 5; i++) expect(file.append('{"n":1}\n', i)).toBe(false);
      expect(file.lost).toBe(5);
      expect(report.failures).toHaveLength(1);
      expect(report.failures[0]).toContain('ENOSPC');
      file.close();
    });

    it('notes lost records in the text format as a block of its own', () => {
      dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
      const path = join(dir, 'detections.log');
      const log = openLog(path, { format: 'text' });
      // What the disk refused: the descriptor is swapped for /dev/full, then back.
      log['file'].replace(openSync('/dev/full', 'w'));
      log.write(event(), 'eth0');
      log.write(event(), 'eth0');
      expect(log.lost).toBe(2);
      log.reopen();
      log.write(event(), 'eth0');
      log.close();
      const text = readFileSync(path, 'utf8');
      expect(text).toMatch(/^={80}\nLost records: 2 not written, from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.123 on \(ENOSPC: no space left on device, write\)\n\n={80}\nTimestamp: /);
      expect(text.split('='.repeat(80))).toHaveLength(3);
    });
  });
});

/**
 * A real full disk: a 64 KiB tmpfs in a mount namespace of its own (nothing mounted on the host),
 * filled up while records are written; the last page's room gives a short write on the way.
 */
describe.runIf(process.getuid?.() === 0 && spawnSync('unshare', ['--mount', 'true']).status === 0)('detection log on a full disk', () => {
  it('keeps whole records only, and counts every one lost', () => {
    const script = join(import.meta.dirname, 'helpers', 'full-disk.mjs');
    const run = spawnSync('unshare', ['--mount', '--propagation', 'private', process.execPath, script], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    const result = JSON.parse(run.stdout) as { written: number; lost: number; failures: string[]; recoveries: Losses[]; content: string };
    // The first page's room ran out mid-record: the half written was cut off again.
    expect(result.failures).toEqual([expect.stringMatching(/^short write: \d+ of \d+ bytes/)]);
    expect(result.lost).toBeGreaterThan(0);
    expect(result.written).toBeGreaterThan(1);
    expect(result.recoveries.map((r) => r.count)).toEqual([result.lost]);
    const lines = result.content.split('\n');
    expect(lines.pop()).toBe('');
    const entries = lines.map((line) => parseLogLine(line));
    expect(entries.filter((e) => e.kind === 'detection')).toHaveLength(result.written);
    expect(entries.filter((e) => e.kind === 'lost').map((e) => (e.kind === 'lost' ? e.note.lost_records : 0))).toEqual([result.lost]);
  });
});
