/** `btwall status [--json]`: asks the running daemon over CONTROL_SOCKET. */
import { withConfig } from '../config/config.js';
import { askDaemon } from '../ops/control.js';
import { formatStatus, type StatusReport } from '../ops/status.js';
import { EXIT_USAGE, parseUsage, UsageError } from './usage.js';

export const STATUS_USAGE = `usage: btwall status [--json]

Asks the running daemon, over its control socket (CONTROL_SOCKET, default
/run/btwall/control.sock; root only), for its uptime, effective configuration (secrets redacted),
counters, bans in force and latest detections. --json prints the daemon's report as one JSON
object (the README lists its fields). Exit status 1 when no daemon answers.`;

export function statusCommand(args: string[]): number | Promise<number> {
  const json = parseUsage('status', STATUS_USAGE, () => {
    for (const arg of args) if (arg !== '--json') throw new UsageError(`unknown argument ${arg}`);
    return args.includes('--json');
  });
  if (json === null) return EXIT_USAGE;
  return withConfig(process.env, async (config) => {
    if (config.controlSocket === '') {
      process.stderr.write('btwall status: CONTROL_SOCKET is empty: the daemon serves no control socket\n');
      return 1;
    }
    try {
      const answer = await askDaemon(config.controlSocket, 'status');
      if (!answer.ok) throw new Error(`the daemon refused: ${answer.error}`);
      const report = answer.result as StatusReport;
      process.stdout.write(json ? `${JSON.stringify(report)}\n` : formatStatus(report));
      return 0;
    } catch (error) {
      process.stderr.write(`btwall status: ${(error as Error).message}\n`);
      return 1;
    }
  });
}
