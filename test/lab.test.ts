import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const SCORE = resolve(ROOT, '../shared/corpus/score.py');
const work = mkdtempSync(join(tmpdir(), 'btwall-lab-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Scans one lab folder's captures and scores them against its truth.json; returns the summary figures. */
function scoreLab(folder: string): { figures: Record<string, string>; listing: string } {
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
  return { figures: Object.fromEntries(summary.split(' ').map((pair) => pair.split('='))), listing: score.stdout };
}

describe('namespace lab captures (fixtures/lab, made by test/lab/*.sh)', () => {
  it('flags nothing among HTTPS, SSH, DNS, STUN/TURN, SIP/RTP, iperf3, Shadowsocks, obfs4, VMess and WireGuard flows', () => {
    const { figures, listing } = scoreLab('clean');
    expect(Number(figures.nonbt), listing).toBeGreaterThan(300);
    expect(figures.missing, listing).toBe('0');
    expect(figures.fpr, listing).toBe('0.0000');
  });
});
