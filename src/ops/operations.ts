/**
 * The daemon's operations side, started before anything is touched so that a bad address or
 * socket refuses the start like a bad variable (exit 78): the Telemetry the workers and the
 * detections feed, the Prometheus endpoint (METRICS_ADDR), the control socket that `btwall
 * status` asks (CONTROL_SOCKET) and the detection webhook (WEBHOOK_URL). Nothing here is on the
 * packet path: the workers only write their shared counters.
 */
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { DryRunBanSink, type BanOutcome, type BanSink } from '../bans/sink.js';
import { ConfigError, type Config } from '../config/config.js';
import type { FleetState } from '../fleet/state.js';
import type { DetectionEvent } from '../pipeline/pipeline.js';
import { ControlServer, ControlSocketError } from './control.js';
import { statusReport } from './status.js';
import { detectionSummary, Telemetry } from './telemetry.js';
import { DetectionWebhook } from './webhook.js';
import { VERSION } from '../version.js';


export class Operations {
  readonly telemetry: Telemetry;
  /** The sink in use, which the daemon sets once the XDP program is loaded. */
  bans: BanSink;
  /** The CrowdSec link's state, which the daemon sets once the link is up (CROWDSEC_LAPI_URL). */
  fleetState: () => FleetState | null = () => null;
  private metricsServer: Server | null = null;
  private control: ControlServer | null = null;
  private readonly webhook: DetectionWebhook | null;
  /** Variables changed since the start whose new values wait for a restart. */
  private restartPending: readonly string[] = [];

  private constructor(
    /** The configuration in force (a reload replaces it: `reconfigure`). */
    private config: Config,
    log: Logger,
  ) {
    this.telemetry = new Telemetry(config.queues);
    this.bans = new DryRunBanSink(log);
    this.webhook = config.webhookUrl === '' ? null : new DetectionWebhook(config.webhookUrl, log);
  }

  /** Listens where configured; throws ConfigError naming the variable when it cannot. */
  static async open(config: Config, log: Logger): Promise<Operations> {
    const ops = new Operations(config, log);
    try {
      if (config.metricsAddr !== null) {
        // prom-client is loaded only when metrics are asked for: it adds a tenth of a second to every start.
        const [{ Metrics }, { registerDaemonMetrics, serveMetrics }] = await Promise.all([import('./registry.js'), import('./metrics.js')]);
        const metrics = new Metrics();
        registerDaemonMetrics(metrics, ops.telemetry, () => ops.bans, config.crowdsec === null ? null : () => ops.fleetState());
        ops.webhook?.register(metrics);
        ops.metricsServer = await serveMetrics(config.metricsAddr, metrics, log);
      }
      if (config.controlSocket !== '') ops.control = await ControlServer.listen(config.controlSocket, { status: () => ops.status() }, log);
    } catch (error) {
      await ops.close();
      if (error instanceof ControlSocketError) throw new ConfigError([`CONTROL_SOCKET=${JSON.stringify(config.controlSocket)}: ${error.message}`]);
      throw error;
    }
    return ops;
  }

  /** The SharedArrayBuffer a queue's worker counts into. */
  countersOf(queue: number): SharedArrayBuffer {
    return this.telemetry.queues.get(queue)!.buffer;
  }

  /** One detection, on the interface the main thread named; `outcome` what the sink made of its ban, if it had one to carry out. */
  detection(event: DetectionEvent, interfaceName: string | null, outcome: BanOutcome | null): void {
    const summary = detectionSummary(event, interfaceName);
    this.telemetry.detection(summary, event, outcome);
    this.webhook?.push(summary);
  }

  /** A reload: the configuration `btwall status` shows, and the variables that wait for a restart. */
  reconfigure(config: Config, restartPending: readonly string[]): void {
    this.config = config;
    this.restartPending = restartPending;
  }

  status() {
    return statusReport(VERSION, this.config, this.telemetry, this.bans, this.webhook?.stats() ?? null, this.fleetState(), this.restartPending);
  }

  async close(): Promise<void> {
    this.webhook?.close();
    await this.control?.close();
    if (this.metricsServer !== null) {
      const server = this.metricsServer;
      await new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      });
    }
  }
}
