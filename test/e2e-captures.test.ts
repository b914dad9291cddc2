/**
 * `btwall scan` on the end-to-end lab's captures (fixtures/lab/e2e): real clients' traffic at the
 * gateway, each flow labelled by construction (expectations.json). Every flow a scenario host
 * sent BitTorrent on is found, the ordinary traffic has no false alarm but the listed tracker
 * name, and no service is ever banned. Read as a route that shows one direction would (only what
 * the LAN sent, or only what it received), every BitTorrent flow is still found but those whose
 * visible direction carries no BitTorrent byte at all, each listed with why.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCapture } from '../src/pcap/reader.js';
import { scanCapture } from './helpers/capture.js';

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

describe('the end-to-end lab captures, one direction only (an asymmetric route)', () => {
  const lan = (source: string) => source.startsWith('10.1.');
  /** BitTorrent flows that direction shows nothing of BitTorrent in, by capture: "a b" endpoints. */
  const unseen: Record<'sent by the LAN' | 'received by the LAN', Record<string, string[]>> = {
    'sent by the LAN': {
      // Transmission's MSE initiator alone: key, message 3 with its handshake, then writes of no bare message length.
      'encrypted.pcap': ['10.1.2.2:39341 198.51.100.102:51000'],
      // aria2's MSE attempts, one key burst the seeder never answered; their peer came in the tracker's or DHT's answer, the other way.
      'udp-tracker.pcap': ['10.1.4.2:34270 198.51.100.104:51000', '10.1.4.2:38444 198.51.100.104:51000'],
      'dht.pcap': ['10.1.5.2:36150 198.51.100.105:51000', '10.1.5.2:45880 198.51.100.105:51000'],
    },
    'received by the LAN': {
      // The same attempts: the seeder sent nothing back.
      'udp-tracker.pcap': ['10.1.4.2:34270 198.51.100.104:51000', '10.1.4.2:38444 198.51.100.104:51000'],
      // A web seed's answer is an HTTP 206 like any other: the BitTorrent part is the request.
      'webseed.pcap': ['10.1.8.2:49969 198.51.100.80:80'],
    },
  };
  for (const [direction, missed] of Object.entries(unseen)) {
    it(`finds every BitTorrent flow but those with nothing of BitTorrent ${direction}, and flags no ordinary flow`, () => {
      for (const [file, flows] of Object.entries(expectations)) {
        const found = scanCapture(join(FIXTURES, file), { sentBy: (source) => lan(source) === (direction === 'sent by the LAN') }).flows;
        const flagged = new Set(found.filter((f) => f.bittorrent).map((f) => [f.initiator, f.responder].sort().join(' ')));
        // Flows between two LAN hosts, and multicast from one (LSD), take no WAN route at all.
        const viaWan = (f: Expectation) => [f.a, f.b].filter(lan).length === 1 && !f.b.startsWith('239.');
        const notFound = flows
          .filter((f) => f.expect === 'bittorrent' && f.why.includes('scenario host') && viaWan(f))
          .map((f) => [f.a, f.b].sort().join(' '))
          .filter((pair) => !flagged.has(pair));
        expect(notFound.sort(), file).toEqual((missed[file] ?? []).sort());
        const falseAlarms = flows.filter((f) => f.expect === 'clean' && flagged.has([f.a, f.b].sort().join(' ')));
        expect(falseAlarms, file).toEqual([]);
      }
    });
  }
});

describe('the end-to-end lab captures from the middle (a capture started late)', () => {
  it('finds every BitTorrent flow seen after the start but an MSE connection seen past its keys, and flags no ordinary flow', () => {
    const pair = (a: string, b: string) => [a, b].sort().join(' ');
    for (const [from, missed] of [
      // RC4 past the keys is random bytes of random lengths; the announce that listed this peer came before the cut.
      [0.2, ['10.1.2.2:39341 198.51.100.102:51000']],
      [0.5, []],
    ] as [number, string[]][]) {
      const notFound: string[] = [];
      for (const [file, flows] of Object.entries(expectations)) {
        let packets = 0;
        readCapture(join(FIXTURES, file), () => void packets++);
        const found = scanCapture(join(FIXTURES, file), { keep: (index) => index >= packets * from }).flows;
        const seen = new Set(found.map((f) => pair(f.initiator, f.responder)));
        const flagged = new Set(found.filter((f) => f.bittorrent).map((f) => pair(f.initiator, f.responder)));
        notFound.push(...flows.filter((f) => f.expect === 'bittorrent' && seen.has(pair(f.a, f.b)) && !flagged.has(pair(f.a, f.b))).map((f) => pair(f.a, f.b)));
        expect(flows.filter((f) => f.expect === 'clean' && flagged.has(pair(f.a, f.b))), `${file} from ${from}`).toEqual([]);
      }
      expect(notFound, `from ${from} of each capture`).toEqual(missed);
    }
  });
});
