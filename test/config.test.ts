import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AUTO_QUEUE_CAP, ConfigError, loadConfig, redactedConfig } from '../src/config/config.js';

const CLI = join(resolve(import.meta.dirname, '..'), 'bin/btwall');

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('configuration from the environment', () => {
  it('has safe defaults', () => {
    const config = loadConfig({}, { cores: 2 });
    // QUEUE_NUM=auto: one queue per core, up to AUTO_QUEUE_CAP.
    expect(config.queues).toEqual({ first: 0, last: 1, auto: true });
    expect(loadConfig({ QUEUE_NUM: 'Auto' }, { cores: 1 }).queues).toEqual({ first: 0, last: 0, auto: true });
    expect(loadConfig({}, { cores: 64 }).queues).toEqual({ first: 0, last: AUTO_QUEUE_CAP - 1, auto: true });
    expect(loadConfig({ QUEUE_NUM: '3' }, { cores: 64 }).queues).toEqual({ first: 3, last: 3, auto: false });
    expect(config.chains).toEqual(['FORWARD']);
    expect(config.banDurationS).toBe(18000);
    expect(config.action).toBe('drop');
    expect(config.rateBitsPerS).toBe(512_000);
    expect(config.banLocal).toBe(false);
    expect(config.inspectPackets).toBe(20);
    expect(config.verdictTimeoutMs).toBe(50);
    expect(config.queueCoalesceUs).toBe(200);
    expect(loadConfig({ QUEUE_COALESCE_US: '0' }).queueCoalesceUs).toBe(0);
    expect(config.detectionLog).toBe('/var/log/btwall/detections.log');
    expect(config.detectionLogFormat).toBe('json');
    expect(config.detectionLogPayloadBytes).toBe(256);
    expect(loadConfig({ DETECTION_LOG: '', DETECTION_LOG_FORMAT: 'Text', DETECTION_LOG_PAYLOAD_BYTES: '0' })).toMatchObject({ detectionLog: '', detectionLogFormat: 'text', detectionLogPayloadBytes: 0 });
    // Metrics and the webhook are asked for; the control socket is there unless turned off.
    expect(config).toMatchObject({ metricsAddr: null, controlSocket: '/run/btwall/control.sock', webhookUrl: '' });
  });

  it('reads METRICS_ADDR, CONTROL_SOCKET and WEBHOOK_URL', () => {
    expect(loadConfig({ METRICS_ADDR: ' 127.0.0.1:9760 ' }).metricsAddr).toEqual({ host: '127.0.0.1', port: 9760 });
    expect(loadConfig({ METRICS_ADDR: '[::1]:9760' }).metricsAddr).toEqual({ host: '::1', port: 9760 });
    expect(loadConfig({ CONTROL_SOCKET: '' }).controlSocket).toBe('');
    expect(loadConfig({ WEBHOOK_URL: 'https://hooks.example/btwall' }).webhookUrl).toBe('https://hooks.example/btwall');
  });

  it('redacts the credentials and the query of WEBHOOK_URL wherever the configuration is shown', () => {
    const config = loadConfig({ WEBHOOK_URL: 'https://ops:s3cret@hooks.example/btwall?token=abc' });
    expect(redactedConfig(config).webhookUrl).toBe('https://REDACTED:REDACTED@hooks.example/btwall?REDACTED');
    expect(config.webhookUrl).toBe('https://ops:s3cret@hooks.example/btwall?token=abc');
    const shown = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off', WEBHOOK_URL: config.webhookUrl } });
    expect(shown.status).toBe(0);
    expect(shown.stdout).not.toContain('s3cret');
    expect(shown.stdout).not.toContain('abc');
  });

  it('reads lists, ranges, booleans and CIDRs', () => {
    const config = loadConfig({
      QUEUE_NUM: '2-5',
      INTERFACE: 'eth0, wg0',
      CHAINS: 'forward,INPUT,forward',
      MONITOR_ONLY: 'yes',
      WHITELIST_PORTS: '22,53,22',
      ALLOW_CIDRS: '10.0.0.0/8, 2001:db8::/32, 192.0.2.1',
      XDP_MODE: 'Native',
      TRACKER_DOMAINS: 'Tracker.Example.NET., *.bt.example.org',
    });
    expect(config.trackerDomains).toEqual(['tracker.example.net', 'bt.example.org']);
    expect(config.queues).toEqual({ first: 2, last: 5, auto: false });
    expect(config.interfaces).toEqual(['eth0', 'wg0']);
    expect(config.chains).toEqual(['FORWARD', 'INPUT']);
    expect(config.action).toBe('monitor');
    expect(config.whitelistPorts).toEqual([22, 53]);
    expect(config.allowCidrs).toEqual([
      { family: 4, address: '10.0.0.0', prefix: 8 },
      { family: 6, address: '2001:db8::', prefix: 32 },
      { family: 4, address: '192.0.2.1', prefix: 32 },
    ]);
    expect(config.xdpMode).toBe('native');
  });

  it.each([
    ['QUEUE_NUM', '70000'],
    ['QUEUE_NUM', '3-1'],
    ['QUEUE_NUM', 'zero'],
    ['INTERFACE', 'averyveryverylongname0'],
    ['CHAINS', 'PREROUTING'],
    ['CHAINS', ''],
    ['BAN_DURATION', '0'],
    ['BAN_DURATION', '5h'],
    ['LOG_LEVEL', 'verbose'],
    ['MONITOR_ONLY', 'maybe'],
    ['BLOCK_SOCKS', '2'],
    ['XDP_MODE', 'turbo'],
    ['CLEANUP_INTERVAL', '-5'],
    ['WHITELIST_PORTS', '22,http'],
    ['WHITELIST_PORTS', '0'],
    ['ALLOW_CIDRS', '10.0.0.0/33'],
    ['LOCAL_CIDRS', 'fe80::/129'],
    ['BAN_LOCAL', 'sometimes'],
    ['INSPECT_PACKETS', '0'],
    ['QUEUE_MAXLEN', '10'],
    ['VERDICT_TIMEOUT_MS', '1'],
    ['QUEUE_COALESCE_US', '2001'],
    ['FLOW_CAPACITY', '12'],
    ['TRACKER_DOMAINS', 'tracker.example,not a domain'],
    ['TRACKER_DOMAINS', 'tracker.b-'],
    ['ALLOW_CIDRS', 'fe80::1%eth0'],
    ['DETECTION_LOG', 'detections.log'],
    ['DETECTION_LOG', '/var/log/btwall/'],
    ['DETECTION_LOG_FORMAT', 'xml'],
    ['DETECTION_LOG_PAYLOAD_BYTES', '65536'],
    ['DETECTION_LOG_PAYLOAD_BYTES', 'all'],
    ['METRICS_ADDR', '9760'],
    ['METRICS_ADDR', 'localhost:9760'],
    ['METRICS_ADDR', '127.0.0.1:0'],
    ['METRICS_ADDR', '127.0.0.1:65536'],
    ['METRICS_ADDR', '::1:9760'],
    ['METRICS_ADDR', '[127.0.0.1]:9760'],
    ['CONTROL_SOCKET', 'control.sock'],
    ['CONTROL_SOCKET', '/run/btwall/../control.sock'],
    ['CONTROL_SOCKET', `/run/${'x'.repeat(110)}`],
    ['WEBHOOK_URL', 'ftp://hooks.example/btwall'],
    ['WEBHOOK_URL', 'not a url'],
    ['CROWDSEC_LAPI_URL', 'ftp://lapi:8080'],
    ['CROWDSEC_LAPI_URL', 'http://user:pw@lapi:8080'],
    ['CROWDSEC_LAPI_URL', 'lapi:8080'],
    ['CROWDSEC_POLL_INTERVAL', '0'],
    ['CROWDSEC_POLL_INTERVAL', '1s'],
    ['CROWDSEC_ORIGINS', 'all,cscli'],
    ['CROWDSEC_ORIGINS', ''],
    ['CROWDSEC_ORIGINS', 'crowd sec'],
    ['CROWDSEC_QUEUE_CAPACITY', '0'],
    ['CROWDSEC_API_KEY', 'a key'],
    ['CROWDSEC_MACHINE_ID', 'gw/a'],
    ['ACTION', 'block'],
    ['RATE', '512k'],
    ['RATE', '1kbit'],
    ['RULES_FILE', 'rules.json'],
    ['CUT_ESTABLISHED', 'always'],
    ['BAN_ESCALATION', 'double'],
    ['BAN_ESCALATION', 'factor=0.5'],
    ['BAN_ESCALATION', 'factor=2,max=1h'],
    ['BAN_ESCALATION', 'window=-1'],
  ])('rejects %s=%j and names it', (name, value) => {
    const found = problems({ [name]: value });
    expect(found).toHaveLength(1);
    expect(found[0]).toContain(`${name}=${JSON.stringify(value)}`);
  });

  it('reads CROWDSEC_*: nothing without CROWDSEC_LAPI_URL, and the LAPI link with it', () => {
    expect(loadConfig({}).crowdsec).toBeNull();
    expect(loadConfig({ CROWDSEC_LAPI_URL: 'http://10.0.0.5:8080/', CROWDSEC_API_KEY: 'k3y' }).crowdsec).toEqual({
      lapiUrl: 'http://10.0.0.5:8080',
      apiKey: 'k3y',
      machine: null,
      pollIntervalMs: 1000,
      origins: ['btwall'],
      queueCapacity: 10000,
    });
    const both = loadConfig({
      CROWDSEC_LAPI_URL: 'https://lapi.example',
      CROWDSEC_MACHINE_ID: 'gw-a',
      CROWDSEC_MACHINE_PASSWORD: 'p@ss',
      CROWDSEC_POLL_INTERVAL: '0.25',
      CROWDSEC_ORIGINS: 'btwall, cscli,btwall',
    }).crowdsec;
    expect(both).toMatchObject({ apiKey: null, machine: { id: 'gw-a', password: 'p@ss' }, pollIntervalMs: 250, origins: ['btwall', 'cscli'] });
    expect(loadConfig({ CROWDSEC_LAPI_URL: 'http://lapi:8080', CROWDSEC_API_KEY: 'k', CROWDSEC_ORIGINS: 'All' }).crowdsec?.origins).toBe('all');
  });

  it.each([
    [{ CROWDSEC_API_KEY: 'k' }, 'CROWDSEC_API_KEY="k": needs CROWDSEC_LAPI_URL'],
    [{ CROWDSEC_MACHINE_ID: 'gw' }, 'CROWDSEC_MACHINE_ID="gw": needs CROWDSEC_LAPI_URL'],
    [{ CROWDSEC_LAPI_URL: 'http://lapi:8080' }, 'CROWDSEC_LAPI_URL="http://lapi:8080": needs CROWDSEC_API_KEY'],
    [{ CROWDSEC_LAPI_URL: 'http://lapi:8080', CROWDSEC_MACHINE_ID: 'gw' }, 'CROWDSEC_MACHINE_PASSWORD="": CROWDSEC_MACHINE_ID and CROWDSEC_MACHINE_PASSWORD go together'],
    [{ CROWDSEC_LAPI_URL: 'http://lapi:8080', CROWDSEC_API_KEY: 'k', CROWDSEC_MACHINE_PASSWORD: 'p' }, 'CROWDSEC_MACHINE_ID="": CROWDSEC_MACHINE_ID and CROWDSEC_MACHINE_PASSWORD go together'],
  ])('refuses CROWDSEC_* that do not go together: %j', (env, problem) => {
    expect(problems(env)).toEqual([expect.stringContaining(problem)]);
  });

  it('reads ACTION, and MONITOR_ONLY as its old name for monitor', () => {
    expect(loadConfig({ ACTION: 'Throttle', RATE: '2.5mbit' })).toMatchObject({ action: 'throttle', rateBitsPerS: 2_500_000 });
    expect(loadConfig({ ACTION: 'monitor' }).action).toBe('monitor');
    expect(loadConfig({ MONITOR_ONLY: 'true' }).action).toBe('monitor');
    expect(loadConfig({ MONITOR_ONLY: 'false' }).action).toBe('drop');
    expect(loadConfig({ MONITOR_ONLY: 'yes', ACTION: 'monitor' }).action).toBe('monitor');
    expect(loadConfig({ MONITOR_ONLY: 'no', ACTION: 'throttle' }).action).toBe('throttle');
  });

  it.each([
    ['true', 'drop'],
    ['true', 'throttle'],
    ['false', 'monitor'],
  ])('refuses MONITOR_ONLY=%s with ACTION=%s, naming both', (monitorOnly, action) => {
    const found = problems({ MONITOR_ONLY: monitorOnly, ACTION: action });
    expect(found).toEqual([`ACTION="${action}" and MONITOR_ONLY="${monitorOnly}" disagree: MONITOR_ONLY is the old name of ACTION=monitor; set only ACTION`]);
  });

  it('exits 78 on ACTION and MONITOR_ONLY that disagree', () => {
    const run = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off', ACTION: 'drop', MONITOR_ONLY: 'true' } });
    expect(run.status).toBe(78);
    expect(run.stderr).toContain('disagree');
  });

  it('btwall check-config prints the effective configuration, or exits 78 naming the variable', () => {
    const good = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, BAN_DURATION: '60', XDP_MODE: 'off' } });
    expect(good.status).toBe(0);
    expect(JSON.parse(good.stdout).banDurationS).toBe(60);
    // The queues, and what their tables take together: each queue's own and the shared ones once.
    const sized = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off', QUEUE_NUM: '0-3', FLOW_CAPACITY: '65536' } });
    const { tables } = JSON.parse(sized.stdout);
    expect(tables).toMatchObject({ queues: '0-3', queueCount: 4 });
    expect(tables.perQueueBytes).toBeGreaterThan(65536 * 100);
    expect(tables.sharedBytes).toBeGreaterThan(0);
    expect(tables.totalBytes).toBe(4 * tables.perQueueBytes + tables.sharedBytes);
    // Each table's bytes, and where each size came from: FLOW_CAPACITY was set, PEER_CACHE_SIZE sized from this machine's memory.
    const { flowsPerQueue, ...shared } = tables.perTableBytes;
    expect(flowsPerQueue).toBe(tables.perQueueBytes);
    expect(Object.values(shared).reduce((sum: number, bytes) => sum + (bytes as number), 0)).toBe(tables.sharedBytes);
    expect(tables.sizes).toMatchObject({ flowCapacity: { value: 65536, from: 'FLOW_CAPACITY' }, peerCacheSize: { from: 'memory' } });
    expect(tables.memory.budgetBytes).toBe(Math.floor(tables.memory.bytes / 4));
    // XDP_MODE=off: no ban maps to count.
    expect(tables.banMapsBytes).toBe(0);
    expect(['MemTotal', 'cgroup memory limit']).toContain(tables.memory.from);
    const auto = JSON.parse(spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off' } }).stdout);
    expect(auto.tables.queues).toBe(`auto (0${availableParallelism() > 1 ? `-${Math.min(availableParallelism(), AUTO_QUEUE_CAP) - 1}` : ''})`);
    // Credentials are said to be set, never printed.
    const fleet = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off', CROWDSEC_LAPI_URL: 'http://lapi:8080', CROWDSEC_API_KEY: 'bouncer-key-1', CROWDSEC_MACHINE_ID: 'gw', CROWDSEC_MACHINE_PASSWORD: 'pw-2' } });
    expect(fleet.status).toBe(0);
    expect(JSON.parse(fleet.stdout).crowdsec).toMatchObject({ apiKey: '(set)', machine: { id: 'gw', password: '(set)' } });
    expect(fleet.stdout).not.toMatch(/bouncer-key-1|pw-2/);
    const badFleet = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, XDP_MODE: 'off', CROWDSEC_LAPI_URL: 'http://lapi:8080', CROWDSEC_API_KEY: 'k', CROWDSEC_POLL_INTERVAL: 'fast' } });
    expect(badFleet.status).toBe(78);
    expect(badFleet.stderr).toContain('CROWDSEC_POLL_INTERVAL="fast"');
    const bad = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, CHAINS: 'NOWHERE' } });
    expect(bad.status).toBe(78);
    expect(bad.stderr).toContain('CHAINS="NOWHERE"');
    // ...and against this machine: the daemon would run without kernel bans, unasked.
    const unasked = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, INTERFACE: '', XDP_MODE: 'generic' } });
    expect(unasked.status).toBe(78);
    expect(unasked.stderr).toContain('INTERFACE="": no interface for the XDP ban program');
  });
});
