// Run under `unshare --mount --propagation private` (detection-log.test.ts): a 64 KiB tmpfs,
// mounted in this process's own mount namespace, holds a detection log; records are written
// while the disk is filled up and after it is freed. Prints what was written and lost, and the file.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const { DetectionLog } = await import(new URL('../../dist/daemon/detection-log.js', import.meta.url).href);

const must = (program, args) => {
  const run = spawnSync(program, args, { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`${program} ${args.join(' ')}: ${run.stderr}`);
};

const dir = mkdtempSync('/tmp/btwall-full-');
must('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', dir]);
try {
  const failures = [];
  const recoveries = [];
  const log = new DetectionLog(
    { path: join(dir, 'detections.log'), format: 'json', payloadBytes: 256 },
    { failing: (error) => failures.push(error.message), recovered: (losses) => recoveries.push({ ...losses }) },
  );
  const event = {
    timeMs: Date.now(), flow: 1, l4: 'tcp', tunnelled: false,
    initiator: '10.8.0.2', initiatorPort: 51000, responder: '198.51.100.9', responderPort: 6881,
    initiatorLocal: true, responderLocal: false, rule: 'handshake', strength: 'exact', producer: 'initiator', flowPackets: 4,
    decision: { action: 'drop', markConnection: true, enforce: true, ban: null, rateLimited: false, reason: 'no ban: local', remember: 'listed', cut: false },
    payload: new Uint8Array(300).fill(0x41),
  };
  let written = 0;
  let lost = 0;
  const write = () => (log.write(event, 'eth0') ? written++ : lost++);
  write();
  const filler = openSync(join(dir, 'filler'), 'w');
  try {
    for (;;) writeSync(filler, Buffer.alloc(4096));
  } catch {
    // ENOSPC: the disk is full.
  }
  closeSync(filler);
  for (let i = 0; i < 20; i++) write();
  rmSync(join(dir, 'filler'));
  write();
  log.close();
  const content = readFileSync(join(dir, 'detections.log'), 'utf8');
  process.stdout.write(JSON.stringify({ written, lost, failures, recoveries, content }));
} finally {
  must('umount', [dir]);
  rmdirSync(dir);
}
