import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, peer, startDaemon as startDaemonIn, stopPeers, type RunningDaemon } from './helpers/daemon.js';
import { canUseKernel, createTopology, deviceWith, type Namespace, type Topology } from './helpers/netns.js';

/**
 * The tests check what is decided, not how fast: a verdict deadline of seconds keeps a shared,
 * busy machine from turning a slow answer into a watchdog accept. The watchdog test sets its own.
 */
function startDaemon(ns: Namespace, env: Record<string, string>): RunningDaemon {
  return startDaemonIn(ns, { VERDICT_TIMEOUT_MS: '3000', ...env });
}

/** Packets that matched the BTWALL rule printed (by iptables -S) as `rule`. */
function ruleHits(ns: Namespace, rule: string): number {
  const lines = ns.must('iptables', ['-S', 'BTWALL', '-v']).split('\n');
  const line = lines.find((l) => l.replace(/ -c \d+ \d+/, '').endsWith(rule));
  return Number(/ -c (\d+) /.exec(line ?? '')?.[1] ?? -1);
}

/** The daemon's brokers (btwall-queue children), by pid. */
function brokers(daemon: RunningDaemon): number[] {
  const pid = daemon.process.pid!;
  const children = readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  return children.filter((child) => {
    try {
      return readFileSync(`/proc/${child}/comm`, 'utf8').trim() === 'btwall-queue';
    } catch {
      return false; // gone since it was listed
    }
  });
}

/** The datagrams a udp-sink counted. */
async function received(sink: ReturnType<typeof peer>): Promise<unknown> {
  return (await sink.done).at(-1)?.datagrams;
}

const closedConnections = (lines: Record<string, unknown>[]) => lines.filter((l) => l.event === 'closed');

function hooks(ns: Namespace): string[] {
  return ['iptables', 'ip6tables'].flatMap((p) => ns.must(p, ['-S']).split('\n').filter((l) => l.endsWith('-j BTWALL')));
}

