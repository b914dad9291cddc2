/**
 * `btwall scan` on the end-to-end lab's captures (fixtures/lab/e2e, and fixtures/lab/e2e-rtt made
 * with a 40 ms round trip on the WAN side): real clients' traffic at the gateway, each flow
 * labelled by construction (expectations.json). Every flow a scenario host sent BitTorrent on is
 * found, the ordinary traffic has no false alarm but the listed tracker name, and no service is
 * ever banned. Read as a route that shows one direction would (only what the LAN sent, or only
 * what it received), or from the middle (a capture started late), every BitTorrent flow is still
 * found but those whose visible bytes carry nothing of BitTorrent at all, each listed with why.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCapture } from '../src/pcap/reader.js';
import { scanCapture, type ScanOptions } from './helpers/capture.js';

const ROOT = resolve(import.meta.dirname, '..');
/** The gateway's variables for the lab: every view of a capture is read by the pipeline `btwall scan` runs with them. */
const SCAN_ENV = { LOCAL_CIDRS: '10.1.0.0/16,fd00:10:1::/48', TRACKER_DOMAINS: 'tracker.lab.example' };
const CLI = join(ROOT, 'bin/btwall');

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

/** The flows of one view a set is expected to miss: "capture: a b" (endpoints sorted), each with why in a comment. */
interface Misses {
  sentByLan: string[];
  receivedByLan: string[];
  /** From 20 % and from 50 % of each capture on. */
  fromFifth: string[];
  fromHalf: string[];
}

const flowKey = (l4: string, x: string, y: string) => `${l4} ${[x, y].sort().join(' ')}`;
const pair = (x: string, y: string) => [x, y].sort().join(' ');
/** An endpoint as the labeller writes it (bt-lab-tool.py ep): IPv6 addresses in brackets. */
const endpoint = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
/** Whether an address, or an endpoint as the labeller writes it, is on a LAN prefix (LOCAL_CIDRS). */
const lan = (source: string) => /^\[?(10\.1\.|fd00:10:1:)/.test(source);
/** Flows between two LAN hosts, and multicast from one (LSD), take no WAN route at all. */
const viaWan = (f: Expectation) => [f.a, f.b].filter(lan).length === 1 && !f.b.startsWith('239.') && !f.b.startsWith('[ff');

function suite(set: string, misses: Misses): void {
  const fixtures = join(ROOT, 'fixtures/lab', set);
  const expectations = JSON.parse(readFileSync(join(fixtures, 'expectations.json'), 'utf8')) as Record<string, Expectation[]>;
  const run = JSON.parse(readFileSync(join(fixtures, 'run.json'), 'utf8')) as { services: Record<string, string> };

  function scan(file: string): ScanRecord[] {
    const out = spawnSync(CLI, ['scan', join(fixtures, file)], {
      encoding: 'utf8',
      env: { ...process.env, ...SCAN_ENV },
    });
    if (out.status !== 0) throw new Error(`btwall scan ${file}: ${out.stderr}`);
    return out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ScanRecord);
  }

  /** Over every capture of the set read as `view` shows it: the BitTorrent flows `counts` holds but none flagged, and the clean flows flagged. */
  function misread(view: (file: string) => ScanOptions, counts: (f: Expectation, withPayload: Set<string>) => boolean) {
    const notFound: string[] = [];
    const falseAlarms: string[] = [];
    for (const [file, flows] of Object.entries(expectations)) {
      const { flows: found, withPayload } = scanCapture(join(fixtures, file), { pipelineEnv: SCAN_ENV, ...view(file) });
      const flagged = new Set(found.filter((f) => f.bittorrent).map((f) => pair(f.initiator, f.responder)));
      for (const f of flows) {
        const key = pair(f.a, f.b);
        if (f.expect === 'bittorrent' && counts(f, withPayload) && !flagged.has(key)) notFound.push(`${file}: ${key}`);
        if (f.expect === 'clean' && flagged.has(key)) falseAlarms.push(`${file}: ${key}`);
      }
    }
    return { notFound: notFound.sort(), falseAlarms };
  }

  describe(`btwall scan on the end-to-end lab captures, ${set}`, () => {
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

    for (const [direction, missed] of [
      ['sent by the LAN', misses.sentByLan],
      ['received by the LAN', misses.receivedByLan],
    ] as const) {
      it(`one direction only (an asymmetric route), ${direction}: every BitTorrent flow but the listed ones, no ordinary flow`, () => {
        const fromLan = direction === 'sent by the LAN';
        const scenarioFlow = (f: Expectation) => f.why.includes('scenario host') && viaWan(f);
        const { notFound, falseAlarms } = misread(() => ({ sentBy: (source: string) => lan(source) === fromLan }), scenarioFlow);
        expect(notFound).toEqual([...missed].sort());
        expect(falseAlarms).toEqual([]);
      });
    }

    for (const [from, missed] of [
      [0.2, misses.fromFifth],
      [0.5, misses.fromHalf],
    ] as const) {
      it(`from ${from * 100} % of each capture on (a capture started late): every BitTorrent flow with payload after the cut but the listed ones, no ordinary flow`, () => {
        const cut = (file: string) => {
          let packets = 0;
          readCapture(join(fixtures, file), () => void packets++);
          return { keep: (index: number) => index >= packets * from };
        };
        const { notFound, falseAlarms } = misread(cut, (f, withPayload) => withPayload.has(pair(f.a, f.b)));
        expect(notFound).toEqual([...missed].sort());
        expect(falseAlarms).toEqual([]);
      });
    }
  });
}

