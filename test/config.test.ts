import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/config.js';

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
    const config = loadConfig({});
    expect(config.queues).toEqual({ first: 0, last: 0 });
    expect(config.chains).toEqual(['FORWARD']);
    expect(config.banDurationS).toBe(18000);
    expect(config.action).toBe('drop');
    expect(config.rateBitsPerS).toBe(512_000);
    expect(config.banLocal).toBe(false);
    expect(config.inspectPackets).toBe(20);
    expect(config.verdictTimeoutMs).toBe(50);
    expect(config.detectionLog).toBe('/var/log/btwall/detections.log');
    expect(config.detectionLogFormat).toBe('json');
    expect(config.detectionLogPayloadBytes).toBe(256);
    expect(loadConfig({ DETECTION_LOG: '', DETECTION_LOG_FORMAT: 'Text', DETECTION_LOG_PAYLOAD_BYTES: '0' })).toMatchObject({ detectionLog: '', detectionLogFormat: 'text', detectionLogPayloadBytes: 0 });
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
    expect(config.queues).toEqual({ first: 2, last: 5 });
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
    ['FLOW_CAPACITY', '12'],
    ['TRACKER_DOMAINS', 'tracker.example,not a domain'],
    ['TRACKER_DOMAINS', 'tracker.b-'],
    ['ALLOW_CIDRS', 'fe80::1%eth0'],
    ['DETECTION_LOG', 'detections.log'],
    ['DETECTION_LOG', '/var/log/btwall/'],
    ['DETECTION_LOG_FORMAT', 'xml'],
    ['DETECTION_LOG_PAYLOAD_BYTES', '65536'],
    ['DETECTION_LOG_PAYLOAD_BYTES', 'all'],
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
    const bad = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, CHAINS: 'NOWHERE' } });
    expect(bad.status).toBe(78);
    expect(bad.stderr).toContain('CHAINS="NOWHERE"');
    // ...and against this machine: the daemon would run without kernel bans, unasked.
    const unasked = spawnSync(CLI, ['check-config'], { encoding: 'utf8', env: { ...process.env, INTERFACE: '', XDP_MODE: 'generic' } });
    expect(unasked.status).toBe(78);
    expect(unasked.stderr).toContain('INTERFACE="": no interface for the XDP ban program');
  });
});
