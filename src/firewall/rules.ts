import type { Cidr, Config } from '../config/config.js';
import { localCidrs } from '../policy/settings.js';

/** The chain btwall owns, in the filter table of both families. */
export const CHAIN = 'BTWALL';
/** Every built-in chain btwall may hook, so cleanup finds hooks left by a run with other CHAINS. */
const HOOKABLE_CHAINS = ['INPUT', 'FORWARD', 'OUTPUT'] as const;
/**
 * ACTION=throttle's token buckets, one per local address and direction (hashlimit tables, named
 * per family; a name is at most 15 characters and shared by every rule that uses it).
 */
const THROTTLE_TABLES = { download: 'btwall-down', upload: 'btwall-up' } as const;
/**
 * CUT_ESTABLISHED: TCP connections past the inspection window with no mark (open before the
 * daemon started, or undecided in their first packets) are sampled into the queue: a burst of
 * consecutive packets per direction (enough for the peer wire detector to walk its messages),
 * then a trickle, per connection (hashlimit table per family).
 */
const SAMPLE_TABLE = 'btwall-old';
const SAMPLE_BURST = 40;
const SAMPLE_PER_S = 2;
/** multiport takes at most 15 ports per rule. */
const MULTIPORT_MAX = 15;

/**
 * The decision, in two bits of the packet mark and then of the connection mark (other users of
 * marks keep the rest). A verdict marks the deciding packet and repeats it through the hook; the
 * chain saves the mark into the connection, whose later packets the kernel then drops (BitTorrent)
 * or lets skip the queue (clean). Setting the connection mark from the verdict itself needs
 * ctnetlink glue, which kernels (this one among them) may lack: the mark path needs none.
 */
export const MARK_MASK = 0xc0000000;
export const MARK_CLEAN = 0x40000000;
export const MARK_BITTORRENT = 0x80000000;
/** BitTorrent to limit to RATE rather than drop (ACTION=throttle, or an operator rule's action). */
export const MARK_THROTTLE = 0xc0000000;

export interface FirewallCommand {
  program: 'iptables' | 'ip6tables' | 'iptables-restore' | 'ip6tables-restore';
  args: string[];
  /** What the program reads on its standard input (iptables-restore's rules). */
  input?: string;
}

const hex = (n: number) => `0x${n.toString(16)}`;

function program(family: 4 | 6): 'iptables' | 'ip6tables' {
  return family === 4 ? 'iptables' : 'ip6tables';
}

function cidrText(cidr: Cidr): string {
  return `${cidr.address}/${cidr.prefix}`;
}

/** The settings the rules of BTWALL are made of (`chainRules`): a reload that changes one replaces them. */
export const CHAIN_SETTINGS: readonly (keyof Config)[] = ['queues', 'allowCidrs', 'whitelistPorts', 'action', 'cutEstablished', 'inspectPackets', 'rateBitsPerS', 'localCidrs'];

/** The rules of BTWALL for one family, in order. */
function chainRules(config: Config, family: 4 | 6): string[][] {
  const queue =
    config.queues.first === config.queues.last
      ? ['--queue-num', String(config.queues.first)]
      : ['--queue-balance', `${config.queues.first}:${config.queues.last}`];
  const marked = (mark: number) => `${hex(mark)}/${hex(MARK_MASK)}`;
  const saveMark = ['-j', 'CONNMARK', '--save-mark', '--nfmask', hex(MARK_MASK), '--ctmask', hex(MARK_MASK)];
  const rules: string[][] = [];
  // The allowlist and whitelisted ports first: nothing, not even an old mark, stops them.
  for (const cidr of config.allowCidrs.filter((c) => c.family === family)) {
    rules.push(['-s', cidrText(cidr), '-j', 'RETURN'], ['-d', cidrText(cidr), '-j', 'RETURN']);
  }
  for (let i = 0; i < config.whitelistPorts.length; i += MULTIPORT_MAX) {
    const ports = config.whitelistPorts.slice(i, i + MULTIPORT_MAX).join(',');
    for (const l4 of ['tcp', 'udp']) rules.push(['-p', l4, '-m', 'multiport', '--ports', ports, '-j', 'RETURN']);
  }
  // A deciding packet, repeated with its mark: the mark goes into the connection. Under
  // ACTION=monitor nothing is marked BitTorrent, so those rules would never match.
  const enforcing = config.action !== 'monitor';
  if (enforcing) {
    rules.push(['-m', 'mark', '--mark', marked(MARK_BITTORRENT), ...saveMark], ['-m', 'mark', '--mark', marked(MARK_BITTORRENT), '-j', 'DROP']);
    rules.push(['-m', 'mark', '--mark', marked(MARK_THROTTLE), ...saveMark]);
  }
  rules.push(['-m', 'mark', '--mark', marked(MARK_CLEAN), ...saveMark], ['-m', 'mark', '--mark', marked(MARK_CLEAN), '-j', 'RETURN']);
  // The rest of a decided connection (a throttled one's deciding packet too: its mark is saved by now).
  if (enforcing) {
    rules.push(['-m', 'connmark', '--mark', marked(MARK_BITTORRENT), '-j', 'DROP']);
    rules.push(...throttleRules(config, family, ['-m', 'connmark', '--mark', marked(MARK_THROTTLE)]));
  }
  rules.push(['-m', 'connmark', '--mark', marked(MARK_CLEAN), '-j', 'RETURN']);
  // Only a connection's first packets reach the queue: bulk transfers then run at kernel speed.
  const sampling = config.action === 'drop' && config.cutEstablished;
  for (const l4 of ['tcp', 'udp']) {
    rules.push([
      '-p',
      l4,
      '-m',
      'connbytes',
      '--connbytes',
      `0:${config.inspectPackets}`,
      '--connbytes-dir',
      'both',
      '--connbytes-mode',
      'packets',
      '-j',
      'NFQUEUE',
      ...queue,
      '--queue-bypass',
    ]);
  }
  if (sampling) {
    rules.push([
      '-p',
      'tcp',
      '-m',
      'connmark',
      '--mark',
      `0x0/${hex(MARK_MASK)}`,
      '-m',
      'hashlimit',
      '--hashlimit-upto',
      `${SAMPLE_PER_S}/sec`,
      '--hashlimit-burst',
      String(SAMPLE_BURST),
      '--hashlimit-mode',
      'srcip,srcport,dstip,dstport',
      '--hashlimit-name',
      `${SAMPLE_TABLE}${family}`,
      '-j',
      'NFQUEUE',
      ...queue,
      '--queue-bypass',
    ]);
  }
  return rules;
}

