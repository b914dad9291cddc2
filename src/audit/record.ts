/**
 * The detection log's machine-readable record (DETECTION_LOG_FORMAT=json): one JSON object per
 * line and decision, written by the daemon and read back by `btwall audit`. README.md documents
 * every field; this file is the one definition of both sides.
 */
import type { DetectionEvent } from '../pipeline/pipeline.js';

export interface Endpoint {
  address: string;
  port: number;
}

export interface AuditRecord {
  /** RFC 3339, UTC, with milliseconds. */
  time: string;
  /** The gateway's user (LOCAL_CIDRS); with both or neither end local (`local_ends`), the initiator. */
  local: Endpoint;
  remote: Endpoint;
  l4: 'tcp' | 'udp';
  /** The interface the deciding packet came in on; null when unknown. */
  interface: string | null;
  rule: string;
  strength: string;
  /** Who produced the bytes that matched. */
  direction: 'local' | 'remote';
  /** Who opened the flow. */
  initiator: 'local' | 'remote';
  /** `drop`, `throttle` (ACTION=throttle: limited to RATE), or `monitor` (ACTION=monitor: accepted). */
  action: string;
  /** The ban the policy made (with `monitor`: would have made), or null. */
  ban: { address: string; duration_s: number } | null;
  /** The policy's words for the ban or for the absence of one. */
  reason: string;
  flow_packets: number;
  tunnelled: boolean;
  /** How many of the flow's ends are in LOCAL_CIDRS: 1 normally; 0 or 2 make `local` the initiator. */
  local_ends: 0 | 1 | 2;
  /** The deciding packet's payload size; `payload` holds at most DETECTION_LOG_PAYLOAD_BYTES of it. */
  payload_bytes: number;
  payload: string;
}

/** Written before the next record when earlier ones could not be (a full or failing disk). */
export interface LostNote {
  time: string;
  lost_records: number;
  /** When the first of them could not be written. */
  first_lost: string;
  error: string;
}

export const rfc3339 = (ms: number): string => new Date(ms).toISOString();

/** The record of one detection, as seen on `interfaceName`, its payload cut to `payloadBytes`. */
export function auditRecord(event: DetectionEvent, interfaceName: string | null, payloadBytes: number): AuditRecord {
  const initiator = { address: event.initiator, port: event.initiatorPort };
  const responder = { address: event.responder, port: event.responderPort };
  // The responder is the local end only when it alone is local.
  const localIsInitiator = event.initiatorLocal || !event.responderLocal;
  const side = (end: 'initiator' | 'responder') => ((end === 'initiator') === localIsInitiator ? 'local' : 'remote');
  const { decision } = event;
  return {
    time: rfc3339(event.timeMs),
    local: localIsInitiator ? initiator : responder,
    remote: localIsInitiator ? responder : initiator,
    l4: event.l4,
    interface: interfaceName,
    rule: event.rule,
    strength: event.strength,
    direction: side(event.producer),
    initiator: side('initiator'),
    action: decision.enforce ? decision.action : 'monitor',
    ban: decision.ban === null ? null : { address: decision.ban.address, duration_s: decision.ban.durationS },
    reason: decision.reason,
    flow_packets: event.flowPackets,
    tunnelled: event.tunnelled,
    local_ends: ((event.initiatorLocal ? 1 : 0) + (event.responderLocal ? 1 : 0)) as 0 | 1 | 2,
    payload_bytes: event.payload.length,
    payload: Buffer.from(event.payload.buffer, event.payload.byteOffset, Math.min(event.payload.length, payloadBytes)).toString('hex'),
  };
}

/** A line of the log that is not a record btwall wrote, with what is wrong with it. */
export class RecordError extends Error {}

export type LogEntry = { kind: 'detection'; record: AuditRecord; timeMs: number } | { kind: 'lost'; note: LostNote; timeMs: number };

type Json = Record<string, unknown>;

function field<T>(object: Json, name: string, is: (value: unknown) => boolean, what: string): T {
  if (!is(object[name])) throw new RecordError(object[name] === undefined ? `no "${name}"` : `"${name}" is not ${what}`);
  return object[name] as T;
}

const isString = (v: unknown) => typeof v === 'string';
const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
const isEndpoint = (v: unknown) => typeof v === 'object' && v !== null && isString((v as Json).address) && isCount((v as Json).port);
const isBan = (v: unknown) => v === null || (typeof v === 'object' && isString((v as Json).address) && isCount((v as Json).duration_s));

function time(object: Json, name: string): number {
  const text = field<string>(object, name, isString, 'a time');
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new RecordError(`"${name}" is not a time: ${JSON.stringify(text)}`);
  return ms;
}

/**
 * One line of a json detection log: a detection record or a note of lost records. Throws
 * RecordError saying what is wrong with anything else (a truncated line, another format).
 */
export function parseLogLine(line: string): LogEntry {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw new RecordError(`not a whole JSON record (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RecordError('not a JSON object');
  const object = value as Json;
  const timeMs = time(object, 'time');
  if ('lost_records' in object) {
    field(object, 'lost_records', isCount, 'a count');
    time(object, 'first_lost');
    return { kind: 'lost', note: object as unknown as LostNote, timeMs };
  }
  field(object, 'local', isEndpoint, 'an address and port');
  field(object, 'remote', isEndpoint, 'an address and port');
  for (const name of ['rule', 'action', 'reason']) field(object, name, isString, 'a string');
  field(object, 'ban', isBan, 'an address and duration_s, or null');
  return { kind: 'detection', record: object as unknown as AuditRecord, timeMs };
}
