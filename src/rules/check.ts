/**
 * The sense checks every rules file passes before it is used, the daemon's and `btwall rules
 * check`'s alike: a rule that can never match, or one that matches any payload whatever, is a
 * mistake, and the second would drop (or ban) everything.
 */
import { createHash } from 'node:crypto';
import { ByteRegex } from '../detect/byte-regex.js';
import { OVER_TCP, OVER_UDP } from '../detect/detector.js';
import { CompiledRules, MATCH_LIST_CAPACITY } from '../detect/operator-rules.js';
import { MatchList } from '../detect/matcher.js';
import { ConfigError, type Config } from '../config/config.js';
import { loadRulesFile, RulesFileError, type OperatorRule } from './file.js';

/** Payloads as unlike each other as ordinary traffic gets: a rule that matches all of them matches anything. */
function unlikePayloads(): { name: string; bytes: Uint8Array }[] {
  // Pseudo-random but the same every run: SHA-256 in counter mode.
  const random = Buffer.concat(Array.from({ length: 47 }, (_, i) => createHash('sha256').update(`btwall ${i}`).digest())).subarray(0, 1500);
  return [
    { name: 'one zero byte', bytes: Uint8Array.of(0) },
    { name: '1500 zero bytes', bytes: new Uint8Array(1500) },
    { name: '1500 0xff bytes', bytes: new Uint8Array(1500).fill(0xff) },
    { name: '1500 random bytes', bytes: Uint8Array.from(random) },
    { name: 'an HTTP request', bytes: Uint8Array.from(Buffer.from('GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n', 'latin1')) },
    { name: 'a TLS ClientHello start', bytes: Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03) },
    { name: 'a DNS query', bytes: Uint8Array.of(0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 7, ...Buffer.from('example'), 3, ...Buffer.from('com'), 0, 0, 1, 0, 1) },
  ];
}

/** Why each refused rule is refused, one line each; empty when every rule makes sense. */
export function ruleRefusals(rules: readonly OperatorRule[]): string[] {
  const problems: string[] = [];
  const samples = unlikePayloads();
  const found = new MatchList(MATCH_LIST_CAPACITY);
  for (const rule of rules) {
    for (const [i, p] of rule.patterns.entries()) {
      if (p.kind === 'regex' && !new ByteRegex(p.source, { caseInsensitive: p.ignoreCase }).satisfiable) problems.push(`rule ${rule.name}: pattern ${i + 1} (regex) can never match`);
    }
    const compiled = new CompiledRules([rule]);
    const transport = rule.transport === 'udp' ? OVER_UDP : OVER_TCP;
    const dir = rule.direction === 'responder' ? 1 : 0;
    const matchesAll = samples.every((sample) => compiled.firstMatch(sample.bytes, 0, sample.bytes.length, transport, dir, 0, found) === 0);
    if (matchesAll) problems.push(`rule ${rule.name} matches any payload (${samples.map((s) => s.name).join(', ')} all match), so it would stop all traffic`);
  }
  return problems;
}

/** loadRulesFile, then the sense checks: throws RulesFileError naming every problem. */
export function loadCheckedRules(path: string): OperatorRule[] {
  const rules = loadRulesFile(path);
  const refusals = ruleRefusals(rules);
  if (refusals.length > 0) throw new RulesFileError(path, refusals);
  return rules;
}

/** RULES_FILE's rules, checked; null without a file. A refused file is a ConfigError naming RULES_FILE (exit 78). */
export function configuredRules(config: Config): OperatorRule[] | null {
  if (config.rulesFile === '') return null;
  try {
    return loadCheckedRules(config.rulesFile);
  } catch (error) {
    if (!(error instanceof RulesFileError)) throw error;
    throw new ConfigError([`RULES_FILE=${JSON.stringify(config.rulesFile)}: ${error.message}`]);
  }
}
