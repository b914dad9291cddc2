import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { ByteRegex, RegexSyntaxError } from '../src/detect/byte-regex.js';
import { OVER_TCP, OVER_UDP } from '../src/detect/detector.js';
import { MatchList } from '../src/detect/matcher.js';
import { CompiledRules, MATCH_LIST_CAPACITY } from '../src/detect/operator-rules.js';
import { LINKTYPE_RAW } from '../src/packet/linktype.js';
import { PACKET_ACCEPT, PACKET_MARK_BITTORRENT, PACKET_MARK_THROTTLE, Pipeline, type DetectionEvent } from '../src/pipeline/pipeline.js';
import { NO_HOST_FACTS } from '../src/policy/settings.js';
import { ruleRefusals } from '../src/rules/check.js';
import { parseRules, RulesFileError, type OperatorRule } from '../src/rules/file.js';
import { ascii } from './helpers/frames.js';
import { HANDSHAKE, TcpConnection } from './helpers/exchanges.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/btwall');
const CORPUS = '/work/shared/corpus/ndpi';

const file = (rules: unknown[]) => JSON.stringify({ rules }, null, 2);
const rules = (list: unknown[]) => parseRules(file(list), 'rules.json');
const problems = (text: string): string[] => {
  try {
    parseRules(text, 'rules.json');
  } catch (error) {
    if (error instanceof RulesFileError) return error.problems;
    throw error;
  }
  return [];
};

const bytes = (text: string) => Uint8Array.from(Buffer.from(text, 'latin1'));
const found = new MatchList(MATCH_LIST_CAPACITY);
/** The rule that matches `payload` first (its index), or -1. */
function first(compiled: CompiledRules, payload: string, opts: { transport?: number; dir?: number; dirIndex?: number } = {}): number {
  const b = bytes(payload);
  return compiled.firstMatch(b, 0, b.length, opts.transport ?? OVER_TCP, opts.dir ?? 0, opts.dirIndex ?? 0, found);
}

describe('operator rules file (RULES_FILE)', () => {
  it('reads patterns in hex and text, at an offset or within N bytes, with defaults', () => {
    const [rule] = rules([{ name: 'bt', match: [{ hex: '13 42:69', offset: 0 }, { text: 'Peer', within: 64, ignoreCase: true }, { regex: '^x', within: 8 }] }]);
    expect(rule).toMatchObject({ name: 'bt', transport: 'any', direction: 'any', packets: 1, action: 'drop', mayBan: false });
    expect(rule.patterns).toEqual([
      { kind: 'bytes', bytes: Uint8Array.of(0x13, 0x42, 0x69), offset: 0, within: 3, ignoreCase: false },
      { kind: 'bytes', bytes: bytes('Peer'), offset: null, within: 64, ignoreCase: true },
      { kind: 'regex', source: '^x', within: 8, ignoreCase: false },
    ]);
  });

  it('names the line and column of bad JSON and of every invalid field', () => {
    expect(problems('{\n  "rules": [\n    { "name": "a", }\n  ]\n}')).toEqual([expect.stringMatching(/^line 3, column 20: not JSON: /)]);
    const text = file([{ name: 'Bad Name', match: [{ hex: 'abc' }], action: 'block', colour: 'red' }]);
    const found = problems(text);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^line 4, column 15: rules\.0\.name: must be 1-23 characters/),
        expect.stringMatching(/^line 7, column 18: rules\.0\.match\.0\.hex: must be pairs of hex digits/),
        expect.stringMatching(/^line 10, column 17: rules\.0\.action: /),
        expect.stringMatching(/^line 11, column 7: rules\.0: Unrecognized key: "colour"/),
      ]),
    );
    expect(found).toHaveLength(4);
  });

  it('refuses duplicate names, bad regexes and bytes that cannot fit where they must be', () => {
    const found = problems(
      file([
        { name: 'a', match: [{ regex: '(ab', within: 10 }] },
        { name: 'a', match: [{ text: 'abcdef', within: 4 }, { text: 'x', offset: 1499, within: 3 }] },
      ]),
    );
    expect(found).toEqual([
      expect.stringMatching(/rules\.0\.match\.0\.regex: unclosed \( at character 4 of the regex$/),
      expect.stringMatching(/rules\.1\.name: "a" is the name of an earlier rule$/),
      expect.stringMatching(/rules\.1\.match\.0: the 6 bytes cannot fit within 4 of the first 1500 bytes, so it never matches$/),
      expect.stringMatching(/rules\.1\.match\.1: give offset or within, not both$/),
    ]);
  });

  it('refuses a rule that matches any payload, or a regex that can never match', () => {
    const refused = ruleRefusals(
      rules([
        { name: 'anything', match: [{ regex: 'x*', within: 100 }] },
        { name: 'any-byte', match: [{ regex: '.', within: 1 }] },
        { name: 'impossible', match: [{ regex: 'a^b', within: 10 }, { regex: '[^\\x00-\\xff]', within: 10 }] },
        { name: 'fine', match: [{ text: '\u0013BitTorrent protocol', offset: 0 }] },
      ]),
    );
    expect(refused).toEqual([
      expect.stringMatching(/^rule anything matches any payload \(one zero byte, 1500 zero bytes, .*\), so it would stop all traffic$/),
      expect.stringMatching(/^rule any-byte matches any payload/),
      'rule impossible: pattern 1 (regex) can never match',
      'rule impossible: pattern 2 (regex) can never match',
    ]);
  });
});

