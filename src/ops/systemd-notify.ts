/**
 * sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET (a path, or an
 * abstract socket written with a leading '@'), as systemd's Type=notify expects: READY=1 once
 * the rules and XDP are in place, STATUS= lines, WATCHDOG=1 while the packet path is healthy,
 * STOPPING=1. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';

const nativeDir = fileURLToPath(new URL('../../native/build/', import.meta.url));
const native = createRequire(import.meta.url)(`${nativeDir}btwall.node`) as { sendUnixDatagram(address: Uint8Array, message: Uint8Array): void };

/** sockaddr_un's sun_path: 108 bytes on Linux. */
const SUN_PATH_BYTES = 108;

/** The socket's address bytes for sun_path, or the reason NOTIFY_SOCKET cannot be used. */
export function notifyAddress(socket: string): Buffer | string {
  if (!socket.startsWith('/') && !socket.startsWith('@')) return `NOTIFY_SOCKET=${JSON.stringify(socket)}: neither a path nor an abstract socket (@name); vsock is not supported`;
  const bytes = Buffer.from(socket, 'utf8');
  if (socket.startsWith('@')) bytes[0] = 0;
  if (bytes.length > SUN_PATH_BYTES) return `NOTIFY_SOCKET=${JSON.stringify(socket)}: longer than the ${SUN_PATH_BYTES} bytes of a unix socket address`;
  return bytes;
}

/**
 * How often to check the packet path and send WATCHDOG=1 if it is healthy: a sixth of
 * WATCHDOG_USEC (sd_watchdog_enabled() advises at most half), so that one unhealthy check costs
 * no restart and only a problem lasting most of WatchdogSec does; null when systemd asks for no
 * watchdog, or asks another process (WATCHDOG_PID).
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid = process.pid): number | null {
  const usec = Number(env.WATCHDOG_USEC ?? '');
  if (!Number.isInteger(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return null;
  return Math.max(1, Math.floor(usec / 6000));
}

export class SystemdNotifier {
  private failed = false;
  private lastStatus = '';

  private constructor(
    private readonly address: Buffer | null,
    private readonly log: Logger,
  ) {}

  /** From $NOTIFY_SOCKET; an unusable one is said once in the log and then ignored. */
  static fromEnv(env: NodeJS.ProcessEnv, log: Logger): SystemdNotifier {
    const socket = env.NOTIFY_SOCKET ?? '';
    if (socket === '') return new SystemdNotifier(null, log);
    const address = notifyAddress(socket);
    if (typeof address === 'string') {
      log.warn(address);
      return new SystemdNotifier(null, log);
    }
    return new SystemdNotifier(address, log);
  }

  get enabled(): boolean {
    return this.address !== null;
  }

  /** READY=1 with the status line that says what the daemon now does. */
  ready(status: string): void {
    this.lastStatus = status;
    this.send(`READY=1\nSTATUS=${status}`);
  }

  /** A STATUS= line, sent only when it changed. */
  status(status: string): void {
    if (status === this.lastStatus) return;
    this.lastStatus = status;
    this.send(`STATUS=${status}`);
  }

  watchdog(): void {
    this.send('WATCHDOG=1');
  }

  stopping(status: string): void {
    this.lastStatus = status;
    this.send(`STOPPING=1\nSTATUS=${status}`);
  }

  private send(message: string): void {
    if (this.address === null) return;
    try {
      native.sendUnixDatagram(this.address, Buffer.from(message, 'utf8'));
      if (this.failed) this.log.info('systemd notify socket reachable again');
      this.failed = false;
    } catch (error) {
      // systemd restarted, or the socket went: the next message tries again; said once.
      if (!this.failed) this.log.error({ err: error }, 'cannot notify systemd');
      this.failed = true;
    }
  }
}
