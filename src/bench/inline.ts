/**
 * `npm run bench:inline [-- --seconds 3 --rounds 3 --flows 8 --payload 64 --queues N]`, as root:
 * traffic through a gateway namespace with no queue, with the C batched accept-all consumer
 * (nfq-batch, built from ../shared/bench) and with `btwall run`, in interleaved rounds, on one queue and on N
 * queues (default: one per core; the C side is one nfq-batch per queue, as btwall has one worker
 * per queue); prints TCP Gbit/s, 64-byte UDP packets/s inspected, packets accepted uninspected
 * (FAIL_OPEN, ENOBUFS, watchdog), CPU per packet, how the queues shared the load, and the
 * targets: btwall's inspected pps >= 0.8 x the C consumer's on one queue and >= 1.0 x on N
 * queues, btwall's N/1 scaling >= 0.9 x the C consumer's, bulk TCP through btwall >= 0.9 x no
 * queue, no ENOBUFS for btwall at the packets/s the C consumer inspected.
 * Exit status: 0 all targets met, 1 one missed, 2 the run failed (everything is cleaned up), 69
 * something it needs is missing (requirements.ts: named, nothing touched).
 *
 * Both consumers run behind btwall's own rules (connbytes 0:INSPECT_PACKETS, connmarks). For the
 * UDP runs one more rule queues every UDP packet, for both consumers alike: under the production
 * rules a flow leaves the queue after INSPECT_PACKETS packets, or as soon as btwall marks it clean
 * (the C consumer marks nothing), so a flood would be inspected by neither, and unequally; keeping
 * it in the queue with fresh flows instead would take rate x seconds / INSPECT_PACKETS conntrack
 * entries. btwall's engine still decodes and looks up every packet (its detectors give the
 * udpflood payload up after the first one), and its verdicts still carry the clean connmark.
 * The UDP load comes from --flows udpflood instances (N by default: on few cores each more sender
 * mostly takes CPU from the consumer under test), each one flow to an address of its own on the
 * server. --queue-balance hashes addresses, not ports, with a seed of the kernel's: before the runs
 * one datagram to each candidate address shows its queue, and the flows get addresses that spread
 * them evenly over the N queues. Every run, one queue or N, gets the same load.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../config/config.js';
import { MARK_MASK } from '../firewall/rules.js';
import { installRules, removeRules, type CommandRunner } from '../firewall/apply.js';
import { collectLogLines, createLab, finish, output, poll, type Lab, type LabNamespace, type LogLine } from './lab.js';
import { BENCH_TOOLS, requireOrExit, type Needs } from './requirements.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = resolve(ROOT, 'dist/cli/main.js');
const TCP_PORT = 5201;
const UDP_PORT = 9000;
const FIRST_SOURCE_PORT = 40000;
/** Time for the queue to drain after the load stops, before the counters are read. */
const SETTLE_MS = 500;
/** The whole run gives up after this, cleaning up. */
const RUN_LIMIT_MS = 10 * 60_000;

/** Runs spoilt from outside are tried this many times in all. */
const MAX_ATTEMPTS = 3;

const TARGET_PPS_RATIO = 0.8;
const TARGET_PPS_RATIO_N = 1.0;
const TARGET_SCALING_RATIO = 0.9;
const TARGET_TCP_RATIO = 0.9;

/** Queues first..last, served by one consumer. */
interface QueueRange {
  first: number;
  last: number;
}

const queueCount = (q: QueueRange) => q.last - q.first + 1;

/** The lab's networks: udpflood sends to 10.91.0.0/16 and fd91::/16 only. */
const LAB_NETWORKS = { v4: '10.91', v6: 'fd91' };

interface Options {
  seconds: number;
  rounds: number;
  flows: number;
  payload: number;
  queue: number;
  /** N: the second configuration's queue count. */
  queues: number;
  /** Namespace and device names start with it, so that runs side by side do not collide. */
  tag: string;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      flows: { type: 'string', default: '' },
      payload: { type: 'string', default: '64' },
      queue: { type: 'string', default: '0' },
      queues: { type: 'string', default: String(availableParallelism()) },
      tag: { type: 'string', default: 'bi' },
    },
  });
  const whole = (name: string, text: string, min: number, max: number) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
    return n;
  };
  if (!/^[a-z]{1,4}$/.test(values.tag)) throw new Error('--tag must be 1 to 4 lower-case letters');
  return {
    seconds: whole('seconds', values.seconds, 1, 60),
    rounds: whole('rounds', values.rounds, 1, 20),
    flows: whole('flows', values.flows || values.queues, 1, 64),
    payload: whole('payload', values.payload, 1, 1400),
    queue: whole('queue', values.queue, 0, 65535 - 63),
    queues: whole('queues', values.queues, 2, 64),
    tag: values.tag,
  };
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Collects a child's output as it comes. */
function listening(ns: LabNamespace, l4: 'tcp' | 'udp', port: number): Promise<void> {
  const flag = l4 === 'tcp' ? '-Hltn' : '-Hlun';
  return poll(`${l4} port ${port} in ${ns.name}`, 5000, () => ns.run('ss', [flag, `sport = :${port}`]).stdout.trim() !== '');
}

