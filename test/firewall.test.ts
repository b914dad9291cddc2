import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { FirewallError, installRules, removeRules, replaceChainRules, type CommandRunner } from '../src/firewall/apply.js';
import { CHAIN, installCommands, replaceChainCommands, shellLine, type FirewallCommand } from '../src/firewall/rules.js';
import { canUseKernel, createNamespace, type Namespace } from './helpers/netns.js';

const lines = (commands: FirewallCommand[]) => commands.map(shellLine);

describe('firewall rules', () => {
  it('hook the configured chains of both families and queue only the first packets, with bypass', () => {
    const rules = lines(installCommands(loadConfig({ CHAINS: 'FORWARD,OUTPUT', INSPECT_PACKETS: '12', QUEUE_NUM: '0' })));
    expect(rules).toContain('iptables -w -I FORWARD 1 -j BTWALL');
    expect(rules).toContain('ip6tables -w -I OUTPUT 1 -j BTWALL');
    expect(rules.filter((r) => r.includes(' -I INPUT'))).toEqual([]);
    const queued = rules.filter((r) => r.includes('NFQUEUE') && r.includes('connbytes'));
    expect(queued).toHaveLength(4);
    for (const rule of queued) {
      expect(rule).toContain('--connbytes 0:12 --connbytes-dir both --connbytes-mode packets');
      expect(rule).toMatch(/--queue-num 0 --queue-bypass$/);
    }
  });

  it('put allowlisted CIDRs of each family and whitelisted ports before the queue', () => {
    const ports = Array.from({ length: 20 }, (_, i) => String(1000 + i)).join(',');
    const rules = lines(installCommands(loadConfig({ ALLOW_CIDRS: '192.0.2.0/24,2001:db8::/32', WHITELIST_PORTS: ports, QUEUE_NUM: '4-7' })));
    const firstQueue = rules.findIndex((r) => r.includes('NFQUEUE'));
    const allow4 = rules.indexOf('iptables -w -A BTWALL -s 192.0.2.0/24 -j RETURN');
    expect(allow4).toBeGreaterThan(0);
    expect(allow4).toBeLessThan(firstQueue);
    expect(rules).toContain('ip6tables -w -A BTWALL -d 2001:db8::/32 -j RETURN');
    expect(rules.filter((r) => r.startsWith('iptables') && r.includes('2001:db8'))).toEqual([]);
    expect(rules.filter((r) => r.startsWith('iptables') && r.includes('multiport'))).toHaveLength(4);
    expect(rules[firstQueue]).toContain('--queue-balance 4:7 --queue-bypass');
  });

  it('save a decided packet\'s mark into its connection, drop BitTorrent connections, and let clean ones skip the queue', () => {
    const rules = lines(installCommands(loadConfig({ ALLOW_CIDRS: '192.0.2.0/24' }))).filter((r) => r.startsWith('iptables -w -A'));
    const at = (fragment: string) => rules.findIndex((r) => r.includes(fragment));
    const saveBitTorrent = at('--mark 0x80000000/0xc0000000 -j CONNMARK --save-mark --nfmask 0xc0000000 --ctmask 0xc0000000');
    expect(at('-s 192.0.2.0/24 -j RETURN')).toBe(0);
    expect(saveBitTorrent).toBeGreaterThan(at('-d 192.0.2.0/24 -j RETURN'));
    expect(at('-m mark --mark 0x80000000/0xc0000000 -j DROP')).toBe(saveBitTorrent + 1);
    expect(at('-m mark --mark 0x40000000/0xc0000000 -j RETURN')).toBe(at('-m mark --mark 0x40000000/0xc0000000 -j CONNMARK') + 1);
    expect(at('-m connmark --mark 0x80000000/0xc0000000 -j DROP')).toBeLessThan(at('NFQUEUE'));
    expect(at('-m connmark --mark 0x40000000/0xc0000000 -j RETURN')).toBeLessThan(at('NFQUEUE'));
  });

  it('in monitor-only mode drop nothing', () => {
    const rules = lines(installCommands(loadConfig({ ACTION: 'monitor' })));
    expect(rules.filter((r) => r.endsWith('-j DROP'))).toEqual([]);
    expect(rules.some((r) => r.includes('--mark 0x40000000/0xc0000000 -j RETURN'))).toBe(true);
  });

  it('for throttled connections save the mark, drop only what exceeds RATE per local host each way, and let the rest skip the queue', () => {
    const rules = lines(installCommands(loadConfig({ ACTION: 'throttle', RATE: '1mbit', LOCAL_CIDRS: '10.1.0.0/16,fd00::/8' })));
    const v4 = rules.filter((r) => r.startsWith('iptables -w -A'));
    const at = (fragment: string) => v4.findIndex((r) => r.includes(fragment));
    const bt = '-m connmark --mark 0xc0000000/0xc0000000';
    const limit = '-m hashlimit --hashlimit-above 125000b/s --hashlimit-burst 125000b';
    expect(v4.filter((r) => r.includes('-m mark --mark 0xc0000000/0xc0000000 -j DROP'))).toEqual([]);
    expect(v4[at(`${bt} -d 10.1.0.0/16`)]).toContain(`${limit} --hashlimit-mode dstip --hashlimit-name btwall-down4 -j DROP`);
    expect(v4[at(`${bt} -s 10.1.0.0/16`)]).toContain(`${limit} --hashlimit-mode srcip --hashlimit-name btwall-up4 -j DROP`);
    expect(at(`${bt} -j RETURN`)).toBe(at(`${bt} -s 10.1.0.0/16`) + 1);
    expect(at(`${bt} -j RETURN`)).toBeLessThan(at('NFQUEUE'));
    expect(at('-m mark --mark 0xc0000000/0xc0000000 -j CONNMARK --save-mark')).toBeLessThan(at(`${bt} -d`));
    expect(rules.filter((r) => r.startsWith('ip6tables') && r.includes('btwall-down6'))).toEqual([expect.stringContaining('-d fd00::/8')]);
  });

  it("are replaced at a reload by the chain's rules alone, in one iptables-restore transaction per family", () => {
    const config = loadConfig({ ALLOW_CIDRS: '192.0.2.0/24,2001:db8::/32', QUEUE_NUM: '0' });
    const [v4, v6] = replaceChainCommands(config);
    expect([v4.program, v4.args, v6.program]).toEqual(['iptables-restore', ['-w', '--noflush'], 'ip6tables-restore']);
    const installed = installCommands(config).filter((c) => c.program === 'iptables' && c.args[1] === '-A').map((c) => c.args.slice(1).join(' '));
    expect(v4.input).toBe(['*filter', `:${CHAIN} - [0:0]`, ...installed, 'COMMIT', ''].join('\n'));
    expect(v6.input).toContain(`-A ${CHAIN} -s 2001:db8::/32 -j RETURN`);
    expect(v6.input).not.toContain('192.0.2.0');
  });

  it('at a reload put the first family back when the second refuses its rules, and throw naming the program', () => {
    const running = loadConfig({ ALLOW_CIDRS: '192.0.2.0/24' });
    const next = loadConfig({ ALLOW_CIDRS: '198.51.100.0/24' });
    const ran: FirewallCommand[] = [];
    const refuseV6: CommandRunner = (command) => {
      ran.push(command);
      return command.program === 'ip6tables-restore' ? { ok: false, stderr: 'line 3 failed' } : { ok: true, stderr: '' };
    };
    expect(() => replaceChainRules(next, running, refuseV6)).toThrow(`ip6tables-restore refused the new rules of the ${CHAIN} chain: line 3 failed`);
    expect(ran.map((c) => [c.program, c.input?.includes('198.51.100.0/24'), c.input?.includes('192.0.2.0/24')])).toEqual([
      ['iptables-restore', true, false],
      ['ip6tables-restore', false, false],
      ['iptables-restore', false, true],
    ]);
  });

  it('remove what they installed and throw naming the command when one fails', () => {
    const ran: string[] = [];
    const failOnConnbytes: CommandRunner = (command) => {
      ran.push(shellLine(command));
      const failing = command.args.includes('connbytes') || command.args.includes('-D') || command.args.includes('-X') || command.args.includes('-F');
      return { ok: !failing, stderr: failing ? 'no such module' : '' };
    };
    expect(() => installRules(loadConfig({}), failOnConnbytes)).toThrow(FirewallError);
    expect(() => installRules(loadConfig({}), failOnConnbytes)).toThrow(/connbytes.*failed: no such module/);
    expect(ran.at(-1)).toBe('ip6tables -w -X BTWALL');
  });
});

