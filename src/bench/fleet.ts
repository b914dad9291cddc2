/**
 * `npm run bench:fleet` (root, Debian's crowdsec installed): ban sharing through a real CrowdSec
 * Local API (API only, on a free loopback port, its own SQLite database), into real XDP ban maps
 * (loaded and pinned under /sys/fs/bpf, attached nowhere).
 *  1. Propagation: gateway A's fleet link publishes 100 bans (one every 37 ms, out of step with
 *     the poll), gateway B's feed polls the stream every second (the default); the time from A's
 *     publish to the address in B's map, median and max. Baseline in the same run: one bare LAPI
 *     round trip (POST /v1/alerts, then GET /v1/decisions/stream), the floor without the poll wait.
 *  2. Startup: 100 000 decisions in the LAPI; the time to fetch and parse the startup stream
 *     (LapiClient.stream alone: the baseline) and to apply it to empty maps (DecisionFeed.apply),
 *     median of 3 rounds.
 */
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { CidrSet } from '../config/cidr.js';
import { ownAddresses, XdpBanTable, XdpProgram } from '../bans/xdp.js';
import { DecisionFeed } from '../fleet/decisions.js';
import { CrowdsecFleet } from '../fleet/fleet.js';
import { LapiClient, type LapiAlert } from '../fleet/lapi.js';
import { banAlert } from '../fleet/publisher.js';
import { Reachability } from '../fleet/state.js';
import { freePort, Lapi } from './lapi.js';
import { requireOrExit } from './requirements.js';

const BANS = 100;
const BAN_SPACING_MS = 37;
const POLL_INTERVAL_MS = 1000;
const STARTUP_DECISIONS = 100_000;
/** Decisions per alert when filling the LAPI (one POST each). */
const FILL_DECISIONS_PER_ALERT = 10_000;
const ROUNDS = 3;
/** The ban maps' default capacity per family (BAN_CAPACITY). */
const CAPACITY = 131_072;
const MACHINE = { id: `btwall-bench-${process.pid}`, password: `bench-password-${process.pid}` };

const log = pino({ level: 'warn' });
const print = (line: string) => process.stdout.write(`${line}\n`);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const ms = (value: number) => `${value.toFixed(0)} ms`;
const sleep = (delayMs: number) => new Promise((r) => setTimeout(r, delayMs));

/** Addresses in the benchmarking range 198.18.0.0/15: nobody's, and on no never-ban list. */
function benchAddress(i: number): string {
  return `198.${18 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

function table(program: XdpProgram): XdpBanTable {
  const own = new CidrSet(ownAddresses());
  return new XdpBanTable(program.maps, () => own);
}

async function propagation(lapi: Lapi, client: LapiClient, apiKey: string, pinDir: string): Promise<void> {
  const { token } = await client.login(MACHINE.id, MACHINE.password);
  const roundTrips: number[] = [];
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    await client.pushAlerts(token, [banAlert({ address: benchAddress(120_000 + i), durationS: 3600, rule: 'bench', evidence: {}, timeMs: Date.now() })]);
    await client.stream(apiKey, false);
    roundTrips.push(performance.now() - started);
  }
  const program = XdpProgram.load(pinDir, CAPACITY, log);
  const config = { lapiUrl: `http://${lapi.listen}`, pollIntervalMs: POLL_INTERVAL_MS, origins: ['btwall'], queueCapacity: 10_000 };
  const a = new CrowdsecFleet({ ...config, apiKey: null, machine: MACHINE }, null, [], 0, log);
  const b = new CrowdsecFleet({ ...config, apiKey, machine: null }, table(program), [], 2 * CAPACITY, log);
  try {
    await sleep(POLL_INTERVAL_MS * 2); // B's first, full read is done
    const publishedAt = new Map<string, number>();
    const latencies: number[] = [];
    const publishing = (async () => {
      for (let i = 1; i <= BANS; i++) {
        const address = benchAddress(125_000 + i);
        publishedAt.set(address, performance.now());
        a.publish(address, 3600, 'handshake', { bench: 'propagation' });
        await sleep(BAN_SPACING_MS);
      }
    })();
    const deadline = performance.now() + BANS * BAN_SPACING_MS + 10_000;
    while (latencies.length < BANS && performance.now() < deadline) {
      await sleep(5);
      const now = performance.now();
      const inMap = new Set(program.maps.list().map((e) => e.address));
      for (const [address, at] of publishedAt) {
        if (!inMap.has(address)) continue;
        latencies.push(now - at);
        publishedAt.delete(address);
      }
    }
    await publishing;
    if (latencies.length < BANS) throw new Error(`only ${latencies.length} of ${BANS} bans reached gateway B's map`);
    const roundTrip = median(roundTrips);
    print(`propagation, gateway A's ban -> LAPI -> gateway B's XDP map, ${BANS} bans, poll every ${POLL_INTERVAL_MS} ms:`);
    print(`  median ${ms(median(latencies))}, max ${ms(Math.max(...latencies))}, min ${ms(Math.min(...latencies))}`);
    print(`  baseline: one bare LAPI round trip (POST /v1/alerts + GET stream), median of 20: ${roundTrip.toFixed(1)} ms`);
    print(`  median / (round trip + half a poll interval) = ${(median(latencies) / (roundTrip + POLL_INTERVAL_MS / 2)).toFixed(2)}`);
  } finally {
    a.close();
    b.close();
    program.close();
  }
}

