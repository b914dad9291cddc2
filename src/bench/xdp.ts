/**
 * `npm run bench:xdp [-- SECONDS ROUNDS]` (root): the XDP ban program against the bare XDP_DROP
 * program (xdp_drop.o, built from ../shared/bench), in one run, on the gateway namespace's veth, generic mode.
 *  1. packets/s dropped while one sender (the banned peer) floods 64-byte UDP payloads through the
 *     gateway: bare XDP_DROP; btwall with the peer banned; btwall with the peer and 100 k other
 *     bans per family. Each round runs the three, each SECONDS long, starting with another one
 *     (default 3 s x 3 rounds); the median of each is reported, and btwall's ratio to the bare rate
 *     (target >= 0.9).
 *  2. ns per packet from BPF_PROG_TEST_RUN, 100 k other bans per family: listed (dropped) and
 *     unlisted (passed) IPv4 and IPv6 frames, and the bare program for reference.
 * The namespaces are created here and deleted at the end; the measuring half runs inside the
 * gateway namespace (the program is attached there), as this same script under nsenter.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { attachXdpObject, detachXdp, loadXdpObject, parseAddress, XdpProgram, type Attachment } from '../bans/xdp.js';
import { NO_ESCALATION } from '../policy/escalation.js';
import { createLab, exited } from './lab.js';
import { BENCH_TOOLS, requireOrExit } from './requirements.js';

const XDP_DROP_OBJECT = `${BENCH_TOOLS}/xdp_drop.o`;
const XDP_DROP_PROGRAM = 'xdp_drop_all';
const UDPFLOOD = `${BENCH_TOOLS}/udpflood`;
/** The shared udpflood only sends into 10.91.0.0/16 and fd91::/16. */
const NETS = { v4: '10.91', v6: 'fd91' };
const PAYLOAD_BYTES = 64;
const OTHER_BANS = 100_000;
const CAPACITY = 131_072;
const TEST_RUN_REPEAT = 1_000_000;
const INSIDE = 'BTWALL_XDP_BENCH';

/** What the half inside the gateway namespace needs to know. */
interface Setup {
  /** The gateway's link the flood comes in on. */
  device: string;
  /** The namespace of the sender: the banned peer. */
  sender: string;
  peer4: string;
  peer6: string;
  target4: string;
  target6: string;
  pinDir: string;
  seconds: number;
  rounds: number;
}

const log = pino({ level: 'warn' }, pino.destination(2));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function must(program: string, args: string[]): string {
  const run = spawnSync(program, args, { encoding: 'utf8' });
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`${program} ${args.join(' ')} failed: ${run.stderr.trim()}`);
  return run.stdout;
}

/** The device of a namespace that holds an address. */
function deviceWith(addressList: string, address: string): string {
  const line = addressList.split('\n').find((l) => l.includes(` ${address}/`));
  if (!line) throw new Error(`no device with ${address}`);
  return line.split(/\s+/)[1];
}

// ---- outside: the lab, then this script again inside the gateway namespace ----