describe.runIf(canUseKernel())('firewall rules in a real network namespace', () => {
  let ns: Namespace;
  beforeAll(() => {
    ns = createNamespace('fw');
  });
  afterAll(() => ns.delete());

  const runner: CommandRunner = (command) => {
    const run = ns.run(command.program, command.args, command.input);
    return { ok: run.status === 0, stderr: run.stderr };
  };
  const hooks = (program: string) => ns.must(program, ['-S']).split('\n').filter((l) => l.endsWith(`-j ${CHAIN}`));

  it('are accepted by the kernel, and a restart leaves exactly one copy', () => {
    const config = loadConfig({ CHAINS: 'FORWARD,INPUT', ALLOW_CIDRS: '10.0.0.0/8,fd00::/8', WHITELIST_PORTS: '22', QUEUE_NUM: '0' });
    installRules(config, runner);
    // A crash leaves the rules; the next start must not stack a second copy.
    installRules(config, runner);
    expect(hooks('iptables')).toEqual(['-A INPUT -j BTWALL', '-A FORWARD -j BTWALL']);
    expect(hooks('ip6tables')).toEqual(['-A INPUT -j BTWALL', '-A FORWARD -j BTWALL']);
    expect(ns.must('iptables', ['-S', CHAIN])).toContain('-j NFQUEUE --queue-num 0 --queue-bypass');
    // A duplicated hook, as two racing starts could leave, goes too.
    ns.must('iptables', ['-I', 'FORWARD', '1', '-j', CHAIN]);
    removeRules(runner);
    expect(hooks('iptables')).toEqual([]);
    expect(hooks('ip6tables')).toEqual([]);
    expect(ns.run('iptables', ['-S', CHAIN]).status).not.toBe(0);
  });

  it('are replaced in the kernel at a reload, the hooks and the counters of the other chains kept', () => {
    installRules(loadConfig({ CHAINS: 'FORWARD,INPUT', ALLOW_CIDRS: '10.0.0.0/8', QUEUE_NUM: '0' }), runner);
    const next = loadConfig({ CHAINS: 'FORWARD,INPUT', ALLOW_CIDRS: '172.16.0.0/12,fd00::/8', WHITELIST_PORTS: '22', ACTION: 'monitor', QUEUE_NUM: '0' });
    replaceChainRules(next, next, runner);
    expect(hooks('iptables')).toEqual(['-A INPUT -j BTWALL', '-A FORWARD -j BTWALL']);
    const v4 = ns.must('iptables', ['-S', CHAIN]);
    expect(v4).toContain('-A BTWALL -s 172.16.0.0/12 -j RETURN');
    expect(v4).not.toContain('10.0.0.0/8');
    expect(v4).toContain('-m multiport --ports 22 -j RETURN');
    // ACTION=monitor marks nothing BitTorrent: no rule drops.
    expect(v4).not.toContain('-j DROP');
    expect(ns.must('ip6tables', ['-S', CHAIN])).toContain('-A BTWALL -d fd00::/8 -j RETURN');
    // Exactly the rules a start with this configuration installs.
    const started = installCommands(next).filter((c) => c.program === 'iptables' && c.args[1] === '-A').length;
    expect(v4.trim().split('\n')).toHaveLength(started + 1);
    removeRules(runner);
  });

  it('take the throttle rules in both families, and remove them like the others', () => {
    installRules(loadConfig({ ACTION: 'throttle' }), runner);
    expect(ns.must('iptables', ['-S', CHAIN])).toContain('--hashlimit-name btwall-down4');
    expect(ns.must('ip6tables', ['-S', CHAIN])).toContain('--hashlimit-name btwall-up6');
    removeRules(runner);
    expect(ns.run('iptables', ['-S', CHAIN]).status).not.toBe(0);
  });
});
