import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { NO_ESCALATION, type Escalation } from '../policy/escalation.js';
import { ACTIONS, type Action } from './actions.js';
import { ENV_FILE_VARIABLE, EnvFileError, readEnvFile, type EnvFile } from './env-file.js';
import { hostMemory, sizeTables, type HostResources, type TableSizing } from './sizing.js';

export { ACTIONS, type Action };

/** sysexits.h EX_CONFIG: what systemd and operators expect from a daemon refusing its configuration. */
export const EXIT_CONFIG = 78;

const CHAIN_NAMES = ['INPUT', 'FORWARD', 'OUTPUT'] as const;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
/**
 * `auto`: native where the device's driver runs XDP programs, generic elsewhere, decided per
 * interface when the program is attached; `off`: no XDP program at all; bans are then not enforced
 * in the kernel, and the daemon says so.
 */
const XDP_MODES = ['auto', 'generic', 'native', 'offload', 'off'] as const;
/** json: one record per line, what `btwall audit` and other tools read; text: the reference daemon's blocks, for people. */
export const DETECTION_LOG_FORMATS = ['json', 'text'] as const;

/** Comma-separated list: surrounding spaces and empty items ignored. */
function list(raw: string): string[] {
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

const boolean = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v), 'must be true or false (also 1/0, yes/no, on/off)')
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v));

function integer(min: number, max: number) {
  return z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be from ${min} to ${max}`);
}

const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };

/** A rate in tc's words (512kbit, 2mbit), as bits per second. */
const rate = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^\d+(\.\d+)?(bit|kbit|mbit|gbit)$/, 'must be a rate like 512kbit, 2mbit or 1gbit')
  .transform((v) => {
    const [, number, unit] = /^([\d.]+)([a-z]+)$/.exec(v)!;
    return Math.round(Number(number) * RATE_UNITS[unit]);
  })
  // hashlimit counts bytes per second in 32 bits; below 8 kbit it cannot pass one full packet a second.
  .refine((bits) => bits >= 8000 && bits <= 8 * 2 ** 31, 'must be from 8kbit to 17gbit');

const ESCALATION_DEFAULTS: Escalation = { factor: 2, maxS: 7 * 86_400, windowS: 86_400 };
const ESCALATION_HELP = 'must be off, or factor=N,max=SECONDS,window=SECONDS (any of them; defaults factor=2, max=604800, window=86400)';

/** `off` (or empty), or `factor=2,max=604800,window=86400` with any part left to its default. */
const escalation = z
  .string()
  .trim()
  .toLowerCase()
  .transform((v, ctx): Escalation => {
    if (v === '' || v === 'off') return NO_ESCALATION;
    const parsed = { ...ESCALATION_DEFAULTS };
    const keys = { factor: 'factor', max: 'maxS', window: 'windowS' } as const;
    for (const part of list(v)) {
      const [key, value, extra] = part.split('=').map((x) => x.trim());
      const number = Number(value);
      const field = keys[key as keyof typeof keys];
      const bad =
        field === undefined ||
        extra !== undefined ||
        !/^\d+(\.\d+)?$/.test(value ?? '') ||
        (field === 'factor' ? !(number >= 1 && number <= 100) : !Number.isInteger(number) || number < 1 || number > 365 * 86_400);
      if (bad) {
        ctx.addIssue({ code: 'custom', message: `${JSON.stringify(part)}: ${ESCALATION_HELP}; factor from 1 to 100, max and window whole seconds up to a year` });
        return z.NEVER;
      }
      parsed[field] = number;
    }
    return parsed;
  });

/** QUEUE_NUM=auto takes one queue per core this process may run on, but never more than this. */
export const AUTO_QUEUE_CAP = 16;

/** `auto` resolves to 0..cores-1 (up to AUTO_QUEUE_CAP) when the configuration is loaded. */
const queueRange = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^(auto|\d+(-\d+)?)$/, 'must be auto, a queue number (0-65535) or a range like 0-3')
  .transform((v): { first: number; last: number; auto: boolean } => {
    if (v === 'auto') return { first: 0, last: -1, auto: true };
    const [first, last = first] = v.split('-').map(Number);
    return { first, last, auto: false };
  })
  .refine((q) => q.auto || (q.first <= q.last && q.last <= 65535), 'must be a queue number (0-65535) or a range first-last with first <= last')
  .refine((q) => q.last - q.first < 64, 'a queue range may span at most 64 queues');

/** An INTERFACE item with `*` or `?` names every device that matches it, now or later. */
export function isInterfacePattern(item: string): boolean {
  return /[*?]/.test(item);
}

/** Whether a device name matches an INTERFACE item (an exact name, or a pattern with `*` and `?`). */
export function interfaceMatches(item: string, name: string): boolean {
  if (!isInterfacePattern(item)) return item === name;
  const regex = item.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${regex}$`).test(name);
}

