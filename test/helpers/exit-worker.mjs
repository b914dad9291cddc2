// Ends one queue worker of a running daemon from outside, as a crash would: through the daemon's
// inspector (started with --inspect=127.0.0.1:PORT), it evaluates process.exit() in the worker whose
// workerData names the queue (process.exit in a worker ends that thread only).
// `node --experimental-websocket exit-worker.mjs PORT QUEUE`; prints {"exited": QUEUE} or fails.
const [port, queue] = process.argv.slice(2).map(Number);
const [target] = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const socket = new WebSocket(target.webSocketDebuggerUrl);
let id = 0;
const send = (method, params = {}) => socket.send(JSON.stringify({ id: ++id, method, params }));
const toWorker = (sessionId, method, params) =>
  send('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id: ++id, method, params }) });
const probe = "process.getBuiltinModule('node:worker_threads').workerData.queue";
setTimeout(() => {
  console.error('no worker of that queue answered');
  process.exit(1);
}, 10_000).unref();
socket.onopen = () => send('NodeWorker.enable', { waitForDebuggerOnStart: false });
socket.onmessage = ({ data }) => {
  const message = JSON.parse(data);
  if (message.method === 'NodeWorker.attachedToWorker') {
    toWorker(message.params.sessionId, 'Runtime.evaluate', { expression: probe, returnByValue: true });
  } else if (message.method === 'NodeWorker.receivedMessageFromWorker') {
    const reply = JSON.parse(message.params.message);
    if (reply.result?.result?.value !== queue) return;
    toWorker(message.params.sessionId, 'Runtime.evaluate', { expression: 'process.exit(70)' });
    console.log(JSON.stringify({ exited: queue }));
    socket.onclose = () => process.exit(0);
    socket.close();
  }
};
