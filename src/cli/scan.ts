import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../engine/engine.js';
import { formatAddress } from '../flow/address.js';
import { DECODED_MALFORMED, DECODED_NOT_IP, DECODED_OTHER_L4, DECODED_UNKNOWN_LINK, IPPROTO_TCP } from '../packet/packet.js';
import { readCapture } from '../pcap/reader.js';
import { OutputBuffer } from './output.js';

export const SCAN_USAGE = `usage: btwall scan [--summary] [--flows N] FILE...

Runs the detection engine over pcap and pcapng captures (format found by magic number) and
prints one JSON object per flow and line on stdout:
  {"file":…,"l4":"tcp"|"udp","src":…,"sport":…,"dst":…,"dport":…,"verdict":"bittorrent"|"clean","rule":…}
src is the side that opened the flow. rule names the detector for BitTorrent flows; for clean
flows it is "inspected" (every detector gave up) or "undecided" (the flow ended first).

  --summary   also print a table (flows, BitTorrent flows by rule, bad inputs) on stderr
  --flows N   flow table capacity (default 1048576); a full table evicts the least recent flow

Exit status: 0 all input read, 1 some input was unreadable, truncated or corrupt (the rest
was still scanned and reported), 64 bad usage.`;

interface ScanArgs {
  files: string[];
  summary: boolean;
  flowCapacity: number;
}

class UsageError extends Error {}

function parseArgs(args: readonly string[]): ScanArgs {
  const parsed: ScanArgs = { files: [], summary: false, flowCapacity: 1 << 20 };
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
  badInputs: string[] = [];
}

export function scanCommand(args: readonly string[]): number {
  let parsed: ScanArgs;
  try {
    parsed = parseArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`btwall scan: ${error.message}\n${SCAN_USAGE}\n`);
    return 64;
  }
  const engine = new Engine({ flowCapacity: parsed.flowCapacity });
  const flows = engine.flows;
  const out = new OutputBuffer(process.stdout);
  const tally = new ScanTally();
  const address = new Uint8Array(16);
  let currentFile = '';

  flows.onRelease = (flow) => {
    const family = flows.family(flow);
    const tcp = flows.l4(flow) === IPPROTO_TCP;
    flows.address(flow, 0, address);
    const src = formatAddress(family, address);
    flows.address(flow, 1, address);
    const dst = formatAddress(family, address);
    const verdict = flows.verdict[flow];
    const bittorrent = verdict === VERDICT_BITTORRENT;
    const rule = bittorrent ? engine.ruleNames[flows.rule[flow]] : verdict === VERDICT_CLEAN ? 'inspected' : 'undecided';
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
      }) + '\n',
    );
    tally.flows++;
    if (tcp) tally.tcpFlows++;
    else tally.udpFlows++;
    if (bittorrent) tally.bittorrentByRule.set(rule, (tally.bittorrentByRule.get(rule) ?? 0) + 1);
  };

  const counts = engine.decoder.counts;
  for (const file of parsed.files) {
    currentFile = file;
    tally.files++;
    const unknownLinkBefore = counts[DECODED_UNKNOWN_LINK];
    const unsupportedLinkTypes = new Set<number>();
    const result = readCapture(file, (buf, off, capLen, _origLen, linkType, tsMs) => {
      const unknownBefore = counts[DECODED_UNKNOWN_LINK];
      engine.clock.nowMs = tsMs;
      engine.process(buf, off, capLen, linkType);
      if (counts[DECODED_UNKNOWN_LINK] !== unknownBefore) unsupportedLinkTypes.add(linkType);
    });
    tally.packets += result.packets;
    flows.clear();
    // Each capture is its own network: peers learned in one say nothing about the next.
    engine.peers.clear();
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
  }
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
    ['packets without a flow', `${counts[DECODED_OTHER_L4]} other IP, ${counts[DECODED_NOT_IP]} not IP`],
    ['malformed packets', counts[DECODED_MALFORMED]],
    ['unsupported link packets', counts[DECODED_UNKNOWN_LINK]],
    ['bad inputs', tally.badInputs.length],
    ...tally.badInputs.map((message): [string, string] => ['', message]),
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}\n`).join('');
}