const interfaces = z
  .string()
  .transform((v) => [...new Set(list(v))])
  .refine(
    (names) => names.every((n) => /^[A-Za-z0-9_.:@*?-]{1,15}$/.test(n)),
    'must be a comma list of interface names or patterns with * and ? (wg*, ppp*), at most 15 characters each',
  );

const chains = z
  .string()
  .transform((v) => list(v).map((c) => c.toUpperCase()))
  .refine((cs) => cs.length > 0 && cs.every((c) => (CHAIN_NAMES as readonly string[]).includes(c)), `must be a comma list of ${CHAIN_NAMES.join(', ')}`)
  .transform((cs) => [...new Set(cs)] as (typeof CHAIN_NAMES)[number][]);

const ports = z
  .string()
  .transform(list)
  .refine((ps) => ps.every((p) => /^\d+$/.test(p) && Number(p) >= 1 && Number(p) <= 65535), 'must be a comma list of port numbers 1-65535')
  .transform((ps) => [...new Set(ps.map(Number))]);

/** A CIDR in canonical parts; the address is checked by node's own parser. */
export interface Cidr {
  family: 4 | 6;
  address: string;
  prefix: number;
}

export function parseCidr(text: string): Cidr | null {
  const [address, prefixText, extra] = text.split('/');
  // A zone (fe80::1%eth0) names an interface, which iptables cannot match on as an address.
  if (extra !== undefined || address.includes('%')) return null;
  const family = isIP(address);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return null;
  return { family: family as 4 | 6, address, prefix };
}

/**
 * METRICS_ADDR: an IP address and a port, `127.0.0.1:9760` or `[::1]:9760` (a literal: a name
 * would make the listening address depend on the resolver).
 */
const listenAddress = z
  .string()
  .trim()
  .transform((v, ctx) => {
    if (v === '') return null;
    const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
    const host = match?.[1] ?? match?.[2] ?? '';
    const port = Number(match?.[3]);
    if (match === null || isIP(host) !== (match[1] !== undefined ? 6 : 4) || !(port >= 1 && port <= 65535)) {
      ctx.addIssue({ code: 'custom', message: 'must be ADDRESS:PORT with an IP address, [ADDRESS]:PORT for IPv6 (127.0.0.1:9760, [::1]:9760), or empty: no metrics' });
      return z.NEVER;
    }
    return { host, port };
  });

/** Longest path a unix socket address holds (sun_path, with its terminating NUL). */
const UNIX_PATH_MAX = 107;

const cidrs = z
  .string()
  .transform(list)
  .superRefine((items, ctx) => {
    for (const item of items) if (parseCidr(item) === null) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(item)} is not an IPv4 or IPv6 address or CIDR` });
  })
  .transform((items) => items.map((item) => parseCidr(item) as Cidr));

/** CROWDSEC_ORIGINS' word for the decisions btwall gateways publish (scenario btwall/...), whatever their origin field. */
export const BTWALL_ORIGIN = 'btwall';

const lapiUrl = z
  .string()
  .trim()
  .refine((v) => {
    if (v === '') return true;
    try {
      const url = new URL(v);
      return (url.protocol === 'http:' || url.protocol === 'https:') && url.search === '' && url.hash === '' && url.username === '';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL of a CrowdSec Local API, without query or credentials (http://10.0.0.5:8080)')
  .transform((v) => v.replace(/\/+$/, ''));

/** An API key or password: printable, no spaces (they go into HTTP headers and JSON). */
const secret = z.string().refine((v) => /^[\x21-\x7e]{0,256}$/.test(v), 'must be printable ASCII without spaces, at most 256 characters');

/** Seconds, decimals allowed, to milliseconds. */
function seconds(min: number, max: number) {
  return z
    .string()
    .trim()
    .regex(/^\d+(\.\d+)?$/, 'must be a number of seconds (decimals allowed)')
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be from ${min} to ${max} seconds`)
    .transform((n) => Math.round(n * 1000));
}

