import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/**
 * The largest record or block the reader will buffer. Anything that claims to be larger is
 * treated as corrupt rather than allocated, so a garbage length cannot exhaust memory.
 */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;

/** Thrown by ChunkedFile when the operating system fails a read; carries the system message. */
export class ReadFailure extends Error {}

/**
 * A file read front to back through one reusable buffer. Parsers look at `buf` from `pos` to
 * `end`, ask `fill(n)` for the next n bytes, and advance `pos` past what they consumed.
 */
export class ChunkedFile {
  buf: Buffer;
  /** Parse position in `buf`. */
  pos = 0;
  /** Bytes of `buf` holding file data. */
  end = 0;
  /** File offset of buf[0]. */
  private base = 0;
  private atEof = false;

  private constructor(private readonly fd: number, chunkBytes: number) {
    this.buf = Buffer.allocUnsafe(chunkBytes);
  }

  /**
   * Opens `path`; throws the system error when it cannot be opened. A regular file smaller than
   * `chunkBytes` gets a buffer of its size: a scan over hundreds of small captures otherwise
   * allocates chunkBytes for each, and the collector's work grew to a fifth of the scan's.
   */
  static open(path: string, chunkBytes: number): ChunkedFile {
    const fd = openSync(path, 'r');
    try {
      const stats = fstatSync(fd);
      return new ChunkedFile(fd, stats.isFile() && stats.size > 0 ? Math.min(chunkBytes, stats.size) : chunkBytes);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  /** File offset of `pos`. */
  offset(): number {
    return this.base + this.pos;
  }

  available(): number {
    return this.end - this.pos;
  }

  /**
   * Makes at least `n` bytes (at most MAX_RECORD_BYTES) available from `pos`, moving the
   * unread tail to the front of the buffer, and growing the buffer when a single record needs
   * more than it holds. Afterwards `buf` may be a different Buffer and `pos` may have moved.
   * Returns false when the file ends first.
   */
  fill(n: number): boolean {
    return this.end - this.pos >= n || this.refill(n);
  }

  private refill(n: number): boolean {
    if (this.atEof) return false;
    const tail = this.end - this.pos;
    if (n > this.buf.length) {
      // Doubling keeps a run of slowly growing large records from reallocating every time.
      const grown = Buffer.allocUnsafe(Math.min(MAX_RECORD_BYTES, Math.max(n, this.buf.length * 2)));
      this.buf.copy(grown, 0, this.pos, this.end);
      this.buf = grown;
    } else {
      this.buf.copyWithin(0, this.pos, this.end);
    }
    this.base += this.pos;
    this.pos = 0;
    this.end = tail;
    while (this.end < n) {
      let got: number;
      try {
        got = readSync(this.fd, this.buf, this.end, this.buf.length - this.end, null);
      } catch (err) {
        throw new ReadFailure((err as Error).message);
      }
      if (got === 0) {
        this.atEof = true;
        return false;
      }
      this.end += got;
    }
    return true;
  }
}
