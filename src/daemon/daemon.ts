import { Worker } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import { ConnectionCutter } from '../actions/cutter.js';
import { DryRunBanSink, type BanSink } from '../bans/sink.js';
import { XdpBanSink } from '../bans/xdp.js';
import { ConfigError, refuseConfig, withConfig, type Config } from '../config/config.js';
import { machineProblems } from '../config/machine.js';
import { installRules, removeRules } from '../firewall/apply.js';
import { configuredRules, loadCheckedRules } from '../rules/check.js';
import { RulesFileError, type OperatorRule } from '../rules/file.js';
import { DetectionLog, detectionRecord } from './detection-log.js';
import { UnsafeLogError } from './log-file.js';
import { readHostFacts } from './host-facts.js';
import { InterfaceNames } from './interfaces.js';
import { TrafficStats } from './traffic-stats.js';
import type { WorkerCommand, WorkerMessage, WorkerSetup } from './queue-worker.js';

/** Workers get this long to unbind their queues at stop (systemd's TimeoutStopSec is 20 s). */
const STOP_TIMEOUT_MS = 10_000;

/**
 * `btwall run`: validates the environment (exit 78 before anything is touched), starts one worker
 * thread per queue (each binds its queue through its own broker), installs the rules, then
 * serves until SIGTERM or SIGINT, when the queues unbind, the rules go and the process exits 0.
 * SIGHUP reopens the detection log. This thread is the control plane: rules, logs, bans.
 */
export function runDaemon(env: NodeJS.ProcessEnv): Promise<number> {
  return Promise.resolve(withConfig(env, serve, machineProblems));
}

