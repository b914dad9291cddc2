/**
 * The same capture set through ndpiReader (Debian's libndpi-bin: the bench's requirements get it) and
 * through `btwall scan`, each as whole processes, their CPU seconds read from the shell's
 * `times` (user + system of the children): what an operator pays to classify a set of captures.
 * ndpiReader runs twice: once per capture, as a per-file tool is run, and once over a playlist.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve(import.meta.dirname, '../cli/main.js');

/** CPU seconds (user + system) the children of one shell spent running `script`. */
function childCpuSeconds(script: string): number {
  const run = spawnSync('bash', ['-c', `${script} >/dev/null 2>&1; times`], { encoding: 'utf8' });
  const children = run.stdout.trim().split('\n').at(-1) ?? '';
  const seconds = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map(([, m, s]) => Number(m) * 60 + Number(s));
  if (seconds.length !== 2) throw new Error(`cannot read the CPU time of: ${script} (${run.stdout})`);
  return seconds[0] + seconds[1];
}

const quote = (path: string) => `'${path.replace(/'/g, `'\\''`)}'`;

export function ndpiRace(corpusDir: string, out: (line: string) => void): void {
  const files = readdirSync(corpusDir)
    .filter((name) => !name.endsWith('.json'))
    .sort()
    .map((name) => join(corpusDir, name));
  const work = mkdtempSync(join(tmpdir(), 'btwall-race-'));
  try {
    const playlist = join(work, 'playlist');
    writeFileSync(playlist, files.join('\n') + '\n');
    const list = files.map(quote).join(' ');
    const btwall = childCpuSeconds(`${quote(process.execPath)} ${quote(CLI)} scan ${list}`);
    const perFile = childCpuSeconds(`for f in ${list}; do ndpiReader -q -i "$f"; done`);
    const oneProcess = childCpuSeconds(`ndpiReader -q -i ${quote(playlist)}`);
    const s = (n: number) => `${n.toFixed(2)} s`;
    out(`race against ndpiReader over ${files.length} captures, whole-process CPU: btwall scan ${s(btwall)}; ndpiReader per capture ${s(perFile)} (${(perFile / btwall).toFixed(1)}x btwall's); ndpiReader over one playlist ${s(oneProcess)} (${(oneProcess / btwall).toFixed(2)}x btwall's)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