const isAll = (origin: string) => origin.toLowerCase() === 'all';

/** `all`, or a comma list of decision origins (crowdsec, cscli, CAPI, lists...) and `btwall`. */
const origins = z
  .string()
  .transform(list)
  .refine((items) => items.length > 0 && items.every((o) => /^[A-Za-z0-9._:-]{1,64}$/.test(o)), `must be \`all\` or a comma list of decision origins (${BTWALL_ORIGIN}, crowdsec, cscli, CAPI, lists ...)`)
  .refine((items) => !items.some(isAll) || items.length === 1, '`all` takes every origin: list nothing else with it')
  .transform((items): 'all' | string[] => (isAll(items[0]) ? 'all' : [...new Set(items)]));

/**
 * Every environment variable the daemon reads, with its default. The reference daemon's names are
 * kept where it has them (QUEUE_NUM ... WHITELIST_PORTS); the rest are ours.
 */
const schema = z.object({
  QUEUE_NUM: queueRange.prefault('auto'),
  INTERFACE: interfaces.prefault(''),
  CHAINS: chains.prefault('FORWARD'),
  BAN_DURATION: integer(1, 365 * 24 * 3600).prefault('18000'),
  LOG_LEVEL: z.string().trim().toLowerCase().pipe(z.enum(LOG_LEVELS)).prefault('info'),
  DETECTION_LOG: z
    .string()
    .trim()
    .refine((p) => p === '' || (p.startsWith('/') && !p.endsWith('/')), 'must be an absolute path to a file (or empty: no detection log)')
    .prefault('/var/log/btwall/detections.log'),
  DETECTION_LOG_FORMAT: z.string().trim().toLowerCase().pipe(z.enum(DETECTION_LOG_FORMATS)).prefault('json'),
  DETECTION_LOG_PAYLOAD_BYTES: integer(0, 65_535).prefault('256'),
  ACTION: z.string().trim().toLowerCase().pipe(z.enum(ACTIONS)).optional(),
  /** The old name of ACTION=monitor; read only when set. */
  MONITOR_ONLY: boolean.optional(),
  RATE: rate.prefault('512kbit'),
  CUT_ESTABLISHED: boolean.prefault('true'),
  BLOCK_SOCKS: boolean.prefault('false'),
  XDP_MODE: z.string().trim().toLowerCase().pipe(z.enum(XDP_MODES)).prefault('auto'),
  CLEANUP_INTERVAL: integer(1, 86_400).prefault('300'),
  STATS_INTERVAL: integer(1, 86_400).prefault('60'),
  /** Unset: sized from the machine's memory (src/config/sizing.ts). */
  BAN_CAPACITY: integer(1024, 1 << 24).optional(),
  TRACKER_DOMAINS: z
    .string()
    .transform((v) => list(v).map((d) => d.toLowerCase().replace(/^\*?\./, '').replace(/\.$/, '')))
    .refine(
      (names) => names.every((n) => n.length <= 253 && /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(n)),
      'must be a comma list of domain names (a name also covers its subdomains)',
    )
    .prefault(''),
  BPF_PIN_DIR: z
    .string()
    .trim()
    .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'must be an absolute path without ..')
    .transform((p) => p.replace(/\/+$/, '') || '/')
    .prefault('/sys/fs/bpf/btwall'),
  RULES_FILE: z
    .string()
    .trim()
    .refine((p) => p === '' || (p.startsWith('/') && !p.endsWith('/')), 'must be an absolute path to a JSON rules file (or empty: no operator rules)')
    .prefault(''),
  WHITELIST_PORTS: ports.prefault(''),
  ALLOW_CIDRS: cidrs.prefault(''),
  LOCAL_CIDRS: cidrs.prefault(''),
  BAN_LOCAL: boolean.prefault('false'),
  BAN_EXEMPT: cidrs.prefault(''),
  BAN_RATE: integer(1, 100_000).prefault('30'),
  BAN_ESCALATION: escalation.prefault('off'),
  INSPECT_PACKETS: integer(1, 1000).prefault('20'),
  QUEUE_MAXLEN: integer(64, 1 << 20).prefault('8192'),
  VERDICT_TIMEOUT_MS: integer(5, 60_000).prefault('50'),
  QUEUE_COALESCE_US: integer(0, 2000).prefault('200'),
  /** Unset: sized from the machine's memory (src/config/sizing.ts). */
  FLOW_CAPACITY: integer(1024, 1 << 26).optional(),
  FLOW_IDLE_TIMEOUT: integer(1, 86_400).prefault('120'),
  /** Unset: sized from the machine's memory (src/config/sizing.ts). */
  PEER_CACHE_SIZE: integer(1024, 1 << 24).optional(),
  PEER_CACHE_TTL: integer(1, 7 * 86_400).prefault('3600'),
  METRICS_ADDR: listenAddress.prefault(''),
  CONTROL_SOCKET: z
    .string()
    .trim()
    .refine((p) => p === '' || (p.startsWith('/') && !p.endsWith('/') && !p.split('/').includes('..')), 'must be an absolute path without .. (or empty: no control socket)')
    .refine((p) => Buffer.byteLength(p) <= UNIX_PATH_MAX, `must be at most ${UNIX_PATH_MAX} bytes (a unix socket address)`)
    .prefault('/run/btwall/control.sock'),
  WEBHOOK_URL: z
    .string()
    .trim()
    .refine((v) => v === '' || (URL.canParse(v) && ['http:', 'https:'].includes(new URL(v).protocol)), 'must be an http:// or https:// URL (or empty: no webhook)')
    .prefault(''),
  CROWDSEC_LAPI_URL: lapiUrl.prefault(''),
  CROWDSEC_API_KEY: secret.prefault(''),
  CROWDSEC_MACHINE_ID: z.string().trim().regex(/^[A-Za-z0-9._@-]{0,128}$/, 'must be a CrowdSec machine name (letters, digits, . _ @ -, at most 128)').prefault(''),
  CROWDSEC_MACHINE_PASSWORD: secret.prefault(''),
  CROWDSEC_POLL_INTERVAL: seconds(0.1, 3600).prefault('1'),
  CROWDSEC_ORIGINS: origins.prefault(BTWALL_ORIGIN),
  CROWDSEC_QUEUE_CAPACITY: integer(1, 1 << 20).prefault('10000'),
});

