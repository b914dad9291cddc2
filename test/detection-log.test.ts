import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DetectionLog, formatDetection, hexDump, type Detection } from '../src/daemon/detection-log.js';

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
    action: 'dropped',
    payload,
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
});
