import { Worker } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import { ConnectionCutter } from '../actions/cutter.js';
import { DryRunBanSink, type BanOutcome, type BanSink } from '../bans/sink.js';
import { XdpBanSink } from '../bans/xdp.js';
import { CrowdsecFleet, FleetBanSink, type FleetLink } from '../fleet/fleet.js';
import type { FleetState } from '../fleet/state.js';
import { decisionNeverBan, resetsBannedTcp } from '../policy/settings.js';
import { ConfigError, readConfig, refuseConfig, withConfig, type Config, type ConfigSource } from '../config/config.js';
import type { EnvFile } from '../config/env-file.js';
import { machineProblems } from '../config/machine.js';
import { FirewallError, installRules, removeRules, replaceChainRules } from '../firewall/apply.js';
import { CHAIN_SETTINGS } from '../firewall/rules.js';
import { monotonicMs } from '../flow/clock.js';
import { Operations } from '../ops/operations.js';
import { SystemdNotifier, watchdogIntervalMs } from '../ops/systemd-notify.js';
import { configuredRules } from '../rules/check.js';
import type { OperatorRule } from '../rules/file.js';
import { DetectionLog, detectionRecord } from './detection-log.js';
import { UnsafeLogError } from './log-file.js';
import { readHostFacts } from './host-facts.js';
import { InterfaceNames } from './interfaces.js';
import { planReload, variablesOf, type ReloadPlan } from './reload.js';
import { nfnetlinkQueueSequences, readNfnetlinkQueue, TrafficStats } from './traffic-stats.js';
import { PacketPathHealth } from './health.js';
import { RESPAWN_DELAYS_MS } from '../pipeline/queue-source.js';
import { allocateTables, tablesBytes, type SharedTables } from '../pipeline/shared-tables.js';
import type { WorkerCommand, WorkerMessage, WorkerSetup } from './queue-worker.js';

/** Workers get this long to unbind their queues at stop (systemd's TimeoutStopSec is 20 s). */
const STOP_TIMEOUT_MS = 10_000;

/**
 * `btwall run`: validates the environment (exit 78 before anything is touched), starts one worker
 * thread per queue (each binds its queue through its own broker), installs the rules, then
 * serves until SIGTERM or SIGINT, when the queues unbind, the rules go and the process exits 0.
 * SIGHUP reloads the configuration (BTWALL_ENV_FILE and RULES_FILE read again: see `reload`) and
 * reopens the detection log. This thread is the control plane: rules, logs, bans. Under
 * systemd (Type=notify) it says READY=1 once rules and XDP are in place, and pets the watchdog
 * only while every queue is being answered.
 */
export function runDaemon(env: NodeJS.ProcessEnv): Promise<number> {
  return Promise.resolve(withConfig(env, (config, source) => serve(config, source, env), machineProblems));
}

/** `env`: the environment the daemon started with, which every reload reads BTWALL_ENV_FILE over again. */
async function serve(config: Config, source: ConfigSource, env: NodeJS.ProcessEnv): Promise<number> {
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
    detectionLog?.close();
    if (!(error instanceof ConfigError)) throw error;
    return refuseConfig(error);
  }
  let ops: Operations;
  try {
    ops = await Operations.open(config, log);
  } catch (error) {
    detectionLog?.close();
    if (!(error instanceof ConfigError)) throw error;
    return refuseConfig(error);
  }
  const daemon = new Daemon(config, env, source, log, detectionLog, ops, rules, SystemdNotifier.fromEnv(process.env, log), watchdogIntervalMs(process.env));
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

/** BTWALL_ENV_FILE for the log: where, and whether it was there. */
function envFileFields(envFile: EnvFile | null): { path: string; found: boolean } | null {
  return envFile === null ? null : { path: envFile.path, found: envFile.found };
}

/** A worker that ran this long had recovered: its death starts the restart backoff again. */
const WORKER_STABLE_MS = 10_000;

/** One queue's worker thread as the control plane sees it. */
interface QueueWorker {
  worker: Worker;
  exited: Promise<unknown>;
  startedMs: number;
  /** Deaths in a row of workers that did not last WORKER_STABLE_MS. */
  failures: number;
  /** What the queue's dead workers had counted: a restarted worker counts from zero. */
  carried: Record<string, number>;
  last: Record<string, number>;
}

