import { describe, expect, it } from 'vitest';
import { BENCH_TOOLS, meet, missingMessage, SHARED_BENCH, type BenchHost, type Needs, type SharedTool } from '../src/bench/requirements.js';

/** A host with these commands, packages, archive and files; what it was asked to install and build is recorded. */
function host(o: { root?: boolean; commands?: string[]; packages?: string[]; archive?: string[]; files?: string[]; buildFails?: string } = {}) {
  const commands = new Set(o.commands ?? []);
  const packages = new Set(o.packages ?? []);
  const files = new Set(o.files ?? [`${SHARED_BENCH}/Makefile`]);
  const asked = { installed: [] as string[][], built: [] as SharedTool[][] };
  /** The commands each package puts on PATH. */
  const provides: Record<string, string[]> = { iperf3: ['iperf3'], 'libndpi-bin': ['ndpiReader'], iproute2: ['ip', 'ss'] };
  const fake: BenchHost = {
    isRoot: () => o.root ?? true,
    hasCommand: (command) => commands.has(command),
    hasPackage: (name) => packages.has(name),
    inArchive: (name) => (o.archive ?? []).includes(name),
    install(names) {
      asked.installed.push(names);
      for (const name of names) {
        packages.add(name);
        for (const command of provides[name] ?? []) commands.add(command);
      }
      return null;
    },
    build(tools, dir) {
      asked.built.push(tools);
      if (o.buildFails !== undefined) return o.buildFails;
      for (const tool of tools) files.add(`${dir}/${tool}`);
      return null;
    },
    exists: (path) => files.has(path),
  };
  return { fake, asked };
}

const inline: Needs = { root: 'namespaces', commands: { ip: 'iproute2', iperf3: 'iperf3' }, sharedTools: ['nfq-batch', 'udpflood'] };
const buildPackages = ['make', 'gcc', 'libnetfilter-queue-dev', 'libmnl-dev'];

describe('bench requirements', () => {
  it('installs a missing command from the archive as root, builds the shared tools into the project, and misses nothing', () => {
    const { fake, asked } = host({ commands: ['ip'], packages: buildPackages, archive: ['iperf3'] });
    expect(meet(inline, fake)).toEqual({ installed: ['iperf3'], built: ['nfq-batch', 'udpflood'], missing: [] });
    expect(asked).toEqual({ installed: [['iperf3']], built: [['nfq-batch', 'udpflood']] });
    // Everything there: nothing installed, nothing built again.
    const ready = host({ commands: ['ip', 'iperf3'], packages: buildPackages, files: [`${BENCH_TOOLS}/nfq-batch`, `${BENCH_TOOLS}/udpflood`] });
    expect(meet(inline, ready.fake)).toEqual({ installed: [], built: [], missing: [] });
    expect(ready.asked).toEqual({ installed: [], built: [] });
  });

  it('names what is missing and how to get it: not root, not in the archive, no shared sources, a failed build, a file', () => {
    const user = host({ root: false, commands: ['ip'], packages: buildPackages });
    const missing = meet(inline, user.fake).missing;
    expect(missing).toEqual(['root: namespaces (run it as root)', 'iperf3 (Debian package iperf3): as root, apt-get install -y --no-install-recommends iperf3']);
    expect(user.asked.installed).toEqual([]);
    expect(missingMessage('bench:inline', missing)).toBe(
      'bench:inline cannot run; missing:\n  - root: namespaces (run it as root)\n  - iperf3 (Debian package iperf3): as root, apt-get install -y --no-install-recommends iperf3\n',
    );

    // ndpi: Debian 12 has libndpi-bin (no ndpi-bin); an archive without it is said so, and nothing is installed.
    const bare = host({ archive: [] });
    expect(meet({ commands: { ndpiReader: 'libndpi-bin' } }, bare.fake).missing).toEqual([
      'ndpiReader (Debian package libndpi-bin): not in the Debian archive this machine uses (add a source that has libndpi-bin, or install it by hand)',
    ]);
    expect(bare.asked.installed).toEqual([]);

    // The tools' build packages come first; without the shared sources there is nothing to build from.
    const noSources = host({ commands: ['ip', 'iperf3'], files: [] });
    expect(meet(inline, noSources.fake).missing).toEqual([`${SHARED_BENCH}: the shared reference tools' sources, to build nfq-batch, udpflood from`]);
    const noCompiler = host({ commands: ['ip', 'iperf3'], packages: ['make'], archive: ['gcc', 'libnetfilter-queue-dev', 'libmnl-dev'] });
    expect(meet(inline, noCompiler.fake)).toEqual({ installed: ['gcc', 'libnetfilter-queue-dev', 'libmnl-dev'], built: ['nfq-batch', 'udpflood'], missing: [] });
    const broken = host({ commands: ['ip', 'iperf3'], packages: buildPackages, buildFails: 'nfq-batch.c:1: error' });
    expect(meet(inline, broken.fake).missing).toEqual([`nfq-batch, udpflood: building them from ${SHARED_BENCH} into ${BENCH_TOOLS} failed: nfq-batch.c:1: error`]);

    expect(meet({ files: { '/nowhere/corpus': 'the capture corpus' } }, host().fake).missing).toEqual(['/nowhere/corpus: the capture corpus']);
  });
});
