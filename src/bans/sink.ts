import type { Logger } from 'pino';

/** Where the daemon sends addresses to ban: the XDP maps, or only the log in a dry run. */
export interface BanSink {
  readonly enforced: boolean;
  /** `address` is the textual address; `durationS` counts from now; `rule` is what proved it. */
  ban(address: string, durationS: number, rule: string): void;
  close(): void;
}

/** Logs what it would ban: until the kernel fast path exists, and whenever it cannot be used. */
export class DryRunBanSink implements BanSink {
  readonly enforced = false;

  constructor(private readonly log: Logger) {}

  ban(address: string, durationS: number, rule: string): void {
    this.log.info({ address, durationS, rule, enforced: false }, 'ban (dry run: not enforced in the kernel)');
  }

  close(): void {}
}
