/** The detection webhook against a real HTTP server on loopback. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Metrics } from '../src/ops/registry.js';
import { detectionSummary, type DetectionSummary } from '../src/ops/telemetry.js';
import { DetectionWebhook, WEBHOOK_DEFAULTS, type WebhookOptions } from '../src/ops/webhook.js';
import { detectionEvent } from './helpers/detections.js';

const silent = pino({ level: 'silent' });

interface Received {
  atMs: number;
  headers: IncomingMessage['headers'];
  url: string;
  body: { source: string; host: string; detections: DetectionSummary[] };
}

/** A receiver answering each request through `answer` (a status, or null: never answer). */
async function receiver(answer: (index: number) => number | null): Promise<{ server: Server; url: string; received: Received[]; held: ServerResponse[] }> {
  const received: Received[] = [];
  const held: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ atMs: Date.now(), headers: req.headers, url: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      const status = answer(received.length - 1);
      if (status === null) held.push(res);
      else res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received, held };
}

const detection = (port: number) => detectionSummary({ ...detectionEvent('handshake', 'exact'), initiatorPort: port }, 'eth1');
const fast: WebhookOptions = { ...WEBHOOK_DEFAULTS, flushDelayMs: 50, retryMinMs: 50, retryMaxMs: 400, timeoutMs: 2000 };

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('detection webhook', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => cleanup.splice(0).forEach((f) => f()));
  const start = (url: string, options: WebhookOptions) => {
    const hook = new DetectionWebhook(url, silent, options, 'gw1');
    cleanup.push(() => hook.close());
    return hook;
  };
  const serve = async (answer: (index: number) => number | null) => {
    const r = await receiver(answer);
    cleanup.push(() => {
      r.held.forEach((res) => res.destroy());
      r.server.closeAllConnections();
      r.server.close();
    });
    return r;
  };

  it('posts detections in batches as JSON, with the fields an operator acts on', async () => {
    const r = await serve(() => 200);
    const hook = start(r.url, { ...fast, batchSize: 3 });
    for (let i = 0; i < 5; i++) hook.push(detection(50000 + i));
    await until(() => hook.stats().sent === 5);
    // Three went at once (a whole batch), the other two after the flush delay.
    expect(r.received.map((p) => p.body.detections.length)).toEqual([3, 2]);
    expect(r.received[0].headers['content-type']).toBe('application/json');
    expect(r.received[0].body.source).toBe('btwall');
    expect(r.received[0].body.host).toBe('gw1');
    // Each detection is its detection-log record without the payload (test/detection-log.test.ts checks the fields).
    const first = r.received[0].body.detections[0];
    expect(first).toEqual(JSON.parse(JSON.stringify(detection(50000))));
    expect(Object.keys(first)).toEqual(expect.arrayContaining(['time', 'local', 'remote', 'rule', 'strength', 'action', 'ban', 'interface', 'reason']));
    expect(first).not.toHaveProperty('payload');
    expect(r.received.flatMap((p) => p.body.detections.map((d) => d.local.port))).toEqual([50000, 50001, 50002, 50003, 50004]);
  });

  it('retries a failed batch with growing waits until the receiver takes it; a 4xx is not retried', async () => {
    const r = await serve((i) => [503, 429, 500][i] ?? 200);
    const hook = start(r.url, fast);
    hook.push(detection(1));
    await until(() => hook.stats().sent === 1);
    expect(r.received.length).toBe(4);
    expect(hook.stats()).toMatchObject({ sent: 1, failedRequests: 3, queued: 0 });
    const waits = r.received.slice(1).map((p, i) => p.atMs - r.received[i].atMs);
    // 50, 100, 200 ms (each at least its backoff, give or take a timer's millisecond)
    expect(waits[0]).toBeGreaterThanOrEqual(49);
    expect(waits[1]).toBeGreaterThanOrEqual(99);
    expect(waits[2]).toBeGreaterThanOrEqual(199);

    const refusing = await serve(() => 400);
    const rejected = start(refusing.url, fast);
    rejected.push(detection(2));
    await until(() => rejected.stats().rejected === 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(refusing.received.length).toBe(1);
  });

  it('never waits for the receiver: a hung one fills the bounded queue, the oldest are dropped and counted', async () => {
    const r = await serve(() => null);
    const hook = start(r.url, { ...fast, capacity: 10, batchSize: 4, timeoutMs: 60_000 });
    hook.push(detection(0));
    await until(() => r.received.length === 1);
    // One batch of 1 in flight, unanswered; 20 more pushed, each counted before push returns.
    for (let i = 1; i <= 20; i++) hook.push(detection(i));
    expect(hook.stats()).toMatchObject({ queued: 10, dropped: 11, sent: 0 });
    const metrics = new Metrics();
    hook.register(metrics);
    const text = await metrics.text();
    expect(text).toContain('btwall_webhook_detections_total{outcome="dropped"} 11\n');
    expect(text).toContain('btwall_webhook_queued_detections 10\n');
    // The receiver answers: the next batch is the oldest of those kept (1 to 11 were dropped).
    r.held.splice(0).forEach((res) => res.writeHead(200).end());
    await until(() => r.received.length === 2);
    expect(hook.stats().sent).toBe(1);
    expect(r.received[1].body.detections.map((d) => d.local.port)).toEqual([12, 13, 14, 15]);
    expect(hook.close()).toBe(9);
  });

  it('sends URL credentials as Basic authorization, never in the URL', async () => {
    const r = await serve(() => 200);
    const hook = start(r.url.replace('http://', 'http://ops%40example:p%3Ass@'), fast);
    hook.push(detection(1));
    await until(() => hook.stats().sent === 1);
    expect(r.received[0].headers.authorization).toBe(`Basic ${Buffer.from('ops@example:p:ss').toString('base64')}`);
    expect(r.received[0].url).toBe('/hook');
  });

  it('retries when nothing listens, and stops at close', async () => {
    const r = await serve(() => 200);
    const url = r.url;
    r.server.close();
    const hook = start(url, fast);
    hook.push(detection(1));
    await until(() => hook.stats().failedRequests >= 2);
    expect(hook.close()).toBe(1);
    const failed = hook.stats().failedRequests;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(hook.stats().failedRequests).toBe(failed);
  });
});
