import { ConfigError, refuseConfig, withConfig, type Config } from '../config/config.js';
import { configuredRules } from '../rules/check.js';
import type { OperatorRule } from '../rules/file.js';
import { VERDICT_BITTORRENT, VERDICT_CLEAN } from '../engine/engine.js';
import { formatAddress } from '../flow/address.js';
import { DECODED_MALFORMED, DECODED_NOT_IP, DECODED_OTHER_L4, DECODED_UNKNOWN_LINK, IPPROTO_TCP } from '../packet/packet.js';
import { CaptureSource } from '../pipeline/capture-source.js';
import { Pipeline } from '../pipeline/pipeline.js';
import { NO_HOST_FACTS } from '../policy/settings.js';
import type { FlowAction } from '../policy/policy.js';
import { OutputBuffer } from './output.js';
import { EXIT_USAGE, parseUsage, UsageError } from './usage.js';

export const SCAN_USAGE = `usage: btwall scan [--summary] [--flows N] FILE...

Runs the daemon's pipeline (detectors, policy, the kernel's INSPECT_PACKETS window and
connection marks) over pcap and pcapng captures (format found by magic number) and prints one
JSON object per flow and line on stdout:
  {"file":…,"l4":"tcp"|"udp","src":…,"sport":…,"dst":…,"dport":…,"verdict":"bittorrent"|"clean",
   "rule":…,"strength":…,"action":"drop"|"accept","ban":ADDRESS|null,"reason":…}
src is the side that opened the flow. rule names the detector for BitTorrent flows; for clean
flows it is "inspected" (every detector gave up) or "undecided" (the flow ended first, or left
the INSPECT_PACKETS window undecided). strength is the evidence's (exact, response, heuristic,
cache, announced, name); ban is the address the policy would ban and reason says why or why not.
The daemon's variables (INSPECT_PACKETS, LOCAL_CIDRS, BAN_LOCAL, BAN_EXEMPT, BAN_RATE, ...)
apply; a bad one exits 78.

  --summary   also print a table (flows, BitTorrent flows by rule, bans, bad inputs) on stderr
  --flows N   flow table capacity (default FLOW_CAPACITY); a full table evicts the least recent flow

Exit status: 0 all input read, 1 some input was unreadable, truncated or corrupt (the rest
was still scanned and reported), 64 bad usage, 78 a bad variable.`;

interface ScanArgs {
  files: string[];
  summary: boolean;
  /** --flows, else FLOW_CAPACITY. */
  flowCapacity: number | undefined;
}

function parseArgs(args: readonly string[]): ScanArgs {
  const parsed: ScanArgs = { files: [], summary: false, flowCapacity: undefined };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--summary') parsed.summary = true;
    else if (arg === '--flows') {
      const value = Number(args[++i]);
      if (!Number.isInteger(value) || value < 1 || value > 1 << 26) {
        throw new UsageError(`--flows takes a whole number from 1 to ${1 << 26}, got ${args[i] ?? 'nothing'}`);
      }
      parsed.flowCapacity = value;
    } else if (arg === '--') {
      parsed.files.push(...args.slice(i + 1));
      break;
    } else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else parsed.files.push(arg);
  }
  if (parsed.files.length === 0) throw new UsageError('no capture file given');
  return parsed;
}

/** Counts for the --summary table. */
class ScanTally {
  files = 0;
  packets = 0;
  flows = 0;
  tcpFlows = 0;
  udpFlows = 0;
  bittorrentByRule = new Map<string, number>();
  bans = 0;
  badInputs: string[] = [];
}

export function scanCommand(args: readonly string[]): number {
  const parsed = parseUsage('scan', SCAN_USAGE, () => parseArgs(args));
  if (parsed === null) return EXIT_USAGE;
  // The daemon's own variables (INSPECT_PACKETS, LOCAL_CIDRS, BAN_*...) shape the scan's pipeline.
  return withConfig(process.env, (config) => scan(parsed, { ...config, flowCapacity: parsed.flowCapacity ?? config.flowCapacity, action: 'monitor' }));
}

/** What a scan reports of a flow's detection, kept from the deciding packet to the flow's end. */
interface FlowReport {
  /** The rule's name (an operator rule's own). */
  rule: string;
  strength: string;
  action: FlowAction;
  ban: string | null;
  reason: string;
}

const CLEAN_REPORT: FlowReport = { rule: '', strength: '', action: 'accept', ban: null, reason: '' };

