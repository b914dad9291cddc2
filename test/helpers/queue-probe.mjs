// One queue served by NfQueue itself, for the broker's tests, run inside a test namespace:
//   node queue-probe.mjs QUEUE VERDICT_TIMEOUT_MS FIRST
// FIRST is what the handler does with the first batch (every later one is accepted):
//   hold:MS  copies the batch as shared memory shows it, busy-waits MS (JavaScript late: the watchdog
//            takes over) or until the broker has exited, then prints {"msg":"held"} with whether the
//            slot still shows the same packets and after how long the broker was seen gone (or null);
//   drop     drops its packets.
// Prints {"msg":"ready","broker":PID} once bound, {"msg":"stats",...} whenever the counters change,
// and on SIGTERM closes the queue and prints {"msg":"closed",...} with the last counters.
import { readdirSync, readFileSync } from 'node:fs';
import { NfQueue, VERDICT_DROP } from '../../dist/queue/nfqueue.js';

const [queue, timeout, first] = process.argv.slice(2);
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

/** The broker: our only child (nsenter exec'd us). */
function childPid() {
  for (const task of readdirSync('/proc/self/task')) {
    const children = readFileSync(`/proc/self/task/${task}/children`, 'utf8').trim();
    if (children) return Number(children.split(' ')[0]);
  }
  return 0;
}

/** Exited: a zombie while we, its parent, are too busy to reap it. */
function gone(pid) {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0] === 'Z';
  } catch {
    return true;
  }
}

function contents(batch) {
  batch.load();
  const packets = [];
  for (let i = 0; i < batch.count; i++) packets.push([batch.offset(i), batch.data.toString('hex', batch.offset(i), batch.offset(i) + batch.length(i))]);
  return JSON.stringify(packets);
}

let broker = 0;
let batches = 0;

function handler(batch) {
  if (batches++ > 0) return;
  if (first === 'drop') {
    for (let i = 0; i < batch.count; i++) batch.setVerdict(i, VERDICT_DROP, 0);
    return;
  }
  const holdMs = Number(first.split(':')[1]);
  const before = contents(batch);
  const start = Date.now();
  let brokerGoneMs = null;
  while (Date.now() - start < holdMs && brokerGoneMs === null) if (gone(broker)) brokerGoneMs = Date.now() - start;
  print({ msg: 'held', packets: batch.count, unchanged: contents(batch) === before, brokerGoneMs });
}

const options = { queue: Number(queue), copyRange: 0xffff, maxLen: 1024, receiveBuffer: 1 << 20, verdictTimeoutMs: Number(timeout), coalesceUs: 0, failOpen: true, gso: true, connmarkMask: 0xc0000000 };
const nfq = await NfQueue.open(options, handler, (reason) => print({ msg: 'broker-exit', reason }));
broker = childPid();
print({ msg: 'ready', broker });
let last = '';
const timer = setInterval(() => {
  const stats = JSON.stringify(nfq.stats());
  if (stats !== last) print({ msg: 'stats', ...nfq.stats() });
  last = stats;
}, 50);
process.on('SIGTERM', async () => {
  clearInterval(timer);
  await nfq.close();
  print({ msg: 'closed', ...nfq.stats() });
  process.exit(0);
});
