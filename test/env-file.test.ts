import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, readConfig } from '../src/config/config.js';
import { EnvFileError, parseEnvFile, readEnvFile } from '../src/config/env-file.js';

const parsed = (text: string) => Object.fromEntries(parseEnvFile(text));

function problems(text: string): string[] {
  try {
    parseEnvFile(text);
  } catch (error) {
    if (error instanceof EnvFileError) return error.problems;
    throw error;
  }
  return [];
}

describe('BTWALL_ENV_FILE, in systemd EnvironmentFile= syntax', () => {
  it('reads KEY=VALUE lines and skips blank lines and # and ; comments', () => {
    expect(parsed('# btwall\n\nA=1\n  ; another comment\nB=two words\n\t\nC=\n')).toEqual({ A: '1', B: 'two words', C: '' });
  });

  it('drops the blanks around a name and an unquoted value, keeps those inside, and keeps # within a value', () => {
    expect(parsed('  A = x  y \t\r\nB=a#b\n')).toEqual({ A: 'x  y', B: 'a#b' });
  });

  it('takes single quotes verbatim and double quotes with their shell escapes, over several lines', () => {
    expect(parsed(`A='a "b" \\n $c'\nB="say \\"hi\\" \\\\ \\$x \\n"\nC='one\ntwo'\nD="x\\\ny"\n`)).toEqual({
      A: 'a "b" \\n $c',
      B: 'say "hi" \\ $x \\n',
      C: 'one\ntwo',
      D: 'xy',
    });
  });

  it('joins quoted and unquoted parts, as the shell does, and drops blanks outside the quotes', () => {
    expect(parsed(`A= "x"y'z'  \nB=  'padded '  \n`)).toEqual({ A: 'xyz', B: 'padded ' });
  });

  it('takes a backslash as the next character, and one at the end of a line as a continuation', () => {
    expect(parsed('A=a\\ b\\\\c\nB=first,\\\nsecond\nC=last\n')).toEqual({ A: 'a b\\c', B: 'first,second', C: 'last' });
  });

  it('lets the last assignment of a name count, and reads a file without a final newline or with CRLF lines', () => {
    expect(parsed('A=1\r\nA=2\r\nB=3')).toEqual({ A: '2', B: '3' });
  });

  it('refuses lines that are no assignment and names that are no variable names, each by its line number', () => {
    expect(problems('A=1\nBAN_DURATION 600\n# fine\n2X=1\nBAD NAME=1\nB=2\n')).toEqual([
      'line 2: "BAN_DURATION 600" is no assignment (KEY=VALUE)',
      'line 4: "2X" is not a variable name (letters, digits and _, not starting with a digit)',
      'line 5: "BAD NAME" is not a variable name (letters, digits and _, not starting with a digit)',
    ]);
  });

  it('refuses a quote never closed, at the line where it opens', () => {
    expect(problems('A=1\nB="open\nC=2\n')).toEqual(['line 2: the double quote of B is never closed']);
    expect(problems("A=1\n\nB=x'open")).toEqual(['line 3: the single quote of B is never closed']);
  });
});

describe('the configuration with BTWALL_ENV_FILE', () => {
  const dir = mkdtempSync(join(tmpdir(), 'btwall-env-file-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const refusal = (env: Record<string, string>) => {
    try {
      readConfig(env, { cores: 1 });
    } catch (error) {
      if (error instanceof ConfigError) return error.problems;
      throw error;
    }
    return [];
  };

  it("lays the file's variables over the environment", () => {
    const path = file('over', 'BAN_DURATION=600\nLOG_LEVEL=debug\n');
    const { config, source } = readConfig({ BTWALL_ENV_FILE: path, BAN_DURATION: '60', STATS_INTERVAL: '5' }, { cores: 1 });
    expect([config.banDurationS, config.logLevel, config.statsIntervalS]).toEqual([600, 'debug', 5]);
    expect(source.envFile).toMatchObject({ path, found: true });
    expect(source.env).toMatchObject({ BAN_DURATION: '600', STATS_INTERVAL: '5' });
  });

  it('reads nothing from a file that does not exist, as EnvironmentFile=-PATH', () => {
    const path = join(dir, 'absent');
    const { config, source } = readConfig({ BTWALL_ENV_FILE: path, BAN_DURATION: '60' }, { cores: 1 });
    expect(config.banDurationS).toBe(60);
    expect(source.envFile).toEqual({ path, found: false, variables: new Map() });
    expect(readEnvFile(path).found).toBe(false);
  });

  it('names BTWALL_ENV_FILE and the line of a bad file, and a bad value as the environment would', () => {
    const bad = file('bad', 'BAN_DURATION=600\nnonsense\n');
    expect(refusal({ BTWALL_ENV_FILE: bad })).toEqual([`BTWALL_ENV_FILE=${JSON.stringify(bad)}: line 2: "nonsense" is no assignment (KEY=VALUE)`]);
    expect(refusal({ BTWALL_ENV_FILE: file('value', 'BAN_DURATION=soon\n') })).toEqual(['BAN_DURATION="soon": must be a whole number']);
    expect(refusal({ BTWALL_ENV_FILE: 'relative/btwall' })).toEqual(['BTWALL_ENV_FILE="relative/btwall": must be an absolute path to a file of KEY=VALUE lines (or unset: none)']);
    const itself = file('itself', 'BTWALL_ENV_FILE=/etc/other\n');
    expect(refusal({ BTWALL_ENV_FILE: itself })).toEqual([`BTWALL_ENV_FILE=${JSON.stringify(itself)}: sets BTWALL_ENV_FILE itself; the file is named by the environment only`]);
    expect(refusal({ BTWALL_ENV_FILE: dir })).toEqual([`BTWALL_ENV_FILE=${JSON.stringify(dir)}: cannot read it (EISDIR)`]);
  });

  it('is read by btwall check-config, which says where it was read from, and refused there with exit code 78', () => {
    const cli = join(resolve(import.meta.dirname, '..'), 'bin/btwall');
    const path = file('cli', 'XDP_MODE=off\nBAN_DURATION=600\n');
    const good = spawnSync(cli, ['check-config'], { encoding: 'utf8', env: { ...process.env, BTWALL_ENV_FILE: path } });
    expect(good.status, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout)).toMatchObject({ banDurationS: 600, xdpMode: 'off', envFile: { path, found: true } });
    const bad = file('cli-bad', 'XDP_MODE=off\nBAN_DURATION=600 s\n');
    const refused = spawnSync(cli, ['check-config'], { encoding: 'utf8', env: { ...process.env, BTWALL_ENV_FILE: bad } });
    expect([refused.status, refused.stderr]).toEqual([78, 'btwall: invalid configuration:\n  BAN_DURATION="600 s": must be a whole number\n']);
  });
});
