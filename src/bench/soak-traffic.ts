/**
 * The soak bench's traffic, one process per lab namespace (`node soak-traffic.js ROLE ...`):
 *
 * - `server LISTEN_ADDRESS CLIENT PEERS SECONDS`: accepts TCP on 6881 and 8000 and UDP on 9000
 *   (discarding what comes), and every 2 s, from the next of the PEERS addresses (comma list),
 *   connects to the CLIENT's port 51413 and sends a BitTorrent handshake: a remote peer proving
 *   itself, which the daemon bans.
 * - `client SERVER FLOWS_PER_S SECONDS`: listens on 51413 for those peers and opens FLOWS_PER_S
 *   new flows a second to SERVER: of every 20, 16 ordinary UDP datagrams and 2 ordinary TCP
 *   connections (to 9000 and 8000), 1 DHT ping and 1 TCP BitTorrent handshake (to 6881), each
 *   from a new source port.
 *
 * Each stops by itself after SECONDS and prints its counts as one JSON line.
 */
import dgram from 'node:dgram';
import net from 'node:net';

const HANDSHAKE = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), Buffer.alloc(20, 0xab), Buffer.from('-TR3000-soaksoaksoak')]);
const DHT_PING = Buffer.from('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');
const TEXT = Buffer.from('GET / HTTP/1.1\r\nHost: soak.test\r\n\r\n');
const CLIENT_PORT = 51413;
/** A connection is given up after this: BitTorrent ones never get an answer. */
const CONNECTION_LIFETIME_MS = 3000;

const counts: Record<string, number> = {};
const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1);

/** Accepts and discards; counts connections. */
function discard(port: number, host?: string): void {
  net
    .createServer((socket) => {
      count('accepted');
      socket.on('data', () => {});
      socket.on('error', () => {});
      socket.setTimeout(CONNECTION_LIFETIME_MS, () => socket.destroy());
    })
    .listen(port, host);
}

function connect(host: string, port: number, payload: Buffer, localAddress?: string): void {
  const socket = net.connect({ host, port, localAddress });
  socket.on('connect', () => socket.write(payload));
  socket.on('error', () => {});
  setTimeout(() => socket.destroy(), CONNECTION_LIFETIME_MS);
}

function datagram(host: string, port: number, payload: Buffer): void {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  socket.on('error', () => socket.close());
  socket.send(payload, port, host, () => socket.close());
}

const [role, ...args] = process.argv.slice(2);
const stopAfter = (seconds: number) =>
  setTimeout(() => {
    process.stdout.write(`${JSON.stringify({ role, ...counts })}\n`);
    process.exit(0);
  }, seconds * 1000);

if (role === 'server') {
  const [listen, client, peers, seconds] = args;
  for (const port of [6881, 8000]) discard(port, listen);
  const udp = dgram.createSocket('udp4');
  udp.on('message', () => count('datagrams'));
  udp.bind(9000, listen);
  const addresses = peers.split(',');
  let next = 0;
  setInterval(() => {
    connect(client, CLIENT_PORT, HANDSHAKE, addresses[next++ % addresses.length]);
    count('peerHandshakes');
  }, 2000);
  stopAfter(Number(seconds));
} else if (role === 'client') {
  const [server, flowsPerS, seconds] = args;
  discard(CLIENT_PORT);
  const TICK_MS = 50;
  const perTick = Math.max(1, Math.round((Number(flowsPerS) * TICK_MS) / 1000));
  let n = 0;
  setInterval(() => {
    for (let i = 0; i < perTick; i++, n++) {
      const kind = n % 20;
      if (kind === 0) connect(server, 6881, HANDSHAKE);
      // Not to 9000: the DHT node's endpoint is listed to the client as a peer, and every later flow to it dropped.
      else if (kind === 1) datagram(server, 6881, DHT_PING);
      else if (kind <= 3) connect(server, 8000, TEXT);
      else datagram(server, 9000, Buffer.from(`ordinary datagram ${n}`));
    }
    counts.flows = n;
  }, TICK_MS);
  stopAfter(Number(seconds));
} else {
  process.stderr.write('usage: soak-traffic.js server LISTEN CLIENT PEERS SECONDS | client SERVER FLOWS_PER_S SECONDS\n');
  process.exit(64);
}