// Every listed flow has nothing of BitTorrent in what that view shows:
// - an unanswered MSE attempt (aria2): one key burst from the LAN and nothing back; its peer came
//   in the tracker's or DHT's answer, the other way (or before the cut), and nothing the host sent
//   to it before (a DHT query, a handshake: the policy lists the peer for the host) named it;
// - a web seed's 206, an HTTP answer from a web server (on port 80, which is never cached: the
//   BitTorrent part is the request);
// - from the middle: RC4 past the keys, a web seed's body.
suite('e2e', {
  sentByLan: ['udp-tracker.pcap: 10.1.4.2:48232 198.51.100.104:51000'], // unanswered MSE attempt, the host's first flow to that peer
  receivedByLan: ['webseed.pcap: 10.1.8.2:54359 198.51.100.80:80'], // the web seed's 206
  fromFifth: ['udp-tracker.pcap: 10.1.4.2:48232 198.51.100.104:51000'], // unanswered MSE attempt, its peer announced before the cut
  fromHalf: [
    'encrypted.pcap: 10.1.2.2:36020 198.51.100.102:51000', // RC4 past the keys
    'webseed.pcap: 10.1.8.2:54359 198.51.100.80:80', // the web seed's body
  ],
});
suite('e2e-rtt', {
  sentByLan: [
    'dht.pcap: 10.1.5.2:44130 198.51.100.105:51000', // unanswered MSE attempts, the host's first flow to that peer
    'udp-tracker.pcap: 10.1.4.2:52626 198.51.100.104:51000',
  ],
  receivedByLan: ['webseed.pcap: 10.1.8.2:60177 198.51.100.80:80'], // the web seed's 206
  fromFifth: [
    'encrypted.pcap: 10.1.2.2:49498 198.51.100.102:51000', // RC4 past the keys
    'webseed.pcap: 10.1.8.2:60177 198.51.100.80:80', // the web seed's body
  ],
  fromHalf: [
    'encrypted.pcap: 10.1.2.2:49498 198.51.100.102:51000', // RC4 past the keys
    'webseed.pcap: 10.1.8.2:60177 198.51.100.80:80', // the web seed's body
  ],
});