describe('operator rules, compiled', () => {
  it('match bytes only at their offset or within their reach, with case folding when asked', () => {
    const compiled = new CompiledRules(rules([{ name: 'at', match: [{ text: 'abc', offset: 2 }] }, { name: 'near', match: [{ text: 'XyZ', within: 6, ignoreCase: true }] }]));
    expect(first(compiled, '..abc')).toBe(0);
    expect(first(compiled, '.abc')).toBe(-1);
    expect(first(compiled, '...abc')).toBe(-1);
    expect(first(compiled, '...xyz')).toBe(1);
    expect(first(compiled, '....xyz')).toBe(-1);
  });

  it('take the first rule in file order when several match, and honour transport, direction and packets', () => {
    const compiled = new CompiledRules(
      rules([
        { name: 'udp-only', transport: 'udp', match: [{ text: 'same', within: 100 }] },
        { name: 'from-responder', direction: 'responder', packets: 2, match: [{ text: 'same', within: 100 }] },
        { name: 'shared', match: [{ text: 'same', within: 100 }, { regex: '^late', within: 10 }] },
      ]),
    );
    expect(first(compiled, 'the same', { transport: OVER_UDP })).toBe(0);
    expect(first(compiled, 'the same', { dir: 1, dirIndex: 0 })).toBe(1);
    expect(first(compiled, 'the same', { dir: 1, dirIndex: 1 })).toBe(1);
    expect(first(compiled, 'the same', { dir: 1, dirIndex: 2 })).toBe(-1);
    expect(first(compiled, 'the same', { dir: 0 })).toBe(2);
    expect(first(compiled, 'late', { dir: 0 })).toBe(2);
    // Only the first payload packet in the direction (packets defaults to 1).
    expect(first(compiled, 'the same', { dir: 0, dirIndex: 1 })).toBe(-1);
  });

  it('find a match past a full list of earlier ones', () => {
    const compiled = new CompiledRules(rules([{ name: 'a', match: [{ text: 'a', within: 1500 }, { text: 'zz', offset: 200 }] }, { name: 'b', match: [{ text: 'needle', within: 1500 }] }]));
    expect(first(compiled, `${'a'.repeat(0)}${'b'.repeat(10)}${'a'.repeat(300)}`)).toBe(0);
    expect(first(compiled, `${'x'.repeat(200)}zz`)).toBe(0);
    expect(first(compiled, `${'c'.repeat(500)}needle`)).toBe(1);
  });
});