/** What a published ban carries as its alert's meta: the detection's endpoints and the policy's words. */
function banEvidence(fields: Omit<ReturnType<typeof detectionRecord>, 'payload'>): Record<string, string> {
  const { interface: device, protocol, source, sourcePort, destination, destinationPort, evidence, reason } = fields;
  return { interface: device, protocol, source, sourcePort: String(sourcePort), destination, destinationPort: String(destinationPort), evidence, reason };
}

class Daemon {
  /** Resolves with the exit code once the daemon has stopped. */
  readonly finished: Promise<number>;
  private finish!: (code: number) => void;
  private readonly workers = new Map<number, QueueWorker>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private bans: BanSink;
  /** The XDP program's sink, whose resets a reload of ACTION or CUT_ESTABLISHED turns on or off; null with XDP_MODE=off. */
  private xdp: XdpBanSink | null = null;
  /** The CrowdSec link (CROWDSEC_*), or null. */
  private fleet: FleetLink | null = null;
  private readonly interfaces = new InterfaceNames();
  private statsTimer: NodeJS.Timeout | null = null;
  private watchdogTimer: NodeJS.Timeout | null = null;
  private readonly health = new PacketPathHealth();
  /** What the last health check found wrong, or null: logged when it changes. */
  private unhealthy: string | null = null;
  private cleanupTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly traffic: TrafficStats;
  private readonly cutter: ConnectionCutter;
  private rulesInstalled = false;
  /** What the queues' own tables take together, and the tables they share. */
  private tableBytes = 0;
  /** Proven and listed peers and BAN_RATE's counts, one copy for every worker (restarted ones too). */
  private readonly tables: SharedTables;
  private workerRestarts = 0;

  constructor(
    /** The configuration in force: the start's, with the live settings of every reload since (reload.ts). */
    private config: Config,
    /** The environment the daemon started with: a reload lays BTWALL_ENV_FILE over it again. */
    private readonly startEnv: NodeJS.ProcessEnv,
    /** What the configuration in force was read from, at the start or the last reload. */
    private source: ConfigSource,
    private readonly log: Logger,
    private detectionLog: DetectionLog | null,
    /** Metrics, control socket, webhook: listening already. */
    private readonly ops: Operations,
    /** RULES_FILE's rules in force, which a restarted worker gets too. */
    private rules: OperatorRule[] | null,
    private readonly systemd: SystemdNotifier,
    /** How often systemd wants WATCHDOG=1 (half its WatchdogSec), or null without a watchdog. */
    private readonly watchdogMs: number | null,
  ) {
    this.finished = new Promise((resolve) => (this.finish = resolve));
    this.bans = new DryRunBanSink(log);
    this.traffic = new TrafficStats(config.queues, log);
    this.tables = allocateTables(config, true);
    this.tableBytes = tablesBytes(config);
    this.cutter = new ConnectionCutter(log);
  }

  async start(): Promise<void> {
    const c = this.config;
    // From the first moment: a signal during start stops cleanly instead of killing us halfway.
    process.on('SIGTERM', () => void this.stop(0));
    process.on('SIGINT', () => void this.stop(0));
    process.on('SIGHUP', () => this.reload());
    // Whatever goes wrong later, traffic must not stay behind rules nobody serves.
    process.on('uncaughtException', (error) => {
      this.log.fatal({ err: error }, 'uncaught exception; removing the rules');
      if (this.rulesInstalled) removeRules();
      process.exit(1);
    });
    this.systemd.status('loading the XDP ban program');
    this.bans = this.openBans();
    this.ops.bans = this.bans;
    this.ops.fleetState = () => this.fleetState();
    this.systemd.status(`binding ${queuesNamed(c)}`);
    const ready: Promise<number>[] = [];
    for (let queue = c.queues.first; queue <= c.queues.last; queue++) ready.push(this.startWorker(queue));
    for (const bytes of await Promise.all(ready)) this.tableBytes += bytes;
    if (this.stopping) return;
    // Queues first, rules second: the first packet queued already has a listener.
    this.systemd.status('installing the firewall rules');
    installRules(this.config);
    this.rulesInstalled = true;
    this.startTimers();
    this.log.info(
      {
        queues: queueRange(c),
        queuesAuto: c.queues.auto,
        chains: c.chains,
        action: c.action,
        cutEstablished: c.action === 'drop' && c.cutEstablished,
        inspectPackets: c.inspectPackets,
        operatorRules: this.rules?.length ?? null,
        detectionLog: c.detectionLog || null,
        envFile: envFileFields(this.source.envFile),
        bansEnforced: this.bans.enforced,
        bans: this.bans.describe(),
        tableMemoryMB: Math.round(this.tableBytes / 2 ** 20),
        flowCapacity: c.flowCapacity,
        peerCacheSize: c.peerCacheSize,
        banCapacity: c.banCapacity,
        tableSizing: c.tableSizing,
      },
      'btwall running',
    );
    this.systemd.ready(this.runningStatus());
    if (this.watchdogMs !== null) this.watchdogTimer = setInterval(() => this.petWatchdog(), this.watchdogMs).unref();
  }