/**
 * Throttled connections (ACTION=throttle, or an operator rule's): a connection's packets beyond RATE per local host and direction are
 * dropped (TCP backs off to the rate), the rest pass without reaching the queue again. A local
 * host is one in LOCAL_CIDRS (the policy's), so a download is keyed by its destination and an
 * upload by its source; every connection of one host shares its buckets.
 */
function throttleRules(config: Config, family: 4 | 6, bitTorrent: string[]): string[][] {
  const bytesPerS = Math.floor(config.rateBitsPerS / 8);
  const limit = (name: string, mode: 'dstip' | 'srcip') => [
    '-m',
    'hashlimit',
    '--hashlimit-above',
    `${bytesPerS}b/s`,
    '--hashlimit-burst',
    // hashlimit's least burst: one second of RATE.
    `${bytesPerS}b`,
    '--hashlimit-mode',
    mode,
    '--hashlimit-name',
    `${name}${family}`,
    '-j',
    'DROP',
  ];
  const rules: string[][] = [];
  for (const cidr of localCidrs(config).filter((c) => c.family === family)) {
    rules.push([...bitTorrent, '-d', cidrText(cidr), ...limit(THROTTLE_TABLES.download, 'dstip')]);
    rules.push([...bitTorrent, '-s', cidrText(cidr), ...limit(THROTTLE_TABLES.upload, 'srcip')]);
  }
  rules.push([...bitTorrent, '-j', 'RETURN']);
  return rules;
}

/** Commands that install btwall's chain and hooks, for both families; run the removal steps first. */
export function installCommands(config: Config): FirewallCommand[] {
  const commands: FirewallCommand[] = [];
  for (const family of [4, 6] as const) {
    const p = program(family);
    commands.push({ program: p, args: ['-w', '-N', CHAIN] });
    for (const rule of chainRules(config, family)) commands.push({ program: p, args: ['-w', '-A', CHAIN, ...rule] });
    for (const chain of config.chains) commands.push({ program: p, args: ['-w', '-I', chain, '1', '-j', CHAIN] });
  }
  return commands;
}

/**
 * Commands that replace the rules of the installed BTWALL chain with this configuration's, one
 * iptables-restore transaction per family: a packet meets either the old rules or the new ones,
 * never a half-written chain, and a failure leaves the old rules. The hooks stay as they are
 * (CHAINS and the queues are applied at a restart; the rules keep the running QUEUE_NUM).
 * With --noflush, declaring a user chain flushes only that chain.
 */
export function replaceChainCommands(config: Config): FirewallCommand[] {
  return ([4, 6] as const).map((family) => ({
    program: `${program(family)}-restore`,
    args: ['-w', '--noflush'],
    input: ['*filter', `:${CHAIN} - [0:0]`, ...chainRules(config, family).map((rule) => ['-A', CHAIN, ...rule].map(restoreWord).join(' ')), 'COMMIT', ''].join('\n'),
  }));
}

/** One word of an iptables-restore line (its own quoting: double quotes). */
function restoreWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/["\\]/g, '\\$&')}"`;
}

export interface RemovalStep {
  command: FirewallCommand;
  /** Run again until it fails: deletes every copy of a hook a crashed run may have left. */
  repeat: boolean;
}

/**
 * Steps that remove every trace of btwall, whatever configuration installed it. Each may fail
 * harmlessly when there is nothing left to remove.
 */
export function removalSteps(): RemovalStep[] {
  const steps: RemovalStep[] = [];
  for (const family of [4, 6] as const) {
    const p = program(family);
    for (const chain of HOOKABLE_CHAINS) steps.push({ command: { program: p, args: ['-w', '-D', chain, '-j', CHAIN] }, repeat: true });
    steps.push({ command: { program: p, args: ['-w', '-F', CHAIN] }, repeat: false });
    steps.push({ command: { program: p, args: ['-w', '-X', CHAIN] }, repeat: false });
  }
  return steps;
}

/** A command as a shell line, for `btwall rules` and logs. */
export function shellLine(command: FirewallCommand): string {
  return [command.program, ...command.args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))].join(' ');
}
