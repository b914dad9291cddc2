/**
 * What a benchmark needs before it starts, got or named: every `npm run bench:*` calls
 * `requireOrExit` first. Missing commands are installed from Debian's archive (as root, when the
 * archive has their package: through the Makefile's apt-deps, the one place that knows how a
 * package such as crowdsec installs offline); the reference tools of ../shared/bench are built into
 * this project (build/bench-tools, from the shared sources, never into ../shared); anything else
 * missing is named with how to get it, and the bench exits with EXIT_UNAVAILABLE before it has
 * touched anything.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The shared reference tools' sources and Makefile. */
export const SHARED_BENCH = resolve(ROOT, '../shared/bench');
/** Where they are built for this project. */
export const BENCH_TOOLS = resolve(ROOT, 'build/bench-tools');
/** sysexits.h EX_UNAVAILABLE: something the bench needs is not there. */
export const EXIT_UNAVAILABLE = 69;

/** The targets of ../shared/bench/Makefile, with the Debian packages that build them (the Makefile's header). */
export const SHARED_TOOLS = {
  'nfq-batch': ['make', 'gcc', 'libnetfilter-queue-dev', 'libmnl-dev'],
  'nfq-delay': ['make', 'gcc', 'libnetfilter-queue-dev', 'libmnl-dev'],
  udpflood: ['make', 'gcc'],
  udpsink: ['make', 'gcc'],
  'xdp_drop.o': ['make', 'clang', 'libbpf-dev'],
} as const;
export type SharedTool = keyof typeof SHARED_TOOLS;

export interface Needs {
  /** Why the bench must run as root; absent: it need not. */
  root?: string;
  /** Commands on PATH, each with the Debian package that has it. */
  commands?: Record<string, string>;
  /** Reference tools built from ../shared/bench into BENCH_TOOLS. */
  sharedTools?: SharedTool[];
  /** Files that must exist, each with how to get it (btwall's build, a corpus). */
  files?: Record<string, string>;
}

/** The host as the checks see it: injectable, so the messages are unit-tested without changing the machine. */
export interface BenchHost {
  isRoot(): boolean;
  hasCommand(command: string): boolean;
  /** Whether dpkg has the package installed. */
  hasPackage(name: string): boolean;
  /** Whether the archive this machine uses has the package (refreshing the lists once when it does not). */
  inArchive(name: string): boolean;
  /** Installs the packages; null when it worked, else what went wrong. */
  install(names: string[]): string | null;
  /** Builds the tools from SHARED_BENCH into `dir`; null when it worked, else what went wrong. */
  build(tools: SharedTool[], dir: string): string | null;
  exists(path: string): boolean;
}

const output = (run: ReturnType<typeof spawnSync>) => `${run.stderr ?? ''}${run.stdout ?? ''}`.trim() || (run.error?.message ?? `exit ${run.status}`);

function candidate(name: string): boolean {
  const policy = spawnSync('apt-cache', ['policy', name], { encoding: 'utf8' });
  const version = /^\s*Candidate:\s*(\S+)/m.exec(policy.stdout ?? '')?.[1];
  return version !== undefined && version !== '(none)';
}

let listsRefreshed = false;

