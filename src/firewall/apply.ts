import { spawnSync } from 'node:child_process';
import type { Config } from '../config/config.js';
import { CHAIN, installCommands, removalSteps, replaceChainCommands, shellLine, type FirewallCommand } from './rules.js';

export type CommandRunner = (command: FirewallCommand) => { ok: boolean; stderr: string };

/** Runs iptables/ip6tables for real. */
export const runCommand: CommandRunner = (command) => {
  const run = spawnSync(command.program, command.args, { encoding: 'utf8', input: command.input });
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

/**
 * Replaces the rules of the installed chain with this configuration's (a reload), family by
 * family, each in one transaction. Throws FirewallError naming the family when one is refused; a
 * family already replaced is then put back with `running`'s rules, so that both keep agreeing.
 */
export function replaceChainRules(config: Config, running: Config, run: CommandRunner = runCommand): void {
  const commands = replaceChainCommands(config);
  for (const [i, command] of commands.entries()) {
    const result = run(command);
    if (result.ok) continue;
    for (const undo of replaceChainCommands(running).slice(0, i)) run(undo);
    throw new FirewallError(`${command.program} refused the new rules of the ${CHAIN} chain: ${result.stderr || 'no message'}`);
  }
}
