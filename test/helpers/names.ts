/** Builders of the messages that carry names: DNS queries and responses (RFC 1035), TLS ClientHellos (RFC 8446). */
import { ascii, concat, u16, u32 } from './frames.js';

export function dnsName(name: string): number[] {
  return [...name.split('.').flatMap((label) => [label.length, ...ascii(label)]), 0];
}

export type Answer = [owner: number[], type: number, rdata: number[]];

/** A DNS message: a query (no answers) or, with `answers`, a response. */
export function dnsMessage(name: string, answers?: Answer[], flags = answers ? 0x8180 : 0x0100): Uint8Array {
  const list = answers ?? [];
  return concat(
    [...u16(0x1234), ...u16(flags), ...u16(1), ...u16(list.length), 0, 0, 0, 0],
    dnsName(name),
    [...u16(1), ...u16(1)],
    ...list.map(([owner, type, rdata]) => [...owner, ...u16(type), ...u16(1), ...u32(300), ...u16(rdata.length), ...rdata]),
  );
}

/** Compression pointer to the question name (offset 12). */
export const TO_QUESTION = [0xc0, 12];

export interface HelloOptions {
  /** Bytes of a padding extension placed before server_name (moves it to a later segment). */
  paddingBefore?: number;
  /** Leave out server_name. */
  noServerName?: boolean;
}

/** A TLS 1.3-style ClientHello record for `serverName`. */
export function clientHello(serverName: string, options: HelloOptions = {}): Uint8Array {
  const name = ascii(serverName);
  const sni = [...u16(0), ...u16(name.length + 5), ...u16(name.length + 3), 0, ...u16(name.length), ...name];
  const padding = options.paddingBefore === undefined ? [] : [...u16(0x15), ...u16(options.paddingBefore), ...new Array<number>(options.paddingBefore).fill(0)];
  const versions = [...u16(0x2b), ...u16(3), 2, 0x03, 0x04];
  const extensions = [...padding, ...(options.noServerName ? [] : sni), ...versions];
  const body = [0x03, 0x03, ...new Array<number>(32).fill(0xab), 32, ...new Array<number>(32).fill(0xcd), ...u16(4), 0x13, 0x01, 0x13, 0x02, 1, 0, ...u16(extensions.length), ...extensions];
  const handshake = [1, 0, ...u16(body.length), ...body];
  return Uint8Array.from([0x16, 0x03, 0x01, ...u16(handshake.length), ...handshake]);
}
