import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, loadConfig, type Config } from '../src/config/config.js';
import { planReload, RELOAD, variablesOf } from '../src/daemon/reload.js';
import { CHAIN_SETTINGS, replaceChainCommands } from '../src/firewall/rules.js';

/** A machine with memory enough for the largest default tables on one queue or two: sizes do not follow the cores. */
const machine = (cores: number) => ({ cores, memory: { bytes: 4 * 2 ** 30, from: 'MemTotal' as const } });

/** How the table sizes were chosen follows the size variables: it is not a setting of its own. */
const DERIVED = 'tableSizing';
const own = (settings: string[]) => settings.filter((s) => s !== DERIVED);

/** For every setting, variables that change it (and only it) from the defaults with QUEUE_NUM=0. */
const ANOTHER: Record<Exclude<keyof Config, typeof DERIVED>, Record<string, string>> = {
  queues: { QUEUE_NUM: '3' },
  interfaces: { INTERFACE: 'eth9' },
  chains: { CHAINS: 'INPUT' },
  banDurationS: { BAN_DURATION: '60' },
  logLevel: { LOG_LEVEL: 'debug' },
  detectionLog: { DETECTION_LOG: '/var/log/other.log' },
  detectionLogFormat: { DETECTION_LOG_FORMAT: 'text' },
  detectionLogPayloadBytes: { DETECTION_LOG_PAYLOAD_BYTES: '10' },
  action: { ACTION: 'monitor' },
  rateBitsPerS: { RATE: '1mbit' },
  cutEstablished: { CUT_ESTABLISHED: 'false' },
  blockSocks: { BLOCK_SOCKS: 'true' },
  xdpMode: { XDP_MODE: 'native' },
  cleanupIntervalS: { CLEANUP_INTERVAL: '5' },
  statsIntervalS: { STATS_INTERVAL: '5' },
  banCapacity: { BAN_CAPACITY: '2048' },
  trackerDomains: { TRACKER_DOMAINS: 'example.org' },
  bpfPinDir: { BPF_PIN_DIR: '/sys/fs/bpf/other' },
  rulesFile: { RULES_FILE: '/etc/btwall/rules.json' },
  whitelistPorts: { WHITELIST_PORTS: '22' },
  allowCidrs: { ALLOW_CIDRS: '192.0.2.0/24' },
  localCidrs: { LOCAL_CIDRS: '10.0.0.0/8' },
  banLocal: { BAN_LOCAL: 'true' },
  banExempt: { BAN_EXEMPT: '192.0.2.1' },
  banRatePerMinute: { BAN_RATE: '5' },
  banEscalation: { BAN_ESCALATION: 'factor=3' },
  inspectPackets: { INSPECT_PACKETS: '5' },
  queueMaxLen: { QUEUE_MAXLEN: '128' },
  verdictTimeoutMs: { VERDICT_TIMEOUT_MS: '100' },
  queueCoalesceUs: { QUEUE_COALESCE_US: '50' },
  flowCapacity: { FLOW_CAPACITY: '4096' },
  flowIdleTimeoutS: { FLOW_IDLE_TIMEOUT: '30' },
  peerCacheSize: { PEER_CACHE_SIZE: '2048' },
  peerCacheTtlS: { PEER_CACHE_TTL: '60' },
  metricsAddr: { METRICS_ADDR: '127.0.0.1:9760' },
  controlSocket: { CONTROL_SOCKET: '/run/other.sock' },
  webhookUrl: { WEBHOOK_URL: 'https://hooks.example/x' },
  crowdsec: { CROWDSEC_LAPI_URL: 'http://127.0.0.1:8080', CROWDSEC_API_KEY: 'key' },
};

describe('what a reload applies live and what waits for a restart', () => {
  it('names every variable the configuration reads under exactly one setting, and every setting of a loaded configuration', () => {
    const named = Object.values(RELOAD).flatMap((entry) => entry.variables);
    expect([...named].sort()).toEqual([...CONFIG_VARIABLES].sort());
    expect(Object.keys(RELOAD).sort()).toEqual(Object.keys(loadConfig({}, machine(1))).sort());
  });

  it('takes the live settings of the new configuration and keeps the running value of restart-only ones', () => {
    const running = loadConfig({ BAN_DURATION: '600', FLOW_CAPACITY: '4096', LOG_LEVEL: 'info' }, machine(1));
    const next = loadConfig({ BAN_DURATION: '900', FLOW_CAPACITY: '8192', LOG_LEVEL: 'debug', ALLOW_CIDRS: '192.0.2.0/24' }, machine(1));
    const plan = planReload(running, next);
    expect(plan.live).toEqual(['banDurationS', 'allowCidrs', 'logLevel']);
    expect(plan.restart).toEqual(['flowCapacity']);
    expect(plan.config).toEqual({ ...next, flowCapacity: 4096 });
    // The restart still waits at the next reload of the same file.
    expect(planReload(plan.config, next)).toEqual({ config: plan.config, live: [], restart: ['flowCapacity'] });
  });

  it('changes nothing when the new configuration says the same, whatever its spelling', () => {
    const running = loadConfig({ ACTION: 'drop', ALLOW_CIDRS: '192.0.2.0/24' }, machine(1));
    expect(planReload(running, loadConfig({ ACTION: ' Drop ', ALLOW_CIDRS: ' 192.0.2.0/24, ' }, machine(1)))).toEqual({ config: running, live: [], restart: [] });
  });

  it('names the variables edited, not every variable of a setting', () => {
    const before = { CROWDSEC_LAPI_URL: 'http://127.0.0.1:8080', CROWDSEC_API_KEY: 'a' };
    const after = { ...before, CROWDSEC_ORIGINS: 'all' };
    const plan = planReload(loadConfig(before, machine(1)), loadConfig(after, machine(1)));
    expect(plan.restart).toEqual(['crowdsec']);
    expect(variablesOf(plan.restart, before, after)).toEqual(['CROWDSEC_ORIGINS']);
    // QUEUE_NUM=auto over another number of cores: the same variable, another value.
    const queues = planReload(loadConfig({}, machine(1)), loadConfig({}, machine(2)));
    expect(variablesOf(queues.restart, {}, {})).toEqual(['QUEUE_NUM']);
  });

  it('replaces the rules of the BTWALL chain exactly when a setting they are made of changes', () => {
    const base = loadConfig({ QUEUE_NUM: '0' }, machine(1));
    const rules = (config: Config) => JSON.stringify(replaceChainCommands(config).map((c) => c.input));
    for (const [field, env] of Object.entries(ANOTHER) as [Exclude<keyof Config, typeof DERIVED>, Record<string, string>][]) {
      const next = loadConfig({ QUEUE_NUM: '0', ...env }, machine(1));
      const { live, restart } = planReload(base, next);
      expect(own([...live, ...restart]), field).toEqual([field]);
      expect(rules(next) !== rules(base), field).toBe(CHAIN_SETTINGS.includes(field));
    }
  });
});
