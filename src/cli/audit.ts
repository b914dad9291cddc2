import { parseArgs } from 'node:util';
import { Audit, type AuditQuery, type AuditReport } from '../audit/query.js';
import { readLogFile, rotatedFiles, type ReadProblem } from '../audit/read.js';
import { parseCidr, withConfig, type Cidr } from '../config/config.js';
import { columns } from './output.js';
import { EXIT_USAGE, parseUsage, UsageError } from './usage.js';

export const AUDIT_USAGE = `usage: btwall audit [--since T] [--until T] [--local ADDR] [--remote ADDR]
                    [--at T [--window D]] [--json] [FILE...]

Reads detection logs (DETECTION_LOG_FORMAT=json records; gzip files too) and prints, for the
records that match: per local host, its detections by rule and the first and last time; per
ban, when, the address and why. Without FILE, reads DETECTION_LOG and its rotated copies
(DETECTION_LOG.1, .2.gz, -YYYYMMDD, ...).

  --since T, --until T    only records from/until T (RFC 3339, e.g. 2026-11-21T09:55:00Z; without
                          an offset, this machine's local time; a date alone is its midnight)
  --local ADDR            only records whose local end is ADDR (an address or a CIDR)
  --remote ADDR           only records whose remote end is ADDR (an address or a CIDR)
  --at T                  with --remote: which local hosts talked BitTorrent to ADDR around T
                          (a copyright notice's address and time), closest first
  --window D              how far around --at (seconds, or 90s, 30m, 2h, 1d; default 1h)
  --json                  one JSON object on stdout: {"hosts":[{"local","detections","rules",
                          "first","last"}],"bans":[{"remote","time","rule","reason",...}],...}

A line that is not a whole record (a truncated last line, another format) is reported on
stderr with its file and line, and the rest is read. Exit status: 0 every line read, 1 some
input was unreadable or corrupt (the answer covers the rest), 64 bad usage, 78 a bad variable.`;

const TIME = /^(\d{4}-\d{2}-\d{2})([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/i;

/** An RFC 3339 time, or a date and time without offset (local time), or a date (its local midnight). */
export function parseTime(option: string, text: string): number {
  const match = TIME.exec(text.trim());
  // Date.parse reads a date alone as UTC but a date and time as local: midnight is made explicit.
  const ms = match ? Date.parse(match[2] === undefined && match[5] === undefined ? `${match[1]}T00:00` : text.trim()) : NaN;
  if (Number.isNaN(ms)) throw new UsageError(`${option} takes a time like 2026-11-21T09:55:00Z, got ${JSON.stringify(text)}`);
  return ms;
}

const UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 };

export function parseDuration(option: string, text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!match || Number(match[1]) === 0) throw new UsageError(`${option} takes a duration like 900, 30m or 2h, got ${JSON.stringify(text)}`);
  return Number(match[1]) * UNITS[match[2]] * 1000;
}

function parseAddresses(option: string, text: string): Cidr[] {
  const cidr = parseCidr(text.trim());
  if (cidr === null) throw new UsageError(`${option} takes an IPv4 or IPv6 address or CIDR, got ${JSON.stringify(text)}`);
  return [cidr];
}

interface AuditArgs {
  query: AuditQuery;
  /** --remote as given, for the --at table's title. */
  remote: string;
  json: boolean;
  files: string[];
}

function parseAuditArgs(args: string[]): AuditArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        since: { type: 'string' },
        until: { type: 'string' },
        local: { type: 'string' },
        remote: { type: 'string' },
        at: { type: 'string' },
        window: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  const query: AuditQuery = {};
  if (v.since !== undefined) query.sinceMs = parseTime('--since', v.since);
  if (v.until !== undefined) query.untilMs = parseTime('--until', v.until);
  if (v.local !== undefined) query.local = parseAddresses('--local', v.local);
  if (v.remote !== undefined) query.remote = parseAddresses('--remote', v.remote);
  if (v.at !== undefined) {
    if (v.remote === undefined) throw new UsageError('--at asks who talked to an address then: give the address with --remote');
    query.at = { timeMs: parseTime('--at', v.at), windowMs: parseDuration('--window', v.window ?? '1h') };
  } else if (v.window !== undefined) throw new UsageError('--window goes with --at');
  return { query, remote: v.remote ?? '', json: v.json ?? false, files: parsed.positionals };
}

