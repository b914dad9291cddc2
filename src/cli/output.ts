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

/** Rows under headers, each column as wide as its widest cell, two spaces apart; the last column is not padded. */
export function columns(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [headers, ...rows].map((row) => row.map(String));
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  return cells.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n');
}

/** 4h 59m 58s */
export function duration(seconds: number): string {
  const s = Math.ceil(seconds);
  const parts = [
    [Math.floor(s / 86400), 'd'],
    [Math.floor((s % 86400) / 3600), 'h'],
    [Math.floor((s % 3600) / 60), 'm'],
    [s % 60, 's'],
  ] as const;
  const first = parts.findIndex(([n]) => n > 0);
  return first < 0 ? '0s' : parts.slice(first).map(([n, unit]) => `${n}${unit}`).join(' ');
}
