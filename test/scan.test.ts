import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/btwall');
const CORPUS = resolve(ROOT, '../shared/corpus/ndpi');
const SCORE = resolve(ROOT, '../shared/corpus/score.py');
const FIELDS = ['file', 'l4', 'src', 'sport', 'dst', 'dport', 'verdict', 'rule'];

function scan(args: string[]) {
  const run = spawnSync(CLI, ['scan', ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (run.error) throw run.error;
  const records = run.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr, records };
}

function captures(): string[] {
  return readdirSync(CORPUS)
    .filter((name) => !name.endsWith('.json'))
    .map((name) => join(CORPUS, name));
}

describe('btwall scan', () => {
  let work: string;
  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('build first: make test builds before testing');
    if (!existsSync(CORPUS)) throw new Error(`the shared corpus is missing at ${CORPUS}`);
    work = mkdtempSync(join(tmpdir(), 'btwall-scan-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('reads all 325 corpus captures and prints one well-formed record per flow', () => {
    const files = captures();
    expect(files).toHaveLength(325);
    const run = scan(files);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    for (const record of run.records) {
      expect(Object.keys(record)).toEqual(FIELDS);
      expect(['tcp', 'udp']).toContain(record.l4);
      expect(['bittorrent', 'clean']).toContain(record.verdict);
      expect(typeof record.sport).toBe('number');
    }
    writeFileSync(join(work, 'verdicts.ndjson'), run.stdout);
    const score = spawnSync('python3', [SCORE, join(CORPUS, 'truth.json'), join(work, 'verdicts.ndjson'), '--list'], { encoding: 'utf8' });
    const summary = score.stdout.trim().split('\n').at(-1) ?? '';
    const figures = Object.fromEntries(summary.split(' ').map((pair) => pair.split('=')));
    // Every BitTorrent flow caught, no other flow flagged, and nothing for --list to name.
    expect(figures.bt, score.stdout).toBe('30');
    expect(figures.recall, score.stdout).toBe('1.000');
    expect(figures.fpr, score.stdout).toBe('0.0000');
    expect(score.stdout).not.toMatch(/^\s+(MISS|FP)\b/m);
    expect(score.stdout).toContain('Unknown flows flagged   : 0 /');
    // The one flow no scanner can match: stun.pcap's truth names an address that is not valid IPv6.
    expect(figures.missing).toBe('1');
    expect(run.records.filter((r) => r.rule === 'handshake').every((r) => String(r.file).endsWith('bittorrent.pcap'))).toBe(true);
  });

  it('reports a bad input by name, scans the rest, and exits 1', () => {
    const good = join(CORPUS, 'bittorrent.pcap');
    const whole = readFileSync(good);
    const truncated = join(work, 'truncated.pcap');
    writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length / 2)));
    const text = join(work, 'notes.txt');
    writeFileSync(text, 'not a capture\n');
    const missing = join(work, 'absent.pcap');

    const run = scan(['--summary', truncated, text, missing, good]);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`${truncated}: truncated`);
    expect(run.stderr).toContain(`${text}: not a pcap or pcapng file`);
    expect(run.stderr).toContain(`${missing}:`);
    expect(run.stderr).toMatch(/bad inputs\s+3/);
    const fromTruncated = run.records.filter((r) => r.file === truncated);
    const fromGood = run.records.filter((r) => r.file === good);
    expect(fromTruncated.length).toBeGreaterThan(0);
    expect(fromGood.filter((r) => r.verdict === 'bittorrent').length).toBeGreaterThanOrEqual(24);
  });

  it('reports an unsupported link type once per file, not per packet', () => {
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0xa1b2c3d4, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(65535, 16);
    header.writeUInt32LE(147, 20); // LINKTYPE_USER0
    const record = Buffer.alloc(16 + 4);
    record.writeUInt32LE(4, 8);
    record.writeUInt32LE(4, 12);
    const file = join(work, 'user0.pcap');
    writeFileSync(file, Buffer.concat([header, record, record, record]));
    const run = scan([file]);
    expect(run.status).toBe(1);
    expect(run.stderr.trim().split('\n')).toEqual([`btwall scan: ${file}: link type 147 not supported, 3 packets skipped`]);
  });

  it('prints usage and exits 64 on bad arguments', () => {
    expect(scan([]).status).toBe(64);
    expect(scan(['--flows', 'many', 'x.pcap']).stderr).toContain('--flows takes a whole number');
    expect(scan(['--bogus', 'x.pcap']).status).toBe(64);
  });

  it('gives the same verdicts with a tiny flow table, only more records (evictions)', () => {
    const file = join(CORPUS, 'bittorrent.pcap');
    const roomy = scan([file]);
    const tiny = scan(['--flows', '4', file]);
    const flagged = (records: Record<string, unknown>[]) =>
      new Set(
        records
          .filter((r) => r.verdict === 'bittorrent')
          .map((r) => [`${r.src}:${r.sport}`, `${r.dst}:${r.dport}`].sort().join(' ')),
      );
    expect(tiny.records.length).toBeGreaterThanOrEqual(roomy.records.length);
    expect(flagged(tiny.records)).toEqual(flagged(roomy.records));
  });
});