describe('byte regexes', () => {
  it.each([
    ['^(\\x13bittorrent protocol|azver\\x01$)|d1:ad2:id20:', '\x13BitTorrent protocol', true, true],
    ['^(\\x13bittorrent protocol|azver\\x01$)', 'azver\x01x', true, false],
    ['^(\\x13bittorrent protocol|azver\\x01$)', 'azver\x01', true, true],
    ['\\x08\'7P\\)[RP]', "..\x08'7P)P", false, true],
    ['a(b|c)+d', 'xxabcbd', false, true],
    ['a(b|c)+d', 'ad', false, false],
    ['a{2,3}b', 'ab', false, false],
    ['a{2,3}b', 'aaab', false, true],
    ['x[^a]y', 'xAy', true, false],
    ['\\d\\s\\w', '7 q', false, true],
  ])('%s on %j (ignoreCase %s): %s', (source, input, ignoreCase, expected) => {
    const b = bytes(input);
    expect(new ByteRegex(source, { caseInsensitive: ignoreCase }).test(b, 0, b.length)).toBe(expected);
  });

  it.each(['(ab', 'a)', '*a', 'a{3,1}', '[z-a]', '(?=x)', '\\q', 'Ā', 'a{100}'])('refuses %j with a message', (source) => {
    expect(() => new ByteRegex(source)).toThrow(RegexSyntaxError);
  });

  it('takes steps bounded by states times bytes, whatever the input', () => {
    const regex = new ByteRegex('(a|aa)*(a|aa)*b', {});
    const input = new Uint8Array(1500).fill(0x61);
    const started = process.hrtime.bigint();
    expect(regex.test(input, 0, input.length)).toBe(false);
    // A backtracking engine needs exponential time here; this one a few milliseconds at most.
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(500);
  });
});

describe('operator rules in the pipeline', () => {
  const USER = '10.8.0.2';
  const PEER = '198.51.100.9';
  const setup = (list: OperatorRule[], env: Record<string, string> = {}) => {
    const p = new Pipeline(loadConfig({ LOCAL_CIDRS: '10.8.0.0/16', ...env }), NO_HOST_FACTS, undefined, undefined, list);
    const detections: DetectionEvent[] = [];
    p.onDetection = (event) => detections.push(event);
    p.engine.clock.nowMs = 1_700_000_000_000;
    return { p, detections };
  };
  const feed = (p: Pipeline, frames: Uint8Array[]) => frames.map((frame) => p.handle(frame, 0, frame.length, LINKTYPE_RAW));

  it("decide a flow under the rule's name with its action, and ban on proof only when the operator says the bytes may ban", () => {
    const list = rules([
      { name: 'watch', match: [{ text: 'watch me', offset: 0 }], action: 'monitor' },
      { name: 'slow', match: [{ text: 'slow me', offset: 0 }], action: 'throttle' },
      { name: 'proof', match: [{ text: 'proof', offset: 0 }], mayBan: true },
      { name: 'guess', match: [{ text: 'guess', offset: 0 }] },
    ]);
    const { p, detections } = setup(list);
    const outcomes = ['watch me', 'slow me', 'proof', 'guess'].map((text, i) => {
      const c = new TcpConnection(PEER, 40000 + i, USER, 6881);
      feed(p, c.open());
      return feed(p, [c.segment(0, ascii(text))])[0];
    });
    expect(outcomes).toEqual([PACKET_ACCEPT, PACKET_MARK_THROTTLE, PACKET_MARK_BITTORRENT, PACKET_MARK_BITTORRENT]);
    expect(detections.map((d) => [d.rule, d.strength, d.decision.action, d.decision.enforce, d.decision.ban?.address ?? null])).toEqual([
      ['watch', 'heuristic', 'accept', false, null],
      ['slow', 'heuristic', 'throttle', true, null],
      ['proof', 'exact', 'drop', true, PEER],
      ['guess', 'heuristic', 'drop', true, null],
    ]);
    expect(detections[0].decision.reason).toBe('no ban: rule watch only watches');
  });

  it('reload between packets: new flows meet the new rules, and the built-in detectors still come first', () => {
    const { p, detections } = setup(rules([{ name: 'old', match: [{ text: 'payload', within: 100 }] }]));
    p.operatorRules!.setRules(rules([{ name: 'new', match: [{ text: 'payload', within: 100 }], action: 'throttle' }]));
    const c = new TcpConnection(USER, 40100, PEER, 80);
    feed(p, c.open());
    expect(feed(p, [c.segment(0, ascii('some payload'))])).toEqual([PACKET_MARK_THROTTLE]);
    const h = new TcpConnection(USER, 40101, PEER, 6881);
    feed(p, h.open());
    feed(p, [h.segment(0, HANDSHAKE)]);
    expect(detections.map((d) => d.rule)).toEqual(['new', 'handshake']);
  });

  it('under ACTION=monitor enforce nothing, whatever a rule says', () => {
    const { p, detections } = setup(rules([{ name: 'slow', match: [{ text: 'slow me', offset: 0 }], action: 'throttle' }]), { ACTION: 'monitor' });
    const c = new TcpConnection(PEER, 40200, USER, 6881);
    feed(p, c.open());
    expect(feed(p, [c.segment(0, ascii('slow me'))])).toEqual([PACKET_ACCEPT]);
    expect(detections[0].decision).toMatchObject({ action: 'throttle', enforce: false });
  });
});

