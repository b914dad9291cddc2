import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readCapture } from '../src/pcap/reader.js';
import { scanCapture, type ScanOptions } from './helpers/capture.js';

const ROOT = resolve(import.meta.dirname, '..');
const SCORE = resolve(ROOT, '../shared/corpus/score.py');
const work = mkdtempSync(join(tmpdir(), 'btwall-lab-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface TruthFlow {
  l4: string;
  a: string;
  b: string;
  bittorrent: boolean;
  encrypted?: boolean;
}

/**
 * Scans one lab folder's captures and scores them against its truth.json with the corpus scorer;
 * also returns which flows were flagged, keyed as the labels are (file, l4, both endpoints).
 */
function scoreLab(folder: string): { figures: Record<string, string>; listing: string; flagged: Set<string>; truth: Record<string, TruthFlow[]> } {
  const dir = join(ROOT, 'fixtures/lab', folder);
  const captures = readdirSync(dir)
    .filter((name) => name.endsWith('.pcap') || name.endsWith('.pcapng'))
    .map((name) => join(dir, name));
  const scan = spawnSync(join(ROOT, 'bin/btwall'), ['scan', ...captures], { encoding: 'utf8', maxBuffer: 1 << 28 });
  expect(scan.status).toBe(0);
  const verdicts = join(work, `${folder}.ndjson`);
  writeFileSync(verdicts, scan.stdout);
  const score = spawnSync('python3', [SCORE, join(dir, 'truth.json'), verdicts, '--list'], { encoding: 'utf8' });
  const summary = score.stdout.trim().split('\n').at(-1) ?? '';
  const endpoint = (address: string, port: unknown) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
  const flagged = new Set(
    scan.stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, string>)
      .filter((r) => r.verdict === 'bittorrent')
      .map((r) => flowKey(basename(r.file), r.l4, endpoint(r.src, r.sport), endpoint(r.dst, r.dport))),
  );
  const truth = JSON.parse(readFileSync(join(dir, 'truth.json'), 'utf8')) as Record<string, TruthFlow[]>;
  return { figures: Object.fromEntries(summary.split(' ').map((pair) => pair.split('='))), listing: score.stdout, flagged, truth };
}

function flowKey(file: string, l4: string, a: string, b: string): string {
  return [file, l4, ...[a, b].sort()].join(' ');
}

describe('namespace lab captures (fixtures/lab, made by test/lab/*.sh)', () => {
  it('catches at least 99 % of the BitTorrent flows of 7 real clients in plain, encrypted, uTP, DHT and UDP-tracker modes, and 95 % of the encrypted peer flows', () => {
    const { figures, listing, flagged, truth } = scoreLab('bt');
    expect(Number(figures.bt), listing).toBeGreaterThan(600);
    expect(Number(figures.recall), listing).toBeGreaterThanOrEqual(0.99);
    const encrypted = Object.entries(truth).flatMap(([file, flows]) => flows.filter((f) => f.encrypted).map((f) => flowKey(file, f.l4, f.a, f.b)));
    expect(encrypted.length).toBeGreaterThan(30);
    const caught = encrypted.filter((key) => flagged.has(key));
    expect(caught.length / encrypted.length, `missed: ${encrypted.filter((k) => !flagged.has(k)).join(', ')}`).toBeGreaterThanOrEqual(0.95);
  });

  it('catches every BitTorrent flow of encrypted clients of mixed implementations behind a 25-40 ms round-trip time', () => {
    const { figures, listing, flagged, truth } = scoreLab('bt-rtt');
    expect(Number(figures.bt), listing).toBeGreaterThan(120);
    expect(figures.recall, listing).toBe('1.000');
    const encrypted = Object.entries(truth).flatMap(([file, flows]) => flows.filter((f) => f.encrypted).map((f) => flowKey(file, f.l4, f.a, f.b)));
    expect(encrypted.length).toBeGreaterThan(30);
    expect(encrypted.filter((key) => !flagged.has(key))).toEqual([]);
  });

  it('flags nothing among HTTPS, SSH, DNS, STUN/TURN, SIP/RTP, iperf3, Shadowsocks, obfs4, VMess and WireGuard flows', () => {
    const { figures, listing } = scoreLab('clean');
    expect(Number(figures.nonbt), listing).toBeGreaterThan(300);
    expect(figures.missing, listing).toBe('0');
    expect(figures.fpr, listing).toBe('0.0000');
  });
});

/** Keeps the packets of a capture from `from` (a fraction) on: a capture started late. */
function fromPart(path: string, from: number): (index: number) => boolean {
  let packets = 0;
  readCapture(path, () => void packets++);
  return (index) => index >= packets * from;
}

