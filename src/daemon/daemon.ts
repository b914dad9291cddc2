import { pino, type Logger } from 'pino';
import { DryRunBanSink, type BanSink } from '../bans/sink.js';
import { CidrSet, PRIVATE_CIDRS } from '../config/cidr.js';
import { ConfigError, EXIT_CONFIG, loadConfig, type Config } from '../config/config.js';
import { Engine, VERDICT_BITTORRENT, VERDICT_CLEAN } from '../engine/engine.js';
import { installRules, removeRules } from '../firewall/apply.js';
import { CONNMARK_BITTORRENT, CONNMARK_CLEAN, CONNMARK_MASK } from '../firewall/rules.js';
import { formatAddress } from '../flow/address.js';
import { IPPROTO_TCP } from '../packet/packet.js';
import { LINKTYPE_RAW } from '../packet/linktype.js';
import { NfQueue, VERDICT_ACCEPT, VERDICT_DROP, type PacketBatch } from '../queue/nfqueue.js';
import { DetectionLog } from './detection-log.js';
import { InterfaceNames } from './interfaces.js';

const STATS_INTERVAL_MS = 60_000;

/** One queue and the engine that decides its packets (a connection always hashes to one queue). */
interface QueueWorker {
  number: number;
  engine: Engine;
  queue: NfQueue | null;
  /** The batch and packet being processed, for the detection record. */
  batch: PacketBatch | null;
  index: number;
}

/**
 * `btwall run`: validates the environment (exit 78 before anything is touched), binds the
 * queues, installs the rules, then decides packets until SIGTERM or SIGINT, when it unbinds,
 * removes the rules and exits 0. SIGHUP reopens the detection log.
 */
export async function runDaemon(env: NodeJS.ProcessEnv): Promise<number> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`btwall: ${error.message}\n`);
    return EXIT_CONFIG;
  }
  const log = pino({ level: config.logLevel, base: { service: 'btwall' } });
  const daemon = new Daemon(config, log);
  try {
    await daemon.start();
  } catch (error) {
    log.fatal({ err: error }, 'cannot start');
    await daemon.stop();
    return 1;
  }
  return daemon.finished;
}

