import { bansCommand } from '../bans/cli.js';
import { redactedConfig, withConfig, type Config, type ConfigSource } from '../config/config.js';
import { machineProblems, tablesMemory } from '../config/machine.js';
import { installCommands, removalSteps, shellLine } from '../firewall/rules.js';
import { runDaemon } from '../daemon/daemon.js';
import { VERSION } from '../version.js';
import { RULES_CHECK_USAGE, rulesCheckCommand } from '../rules/cli.js';
import { AUDIT_USAGE, auditCommand } from './audit.js';
import { DEMO_USAGE, demoCommand } from './demo.js';
import { SCAN_USAGE, scanCommand } from './scan.js';
import { STATUS_USAGE, statusCommand } from './status.js';

const USAGE = `usage: btwall COMMAND [ARGS]

commands:
  run            the inline daemon: NFQUEUE inspection, configured by environment variables (see README)
  scan FILE...   detect BitTorrent flows in pcap/pcapng captures (btwall scan --help)
  audit [FILE...]  who the detection log says did what: per local host, per ban, around a time (btwall audit --help)
  status [--json]  ask the running daemon for its uptime, configuration, counters, bans and latest detections
  check-config   validate the daemon's environment variables (and BTWALL_ENV_FILE's) and print the effective configuration
  rules          print the iptables/ip6tables commands the daemon runs at start and stop
  rules check FILE [CAPTURE...]  check an operator rules file (RULES_FILE) and score it on captures
  bans           list, add, delete or flush the XDP bans (btwall bans --help)
  demo [--seconds N]  a small lab in network namespaces: a real BitTorrent download blocked, HTTPS beside it passing
  help           this text
  version        the version

${SCAN_USAGE}

${AUDIT_USAGE}

${STATUS_USAGE}

${RULES_CHECK_USAGE}

${DEMO_USAGE}`;

/** The effective configuration, the queues it serves with the memory their tables take together, and BTWALL_ENV_FILE as read. */
function printConfig(config: Config, source: ConfigSource): number {
  const envFile = source.envFile === null ? null : { path: source.envFile.path, found: source.envFile.found };
  process.stdout.write(`${JSON.stringify({ ...redactedConfig(config), tables: tablesMemory(config), envFile }, null, 2)}\n`);
  return 0;
}

function printRules(config: Config): number {
  const removal = removalSteps().map((step) => shellLine(step.command) + (step.repeat ? '   # repeated until it fails' : ''));
  process.stdout.write(
    [
      '# At start, first remove what an earlier run left (each may fail when there is nothing to remove):',
      ...removal,
      '# then install:',
      ...installCommands(config).map(shellLine),
      '# At stop, the removal commands above run again.',
      '',
    ].join('\n'),
  );
  return 0;
}

/** A command's --help prints its usage; otherwise the command runs. */
function subcommand(args: string[], usage: string, run: (args: string[]) => number | Promise<number>): number | Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  return run(args);
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'scan':
      return subcommand(args, SCAN_USAGE, scanCommand);
    case 'audit':
      return subcommand(args, AUDIT_USAGE, auditCommand);
    case 'run':
      return runDaemon(process.env);
    case 'status':
      return subcommand(args, STATUS_USAGE, statusCommand);
    case 'check-config':
      return withConfig(process.env, printConfig, machineProblems);
    case 'rules':
      if (args[0] === 'check') return subcommand(args.slice(1), RULES_CHECK_USAGE, rulesCheckCommand);
      return withConfig(process.env, printRules);
    case 'bans':
      return bansCommand(args);
    case 'demo':
      return subcommand(args, DEMO_USAGE, demoCommand);
    case 'version':
    case '--version':
      process.stdout.write(`btwall ${VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      process.stderr.write(`btwall: unknown command ${command}\n${USAGE}\n`);
      return 64;
  }
}

// A reader that goes away (`btwall scan … | head`) is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
// Exit explicitly: a daemon that stopped must not linger on a handle it forgot.
process.exit(await main(process.argv.slice(2)));