/** The process and its descendants (children of any of their threads: btwall spawns its broker from a worker). */
function processTree(pid: number): number[] {
  const pids = [pid];
  for (let i = 0; i < pids.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${pids[i]}/task`)) {
        const children = readFileSync(`/proc/${pids[i]}/task/${task}/children`, 'utf8').trim();
        if (children !== '') pids.push(...children.split(/\s+/).map(Number));
      }
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const TICKS_PER_SECOND = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system, all threads) each process has used so far. */
function cpuSeconds(pids: number[]): Map<number, number> {
  const used = new Map<number, number>();
  for (const pid of pids) {
    try {
      // Fields after the parenthesised command name, from field 3 (state): utime is field 14, stime 15.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      used.set(pid, (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND);
    } catch {
      // gone meanwhile
    }
  }
  return used;
}

/** CPU seconds used between two readings by the processes present in both. */
function cpuUsed(before: Map<number, number>, after: Map<number, number>): number {
  let seconds = 0;
  for (const [pid, used] of after) seconds += used - (before.get(pid) ?? used);
  return seconds;
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + fields[4];
  return { busy: total - idle, total };
}

// ---------------------------------------------------------------------------------------------
// Kernel counters

/** Packets that hit any NFQUEUE rule of the IPv4 filter table so far. */
function queueRuleHits(gateway: LabNamespace): number {
  let hits = 0;
  for (const line of gateway.must('iptables', ['-w', '-n', '-v', '-x', '-L']).split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[2] === 'NFQUEUE') hits += Number(fields[0]);
  }
  return hits;
}

interface KernelQueue {
  /** Dropped because the queue was full (never with FAIL_OPEN: those are accepted, and not counted). */
  queueDropped: number;
  /** Dropped because the consumer's socket was full (never with FAIL_OPEN, as above). */
  userDropped: number;
  /** Packet ids handed out: every packet queued, delivered to the socket or not. */
  ids: number;
}

/** Each queue's line of /proc/net/netfilter/nfnetlink_queue in the gateway, first to last (zeros while unbound). */
function kernelQueues(gateway: LabNamespace, queues: QueueRange): KernelQueue[] {
  const found: KernelQueue[] = Array.from({ length: queueCount(queues) }, () => ({ queueDropped: 0, userDropped: 0, ids: 0 }));
  for (const line of gateway.must('cat', ['/proc/net/netfilter/nfnetlink_queue']).split('\n')) {
    const f = line.trim().split(/\s+/).map(Number);
    // queue_num portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
    if (f.length >= 8 && f[0] >= queues.first && f[0] <= queues.last) found[f[0] - queues.first] = { queueDropped: f[5], userDropped: f[6], ids: f[7] };
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Consumers

interface ConsumerCounts {
  /** Packets the consumer read from the kernel. */
  received: number;
  /** Packets it decided in time (the C consumer decides every packet it reads). */
  inspected: number;
  /** Packets btwall's broker accepted because JavaScript was late. */
  watchdogAccepted: number;
  /** Times the broker's socket reported ENOBUFS; null when the consumer cannot tell (NETLINK_NO_ENOBUFS). */
  enobufsEvents: number | null;
  /** Packets per batch handed over. */
  averageBatch: number;
}

interface Consumer {
  label: string;
  /** Binds the queue and has btwall's rules installed. */
  start(): Promise<void>;
  /** Its processes, for CPU accounting. */
  pids(): number[];
  /** Stops it (which removes the rules) and returns its counts. */
  stop(): Promise<ConsumerCounts>;
}

/** The configuration btwall runs with here; the C consumer gets the rules it yields too. */
function daemonEnvironment(queues: QueueRange): Record<string, string> {
  return { QUEUE_NUM: `${queues.first}-${queues.last}`, CHAINS: 'FORWARD', DETECTION_LOG: '', LOG_LEVEL: 'info', XDP_MODE: 'off' };
}

function gatewayRunner(gateway: LabNamespace): CommandRunner {
  return (command) => {
    const run = gateway.run(command.program, command.args);
    return { ok: run.status === 0, stderr: (run.stderr ?? '').trim() };
  };
}

/** One nfq-batch per queue of the configuration, as btwall has one worker (and broker) per queue. */
function cConsumer(lab: Lab, tools: string, config: Config): Consumer {
  const run = gatewayRunner(lab.gateway);
  const children: { child: ChildProcess; out: { stdout: string; stderr: string } }[] = [];
  return {
    label: 'C nfq-batch (mode b, FAIL_OPEN+GSO)',
    async start() {
      for (let queue = config.queues.first; queue <= config.queues.last; queue++) {
        // The daemon's own settings: copy range 65535, maxlen, 32 MiB receive buffer, batches of 64.
        const child = lab.gateway.start(`${tools}/nfq-batch`, [queue, 65535, 'b', 'og', config.queueMaxLen, 32 << 20, 64].map(String));
        const out = output(child);
        children.push({ child, out });
        await poll(`nfq-batch to bind queue ${queue}`, 5000, () => {
          if (child.exitCode !== null) throw new Error(`nfq-batch exited: ${out.stderr.trim()}`);
          return out.stderr.includes('nfq-batch: queue');
        });
      }
      installRules(config, run);
    },
    pids: () => children.flatMap(({ child }) => (child.pid === undefined ? [] : processTree(child.pid))),
    async stop() {
      removeRules(run);
      let packets = 0;
      let batches = 0;
      for (const { child, out } of children) {
        child.kill('SIGTERM');
        await finish(child, 5000, 'nfq-batch');
        const m = /packets (\d+) .* avg_batch ([\d.]+)/.exec(out.stdout);
        if (!m) throw new Error(`no counters from nfq-batch: ${out.stdout} ${out.stderr}`);
        packets += Number(m[1]);
        if (Number(m[2]) > 0) batches += Number(m[1]) / Number(m[2]);
      }
      return { received: packets, inspected: packets, watchdogAccepted: 0, enobufsEvents: null, averageBatch: batches > 0 ? packets / batches : 0 };
    },
  };
}

/** The run was spoilt from outside (something killed the broker, e.g. a test run stopping btwall-queue by name): worth another try. */
class Disturbed extends Error {}

function btwallConsumer(lab: Lab, queues: QueueRange): Consumer {
  let child: ChildProcess | null = null;
  const lines: LogLine[] = [];
  let stderr = '';
  return {
    label: 'btwall run',
    async start() {
      child = lab.gateway.start(process.execPath, [CLI, 'run'], { ...process.env, ...daemonEnvironment(queues) });
      collectLogLines(child, lines);
      child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
      await poll('btwall to start', 20_000, () => {
        if (child!.exitCode !== null) throw new Error(`btwall run exited ${child!.exitCode}: ${stderr.trim()} ${JSON.stringify(lines)}`);
        return lines.some((l) => l.msg === 'btwall running');
      });
    },
    pids: () => (child?.pid === undefined ? [] : processTree(child.pid)),
    async stop() {
      child!.kill('SIGTERM');
      await finish(child!, 15_000, 'btwall run');
      const lost = lines.find((l) => l.msg.startsWith('queue broker died') || l.msg.startsWith('queue worker died'));
      if (lost !== undefined) throw new Disturbed(`btwall's broker or worker was stopped from outside during the run (${String(lost.reason)})`);
      // The line made at stop, with every queue's totals.
      const stats = lines.filter((l) => l.msg === 'stats').at(-1);
      if (stats === undefined) throw new Error(`no stats line from btwall run: ${stderr.trim()}`);
      const n = (key: string) => Number(stats[key] ?? 0);
      return {
        received: n('packets'),
        inspected: n('verdicts'),
        watchdogAccepted: n('watchdogAccepted'),
        enobufsEvents: n('enobufs'),
        averageBatch: n('batches') > 0 ? n('packets') / n('batches') : 0,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Loads

async function tcpGbps(lab: Lab, seconds: number): Promise<number> {
  const server = lab.server.start('iperf3', ['-s', '-1', '-B', lab.serverV4, '-p', String(TCP_PORT)]);
  await listening(lab.server, 'tcp', TCP_PORT);
  const client = lab.client.start('iperf3', ['-c', lab.serverV4, '-p', String(TCP_PORT), '-t', String(seconds), '-J', '--connect-timeout', '3000']);
  const out = output(client);
  await finish(client, (seconds + 15) * 1000, 'iperf3 client');
  await finish(server, 5000, 'iperf3 server');
  const report = JSON.parse(out.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
  if (report.error !== undefined || report.end?.sum_received === undefined) throw new Error(`iperf3: ${report.error ?? out.stderr}`);
  return report.end.sum_received.bits_per_second / 1e9;
}

interface UdpLoad {
  sent: number;
  /** The longest sender's time. */
  seconds: number;
  /** What reached the server; the sink stops by itself a little after the senders. */
  delivered: Promise<number>;
}

/** Server addresses that may carry a flow; `balancedDestinations` picks from them. */
const CANDIDATE_DESTINATIONS = 64;
const candidate = (i: number) => `${LAB_NETWORKS.v4}.2.${10 + i}`;

/**
 * One server address per flow, in turn one whose flows --queue-balance puts on each of the N
 * queues: found by sending a few datagrams to each candidate with the C consumer on the N queues.
 */
async function balancedDestinations(lab: Lab, o: Options, queues: QueueRange, config: Config): Promise<string[]> {
  const consumer = cConsumer(lab, BENCH_TOOLS, config);
  await consumer.start();
  queueAllUdp(lab.gateway, queues, '-I');
  const byQueue: string[][] = Array.from({ length: queueCount(queues) }, () => []);
  try {
    for (let i = 0; i < CANDIDATE_DESTINATIONS; i++) {
      const before = kernelQueues(lab.gateway, queues);
      const sender = lab.client.start(`${BENCH_TOOLS}/udpflood`, [candidate(i), UDP_PORT, o.payload, 0.02, 200].map(String));
      await finish(sender, 5000, 'udpflood');
      const after = kernelQueues(lab.gateway, queues);
      const used = after.map((q, n) => q.ids - before[n].ids).findIndex((d) => d > 0);
      if (used >= 0) byQueue[used].push(candidate(i));
    }
  } finally {
    queueAllUdp(lab.gateway, queues, '-D');
    await consumer.stop();
  }
  const chosen = Array.from({ length: o.flows }, (_, k) => byQueue[k % byQueue.length][Math.floor(k / byQueue.length)]);
  if (chosen.some((d) => d === undefined)) throw new Error(`cannot spread ${o.flows} flows evenly over ${byQueue.length} queues: ${byQueue.map((d) => d.length).join('/')} of ${CANDIDATE_DESTINATIONS} addresses per queue`);
  return chosen;
}

/** One udpflood instance per destination, one source port each, at `pps` in all (0: as fast as they can). */
async function udpLoad(lab: Lab, o: Options, destinations: readonly string[], pps: number): Promise<UdpLoad> {
  const sink = lab.server.start(`${BENCH_TOOLS}/udpsink`, [String(UDP_PORT), String(o.seconds + 1.5)]);
  const sinkOut = output(sink);
  await listening(lab.server, 'udp', UDP_PORT);
  const senders = destinations.map((destination, i) => {
    const args = [destination, UDP_PORT, o.payload, o.seconds, pps > 0 ? pps / destinations.length : 0, FIRST_SOURCE_PORT + i];
    const child = lab.client.start(`${BENCH_TOOLS}/udpflood`, args.map(String));
    return { child, out: output(child) };
  });
  let sent = 0;
  let seconds = 0;
  for (const { child, out } of senders) {
    await finish(child, (o.seconds + 10) * 1000, 'udpflood');
    const m = /sent (\d+) pkts in ([\d.]+)s/.exec(out.stdout);
    if (!m) throw new Error(`udpflood: ${out.stdout} ${out.stderr}`);
    sent += Number(m[1]);
    seconds = Math.max(seconds, Number(m[2]));
  }
  const delivered = finish(sink, 10_000, 'udpsink').then(() => {
    const m = /got (\d+) pkts/.exec(sinkOut.stdout);
    if (!m) throw new Error(`udpsink: ${sinkOut.stdout} ${sinkOut.stderr}`);
    return Number(m[1]);
  });
  // Awaited later; a failure meanwhile must not count as unhandled.
  delivered.catch(() => undefined);
  return { sent, seconds, delivered };
}

// ---------------------------------------------------------------------------------------------
// Runs

interface Run {
  tcpGbps: number | null;
  udp: { sent: number; seconds: number; delivered: number } | null;
  consumer: ConsumerCounts | null;
  /** Rule hits minus packets the consumer read minus kernel drops: accepted uninspected by FAIL_OPEN. */
  failOpen: number | null;
  /** Of those, packets that got an id but found the consumer's socket full (ENOBUFS). */
  enobufsPackets: number | null;
  /** CPU seconds the consumer's processes used over the load, and the load's wall time. */
  consumerCpu: number | null;
  seconds: number;
  /** The whole machine's busy share over the load (shared cores: others' work shows here too). */
  machineBusy: number;
  /** Packets each queue was handed over the load (its id_sequence), first to last. */
  perQueue: number[];
}

interface Snapshot {
  time: bigint;
  hits: number;
  kernel: KernelQueue[];
  consumerCpu: Map<number, number>;
  machine: { busy: number; total: number };
}

function snapshot(gateway: LabNamespace, queues: QueueRange, pids: number[]): Snapshot {
  return { time: process.hrtime.bigint(), hits: queueRuleHits(gateway), kernel: kernelQueues(gateway, queues), consumerCpu: cpuSeconds(pids), machine: machineJiffies() };
}

/** Queues every UDP packet the gateway forwards, ahead of btwall's chain (-I), or stops doing so (-D). */
function queueAllUdp(gateway: LabNamespace, queues: QueueRange, action: '-I' | '-D'): void {
  const position = action === '-I' ? ['1'] : [];
  // Only packets without btwall's decision bits: a decided packet repeated through the hook must
  // reach btwall's chain, not the queue again.
  const undecided = ['-m', 'mark', '--mark', `0/0x${MARK_MASK.toString(16)}`];
  const target = queues.first === queues.last ? ['--queue-num', String(queues.first)] : ['--queue-balance', `${queues.first}:${queues.last}`];
  gateway.must('iptables', ['-w', action, 'FORWARD', ...position, '-p', 'udp', ...undecided, '-j', 'NFQUEUE', ...target, '--queue-bypass']);
}

/** One load through the gateway with `consumer` on `queues` (null: no queue, no rules); UDP at `pps` (0: flood). */
async function measure(lab: Lab, o: Options, queues: QueueRange, consumer: Consumer | null, load: 'tcp' | { destinations: readonly string[] }, pps = 0): Promise<Run> {
  const gateway = lab.gateway;
  if (consumer !== null) await consumer.start();
  const queueAll = consumer !== null && load !== 'tcp';
  if (queueAll) queueAllUdp(gateway, queues, '-I');
  const pids = consumer?.pids() ?? [];
  const before = snapshot(gateway, queues, pids);
  const tcp = load === 'tcp' ? await tcpGbps(lab, o.seconds) : null;
  const udp = load === 'tcp' ? null : await udpLoad(lab, o, load.destinations, pps);
  // What is still queued (and a TCP connection's last packets) gets decided before the counters are read.
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const after = snapshot(gateway, queues, pids);
  if (queueAll) queueAllUdp(gateway, queues, '-D');
  const counts = consumer === null ? null : await consumer.stop();
  const delivered = udp === null ? 0 : await udp.delivered;
  const kernel = (key: keyof KernelQueue) => after.kernel.reduce((sum, q, i) => sum + q[key] - before.kernel[i][key], 0);
  return {
    tcpGbps: tcp,
    udp: udp === null ? null : { sent: udp.sent, seconds: udp.seconds, delivered },
    consumer: counts,
    failOpen: counts === null ? null : after.hits - before.hits - counts.received - kernel('queueDropped') - kernel('userDropped'),
    enobufsPackets: counts === null ? null : kernel('ids') - counts.received,
    consumerCpu: consumer === null ? null : cpuUsed(before.consumerCpu, after.consumerCpu),
    seconds: Number(after.time - before.time) / 1e9,
    machineBusy: (after.machine.busy - before.machine.busy) / (after.machine.total - before.machine.total),
    perQueue: after.kernel.map((q, i) => q.ids - before.kernel[i].ids),
  };
}

// ---------------------------------------------------------------------------------------------
// Report

function thousands(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-';
}

/** Packets/s the consumer decided in time, over the senders' time. */
function inspectedPps(run: Run): number {
  return run.consumer !== null && run.udp !== null ? run.consumer.inspected / run.udp.seconds : NaN;
}

/** The consumer's CPU time per packet it inspected, in microseconds (UDP runs). */
function cpuPerPacket(run: Run): number {
  return run.consumerCpu !== null && run.consumer !== null && run.udp !== null ? (run.consumerCpu / run.consumer.inspected) * 1e6 : NaN;
}

function deliveredPps(run: Run): number {
  return run.udp === null ? NaN : run.udp.delivered / run.udp.seconds;
}

function enobufs(run: Run): number {
  return (run.consumer?.enobufsEvents ?? 0) + Math.max(0, run.enobufsPackets ?? 0);
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** One configuration's rounds, summarised by the round whose `key` is the median (its columns belong together). */
interface Row {
  label: string;
  runs: Run[];
  key: (run: Run) => number;
  format: (value: number) => string;
}

function medianRun(row: Row): Run {
  const m = medianOf(row.runs.map(row.key));
  return row.runs.find((r) => row.key(r) === m)!;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n');
}

function runTable(rows: Row[]): string {
  const header = ['run (median round)', 'TCP Gbit/s', 'UDP sent pps', 'delivered pps', 'inspected pps', 'fail-open pkts', 'ENOBUFS pkts', 'ENOBUFS events', 'watchdog pkts', 'avg batch', 'consumer CPU', 'CPU us/pkt', 'machine busy', 'queue split', 'every round'];
  const count = (n: number | null | undefined) => (n === null || n === undefined ? '-' : thousands(n));
  const lines = rows.map((row) => {
    const r = medianRun(row);
    const c = r.consumer;
    return [
      row.label,
      r.tcpGbps === null ? '-' : r.tcpGbps.toFixed(2),
      r.udp === null ? '-' : thousands(r.udp.sent / r.udp.seconds),
      thousands(deliveredPps(r)),
      thousands(inspectedPps(r)),
      count(r.failOpen),
      count(r.enobufsPackets),
      c === null ? '-' : c.enobufsEvents === null ? 'n/a' : thousands(c.enobufsEvents),
      count(c?.watchdogAccepted),
      c === null ? '-' : c.averageBatch.toFixed(1),
      r.consumerCpu === null ? '-' : `${((r.consumerCpu / r.seconds) * 100).toFixed(0)} %`,
      Number.isFinite(cpuPerPacket(r)) ? cpuPerPacket(r).toFixed(2) : '-',
      `${(r.machineBusy * 100).toFixed(0)} %`,
      queueSplit(r),
      row.runs.map((run) => row.format(row.key(run))).join(' '),
    ];
  });
  return table([header, ...lines]);
}

/** Each queue's share of the packets queued, in per cent ("-" with one queue or none). */
function queueSplit(run: Run): string {
  const total = run.perQueue.reduce((a, b) => a + b, 0);
  return run.perQueue.length < 2 || total === 0 ? '-' : run.perQueue.map((n) => ((n / total) * 100).toFixed(0)).join('/');
}

interface Rounds {
  noQueueTcp: Run[];
  cTcp: Run[];
  btwallTcp: Run[];
  noQueueUdp: Run[];
  cUdp: Run[];
  btwallUdp: Run[];
  btwallAtC: Run[];
  /** The UDP flood on N queues. */
  cUdpN: Run[];
  btwallUdpN: Run[];
}

/**
 * The targets as table rows, and whether all passed. A ratio compares the medians over the rounds:
 * other work on the machine only ever slows a run down, and it does so run by run, not round by round.
 */
function targetTable(r: Rounds, n: number): { text: string; pass: boolean } {
  const median = (runs: Run[], value: (run: Run) => number) => medianOf(runs.map(value));
  const list = (runs: Run[], value: (run: Run) => number, digits: number, scale = 1) => runs.map((run) => (value(run) / scale).toFixed(digits)).join(' ');
  const gbps = (run: Run) => run.tcpGbps!;
  const ppsRatio = median(r.btwallUdp, inspectedPps) / median(r.cUdp, inspectedPps);
  const tcpRatio = median(r.btwallTcp, gbps) / median(r.noQueueTcp, gbps);
  const cpuRatio = median(r.btwallUdp, cpuPerPacket) / median(r.cUdp, cpuPerPacket);
  const ppsRatioN = median(r.btwallUdpN, inspectedPps) / median(r.cUdpN, inspectedPps);
  const scalingC = median(r.cUdpN, inspectedPps) / median(r.cUdp, inspectedPps);
  const scalingBtwall = median(r.btwallUdpN, inspectedPps) / median(r.btwallUdp, inspectedPps);
  const enobufsAtC = r.btwallAtC.map(enobufs);
  const targets: [string, string, string, string, boolean | null][] = [
    [
      "btwall inspected pps / C consumer's (UDP flood)",
      `btwall ${list(r.btwallUdp, inspectedPps, 0, 1000)} k, C ${list(r.cUdp, inspectedPps, 0, 1000)} k`,
      ppsRatio.toFixed(2),
      `>= ${TARGET_PPS_RATIO}`,
      ppsRatio >= TARGET_PPS_RATIO,
    ],
    [
      `btwall inspected pps / C consumer's, ${n} queues (UDP flood)`,
      `btwall ${list(r.btwallUdpN, inspectedPps, 0, 1000)} k, C ${list(r.cUdpN, inspectedPps, 0, 1000)} k`,
      ppsRatioN.toFixed(2),
      `>= ${TARGET_PPS_RATIO_N}`,
      ppsRatioN >= TARGET_PPS_RATIO_N,
    ],
    [
      `btwall's ${n}/1 queue scaling / C consumer's`,
      `btwall ${scalingBtwall.toFixed(2)} x, C ${scalingC.toFixed(2)} x`,
      (scalingBtwall / scalingC).toFixed(2),
      `>= ${TARGET_SCALING_RATIO}`,
      scalingBtwall / scalingC >= TARGET_SCALING_RATIO,
    ],
    [
      'bulk TCP through btwall / no queue',
      `btwall ${list(r.btwallTcp, gbps, 2)}, no queue ${list(r.noQueueTcp, gbps, 2)} Gbit/s`,
      tcpRatio.toFixed(2),
      `>= ${TARGET_TCP_RATIO}`,
      tcpRatio >= TARGET_TCP_RATIO,
    ],
    [
      "ENOBUFS, btwall at the C consumer's inspected pps",
      `at ${list(r.cUdp, inspectedPps, 0, 1000)} k pps: ${enobufsAtC.join(' ')}`,
      '-',
      '0 every round',
      enobufsAtC.every((n) => n === 0),
    ],
    ["(no target) fail-open pkts, btwall at the C consumer's pps", r.btwallAtC.map((x) => thousands(x.failOpen!)).join(' '), '-', '-', null],
    [
      '(no target) CPU per inspected packet, btwall / C (UDP flood)',
      `btwall ${list(r.btwallUdp, cpuPerPacket, 2)}, C ${list(r.cUdp, cpuPerPacket, 2)} us`,
      cpuRatio.toFixed(2),
      '-',
      null,
    ],
  ];
  const rows = targets.map(([what, measured, ratio, target, pass]) => [what, measured, ratio, target, pass === null ? '' : pass ? 'PASS' : 'FAIL']);
  return { text: table([['target', 'measured (each round)', 'ratio of medians', 'target', 'result'], ...rows]), pass: targets.every((t) => t[4] !== false) };
}

// ---------------------------------------------------------------------------------------------
// Main

/** What the run needs: root, the lab's commands, btwall built, the C consumer and traffic tools (requirements.ts gets or names them). */
const NEEDS: Needs = {
  root: 'the bench creates network namespaces and firewall rules',
  commands: { ip: 'iproute2', ss: 'iproute2', nsenter: 'util-linux', iptables: 'iptables', iperf3: 'iperf3' },
  sharedTools: ['nfq-batch', 'udpflood', 'udpsink'],
  files: { [CLI]: 'build btwall first: make build', [resolve(ROOT, 'native/build/btwall-queue')]: 'build btwall first: make build' },
};

async function main(): Promise<number> {
  const o = options();
  requireOrExit('bench:inline', NEEDS);
  const one: QueueRange = { first: o.queue, last: o.queue };
  const many: QueueRange = { first: o.queue, last: o.queue + o.queues - 1 };
  const configOne = loadConfig(daemonEnvironment(one));
  const configMany = loadConfig(daemonEnvironment(many));
  const loadBefore = loadavg();
  const lab = createLab(o.tag, LAB_NETWORKS);
  let cleaning: Promise<void> | null = null;
  const cleanup = () => (cleaning ??= lab.destroy());
  const abort = (why: string, code: number) => {
    process.stderr.write(`\n${why}; cleaning up\n`);
    void cleanup().then(() => process.exit(code));
  };
  process.on('SIGINT', () => abort('interrupted', 130));
  process.on('SIGTERM', () => abort('terminated', 143));
  const limit = setTimeout(() => abort(`still running after ${RUN_LIMIT_MS / 1000} s`, 2), RUN_LIMIT_MS);
  try {
    const serverDevice = lab.server.must('ip', ['-o', 'addr', 'show', 'to', lab.serverV4]).split(/\s+/)[1];
    for (let i = 0; i < CANDIDATE_DESTINATIONS; i++) lab.server.must('ip', ['addr', 'add', `${candidate(i)}/24`, 'dev', serverDevice]);
    const udp = { destinations: await balancedDestinations(lab, o, many, configMany) };
    const c = () => cConsumer(lab, BENCH_TOOLS, configOne);
    const btwall = () => btwallConsumer(lab, one);
    const r: Rounds = { noQueueTcp: [], cTcp: [], btwallTcp: [], noQueueUdp: [], cUdp: [], btwallUdp: [], btwallAtC: [], cUdpN: [], btwallUdpN: [] };
    const step = async (runs: Run[], what: string, run: () => Promise<Run>, show: (run: Run) => string) => {
      for (let attempt = 1; ; attempt++) {
        process.stderr.write(`${what}... `);
        try {
          runs.push(await run());
          process.stderr.write(`${show(runs.at(-1)!)}\n`);
          return;
        } catch (error) {
          if (!(error instanceof Disturbed) || attempt === MAX_ATTEMPTS) throw error;
          process.stderr.write(`${error.message}; again\n`);
        }
      }
    };
    const gbps = (run: Run) => `${run.tcpGbps!.toFixed(2)} Gbit/s`;
    const pps = (run: Run) => `${thousands(run.consumer === null ? deliveredPps(run) : inspectedPps(run))} pps${run.perQueue.length > 1 ? ` (split ${queueSplit(run)})` : ''}`;
    for (let round = 1; round <= o.rounds; round++) {
      process.stderr.write(`round ${round} of ${o.rounds}\n`);
      await step(r.noQueueTcp, '  no queue, TCP', () => measure(lab, o, one, null, 'tcp'), gbps);
      await step(r.cTcp, '  C consumer, TCP', () => measure(lab, o, one, c(), 'tcp'), gbps);
      await step(r.btwallTcp, '  btwall, TCP', () => measure(lab, o, one, btwall(), 'tcp'), gbps);
      await step(r.noQueueUdp, '  no queue, UDP flood', () => measure(lab, o, one, null, udp), pps);
      await step(r.cUdp, '  C consumer, UDP flood', () => measure(lab, o, one, c(), udp), pps);
      await step(r.btwallUdp, '  btwall, UDP flood', () => measure(lab, o, one, btwall(), udp), pps);
      await step(r.cUdpN, `  C consumer x ${o.queues} queues, UDP flood`, () => measure(lab, o, many, cConsumer(lab, BENCH_TOOLS, configMany), udp), pps);
      await step(r.btwallUdpN, `  btwall, ${o.queues} queues, UDP flood`, () => measure(lab, o, many, btwallConsumer(lab, many), udp), pps);
      const rate = inspectedPps(r.cUdp.at(-1)!);
      await step(r.btwallAtC, `  btwall, UDP at ${thousands(rate)} pps`, () => measure(lab, o, one, btwall(), udp, rate), (run) => `${pps(run)}, ENOBUFS ${enobufs(run)}`);
    }
    const gbit = (v: number) => v.toFixed(2);
    const kpps = (v: number) => `${(v / 1000).toFixed(0)}k`;
    const rows: Row[] = [
      { label: 'no queue, TCP', runs: r.noQueueTcp, key: (x) => x.tcpGbps!, format: gbit },
      { label: 'C consumer, TCP', runs: r.cTcp, key: (x) => x.tcpGbps!, format: gbit },
      { label: 'btwall, TCP', runs: r.btwallTcp, key: (x) => x.tcpGbps!, format: gbit },
      { label: 'no queue, UDP flood', runs: r.noQueueUdp, key: deliveredPps, format: kpps },
      { label: 'C consumer, UDP flood', runs: r.cUdp, key: inspectedPps, format: kpps },
      { label: 'btwall, UDP flood', runs: r.btwallUdp, key: inspectedPps, format: kpps },
      { label: `C consumer, ${o.queues} queues, UDP flood`, runs: r.cUdpN, key: inspectedPps, format: kpps },
      { label: `btwall, ${o.queues} queues, UDP flood`, runs: r.btwallUdpN, key: inspectedPps, format: kpps },
      { label: "btwall, UDP at C's pps", runs: r.btwallAtC, key: (x) => enobufs(x) * 1e9 + x.failOpen!, format: (v) => thousands(v % 1e9) },
    ];
    const targets = targetTable(r, o.queues);
    const loadAfter = loadavg();
    const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
    process.stdout.write(
      [
        '',
        `Through a gateway namespace, ${o.rounds} rounds of ${o.seconds} s runs: iperf3 TCP (one stream); UDP from ${o.flows} udpflood flows of ${o.payload}-byte payloads, each to a server address of its own, spread evenly over the ${o.queues} queues.`,
        `Consumers on queue ${o.queue}, and on queues ${many.first}-${many.last} (--queue-balance): ${c().label} (one process per queue), and btwall run (one worker per queue);`,
        `both behind btwall's rules (connbytes 0:${configOne.inspectPackets}, connmarks), and for UDP both behind one more rule that queues every UDP packet, so that every packet of the load is inspected.`,
        `Machine: ${availableParallelism()} cores, shared; load average (1, 5, 15 min) ${load(loadBefore)} before the run, ${load(loadAfter)} after.`,
        '',
        runTable(rows),
        '',
        'fail-open pkts: NFQUEUE rule hits - packets the consumer read - kernel drops (accepted uninspected by FAIL_OPEN);',
        "ENOBUFS pkts: packet ids the kernel handed out - packets read (the consumer's socket was full); ENOBUFS events: the",
        "broker's count (nfq-batch sets NETLINK_NO_ENOBUFS: n/a); watchdog pkts: accepted by the broker, JavaScript being late;",
        'consumer CPU: its processes (btwall: node and broker) over the load, 100 % = one core, kernel work done in their system',
        'calls included (a verdict forwards the packet); queue split: each queue\'s share of the packets queued; every round: TCP',
        'Gbit/s, inspected (no queue: delivered) pps, or for the last row fail-open pkts.',
        '',
        targets.text,
        '',
      ].join('\n'),
    );
    return targets.pass ? 0 : 1;
  } finally {
    clearTimeout(limit);
    await cleanup();
  }
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    process.stderr.write(`\nbench:inline: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 2;
  },
);
