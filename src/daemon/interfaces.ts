import { spawnSync } from 'node:child_process';

/**
 * Interface names by index, for logs. Read with `ip -o link` (netlink, this network namespace):
 * /sys/class/net shows the namespace sysfs was mounted in, which under nsenter is not ours.
 */
export class InterfaceNames {
  private names = new Map<number, string>();

  name(index: number): string {
    if (index === 0) return '-';
    if (!this.names.has(index)) this.refresh();
    return this.names.get(index) ?? `if${index}`;
  }

  private refresh(): void {
    const run = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    for (const line of run.stdout?.split('\n') ?? []) {
      const match = /^(\d+):\s+([^:@\s]+)/.exec(line);
      if (match) this.names.set(Number(match[1]), match[2]);
    }
  }
}
