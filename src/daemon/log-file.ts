/**
 * The detection log's file: opened safely (it holds payload bytes of users' traffic, and root
 * writes it) and appended to one whole record per write, never half of one; records a full or
 * failing disk refused are counted and the count is written, and reported, once writing works again.
 */
import { closeSync, constants, fchmodSync, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, realpathSync, writeSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** What is wrong with the log's path; the daemon refuses to start with it (exit 78, naming DETECTION_LOG). */
export class UnsafeLogError extends Error {}

const owners = new Set([0, process.geteuid?.() ?? 0]);
/** S_ISVTX: node does not export it. */
const STICKY = 0o1000;
const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * sshd's StrictModes, for a directory: the log's own directory and every one above it must be
 * owned by root and writable by nobody else, or someone else could swap the file or plant a
 * link. Above the log's directory a sticky directory (/tmp) is allowed too: there only an entry's
 * owner can rename or remove it.
 */
export function checkDirectories(dir: string): string {
  const real = realpathSync(dir);
  for (let at = real; ; at = dirname(at)) {
    const st = lstatSync(at);
    if (!owners.has(st.uid)) throw new UnsafeLogError(`the directory ${at} is owned by uid ${st.uid}, not root`);
    const sticky = at !== real && (st.mode & STICKY) !== 0;
    if ((st.mode & 0o022) !== 0 && !sticky) {
      throw new UnsafeLogError(`the directory ${at} is writable by group or others (mode ${octal(st.mode)}); only root may write there (chmod go-w)`);
    }
    if (at === '/') return real;
  }
}

/**
 * Opens the log for appending, creating it (mode 0600) and its directory (0700) if needed:
 * never through a symbolic link, only a regular file with one name, owned by root, in
 * directories only root can write. An existing file is tightened to 0600.
 */
export function openLogFile(path: string): number {
  const dir = dirname(path);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new UnsafeLogError(`cannot create the directory ${dir}: ${(error as Error).message}`);
  }
  let file: string;
  try {
    file = join(checkDirectories(dir), basename(path));
    const existing = lstatSync(file, { throwIfNoEntry: false });
    // Refused before open(): opening a device or a FIFO can have effects of its own.
    if (existing !== undefined && !existing.isFile()) throw new UnsafeLogError(`${file} is ${kind(existing)}; the log must be a regular file`);
  } catch (error) {
    if (error instanceof UnsafeLogError) throw error;
    throw new UnsafeLogError(`cannot check ${dir}: ${(error as Error).message}`);
  }
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO swapped in after the check must not hang the daemon (it is refused below).
    fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new UnsafeLogError(`${file} is a symbolic link; the log is never written through one`);
    throw new UnsafeLogError(`cannot open ${file}: ${(error as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UnsafeLogError(`${file} is ${kind(st)}; the log must be a regular file`);
    if (st.nlink !== 1) throw new UnsafeLogError(`${file} has ${st.nlink} hard links; the log must have one name only`);
    if (!owners.has(st.uid)) throw new UnsafeLogError(`${file} is owned by uid ${st.uid}, not root`);
    // The mode of open() applies only to a new file: an existing one is tightened too.
    fchmodSync(fd, 0o600);
    return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** The calls a RecordFile makes on its descriptor; tests replace them to fail on purpose. */
export interface FileIo {
  size(fd: number): number;
  write(fd: number, bytes: Uint8Array): number;
  truncate(fd: number, length: number): void;
}

export const NODE_IO: FileIo = {
  size: (fd) => fstatSync(fd).size,
  write: (fd, bytes) => writeSync(fd, bytes),
  truncate: (fd, length) => ftruncateSync(fd, length),
};

/** Records that could not be written, from the first failure on. */
export interface Losses {
  count: number;
  firstMs: number;
  error: string;
}

/** Where a RecordFile tells of losses: when they start, and when writing works again. */
export interface LossReport {
  failing(error: Error): void;
  recovered(losses: Losses): void;
}

/**
 * Appends records to a descriptor, each in one write: a write the disk cut short is cut off
 * again (ftruncate to the size before it), so the file holds whole records only. A record that
 * could not be written is counted; the next one that can is preceded by a note of the count.
 */
export class RecordFile {
  private losses: Losses | null = null;
  /** A cut-short write could not be cut off: the next write first ends its line. */
  private fragment = false;

  constructor(
    private fd: number,
    /** The note written ahead of the first record after losses. */
    private readonly lostNote: (losses: Losses, nowMs: number) => string,
    private readonly report: LossReport,
    private readonly io: FileIo = NODE_IO,
  ) {}

  /** Records lost since the last one written. */
  get lost(): number {
    return this.losses?.count ?? 0;
  }

  /** Writes the record whole, or counts it lost; true when written. */
  append(record: string, nowMs: number): boolean {
    const losses = this.losses;
    const bytes = Buffer.from(`${this.fragment ? '\n' : ''}${losses ? this.lostNote(losses, nowMs) : ''}${record}`);
    try {
      const before = this.io.size(this.fd);
      const written = this.io.write(this.fd, bytes);
      if (written !== bytes.length) {
        this.cutOff(before);
        throw new Error(`short write: ${written} of ${bytes.length} bytes (the disk is probably full)`);
      }
    } catch (error) {
      if (losses) losses.count++;
      else {
        this.losses = { count: 1, firstMs: nowMs, error: (error as Error).message };
        this.report.failing(error as Error);
      }
      return false;
    }
    this.fragment = false;
    if (losses) {
      this.losses = null;
      this.report.recovered(losses);
    }
    return true;
  }

  private cutOff(size: number): void {
    try {
      this.io.truncate(this.fd, size);
    } catch {
      this.fragment = true;
    }
  }

  /** Goes on in another file (after rotation); the losses counted so far are noted there. */
  replace(fd: number): void {
    const old = this.fd;
    this.fd = fd;
    this.fragment = false;
    closeSync(old);
  }

  close(): void {
    closeSync(this.fd);
  }
}
