import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DetectionLog, detectionRecord, formatDetection, hexDump, type Detection } from '../src/daemon/detection-log.js';
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
    rule: 'utp',
    strength: 'response',
    producer: 'responder',
    flowPackets: 2,
    decision: { drop: true, markConnection: true, enforce: true, ban: { family: 4, address: '198.51.100.9', durationS: 3600 }, reason: 'answered the SYN', remember: 'proven' },
    payload: handshake,
    ...overrides,
  };
}

describe('detection log', () => {
  let dir = '';
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('writes the reference block format: header fields, hex dump and printable text', () => {
    const text = formatDetection(detection(handshake, '2001:db8::9'));
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

  it('shows at most 512 bytes and says so', () => {
    const text = formatDetection(detection(new Uint8Array(1400).fill(0x41)));
    expect(text).toContain('Payload Size: 1400 bytes (showing first 512 bytes)');
    expect(hexDump(new Uint8Array(1400)).split('\n')).toHaveLength(88);
    expect(text).toContain('000001f0  41 41');
    expect(text).not.toContain('00000200  ');
  });

  it('appends to a file only root can read, and reopens it after rotation', () => {
    dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
    const path = join(dir, 'sub', 'detections.log');
    const log = new DetectionLog(path);
    log.write(detection(handshake));
    expect(statSync(path).mode & 0o777).toBe(0o600);
    renameSync(path, `${path}.1`);
    log.write(detection(handshake));
    log.reopen();
    log.write(detection(handshake));
    log.close();
    expect(readFileSync(`${path}.1`, 'utf8').split('='.repeat(80)).length - 1).toBe(2);
    expect(readFileSync(path, 'utf8').split('='.repeat(80)).length - 1).toBe(1);
  });

  it('tightens an existing file to mode 0600', () => {
    dir = mkdtempSync(join(tmpdir(), 'btwall-log-'));
    const path = join(dir, 'detections.log');
    writeFileSync(path, '', { mode: 0o644 });
    new DetectionLog(path).close();
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
      expect(formatDetection(record).split('\n')).toContain('Evidence:     response, from the responder');
    });

    it('says what monitor-only mode would have done, and when nothing is banned', () => {
      const monitored = detectionRecord(event({ decision: { drop: true, markConnection: true, enforce: false, ban: { family: 4, address: '198.51.100.9', durationS: 600 }, reason: 'r', remember: null } }), 'eth0');
      expect(monitored.action).toBe('monitor only (accepted; would drop)');
      expect(monitored.ban).toBe('would ban 198.51.100.9 for 600 s');
      const unbanned = detectionRecord(event({ l4: 'tcp', rule: 'http-tracker', strength: 'exact', producer: 'initiator', decision: { drop: true, markConnection: true, enforce: true, ban: null, reason: 'a tracker is never banned', remember: null } }), 'eth0');
      expect(unbanned.protocol).toBe('TCP');
      expect(unbanned.ban).toBe('none');
      expect(unbanned.reason).toBe('a tracker is never banned');
      expect(unbanned.evidence).toBe('exact, from the initiator');
    });

    it('marks evidence found inside a tunnel', () => {
      expect(detectionRecord(event({ tunnelled: true }), 'eth0').evidence).toBe('response, from the responder (inside a tunnel)');
    });
  });
});