/** The CROWDSEC_* variables that only mean something with a Local API to talk to. */
const CROWDSEC_NEEDS_URL = ['CROWDSEC_API_KEY', 'CROWDSEC_MACHINE_ID', 'CROWDSEC_MACHINE_PASSWORD'] as const;

/** Problems between variables, each named by the variable to change. */
function crowdsecProblems(c: z.infer<typeof schema>): { name: string; message: string }[] {
  const problems: { name: string; message: string }[] = [];
  if (c.CROWDSEC_LAPI_URL === '') {
    for (const name of CROWDSEC_NEEDS_URL) if (c[name] !== '') problems.push({ name, message: 'needs CROWDSEC_LAPI_URL (the CrowdSec Local API to talk to)' });
    return problems;
  }
  if (c.CROWDSEC_API_KEY === '' && c.CROWDSEC_MACHINE_ID === '') problems.push({ name: 'CROWDSEC_LAPI_URL', message: 'needs CROWDSEC_API_KEY (to enforce decisions), CROWDSEC_MACHINE_ID and CROWDSEC_MACHINE_PASSWORD (to publish bans), or both' });
  if ((c.CROWDSEC_MACHINE_ID === '') !== (c.CROWDSEC_MACHINE_PASSWORD === '')) {
    const missing = c.CROWDSEC_MACHINE_ID === '' ? 'CROWDSEC_MACHINE_ID' : 'CROWDSEC_MACHINE_PASSWORD';
    problems.push({ name: missing, message: 'CROWDSEC_MACHINE_ID and CROWDSEC_MACHINE_PASSWORD go together (cscli machines add)' });
  }
  return problems;
}

