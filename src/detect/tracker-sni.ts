import { GIVE_UP, MATCH, MORE, OVER_TCP, type Detector, type InspectContext, STRENGTH_NAME } from './detector.js';
import { DEFAULT_DOMAIN_LIST, MAX_NAME_LENGTH, type DomainList } from './domains.js';

/*
 * TLS ClientHello server_name (RFC 8446 4.1.2, RFC 6066 3), parsed as a stream: a ClientHello
 * grown past one segment (post-quantum key shares, randomised extension order) may carry its
 * server name in the second or third segment.
 */
const TLS_HANDSHAKE_RECORD = 0x16;
const TLS_CLIENT_HELLO = 1;
const TLS_VERSION_MAJOR = 3;
const VERSION_AND_RANDOM_LEN = 34;
const MAX_SESSION_ID_LEN = 32;
const EXTENSION_SERVER_NAME = 0;
const SERVER_NAME_HOST = 0;

/** Parser phases, in stream order. A phase either reads a big-endian field or skips bytes. */
const RECORD_TYPE = 1;
const RECORD_VERSION = 2;
const RECORD_LENGTH = 3;
const HANDSHAKE_TYPE = 4;
const HANDSHAKE_LENGTH = 5;
const SKIP_VERSION_AND_RANDOM = 6;
const SESSION_ID_LENGTH = 7;
const SKIP_SESSION_ID = 8;
const CIPHER_SUITES_LENGTH = 9;
const SKIP_CIPHER_SUITES = 10;
const COMPRESSION_LENGTH = 11;
const SKIP_COMPRESSION = 12;
const EXTENSIONS_LENGTH = 13;
const EXTENSION_TYPE = 14;
const EXTENSION_LENGTH = 15;
const SKIP_EXTENSION = 16;
const SERVER_NAME_EXTENSION_LENGTH = 17;
const SERVER_NAME_LIST_LENGTH = 18;
const SERVER_NAME_TYPE = 19;
const SERVER_NAME_LENGTH = 20;
const SERVER_NAME = 21;
/** Width in bytes of the field each phase reads; 0 for the phases that skip or take the name. */
const FIELD_WIDTH = new Uint8Array(SERVER_NAME + 1);
for (const [phase, width] of [
  [RECORD_TYPE, 1], [RECORD_VERSION, 2], [RECORD_LENGTH, 2], [HANDSHAKE_TYPE, 1], [HANDSHAKE_LENGTH, 3],
  [SKIP_VERSION_AND_RANDOM, 0], [SESSION_ID_LENGTH, 1], [SKIP_SESSION_ID, 0], [CIPHER_SUITES_LENGTH, 2],
  [SKIP_CIPHER_SUITES, 0], [COMPRESSION_LENGTH, 1], [SKIP_COMPRESSION, 0], [EXTENSIONS_LENGTH, 2],
  [EXTENSION_TYPE, 2], [EXTENSION_LENGTH, 2], [SKIP_EXTENSION, 0], [SERVER_NAME_EXTENSION_LENGTH, 2],
  [SERVER_NAME_LIST_LENGTH, 2], [SERVER_NAME_TYPE, 1], [SERVER_NAME_LENGTH, 2], [SERVER_NAME, 0],
]) FIELD_WIDTH[phase] = width;
const PHASE_MASK = 0x7f;
/** Set in the phase byte when the ClientHello comes from the responder. */
const FROM_RESPONDER = 0x80;

/** Per-flow state of the ClientHello parser. */
const PHASE = 0;
/** TCP sequence number of the next byte to parse. */
const NEXT_SEQ = 1;
/** Bytes of the current field still to read. */
const FIELD_LEFT = 5;
/** 24 bits: the field being read, or the bytes left to skip or of the name. */
const VALUE = 6;
/** 24 bits: bytes of the extensions block left; once in the name, the matcher state. */
const EXTENSIONS_LEFT = 9;
const SNI_STATE_BYTES = 12;
/** Payload packets: a ClientHello in up to three segments, with room for a retransmission. */
const SNI_BUDGET = 6;

function readU24(state: Uint8Array, at: number): number {
  return (state[at] << 16) | (state[at + 1] << 8) | state[at + 2];
}

function writeU24(state: Uint8Array, at: number, value: number): void {
  state[at] = value >> 16;
  state[at + 1] = (value >> 8) & 0xff;
  state[at + 2] = value & 0xff;
}

/**
 * A TLS ClientHello (first bytes of the flow, from either side) whose server_name is a listed
 * name. The record, handshake and extension lengths are walked as they arrive, over as many
 * segments as the ClientHello takes, in sequence order (retransmitted bytes are skipped, a segment
 * after a gap waits for the gap to be filled). Bannable: the other end is the named tracker or
 * service. Budget: SNI_BUDGET payload packets.
 */
