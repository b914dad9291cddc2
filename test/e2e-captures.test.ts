/**
 * `btwall scan` on the end-to-end lab's captures (fixtures/lab/e2e): real clients' traffic at the
 * gateway, each flow labelled by construction (expectations.json). Every flow a scenario host
 * sent BitTorrent on is found, the ordinary traffic has no false alarm but the listed tracker
 * name, and no service is ever banned.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/btwall');
const FIXTURES = join(ROOT, 'fixtures/lab/e2e');

interface Expectation {
  l4: string;
  a: string;
  b: string;
  expect: 'bittorrent' | 'clean';
  why: string;
}
interface ScanRecord {
  l4: string;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  verdict: string;
  rule: string;
  ban: string | null;
}

const expectations = JSON.parse(readFileSync(join(FIXTURES, 'expectations.json'), 'utf8')) as Record<string, Expectation[]>;
const run = JSON.parse(readFileSync(join(FIXTURES, 'run.json'), 'utf8')) as { services: Record<string, string> };
const flowKey = (l4: string, x: string, y: string) => `${l4} ${[x, y].sort().join(' ')}`;
/** An endpoint as the labeller writes it (bt-lab-tool.py ep): IPv6 addresses in brackets. */
const endpoint = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

function scan(file: string): ScanRecord[] {
  const out = spawnSync(CLI, ['scan', join(FIXTURES, file)], {
    encoding: 'utf8',
    env: { ...process.env, LOCAL_CIDRS: '10.1.0.0/16,fd00:10:1::/48', TRACKER_DOMAINS: 'tracker.lab.example' },
  });
  if (out.status !== 0) throw new Error(`btwall scan ${file}: ${out.stderr}`);
  return out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ScanRecord);
}

describe('btwall scan on the end-to-end lab captures', () => {
  for (const [file, flows] of Object.entries(expectations)) {
    it(`${file}: every labelled flow gets its verdict, no service is banned`, () => {
      const verdicts = new Map(scan(file).map((r) => [flowKey(r.l4, endpoint(r.src, r.sport), endpoint(r.dst, r.dport)), r]));
      expect(flows.length).toBeGreaterThan(0);
      for (const flow of flows) {
        const record = verdicts.get(flowKey(flow.l4, flow.a, flow.b));
        expect(record?.verdict, `${flow.l4} ${flow.a} ${flow.b} (${flow.why}): ${JSON.stringify(record)}`).toBe(flow.expect);
      }
      const banned = [...verdicts.values()].map((r) => r.ban).filter((b) => b !== null);
      for (const service of Object.values(run.services)) expect(banned).not.toContain(service);
    });
  }
});