describe('btwall rules check', () => {
  const work = mkdtempSync(join(tmpdir(), 'btwall-rules-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const check = (...args: string[]) => spawnSync(CLI, ['rules', 'check', ...args], { encoding: 'utf8' });

  it('passes the shipped L7 examples and scores them on the corpus: BitTorrent flows found, no other flow', () => {
    for (const example of ['l7-bittorrent.json', 'l7-bittorrent-bytes.json']) {
      const run = check(join(ROOT, 'examples/rules', example), join(CORPUS, 'bittorrent.pcap'), join(CORPUS, 'http-crash-content-disposition.pcap'), join(CORPUS, 'dns_long_domainname.pcap'));
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/all usable/);
      const rows = run.stdout.split('\n').slice(1, -2).map((l) => l.split(/\s+/));
      expect(rows.reduce((sum, r) => sum + Number(r[2]), 0)).toBeGreaterThan(0);
      for (const r of rows) expect(r[3]).toMatch(/^0\//);
    }
  });

  it('refuses a broken file naming line and column, and a rule that matches every non-BitTorrent flow of labelled captures', () => {
    const broken = join(work, 'broken.json');
    writeFileSync(broken, '{"rules": [ {"name": "x", "match": [] } ]}');
    const bad = check(broken);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('line 1, column 36: rules.0.match: needs at least one pattern');
    // A capture of one HTTP flow, labelled, and a rule that matches its HTTP.
    const dir = join(work, 'corpus');
    spawnSync('mkdir', ['-p', dir]);
    copyFileSync(join(CORPUS, 'http-crash-content-disposition.pcap'), join(dir, 'one.pcap'));
    const scanned = spawnSync(CLI, ['scan', join(dir, 'one.pcap')], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off' } });
    const flows = scanned.stdout.trim().split('\n').map((l) => JSON.parse(l) as { l4: string; src: string; sport: number; dst: string; dport: number });
    writeFileSync(join(dir, 'truth.json'), JSON.stringify({ 'one.pcap': flows.map((f) => ({ l4: f.l4, a: `${f.src}:${f.sport}`, b: `${f.dst}:${f.dport}`, bittorrent: false })) }));
    const http = join(work, 'http.json');
    writeFileSync(http, file([{ name: 'any-http', transport: 'tcp', direction: 'initiator', match: [{ regex: '^[A-Z]+ /', within: 16 }] }]));
    const refused = check(http, join(dir, 'one.pcap'));
    expect(refused.status).toBe(1);
    expect(refused.stdout).toMatch(new RegExp(`any-http\\s+${flows.length}\\s+0\\s+${flows.length}/${flows.length}`));
    expect(refused.stderr).toContain(`rule any-http matches every one of the ${flows.length} non-BitTorrent flows of the labelled captures`);
  });
});
