/**
 * The metrics registry every subsystem adds to: the daemon's counters, the webhook, and later
 * modules (a CrowdSec fleet module) each register their own metrics here, by name without the
 * `btwall_` namespace. A subsystem keeps its counts as plain numbers in its own state and gives a
 * `sample` function, which the registry calls at each scrape (nothing runs between scrapes); or
 * it takes the prom-client metric and calls inc/set/observe itself.
 *
 * prom-client makes the exposition. Histograms the workers fill in shared memory (buckets already
 * counted) have no prom-client type that takes counts, so `sampledHistogram` registers a small
 * metric of ours that renders them the way prom-client's own histogram does.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { HistogramSample } from './queue-counters.js';

export const NAMESPACE = 'btwall_';

export type Labels<L extends string> = Partial<Record<L, string>>;

export interface MetricSpec<L extends string> {
  /** Without the namespace: `detections_total`. A counter's name ends in `_total` (Prometheus' convention). */
  name: string;
  help: string;
  labelNames?: readonly L[];
}

/** Reports one value per label set; called by a sampler, at every scrape, once for each label set it has. */
export type Report<L extends string> = (value: number, labels?: Labels<L>) => void;
export type Sampler<L extends string> = (report: Report<L>) => void;

export interface MetricsRegistry {
  /** A counter; with `sample`, its values are the subsystem's own counts read at each scrape. */
  counter<L extends string = never>(spec: MetricSpec<L>, sample?: Sampler<L>): Counter<L>;
  gauge<L extends string = never>(spec: MetricSpec<L>, sample?: Sampler<L>): Gauge<L>;
  /** A histogram the subsystem observes into itself (buckets: upper bounds). */
  histogram<L extends string = never>(spec: MetricSpec<L>, buckets: readonly number[]): Histogram<L>;
  /** A histogram whose buckets are counted elsewhere (shared memory), read at each scrape. */
  sampledHistogram<L extends string = never>(spec: MetricSpec<L>, sample: (report: (histogram: HistogramSample, labels?: Labels<L>) => void) => void): void;
  /** Runs at the start of each scrape, before any sampler: to read shared state once for several metrics. */
  onScrape(read: () => void): void;
}

const NAME = /^[a-z][a-z0-9_]*$/;
const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class MetricsError extends Error {}

/** The registry behind METRICS_ADDR, with the process' own metrics (CPU, memory, descriptors, event loop). */
export class Metrics implements MetricsRegistry {
  readonly registry = new Registry();
  private readonly scrapeHooks: (() => void)[] = [];

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Gauges that prom-client names like counters: `promtool check metrics` rejects them, rightly.
    for (const name of MISNAMED_DEFAULT_METRICS) this.registry.removeSingleMetric(name);
  }

  counter<L extends string = never>(spec: MetricSpec<L>, sample?: Sampler<L>): Counter<L> {
    if (!spec.name.endsWith('_total')) throw new MetricsError(`counter ${spec.name}: a counter's name ends in _total`);
    return new Counter<L>({
      ...this.config(spec),
      collect: sample && function (this: Counter<L>) {
        this.reset();
        sample((value, labels = {}) => this.inc(labels, value));
      },
    });
  }

  gauge<L extends string = never>(spec: MetricSpec<L>, sample?: Sampler<L>): Gauge<L> {
    return new Gauge<L>({
      ...this.config(spec),
      collect: sample && function (this: Gauge<L>) {
        this.reset();
        sample((value, labels = {}) => this.set(labels, value));
      },
    });
  }

  histogram<L extends string = never>(spec: MetricSpec<L>, buckets: readonly number[]): Histogram<L> {
    return new Histogram<L>({ ...this.config(spec), buckets: [...buckets] });
  }

  sampledHistogram<L extends string = never>(spec: MetricSpec<L>, sample: (report: (histogram: HistogramSample, labels?: Labels<L>) => void) => void): void {
    const { name, help } = this.config(spec);
    const metric = {
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      reset() {},
      get() {
        const values: { metricName: string; labels: Labels<string> | Record<string, string | number>; value: number }[] = [];
        sample((histogram, labels = {}) => {
          histogram.bounds.forEach((bound, i) => values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bound }, value: histogram.cumulative[i] }));
          const count = histogram.cumulative[histogram.bounds.length];
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
          values.push({ metricName: `${name}_sum`, labels, value: histogram.sum });
          values.push({ metricName: `${name}_count`, labels, value: count });
        });
        return { name, help, type: 'histogram', aggregator: 'sum', values };
      },
    };
    // The registry reads a metric through name, get() and reset() only (prom-client's Registry).
    this.registry.registerMetric(metric as unknown as Metric);
  }

  onScrape(read: () => void): void {
    this.scrapeHooks.push(read);
  }

  /** The exposition, in Prometheus' text format. */
  text(): Promise<string> {
    for (const read of this.scrapeHooks) read();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private config<L extends string>(spec: MetricSpec<L>): { name: string; help: string; labelNames: L[]; registers: Registry[] } {
    if (!NAME.test(spec.name)) throw new MetricsError(`metric ${JSON.stringify(spec.name)}: names are lower-case letters, digits and _`);
    const name = NAMESPACE + spec.name;
    if (this.registry.getSingleMetric(name) !== undefined) throw new MetricsError(`metric ${name} is registered already`);
    return { name, help: spec.help, labelNames: [...(spec.labelNames ?? [])], registers: [this.registry] };
  }
}
