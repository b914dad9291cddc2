import { readFileSync } from 'node:fs';
import { ConfigError, EXIT_CONFIG, loadConfig } from '../config/config.js';
import { SCAN_USAGE, scanCommand } from './scan.js';

const USAGE = `usage: btwall COMMAND [ARGS]

commands:
  scan FILE...   detect BitTorrent flows in pcap/pcapng captures (btwall scan --help)
  check-config   validate the daemon's environment variables and print the effective configuration
  help           this text
  version        the version

${SCAN_USAGE}`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Prints the effective configuration as JSON, or every problem and exit code 78. */
function checkConfig(): number {
  try {
    process.stdout.write(`${JSON.stringify(loadConfig(process.env), null, 2)}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`btwall: ${error.message}\n`);
    return EXIT_CONFIG;
  }
}

function main(argv: readonly string[]): number {
  const [command, ...args] = argv;
  switch (command) {
    case 'scan':
      if (args.includes('--help') || args.includes('-h')) {
        process.stdout.write(`${SCAN_USAGE}\n`);
        return 0;
      }
      return scanCommand(args);
    case 'check-config':
      return checkConfig();
    case 'version':
    case '--version':
      process.stdout.write(`btwall ${version()}\n`);
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
process.exitCode = main(process.argv.slice(2));