function scan(parsed: ScanArgs, config: Config): number {
  let rules: OperatorRule[] | null;
  try {
    rules = configuredRules(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return refuseConfig(error);
  }
  const pipeline = new Pipeline(config, NO_HOST_FACTS, undefined, undefined, rules);
  const engine = pipeline.engine;
  const flows = engine.flows;
  const out = new OutputBuffer(process.stdout);
  const tally = new ScanTally();
  const address = new Uint8Array(16);
  const reports = new Map<number, FlowReport>();
  let currentFile = '';

  pipeline.onDetection = (event) => {
    const { decision } = event;
    reports.set(event.flow, {
      rule: event.rule,
      strength: event.strength,
      action: decision.action,
      ban: decision.ban?.address ?? null,
      reason: decision.reason,
    });
  };
  flows.onRelease = (flow) => {
    const family = flows.family(flow);
    const tcp = flows.l4(flow) === IPPROTO_TCP;
    flows.address(flow, 0, address);
    const src = formatAddress(family, address);
    flows.address(flow, 1, address);
    const dst = formatAddress(family, address);
    const verdict = flows.verdict[flow];
    const bittorrent = verdict === VERDICT_BITTORRENT;
    const report = (bittorrent ? reports.get(flow) : undefined) ?? CLEAN_REPORT;
    const rule = bittorrent ? report.rule || engine.ruleNames[flows.rule[flow]] : verdict === VERDICT_CLEAN ? 'inspected' : 'undecided';
    reports.delete(flow);
    out.write(
      JSON.stringify({
        file: currentFile,
        l4: tcp ? 'tcp' : 'udp',
        src,
        sport: flows.port(flow, 0),
        dst,
        dport: flows.port(flow, 1),
        verdict: bittorrent ? 'bittorrent' : 'clean',
        rule,
        strength: report.strength || null,
        action: report.action,
        ban: report.ban,
        reason: report.reason || null,
      }) + '\n',
    );
    tally.flows++;
    if (tcp) tally.tcpFlows++;
    else tally.udpFlows++;
    if (bittorrent) tally.bittorrentByRule.set(rule, (tally.bittorrentByRule.get(rule) ?? 0) + 1);
    if (report.ban !== null) tally.bans++;
  };

  const counts = engine.decoder.counts;
  let unknownLinkBefore = 0;
  let unknownSeen = 0;
  const unsupportedLinkTypes = new Set<number>();
  const source = new CaptureSource(parsed.files, config.inspectPackets, {
    fileStart(file) {
      currentFile = file;
      tally.files++;
      unknownLinkBefore = unknownSeen = counts[DECODED_UNKNOWN_LINK];
      unsupportedLinkTypes.clear();
    },
    packet(linkType) {
      if (counts[DECODED_UNKNOWN_LINK] === unknownSeen) return;
      unknownSeen = counts[DECODED_UNKNOWN_LINK];
      unsupportedLinkTypes.add(linkType);
    },
    fileEnd(file, result) {
      tally.packets += result.packets;
      if (unsupportedLinkTypes.size > 0) {
        const message = `${file}: link type ${[...unsupportedLinkTypes].join(', ')} not supported, ${counts[DECODED_UNKNOWN_LINK] - unknownLinkBefore} packets skipped`;
        tally.badInputs.push(message);
        process.stderr.write(`btwall scan: ${message}\n`);
      }
      if (result.error !== null) {
        const message = `${file}: ${result.error}${result.packets > 0 ? ` (${result.packets} packets before it were scanned)` : ''}`;
        tally.badInputs.push(message);
        process.stderr.write(`btwall scan: ${message}\n`);
      }
    },
  });
  // A capture source reads every file before run() returns.
  void source.run(pipeline);
  out.flush();
  if (parsed.summary) process.stderr.write(summaryTable(tally, counts));
  return tally.badInputs.length > 0 ? 1 : 0;
}

function summaryTable(tally: ScanTally, counts: Float64Array): string {
  const rows: [string, string | number][] = [
    ['files', tally.files],
    ['packets', tally.packets],
    ['flows', `${tally.flows} (tcp ${tally.tcpFlows}, udp ${tally.udpFlows})`],
    ['bittorrent flows', [...tally.bittorrentByRule.values()].reduce((a, b) => a + b, 0)],
    ...[...tally.bittorrentByRule.entries()].sort((a, b) => b[1] - a[1]).map(([rule, n]): [string, number] => [`  rule ${rule}`, n]),
    ['bans', tally.bans],
    ['packets without a flow', `${counts[DECODED_OTHER_L4]} other IP, ${counts[DECODED_NOT_IP]} not IP`],
    ['malformed packets', counts[DECODED_MALFORMED]],
    ['unsupported link packets', counts[DECODED_UNKNOWN_LINK]],
    ['bad inputs', tally.badInputs.length],
    ...tally.badInputs.map((message): [string, string] => ['', message]),
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}\n`).join('');
}
