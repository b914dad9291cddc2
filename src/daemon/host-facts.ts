import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Cidr } from '../config/config.js';
import type { HostFacts } from '../policy/settings.js';

/**
 * Resolver files: the usual one, and systemd-resolved's list of the upstream servers that its
 * stub (127.0.0.53, in the usual one) forwards to.
 */
const RESOLV_CONF_FILES = ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf'];

function host(address: string): Cidr | null {
  const bare = address.split('%')[0];
  const family = isIP(bare);
  return family === 0 ? null : { family: family as 4 | 6, address: bare, prefix: family === 4 ? 32 : 128 };
}

/** The nameserver lines of a resolv.conf text. */
export function resolversIn(text: string): Cidr[] {
  const found: Cidr[] = [];
  for (const line of text.split('\n')) {
    const [keyword, address] = line.trim().split(/\s+/);
    const cidr = keyword === 'nameserver' && address !== undefined ? host(address) : null;
    if (cidr !== null) found.push(cidr);
  }
  return found;
}

/** This host's addresses and resolvers, read now (they change: call again on every sweep). */
export function readHostFacts(): HostFacts {
  const resolvers: Cidr[] = [];
  for (const file of RESOLV_CONF_FILES) {
    try {
      resolvers.push(...resolversIn(readFileSync(file, 'utf8')));
    } catch {
      // A missing file lists no resolver.
    }
  }
  const ownAddresses: Cidr[] = [];
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) {
      const cidr = host(a.address);
      if (cidr !== null) ownAddresses.push(cidr);
    }
  }
  return { ownAddresses, resolvers };
}