export interface Config {
  /** The queues served, one worker each; `auto`: chosen from the cores (QUEUE_NUM=auto). */
  queues: { first: number; last: number; auto: boolean };
  /** Exact device names, and patterns (`wg*`) for devices that come and go. */
  interfaces: string[];
  chains: (typeof CHAIN_NAMES)[number][];
  banDurationS: number;
  logLevel: (typeof LOG_LEVELS)[number];
  /** Empty: no detection log. */
  detectionLog: string;
  detectionLogFormat: (typeof DETECTION_LOG_FORMATS)[number];
  /** Most payload bytes of the deciding packet a record keeps. */
  detectionLogPayloadBytes: number;
  action: Action;
  /** ACTION=throttle: what each local host's BitTorrent may take, each direction, bits per second. */
  rateBitsPerS: number;
  /** With ACTION=drop: tear down dropped TCP connections (conntrack entry, resets both ways), and inspect those that predate the daemon. */
  cutEstablished: boolean;
  blockSocks: boolean;
  xdpMode: (typeof XDP_MODES)[number];
  cleanupIntervalS: number;
  /** Seconds between stats log lines. */
  statsIntervalS: number;
  /** Entries each XDP ban map (IPv4, IPv6) holds; the least recently used go first when full. BAN_CAPACITY, or sized from memory. */
  banCapacity: number;
  /** Added to the built-in tracker and client-service names (DNS, TLS SNI, HTTP Host). */
  trackerDomains: string[];
  /** Where the ban maps are pinned (a directory on a bpf filesystem). */
  bpfPinDir: string;
  /** The operator's match rules (JSON); empty: none. */
  rulesFile: string;
  whitelistPorts: number[];
  allowCidrs: Cidr[];
  localCidrs: Cidr[];
  banLocal: boolean;
  /** Never banned, whatever the evidence (as well as the allowlist, resolvers, the gateway's own addresses). */
  banExempt: Cidr[];
  /** Most new bans per local host and minute. */
  banRatePerMinute: number;
  /** How much longer a peer's next ban is when it comes soon after its last. */
  banEscalation: Escalation;
  inspectPackets: number;
  queueMaxLen: number;
  verdictTimeoutMs: number;
  /** Under load, how long a small batch waits for more packets before JavaScript gets it, µs (0: never). */
  queueCoalesceUs: number;
  /** Flows each queue tracks; FLOW_CAPACITY, or sized from memory. */
  flowCapacity: number;
  flowIdleTimeoutS: number;
  /** Entries of each peer cache (shared by the queues); PEER_CACHE_SIZE, or sized from memory. */
  peerCacheSize: number;
  peerCacheTtlS: number;
  /** Whether flowCapacity, peerCacheSize and banCapacity came from their variables or from the machine's memory, and which memory. */
  tableSizing: TableSizing;
  /** Where the Prometheus exposition is served (GET /metrics); null: nowhere. */
  metricsAddr: { host: string; port: number } | null;
  /** The unix socket `btwall status` asks (mode 0600); empty: none. */
  controlSocket: string;
  /** Where each detection is POSTed as JSON; empty: nowhere. May carry credentials: see redactedConfig. */
  webhookUrl: string;
  /** Sharing bans through a CrowdSec Local API; null without CROWDSEC_LAPI_URL (nothing changes). */
  crowdsec: CrowdsecConfig | null;
}

/** A URL's credentials and query (where tokens travel) replaced by `REDACTED`. */
export function redactedUrl(text: string): string {
  if (text === '') return text;
  const url = new URL(text);
  if (url.username !== '') url.username = 'REDACTED';
  if (url.password !== '') url.password = 'REDACTED';
  if (url.search !== '') url.search = 'REDACTED';
  return url.toString();
}

/** Credentials shown as set, never their values. */
const SET = '(set)';

/** The configuration as it may be shown (check-config, `btwall status`): secrets redacted. */
export function redactedConfig(config: Config): Config {
  const fleet = config.crowdsec;
  return {
    ...config,
    webhookUrl: redactedUrl(config.webhookUrl),
    crowdsec:
      fleet === null
        ? null
        : { ...fleet, apiKey: fleet.apiKey === null ? null : SET, machine: fleet.machine === null ? null : { ...fleet.machine, password: SET } },
  };
}

export interface CrowdsecConfig {
  /** Without a trailing slash. */
  lapiUrl: string;
  /** Bouncer key (cscli bouncers add): decisions are enforced; null: they are not read. */
  apiKey: string | null;
  /** Machine credentials (cscli machines add): bans are published; null: they are not. */
  machine: { id: string; password: string } | null;
  pollIntervalMs: number;
  /** Which decisions are enforced: every ban, or those of these origins (`btwall`: btwall's scenarios). */
  origins: 'all' | string[];
  /** Most bans waiting for the Local API; the oldest go first when it is full. */
  queueCapacity: number;
}

