/** `btwall bans`: the pinned XDP ban maps, read and edited whether the daemon runs or not. */
import { pino } from 'pino';
import { CidrSet } from '../config/cidr.js';
import { duration } from '../cli/output.js';
import { withConfig, type Config } from '../config/config.js';
import { NO_ESCALATION } from '../policy/escalation.js';
import { BanMaps, banRefusal, enforcement, errorMessage, ownAddresses, parseAddress, XdpProgram, type BanEntry } from './xdp.js';

export const BANS_USAGE = `usage: btwall bans [list [--json]]
       btwall bans add IP [--duration SECONDS]
       btwall bans del IP
       btwall bans flush

Works on the ban maps pinned under BPF_PIN_DIR (default /sys/fs/bpf/btwall), whether the daemon
runs or not. list shows each ban's address, time left, expiry, count (bans in a row, each within
BAN_ESCALATION's window of the last) and the rule that proved the peer, and
whether the bans are enforced in the kernel (a btwall XDP program that uses these maps is attached
to an interface of this network namespace). add bans for --duration seconds (default
BAN_DURATION); a ban already running longer is kept. Loopback, link-local, this host's own
addresses and ALLOW_CIDRS are never banned. del lifts one ban at once (exit status 1 if there was
none); flush lifts them all.`;

/** Exit status for a command line that makes no sense (sysexits.h EX_USAGE). */
const EXIT_USAGE = 64;
const MAX_DURATION_S = 365 * 24 * 3600;

class UsageError extends Error {}

export function bansCommand(args: readonly string[]): number {
  const [command = 'list', ...rest] = args;
  if (['help', '--help', '-h'].includes(command)) {
    process.stdout.write(`${BANS_USAGE}\n`);
    return 0;
  }
  return withConfig(process.env, (config) => runBansCommand(config, command, rest));
}