  /** What `systemctl status` shows while all is well. */
  private runningStatus(): string {
    const c = this.config;
    const enforcing = c.action === 'monitor' ? 'monitor only, nothing enforced' : c.action === 'throttle' ? `throttling to ${c.rateBitsPerS / 1000} kbit/s per local host` : this.bans.enforced ? 'dropping, bans in XDP' : 'dropping, bans not enforced';
    return `inspecting ${queuesNamed(c)}; ${enforcing}`;
  }

  /**
   * WATCHDOG=1 only while every queue is answered: a wedged worker, batches left to the broker's
   * watchdog, a stuck broker the kernel queues to in vain, or a queue whose restarts keep failing
   * withhold it, and systemd restarts the daemon.
   */
  private petWatchdog(): void {
    const now = monotonicMs();
    const kernel = nfnetlinkQueueSequences(readNfnetlinkQueue());
    const readings = [...this.ops.telemetry.queues].map(([queue, counters]) => {
      const { packets, verdicts, watchdogAccepted } = counters.read().sampled;
      return { queue, sampledAtMs: counters.sampledAtMs(), packets, verdicts, watchdogAccepted, kernelQueued: kernel.get(queue) ?? null };
    });
    const problem = this.health.check(now, readings);
    if (problem !== this.unhealthy) {
      if (problem === null) this.log.warn('packet path healthy again; watchdog resumed');
      else this.log.error({ problem }, 'packet path unhealthy; withholding the systemd watchdog');
      this.unhealthy = problem;
    }
    if (problem !== null) {
      this.systemd.status(`unhealthy: ${problem}`);
      return;
    }
    this.systemd.status(this.runningStatus());
    this.systemd.watchdog();
  }

