/**
 * A client <-> gateway <-> server namespace lab for benchmarks run as root: unique names, addresses
 * only inside the namespaces, no default route anywhere, and every process started in it tracked
 * so that `destroy` can stop them before the namespaces go.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';

export interface LabNamespace {
  name: string;
  /** Runs a program inside the namespace (nsenter: /sys/fs/bpf pins stay visible) and waits for it. */
  run(program: string, args: string[]): SpawnSyncReturns<string>;
  /** Like run, but throws with the program's stderr when it fails. */
  must(program: string, args: string[]): string;
  /** Starts a program inside the namespace in the background; the lab stops it on destroy. */
  start(program: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess;
}

/** Where the lab's two links live: `${v4}.1.0/24` and `${v6}:1::/64` client side, `.2` server side. */
export interface LabNetworks {
  /** The first two octets, e.g. '10.91'. */
  v4: string;
  /** The first hextet, e.g. 'fd91'. */
  v6: string;
}

export interface Lab {
  client: LabNamespace;
  gateway: LabNamespace;
  server: LabNamespace;
  serverV4: string;
  serverV6: string;
  /** Stops every process started in the lab (SIGTERM, then SIGKILL), then deletes the namespaces. */
  destroy(): Promise<void>;
}

function check(run: SpawnSyncReturns<string>, what: string): string {
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`${what} failed (${run.status}): ${run.stderr.trim()}`);
  return run.stdout;
}

/** Processes started in a lab whose output has been read to the end ('close' comes after 'exit'). */
const closed = new WeakSet<ChildProcess>();

/** Resolves when the process has exited and its output is all read, or after `ms` (then with false). */
export function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (closed.has(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Creates the lab: namespaces `btw-<tag><c|g|s>-<pid>`, veths `<tag><pid><c0|g0|g1|s0>`, the gateway
 * forwarding between its two links and nothing else.
 */
export function createLab(tag: string, nets: LabNetworks): Lab {
  const children = new Set<ChildProcess>();
  const names: string[] = [];
  const namespace = (role: string): LabNamespace => {
    const name = `btw-${tag}${role}-${process.pid}`;
    spawnSync('ip', ['netns', 'del', name]);
    check(spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' }), `ip netns add ${name}`);
    names.push(name);
    const enter = `--net=/run/netns/${name}`;
    const ns: LabNamespace = {
      name,
      run: (program, args) => spawnSync('nsenter', [enter, program, ...args], { encoding: 'utf8' }),
      must: (program, args) => check(ns.run(program, args), `${program} ${args.join(' ')} in ${name}`),
      start: (program, args, env) => {
        const child = spawn('nsenter', [enter, program, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
        children.add(child);
        child.once('close', () => {
          closed.add(child);
          children.delete(child);
        });
        return child;
      },
    };
    ns.must('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  };
  const destroy = async () => {
    const running = [...children];
    for (const child of running) child.kill('SIGTERM');
    await Promise.all(running.map(async (child) => (await exited(child, 2000)) || child.kill('SIGKILL')));
    await Promise.all(running.map((child) => exited(child, 2000)));
    for (const name of names) spawnSync('ip', ['netns', 'del', name]);
  };
  try {
    const client = namespace('c');
    const gateway = namespace('g');
    const server = namespace('s');
    // veth names must be unique on the host while they are created, and at most 15 characters.
    const id = `${tag}${process.pid % 100000}`.slice(0, 11);
    const [c0, g0, g1, s0] = [`${id}c0`, `${id}g0`, `${id}g1`, `${id}s0`];
    const host = (args: string[]) => check(spawnSync('ip', args, { encoding: 'utf8' }), `ip ${args.join(' ')}`);
    host(['link', 'add', c0, 'netns', client.name, 'type', 'veth', 'peer', 'name', g0, 'netns', gateway.name]);
    host(['link', 'add', s0, 'netns', server.name, 'type', 'veth', 'peer', 'name', g1, 'netns', gateway.name]);
    const { v4, v6 } = nets;
    const address = (ns: LabNamespace, dev: string, link: number, host: number) => {
      ns.must('ip', ['addr', 'add', `${v4}.${link}.${host}/24`, 'dev', dev]);
      ns.must('ip', ['-6', 'addr', 'add', `${v6}:${link}::${host}/64`, 'dev', dev, 'nodad']);
      ns.must('ip', ['link', 'set', dev, 'up']);
    };
    address(client, c0, 1, 2);
    address(gateway, g0, 1, 1);
    address(gateway, g1, 2, 1);
    address(server, s0, 2, 2);
    client.must('ip', ['route', 'add', `${v4}.2.0/24`, 'via', `${v4}.1.1`]);
    client.must('ip', ['-6', 'route', 'add', `${v6}:2::/64`, 'via', `${v6}:1::1`]);
    server.must('ip', ['route', 'add', `${v4}.1.0/24`, 'via', `${v4}.2.1`]);
    server.must('ip', ['-6', 'route', 'add', `${v6}:1::/64`, 'via', `${v6}:2::1`]);
    gateway.must('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    gateway.must('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
    return { client, gateway, server, serverV4: `${v4}.2.2`, serverV6: `${v6}:2::2`, destroy };
  } catch (error) {
    for (const name of names) spawnSync('ip', ['netns', 'del', name]);
    throw error;
  }
}

/** A child's output, collected as it comes. */
export function output(child: ChildProcess): { stdout: string; stderr: string } {
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (out.stdout += text));
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (out.stderr += text));
  return out;
}

/** Waits for the child to exit by itself within `ms`, else kills it and throws. */
export async function finish(child: ChildProcess, ms: number, what: string): Promise<void> {
  if (await exited(child, ms)) return;
  child.kill('SIGKILL');
  throw new Error(`${what} did not finish within ${ms} ms`);
}

export async function poll(what: string, ms: number, ready: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface LogLine {
  msg: string;
  [key: string]: unknown;
}

/** The daemon's JSON log lines, collected into `lines` as they come. */
export function collectLogLines(child: ChildProcess, lines: LogLine[]): void {
  let pending = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    pending += text;
    const complete = pending.split('\n');
    pending = complete.pop() ?? '';
    for (const line of complete) if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine);
  });
}
