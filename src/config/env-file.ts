/**
 * BTWALL_ENV_FILE: the daemon's variables in a file it reads itself, at start and again at every
 * SIGHUP (systemd reads an EnvironmentFile= only when it starts the service, so a reload could
 * never see a changed one). The syntax is systemd's EnvironmentFile= (systemd.exec(5)): KEY=VALUE
 * lines; blank lines and lines starting with # or ; are comments; a value may be 'single-quoted'
 * (verbatim) or "double-quoted" (\" \\ \` \$ and a backslash-newline are escapes), quotes may span
 * lines, and unquoted text keeps interior spaces, drops surrounding ones, and takes a backslash as
 * "the next character as it is" (a trailing one continues the line). Where systemd ignores a line
 * with a warning (no `=`, a name that is not a variable name), this refuses the file: a typo must
 * not leave a variable at its default unnoticed.
 */
import { readFileSync } from 'node:fs';

/** The variable naming the file; read from the real environment only (a file cannot name another). */
export const ENV_FILE_VARIABLE = 'BTWALL_ENV_FILE';

export class EnvFileError extends Error {
  /** Each "line N: what is wrong" (or why the file cannot be read). */
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BLANK = new Set([' ', '\t', '\r']);
/** What a backslash escapes inside double quotes (POSIX shell); before anything else it stays a backslash. */
const DOUBLE_QUOTE_ESCAPES = new Set(['"', '\\', '`', '$']);

/**
 * The assignments in `text`, in file order (a name assigned twice: the last one counts). Throws
 * EnvFileError naming each bad line by its number.
 */
export function parseEnvFile(text: string): Map<string, string> {
  const variables = new Map<string, string>();
  const problems: string[] = [];
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length) {
    const first = i;
    const line = lines[i++];
    const start = line.replace(/^[ \t\r]+/, '');
    if (start === '' || start.startsWith('#') || start.startsWith(';')) continue;
    const at = (n: number) => `line ${n + 1}`;
    const eq = start.indexOf('=');
    if (eq < 0) {
      problems.push(`${at(first)}: ${JSON.stringify(line.trim())} is no assignment (KEY=VALUE)`);
      continue;
    }
    const name = start.slice(0, eq).replace(/[ \t\r]+$/, '');
    // The value may run on over the following lines (quotes, a trailing backslash).
    let rest = start.slice(eq + 1);
    let value = '';
    /** Unquoted text waiting for what follows: its trailing blanks are dropped only at the end of the value. */
    let pendingBlanks = '';
    let quote: '"' | "'" | null = null;
    let quoteLine = first;
    let bad: string | null = null;
    let pos = 0;
    let started = false;
    for (;;) {
      if (pos >= rest.length) {
        if (quote !== null) {
          if (i >= lines.length) {
            bad = `${at(quoteLine)}: the ${quote === '"' ? 'double' : 'single'} quote of ${name} is never closed`;
            break;
          }
          value += '\n';
          rest = lines[i++];
          pos = 0;
          continue;
        }
        break;
      }
      const c = rest[pos++];
      if (quote === "'") {
        if (c === "'") quote = null;
        else value += c;
        continue;
      }
      if (quote === '"') {
        if (c === '"') quote = null;
        else if (c === '\\') {
          if (pos >= rest.length) {
            // A backslash-newline inside double quotes joins the lines.
            if (i >= lines.length) {
              bad = `${at(quoteLine)}: the double quote of ${name} is never closed`;
              break;
            }
            rest = lines[i++];
            pos = 0;
          } else {
            const next = rest[pos++];
            value += DOUBLE_QUOTE_ESCAPES.has(next) ? next : `\\${next}`;
          }
        } else value += c;
        continue;
      }
      if (BLANK.has(c)) {
        if (started) pendingBlanks += c;
        continue;
      }
      value += pendingBlanks;
      pendingBlanks = '';
      started = true;
      if (c === "'" || c === '"') {
        quote = c;
        quoteLine = i - 1;
      } else if (c === '\\') {
        if (pos < rest.length) value += rest[pos++];
        else if (i < lines.length) {
          // A trailing backslash continues the value on the next line, the newline dropped.
          rest = lines[i++];
          pos = 0;
        }
      } else value += c;
    }
    if (bad !== null) {
      problems.push(bad);
      break;
    }
    if (!NAME.test(name)) {
      problems.push(`${at(first)}: ${JSON.stringify(name)} is not a variable name (letters, digits and _, not starting with a digit)`);
      continue;
    }
    variables.set(name, value);
  }
  if (problems.length > 0) throw new EnvFileError(problems);
  return variables;
}

/** What BTWALL_ENV_FILE held when it was read; `found` false: the file does not exist (no variables). */
export interface EnvFile {
  path: string;
  found: boolean;
  variables: Map<string, string>;
}

/**
 * Reads and parses the file. A missing file is no variables, as systemd's EnvironmentFile=-PATH:
 * an installation without /etc/default/btwall runs on its defaults. Any other failure to read it,
 * and every bad line, throws EnvFileError.
 */
export function readEnvFile(path: string): EnvFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { path, found: false, variables: new Map() };
    throw new EnvFileError([`cannot read it (${code ?? (error as Error).message})`]);
  }
  return { path, found: true, variables: parseEnvFile(text) };
}
