/**
 * The two peer tables of an Engine (or a FlowRunner) by address text: `announced`, scoped to the
 * host a list was sent to, and `proven`, for every host.
 */
import type { PeerCache } from '../../src/flow/peers.js';
import { ipv4Address, ipv6Address } from './frames.js';

export interface PeerTables {
  readonly announced: PeerCache;
  readonly proven: PeerCache;
}

/** Family and bytes of an address written as text ("192.0.2.1", "2001:db8::1"). */
export function addressBytes(address: string): [family: 4 | 6, bytes: Uint8Array] {
  return address.includes(':') ? [6, Uint8Array.from(ipv6Address(address))] : [4, Uint8Array.from(ipv4Address(address))];
}

/** Whether endpoint:port is listed (by a tracker, a DHT node, PEX...) to `host`, and to it alone counts. */
export function listedTo(tables: Pick<PeerTables, 'announced'>, endpoint: string, port: number, host: string): boolean {
  const [family, bytes] = addressBytes(endpoint);
  const [scopeFamily, scope] = addressBytes(host);
  return tables.announced.has(family, bytes, 0, port, scopeFamily, scope, 0);
}

/** Lists endpoint:port to `host` by hand, as a detector's peer list reaching `host` would. */
export function listTo(tables: Pick<PeerTables, 'announced'>, endpoint: string, port: number, host: string): boolean {
  const [family, bytes] = addressBytes(endpoint);
  const [scopeFamily, scope] = addressBytes(host);
  return tables.announced.add(family, bytes, 0, port, scopeFamily, scope, 0);
}

/** Whether endpoint:port is proven a peer (for every host). */
export function isProven(tables: Pick<PeerTables, 'proven'>, endpoint: string, port: number): boolean {
  const [family, bytes] = addressBytes(endpoint);
  return tables.proven.has(family, bytes, 0, port);
}

/** Proves endpoint:port a peer by hand, as the policy does after evidence that would ban it. */
export function prove(tables: Pick<PeerTables, 'proven'>, endpoint: string, port: number): boolean {
  const [family, bytes] = addressBytes(endpoint);
  return tables.proven.add(family, bytes, 0, port);
}
