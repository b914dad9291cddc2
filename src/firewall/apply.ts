import { spawnSync } from 'node:child_process';
import type { Config } from '../config/config.js';
import { installCommands, removalSteps, shellLine, type FirewallCommand } from './rules.js';

export type CommandRunner = (command: FirewallCommand) => { ok: boolean; stderr: string };

/** Runs iptables/ip6tables for real. */
export const runCommand: CommandRunner = (command) => {
  const run = spawnSync(command.program, command.args, { encoding: 'utf8' });
  if (run.error) return { ok: false, stderr: run.error.message };
  return { ok: run.status === 0, stderr: run.stderr.trim() };
};

/** A hook can only have been duplicated this many times by crashed runs; stop looping after that. */
const MAX_REPEATS = 64;

export class FirewallError extends Error {}

/** Removes every trace of btwall's rules (safe to run when there are none). */
export function removeRules(run: CommandRunner = runCommand): void {
  for (const step of removalSteps()) {
    for (let i = 0; i < (step.repeat ? MAX_REPEATS : 1); i++) if (!run(step.command).ok) break;
  }
}

/**
 * Installs btwall's chain and hooks, after removing whatever an earlier run left, so a restart
 * after a crash ends with exactly one copy. On a failure, removes what it did and throws, naming
 * the command: a half-installed firewall is worse than none.
 */
export function installRules(config: Config, run: CommandRunner = runCommand): void {
  removeRules(run);
  for (const command of installCommands(config)) {
    const result = run(command);
    if (!result.ok) {
      removeRules(run);
      throw new FirewallError(`${shellLine(command)} failed: ${result.stderr || 'no message'}`);
    }
  }
}
