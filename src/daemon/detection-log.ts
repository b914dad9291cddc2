import { auditRecord, rfc3339, type LostNote } from '../audit/record.js';
import type { Config } from '../config/config.js';
import type { DetectionEvent } from '../pipeline/pipeline.js';
import { openLogFile, RecordFile, type LossReport, type Losses } from './log-file.js';

/** What one detection record says; written only when a flow is first found to be BitTorrent. */
export interface Detection {
  timeMs: number;
  interface: string;
  protocol: 'TCP' | 'UDP';
  source: string;
  sourcePort: number;
  destination: string;
  destinationPort: number;
  rule: string;
  /** The evidence's strength and whose bytes matched: "exact, from the responder". */
  evidence: string;
  /** "dropped" inline, "throttled to RATE" with ACTION=throttle, "monitor only (accepted; would drop)" with ACTION=monitor. */
  action: string;
  /** "ADDRESS for N s", "none", or with ACTION=monitor "would ban ADDRESS for N s". */
  ban: string;
  /** The policy's words for the ban or its absence. */
  reason: string;
  /** The payload of the packet that decided the flow. */
  payload: Uint8Array;
}

/** The record of a detection the pipeline reported, on the interface the main thread named. */
export function detectionRecord(event: DetectionEvent, interfaceName: string): Detection {
  const { decision } = event;
  const ban = decision.ban === null ? 'none' : `${decision.enforce ? '' : 'would ban '}${decision.ban.address} for ${decision.ban.durationS} s`;
  return {
    timeMs: event.timeMs,
    interface: interfaceName,
    protocol: event.l4 === 'tcp' ? 'TCP' : 'UDP',
    source: event.initiator,
    sourcePort: event.initiatorPort,
    destination: event.responder,
    destinationPort: event.responderPort,
    rule: event.rule,
    evidence: `${event.strength}, from the ${event.producer}${event.tunnelled ? ' (inside a tunnel)' : ''}`,
    action: decision.enforce
      ? decision.action === 'throttle'
        ? 'throttled to RATE'
        : 'dropped'
      : decision.action === 'accept'
        ? 'monitor (accepted: the rule only watches)'
        : `monitor only (accepted; would ${decision.action === 'throttle' ? 'throttle' : 'drop'})`,
    ban,
    reason: decision.reason,
    payload: event.payload,
  };
}

const RULE = '='.repeat(80);

function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function timestamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const printable = (b: number) => b >= 0x20 && b <= 0x7e;

/** hexdump -C style: offset, two groups of eight bytes, the printable bytes between bars. */
export function hexDump(bytes: Uint8Array): string {
  if (bytes.length === 0) return '(empty)';
  const lines: string[] = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = bytes.subarray(at, at + 16);
    let hex = '';
    for (let i = 0; i < 16; i++) hex += (i < row.length ? row[i].toString(16).padStart(2, '0') + ' ' : '   ') + (i === 7 ? ' ' : '');
    lines.push(`${at.toString(16).padStart(8, '0')}  ${hex} |${String.fromCharCode(...row.map((b) => (printable(b) ? b : 0x2e)))}|`);
  }
  return lines.join('\n');
}

function asciiDump(bytes: Uint8Array): string {
  if (bytes.length === 0) return '(empty)';
  return String.fromCharCode(...bytes.map((b) => (printable(b) || b === 0x0a || b === 0x0d || b === 0x09 ? b : 0x2e)));
}

/**
 * One record in the reference daemon's block format (DETECTION_LOG_FORMAT=text), for people and
 * the reference daemon's tooling; at most `shownBytes` of the payload are dumped.
 */
export function formatDetection(d: Detection, shownBytes: number): string {
  const shown = d.payload.subarray(0, shownBytes);
  const size = `${d.payload.length} bytes${d.payload.length > shownBytes ? ` (showing first ${shownBytes} bytes)` : ''}`;
  return [
    RULE,
    `Timestamp:    ${timestamp(d.timeMs)}`,
    `Interface:    ${d.interface}`,
    `Protocol:     ${d.protocol}`,
    `Source:       ${endpoint(d.source, d.sourcePort)}`,
    `Destination:  ${endpoint(d.destination, d.destinationPort)}`,
    `Detection:    ${d.rule}`,
    `Evidence:     ${d.evidence}`,
    `Action:       ${d.action}`,
    `Ban:          ${d.ban}`,
    `Reason:       ${d.reason}`,
    `Payload Size: ${size}`,
    '',
    'Hex Dump:',
    hexDump(shown),
    '',
    'ASCII (printable only):',
    asciiDump(shown),
    '',
    '',
  ].join('\n');
}

/** The note of records lost, in each format: written ahead of the first record that could be written again. */
function lostNote(format: Config['detectionLogFormat'], losses: Losses, nowMs: number): string {
  if (format === 'json') {
    const note: LostNote = { time: rfc3339(nowMs), lost_records: losses.count, first_lost: rfc3339(losses.firstMs), error: losses.error };
    return `${JSON.stringify(note)}\n`;
  }
  return [RULE, `Lost records: ${losses.count} not written, from ${timestamp(losses.firstMs)} on (${losses.error})`, '', ''].join('\n');
}

export interface DetectionLogOptions {
  path: string;
  format: Config['detectionLogFormat'];
  /** Most payload bytes a record keeps (DETECTION_LOG_PAYLOAD_BYTES). */
  payloadBytes: number;
}

/**
 * The audit log of detections: one record per detection, each written whole in one write,
 * readable by root only (it holds payload bytes of users' traffic), reopened on request so
 * logrotate can move it away. Opening refuses unsafe paths (UnsafeLogError); records the disk
 * refuses are counted and reported through `report`, never thrown.
 */
export class DetectionLog {
  private readonly file: RecordFile;

  constructor(
    readonly options: DetectionLogOptions,
    report: LossReport,
  ) {
    this.file = new RecordFile(openLogFile(options.path), (losses, nowMs) => lostNote(options.format, losses, nowMs), report);
  }

  /** Records lost since the last one written. */
  get lost(): number {
    return this.file.lost;
  }

  /** The record of a detection seen on `interfaceName` (null: unknown); true when it was written. */
  write(event: DetectionEvent, interfaceName: string | null): boolean {
    const { format, payloadBytes } = this.options;
    const text = format === 'json' ? `${JSON.stringify(auditRecord(event, interfaceName, payloadBytes))}\n` : formatDetection(detectionRecord(event, interfaceName ?? '-'), payloadBytes);
    return this.file.append(text, event.timeMs);
  }

  /** After logrotate moved the file: start a new one at the same path (UnsafeLogError: the old one stays). */
  reopen(): void {
    this.file.replace(openLogFile(this.options.path));
  }

  close(): void {
    this.file.close();
  }
}
