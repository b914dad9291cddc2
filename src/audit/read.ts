/**
 * Reading detection logs back: the current file and logrotate's older ones (gzip included,
 * found by magic number), streamed line by line so a log of any size never blocks the event
 * loop or fills the heap. A line that is not a record is reported with its file and number, and
 * the reading goes on.
 */
import { closeSync, createReadStream, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { parseLogLine, RecordError, type LogEntry } from './record.js';

export interface ReadProblem {
  file: string;
  /** 1-based; absent for a problem with the whole file. */
  line?: number;
  message: string;
}

/** What one file held. */
export interface FileTally {
  entries: number;
  /** Records of DETECTION_LOG_FORMAT=text, which carry no local/remote: skipped. */
  textRecords: number;
}

/** The reference daemon's block separator, which starts every text-format record. */
const TEXT_RECORD_START = '='.repeat(80);

function isGzip(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const magic = Buffer.alloc(2);
    return readSync(fd, magic, 0, 2, 0) === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  } finally {
    closeSync(fd);
  }
}

/**
 * Streams one log file's entries to `onEntry`, its problems to `onProblem`; resolves once the
 * file is read as far as it can be (a truncated gzip stream still gives what came before).
 */
export async function readLogFile(file: string, onEntry: (entry: LogEntry) => void, onProblem: (problem: ReadProblem) => void): Promise<FileTally> {
  const tally: FileTally = { entries: 0, textRecords: 0 };
  let input: Readable;
  try {
    const raw = createReadStream(file);
    input = isGzip(file) ? raw.pipe(createGunzip()) : raw;
    // pipe() does not pass the file's errors on.
    if (input !== raw) raw.on('error', (error) => input.destroy(error));
  } catch (error) {
    onProblem({ file, message: `cannot read it: ${(error as Error).message}` });
    return tally;
  }
  let endsWithNewline = true;
  input.on('data', (chunk: Buffer) => (endsWithNewline = chunk.length === 0 ? endsWithNewline : chunk[chunk.length - 1] === 0x0a));
  let lineNumber = 0;
  let inTextRecord = false;
  // A bad line is reported once the next one comes (or the file ends): the last line is told apart.
  let pending: ReadProblem | null = null;
  const lines = createInterface({ input, crlfDelay: Infinity });
  const failed = new Promise<Error>((resolve) => input.on('error', resolve));
  const read = (async () => {
    for await (const line of lines) {
      lineNumber++;
      if (pending) onProblem(pending);
      pending = null;
      if (line === TEXT_RECORD_START) {
        tally.textRecords++;
        inTextRecord = true;
        continue;
      }
      if (line.trim() === '' || (inTextRecord && !line.startsWith('{'))) continue;
      inTextRecord = false;
      try {
        onEntry(parseLogLine(line));
        tally.entries++;
      } catch (error) {
        if (!(error instanceof RecordError)) throw error;
        pending = { file, line: lineNumber, message: error.message };
      }
    }
  })();
  const error = await Promise.race([read.then(() => null, (failure: Error) => failure), failed]);
  if (pending !== null) {
    const last = pending as ReadProblem;
    onProblem(endsWithNewline || error !== null ? last : { ...last, message: `the last line is cut short (${last.message}): the file ended without a newline, mid-record` });
  }
  if (error !== null) {
    lines.close();
    onProblem({ file, message: `${error.message}${lineNumber > 0 ? ` after line ${lineNumber}; the lines before it were read` : ''}` });
  }
  if (tally.textRecords > 0) {
    onProblem({ file, message: `${tally.textRecords} text-format records skipped: audit reads the records of DETECTION_LOG_FORMAT=json` });
  }
  return tally;
}

/**
 * The detection log at `path` and logrotate's older copies of it (path.1, path.2.gz,
 * path-20261121, ...), oldest first.
 */
export function rotatedFiles(path: string): string[] {
  const dir = dirname(path);
  const name = basename(path);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const rotated = /^[.-]\d+(\.gz)?$/;
  return names
    .filter((n) => n === name || (n.startsWith(name) && rotated.test(n.slice(name.length))))
    .map((n) => join(dir, n))
    .map((file) => ({ file, mtime: statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
    .sort((a, b) => a.mtime - b.mtime)
    .map(({ file }) => file);
}
