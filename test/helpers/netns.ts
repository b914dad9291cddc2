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

/** Whether this process may create namespaces and has the tools: kernel tests need root. */
export function canUseKernel(): boolean {
  return process.getuid?.() === 0 && spawnSync('iptables', ['--version']).status === 0;
}
