/**
 * The CrowdSec Local API over HTTP, the parts btwall uses: a machine's login and alerts (publishing
 * bans), a bouncer's decisions stream (enforcing them). Node's own fetch; every request has a
 * deadline, so a LAPI that hangs counts as down instead of stalling the callers' loops.
 */

import { readFileSync } from 'node:fs';

/**
 * The LAPI refuses a machine's login unless its User-Agent is exactly `name/version` (it records
 * the version as the machine's).
 */
const USER_AGENT = `btwall/${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version}`;

/** A request that gets no answer within this fails (the LAPI counts as unreachable). */
const REQUEST_TIMEOUT_MS = 5000;
/** A startup stream can hold every decision of a large blocklist: it gets longer. */
const STARTUP_TIMEOUT_MS = 60_000;

/** A decision as the LAPI lists it (models.Decision). `duration` is what is left of it, a Go duration. */
export interface LapiDecision {
  id: number;
  origin: string;
  type: string;
  scope: string;
  value: string;
  duration: string;
  scenario: string;
}

/** /v1/decisions/stream: decisions added and deleted since the bouncer's last call (all of them with startup=true). */
export interface DecisionStream {
  new: LapiDecision[] | null;
  deleted: LapiDecision[] | null;
}

/** What a machine pushes: one alert per ban, its decision and its evidence (models.Alert). */
export interface LapiAlert {
  scenario: string;
  scenario_hash: string;
  scenario_version: string;
  message: string;
  events_count: number;
  start_at: string;
  stop_at: string;
  capacity: number;
  leakspeed: string;
  simulated: boolean;
  events: { timestamp: string; meta: { key: string; value: string }[] }[];
  meta: { key: string; value: string }[];
  source: { scope: string; value: string; ip: string };
  decisions: { origin: string; type: string; scope: string; value: string; duration: string; scenario: string }[];
}

/** The LAPI answered, but not with success; `status` 0: it did not answer at all. */
export class LapiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class LapiClient {
  constructor(readonly baseUrl: string) {}

  /** POST /v1/watchers/login: a JWT and when it expires (ms since the epoch). */
  async login(machineId: string, password: string): Promise<{ token: string; expiresMs: number }> {
    const body = (await this.request('POST', '/v1/watchers/login', {}, { machine_id: machineId, password })) as { token?: string; expire?: string };
    const expiresMs = Date.parse(body.expire ?? '');
    if (typeof body.token !== 'string' || !Number.isFinite(expiresMs)) throw new LapiError('login answered without a token and its expiry', 200);
    return { token: body.token, expiresMs };
  }

  /** POST /v1/alerts as a logged-in machine; the ids of the alerts created. */
  async pushAlerts(token: string, alerts: readonly LapiAlert[]): Promise<string[]> {
    return (await this.request('POST', '/v1/alerts', { Authorization: `Bearer ${token}` }, alerts)) as string[];
  }

  /** GET /v1/decisions/stream as a bouncer; `startup` asks for every decision in force instead of the changes. */
  async stream(apiKey: string, startup: boolean): Promise<DecisionStream> {
    const query = startup ? '?startup=true' : '';
    return (await this.request('GET', `/v1/decisions/stream${query}`, { 'X-Api-Key': apiKey }, undefined, startup ? STARTUP_TIMEOUT_MS : REQUEST_TIMEOUT_MS)) as DecisionStream;
  }

  private async request(method: string, path: string, headers: Record<string, string>, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), 'User-Agent': USER_AGENT },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error instanceof Error ? error.message : String(error));
      throw new LapiError(`${method} ${path}: no answer (${cause})`, 0);
    }
    const text = await response.text();
    if (!response.ok) throw new LapiError(`${method} ${path}: HTTP ${response.status} ${text.slice(0, 200).trim()}`, response.status);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new LapiError(`${method} ${path}: answer is not JSON`, response.status);
    }
  }
}

const GO_UNITS_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration ("3h59m58.5s", "-14ms") in milliseconds; NaN when it is not one. */
export function parseGoDuration(text: string): number {
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(text);
  if (match === null) return text === '0' ? 0 : NaN;
  let ms = 0;
  for (const [, value, unit] of text.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) ms += Number(value) * GO_UNITS_MS[unit];
  return match[1] === '-' ? -ms : ms;
}