export const CONFIG_VARIABLES = Object.keys(schema.shape) as (keyof typeof schema.shape)[];

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

/**
 * Validates the environment; throws ConfigError naming every bad variable and its value. `host`:
 * the cores (for QUEUE_NUM=auto) and memory (for unset table sizes) to use instead of this host's.
 */
export function loadConfig(env: NodeJS.ProcessEnv, host: Partial<HostResources> = {}): Config {
  const cores = host.cores ?? availableParallelism();
  const input: Record<string, string> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined) input[name] = value;
  }
  const parsed = schema.safeParse(input);
  const named = (name: string, message: string) => `${name}=${JSON.stringify(env[name] ?? '')}: ${message}`;
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((issue) => named(String(issue.path[0]), issue.message)));
  const c = parsed.data;
  const crossProblems = crowdsecProblems(c);
  if (crossProblems.length > 0) throw new ConfigError(crossProblems.map((p) => named(p.name, p.message)));
  const queues = c.QUEUE_NUM.auto ? { first: 0, last: Math.min(Math.max(cores, 1), AUTO_QUEUE_CAP) - 1, auto: true } : c.QUEUE_NUM;
  const explicit = { flowCapacity: c.FLOW_CAPACITY !== undefined, peerCacheSize: c.PEER_CACHE_SIZE !== undefined, banCapacity: c.BAN_CAPACITY !== undefined };
  const unsized: Omit<Config, 'tableSizing'> = {
    action: action(c.ACTION, c.MONITOR_ONLY, env),
    queues,
    interfaces: c.INTERFACE,
    chains: c.CHAINS,
    banDurationS: c.BAN_DURATION,
    logLevel: c.LOG_LEVEL,
    detectionLog: c.DETECTION_LOG,
    detectionLogFormat: c.DETECTION_LOG_FORMAT,
    detectionLogPayloadBytes: c.DETECTION_LOG_PAYLOAD_BYTES,
    rateBitsPerS: c.RATE,
    cutEstablished: c.CUT_ESTABLISHED,
    blockSocks: c.BLOCK_SOCKS,
    xdpMode: c.XDP_MODE,
    cleanupIntervalS: c.CLEANUP_INTERVAL,
    statsIntervalS: c.STATS_INTERVAL,
    banCapacity: c.BAN_CAPACITY ?? 0,
    trackerDomains: c.TRACKER_DOMAINS,
    bpfPinDir: c.BPF_PIN_DIR,
    rulesFile: c.RULES_FILE,
    whitelistPorts: c.WHITELIST_PORTS,
    allowCidrs: c.ALLOW_CIDRS,
    localCidrs: c.LOCAL_CIDRS,
    banLocal: c.BAN_LOCAL,
    banExempt: c.BAN_EXEMPT,
    banRatePerMinute: c.BAN_RATE,
    banEscalation: c.BAN_ESCALATION,
    inspectPackets: c.INSPECT_PACKETS,
    queueMaxLen: c.QUEUE_MAXLEN,
    verdictTimeoutMs: c.VERDICT_TIMEOUT_MS,
    queueCoalesceUs: c.QUEUE_COALESCE_US,
    // Placeholders where unset: sizeTables replaces them.
    flowCapacity: c.FLOW_CAPACITY ?? 0,
    flowIdleTimeoutS: c.FLOW_IDLE_TIMEOUT,
    peerCacheSize: c.PEER_CACHE_SIZE ?? 0,
    peerCacheTtlS: c.PEER_CACHE_TTL,
    metricsAddr: c.METRICS_ADDR,
    controlSocket: c.CONTROL_SOCKET,
    webhookUrl: c.WEBHOOK_URL,
    crowdsec:
      c.CROWDSEC_LAPI_URL === ''
        ? null
        : {
            lapiUrl: c.CROWDSEC_LAPI_URL,
            apiKey: c.CROWDSEC_API_KEY || null,
            machine: c.CROWDSEC_MACHINE_ID === '' ? null : { id: c.CROWDSEC_MACHINE_ID, password: c.CROWDSEC_MACHINE_PASSWORD },
            pollIntervalMs: c.CROWDSEC_POLL_INTERVAL,
            origins: c.CROWDSEC_ORIGINS,
            queueCapacity: c.CROWDSEC_QUEUE_CAPACITY,
          },
  };
  return sizeTables(unsized, host.memory ?? hostMemory(), explicit);
}