  /**
   * Starts the queue's worker (again, after one died): resolves with the memory of its own tables
   * once it has bound the queue, rejects when it cannot.
   */
  private startWorker(queue: number, before?: QueueWorker): Promise<number> {
    const setup: WorkerSetup = { config: this.config, queue, host: readHostFacts(), tables: this.tables, counters: this.ops.countersOf(queue), rules: this.rules };
    const worker = new Worker(new URL('./queue-worker.js', import.meta.url), { workerData: setup });
    const entry: QueueWorker = {
      worker,
      exited: new Promise((resolve) => worker.once('exit', resolve)),
      startedMs: Date.now(),
      failures: before?.failures ?? 0,
      carried: before?.carried ?? {},
      last: {},
    };
    this.workers.set(queue, entry);
    worker.on('exit', (code) => {
      if (!this.stopping) this.workerDied(queue, entry, `exited with code ${code}`);
    });
    return new Promise((resolve, reject) => {
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'ready') resolve(message.memoryBytes);
        else if (message.type === 'failed') reject(new Error(`queue ${queue}: ${message.reason}`));
        else this.onWorkerMessage(message, queue, entry);
      });
      worker.on('error', (error) => {
        this.log.error({ queue, err: error }, 'queue worker failed');
        reject(error);
      });
    });
  }

  /**
   * A worker died (an exception it did not catch, process.exit in it): its broker died with it
   * (PR_SET_PDEATHSIG), so the queue is unbound and fails open (--queue-bypass) while a new
   * worker, with backoff, binds it again. The other queues and the shared tables carry on.
   */
  private workerDied(queue: number, dead: QueueWorker, reason: string): void {
    if (this.workers.get(queue) !== dead) return;
    if (Date.now() - dead.startedMs >= WORKER_STABLE_MS) dead.failures = 0;
    dead.failures++;
    for (const [key, value] of Object.entries(dead.last)) if (key !== 'queue') dead.carried[key] = (dead.carried[key] ?? 0) + value;
    dead.last = {};
    const delayMs = RESPAWN_DELAYS_MS[Math.min(dead.failures, RESPAWN_DELAYS_MS.length) - 1];
    this.traffic.brokerDown(queue);
    this.health.down(queue, monotonicMs());
    this.log.error({ queue, reason, attempt: dead.failures, restartInMs: delayMs, workerRestarts: this.workerRestarts }, 'queue worker died; its queue fails open until it is restarted');
    const downSinceMs = Date.now();
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      if (this.stopping) return;
      this.startWorker(queue, dead).then(
        () => {
          this.workerRestarts++;
          this.traffic.brokerUp(queue);
          this.health.up(queue);
          this.log.warn({ queue, attempt: dead.failures, downMs: Date.now() - downSinceMs, workerRestarts: this.workerRestarts }, 'queue worker restarted');
        },
        // A worker that cannot bind exits too: its exit schedules the next attempt.
        (error: Error) => this.log.error({ queue, err: error }, 'restarted queue worker could not bind its queue'),
      );
    }, delayMs);
    this.restartTimers.add(timer);
  }

  /**
   * The fleet's state (LAPI reachable, last sync, decisions received, published, queued, rejected),
   * for metrics and `btwall status`; null without CROWDSEC_LAPI_URL.
   */
  fleetState(): FleetState | null {
    return this.fleet?.state() ?? null;
  }

  /** The local sink, composed with the CrowdSec link when CROWDSEC_LAPI_URL is set. */
  private openBans(): BanSink {
    const c = this.config;
    const local = this.openLocalBans();
    if (c.crowdsec === null) return local;
    // Both ban maps (IPv4, IPv6) hold BAN_CAPACITY each: as many addresses are followed from the LAPI.
    this.fleet = new CrowdsecFleet(c.crowdsec, local.table, decisionNeverBan(c, readHostFacts()), 2 * c.banCapacity, this.log);
    return new FleetBanSink(local, this.fleet);
  }

  /**
   * The XDP fast path on the INTERFACE devices (checked beforehand: they exist and support
   * XDP_MODE); failing to load or attach stops the start. Only XDP_MODE=off runs without, said once.
   */
  private openLocalBans(): BanSink {
    const c = this.config;
    if (c.xdpMode === 'off') {
      const sink = new DryRunBanSink(this.log, 'XDP_MODE=off');
      this.log.warn({ reason: 'XDP_MODE=off' }, `bans are ${sink.describe()}`);
      return sink;
    }
    this.xdp = XdpBanSink.open({ interfaces: c.interfaces, mode: c.xdpMode, pinDir: c.bpfPinDir, capacity: c.banCapacity, escalation: c.banEscalation, resetTcp: resetsBannedTcp(c) }, this.log);
    this.xdp.onSegments = (segments) => this.cutter.resetSegments(segments);
    return this.xdp;
  }

  /**
   * CLEANUP_INTERVAL: expired bans out of the maps, the ban counters into the log, and the host's
   * current addresses and resolvers to the policy, which never bans them.
   */
  private sweepBans(): void {
    const host = readHostFacts();
    this.tell({ type: 'host', host });
    this.fleet?.setNeverBan(decisionNeverBan(this.config, host));
    const swept = this.bans.sweep();
    this.ops.telemetry.expired(swept);
    this.log.info({ swept, ...this.bans.stats() }, 'ban sweep');
  }

  private onWorkerMessage(message: WorkerMessage, queue: number, from: QueueWorker): void {
    switch (message.type) {
      case 'detection': {
        const { event, ifindex } = message;
        const name = this.interfaces.name(ifindex);
        const { payload, ...fields } = detectionRecord(event, name);
        this.log.warn({ ...fields, queue, flowPackets: event.flowPackets, payloadBytes: payload.length }, 'BitTorrent detected');
        // A full disk or a vanished directory costs the record (counted), not the daemon.
        const known = ifindex === 0 ? null : name;
        this.detectionLog?.write(event, known);
        const { ban, enforce, cut } = event.decision;
        if (cut) {
          const family = event.initiator.includes(':') ? 6 : 4;
          const initiator = { address: event.initiator, port: event.initiatorPort };
          const responder = { address: event.responder, port: event.responderPort };
          void this.cutter.cutConnection({ family, initiator, responder, producer: event.producer, seq: event.tcpSeq, seqEnd: event.tcpSeqEnd, ack: event.tcpAck });
        }
        let outcome: BanOutcome | null = null;
        if (ban !== null && enforce) {
          outcome = this.bans.ban(ban.address, ban.durationS, event.rule, banEvidence(fields));
          if (resetsBannedTcp(this.config)) void this.cutter.cutAddress(ban.address);
        }
        this.ops.detection(event, known, outcome);
        return;
      }
      case 'cut-segment':
        this.cutter.resetSegments([message.segment]);
        return;
      case 'stats':
      case 'stopped': {
        from.last = message.stats;
        const stats = { ...message.stats };
        for (const [key, value] of Object.entries(from.carried)) stats[key] = (stats[key] ?? 0) + value;
        // One line once every queue has answered, with the kernel's counts of what passed uninspected.
        const line = this.traffic.add(queue, stats);
        if (line === null) return;
        this.ops.telemetry.statsLine(line);
        this.log.info({ ...line, workerRestarts: this.workerRestarts, ...this.bans.stats(), ...this.cutter.stats() }, 'stats');
        return;
      }
      case 'broker-down':
        this.traffic.brokerDown(queue);
        this.health.down(queue, monotonicMs());
        this.log.error({ queue, reason: message.reason, attempt: message.attempt, respawnInMs: message.delayMs }, 'queue broker died; its queue fails open until it is respawned');
        return;
      case 'broker-up':
        this.traffic.brokerUp(queue);
        this.health.up(queue);
        this.log.warn({ queue, attempt: message.attempt, downMs: message.downMs }, 'queue broker respawned');
        return;
      case 'broker-exit':
        this.log.fatal({ queue, reason: message.reason }, 'queue broker keeps dying; stopping');
        void this.stop(1);
        return;
    }
  }

  private tell(command: WorkerCommand): void {
    for (const { worker } of this.workers.values()) worker.postMessage(command);
  }

  /** STATS_INTERVAL's stats lines and CLEANUP_INTERVAL's ban sweeps, from now on at the configured intervals. */
  private startTimers(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    this.statsTimer = setInterval(() => this.tell({ type: 'stats' }), this.config.statsIntervalS * 1000).unref();
    this.cleanupTimer = setInterval(() => this.sweepBans(), this.config.cleanupIntervalS * 1000).unref();
  }

  /**
   * SIGHUP: BTWALL_ENV_FILE and RULES_FILE read and checked again, as at start, and applied: the
   * live settings (reload.ts) to the workers, the BTWALL chain, the logs and the timers; flows,
   * peers and bans stay. A setting only a restart applies keeps its running value, and the log
   * names its variables. Anything refused (a bad line or value, a broken rules file, a detection
   * log that cannot be opened, rules the firewall refuses) refuses the whole reload: nothing
   * changes. The detection log is reopened either way (logrotate's SIGHUP).
   */
  private reload(): void {
    if (this.stopping) return;
    const refuse = (problems: string[]) => {
      this.log.error({ problems }, 'reload refused; the configuration in force stays');
      this.reopenLog();
    };
    let plan: ReloadPlan;
    let source: ConfigSource;
    let rules: OperatorRule[] | null;
    let detectionLog: DetectionLog | null;
    try {
      let next: Config;
      ({ config: next, source } = readConfig(this.startEnv));
      plan = planReload(this.config, next);
      rules = configuredRules(plan.config);
      detectionLog = this.reopenedDetectionLog(plan.config);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return refuse(error.problems);
    }
    const resetsTcp = resetsBannedTcp(plan.config);
    if (this.xdp !== null && resetsTcp !== resetsBannedTcp(this.config)) {
      try {
        this.xdp.setResetTcp(resetsTcp);
      } catch (error) {
        if (detectionLog !== this.detectionLog) detectionLog?.close();
        return refuse([`ACTION=${plan.config.action}, CUT_ESTABLISHED=${plan.config.cutEstablished}: cannot ${resetsTcp ? 'start' : 'stop'} the XDP program's resets: ${(error as Error).message}`]);
      }
    }
    if (this.rulesInstalled && plan.live.some((field) => CHAIN_SETTINGS.includes(field))) {
      try {
        replaceChainRules(plan.config, this.config);
      } catch (error) {
        if (!(error instanceof FirewallError)) throw error;
        if (detectionLog !== this.detectionLog) detectionLog?.close();
        this.xdp?.setResetTcp(resetsBannedTcp(this.config));
        return refuse([error.message]);
      }
    }
    const changed = variablesOf(plan.live, this.source.env, source.env);
    const restartNeeded = variablesOf(plan.restart, this.source.env, source.env);
    this.config = plan.config;
    this.source = source;
    this.rules = rules;
    this.log.level = plan.config.logLevel;
    if (plan.live.length > 0) this.tell({ type: 'config', config: plan.config });
    if (rules !== null) this.tell({ type: 'rules', rules });
    if (plan.live.includes('statsIntervalS') || plan.live.includes('cleanupIntervalS')) this.startTimers();
    this.fleet?.setNeverBan(decisionNeverBan(plan.config, readHostFacts()));
    this.ops.reconfigure(plan.config, restartNeeded);
    if (detectionLog !== this.detectionLog) {
      this.closeDetectionLog();
      this.detectionLog = detectionLog;
    } else this.reopenLog();
    this.systemd.status(this.runningStatus());
    this.log.info({ envFile: envFileFields(source.envFile), changed, restartNeeded, operatorRules: rules?.length ?? null }, 'configuration reloaded');
    if (restartNeeded.length > 0) this.log.warn({ variables: restartNeeded }, 'changed variables wait for a restart; their running values stay');
  }

  /**
   * The detection log for `config`: the running one when its settings are the same, else one
   * opened at the new settings (null: none), refused like DETECTION_LOG at start.
   */
  private reopenedDetectionLog(config: Config): DetectionLog | null {
    const running = this.config;
    if (config.detectionLog === running.detectionLog && config.detectionLogFormat === running.detectionLogFormat && config.detectionLogPayloadBytes === running.detectionLogPayloadBytes) return this.detectionLog;
    try {
      return openDetectionLog(config, this.log);
    } catch (error) {
      if (!(error instanceof UnsafeLogError)) throw error;
      throw new ConfigError([`DETECTION_LOG=${JSON.stringify(config.detectionLog)}: ${error.message}`]);
    }
  }

  private reopenLog(): void {
    try {
      this.detectionLog?.reopen();
      this.log.info('detection log reopened');
    } catch (error) {
      this.log.error({ err: error, path: this.config.detectionLog }, 'cannot reopen the detection log; writing to the old file');
    }
  }

  /** Closes the detection log, saying what it lost. */
  private closeDetectionLog(): void {
    if (this.detectionLog === null) return;
    const lost = this.detectionLog.lost;
    if (lost > 0) this.log.error({ path: this.detectionLog.options.path, lostRecords: lost }, 'detection log closed with records never written');
    this.detectionLog.close();
  }

  /** Unbinds every queue (pending packets are accepted), removes the rules, closes the logs. */
  async stop(code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.systemd.stopping(this.rulesInstalled ? 'stopping: unbinding the queues and removing the rules' : 'stopping');
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    for (const timer of this.restartTimers) clearTimeout(timer);
    this.tell({ type: 'stop' });
    const workers = [...this.workers.values()];
    // A wedged worker must not keep the rules in place: past the deadline it is terminated.
    const deadline = setTimeout(() => workers.forEach(({ worker }) => void worker.terminate()), STOP_TIMEOUT_MS);
    await Promise.all(workers.map(({ exited }) => exited));
    clearTimeout(deadline);
    if (this.rulesInstalled) removeRules();
    this.closeDetectionLog();
    await this.ops.close();
    this.bans.close();
    this.log.info({ code }, 'btwall stopped');
    this.finish(code);
  }
}

function queueRange(c: Config): string {
  return c.queues.first === c.queues.last ? String(c.queues.first) : `${c.queues.first}-${c.queues.last}`;
}

/** "queue 0", "queues 0-3": for status lines. */
function queuesNamed(c: Config): string {
  return `queue${c.queues.first === c.queues.last ? '' : 's'} ${queueRange(c)}`;
}