async function outside(seconds: number, rounds: number): Promise<number> {
  const lab = createLab('xb', NETS);
  const pinDir = `/sys/fs/bpf/btwall-bench-${process.pid}`;
  try {
    const gatewayAddresses = lab.gateway.must('ip', ['-o', 'addr', 'show']);
    const device = deviceWith(gatewayAddresses, `${NETS.v4}.2.1`);
    // The bare program drops ARP too: the sender gets the gateway's MAC address without asking.
    const mac = (JSON.parse(lab.gateway.must('ip', ['-j', 'link', 'show', 'dev', device])) as { address: string }[])[0].address;
    const senderDevice = deviceWith(lab.server.must('ip', ['-o', 'addr', 'show']), lab.serverV4);
    lab.server.must('ip', ['neigh', 'replace', `${NETS.v4}.2.1`, 'lladdr', mac, 'dev', senderDevice, 'nud', 'permanent']);
    const setup: Setup = {
      device,
      sender: lab.server.name,
      peer4: lab.serverV4,
      peer6: lab.serverV6,
      target4: `${NETS.v4}.1.2`,
      target6: `${NETS.v6}:1::2`,
      pinDir,
      seconds,
      rounds,
    };
    const child = lab.gateway.start(process.execPath, [fileURLToPath(import.meta.url)], { ...process.env, [INSIDE]: JSON.stringify(setup) });
    child.stdout!.pipe(process.stdout);
    child.stderr!.pipe(process.stderr);
    await exited(child, (seconds * rounds * 3 + 120) * 1000);
    return child.exitCode ?? 1;
  } finally {
    await lab.destroy();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

// ---- inside the gateway namespace ----

/** The gateway link's received-packet counter (ip: sysfs under nsenter shows another namespace). */
function receivedPackets(device: string): number {
  const [link] = JSON.parse(must('ip', ['-j', '-s', 'link', 'show', 'dev', device])) as { stats64: { rx: { packets: number } } }[];
  return link.stats64.rx.packets;
}

/** Floods from the sender for `seconds`; packets/s that reached the gateway link (and all were dropped). */
function flood(setup: Setup): { sentPerS: number; receivedPerS: number; seconds: number } {
  const before = receivedPackets(setup.device);
  const started = process.hrtime.bigint();
  const output = must('nsenter', [`--net=/run/netns/${setup.sender}`, UDPFLOOD, setup.target4, '9', String(PAYLOAD_BYTES), String(setup.seconds)]);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const received = receivedPackets(setup.device) - before;
  const sent = /sent (\d+) pkts in ([\d.]+)s/.exec(output);
  return { sentPerS: sent ? Number(sent[1]) / Number(sent[2]) : NaN, receivedPerS: received / seconds, seconds };
}

/** 100 k addresses per family that are neither the peer nor the target: 198.18.0.0/15, 2001:db8:b::/48. */
function fillOtherBans(program: XdpProgram): void {
  const v4 = new Uint8Array(4);
  const v6 = parseAddress('2001:db8:b::')!.bytes;
  for (let i = 0; i < OTHER_BANS; i++) {
    v4.set([198, 18 + (i >> 16), (i >> 8) & 0xff, i & 0xff]);
    program.maps.ban(4, v4, 3600, 'bench', NO_ESCALATION);
    v6.set([(i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff], 13);
    program.maps.ban(6, v6, 3600, 'bench', NO_ESCALATION);
  }
}

/** An Ethernet frame around a 64-byte UDP datagram from src to dst. */
function frame(src: string, dst: string): Uint8Array {
  const s = parseAddress(src)!;
  const d = parseAddress(dst)!;
  const udp = new Uint8Array(8 + PAYLOAD_BYTES);
  udp.set([0x1a, 0xe1, 0, 9, 0, udp.length]);
  const ip =
    s.family === 4
      ? Uint8Array.from([0x45, 0, 0, 20 + udp.length, 0, 1, 0, 0, 64, 17, 0, 0, ...s.bytes.subarray(0, 4), ...d.bytes.subarray(0, 4)])
      : Uint8Array.from([0x60, 0, 0, 0, 0, udp.length, 17, 64, ...s.bytes, ...d.bytes]);
  const eth = Uint8Array.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, ...(s.family === 4 ? [0x08, 0x00] : [0x86, 0xdd])]);
  return Uint8Array.from([...eth, ...ip, ...udp]);
}

function nsPerPacket(run: () => { durationNs: number }): number {
  return median(Array.from({ length: 5 }, () => run().durationNs));
}

function inside(setup: Setup): void {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const bare = loadXdpObject(XDP_DROP_OBJECT, log);
  const program = XdpProgram.load(setup.pinDir, CAPACITY, log);
  const peer = parseAddress(setup.peer4)!;
  const variants = ['bare XDP_DROP (xdp_drop.o)', 'btwall, peer banned', `btwall, peer banned + ${OTHER_BANS / 1000} k other bans per family`];
  const rates: number[][] = variants.map(() => []);
  const sent: number[][] = variants.map(() => []);
  let counted = 0;
  let received = 0;
  try {
    for (let round = 0; round < setup.rounds; round++) {
      // Each round starts with another variant: the machine's load drifts, the order must not favour one.
      for (let step = 0; step < variants.length; step++) {
        const v = (round + step) % variants.length;
        program.maps.flush();
        if (v === 2) fillOtherBans(program);
        if (v > 0) program.maps.ban(peer.family, peer.bytes, 3600, 'bench', NO_ESCALATION);
        const attachment: Attachment = v === 0 ? attachXdpObject(bare, XDP_DROP_PROGRAM, setup.device, 'generic') : program.attach(setup.device, 'generic');
        const dropsBefore = program.maps.drops().v4.packets;
        const result = flood(setup);
        if (v === 0) detachXdp(attachment);
        else program.detach(attachment);
        // The bare program has no counter: everything the link received it dropped. btwall counts its own.
        const dropped = v === 0 ? result.receivedPerS : (program.maps.drops().v4.packets - dropsBefore) / result.seconds;
        if (v > 0) {
          counted += dropped;
          received += result.receivedPerS;
        }
        rates[v].push(dropped);
        sent[v].push(result.sentPerS);
      }
    }
    const base = median(rates[0]);
    print(`XDP drop rate, generic mode, gateway veth, ${PAYLOAD_BYTES}-byte UDP payloads from one sender, ${setup.rounds} rounds x ${setup.seconds} s (median):`);
    variants.forEach((name, v) => {
      const rate = median(rates[v]);
      const ratio = v === 0 ? '' : `   ${(rate / base).toFixed(3)} x bare${v === 2 ? ' (target >= 0.9)' : ''}`;
      const range = `${(Math.min(...rates[v]) / 1000).toFixed(0)}-${(Math.max(...rates[v]) / 1000).toFixed(0)} k`;
      print(`  ${name.padEnd(52)}${(rate / 1000).toFixed(0).padStart(6)} k dropped/s (rounds ${range}, sender ${(median(sent[v]) / 1000).toFixed(0)} k/s)${ratio}`);
    });
    print(`  btwall's own drop counter vs packets the link received: ${((counted / received) * 100).toFixed(1)} %`);

    // Frames for BPF_PROG_TEST_RUN, with the 100 k other bans per family in place.
    program.maps.flush();
    fillOtherBans(program);
    program.maps.ban(peer.family, peer.bytes, 3600, 'bench', NO_ESCALATION);
    const listed4 = frame(setup.peer4, setup.target4);
    const unlisted4 = frame(`${NETS.v4}.2.3`, setup.target4);
    const peer6 = parseAddress(setup.peer6)!;
    program.maps.ban(peer6.family, peer6.bytes, 3600, 'bench', NO_ESCALATION);
    const listed6 = frame(setup.peer6, setup.target6);
    const unlisted6 = frame(`${NETS.v6}:2::3`, setup.target6);
    print(`BPF_PROG_TEST_RUN, ns per packet (median of 5 x ${TEST_RUN_REPEAT / 1e6} M runs; ${OTHER_BANS / 1000} k other bans per family):`);
    print(`  ${'bare XDP_DROP'.padEnd(32)}${nsPerPacket(() => bare.testRun(XDP_DROP_PROGRAM, listed4, TEST_RUN_REPEAT))}`);
    for (const [name, f] of [
      ['IPv4 listed (dropped)', listed4],
      ['IPv4 unlisted (passed)', unlisted4],
      ['IPv6 listed (dropped)', listed6],
      ['IPv6 unlisted (passed)', unlisted6],
    ] as const) {
      print(`  btwall, ${name.padEnd(24)}${nsPerPacket(() => program.testRun('ethernet', f, TEST_RUN_REPEAT))}`);
    }
  } finally {
    program.close();
    bare.close();
  }
}

const setupText = process.env[INSIDE];
if (setupText !== undefined) {
  inside(JSON.parse(setupText) as Setup);
} else {
  const [seconds = '3', rounds = '3'] = process.argv.slice(2);
  requireOrExit('bench:xdp', {
    root: 'the bench creates network namespaces and attaches XDP programs',
    commands: { ip: 'iproute2', nsenter: 'util-linux' },
    sharedTools: ['xdp_drop.o', 'udpflood'],
  });
  process.exitCode = await outside(Number(seconds), Number(rounds));
}
