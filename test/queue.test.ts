import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, peer, RunningDaemon, stopPeers } from './helpers/daemon.js';
import { canUseKernel, createNamespace, type Namespace } from './helpers/netns.js';

/**
 * The queue broker (native/btwall-queue.c) against the kernel, through NfQueue in a namespace of
 * its own: datagrams to 127.0.0.1:PORT there are queued. The moments that matter are made to
 * happen, not waited for: a late handler busy-waits.
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
});
