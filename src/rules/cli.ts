/**
 * `btwall rules check FILE [CAPTURE...]`: the checks the daemon makes of RULES_FILE (at start and
 * at each SIGHUP), and a score of each rule against captures: the flows it matches, split into
 * BitTorrent and not by a truth.json beside the captures (the shared corpus's labels) when there
 * is one. A rule that matches every non-BitTorrent flow of the labelled captures is refused.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { OperatorRulesDetector } from '../detect/operator-rules.js';
import { Engine, VERDICT_BITTORRENT } from '../engine/engine.js';
import { formatAddress } from '../flow/address.js';
import { IPPROTO_TCP } from '../packet/packet.js';
import { readCapture } from '../pcap/reader.js';
import { ruleRefusals } from './check.js';
import { loadRulesFile, RulesFileError, type OperatorRule } from './file.js';

export const RULES_CHECK_USAGE = `usage: btwall rules check FILE [CAPTURE...]

Checks an operator rules file (RULES_FILE) as the daemon does before using it: valid JSON, every
field as README "Operator rules" says (problems named by line and column), no rule that can never
match, none that matches any payload. With captures, scores each rule on its own: the flows it
matches in each. Where a truth.json (the shared corpus's per-flow labels) sits beside a capture,
the matched flows are split into BitTorrent and not, and a rule that matches every non-BitTorrent
flow there is refused too.

Exit status: 0 the file may be used, 1 it is refused (each reason on stderr), 64 bad usage.`;

/** One labelled flow of truth.json: transport and the two endpoints, ip:port ([v6]:port). */
interface TruthFlow {
  l4: string;
  a: string;
  b: string;
  bittorrent: boolean;
}

/** Per capture file name, its labelled flows by key (see flowKey). */
type Truth = Map<string, Map<string, boolean>>;

function endpoint(family: number, address: Uint8Array, port: number): string {
  const text = formatAddress(family === 4 ? 4 : 6, address);
  return family === 4 ? `${text}:${port}` : `[${text}]:${port}`;
}

function flowKey(l4: string, a: string, b: string): string {
  return `${l4} ${[a, b].sort().join(' ')}`;
}

/** The labels of every directory's truth.json among the captures' directories. */
function readTruth(captures: readonly string[]): Truth {
  const truth: Truth = new Map();
  for (const dir of new Set(captures.map((c) => dirname(c)))) {
    const path = join(dir, 'truth.json');
    if (!existsSync(path)) continue;
    const labels = JSON.parse(readFileSync(path, 'utf8')) as Record<string, TruthFlow[]>;
    for (const [file, flows] of Object.entries(labels)) {
      truth.set(join(dir, file), new Map(flows.filter((f) => f.l4 !== 'other').map((f) => [flowKey(f.l4, f.a, f.b), f.bittorrent])));
    }
  }
  return truth;
}

interface RuleScore {
  flows: number;
  bittorrent: number;
  other: number;
  unlabelled: number;
  /** Non-BitTorrent labelled flows of the transports the rule looks at. */
  otherTotal: number;
}

/** Runs one rule alone over the captures: every flow it decides. */
function score(rule: OperatorRule, captures: readonly string[], truth: Truth): RuleScore {
  const result: RuleScore = { flows: 0, bittorrent: 0, other: 0, unlabelled: 0, otherTotal: 0 };
  const engine = new Engine({ detectors: [new OperatorRulesDetector([rule])], flowCapacity: 1 << 16 });
  const address = new Uint8Array(16);
  let labels: Map<string, boolean> | undefined;
  engine.onVerdict = (flow) => {
    const flows = engine.flows;
    if (flows.verdict[flow] !== VERDICT_BITTORRENT) return;
    const family = flows.family(flow);
    flows.address(flow, 0, address);
    const a = endpoint(family, address, flows.port(flow, 0));
    flows.address(flow, 1, address);
    const b = endpoint(family, address, flows.port(flow, 1));
    result.flows++;
    const label = labels?.get(flowKey(flows.l4(flow) === IPPROTO_TCP ? 'tcp' : 'udp', a, b));
    if (label === undefined) result.unlabelled++;
    else if (label) result.bittorrent++;
    else result.other++;
  };
  for (const capture of captures) {
    labels = truth.get(join(dirname(capture), basename(capture)));
    for (const [key, bittorrent] of labels ?? []) {
      if (!bittorrent && (rule.transport === 'any' || key.startsWith(`${rule.transport} `))) result.otherTotal++;
    }
    readCapture(capture, (buf, off, capLen, _origLen, linkType, tsMs) => {
      engine.clock.nowMs = tsMs;
      engine.process(buf, off, capLen, linkType);
    });
    engine.reset();
  }
  return result;
}

export function rulesCheckCommand(args: readonly string[]): number {
  const [file, ...captures] = args;
  if (file === undefined || file.startsWith('-')) {
    process.stderr.write(`btwall rules check: give a rules file\n${RULES_CHECK_USAGE}\n`);
    return 64;
  }
  let rules: OperatorRule[];
  try {
    rules = loadRulesFile(file);
  } catch (error) {
    if (!(error instanceof RulesFileError)) throw error;
    process.stderr.write(`btwall rules check: ${error.message}\n`);
    return 1;
  }
  const refusals = ruleRefusals(rules);
  if (captures.length > 0) {
    const missing = captures.filter((c) => !existsSync(c));
    if (missing.length > 0) {
      process.stderr.write(`btwall rules check: no such capture: ${missing.join(', ')}\n`);
      return 64;
    }
    const truth = readTruth(captures);
    const width = Math.max(4, ...rules.map((r) => r.name.length)) + 2;
    const lines = [`${'RULE'.padEnd(width)}FLOWS  BITTORRENT  OTHER  UNLABELLED`];
    for (const rule of rules) {
      const s = score(rule, captures, truth);
      lines.push(`${rule.name.padEnd(width)}${String(s.flows).padEnd(7)}${String(s.bittorrent).padEnd(12)}${`${s.other}/${s.otherTotal}`.padEnd(7)}${s.unlabelled}`);
      if (s.otherTotal > 0 && s.other >= s.otherTotal) refusals.push(`rule ${rule.name} matches every one of the ${s.otherTotal} non-BitTorrent flows of the labelled captures`);
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (refusals.length > 0) {
    process.stderr.write(`btwall rules check: ${file} refused:\n${refusals.map((r) => `  ${r}`).join('\n')}\n`);
    return 1;
  }
  process.stdout.write(`${file}: ${rules.length} rule${rules.length === 1 ? '' : 's'}, all usable\n`);
  return 0;
}
