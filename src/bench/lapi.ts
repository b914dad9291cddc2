/**
 * A real CrowdSec Local API (Debian's crowdsec, API only: `crowdsec -no-cs`) with its own config
 * directory and SQLite database, started and stopped by a test or benchmark; credentials made with
 * cscli. In a network namespace (the fleet lab) or on this host's loopback (a free port).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A network namespace to run in, by name (/run/netns/NAME). */
interface NamedNamespace {
  name: string;
}

/** Whether Debian's crowdsec (the LAPI and cscli) is installed: `make test` installs it. */
export function haveCrowdsec(): boolean {
  return spawnSync('crowdsec', ['-version']).status === 0 && spawnSync('cscli', ['version']).status === 0;
}

/** A TCP port free on loopback now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface LapiDecisionRow {
  id: number;
  origin: string;
  scenario: string;
  value: string;
  type: string;
}

export class Lapi {
  readonly dir: string;
  private process: ChildProcess | null = null;
  output = '';

  /** `listen` is host:port; `ns` the namespace it runs in (null: this host). */
  constructor(
    readonly listen: string,
    private readonly ns: NamedNamespace | null,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'btwall-lapi-'));
    mkdirSync(join(this.dir, 'data'));
    writeFileSync(this.config, this.yaml());
  }

  get config(): string {
    return join(this.dir, 'config.yaml');
  }

  /** The URL cscli (in the LAPI's namespace) uses. */
  get localUrl(): string {
    return `http://127.0.0.1:${this.listen.split(':')[1]}`;
  }

  get running(): boolean {
    return this.process !== null && this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Starts the LAPI and waits until it answers. */
  async start(): Promise<void> {
    const args = ['-c', this.config, '-no-cs'];
    const from = this.output.length;
    const child = this.ns === null ? spawn('crowdsec', args, { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('nsenter', [`--net=/run/netns/${this.ns.name}`, 'crowdsec', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.process = child;
    child.stdout!.setEncoding('utf8').on('data', (t: string) => (this.output += t));
    child.stderr!.setEncoding('utf8').on('data', (t: string) => (this.output += t));
    const deadline = Date.now() + 20_000;
    while (!this.output.slice(from).includes('CrowdSec Local API listening')) {
      if (!this.running || Date.now() > deadline) throw new Error(`the CrowdSec LAPI did not start: ${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops it (SIGTERM) and waits for the exit. */
  async stop(): Promise<void> {
    const child = this.process;
    if (child === null || !this.running) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  /** cscli against this LAPI's config; throws with its output when it fails. */
  cscli(args: string[]): string {
    const command = ['cscli', '-c', this.config, ...args];
    const run = this.ns === null ? spawnSync(command[0], command.slice(1), { encoding: 'utf8' }) : spawnSync('nsenter', [`--net=/run/netns/${this.ns.name}`, ...command], { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`cscli ${args.join(' ')} failed (${run.status}): ${run.stderr}${run.stdout}`);
    return run.stdout;
  }

  /** A machine (cscli machines add): the first one also becomes cscli's own login. */
  addMachine(name: string, password: string): void {
    this.cscli(['machines', 'add', name, '--password', password, '-f', join(this.dir, `${name}.yaml`), '--force']);
  }

  /** cscli's own login, for `cscli decisions` (it logs in as a machine). */
  useMachineForCscli(name: string, password: string): void {
    writeFileSync(join(this.dir, 'local_api_credentials.yaml'), `url: ${this.localUrl}\nlogin: ${name}\npassword: ${password}\n`);
  }

  /** A bouncer (cscli bouncers add); its API key. */
  addBouncer(name: string): string {
    return this.cscli(['bouncers', 'add', name, '-o', 'raw']).trim();
  }

  /** `cscli decisions list -o json`, flattened to its decisions (it prints null when there are none). */
  decisions(): LapiDecisionRow[] {
    const alerts = JSON.parse(this.cscli(['decisions', 'list', '-o', 'json'])) as { decisions: LapiDecisionRow[] }[] | null;
    return (alerts ?? []).flatMap((a) => a.decisions);
  }

  destroy(): void {
    this.process?.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** An API-only LAPI: its own database and credentials, no Central API, no metrics port, logs on stdout. */
  private yaml(): string {
    const d = this.dir;
    return `common:
  daemonize: false
  log_media: stdout
  log_level: info
  log_dir: ${d}
  working_dir: .
config_paths:
  config_dir: /etc/crowdsec/
  data_dir: ${d}/data/
  simulation_path: /etc/crowdsec/simulation.yaml
  hub_dir: /var/lib/crowdsec/hub/
  index_path: /var/lib/crowdsec/hub/.index.json
  notification_dir: /etc/crowdsec/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: human
  color: false
db_config:
  log_level: info
  type: sqlite
  db_path: ${d}/data/crowdsec.db
  use_wal: true
api:
  client:
    insecure_skip_verify: false
    credentials_path: ${d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: ${this.listen}
    profiles_path: /etc/crowdsec/profiles.yaml
    trusted_ips:
      - 127.0.0.1
      - ::1
prometheus:
  enabled: false
  level: full
  listen_addr: 127.0.0.1
  listen_port: 6060
`;
  }
}
