import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, peer, RunningDaemon, stopPeers } from './helpers/daemon.js';
import { canUseKernel, createNamespace, type Namespace } from './helpers/netns.js';

/**
 * The queue broker (native/btwall-queue.c) against the kernel, through NfQueue in a namespace of
 * its own: datagrams to 127.0.0.1:PORT there are queued. The moments that matter (a late handler,
 * a stop signal at the wrong time, a lost notice, a refused verdict) are made to happen, not waited
 * for: the handler busy-waits, and strace injects the signal or the error into one given sendto.
 */
const PROBE = resolve(import.meta.dirname, 'helpers/queue-probe.mjs');
const QUEUE = 5;
const PORT = 7100;

function startProbe(ns: Namespace, verdictTimeoutMs: number, first: string): RunningDaemon {
  const child = spawn('nsenter', [`--net=/run/netns/${ns.name}`, process.execPath, PROBE, String(QUEUE), String(verdictTimeoutMs), first], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new RunningDaemon(child);
}

interface Trace {
  process: ChildProcess;
  /** What strace printed so far: the sendto calls, marked (INJECTED) where it tampered. */
  output(): string;
}

const traces = new Set<ChildProcess>();

/** strace on one thread (a pid: its main thread), tampering with its sendto calls as `inject` says; resolves once attached. */
async function trace(pid: number, inject: string): Promise<Trace> {
  const child = spawn('strace', ['-p', String(pid), '-e', 'trace=sendto', '-e', `inject=sendto:${inject}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  traces.add(child);
  let text = '';
  await new Promise<void>((attached, failed) => {
    child.stderr.setEncoding('utf8').on('data', (more: string) => {
      text += more;
      if (text.includes('attached')) attached();
    });
    child.on('exit', (code) => failed(new Error(`strace exited (${code}): ${text}`)));
  });
  return { process: child, output: () => text };
}

/** The datagrams a udp-sink on PORT counted. */
async function received(sink: ReturnType<typeof peer>): Promise<unknown> {
  return (await sink.done).at(-1)?.datagrams;
}

describe.runIf(canUseKernel())('the queue broker', () => {
  let ns: Namespace;
  let probe: RunningDaemon | null = null;

  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('build first: make test builds before testing');
    ns = createNamespace('bq');
    ns.must('iptables', ['-A', 'OUTPUT', '-o', 'lo', '-p', 'udp', '--dport', String(PORT), '-j', 'NFQUEUE', '--queue-num', String(QUEUE), '--queue-bypass']);
  });
  afterEach(async () => {
    for (const child of traces) child.kill('SIGKILL');
    traces.clear();
    if (probe?.running) await probe.stop();
    probe = null;
  });
  afterAll(() => {
    stopPeers();
    ns?.delete();
  });

  /** Stops the probe; its last counters. */
  async function closed(): Promise<Record<string, unknown>> {
    expect(await probe!.stop()).toBe(0);
    return probe!.lines.find((l) => l.msg === 'closed')!;
  }

  it('never refills a slot the watchdog took from a late handler until the handler lets go of it', async () => {
    probe = startProbe(ns, 50, 'hold:1500');
    await probe.waitFor('ready');
    const sink = peer(ns, 'udp-sink', PORT, 10_000);
    await sink.ready;
    // 100 datagrams, each unlike the others, mostly while the handler holds the first: the watchdog
    // accepts them batch after batch, round all the slots many times over.
    const sent = peer(ns, 'udp-send', '127.0.0.1', PORT, 'numbered', 100, 10).done;
    const held = await probe.waitFor('held', {}, 20_000);
    expect(held.packets).toBeGreaterThan(0);
    expect(held.unchanged).toBe(true);
    await sent;
    const stats = await closed();
    expect(stats.abandoned).toBe(1);
    expect(stats.lateAnswers).toBe(1);
    expect(stats.watchdogAccepted).toBeGreaterThan(held.packets as number);
    // Failing open: nothing was lost on the way.
    expect(await received(sink)).toBe(100);
  });

  it('stops at a SIGTERM that comes after its loop checked for one and before it waits', async () => {
    // The handler holds the only batch: the watchdog's accept is the broker's 2nd sendto after the
    // notice, done between its stop check and its wait; SIGTERM comes with that sendto. Nothing
    // else would wake the broker until the handler returns, so it must stop while the handler holds.
    probe = startProbe(ns, 50, 'hold:8000');
    const ready = await probe.waitFor('ready');
    const tracer = await trace(ready.broker as number, 'signal=SIGTERM:when=2');
    await peer(ns, 'udp-send', '127.0.0.1', PORT, 'numbered', 1, 0).done;
    const held = await probe.waitFor('held', {}, 20_000);
    expect(tracer.output()).toContain('SIGTERM');
    expect(held.brokerGoneMs).toEqual(expect.any(Number));
    await probe.waitFor('broker-exit');
  });

  it('settles an answered batch whose notice was lost, without letting a later batch verdict it', async () => {
    // The first batch is dropped, but the notice of that answer is lost (the probe's first sendto
    // fails); the second is accepted. A VERDICT_BATCH for the second would accept the first too.
    probe = startProbe(ns, 30_000, 'drop');
    await probe.waitFor('ready');
    const tracer = await trace(probe.process.pid!, 'error=EAGAIN:when=1');
    const sink = peer(ns, 'udp-sink', PORT, 5000);
    await sink.ready;
    await peer(ns, 'udp-send', '127.0.0.1', PORT, 'numbered', 2, 300).done;
    // Both decided long before the first batch's deadline (30 s).
    await probe.waitFor('stats', { verdicts: 2 }, 10_000);
    expect(tracer.output()).toMatch(/EAGAIN.*\(INJECTED\)/);
    const stats = await closed();
    expect([stats.verdicts, stats.watchdogAccepted, stats.sendErrors, stats.lateAnswers]).toEqual([2, 0, 0, 0]);
    expect(await received(sink)).toBe(1);
  });

  it('counts a verdict the kernel refuses and accepts its packets rather than leave them queued', async () => {
    // The handler drops the datagram; the broker's sendto of that verdict (its 2nd, after the notice) fails.
    probe = startProbe(ns, 3000, 'drop');
    const ready = await probe.waitFor('ready');
    const tracer = await trace(ready.broker as number, 'error=ENOBUFS:when=2');
    const sink = peer(ns, 'udp-sink', PORT, 5000);
    await sink.ready;
    await peer(ns, 'udp-send', '127.0.0.1', PORT, 'numbered', 1, 0).done;
    await probe.waitFor('stats', { sendErrors: 1 }, 10_000);
    expect(tracer.output()).toMatch(/sendto\((?!3,)\d+,.*ENOBUFS.*\(INJECTED\)/);
    const stats = await closed();
    expect([stats.sendErrors, stats.verdicts, stats.watchdogAccepted]).toEqual([1, 0, 0]);
    expect(await received(sink)).toBe(1);
  });
});