export async function auditCommand(args: string[]): Promise<number> {
  const parsed = parseUsage('audit', AUDIT_USAGE, () => parseAuditArgs(args));
  if (parsed === null) return EXIT_USAGE;
  if (parsed.files.length > 0) return audit(parsed, parsed.files);
  return withConfig(process.env, (config) => {
    if (config.detectionLog === '') {
      process.stderr.write('btwall audit: DETECTION_LOG is empty (no detection log): name the files to read\n');
      return EXIT_USAGE;
    }
    const files = rotatedFiles(config.detectionLog);
    if (files.length === 0) {
      process.stderr.write(`btwall audit: no detection log at ${config.detectionLog} (DETECTION_LOG), nor rotated copies of it\n`);
      return 1;
    }
    return audit(parsed, files);
  });
}

/** Problems printed per file before the rest are only counted. */
const PROBLEMS_SHOWN = 10;

async function audit(parsed: AuditArgs, files: string[]): Promise<number> {
  const query = new Audit(parsed.query);
  let problems = 0;
  for (const file of files) {
    let inFile = 0;
    const report = (problem: ReadProblem) => {
      problems++;
      if (++inFile <= PROBLEMS_SHOWN) process.stderr.write(`btwall audit: ${problem.file}${problem.line ? `:${problem.line}` : ''}: ${problem.message}\n`);
    };
    await readLogFile(file, (entry) => query.add(entry), report);
    if (inFile > PROBLEMS_SHOWN) process.stderr.write(`btwall audit: ${file}: ${inFile - PROBLEMS_SHOWN} more bad lines\n`);
  }
  const result = query.report();
  process.stdout.write(parsed.json ? `${JSON.stringify(result)}\n` : tables(result, parsed.remote));
  return problems > 0 ? 1 : 0;
}

const ruleCounts = (rules: Record<string, number>) =>
  Object.entries(rules)
    .map(([rule, n]) => `${rule} ${n}`)
    .join(', ');

/** The report for people: a table of hosts, one of bans, and what may be missing. */
function tables(report: AuditReport, remote: string): string {
  const out: string[] = [];
  if (report.at) {
    out.push(`Local hosts that talked BitTorrent with ${remote} within ${report.at.window_s} s of ${report.at.time}, closest first:`);
    out.push(report.hosts.length === 0 ? '  none' : columns(['LOCAL', 'NEAREST', 'DETECTIONS', 'FIRST', 'LAST', 'RULES'], report.hosts.map((h) => [h.local, h.nearest ?? '', h.detections, h.first, h.last, ruleCounts(h.rules)])));
  } else {
    out.push(`Detections by local host (${report.records} records):`);
    out.push(report.hosts.length === 0 ? '  none' : columns(['LOCAL', 'DETECTIONS', 'FIRST', 'LAST', 'RULES'], report.hosts.map((h) => [h.local, h.detections, h.first, h.last, ruleCounts(h.rules)])));
  }
  out.push('', `Bans (${report.bans.length}; "would ban" under MONITOR_ONLY):`);
  out.push(
    report.bans.length === 0
      ? '  none'
      : columns(['TIME', 'BANNED', 'LOCAL', 'RULE', 'BAN', 'REASON'], report.bans.map((b) => [b.time, b.remote, b.local, b.rule, b.action === 'monitor' ? `would ban ${b.duration_s} s` : `${b.duration_s} s`, b.reason])),
  );
  if (report.lost_records > 0) out.push('', `${report.lost_records} records were lost in this period (the daemon could not write them: full or failing disk); the answer may be incomplete.`);
  return `${out.join('\n')}\n`;
}