class Daemon {
  /** Resolves with the exit code once the daemon has stopped. */
  finished: Promise<number>;
  private finish!: (code: number) => void;
  private readonly workers: QueueWorker[] = [];
  private readonly allow: CidrSet;
  private readonly local: CidrSet;
  private readonly interfaces = new InterfaceNames();
  private readonly bans: BanSink;
  private detectionLog: DetectionLog | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private rulesInstalled = false;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.finished = new Promise((resolve) => (this.finish = resolve));
    this.allow = new CidrSet(config.allowCidrs);
    // Without LOCAL_CIDRS, the private ranges are where a gateway's own users are.
    this.local = new CidrSet(config.localCidrs.length > 0 ? config.localCidrs : PRIVATE_CIDRS);
    this.bans = new DryRunBanSink(log);
  }

  async start(): Promise<void> {
    const c = this.config;
    if (c.detectionLog !== '') this.detectionLog = new DetectionLog(c.detectionLog);
    for (let number = c.queues.first; number <= c.queues.last; number++) {
      const engine = new Engine({
        flowCapacity: c.flowCapacity,
        idleTimeoutMs: c.flowIdleTimeoutS * 1000,
        peerCapacity: c.peerCacheSize,
        peerTtlMs: c.peerCacheTtlS * 1000,
        isAllowlisted: (family, buf, off) => this.allow.contains(family, buf, off),
      });
      const worker: QueueWorker = { number, engine, queue: null, batch: null, index: 0 };
      engine.onVerdict = (flow) => {
        if (engine.flows.verdict[flow] === VERDICT_BITTORRENT) this.detected(worker, flow);
      };
      this.workers.push(worker);
      worker.queue = await NfQueue.open(
        {
          queue: number,
          copyRange: 0xffff,
          maxLen: c.queueMaxLen,
          receiveBuffer: 32 << 20,
          verdictTimeoutMs: c.verdictTimeoutMs,
          failOpen: true,
          gso: true,
          connmarkMask: CONNMARK_MASK,
        },
        (batch) => this.decide(worker, batch),
        (reason) => this.brokerLost(worker, reason),
      );
    }
    // Queues first, rules second: the first packet queued already has a listener.
    installRules(c);
    this.rulesInstalled = true;
    process.on('SIGTERM', () => void this.stop(0));
    process.on('SIGINT', () => void this.stop(0));
    process.on('SIGHUP', () => this.reopenLog());
    this.statsTimer = setInterval(() => this.logStats(), STATS_INTERVAL_MS).unref();
    this.log.info(
      {
        queues: `${c.queues.first}-${c.queues.last}`,
        chains: c.chains,
        monitorOnly: c.monitorOnly,
        inspectPackets: c.inspectPackets,
        detectionLog: c.detectionLog || null,
        bansEnforced: this.bans.enforced,
      },
      'btwall running',
    );
  }

  /** The batch handler: one engine pass per packet, verdicts and connection marks written back. */
  private decide(worker: QueueWorker, batch: PacketBatch): void {
    const engine = worker.engine;
    const monitorOnly = this.config.monitorOnly;
    engine.clock.nowMs = Date.now();
    worker.batch = batch;
    for (let i = 0; i < batch.count; i++) {
      worker.index = i;
      const verdict = engine.process(batch.data, batch.offset(i), batch.length(i), LINKTYPE_RAW);
      if (verdict === VERDICT_BITTORRENT) {
        // Monitor only: no mark either, so the rest of the flow is still seen (and learned from).
        if (!monitorOnly) batch.setVerdict(i, VERDICT_DROP, CONNMARK_BITTORRENT);
      } else if (verdict === VERDICT_CLEAN) {
        batch.setVerdict(i, VERDICT_ACCEPT, CONNMARK_CLEAN);
      }
    }
    worker.batch = null;
  }

  /** A flow was just found to be BitTorrent, while its deciding packet is still in hand. */
  private detected(worker: QueueWorker, flow: number): void {
    const { engine, batch, index } = worker;
    const flows = engine.flows;
    const pkt = engine.packet;
    const family = flows.family(flow);
    const [initiator, responder] = [0, 1].map((dir) => {
      const address = new Uint8Array(16);
      flows.address(flow, dir, address);
      return {
        text: formatAddress(family, address),
        port: flows.port(flow, dir),
        local: this.local.contains(family, address, 0),
        allowlisted: this.allow.contains(family, address, 0),
      };
    });
    const rule = engine.ruleNames[flows.rule[flow]];
    const action = this.config.monitorOnly ? 'monitor only (accepted)' : 'dropped';
    const record = {
      timeMs: Date.now(),
      interface: batch === null ? '-' : this.interfaces.name(batch.ifindex(index)),
      protocol: flows.l4(flow) === IPPROTO_TCP ? ('TCP' as const) : ('UDP' as const),
      source: initiator.text,
      sourcePort: initiator.port,
      destination: responder.text,
      destinationPort: responder.port,
      rule,
      action,
      payload: pkt.buf.slice(pkt.payloadOff, pkt.payloadOff + pkt.payloadLen),
    };
    const { payload: _payload, ...fields } = record;
    this.log.warn({ ...fields, payloadBytes: record.payload.length }, 'BitTorrent detected');
    this.detectionLog?.write(record);
    if (this.config.monitorOnly || !engine.ruleBannable(flows.rule[flow])) return;
    // The remote peer is banned; a local user only when the operator asked for it; never the allowlist.
    for (const endpoint of [initiator, responder]) {
      if ((endpoint.local && !this.config.banLocal) || endpoint.allowlisted) continue;
      this.bans.ban(endpoint.text, this.config.banDurationS, rule);
    }
  }

  private reopenLog(): void {
    this.detectionLog?.reopen();
    this.log.info('detection log reopened');
  }

  private logStats(): void {
    for (const worker of this.workers) {
      const flows = worker.engine.flows;
      this.log.info(
        { queue: worker.number, ...worker.queue?.stats(), flows: flows.size, flowsEvicted: flows.evicted, peersCached: worker.engine.peers.inserts },
        'stats',
      );
    }
  }

  private brokerLost(worker: QueueWorker, reason: string): void {
    this.log.error({ queue: worker.number, reason }, 'queue broker exited; traffic bypasses the queue');
    void this.stop(1);
  }

  /** Unbinds every queue (pending packets are accepted), removes the rules, closes the logs. */
  async stop(code = 0): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    await Promise.all(this.workers.map((w) => w.queue?.close()));
    if (this.rulesInstalled) removeRules();
    this.logStats();
    this.detectionLog?.close();
    this.bans.close();
    this.log.info({ code }, 'btwall stopped');
    this.finish(code);
  }
}