export function createTrackerSniDetector(list: DomainList): Detector {
  /** Runs the parser over buf[from, end). */
  const parse = (ctx: InspectContext, buf: Uint8Array, from: number, end: number): number => {
    const state = ctx.state;
    const base = ctx.stateOff;
    let phase = state[base + PHASE] & PHASE_MASK;
    let fieldLeft = state[base + FIELD_LEFT];
    let value = readU24(state, base + VALUE);
    let extensionsLeft = readU24(state, base + EXTENSIONS_LEFT);
    let i = from;
    while (i < end) {
      if (phase === SERVER_NAME) {
        // extensionsLeft holds the matcher state from here on.
        for (; i < end && value > 0; i++, value--) {
          extensionsLeft = list.nameByte(extensionsLeft, buf[i]);
          if (extensionsLeft < 0) return GIVE_UP;
        }
        if (value === 0) return list.nameEnd(extensionsLeft) >= 0 ? MATCH : GIVE_UP;
        break;
      }
      if (FIELD_WIDTH[phase] === 0) {
        const skipped = Math.min(value, end - i);
        i += skipped;
        value -= skipped;
        if (value > 0) break;
        if (phase === SKIP_EXTENSION) {
          if (extensionsLeft === 0) return GIVE_UP;
          phase = EXTENSION_TYPE;
        } else phase++;
        fieldLeft = FIELD_WIDTH[phase];
        continue;
      }
      value = (value << 8) | buf[i++];
      if (--fieldLeft > 0) continue;
      // A whole field is read: check it and choose what comes next.
      let next = phase + 1;
      switch (phase) {
        case RECORD_TYPE:
          if (value !== TLS_HANDSHAKE_RECORD) return GIVE_UP;
          break;
        case RECORD_VERSION:
          if (value >> 8 !== TLS_VERSION_MAJOR) return GIVE_UP;
          break;
        case HANDSHAKE_TYPE:
          if (value !== TLS_CLIENT_HELLO) return GIVE_UP;
          break;
        case HANDSHAKE_LENGTH:
          value = VERSION_AND_RANDOM_LEN;
          break;
        case SESSION_ID_LENGTH:
          if (value > MAX_SESSION_ID_LEN) return GIVE_UP;
          break;
        case CIPHER_SUITES_LENGTH:
          if (value < 2 || (value & 1) !== 0) return GIVE_UP;
          break;
        case COMPRESSION_LENGTH:
          if (value < 1) return GIVE_UP;
          break;
        case EXTENSIONS_LENGTH:
          extensionsLeft = value;
          if (extensionsLeft < 4) return GIVE_UP;
          break;
        case EXTENSION_TYPE:
          if (value === EXTENSION_SERVER_NAME) next = SERVER_NAME_EXTENSION_LENGTH;
          break;
        case EXTENSION_LENGTH:
        case SERVER_NAME_EXTENSION_LENGTH:
          extensionsLeft -= 4 + value;
          if (extensionsLeft < 0) return GIVE_UP;
          break;
        case SERVER_NAME_TYPE:
          if (value !== SERVER_NAME_HOST) return GIVE_UP;
          break;
        case SERVER_NAME_LENGTH:
          if (value < 1 || value > MAX_NAME_LENGTH) return GIVE_UP;
          extensionsLeft = list.nameStart;
          break;
        default:
          break;
      }
      phase = next;
      fieldLeft = FIELD_WIDTH[phase];
      // A skip phase (or the name) takes its byte count from the field just read.
      if (fieldLeft !== 0) value = 0;
    }
    state[base + PHASE] = (state[base + PHASE] & FROM_RESPONDER) | phase;
    state[base + FIELD_LEFT] = fieldLeft;
    writeU24(state, base + VALUE, value);
    writeU24(state, base + EXTENSIONS_LEFT, extensionsLeft);
    return MORE;
  };

  return {
    name: 'tracker-sni',
    transports: OVER_TCP,
    budget: SNI_BUDGET,
    stateBytes: SNI_STATE_BYTES,
    strength: STRENGTH_NAME,
    producerIsPeer: false,
    inspect(ctx: InspectContext): number {
      const pkt = ctx.pkt;
      const buf = pkt.buf;
      const state = ctx.state;
      const base = ctx.stateOff;
      const payloadStart = pkt.payloadOff;
      const end = payloadStart + pkt.payloadLen;
      let from = payloadStart;
      // Sequence numbers stay in this function: a 32-bit value passed to a call would be boxed.
      const seq = pkt.tcpSeq;
      if (ctx.flowIndex === 0) {
        if (buf[payloadStart] !== TLS_HANDSHAKE_RECORD) return GIVE_UP;
        state[base + PHASE] = RECORD_TYPE | (ctx.dir === 1 ? FROM_RESPONDER : 0);
        state[base + FIELD_LEFT] = FIELD_WIDTH[RECORD_TYPE];
      } else {
        if ((state[base + PHASE] & FROM_RESPONDER) !== (ctx.dir === 1 ? FROM_RESPONDER : 0)) return MORE;
        const expected = (state[base + NEXT_SEQ] << 24) | (state[base + NEXT_SEQ + 1] << 16) | (state[base + NEXT_SEQ + 2] << 8) | state[base + NEXT_SEQ + 3];
        const ahead = (seq - expected) | 0;
        // A segment after a gap waits for the retransmission; one that repeats parsed bytes skips them.
        if (ahead > 0) return MORE;
        from -= ahead;
        if (from >= end) return MORE;
      }
      const outcome = parse(ctx, buf, from, end);
      const nextSeq = (seq + (end - payloadStart)) >>> 0;
      state[base + NEXT_SEQ] = nextSeq >>> 24;
      state[base + NEXT_SEQ + 1] = (nextSeq >>> 16) & 0xff;
      state[base + NEXT_SEQ + 2] = (nextSeq >>> 8) & 0xff;
      state[base + NEXT_SEQ + 3] = nextSeq & 0xff;
      return outcome;
    },
  };
}

/** Over DEFAULT_DOMAINS: the registry's. */
export const trackerSniDetector = createTrackerSniDetector(DEFAULT_DOMAIN_LIST);