describe.runIf(canUseKernel())('btwall run between a client and a server', () => {
  let net: Topology;
  let work: string;
  let daemon: RunningDaemon | null = null;
  let cert = '';
  let key = '';

  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    net = createTopology('d');
    work = mkdtempSync(join(tmpdir(), 'btwall-daemon-'));
    cert = join(work, 'cert.pem');
    key = join(work, 'key.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=server.test'], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(made.stderr);
  });
  afterEach(async () => {
    if (daemon && daemon.process.exitCode === null && daemon.process.signalCode === null) await daemon.stop();
    daemon = null;
  });
  afterAll(() => {
    stopPeers();
    net?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('drops a BitTorrent handshake at its first payload packet, over IPv4 and IPv6, and lets other traffic through', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: join(work, 'inline.log') });
    await daemon.waitFor('btwall running');
    for (const server of [net.serverV4, net.serverV6]) {
      const sink = peer(net.server, 'tcp-sink', 6881, 4000);
      await sink.ready;
      const [sent] = await peer(net.client, 'tcp-send', server, 6881, 'handshake', 1500).done;
      expect(sent.connected).toBe(1);
      const plainSink = peer(net.server, 'tcp-sink', 7000, 3000);
      await plainSink.ready;
      await peer(net.client, 'tcp-send', server, 7000, 'text', 500).done;
      // The connection was set up (SYN passes) but not one handshake byte reached the server,
      // and the cut (CUT_ESTABLISHED) reset the server's end: closed, empty.
      expect(closedConnections(await sink.done)).toEqual([{ event: 'closed', bytes: 0 }]);
      expect(closedConnections(await plainSink.done)).toEqual([{ event: 'closed', bytes: 18 }]);
    }
    // Each connection was cut at the handshake (CUT_ESTABLISHED): its conntrack entry deleted and
    // both ends reset, so the client does not retransmit into a black hole.
    const cuts = daemon.lines.filter((l) => l.msg === 'connection cut');
    expect(cuts.map((c) => [String(c.responder).endsWith(':6881'), c.conntrackDeleted])).toEqual([
      [true, true],
      [true, true],
    ]);
    const detections = daemon.lines.filter((l) => l.msg === 'BitTorrent detected');
    expect(detections.map((d) => [d.rule, d.action, d.destinationPort])).toEqual([
      ['handshake', 'dropped', 6881],
      ['handshake', 'dropped', 6881],
    ]);
    // The default format: one JSON record per line; with the default LOCAL_CIDRS both ends are local, so the initiator is.
    const records = readFileSync(join(work, 'inline.log'), 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records.map((r) => [r.rule, r.action, r.remote, r.local_ends, r.direction])).toEqual([
      ['handshake', 'drop', { address: net.serverV4, port: 6881 }, 2, 'local'],
      ['handshake', 'drop', { address: net.serverV6, port: 6881 }, 2, 'local'],
    ]);
  });

  it('drops all of a BitTorrent flow longer than INSPECT_PACKETS, and lets a clean one skip the queue', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '', INSPECT_PACKETS: '5' });
    await daemon.waitFor('btwall running');
    const sink = peer(net.server, 'udp-sink', 6890, 4000);
    await sink.ready;
    await peer(net.client, 'udp-send', net.serverV4, 6890, 'dht', 30, 20).done;
    const plain = peer(net.server, 'udp-sink', 6891, 4000);
    await plain.ready;
    await peer(net.client, 'udp-send', net.serverV4, 6891, 'text', 30, 20).done;
    // The first datagram decided the flow; the kernel dropped the other 29 by its connection mark.
    expect((await sink.done).at(-1)).toEqual({ event: 'received', datagrams: 0 });
    expect((await plain.done).at(-1)).toEqual({ event: 'received', datagrams: 30 });
    // The clean flow was marked at its first datagram: the other 29 returned by their connection mark.
    expect(ruleHits(net.gateway, '-m connmark --mark 0x40000000/0xc0000000 -j RETURN')).toBe(29);
  });

  it('serves a queue range with one worker per queue, each deciding its share of the connections', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '', QUEUE_NUM: '0-1' });
    await daemon.waitFor('btwall running');
    const sink = peer(net.server, 'tcp-sink', 6883, 8000);
    await sink.ready;
    // --queue-balance hashes addresses, not ports: connections from 16 client addresses spread over
    // both queues (all on one would happen 1 time in 32768).
    const locals = Array.from({ length: 16 }, (_, i) => `10.77.1.${100 + i}`);
    for (const address of locals) net.client.must('ip', ['addr', 'add', `${address}/24`, 'dev', net.clientDevice]);
    const [sent] = await peer(net.client, 'tcp-send', net.serverV4, 6883, 'handshake', 1500, 16, locals.join(',')).done;
    expect(sent.connected).toBe(16);
    // No byte reached the server; each connection's server end was reset by the cut.
    expect(closedConnections(await sink.done)).toEqual(Array.from({ length: 16 }, () => ({ event: 'closed', bytes: 0 })));
    // Earlier tests' orphaned sockets still retransmit their handshakes (and are caught again): count this port's.
    expect(daemon.lines.filter((l) => l.msg === 'BitTorrent detected' && l.destinationPort === 6883)).toHaveLength(16);
    expect(await daemon.stop()).toBe(0);
    const stats = daemon.lines.filter((l) => l.msg === 'stats');
    expect(stats).toHaveLength(1);
    const perQueue = stats[0].perQueue as Record<string, number>[];
    expect(perQueue.map((l) => l.queue)).toEqual([0, 1]);
    expect(perQueue.every((l) => l.packets > 0)).toBe(true);
    expect(stats[0].packets).toBe(perQueue[0].packets + perQueue[1].packets);
  });

  it('passes HTTPS downloads through the gateway intact, over IPv4 and IPv6', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    const server = peer(net.server, 'https-serve', 8443, cert, key, 4 << 20, 20000);
    await server.ready;
    for (const url of [`https://${net.serverV4}:8443/`, `https://[${net.serverV6}]:8443/`]) {
      const [got] = await peer(net.client, 'https-get', url).done;
      expect(got).toEqual({ status: 200, bytes: 4 << 20, sha256: server.lines[0].sha256 });
    }
    expect(daemon.lines.filter((l) => l.msg === 'BitTorrent detected')).toEqual([]);
  });

  it('survives kill -9 mid-transfer (traffic keeps flowing), and a restart leaves the rules exactly once', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    const server = peer(net.server, 'https-serve', 8444, cert, key, 6 << 20, 30000);
    await server.ready;
    // Read at 2 MB/s: the transfer is still running when the daemon dies.
    const download = peer(net.client, 'https-get', `https://${net.serverV4}:8444/`, 2_000_000).done;
    await new Promise((r) => setTimeout(r, 1000));
    daemon.process.kill('SIGKILL');
    await daemon.exited;
    const [got] = await download;
    expect(got).toEqual({ status: 200, bytes: 6 << 20, sha256: server.lines[0].sha256 });
    // The crash left the rules behind (bypass keeps traffic flowing); a restart must not stack them.
    expect(hooks(net.gateway)).toHaveLength(2);
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    expect(hooks(net.gateway)).toEqual(['-A FORWARD -j BTWALL', '-A FORWARD -j BTWALL']);
    expect(await daemon.stop()).toBe(0);
    expect(hooks(net.gateway)).toEqual([]);
  });

  it('keeps a low-rate flow going through the verdict watchdog while JavaScript is stopped', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '', VERDICT_TIMEOUT_MS: '50' });
    await daemon.waitFor('btwall running');
    const echo = peer(net.server, 'echo-serve', 7007, 20000);
    await echo.ready;
    daemon.process.kill('SIGSTOP');
    const [talk] = await peer(net.client, 'echo-talk', net.serverV4, 7007, 6, 100).done;
    daemon.process.kill('SIGCONT');
    expect(talk.exchanges).toBe(6);
    expect(Math.max(...(talk.rtts as number[]))).toBeLessThan(1000);
    expect(await daemon.stop()).toBe(0);
    const stats = daemon.lines.filter((l) => l.msg === 'stats').at(-1);
    expect(stats?.watchdogAccepted).toBeGreaterThan(0);
  });

  it('respawns a broker killed under traffic (its queue fails open meanwhile), and inspects again: a handshake sent afterwards is dropped', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    const [first] = brokers(daemon);
    const sink = peer(net.server, 'udp-sink', 7010, 6000);
    await sink.ready;
    // 1500 new flows over 3 s, every one's datagram queued; the broker dies a second in.
    const sent = peer(net.client, 'udp-send', net.serverV4, 7010, 'flows', 1500, 2).done;
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(first, 'SIGKILL');
    const died = await daemon.waitFor('queue broker died; its queue fails open until it is respawned');
    expect(died).toMatchObject({ queue: 0, attempt: 1, respawnInMs: 100 });
    expect(await daemon.waitFor('queue broker respawned')).toMatchObject({ queue: 0, attempt: 1 });
    const [second] = brokers(daemon);
    expect(second).not.toBe(first);
    expect((await sent)[0]).toEqual({ sent: 1500 });
    // Only what the dead broker held for a verdict is lost (the kernel drops a dead queue's packets).
    expect((await received(sink)) as number).toBeGreaterThan(1300);

    const handshakeSink = peer(net.server, 'tcp-sink', 6884, 3000);
    await handshakeSink.ready;
    const [connected] = await peer(net.client, 'tcp-send', net.serverV4, 6884, 'handshake', 1000).done;
    expect(connected.connected).toBe(1);
    // No byte reached the server, whose end the cut reset.
    expect(closedConnections(await handshakeSink.done)).toEqual([{ event: 'closed', bytes: 0 }]);
    await daemon.waitFor('BitTorrent detected', { destinationPort: 6884 });
    expect(daemon.running).toBe(true);
    expect(await daemon.stop()).toBe(0);
    const stats = daemon.lines.filter((l) => l.msg === 'stats').at(-1);
    expect(stats?.brokerRestarts).toBe(1);
    // The flows sent while the broker was dead passed the rules uninspected, and are counted so.
    expect(stats?.uninspectedRestarting).toBeGreaterThan(0);
  });

  it("counts what passes uninspected by cause, from the kernel's counters, and warns: a flood of new flows into a small queue", async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '', QUEUE_MAXLEN: '64', VERDICT_TIMEOUT_MS: '2000' });
    await daemon.waitFor('btwall running');
    const sink = peer(net.server, 'udp-sink', 7020, 7000);
    await sink.ready;
    // JavaScript stopped (the broker runs on): the kernel holds 64 packets for it, then fails open.
    daemon.process.kill('SIGSTOP');
    const [sent] = await peer(net.client, 'udp-send', net.serverV4, 7020, 'flows', 2000, 0).done;
    // Past the verdict deadline: what the broker holds goes to the watchdog.
    await new Promise((r) => setTimeout(r, 2500));
    daemon.process.kill('SIGCONT');
    expect(sent).toEqual({ sent: 2000 });
    // Failing open loses nothing.
    expect(await received(sink)).toBe(2000);
    expect(await daemon.stop()).toBe(0);
    const stats = daemon.lines.filter((l) => l.msg === 'stats').at(-1)! as Record<string, number>;
    // The queue rules saw every flow (and maybe some earlier test's retransmissions).
    expect(stats.seenByRules).toBeGreaterThanOrEqual(2000);
    // Each packet handed to the broker was decided or, past the deadline, accepted by the watchdog...
    expect(stats.uninspectedWatchdog).toBeGreaterThan(0);
    expect(stats.inspected + stats.uninspectedWatchdog).toBe(stats.packets);
    // ...and the kernel, holding at most QUEUE_MAXLEN (64) at a time, passed most flows by itself.
    expect(stats.packets).toBeLessThan(1000);
    expect(stats.uninspectedQueueFull).toBeGreaterThan(1000);
    expect(stats.uninspectedQueueFull + stats.uninspectedWatchdog + stats.uninspectedRestarting).toBe(stats.uninspected);
    expect(stats.inspected + stats.uninspected + stats.kernelDropped).toBe(stats.seenByRules);
    const warning = daemon.lines.find((l) => l.msg.startsWith('uninspected traffic'));
    expect(warning).toMatchObject({ cause: 'uninspectedQueueFull', msg: expect.stringContaining('the queue was full (kernel bypass): raise QUEUE_MAXLEN') });
    expect(warning!.sharePercent).toBeGreaterThan(50);
  });

  it('stops, saying why, and removes its rules when respawned brokers keep dying', async () => {
    daemon = startDaemon(net.gateway, { DETECTION_LOG: '' });
    await daemon.waitFor('btwall running');
    // Each respawned broker is killed as soon as it runs: 6 respawns (0.1 s ... 3.2 s apart), then it gives up.
    let killed = 0;
    while (daemon.running && killed < 10) {
      const pids = brokers(daemon);
      if (pids.length > 0 && daemon.lines.filter((l) => l.msg === 'queue broker respawned').length === killed) {
        process.kill(pids[0], 'SIGKILL');
        killed++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await daemon.exited).toBe(1);
    expect(killed).toBe(7);
    expect(daemon.lines.find((l) => l.msg === 'queue broker keeps dying; stopping')?.reason).toBe('btwall-queue for queue 0 kept failing: 6 respawns in a row died within 10 s or could not bind the queue; last: btwall-queue exited (SIGKILL)');
    expect(hooks(net.gateway)).toEqual([]);
  });

  it('in monitor-only mode lets BitTorrent through and logs the drop and the ban it would have made', async () => {
    const logPath = join(work, 'monitor.log');
    daemon = startDaemon(net.gateway, { MONITOR_ONLY: 'true', DETECTION_LOG: logPath, DETECTION_LOG_FORMAT: 'text', LOCAL_CIDRS: '10.77.1.0/24' });
    await daemon.waitFor('btwall running');
    // A remote peer connects in and proves itself: drop mode would drop the flow and ban the peer.
    const sink = peer(net.client, 'tcp-sink', 6882, 3000);
    await sink.ready;
    await peer(net.server, 'tcp-send', '10.77.1.2', 6882, 'handshake', 800).done;
    expect(closedConnections(await sink.done)).toEqual([{ event: 'closed', bytes: 68 }]);
    // Earlier tests' orphaned sockets may still retransmit their handshakes: this port's detection.
    const detection = await daemon.waitFor('BitTorrent detected', { destinationPort: 6882 });
    expect(detection).toMatchObject({ action: 'monitor only (accepted; would drop)', ban: `would ban ${net.serverV4} for 18000 s` });
    const log = readFileSync(logPath, 'utf8');
    expect(log).toContain('Detection:    handshake');
    expect(log).toContain('Evidence:     exact, from the initiator');
    expect(log).toContain('Action:       monitor only (accepted; would drop)');
    expect(log).toContain(`Ban:          would ban ${net.serverV4} for 18000 s`);
    expect(log).toContain(`Reason:       ban: ${net.serverV4} sent handshake bytes (exact) over TCP after a handshake seen both ways`);
    // Nothing reached a ban sink, not even the dry-run one.
    expect(daemon.lines.some((l) => l.msg === 'ban (dry run: not enforced in the kernel)' || l.msg === 'banned')).toBe(false);
  });

  it('applies RULES_FILE, reloads it at SIGHUP, and keeps the rules in force when the new file is broken', async () => {
    const rulesPath = join(work, 'rules.json');
    const rule = (action: string) => JSON.stringify({ rules: [{ name: 'hello-text', transport: 'tcp', direction: 'initiator', match: [{ text: 'hello, plain', offset: 0 }], action }] });
    writeFileSync(rulesPath, rule('drop'));
    daemon = startDaemon(net.gateway, { RULES_FILE: rulesPath, DETECTION_LOG: '' });
    expect(await daemon.waitFor('btwall running')).toMatchObject({ operatorRules: 1 });
    /** Sends the test text from the client to a fresh port; the bytes the server got. */
    let port = 7100;
    const sendText = async () => {
      const sink = peer(net.server, 'tcp-sink', port, 2500);
      await sink.ready;
      await peer(net.client, 'tcp-send', net.serverV4, port++, 'text', 600).done;
      return closedConnections(await sink.done).reduce((sum, c) => sum + Number(c.bytes), 0);
    };
    expect(await sendText()).toBe(0);
    expect(await daemon.waitFor('BitTorrent detected', { rule: 'hello-text', destinationPort: 7100 })).toMatchObject({ action: 'dropped', evidence: 'heuristic, from the initiator' });

    writeFileSync(rulesPath, rule('monitor'));
    daemon.process.kill('SIGHUP');
    await daemon.waitFor('configuration reloaded', { operatorRules: 1 });
    expect(await sendText()).toBe(18);
    expect(await daemon.waitFor('BitTorrent detected', { rule: 'hello-text', destinationPort: 7101 })).toMatchObject({ action: 'monitor (accepted: the rule only watches)' });

    writeFileSync(rulesPath, '{"rules": [{"name": "hello-text", "match": [{"regex": "(", "within": 4}]}]}');
    daemon.process.kill('SIGHUP');
    const refused = await daemon.waitFor('reload refused; the configuration in force stays');
    expect(refused.problems).toEqual([expect.stringMatching(/^RULES_FILE=".*rules\.json": .*rules\.json: line 1, column 55: rules\.0\.match\.0\.regex: unclosed \(/)]);
    expect(await sendText()).toBe(18);
    expect(await daemon.waitFor('BitTorrent detected', { rule: 'hello-text', destinationPort: 7102 })).toMatchObject({ action: 'monitor (accepted: the rule only watches)' });
  });

  it('refuses a broken or senseless RULES_FILE with exit code 78, naming the place and the reason, before installing any rule', async () => {
    const rulesPath = join(work, 'refused-rules.json');
    for (const [text, reason] of [
      ['{"rules": [{"name": "x", "match": [{"hex": "zz"}]}]}', /RULES_FILE=".*refused-rules\.json": .*line 1, column 44: rules\.0\.match\.0\.hex: must be pairs of hex digits/],
      ['{"rules": [{"name": "everything", "match": [{"regex": ".*", "within": 10}]}]}', /rule everything matches any payload/],
    ] as const) {
      writeFileSync(rulesPath, text);
      const bad = startDaemon(net.gateway, { RULES_FILE: rulesPath });
      expect(await bad.exited).toBe(78);
      expect(bad.stderr).toMatch(reason);
      expect(hooks(net.gateway)).toEqual([]);
    }
  });

  it('rejects each invalid variable with exit code 78 before installing any rule', async () => {
    for (const [name, value] of [
      ['QUEUE_NUM', '70000'],
      ['CHAINS', 'PREROUTING'],
      ['BAN_DURATION', 'forever'],
      ['MONITOR_ONLY', 'perhaps'],
      ['ALLOW_CIDRS', '10.0.0.0/99'],
      ['INSPECT_PACKETS', '0'],
      ['VERDICT_TIMEOUT_MS', 'soon'],
    ]) {
      const bad = startDaemon(net.gateway, { [name]: value });
      expect(await bad.exited).toBe(78);
      expect(bad.stderr).toContain(`${name}=${JSON.stringify(value)}`);
      expect(hooks(net.gateway)).toEqual([]);
    }
  });

  it('refuses with exit code 78 what this machine cannot do, naming the variable, with nothing installed', async () => {
    const link = deviceWith(net.gateway, '10.77.1.1');
    const pinDir = `/sys/fs/bpf/btwall-test-${process.pid}-refused`;
    const refused: [Record<string, string>, string, RegExp][] = [
      [{ INTERFACE: '', XDP_MODE: 'generic' }, 'INTERFACE=""', /set XDP_MODE=off to run without kernel bans/],
      [{ INTERFACE: `${link},btwnope0` }, `INTERFACE="${link},btwnope0"`, /no interface btwnope0 in this network namespace/],
      [{ INTERFACE: link, XDP_MODE: 'offload' }, 'XDP_MODE="offload"', new RegExp(`${link} cannot run XDP programs on the NIC itself`)],
      [{ INTERFACE: 'lo', XDP_MODE: 'native' }, 'XDP_MODE="native"', /lo has no native XDP support/],
      [{ INTERFACE: link, BPF_PIN_DIR: join(work, 'pins') }, `BPF_PIN_DIR="${join(work, 'pins')}"`, /is not on a bpf filesystem/],
      [{ INTERFACE: link, FLOW_CAPACITY: '67108864' }, 'FLOW_CAPACITY="67108864"', /more than the 4096 MB one array can hold/],
      // 64 queues of 16 M flows: over 300 GB, more than any machine this runs on has available.
      [{ INTERFACE: link, FLOW_CAPACITY: '8388608', QUEUE_NUM: '0-63' }, 'FLOW_CAPACITY="8388608"', /the tables need \d+ MB .* but this machine has \d+ MB available \(MemAvailable in \/proc\/meminfo\)/],
    ];
    for (const [env, named, problem] of refused) {
      const bad = startDaemon(net.gateway, { BPF_PIN_DIR: pinDir, ...env });
      expect(await bad.exited).toBe(78);
      expect(bad.stderr).toContain(named);
      expect(bad.stderr).toMatch(problem);
      expect(bad.lines).toEqual([]);
      // Nothing touched: no chain, no hook, no XDP program, no pins.
      expect(['iptables', 'ip6tables'].flatMap((p) => net.gateway.must(p, ['-S']).split('\n')).filter((l) => l.includes('BTWALL'))).toEqual([]);
      expect(net.gateway.must('ip', ['-o', 'link', 'show'])).not.toMatch(/xdp/);
      expect(existsSync(pinDir)).toBe(false);
    }
  });

  it('refuses an unsafe DETECTION_LOG with exit code 78, naming it, before installing any rule; a planted link leaves its target untouched', async () => {
    const target = join(work, 'precious');
    writeFileSync(target, 'keep me\n');
    chmodSync(target, 0o644);
    mkdirSync(join(work, 'linked'), { mode: 0o700 });
    symlinkSync(target, join(work, 'linked', 'detections.log'));
    mkdirSync(join(work, 'shared'));
    chmodSync(join(work, 'shared'), 0o775);
    for (const [path, problem] of [
      [join(work, 'linked', 'detections.log'), 'is a symbolic link'],
      [join(work, 'shared', 'detections.log'), `the directory ${join(work, 'shared')} is writable by group or others`],
      [join(target, 'sub', 'detections.log'), `cannot create the directory ${join(target, 'sub')}`],
    ]) {
      const bad = startDaemon(net.gateway, { DETECTION_LOG: path });
      expect(await bad.exited).toBe(78);
      expect(bad.stderr).toContain(`DETECTION_LOG=${JSON.stringify(path)}: `);
      expect(bad.stderr).toContain(problem);
      expect(hooks(net.gateway)).toEqual([]);
      expect(net.gateway.run('iptables', ['-S', 'BTWALL']).status).not.toBe(0);
    }
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
    expect(statSync(target).mode & 0o777).toBe(0o644);
    expect(existsSync(join(work, 'shared', 'detections.log'))).toBe(false);
  });
});
