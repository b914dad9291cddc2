import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dhtPing, HANDSHAKE, pcapHeader, TcpConnection, udp4, writeRawPcap } from './helpers/exchanges.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/btwall');
const CORPUS = resolve(ROOT, '../shared/corpus/ndpi');
const SCORE = resolve(ROOT, '../shared/corpus/score.py');
const FIELDS = ['file', 'l4', 'src', 'sport', 'dst', 'dport', 'verdict', 'rule', 'strength', 'action', 'ban', 'reason'];

function scan(args: string[], env: Record<string, string> = {}) {
  const run = spawnSync(CLI, ['scan', ...args], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, ...env } });
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
      expect(record.action).toBe(record.verdict === 'bittorrent' ? 'drop' : 'accept');
      if (record.verdict === 'bittorrent') expect(['exact', 'response', 'heuristic', 'cache', 'announced', 'name']).toContain(record.strength);
    }
    // Every BitTorrent flow of the corpus is a local client's own (or a name, or an unsolicited datagram): nothing proves a remote peer.
    expect(run.records.filter((r) => r.ban !== null)).toEqual([]);
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
    const header = pcapHeader(147); // LINKTYPE_USER0
    const record = Buffer.alloc(16 + 4);
    record.writeUInt32LE(4, 8);
    record.writeUInt32LE(4, 12);
    const file = join(work, 'user0.pcap');
    writeFileSync(file, Buffer.concat([header, record, record, record]));
    const run = scan([file]);
    expect(run.status).toBe(1);
    expect(run.stderr.trim().split('\n')).toEqual([`btwall scan: ${file}: link type 147 not supported, 3 packets skipped`]);
  });

  it('reports the ban the daemon would make, and why, per flow: bans on proof only', () => {
    const inbound = new TcpConnection('198.51.100.9', 40000, '10.8.0.2', 51413);
    const forged = new TcpConnection('10.8.0.2', 50000, '203.0.113.80', 443);
    const blind = new TcpConnection('198.51.100.10', 40001, '10.8.0.2', 51413);
    const frames = [
      ...inbound.open(),
      inbound.segment(0, HANDSHAKE),
      ...forged.open(),
      forged.segment(0, HANDSHAKE),
      ...blind.open().slice(0, 2),
      blind.segment(0, HANDSHAKE, 0x18, { ack: 0x12345678 }),
      udp4('192.0.2.53', 53, '10.8.0.2', 51413, dhtPing()),
      ...new TcpConnection('10.8.0.2', 50001, '203.0.113.80', 80).open(),
    ];
    const file = join(work, 'proof.pcap');
    writeRawPcap(file, frames);
    const run = scan([file]);
    expect(run.status).toBe(0);
    const by = (src: string) => run.records.find((r) => r.src === src);
    expect(by('198.51.100.9')).toMatchObject({ verdict: 'bittorrent', rule: 'handshake', strength: 'exact', action: 'drop', ban: '198.51.100.9' });
    expect(by('198.51.100.10')).toMatchObject({ verdict: 'bittorrent', action: 'drop', ban: null });
    expect(String(by('198.51.100.10')?.reason)).toContain('do not acknowledge');
    expect(by('192.0.2.53')).toMatchObject({ rule: 'dht', ban: null, reason: 'no ban: an unsolicited UDP datagram can carry any source address' });
    const local = run.records.filter((r) => r.src === '10.8.0.2');
    expect(local.find((r) => r.dport === 443)).toMatchObject({ verdict: 'bittorrent', ban: null });
    expect(local.find((r) => r.dport === 80)).toMatchObject({ verdict: 'clean', action: 'accept', ban: null, strength: null, reason: null });
    // The daemon's variables shape the scan: with the remote side local too, nobody is banned.
    expect(scan([file], { LOCAL_CIDRS: '0.0.0.0/0' }).records.filter((r) => r.ban !== null)).toEqual([]);
    expect(scan([file], { BAN_EXEMPT: '198.51.100.9' }).records.find((r) => r.src === '198.51.100.9')?.reason).toBe('no ban: 198.51.100.9 is exempt (BAN_EXEMPT)');
    expect(scan([file], { INSPECT_PACKETS: 'many' }).status).toBe(78);
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
