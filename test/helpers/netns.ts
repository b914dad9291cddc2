/** Network namespaces for kernel tests: unique names, created and deleted by the test, never a route out. */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

export interface Namespace {
  name: string;
  /** Runs a program inside the namespace (nsenter, so /sys/fs/bpf pins stay visible). */
  run(program: string, args: string[], input?: string): SpawnSyncReturns<string>;
  /** Like run, but throws with the program's stderr when it fails. */
  must(program: string, args: string[]): string;
  delete(): void;
}

function check(run: SpawnSyncReturns<string>, what: string): string {
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`${what} failed (${run.status}): ${run.stderr.trim()}`);
  return run.stdout;
}

/** A fresh namespace named `btw-<tag>-<pid>` with loopback up. */
export function createNamespace(tag: string): Namespace {
  const name = `btw-${tag}-${process.pid}`;
  spawnSync('ip', ['netns', 'del', name]);
  check(spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' }), `ip netns add ${name}`);
  const namespace: Namespace = {
    name,
    run: (program, args, input) => spawnSync('nsenter', [`--net=/run/netns/${name}`, program, ...args], { encoding: 'utf8', input }),
    must: (program, args) => check(namespace.run(program, args), `${program} ${args.join(' ')} in ${name}`),
    delete: () => void spawnSync('ip', ['netns', 'del', name]),
  };
  namespace.must('ip', ['link', 'set', 'lo', 'up']);
  return namespace;
}

/** The device of a namespace that holds an address. */
export function deviceWith(ns: Namespace, address: string): string {
  const line = ns.must('ip', ['-o', 'addr', 'show']).split('\n').find((l) => l.includes(` ${address}/`));
  if (!line) throw new Error(`no device with ${address} in ${ns.name}`);
  return line.split(/\s+/)[1];
}

/** Whether this process may create namespaces and has the tools: kernel tests need root. */
export function canUseKernel(): boolean {
  return process.getuid?.() === 0 && spawnSync('iptables', ['--version']).status === 0;
}

/**
 * client <-> gateway <-> server, dual-stack, addresses only inside the namespaces, no default
 * route anywhere: the gateway forwards between its two links and nothing else.
 */
export interface Topology {
  client: Namespace;
  gateway: Namespace;
  server: Namespace;
  /** The server's addresses as the client reaches them. */
  serverV4: string;
  serverV6: string;
  /** The client's link to the gateway, for extra addresses. */
  clientDevice: string;
  destroy(): void;
}

export function createTopology(tag: string): Topology {
  const client = createNamespace(`${tag}c`);
  const gateway = createNamespace(`${tag}g`);
  const server = createNamespace(`${tag}s`);
  // veth names must be unique on the host while they are created, and at most 15 characters.
  const id = `${tag}${process.pid % 100000}`.slice(0, 11);
  const [c0, g0, g1, s0] = [`${id}c0`, `${id}g0`, `${id}g1`, `${id}s0`];
  const host = (args: string[]) => check(spawnSync('ip', args, { encoding: 'utf8' }), `ip ${args.join(' ')}`);
  host(['link', 'add', c0, 'netns', client.name, 'type', 'veth', 'peer', 'name', g0, 'netns', gateway.name]);
  host(['link', 'add', s0, 'netns', server.name, 'type', 'veth', 'peer', 'name', g1, 'netns', gateway.name]);
  const address = (ns: Namespace, dev: string, v4: string, v6: string) => {
    ns.must('ip', ['addr', 'add', v4, 'dev', dev]);
    ns.must('ip', ['-6', 'addr', 'add', v6, 'dev', dev, 'nodad']);
    ns.must('ip', ['link', 'set', dev, 'up']);
  };
  address(client, c0, '10.77.1.2/24', 'fd77:1::2/64');
  address(gateway, g0, '10.77.1.1/24', 'fd77:1::1/64');
  address(gateway, g1, '10.77.2.1/24', 'fd77:2::1/64');
  address(server, s0, '10.77.2.2/24', 'fd77:2::2/64');
  client.must('ip', ['route', 'add', '10.77.2.0/24', 'via', '10.77.1.1']);
  client.must('ip', ['-6', 'route', 'add', 'fd77:2::/64', 'via', 'fd77:1::1']);
  server.must('ip', ['route', 'add', '10.77.1.0/24', 'via', '10.77.2.1']);
  server.must('ip', ['-6', 'route', 'add', 'fd77:1::/64', 'via', 'fd77:2::1']);
  gateway.must('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  gateway.must('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
  return {
    client,
    gateway,
    server,
    serverV4: '10.77.2.2',
    serverV6: 'fd77:2::2',
    clientDevice: c0,
    destroy: () => [client, gateway, server].forEach((ns) => ns.delete()),
  };
}
