/**
 * The tables every queue worker of one daemon shares, so that what one queue learns every queue
 * knows at its next packet: proven peers, the peers listed to each host, the hosts that spoke
 * BitTorrent (MSE's context), BAN_RATE's counts. They
 * live in SharedArrayBuffers the main thread allocates once and hands to each worker (a restarted
 * worker gets the same ones back). Per-flow state stays in each worker: the kernel's
 * --queue-balance hash keeps both directions of a connection on one queue.
 */
import type { Config } from '../config/config.js';
import { PeerCache, TorrentingHosts, type TorrentingMemory } from '../flow/peers.js';
import { BanRateTable } from '../policy/ban-rate.js';
import { RATE_HOSTS } from '../policy/policy.js';

export interface SharedTables {
  proven: ArrayBufferLike;
  listed: ArrayBufferLike;
  torrenting: TorrentingMemory;
  banRate: ArrayBufferLike;
}

/** `shared`: SharedArrayBuffers for several threads; else private memory (a scan, a test). */
export function allocateTables(config: Config, shared: boolean): SharedTables {
  return {
    proven: PeerCache.allocate(config.peerCacheSize, false, shared),
    listed: PeerCache.allocate(config.peerCacheSize, true, shared),
    torrenting: TorrentingHosts.allocate(config.peerCacheSize, shared),
    banRate: BanRateTable.allocate(RATE_HOSTS, shared),
  };
}

/** What each table allocateTables makes takes, bytes, computed without allocating. */
export function sharedTableBytes(config: Pick<Config, 'peerCacheSize'>): Record<keyof SharedTables, number> {
  return {
    proven: PeerCache.bytesFor(config.peerCacheSize, false),
    listed: PeerCache.bytesFor(config.peerCacheSize, true),
    torrenting: TorrentingHosts.bytesFor(config.peerCacheSize),
    banRate: BanRateTable.bytesFor(RATE_HOSTS),
  };
}

/** What allocateTables takes together. */
export function tablesBytes(config: Pick<Config, 'peerCacheSize'>): number {
  return Object.values(sharedTableBytes(config)).reduce((sum, bytes) => sum + bytes, 0);
}