describe('the clean lab captures read from the middle and one way: MTU-sized frames of flows met mid-way', () => {
  const dir = join(ROOT, 'fixtures/lab/clean');
  const clientSide = /^\[?(192\.0\.2\.10|2001:db8:c1ea::10)\]?$/;
  const views: [string, (file: string) => ScanOptions][] = [
    ['from 20 % on', (file) => ({ keep: fromPart(join(dir, file), 0.2) })],
    ['from 50 % on', (file) => ({ keep: fromPart(join(dir, file), 0.5) })],
    ["the clients' side only", () => ({ sentBy: (source) => clientSide.test(source) })],
    ["the servers' side only", () => ({ sentBy: (source) => !clientSide.test(source) })],
  ];
  for (const [name, view] of views) {
    it(`${name}: no flow flagged`, () => {
      const captures = readdirSync(dir).filter((file) => file.endsWith('.pcap'));
      expect(captures.length).toBeGreaterThan(10);
      const flagged = captures.flatMap((file) =>
        scanCapture(join(dir, file), { pipelineEnv: { LOCAL_CIDRS: '192.0.2.10/32,2001:db8:c1ea::10/128' }, ...view(file) })
          .flows.filter((f) => f.bittorrent)
          .map((f) => `${file} ${f.initiator} ${f.responder} ${f.rule}`),
      );
      expect(flagged).toEqual([]);
    });
  }
});

describe('the client lab captures read from the middle and one way, MTU-sized frames', () => {
  const dir = join(ROOT, 'fixtures/lab/bt');
  const truth = JSON.parse(readFileSync(join(dir, 'truth.json'), 'utf8')) as Record<string, (TruthFlow & { crypto?: string })[]>;
  const pair = (x: string, y: string) => [x, y].sort().join(' ');

  /**
   * Over every capture read as `view` shows it, through the pipeline `btwall scan` runs with
   * `localCidrs` as the gateway's users: the BitTorrent flows `counts` holds with payload in the
   * view, and those of them not found.
   */
  function misses(localCidrs: string, view: (file: string) => ScanOptions, counts: (f: TruthFlow & { crypto?: string }) => boolean) {
    const notFound: string[] = [];
    let counted = 0;
    for (const [file, flows] of Object.entries(truth)) {
      const { flows: found, withPayload } = scanCapture(join(dir, file), { pipelineEnv: { LOCAL_CIDRS: localCidrs }, ...view(file) });
      const flagged = new Set(found.filter((f) => f.bittorrent).map((f) => pair(f.initiator, f.responder)));
      for (const f of flows) {
        const key = pair(f.a, f.b);
        if (!f.bittorrent || !counts(f) || !withPayload.has(key)) continue;
        counted++;
        if (!flagged.has(key)) notFound.push(`${file} ${key}`);
      }
    }
    return { counted, notFound: notFound.sort() };
  }

  // Each listed flow shows, after the cut, fewer than three messages of a chain: a 1-byte message;
  // a piece's tail and a have.
  for (const [from, missed] of [
    [0.2, ['transmission-udp-tracker.pcap 198.51.100.12:50985 198.51.100.13:21503']],
    [0.5, ['qbittorrent-udp-tracker.pcap 198.51.100.11:23501 198.51.100.13:41321', 'rtorrent-plain.pcap 198.51.100.11:24101 198.51.100.12:40560']],
  ] as const) {
    it(`from ${from * 100} % on: every peer flow not encrypted past its keys (RC4) with payload after the cut is found, but the listed ones`, () => {
      // The two leechers (h2, h3) taken as the gateway's users.
      const { counted, notFound } = misses('198.51.100.12/31,2001:db8:b7::12/127', (file) => ({ keep: fromPart(join(dir, file), from) }), (f) => f.crypto !== 'rc4');
      expect(counted).toBeGreaterThan(400);
      expect(notFound).toEqual([...missed].sort());
    });
  }

  // A route that shows one direction of leecher h2's traffic: MSE included, each side alone.
  const h2 = /^\[?(198\.51\.100\.12|2001:db8:b7::12)\]?(:\d+)?$/;
  for (const [name, sentByH2] of [
    ['what leecher h2 sent', true],
    ['what leecher h2 received', false],
  ] as const) {
    it(`${name} only: every BitTorrent flow of h2's with payload in view is found`, () => {
      const { counted, notFound } = misses('198.51.100.12/32,2001:db8:b7::12/128', () => ({ sentBy: (source) => h2.test(source) === sentByH2 }), (f) => h2.test(f.a) || h2.test(f.b));
      expect(counted).toBeGreaterThan(200);
      expect(notFound).toEqual([]);
    });
  }
});

