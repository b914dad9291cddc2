import type { Writable } from 'node:stream';

/** Gathers text and writes it in large chunks: one write per line costs more than the scan itself. */
export class OutputBuffer {
  private pending: string[] = [];
  private pendingChars = 0;

  constructor(
    private readonly stream: Writable,
    private readonly chunkChars = 1 << 16,
  ) {}

  write(text: string): void {
    this.pending.push(text);
    this.pendingChars += text.length;
    if (this.pendingChars >= this.chunkChars) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    this.stream.write(this.pending.join(''));
    this.pending = [];
    this.pendingChars = 0;
  }
}
