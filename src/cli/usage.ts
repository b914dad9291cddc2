/** Bad usage of a command: its message and the command's usage text go to stderr, exit 64 (EX_USAGE). */
export class UsageError extends Error {}

export const EXIT_USAGE = 64;

/** The command's parsed arguments, or null once bad usage was printed (return EXIT_USAGE). */
export function parseUsage<T>(command: string, usage: string, parse: () => T): T | null {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`btwall ${command}: ${error.message}\n${usage}\n`);
    return null;
  }
}
