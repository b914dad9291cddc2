/**
 * SIGHUP's configuration reload: which settings the running daemon takes over as they are (`live`)
 * and which only a restart applies (`restart`), with the variables that set each. A reload that
 * changes a restart-only setting applies the live ones, keeps the old value of the others and
 * says which variables wait for a restart; the next reload says it again until one happens.
 */
import { isDeepStrictEqual } from 'node:util';
import { CONFIG_VARIABLES, type Config } from '../config/config.js';

export type ConfigVariable = (typeof CONFIG_VARIABLES)[number];

export type Applied = 'live' | 'restart';

/** How each setting is applied, and why where it is not obvious; every Config field must be here. */
export const RELOAD: { readonly [K in keyof Config]-?: { readonly variables: readonly ConfigVariable[]; readonly applied: Applied } } = {
  // The queues, their brokers and the hooks in the built-in chains are set up once.
  queues: { variables: ['QUEUE_NUM'], applied: 'restart' },
  chains: { variables: ['CHAINS'], applied: 'restart' },
  queueMaxLen: { variables: ['QUEUE_MAXLEN'], applied: 'restart' },
  verdictTimeoutMs: { variables: ['VERDICT_TIMEOUT_MS'], applied: 'restart' },
  queueCoalesceUs: { variables: ['QUEUE_COALESCE_US'], applied: 'restart' },
  // The XDP program, its maps and their pins: the bans in them outlive the daemon, so they are not reloaded.
  interfaces: { variables: ['INTERFACE'], applied: 'restart' },
  xdpMode: { variables: ['XDP_MODE'], applied: 'restart' },
  banCapacity: { variables: ['BAN_CAPACITY'], applied: 'restart' },
  bpfPinDir: { variables: ['BPF_PIN_DIR'], applied: 'restart' },
  banEscalation: { variables: ['BAN_ESCALATION'], applied: 'restart' },
  // The tables are allocated at their size once, shared by every worker.
  flowCapacity: { variables: ['FLOW_CAPACITY'], applied: 'restart' },
  flowIdleTimeoutS: { variables: ['FLOW_IDLE_TIMEOUT'], applied: 'restart' },
  peerCacheSize: { variables: ['PEER_CACHE_SIZE'], applied: 'restart' },
  // How those sizes were chosen (from the variables or the machine's memory): follows them.
  tableSizing: { variables: [], applied: 'restart' },
  peerCacheTtlS: { variables: ['PEER_CACHE_TTL'], applied: 'restart' },
  // BLOCK_SOCKS adds a detector, and RULES_FILE (set or empty) one more: each flow's state would
  // no longer fit. The rules file's content is read again at every reload.
  blockSocks: { variables: ['BLOCK_SOCKS'], applied: 'restart' },
  rulesFile: { variables: ['RULES_FILE'], applied: 'restart' },
  // A hashlimit table keeps the rate it was made with while any rule uses it.
  rateBitsPerS: { variables: ['RATE'], applied: 'restart' },
  // Listening sockets and the outside services, opened once.
  metricsAddr: { variables: ['METRICS_ADDR'], applied: 'restart' },
  controlSocket: { variables: ['CONTROL_SOCKET'], applied: 'restart' },
  webhookUrl: { variables: ['WEBHOOK_URL'], applied: 'restart' },
  crowdsec: {
    variables: ['CROWDSEC_LAPI_URL', 'CROWDSEC_API_KEY', 'CROWDSEC_MACHINE_ID', 'CROWDSEC_MACHINE_PASSWORD', 'CROWDSEC_POLL_INTERVAL', 'CROWDSEC_ORIGINS', 'CROWDSEC_QUEUE_CAPACITY'],
    applied: 'restart',
  },
  // The policy, in every worker (and the fleet's never-ban lists).
  action: { variables: ['ACTION', 'MONITOR_ONLY'], applied: 'live' },
  cutEstablished: { variables: ['CUT_ESTABLISHED'], applied: 'live' },
  banDurationS: { variables: ['BAN_DURATION'], applied: 'live' },
  allowCidrs: { variables: ['ALLOW_CIDRS'], applied: 'live' },
  localCidrs: { variables: ['LOCAL_CIDRS'], applied: 'live' },
  banLocal: { variables: ['BAN_LOCAL'], applied: 'live' },
  banExempt: { variables: ['BAN_EXEMPT'], applied: 'live' },
  banRatePerMinute: { variables: ['BAN_RATE'], applied: 'live' },
  // The name detectors are rebuilt over the new list, in every worker.
  trackerDomains: { variables: ['TRACKER_DOMAINS'], applied: 'live' },
  // Rules of the BTWALL chain, replaced in one iptables-restore transaction.
  whitelistPorts: { variables: ['WHITELIST_PORTS'], applied: 'live' },
  inspectPackets: { variables: ['INSPECT_PACKETS'], applied: 'live' },
  // The control plane's own.
  logLevel: { variables: ['LOG_LEVEL'], applied: 'live' },
  detectionLog: { variables: ['DETECTION_LOG'], applied: 'live' },
  detectionLogFormat: { variables: ['DETECTION_LOG_FORMAT'], applied: 'live' },
  detectionLogPayloadBytes: { variables: ['DETECTION_LOG_PAYLOAD_BYTES'], applied: 'live' },
  statsIntervalS: { variables: ['STATS_INTERVAL'], applied: 'live' },
  cleanupIntervalS: { variables: ['CLEANUP_INTERVAL'], applied: 'live' },
};

const FIELDS = Object.keys(RELOAD) as (keyof Config)[];

/** What a reload changes, by setting. */
export interface ReloadPlan {
  /** The configuration to run with: the new one's live settings, the running one's restart-only settings. */
  config: Config;
  /** Live settings that change now. */
  live: (keyof Config)[];
  /** Settings whose new value waits for a restart (the running value stays). */
  restart: (keyof Config)[];
}

/** How `next` (a valid configuration) is applied over `running`. */
export function planReload(running: Config, next: Config): ReloadPlan {
  const config = { ...running };
  const live: (keyof Config)[] = [];
  const restart: (keyof Config)[] = [];
  for (const field of FIELDS) {
    if (isDeepStrictEqual(running[field], next[field])) continue;
    if (RELOAD[field].applied === 'restart') {
      restart.push(field);
      continue;
    }
    live.push(field);
    (config as Record<keyof Config, unknown>)[field] = next[field];
  }
  return { config, live, restart };
}

/**
 * The variables behind these settings that differ between two environments, for the log: of
 * CROWDSEC_*, the one that was edited; a setting changed with its variables as they were
 * (QUEUE_NUM=auto, its cores changed by taskset) is named by all of them.
 */
export function variablesOf(fields: readonly (keyof Config)[], before: NodeJS.ProcessEnv, after: NodeJS.ProcessEnv): ConfigVariable[] {
  return fields.flatMap((field) => {
    const all = RELOAD[field].variables;
    const edited = all.filter((name) => before[name] !== after[name]);
    return edited.length > 0 ? edited : all;
  });
}
