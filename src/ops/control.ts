/**
 * The daemon's local control socket (CONTROL_SOCKET): a unix stream socket, mode 0600 in a
 * directory only root may write (as the detection log's: sshd's StrictModes), so only root can
 * ask. A request is one line, a command name; the answer one line of JSON, then the daemon
 * closes the connection. `btwall status` is its client.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { checkDirectories, UnsafeLogError } from '../daemon/log-file.js';

/** What keeps the daemon from serving the socket; it refuses to start (exit 78, naming CONTROL_SOCKET). */
export class ControlSocketError extends Error {}

/** A command's answer (any JSON value), or a promise of one. */
export type ControlCommands = Record<string, () => unknown>;

/** Longest request line read; anything longer is refused. */
const MAX_REQUEST_BYTES = 256;
/** A client that sends no whole line within this is disconnected. */
const REQUEST_TIMEOUT_MS = 5000;

export interface ControlAnswer {
  ok: boolean;
  /** The command's answer, or the error's words. */
  result?: unknown;
  error?: string;
}

export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /**
   * Listens at `path` (its directory created 0700 if missing): refuses a directory others may
   * write, anything at the path that is not a socket, and a socket another daemon still answers
   * on; a socket left by a daemon that died is replaced.
   */
  static async listen(path: string, commands: ControlCommands, log: Logger): Promise<ControlServer> {
    const dir = dirname(path);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      checkDirectories(dir);
    } catch (error) {
      throw new ControlSocketError(error instanceof UnsafeLogError ? error.message : `cannot create the directory ${dir}: ${(error as Error).message}`);
    }
    const existing = lstatSync(path, { throwIfNoEntry: false });
    if (existing !== undefined) {
      if (!existing.isSocket()) throw new ControlSocketError(`${path} exists and is not a socket; it is not replaced`);
      if (await answers(path)) throw new ControlSocketError(`another btwall daemon answers on ${path}; give this one its own CONTROL_SOCKET`);
      unlinkSync(path);
    }
    const server = createServer((socket) => serve(socket, commands, log));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new ControlSocketError(`cannot listen on ${path}: ${error.message}`)));
      server.listen(path, () => resolve());
    });
    // Created with the umask's mode: others cannot connect without write permission on it (umask 022), and now nobody but root.
    chmodSync(path, 0o600);
    return new ControlServer(server, path);
  }

  /** Stops listening and removes the socket. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      // A socket path removed before close: the next daemon finds nothing stale.
      try {
        unlinkSync(this.path);
      } catch {
        // already gone
      }
    });
  }
}

function serve(socket: Socket, commands: ControlCommands, log: Logger): void {
  let request = '';
  socket.setEncoding('utf8');
  socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy());
  socket.on('error', () => {}); // a client that went away
  const reply = (answer: ControlAnswer) => socket.end(`${JSON.stringify(answer)}\n`);
  socket.on('data', (text: string) => {
    request += text;
    const end = request.indexOf('\n');
    if (end < 0) {
      if (Buffer.byteLength(request) > MAX_REQUEST_BYTES) reply({ ok: false, error: 'request too long' });
      return;
    }
    socket.removeAllListeners('data');
    const name = request.slice(0, end).trim();
    const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (command === undefined) return reply({ ok: false, error: `unknown command ${JSON.stringify(name)}; known: ${Object.keys(commands).join(', ')}` });
    Promise.resolve()
      .then(command)
      .then(
        (result) => reply({ ok: true, result }),
        (error: Error) => {
          log.error({ err: error, command: name }, 'control command failed');
          reply({ ok: false, error: error.message });
        },
      );
  });
}

/** Whether a daemon answers on the socket at `path` (a connection is accepted). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Sends one command to the daemon at `path` and resolves with its answer; rejects with why it could not ask. */
export function askDaemon(path: string, command: string, timeoutMs = 10_000): Promise<ControlAnswer> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    socket.once('connect', () => socket.write(`${command}\n`));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const why =
        error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
          ? 'no daemon is listening (is btwall running, with this CONTROL_SOCKET?)'
          : error.code === 'EACCES'
            ? 'permission denied: only root may ask the daemon'
            : error.message;
      reject(new Error(`cannot ask the daemon at ${path}: ${why}`));
    });
    socket.once('end', () => {
      try {
        resolve(JSON.parse(text) as ControlAnswer);
      } catch {
        reject(new Error(`the daemon at ${path} answered something that is not JSON: ${JSON.stringify(text.slice(0, 200))}`));
      }
    });
  });
}
