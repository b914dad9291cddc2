import { closeSync, fchmodSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

import type { DetectionEvent } from '../pipeline/pipeline.js';

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
  /** "dropped" inline, "monitor only (accepted; would drop)" with MONITOR_ONLY. */
  action: string;
  /** "ADDRESS for N s", "none", or with MONITOR_ONLY "would ban ADDRESS for N s". */
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
    action: decision.enforce ? 'dropped' : 'monitor only (accepted; would drop)',
    ban,
    reason: decision.reason,
    payload: event.payload,
  };
}

const SHOWN_BYTES = 512;
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

/** One record in the reference daemon's block format, so existing audit tooling keeps working. */
export function formatDetection(d: Detection): string {
  const shown = d.payload.subarray(0, SHOWN_BYTES);
  const size = `${d.payload.length} bytes${d.payload.length > SHOWN_BYTES ? ` (showing first ${SHOWN_BYTES} bytes)` : ''}`;
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

/**
 * The audit log of detections: appended to, readable by root only (it holds payload bytes of
 * users' traffic), reopened on request so logrotate can move it away.
 */
export class DetectionLog {
  private fd: number;

  constructor(readonly path: string) {
    this.fd = DetectionLog.open(path);
  }

  private static open(path: string): number {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const fd = openSync(path, 'a', 0o600);
    // The mode of open() applies only to a new file: an existing one is tightened too.
    fchmodSync(fd, 0o600);
    return fd;
  }

  write(detection: Detection): void {
    writeSync(this.fd, formatDetection(detection));
  }

  /** After logrotate moved the file: start a new one at the same path. */
  reopen(): void {
    const fresh = DetectionLog.open(this.path);
    closeSync(this.fd);
    this.fd = fresh;
  }

  close(): void {
    closeSync(this.fd);
  }
}