async function startup(client: LapiClient, apiKey: string, pinDir: string): Promise<void> {
  const { token } = await client.login(MACHINE.id, MACHINE.password);
  const fillStarted = performance.now();
  for (let first = 0; first < STARTUP_DECISIONS; first += FILL_DECISIONS_PER_ALERT) {
    const alert: LapiAlert = banAlert({ address: benchAddress(first), durationS: 3600, rule: 'bench', evidence: {}, timeMs: Date.now() });
    alert.decisions = Array.from({ length: FILL_DECISIONS_PER_ALERT }, (_, i) => ({ ...alert.decisions[0], value: benchAddress(first + i) }));
    await client.pushAlerts(token, [alert]);
  }
  print(`startup stream: ${STARTUP_DECISIONS} decisions put into the LAPI in ${ms(performance.now() - fillStarted)} (its own time, not btwall's)`);
  const program = XdpProgram.load(pinDir, CAPACITY, log);
  try {
    const fetches: number[] = [];
    const applies: number[] = [];
    let count = 0;
    for (let round = 0; round < ROUNDS; round++) {
      program.maps.flush();
      const feed = new DecisionFeed(client, { apiKey, pollIntervalMs: POLL_INTERVAL_MS, origins: ['btwall'], capacity: 2 * CAPACITY }, table(program), () => [], () => false, new Reachability(), log);
      const fetchStarted = performance.now();
      const stream = await client.stream(apiKey, true);
      const applyStarted = performance.now();
      feed.apply(stream, true);
      const done = performance.now();
      fetches.push(applyStarted - fetchStarted);
      applies.push(done - applyStarted);
      count = program.maps.list().length;
      if (feed.followed < STARTUP_DECISIONS) throw new Error(`the feed follows ${feed.followed} addresses, not ${STARTUP_DECISIONS}`);
    }
    print(`startup stream of ${STARTUP_DECISIONS} decisions (median of ${ROUNDS}; ${count} bans in the map after):`);
    print(`  baseline, fetch and parse (LapiClient.stream): ${ms(median(fetches))}`);
    print(`  apply to empty XDP maps (DecisionFeed.apply):  ${ms(median(applies))} (${((median(applies) * 1000) / STARTUP_DECISIONS).toFixed(2)} us a decision)`);
    print(`  total ${ms(median(fetches) + median(applies))}; apply / fetch = ${(median(applies) / median(fetches)).toFixed(2)}`);
  } finally {
    program.close();
  }
}

async function main(): Promise<number> {
  requireOrExit('bench:fleet', { root: 'the bench loads XDP maps', commands: { crowdsec: 'crowdsec', cscli: 'crowdsec' } });
  const lapi = new Lapi(`127.0.0.1:${await freePort()}`, null);
  const pinDirs = [`/sys/fs/bpf/btwall-bench-fleet-${process.pid}-a`, `/sys/fs/bpf/btwall-bench-fleet-${process.pid}-b`];
  try {
    lapi.addMachine(MACHINE.id, MACHINE.password);
    const apiKey = lapi.addBouncer('bench');
    await lapi.start();
    const client = new LapiClient(`http://${lapi.listen}`);
    await propagation(lapi, client, apiKey, pinDirs[0]);
    await startup(client, apiKey, pinDirs[1]);
    return 0;
  } finally {
    await lapi.stop();
    lapi.destroy();
    for (const dir of pinDirs) rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