function runBansCommand(config: Config, command: string, rest: readonly string[]): number {
  try {
    switch (command) {
      case 'list': {
        const { flags, positional } = options(rest, ['--json'], []);
        if (positional.length > 0) throw new UsageError('list takes no address');
        return list(config, flags.has('--json'));
      }
      case 'add':
        return add(config, rest);
      case 'del':
        return del(config, rest);
      case 'flush':
        if (options(rest, [], []).positional.length > 0) throw new UsageError('flush takes no address');
        return flush(config);
      default:
        throw new UsageError(`unknown bans command ${command}`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`btwall bans: ${error.message}\n${BANS_USAGE}\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`btwall bans: ${errorMessage(error)}\n`);
    return 1;
  }
}

/** Splits flags (`--json`), options with a value (`--duration 60`) and positional arguments. */
function options(args: readonly string[], flagNames: string[], valueNames: string[]) {
  const flags = new Set<string>();
  const values = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (flagNames.includes(arg)) flags.add(arg);
    else if (valueNames.includes(arg)) {
      if (i + 1 >= args.length) throw new UsageError(`${arg} needs a value`);
      values.set(arg, args[++i]);
    } else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else positional.push(arg);
  }
  return { flags, values, positional };
}

/** One IP address argument, and nothing else positional. */
function addressArgument(positional: string[]) {
  if (positional.length !== 1) throw new UsageError('give exactly one IP address');
  const parsed = parseAddress(positional[0]);
  if (parsed === null) throw new UsageError(`${positional[0]} is not an IPv4 or IPv6 address`);
  return { text: positional[0], ...parsed };
}

function enforcementLine(config: Config, on: { name: string; mode: string }[]): string {
  if (on.length > 0) return `enforced in the kernel on ${on.map((a) => `${a.name} (${a.mode})`).join(', ')}`;
  const why = config.xdpMode === 'off' ? 'XDP_MODE=off: the daemon attaches no XDP program' : 'the daemon is stopped, or no interface matching INTERFACE exists yet: see its log';
  return `NOT enforced in the kernel: no btwall XDP program uses these maps in this network namespace (${why})`;
}

/** When a ban ends, on the wall clock, to the second. */
function expiresAt(nowMs: number, ban: BanEntry): string {
  return new Date(Math.ceil((nowMs + ban.remainingS * 1000) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function list(config: Config, json: boolean): number {
  const maps = BanMaps.openPinned(config.bpfPinDir);
  if (maps === null) {
    if (json) process.stdout.write(`${JSON.stringify({ pinDir: config.bpfPinDir, pinned: false, enforced: false, enforcedOn: [], bans: [], dropped: null })}\n`);
    else process.stdout.write(`no ban maps pinned at ${config.bpfPinDir}: no bans; ${enforcementLine(config, [])}\n`);
    return 0;
  }
  try {
    const bans = maps.list();
    const on = enforcement(maps);
    const dropped = maps.drops();
    if (json) {
      const now = Date.now();
      const item = (b: BanEntry) => ({ ...b, remainingS: Math.ceil(b.remainingS), expiresAt: expiresAt(now, b) });
      process.stdout.write(`${JSON.stringify({ pinDir: config.bpfPinDir, pinned: true, enforced: on.length > 0, enforcedOn: on, bans: bans.map(item), dropped })}\n`);
      return 0;
    }
    const width = Math.max(7, ...bans.map((b) => b.address.length)) + 2;
    const header = `${'ADDRESS'.padEnd(width)}${'REMAINING'.padEnd(16)}${'EXPIRES'.padEnd(22)}${'COUNT'.padEnd(7)}RULE`;
    const now = Date.now();
    const row = (b: BanEntry) =>
      `${b.address.padEnd(width)}${duration(b.remainingS).padEnd(16)}${expiresAt(now, b).padEnd(22)}${String(b.count).padEnd(7)}${b.rule}`;
    const lines = bans.length > 0 ? [header, ...bans.map(row)] : [];
    lines.push(
      `${bans.length} ban${bans.length === 1 ? '' : 's'}; ${enforcementLine(config, on)}`,
      `dropped by XDP: IPv4 ${dropped.v4.packets} packets (${dropped.v4.bytes} bytes, ${dropped.v4.resets} TCP segments reported for resets), IPv6 ${dropped.v6.packets} packets (${dropped.v6.bytes} bytes, ${dropped.v6.resets} TCP segments reported for resets)`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  } finally {
    maps.close();
  }
}

function add(config: Config, args: readonly string[]): number {
  const { values, positional } = options(args, [], ['--duration']);
  const address = addressArgument(positional);
  const durationText = values.get('--duration');
  const durationS = durationText === undefined ? config.banDurationS : Number(durationText);
  if (!/^\d+$/.test(durationText ?? '1') || durationS < 1 || durationS > MAX_DURATION_S) throw new UsageError(`--duration must be whole seconds from 1 to ${MAX_DURATION_S}`);
  const refusal = banRefusal(address.family, address.bytes, new CidrSet(ownAddresses()), new CidrSet(config.allowCidrs));
  if (refusal !== null) {
    process.stderr.write(`btwall bans: ${address.text} is never banned: ${refusal}\n`);
    return 1;
  }
  let maps = BanMaps.openPinned(config.bpfPinDir);
  if (maps === null) {
    // First ban before any daemon ran: loading the program creates and pins the maps it uses.
    XdpProgram.load(config.bpfPinDir, config.banCapacity, pino({ level: 'warn' }, pino.destination({ dest: 2, sync: true }))).close();
    maps = BanMaps.openPinned(config.bpfPinDir)!;
  }
  try {
    // The operator's duration exactly, but counted, so the daemon's next ban of the address escalates.
    const { outcome, remainingS, count } = maps.ban(address.family, address.bytes, durationS, 'manual', { ...NO_ESCALATION, windowS: config.banEscalation.windowS });
    const kept = outcome === 'kept' ? ' (a longer ban was already in place)' : '';
    process.stdout.write(`banned ${address.text} for ${duration(remainingS)}${kept}, ban ${count} in a row; ${enforcementLine(config, enforcement(maps))}\n`);
    return 0;
  } finally {
    maps.close();
  }
}

function del(config: Config, args: readonly string[]): number {
  const address = addressArgument(options(args, [], []).positional);
  const maps = BanMaps.openPinned(config.bpfPinDir);
  const lifted = maps?.unban(address.family, address.bytes) ?? false;
  maps?.close();
  process.stdout.write(lifted ? `unbanned ${address.text}\n` : `${address.text} was not banned\n`);
  return lifted ? 0 : 1;
}

function flush(config: Config): number {
  const maps = BanMaps.openPinned(config.bpfPinDir);
  const removed = maps?.flush() ?? 0;
  maps?.close();
  process.stdout.write(`removed ${removed} ban${removed === 1 ? '' : 's'}\n`);
  return 0;
}
