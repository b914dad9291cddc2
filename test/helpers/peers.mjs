// Test hosts' programs, run inside the test's network namespaces: `node peers.mjs MODE ARGS...`.
// Each prints one JSON line per result and stops by itself.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

const [mode, ...args] = process.argv.slice(2);
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const HANDSHAKE = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), Buffer.alloc(20, 0xab), Buffer.from('-TR3000-testtesttest')]);

/** Deterministic bytes, so both ends know the checksum. */
function body(bytes) {
  const data = Buffer.alloc(bytes);
  let x = 0x12345678;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = x & 0xff;
  }
  return data;
}

const DHT_PING = Buffer.from('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe');

const sha256 = (data) => createHash('sha256').update(data).digest('hex');

switch (mode) {
  // tcp-sink PORT LIFETIME_MS: counts what each connection delivers.
  case 'tcp-sink': {
    const [port, lifetime] = args.map(Number);
    const server = net.createServer((socket) => {
      let bytes = 0;
      socket.on('data', (d) => (bytes += d.length));
      socket.on('close', () => print({ event: 'closed', bytes }));
      socket.on('error', () => {});
    });
    server.listen({ port, host: '::' }, () => print({ event: 'listening' }));
    setTimeout(() => process.exit(0), lifetime);
    break;
  }
  // tcp-answer PORT LIFETIME_MS: a peer that answers each connection with its own handshake first.
  case 'tcp-answer': {
    const [port, lifetime] = args.map(Number);
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.write(HANDSHAKE);
      socket.on('close', () => print({ event: 'closed' }));
    });
    server.listen({ port, host: '::' }, () => print({ event: 'listening' }));
    setTimeout(() => process.exit(0), lifetime);
    break;
  }
  // tcp-send HOST PORT handshake|text|hex:BYTES WAIT_MS [CONNECTIONS [LOCAL_ADDRESS,...]]: connects (from each
  // local address in turn), sends, waits, reports how many connected.
  case 'tcp-send': {
    const [host, port, kind, wait, connections = '1', locals = ''] = args;
    const localAddresses = locals ? locals.split(',') : [undefined];
    let connected = 0;
    for (let i = 0; i < Number(connections); i++) {
      const socket = net.connect({ port: Number(port), host, localAddress: localAddresses[i % localAddresses.length] });
      socket.on('connect', () => {
        connected++;
        socket.write(kind === 'handshake' ? HANDSHAKE : kind.startsWith('hex:') ? Buffer.from(kind.slice(4), 'hex') : Buffer.from('hello, plain text\n'));
      });
      socket.on('error', () => {});
    }
    setTimeout(() => {
      print({ connected });
      process.exit(0);
    }, Number(wait));
    break;
  }
  // tcp-hold HOST PORT INTERVAL_MS LIFETIME_MS: one connection that writes a byte every interval;
  // reports how it ended: reset or closed by the other end, or still open when its lifetime is over.
  case 'tcp-hold': {
    const [host, port, interval, lifetime] = args;
    const socket = net.connect({ port: Number(port), host });
    let connectedAt = 0;
    let writer = null;
    const end = (result) => {
      clearInterval(writer);
      print({ ...result, afterMs: connectedAt === 0 ? null : Date.now() - connectedAt });
      process.exit(0);
    };
    socket.on('connect', () => {
      connectedAt = Date.now();
      print({ event: 'connected' });
      writer = setInterval(() => socket.write('x'), Number(interval));
    });
    socket.on('error', (error) => end({ event: 'error', code: error.code }));
    socket.on('close', () => end({ event: 'closed' }));
    setTimeout(() => end({ event: 'open' }), Number(lifetime));
    break;
  }
  // udp-sink PORT LIFETIME_MS: counts datagrams, reports when its lifetime ends.
  case 'udp-sink': {
    const [port, lifetime] = args.map(Number);
    // A flood's datagrams wait in the socket while another test's load stalls this process: the
    // default 208 KiB holds some 200 of them (the kernel caps the request at net.core.rmem_max).
    const socket = dgram.createSocket({ type: 'udp6', ipv6Only: false, recvBufferSize: 4 << 20 });
    let datagrams = 0;
    socket.on('message', () => datagrams++);
    socket.bind(port, '::', () => print({ event: 'listening' }));
    setTimeout(() => {
      print({ event: 'received', datagrams });
      process.exit(0);
    }, lifetime);
    break;
  }
  // udp-send HOST PORT KIND COUNT INTERVAL_MS: COUNT datagrams of KIND dht, text, numbered (each unlike the
  // others) from one source port, or flows (each from a socket of its own: a new flow each, all queued).
  case 'udp-send': {
    const [host, port, kind, count, interval] = args;
    const family = host.includes(':') ? 'udp6' : 'udp4';
    const shared = kind === 'flows' ? null : dgram.createSocket(family);
    const payload = kind === 'dht' ? DHT_PING : Buffer.from('hello, plain datagram');
    let sent = 0;
    const next = () => {
      if (sent === Number(count)) {
        print({ sent });
        process.exit(0);
      }
      sent++;
      const socket = shared ?? dgram.createSocket(family);
      const data = kind === 'numbered' ? Buffer.from(`datagram ${sent}`) : kind === 'flows' ? Buffer.from(`flow ${sent}`) : payload;
      socket.send(data, Number(port), host, () => {
        if (shared === null) socket.close();
        if (Number(interval) > 0) setTimeout(next, Number(interval));
        else setImmediate(next);
      });
    };
    next();
    break;
  }
  // udp-flows HOST PORT COUNT INTERVAL_MS LOCAL_ADDRESS FIRST_PORT: COUNT flows, each one DHT ping from
  // a source port of its own (FIRST_PORT, FIRST_PORT + 1, ...: never one reused), INTERVAL_MS apart;
  // reports how many were sent.
  case 'udp-flows': {
    const [host, port, count, interval, localAddress, firstPort] = args;
    let sent = 0;
    const next = () => {
      if (sent === Number(count)) {
        print({ sent });
        process.exit(0);
      }
      const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      socket.bind({ port: Number(firstPort) + sent, address: localAddress }, () =>
        socket.send(DHT_PING, Number(port), host, () => {
          sent++;
          socket.close();
          setTimeout(next, Number(interval));
        }),
      );
    };
    next();
    break;
  }
  // echo-serve PORT LIFETIME_MS
  case 'echo-serve': {
    const [port, lifetime] = args.map(Number);
    net.createServer((socket) => socket.on('error', () => {}).pipe(socket)).listen({ port, host: '::' }, () => print({ event: 'listening' }));
    setTimeout(() => process.exit(0), lifetime);
    break;
  }
  // echo-talk HOST PORT EXCHANGES INTERVAL_MS: one connection, a small request now and then; reports round trips.
  case 'echo-talk': {
    const [host, port, exchanges, interval] = args;
    const socket = net.connect(Number(port), host);
    const rtts = [];
    let sentAt = 0;
    const ask = () => {
      sentAt = Date.now();
      socket.write('ping\n');
    };
    socket.on('connect', ask);
    socket.on('data', () => {
      rtts.push(Date.now() - sentAt);
      if (rtts.length >= Number(exchanges)) {
        print({ exchanges: rtts.length, rtts });
        process.exit(0);
      }
      setTimeout(ask, Number(interval));
    });
    socket.on('error', (e) => print({ error: e.message }));
    setTimeout(() => {
      print({ exchanges: rtts.length, rtts, timedOut: true });
      process.exit(0);
    }, 20_000);
    break;
  }
  // https-serve PORT CERT KEY BYTES LIFETIME_MS
  case 'https-serve': {
    const [port, cert, key, bytes, lifetime] = args;
    const data = body(Number(bytes));
    https
      .createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
        res.writeHead(200, { 'content-length': data.length });
        res.end(data);
      })
      .listen({ port: Number(port), host: '::' }, () => print({ event: 'listening', sha256: sha256(data) }));
    setTimeout(() => process.exit(0), Number(lifetime));
    break;
  }
  // http-sink PORT LIFETIME_MS [STATUS...]: an HTTP receiver on 127.0.0.1; prints each request with its
  // body (parsed when JSON) and answers with the statuses given, in turn, then 200.
  case 'http-sink': {
    const [port, lifetime, ...statuses] = args.map(Number);
    http
      .createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: printed as text
          }
          print({ event: 'request', method: req.method, path: req.url, contentType: req.headers['content-type'], authorization: req.headers.authorization ?? null, body: parsed });
          res.writeHead(statuses.shift() ?? 200).end();
        });
      })
      .listen({ port, host: '127.0.0.1' }, () => print({ event: 'listening' }));
    setTimeout(() => process.exit(0), lifetime);
    break;
  }
  // http-get URL: one GET; prints the status, content type and body.
  case 'http-get': {
    const [url] = args;
    const response = await fetch(url);
    print({ event: 'response', status: response.status, contentType: response.headers.get('content-type'), body: await response.text() });
    process.exit(0);
    break;
  }
  // https-get URL [RATE_BYTES_PER_S]: downloads, optionally reading slowly, reports size and checksum.
  case 'https-get': {
    const [url, rate] = args;
    const hash = createHash('sha256');
    let bytes = 0;
    https
      .get(url, { rejectUnauthorized: false }, (res) => {
        res.on('data', (chunk) => {
          hash.update(chunk);
          bytes += chunk.length;
          if (rate) {
            res.pause();
            setTimeout(() => res.resume(), (chunk.length / Number(rate)) * 1000);
          }
        });
        res.on('end', () => {
          print({ status: res.statusCode, bytes, sha256: hash.digest('hex') });
          process.exit(0);
        });
      })
      .on('error', (e) => {
        print({ error: e.message });
        process.exit(0);
      });
    break;
  }
  default:
    process.stderr.write(`unknown mode ${mode}\n`);
    process.exit(64);
}