async function serve(config: Config): Promise<number> {
  const log = pino({ level: config.logLevel, base: { service: 'btwall' } });
  let detectionLog: DetectionLog | null;
  try {
    detectionLog = openDetectionLog(config, log);
  } catch (error) {
    if (!(error instanceof UnsafeLogError)) throw error;
    return refuseConfig(new ConfigError([`DETECTION_LOG=${JSON.stringify(config.detectionLog)}: ${error.message}`]));
  }
  let rules: OperatorRule[] | null;
  try {
    rules = configuredRules(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return refuseConfig(error);
  }
  const daemon = new Daemon(config, log, detectionLog, rules);
  try {
    await daemon.start();
  } catch (error) {
    log.fatal({ err: error }, 'cannot start');
    await daemon.stop(1);
  }
  return daemon.finished;
}

/**
 * The detection log, checked like the variables before anything is touched (UnsafeLogError), its
 * losses to a full or failing disk reported in the daemon's log.
 */
function openDetectionLog(config: Config, log: Logger): DetectionLog | null {
  const path = config.detectionLog;
  if (path === '') return null;
  return new DetectionLog(
    { path, format: config.detectionLogFormat, payloadBytes: config.detectionLogPayloadBytes },
    {
      failing: (error) => log.error({ err: error, path }, 'cannot write the detection log; counting the records lost until it works again'),
      recovered: (losses) =>
        log.warn({ path, lostRecords: losses.count, since: new Date(losses.firstMs).toISOString(), error: losses.error }, 'detection log written again; records were lost'),
    },
  );
}

class Daemon {
  /** Resolves with the exit code once the daemon has stopped. */
  readonly finished: Promise<number>;
  private finish!: (code: number) => void;
  private readonly workers: Worker[] = [];
  private readonly workersExited: Promise<unknown>[] = [];
  private bans: BanSink;
  private readonly interfaces = new InterfaceNames();
  private statsTimer: NodeJS.Timeout | null = null;
  private cleanupTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly traffic: TrafficStats;
  private readonly cutter: ConnectionCutter;
  private rulesInstalled = false;
  /** What the queues' tables take together. */
  private tableBytes = 0;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly detectionLog: DetectionLog | null,
    private readonly rules: OperatorRule[] | null,
  ) {
    this.finished = new Promise((resolve) => (this.finish = resolve));
    this.bans = new DryRunBanSink(log);
    this.traffic = new TrafficStats(config.queues, log);
    this.cutter = new ConnectionCutter(log);
  }

  async start(): Promise<void> {
    const c = this.config;
    // From the first moment: a signal during start stops cleanly instead of killing us halfway.
    process.on('SIGTERM', () => void this.stop(0));
    process.on('SIGINT', () => void this.stop(0));
    process.on('SIGHUP', () => {
      this.reopenLog();
      this.reloadRules();
    });
    // Whatever goes wrong later, traffic must not stay behind rules nobody serves.
    process.on('uncaughtException', (error) => {
      this.log.fatal({ err: error }, 'uncaught exception; removing the rules');
      if (this.rulesInstalled) removeRules();
      process.exit(1);
    });
    this.bans = this.openBans();
    const ready: Promise<void>[] = [];
    const host = readHostFacts();
    for (let queue = c.queues.first; queue <= c.queues.last; queue++) {
      const setup: WorkerSetup = { config: c, queue, host, rules: this.rules };
      const worker = new Worker(new URL('./queue-worker.js', import.meta.url), { workerData: setup });
      this.workers.push(worker);
      this.workersExited.push(new Promise((resolve) => worker.once('exit', resolve)));
      worker.on('exit', (code) => {
        if (this.stopping) return;
        this.log.error({ queue, code }, 'queue worker exited; stopping');
        void this.stop(1);
      });
      ready.push(
        new Promise((resolve, reject) => {
          worker.on('message', (message: WorkerMessage) => {
            if (message.type === 'ready') {
              this.tableBytes += message.memoryBytes;
              resolve();
            }
            else if (message.type === 'failed') reject(new Error(`queue ${queue}: ${message.reason}`));
            else this.onWorkerMessage(message, queue);
          });
          worker.on('error', (error) => {
            this.log.error({ queue, err: error }, 'queue worker failed');
            reject(error);
          });
        }),
      );
    }
    await Promise.all(ready);
    if (this.stopping) return;
    // Queues first, rules second: the first packet queued already has a listener.
    installRules(c);
    this.rulesInstalled = true;
    this.statsTimer = setInterval(() => this.tell({ type: 'stats' }), c.statsIntervalS * 1000).unref();
    this.cleanupTimer = setInterval(() => this.sweepBans(), c.cleanupIntervalS * 1000).unref();
    this.log.info(
      {
        queues: `${c.queues.first}-${c.queues.last}`,
        chains: c.chains,
        action: c.action,
        cutEstablished: c.action === 'drop' && c.cutEstablished,
        inspectPackets: c.inspectPackets,
        operatorRules: this.rules?.length ?? null,
        detectionLog: c.detectionLog || null,
        bansEnforced: this.bans.enforced,
        bans: this.bans.describe(),
        tableMemoryMB: Math.round(this.tableBytes / 2 ** 20),
      },
      'btwall running',
    );
  }

  /**
   * The XDP fast path on the INTERFACE devices (checked beforehand: they exist and support
   * XDP_MODE); failing to load or attach stops the start. Only XDP_MODE=off runs without, said once.
   */
  private openBans(): BanSink {
    const c = this.config;
    if (c.xdpMode === 'off') {
      const sink = new DryRunBanSink(this.log, 'XDP_MODE=off');
      this.log.warn({ reason: 'XDP_MODE=off' }, `bans are ${sink.describe()}`);
      return sink;
    }
    return XdpBanSink.open({ interfaces: c.interfaces, mode: c.xdpMode, pinDir: c.bpfPinDir, capacity: c.banCapacity, escalation: c.banEscalation }, this.log);
  }

  /**
   * CLEANUP_INTERVAL: expired bans out of the maps, the ban counters into the log, and the host's
   * current addresses and resolvers to the policy, which never bans them.
   */
  private sweepBans(): void {
    this.tell({ type: 'host', host: readHostFacts() });
    const swept = this.bans.sweep();
    this.log.info({ swept, ...this.bans.stats() }, 'ban sweep');
  }

  private onWorkerMessage(message: WorkerMessage, queue: number): void {
    switch (message.type) {
      case 'detection': {
        const { event, ifindex } = message;
        const name = this.interfaces.name(ifindex);
        const { payload, ...fields } = detectionRecord(event, name);
        this.log.warn({ ...fields, payloadBytes: payload.length }, 'BitTorrent detected');
        // A full disk or a vanished directory costs the record (counted), not the daemon.
        this.detectionLog?.write(event, ifindex === 0 ? null : name);
        const { ban, enforce, cut } = event.decision;
        if (cut) {
          const family = event.initiator.includes(':') ? 6 : 4;
          const initiator = { address: event.initiator, port: event.initiatorPort };
          const responder = { address: event.responder, port: event.responderPort };
          void this.cutter.cutConnection({ family, initiator, responder, producer: event.producer, seq: event.tcpSeq, seqEnd: event.tcpSeqEnd, ack: event.tcpAck });
        }
        if (ban !== null && enforce) {
          this.bans.ban(ban.address, ban.durationS, event.rule);
          if (this.config.cutEstablished) void this.cutter.cutAddress(ban.address);
        }
        return;
      }
      case 'stats':
      case 'stopped': {
        // One line once every queue has answered, with the kernel's counts of what passed uninspected.
        const line = this.traffic.add(queue, message.stats);
        if (line !== null) this.log.info({ ...line, ...this.bans.stats(), ...this.cutter.stats() }, 'stats');
        return;
      }
      case 'broker-down':
        this.traffic.brokerDown(queue);
        this.log.error({ queue, reason: message.reason, attempt: message.attempt, respawnInMs: message.delayMs }, 'queue broker died; its queue fails open until it is respawned');
        return;
      case 'broker-up':
        this.traffic.brokerUp(queue);
        this.log.warn({ queue, attempt: message.attempt, downMs: message.downMs }, 'queue broker respawned');
        return;
      case 'broker-exit':
        this.log.fatal({ queue, reason: message.reason }, 'queue broker keeps dying; stopping');
        void this.stop(1);
        return;
    }
  }

  private tell(command: WorkerCommand): void {
    for (const worker of this.workers) worker.postMessage(command);
  }

  private reopenLog(): void {
    try {
      this.detectionLog?.reopen();
      this.log.info('detection log reopened');
    } catch (error) {
      this.log.error({ err: error, path: this.config.detectionLog }, 'cannot reopen the detection log; writing to the old file');
    }
  }

  /** SIGHUP: RULES_FILE read and checked again; a broken file is refused and the rules in force stay. */
  private reloadRules(): void {
    const path = this.config.rulesFile;
    if (path === '') return;
    try {
      const rules = loadCheckedRules(path);
      this.tell({ type: 'rules', rules });
      this.log.info({ path, rules: rules.length }, 'operator rules reloaded');
    } catch (error) {
      if (!(error instanceof RulesFileError)) throw error;
      this.log.error({ path, problems: error.problems }, 'operator rules file refused; the rules in force stay');
    }
  }

  /** Unbinds every queue (pending packets are accepted), removes the rules, closes the logs. */
  async stop(code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    this.tell({ type: 'stop' });
    // A wedged worker must not keep the rules in place: past the deadline it is terminated.
    const deadline = setTimeout(() => this.workers.forEach((worker) => void worker.terminate()), STOP_TIMEOUT_MS);
    await Promise.all(this.workersExited);
    clearTimeout(deadline);
    if (this.rulesInstalled) removeRules();
    if (this.detectionLog !== null) {
      const lost = this.detectionLog.lost;
      if (lost > 0) this.log.error({ path: this.config.detectionLog, lostRecords: lost }, 'detection log closed with records never written');
      this.detectionLog.close();
    }
    this.bans.close();
    this.log.info({ code }, 'btwall stopped');
    this.finish(code);
  }
}