export const thisHost: BenchHost = {
  isRoot: () => process.getuid?.() === 0,
  hasCommand: (command) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { stdio: 'ignore' }).status === 0,
  hasPackage: (name) => /install ok installed/.test(spawnSync('dpkg-query', ['-W', '-f=${Status}', name], { encoding: 'utf8' }).stdout ?? ''),
  inArchive(name) {
    if (candidate(name)) return true;
    if (listsRefreshed || !this.isRoot()) return false;
    listsRefreshed = true;
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
    return candidate(name);
  },
  install(names) {
    const run = spawnSync('make', ['-s', '-C', ROOT, 'apt-deps', `APT_PACKAGES=${names.join(' ')}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return run.status === 0 ? null : output(run);
  },
  build(tools, dir) {
    mkdirSync(dir, { recursive: true });
    // The shared Makefile's rules, run in our directory: VPATH finds the sources, the outputs land here.
    const run = spawnSync('make', ['-s', '-C', dir, '-f', `${SHARED_BENCH}/Makefile`, `VPATH=${SHARED_BENCH}`, ...tools], { encoding: 'utf8' });
    return run.status === 0 ? null : output(run);
  },
  exists: existsSync,
};

/** What was done to meet the needs, and what is still missing (each with how to get it). */
export interface Outcome {
  installed: string[];
  built: SharedTool[];
  missing: string[];
}

const installHint = (names: string[]) => `apt-get install -y --no-install-recommends ${names.join(' ')}`;

/** Installs and builds what it may; names the rest. */
export function meet(needs: Needs, host: BenchHost = thisHost): Outcome {
  const outcome: Outcome = { installed: [], built: [], missing: [] };
  const root = host.isRoot();
  if (needs.root !== undefined && !root) outcome.missing.push(`root: ${needs.root} (run it as root)`);
  const tools = (needs.sharedTools ?? []).filter((tool) => !host.exists(`${BENCH_TOOLS}/${tool}`));
  const sharedThere = tools.length === 0 || host.exists(`${SHARED_BENCH}/Makefile`);
  if (!sharedThere) outcome.missing.push(`${SHARED_BENCH}: the shared reference tools' sources, to build ${tools.join(', ')} from`);
  // What has to be on the machine: the commands, and the packages that build the tools.
  const wanted = new Map<string, string>();
  for (const [command, name] of Object.entries(needs.commands ?? {})) if (!host.hasCommand(command)) wanted.set(name, `${command} (Debian package ${name})`);
  const toolPackages = sharedThere ? [...new Set(tools.flatMap((tool) => SHARED_TOOLS[tool]))].filter((name) => !host.hasPackage(name)) : [];
  for (const name of toolPackages) if (!wanted.has(name)) wanted.set(name, `${name} (Debian package, to build ${tools.filter((tool) => (SHARED_TOOLS[tool] as readonly string[]).includes(name)).join(', ')})`);
  const packages = [...wanted.keys()];
  if (packages.length > 0 && root) {
    const available = packages.filter((name) => host.inArchive(name));
    for (const name of packages.filter((name) => !available.includes(name))) outcome.missing.push(`${wanted.get(name)}: not in the Debian archive this machine uses (add a source that has ${name}, or install it by hand)`);
    const failed = available.length === 0 ? null : host.install(available);
    if (failed !== null) outcome.missing.push(`${available.map((name) => wanted.get(name)).join(', ')}: ${installHint(available)} failed: ${failed}`);
    else outcome.installed.push(...available);
  } else {
    for (const name of packages) outcome.missing.push(`${wanted.get(name)}: as root, ${installHint([name])}`);
  }
  // A package that installed without the command the bench runs is still a missing command.
  for (const [command, name] of Object.entries(needs.commands ?? {})) {
    if (outcome.installed.includes(name) && !host.hasCommand(command)) outcome.missing.push(`${command}: Debian package ${name} installed, yet ${command} is not on PATH`);
  }
  if (tools.length > 0 && sharedThere && toolPackages.every((name) => outcome.installed.includes(name))) {
    const failed = host.build(tools, BENCH_TOOLS);
    if (failed !== null) outcome.missing.push(`${tools.join(', ')}: building them from ${SHARED_BENCH} into ${BENCH_TOOLS} failed: ${failed}`);
    else outcome.built.push(...tools);
  }
  for (const [path, how] of Object.entries(needs.files ?? {})) if (!host.exists(path)) outcome.missing.push(`${path}: ${how}`);
  return outcome;
}

/** The message for what is still missing: one line per thing, each with how to get it. */
export function missingMessage(bench: string, missing: string[]): string {
  return `${bench} cannot run; missing:\n${missing.map((line) => `  - ${line}`).join('\n')}\n`;
}

/** Meets the bench's needs, saying what it installed or built, or exits EXIT_UNAVAILABLE naming what is missing. */
export function requireOrExit(bench: string, needs: Needs, host: BenchHost = thisHost): void {
  const outcome = meet(needs, host);
  if (outcome.installed.length > 0) process.stderr.write(`${bench}: installed ${outcome.installed.join(', ')}\n`);
  if (outcome.built.length > 0) process.stderr.write(`${bench}: built ${outcome.built.join(', ')} into ${BENCH_TOOLS}\n`);
  if (outcome.missing.length === 0) return;
  process.stderr.write(missingMessage(bench, outcome.missing));
  process.exit(EXIT_UNAVAILABLE);
}
