import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, loadConfig } from '../src/config/config.js';
import { planReload, RELOAD, variablesOf } from '../src/daemon/reload.js';

describe('what a reload applies live and what waits for a restart', () => {
  it('names every variable the configuration reads under exactly one setting, and every setting of a loaded configuration', () => {
    const named = Object.values(RELOAD).flatMap((entry) => entry.variables);
    expect([...named].sort()).toEqual([...CONFIG_VARIABLES].sort());
    expect(Object.keys(RELOAD).sort()).toEqual(Object.keys(loadConfig({}, 1)).sort());
  });

  it('takes the live settings of the new configuration and keeps the running value of restart-only ones', () => {
    const running = loadConfig({ BAN_DURATION: '600', FLOW_CAPACITY: '4096', LOG_LEVEL: 'info' }, 1);
    const next = loadConfig({ BAN_DURATION: '900', FLOW_CAPACITY: '8192', LOG_LEVEL: 'debug', ALLOW_CIDRS: '192.0.2.0/24' }, 1);
    const plan = planReload(running, next);
    expect(plan.live).toEqual(['banDurationS', 'allowCidrs', 'logLevel']);
    expect(plan.restart).toEqual(['flowCapacity']);
    expect(plan.config).toEqual({ ...next, flowCapacity: 4096 });
    // The restart still waits at the next reload of the same file.
    expect(planReload(plan.config, next)).toEqual({ config: plan.config, live: [], restart: ['flowCapacity'] });
  });

  it('changes nothing when the new configuration says the same, whatever its spelling', () => {
    const running = loadConfig({ ACTION: 'drop', ALLOW_CIDRS: '192.0.2.0/24' }, 1);
    expect(planReload(running, loadConfig({ ACTION: ' Drop ', ALLOW_CIDRS: ' 192.0.2.0/24, ' }, 1))).toEqual({ config: running, live: [], restart: [] });
  });

  it('names the variables edited, not every variable of a setting', () => {
    const before = { CROWDSEC_LAPI_URL: 'http://127.0.0.1:8080', CROWDSEC_API_KEY: 'a' };
    const after = { ...before, CROWDSEC_ORIGINS: 'all' };
    const plan = planReload(loadConfig(before, 1), loadConfig(after, 1));
    expect(plan.restart).toEqual(['crowdsec']);
    expect(variablesOf(plan.restart, before, after)).toEqual(['CROWDSEC_ORIGINS']);
    // QUEUE_NUM=auto over another number of cores: the same variable, another value.
    const queues = planReload(loadConfig({}, 1), loadConfig({}, 2));
    expect(variablesOf(queues.restart, {}, {})).toEqual(['QUEUE_NUM']);
  });
});
