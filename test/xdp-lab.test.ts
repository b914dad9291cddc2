/**
 * The XDP ban fast path in the client <-> gateway <-> server lab: the daemon on the gateway bans
 * the server once it connects in to the client and sends its own BitTorrent handshake (its bytes,
 * over a TCP handshake the gateway saw: proof), and from then on the program on the gateway's
 * links drops the server's packets before netfilter sees them.
 */
import { existsSync, rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { btwall, CLI, connects, peer, startDaemon, stopPeers, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Namespace, type Topology } from './helpers/netns.js';

const SERVER4 = '10.77.2.2';
const SERVER6 = 'fd77:2::2';
/** A second address of the server: never banned, so the path through the gateway is seen to work. */
const OTHER4 = '10.77.2.3';
const CLIENT4 = '10.77.1.2';
const CLIENT6 = 'fd77:1::2';
const SINK_PORT = 7000;
const CLIENT_SINK_PORT = 9000;

interface BanList {
  pinned: boolean;
  enforced: boolean;
  enforcedOn: { name: string; mode: string }[];
  bans: { address: string; remainingS: number; rule: string; count: number; expiresAt: string }[];
  dropped: { v4: { packets: number; resets: number }; v6: { packets: number; resets: number } };
}


/** TcpInCsumErrors of a namespace's stack (/proc/net/snmp is the reader's network namespace's). */
function checksumErrors(ns: Namespace): number {
  const tcp = ns.must('cat', ['/proc/net/snmp']).split('\n').filter((line) => line.startsWith('Tcp:'));
  const [names, values] = tcp.map((line) => line.trim().split(/\s+/));
  return Number(values[names.indexOf('InCsumErrors')]);
}

describe.runIf(canUseKernel())('XDP bans through the gateway', () => {
  let net: Topology;
  let daemon: RunningDaemon | null = null;
  const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-lab`;
  let env: Record<string, string>;

  const bans = (...args: string[]) => btwall(net.gateway, ['bans', ...args], { BPF_PIN_DIR: pinDir });
  const banList = (): BanList => JSON.parse(bans('list', '--json').stdout) as BanList;
  /** Packets the gateway's NFQUEUE rules have taken, both families. */
  const queued = () =>
    ['iptables', 'ip6tables']
      .flatMap((p) => net.gateway.must(p, ['-w', '-L', 'BTWALL', '-v', '-x', '-n']).split('\n'))
      .filter((l) => l.includes('NFQUEUE'))
      .reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[0]), 0);
  let handshakePort = 6881;
  /** The server, from `server`, connects to the client and sends a handshake; resolves when the daemon has banned it. */
  const handshakeBans = async (server: string, count = 1) => {
    const port = handshakePort++;
    const sink = peer(net.client, 'tcp-sink', port, 3000);
    await sink.ready;
    await peer(net.server, 'tcp-send', server.includes(':') ? CLIENT6 : CLIENT4, port, 'handshake', 1500, 1, server).done;
    return daemon!.waitFor('banned', { address: server, count });
  };

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    net = createTopology('x');
    net.server.must('ip', ['addr', 'add', `${OTHER4}/24`, 'dev', deviceWith(net.server, SERVER4)]);
    const links = [deviceWith(net.gateway, '10.77.1.1'), deviceWith(net.gateway, '10.77.2.1')];
    env = {
      // A pattern that matches nothing (yet) is fine; a name that does not exist would be refused.
      INTERFACE: [...links, 'btwnope*'].join(','),
      BPF_PIN_DIR: pinDir,
      // The client's side is local; the server is the remote peer that gets banned.
      LOCAL_CIDRS: '10.77.1.0/24,fd77:1::/64',
      DETECTION_LOG: '',
      // What is decided, not how fast: on a shared, loaded machine a 50 ms verdict deadline turns a
      // slow answer into a watchdog accept, and a handshake the queue never saw cannot prove a peer.
      VERDICT_TIMEOUT_MS: '3000',
    };
    await Promise.all([peer(net.server, 'tcp-sink', SINK_PORT, 110_000).ready, peer(net.client, 'tcp-sink', CLIENT_SINK_PORT, 110_000).ready]);
  });
  beforeEach(() => void bans('flush'));
  afterEach(async () => {
    if (daemon?.running) await daemon.stop();
    daemon = null;
  });
  afterAll(() => {
    stopPeers();
    net?.destroy();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it('bans a detected peer: XDP drops its packets both ways, the queue sees none, restarts (even after kill -9) keep the ban, bans del lifts it', async () => {
    daemon = startDaemon(net.gateway, { ...env, BAN_DURATION: '600' });
    const running = await daemon.waitFor('btwall running');
    expect(running.bans).toContain('on devices matching btwnope* as they appear');
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(true);

    await handshakeBans(SERVER4);
    await handshakeBans(SERVER6);
    const before = banList();
    expect(before.enforced).toBe(true);
    // XDP_MODE=auto, the default: generic on a veth (see modesToTry); logged per interface.
    expect(before.enforcedOn.map((a) => a.mode)).toEqual(['generic', 'generic']);
    for (const link of env.INTERFACE.split(',').filter((item) => !item.endsWith('*'))) {
      expect(await daemon.waitFor('XDP program attached', { interface: link })).toMatchObject({ kind: 'ethernet', mode: 'generic', xdpMode: 'auto' });
    }
    expect(before.bans.map((b) => [b.address, b.rule])).toEqual([
      [SERVER4, 'handshake'],
      [SERVER6, 'handshake'],
    ]);
    const queuedBefore = queued();
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(false);
    expect(await connects(net.server, CLIENT4, CLIENT_SINK_PORT)).toBe(false);
    expect(await connects(net.client, SERVER6, SINK_PORT)).toBe(false);
    const after = banList();
    expect(after.dropped.v4.packets - before.dropped.v4.packets).toBeGreaterThanOrEqual(2);
    expect(after.dropped.v6.packets - before.dropped.v6.packets).toBeGreaterThanOrEqual(1);
    expect(queued()).toBe(queuedBefore);
    // The same server under an address that is not banned is reached through the same links.
    expect(await connects(net.client, OTHER4, SINK_PORT)).toBe(true);

    expect(await daemon.stop()).toBe(0);
    const stopped = banList();
    const stoppedAt = Date.now();
    expect(stopped.enforced).toBe(false);
    expect(stopped.bans.map((b) => b.address)).toEqual([SERVER4, SERVER6]);
    expect(bans('list').stdout).toContain('NOT enforced in the kernel');
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(true);

    daemon = startDaemon(net.gateway, { ...env, BAN_DURATION: '600' });
    await daemon.waitFor('btwall running');
    const restarted = banList();
    const elapsedS = (Date.now() - stoppedAt) / 1000;
    expect(restarted.enforced).toBe(true);
    expect(restarted.bans.map((b) => b.address)).toEqual([SERVER4, SERVER6]);
    expect(restarted.bans[0].remainingS).toBeLessThanOrEqual(stopped.bans[0].remainingS);
    // The same expiry, not a new ban: what was left less the time between the two lists (and their rounding).
    expect(restarted.bans[0].remainingS).toBeGreaterThanOrEqual(stopped.bans[0].remainingS - Math.ceil(elapsedS) - 1);
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(false);

    // A crashed daemon leaves its program attached (bans stay enforced); the next one replaces it.
    daemon.process.kill('SIGKILL');
    await daemon.exited;
    expect(banList().enforcedOn).toHaveLength(2);
    daemon = startDaemon(net.gateway, { ...env, BAN_DURATION: '600' });
    await daemon.waitFor('btwall running');
    expect(banList().enforcedOn).toHaveLength(2);
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(false);

    const lifted = bans('del', SERVER4);
    expect([lifted.status, lifted.stdout.trim()]).toEqual([0, `unbanned ${SERVER4}`]);
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(true);
    expect(await connects(net.client, SERVER6, SINK_PORT)).toBe(false);
    expect(bans('flush').stdout.trim()).toBe('removed 1 ban');
    expect(await connects(net.client, SERVER6, SINK_PORT)).toBe(true);
  });

  it("resets the connections a peer already had when it is banned: the client's next segment is answered by a reset with a right checksum", async () => {
    daemon = startDaemon(net.gateway, env);
    await daemon.waitFor('btwall running');
    const hold = peer(net.client, 'tcp-hold', SERVER4, SINK_PORT, 200, 15_000);
    while (!hold.lines.some((l) => l.event === 'connected')) await new Promise((r) => setTimeout(r, 50));
    const before = banList().dropped.v4.resets;
    await handshakeBans(SERVER4);
    // Without the reset the client would retransmit into the drop until its lifetime ended ('open').
    const [, ended] = await hold.done;
    expect(ended).toMatchObject({ event: 'error', code: 'ECONNRESET' });
    expect(banList().dropped.v4.resets).toBeGreaterThan(before);
    // The client checked the reset's checksum (it came through the gateway's stack, not offloaded) and found it right.
    expect(checksumErrors(net.client)).toBe(0);
  });

  it('lets a peer through again once its ban expires, and sweeps expired bans every CLEANUP_INTERVAL', async () => {
    daemon = startDaemon(net.gateway, { ...env, BAN_DURATION: '2', CLEANUP_INTERVAL: '1' });
    await daemon.waitFor('btwall running');
    const banned = await handshakeBans(SERVER4);
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(false);
    // Nothing will ever send to or from this one: only the sweep can delete it.
    expect(bans('add', '10.77.9.9', '--duration', '1').status).toBe(0);
    await new Promise((r) => setTimeout(r, Math.max(0, (banned.time as number) + 2200 - Date.now())));
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(true);
    await daemon.waitFor('ban sweep', {}, 3000);
    await new Promise((r) => setTimeout(r, 1200));
    expect(bans('del', '10.77.9.9').status).toBe(1);
    const sweeps = daemon.lines.filter((l) => l.msg === 'ban sweep');
    expect(sweeps.at(-1)?.bansSwept).toBeGreaterThanOrEqual(1);
  });

  it('bans a peer proven again soon after its ban ended for longer (BAN_ESCALATION), and bans list shows the count and expiry', async () => {
    daemon = startDaemon(net.gateway, { ...env, BAN_DURATION: '2', BAN_ESCALATION: 'factor=3,max=3600,window=60' });
    await daemon.waitFor('btwall running');
    const first = await handshakeBans(SERVER4);
    expect(first).toMatchObject({ durationS: 2, remainingS: 2, count: 1 });
    await new Promise((r) => setTimeout(r, Math.max(0, (first.time as number) + 2200 - Date.now())));
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(true);
    expect(banList().bans).toEqual([]);
    const second = await handshakeBans(SERVER4, 2);
    expect(second).toMatchObject({ durationS: 2, remainingS: 6 });
    expect(await connects(net.client, SERVER4, SINK_PORT)).toBe(false);
    const [listed] = banList().bans;
    const sinceBanS = (Date.now() - (second.time as number)) / 1000;
    expect(listed).toMatchObject({ address: SERVER4, count: 2, rule: 'handshake' });
    // Six seconds from the second ban, less the time since (a loaded machine makes it seconds).
    expect(listed.remainingS).toBeGreaterThanOrEqual(6 - Math.ceil(sinceBanS));
    expect(listed.remainingS).toBeLessThanOrEqual(6);
    expect(Math.abs(Date.parse(listed.expiresAt) - ((second.time as number) + 6000))).toBeLessThan(1500);
    const text = bans('list').stdout.split('\n');
    expect(text[0]).toMatch(/^ADDRESS\s+REMAINING\s+EXPIRES\s+COUNT\s+RULE$/);
    expect(text[1]).toMatch(new RegExp(`^${SERVER4.replace(/\./g, '\\.')}\\s+\\d+s\\s+\\S+Z\\s+2\\s+handshake$`));
  });

  it('attaches the program to a device matching a pattern when it appears, in the mode its driver has (auto), and releases it when it goes', async () => {
    const name = `btwhp${process.pid % 100000}`;
    daemon = startDaemon(net.gateway, { ...env, INTERFACE: `${env.INTERFACE},btwhp*` });
    await daemon.waitFor('btwall running');
    net.gateway.must('ip', ['link', 'add', `${name}a`, 'type', 'veth', 'peer', 'name', `${name}b`]);
    // A veth gets generic under auto, and so does a bridge, whose driver has no native XDP (the kernel's xdp-features say so).
    net.gateway.must('ip', ['link', 'add', `${name}c`, 'type', 'bridge']);
    try {
      for (const [device, mode, shown] of [
        [`${name}a`, 'generic', /\sxdpgeneric\s/],
        [`${name}b`, 'generic', /\sxdpgeneric\s/],
        [`${name}c`, 'generic', /\sxdpgeneric\s/],
      ] as const) {
        expect(await daemon.waitFor('XDP program attached', { interface: device })).toMatchObject({ kind: 'ethernet', mode, xdpMode: 'auto' });
        expect(net.gateway.must('ip', ['-o', 'link', 'show', device])).toMatch(shown);
      }
      expect(banList().enforcedOn).toEqual(expect.arrayContaining([{ name: `${name}a`, mode: 'generic' }, { name: `${name}b`, mode: 'generic' }, { name: `${name}c`, mode: 'generic' }]));
    } finally {
      net.gateway.run('ip', ['link', 'del', `${name}a`]);
      net.gateway.run('ip', ['link', 'del', `${name}c`]);
    }
    for (const device of [`${name}a`, `${name}b`, `${name}c`]) await daemon.waitFor('XDP interface gone; released', { interface: device });
    expect(await daemon.stop()).toBe(0);
    // Counted in the stats line (no sweep ran: CLEANUP_INTERVAL is 300 s; rtnetlink told of the changes).
    expect(daemon.lines.filter((l) => l.msg === 'stats').at(-1)).toMatchObject({ xdpAttachedLater: 3, xdpReleased: 3, xdpInterfaces: 2 });
    expect(banList().enforcedOn).toEqual([]);
  });

  it('with XDP_MODE=off runs without XDP, says so once at start, and btwall bans says the bans are not enforced', async () => {
    expect(bans('add', '10.77.9.10', '--duration', '60').stdout).toContain('NOT enforced');
    daemon = startDaemon(net.gateway, { ...env, INTERFACE: '', XDP_MODE: 'off' });
    const running = await daemon.waitFor('btwall running');
    expect(running.bansEnforced).toBe(false);
    expect(running.bans).toContain('NOT enforced in the kernel (XDP_MODE=off)');
    const warnings = daemon.lines.filter((l) => l.msg.startsWith('bans are NOT enforced in the kernel'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0].reason).toBe('XDP_MODE=off');
    expect(btwall(net.gateway, ['bans', 'list'], { BPF_PIN_DIR: pinDir, XDP_MODE: 'off' }).stdout).toContain('NOT enforced in the kernel: no btwall XDP program uses these maps in this network namespace (XDP_MODE=off');
    expect(net.gateway.must('ip', ['-o', 'link', 'show'])).not.toMatch(/xdp/);
  });
});
