/** `btwall run` and the lab's peer programs (peers.mjs) inside test namespaces, their output collected as it comes. */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Namespace, Topology } from './netns.js';

const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/cli/main.js');
const PEERS = join(ROOT, 'test/helpers/peers.mjs');
const BT_CLIENT = join(ROOT, 'test/helpers/bt-client.py');
/** Debian's interpreter, where python3-libtorrent is (`python3` on PATH may be another). */
const SYSTEM_PYTHON = '/usr/bin/python3';

export interface LogLine {
  msg: string;
  [key: string]: unknown;
}

/** Calls `onLine` with each complete line of a child's output. */
function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (text: string) => {
    pending += text;
    const complete = pending.split('\n');
    pending = complete.pop() ?? '';
    for (const line of complete) if (line.trim()) onLine(line);
  });
}

export class RunningDaemon {
  readonly lines: LogLine[] = [];
  readonly exited: Promise<number | null>;
  stderr = '';

  constructor(readonly process: ChildProcess) {
    lines(process.stdout!, (line) => this.lines.push(JSON.parse(line) as LogLine));
    process.stderr!.setEncoding('utf8').on('data', (text: string) => (this.stderr += text));
    this.exited = new Promise((done) => process.on('exit', (code) => done(code)));
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** The first log line with this message (and these fields), waiting up to `ms`. */
  async waitFor(msg: string, fields: Record<string, unknown> = {}, ms = 10_000): Promise<LogLine> {
    const deadline = Date.now() + ms;
    for (;;) {
      const line = this.lines.find((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
      if (line) return line;
      if (!this.running || Date.now() > deadline) throw new Error(`no "${msg}" ${JSON.stringify(fields)} from the daemon; stderr: ${this.stderr}; log: ${JSON.stringify(this.lines)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<number | null> {
    this.process.kill('SIGTERM');
    return this.exited;
  }
}

/** Stops a daemon a test left running (a failed assertion skips the test's own stop). */
/** A lab test's afterAll: stops the daemon and the peers, removes the namespaces and the given paths (pins, work directory). */
export async function tearDownLab(daemon: RunningDaemon | null, net: Topology | undefined, paths: (string | undefined)[]): Promise<void> {
  await stopIfRunning(daemon);
  stopPeers();
  net?.destroy();
  for (const path of paths) if (path) rmSync(path, { recursive: true, force: true });
}

export async function stopIfRunning(daemon: RunningDaemon | null): Promise<void> {
  if (daemon?.running) await daemon.stop();
}

/**
 * `btwall run` in the namespace (nsenter: pinned BPF objects stay visible), logging at info.
 * Without INTERFACE it runs with XDP_MODE=off (the daemon refuses to run without kernel bans unless told).
 * Without CONTROL_SOCKET it serves none: a unix socket's path is shared by every network
 * namespace, and test files run their daemons at the same time.
 */
export function startDaemon(ns: Namespace, env: Record<string, string>): RunningDaemon {
  const child = spawn('nsenter', [`--net=/run/netns/${ns.name}`, process.execPath, CLI, 'run'], {
    env: { ...process.env, LOG_LEVEL: 'info', CONTROL_SOCKET: '', ...(env.INTERFACE === undefined ? { XDP_MODE: 'off' } : {}), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new RunningDaemon(child);
}

/** Another btwall command in the namespace, run to its end. */
export function btwall(ns: Namespace, args: string[], env: Record<string, string>): SpawnSyncReturns<string> {
  return spawnSync('nsenter', [`--net=/run/netns/${ns.name}`, process.execPath, CLI, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
}

/** Every peer still running; a test's afterAll stops them with stopPeers. */
const peers = new Set<ChildProcess>();

export interface Peer {
  lines: Record<string, unknown>[];
  /** Resolves with every line once the program ended. */
  done: Promise<Record<string, unknown>[]>;
  /** Resolves when a server printed {"event":"listening"}; rejects if it ended first. */
  ready: Promise<void>;
}

/** A peers.mjs program (tcp-sink, tcp-send, ...) in a namespace, in the background. */
export function peer(ns: Namespace, ...args: (string | number)[]): Peer {
  return background(ns, [process.execPath, PEERS, ...args.map(String)]);
}

/** The real BitTorrent client (bt-client.py: seed, leech) in a namespace, in the background. */
export function btClient(ns: Namespace, ...args: (string | number)[]): Peer {
  return background(ns, [SYSTEM_PYTHON, BT_CLIENT, ...args.map(String)]);
}

/** A program printing JSON lines, in a namespace, in the background. */
function background(ns: Namespace, argv: string[]): Peer {
  const child = spawn('nsenter', [`--net=/run/netns/${ns.name}`, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  peers.add(child);
  child.on('exit', () => peers.delete(child));
  const found: Record<string, unknown>[] = [];
  let announce: () => void;
  const ready = new Promise<void>((resolve, reject) => {
    announce = resolve;
    child.on('exit', (code) => reject(new Error(`${argv.slice(1).join(' ')} exited (${code}) before listening`)));
  });
  // Clients never listen: only a caller that awaits `ready` hears of it.
  ready.catch(() => {});
  lines(child.stdout, (line) => {
    const value = JSON.parse(line) as Record<string, unknown>;
    found.push(value);
    if (value.event === 'listening') announce();
  });
  return { lines: found, done: new Promise((r) => child.on('exit', () => r(found))), ready };
}

/** Whether a new TCP connection from `from` to host:port is set up (through whatever gateway lies between). */
export async function connects(from: Namespace, host: string, port: number): Promise<boolean> {
  const [sent] = await peer(from, 'tcp-send', host, port, 'text', 700).done;
  return Number(sent.connected) > 0;
}

export function stopPeers(): void {
  for (const child of peers) child.kill('SIGKILL');
}