/**
 * ACTION, or the old MONITOR_ONLY when ACTION is unset (true: monitor, false: drop). Both set must
 * agree (MONITOR_ONLY=true with ACTION=monitor; false with drop or throttle): a configuration that
 * says two things is refused rather than one of them silently winning.
 */
function action(action: Action | undefined, monitorOnly: boolean | undefined, env: NodeJS.ProcessEnv): Action {
  if (monitorOnly === undefined) return action ?? 'drop';
  if (action === undefined) return monitorOnly ? 'monitor' : 'drop';
  if ((action === 'monitor') === monitorOnly) return action;
  throw new ConfigError([
    `ACTION=${JSON.stringify(env.ACTION)} and MONITOR_ONLY=${JSON.stringify(env.MONITOR_ONLY)} disagree: MONITOR_ONLY is the old name of ACTION=monitor; set only ACTION`,
  ]);
}

/** Where a configuration was read from. */
export interface ConfigSource {
  /** The environment with BTWALL_ENV_FILE's variables over it. */
  env: NodeJS.ProcessEnv;
  /** BTWALL_ENV_FILE as read; null when it is not set. */
  envFile: EnvFile | null;
}

/**
 * The environment the configuration is read from: `env` with BTWALL_ENV_FILE's variables over it
 * (the file wins, as systemd's EnvironmentFile= wins over Environment=). `env` is the real
 * environment, never one the file was already laid over: a variable taken out of the file goes
 * back to its value there (or to its default), not to the file's old value. Throws ConfigError
 * naming BTWALL_ENV_FILE and the line.
 */
export function configEnvironment(env: NodeJS.ProcessEnv): ConfigSource {
  const path = env[ENV_FILE_VARIABLE];
  if (path === undefined || path === '') return { env, envFile: null };
  const named = (message: string) => `${ENV_FILE_VARIABLE}=${JSON.stringify(path)}: ${message}`;
  if (!path.startsWith('/')) throw new ConfigError([named('must be an absolute path to a file of KEY=VALUE lines (or unset: none)')]);
  let envFile: EnvFile;
  try {
    envFile = readEnvFile(path);
  } catch (error) {
    if (!(error instanceof EnvFileError)) throw error;
    throw new ConfigError(error.problems.map(named));
  }
  if (envFile.variables.has(ENV_FILE_VARIABLE)) throw new ConfigError([named(`sets ${ENV_FILE_VARIABLE} itself; the file is named by the environment only`)]);
  return { env: { ...env, ...Object.fromEntries(envFile.variables) }, envFile };
}

/** The configuration from `env` and BTWALL_ENV_FILE (configEnvironment); throws ConfigError. */
export function readConfig(env: NodeJS.ProcessEnv, host: Partial<HostResources> = {}): { config: Config; source: ConfigSource } {
  const source = configEnvironment(env);
  return { config: loadConfig(source.env, host), source };
}

/**
 * Runs `use` with the validated environment (BTWALL_ENV_FILE's variables over it); when it is invalid, prints every problem and returns
 * exit code 78 instead, having touched nothing. `check` adds problems a valid configuration can
 * still have on this machine (the daemon's: see src/config/machine.ts), each naming its variable.
 */
export function withConfig<T>(env: NodeJS.ProcessEnv, use: (config: Config, source: ConfigSource) => T, check?: (config: Config) => string[]): T | typeof EXIT_CONFIG {
  let config: Config;
  let source: ConfigSource;
  try {
    ({ config, source } = readConfig(env));
    const problems = check?.(config) ?? [];
    if (problems.length > 0) throw new ConfigError(problems);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return refuseConfig(error);
  }
  return use(config, source);
}

/** Prints a refused configuration the one way every refusal is printed; the exit code to return. */
export function refuseConfig(error: ConfigError): typeof EXIT_CONFIG {
  process.stderr.write(`btwall: ${error.message}\n`);
  return EXIT_CONFIG;
}
