// A worker of the shared-memory tests (test/engine-shared.test.ts), bundled
// by esbuild at test time and run in a worker_threads Worker. It attaches
// to the owner's engine and runs the job the owner posts:
//   'batch': translate the IOVAs given, `rounds` times, and post the PAs;
//   'hammer': DMA-read IOVA `iova` (64 bytes) until told to stop, counting
//     successes, faults and reads that saw the poison byte; each read
//     translates and copies between enter() and leave().
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, type WorkerShare } from '../../host/engine/engine.js';

interface Job {
  module: WebAssembly.Module;
  share: WorkerShare;
  kind: 'batch' | 'hammer';
  ctx: number;
  iovas?: number[];
  rounds?: number;
  iova?: number;
  poison?: number;
  /** Int32Array over a SharedArrayBuffer: [0] stop flag, [1 + slot] reads done. */
  control?: SharedArrayBuffer;
}

const job = workerData as Job;
const e = Engine.attach(job.module, job.share);
const L = e.layout;

if (job.kind === 'batch') {
  const iovas = job.iovas!;
  const out: number[] = [];
  for (let r = 0; r < job.rounds!; r++) {
    out.length = 0;
    for (let at = 0; at < iovas.length; at += L.BATCH_MAX) {
      const n = Math.min(L.BATCH_MAX, iovas.length - at);
      const bin = e.batchIn;
      for (let i = 0; i < n; i++) { bin[2 * i] = iovas[at + i]!; bin[2 * i + 1] = 0; }
      e.enter();
      e.translateBatch(job.ctx, n, L.PERM_R);
      const bout = e.batchOut;
      for (let i = 0; i < n; i++) out.push(bout[2 * i + 1] === 0xffffffff ? -1 : bout[2 * i + 1]! * 2 ** 32 + bout[2 * i]!);
      e.leave();
    }
  }
  parentPort!.postMessage({ pas: out, stats: e.stats() });
} else {
  const control = new Int32Array(job.control!);
  let ok = 0, faults = 0, poisoned = 0;
  while (Atomics.load(control, 0) === 0) {
    e.enter();
    const r = e.dmaRanges(job.ctx, job.iova!, 64, L.PERM_R);
    if (Array.isArray(r)) {
      const bytes = e.bytes;
      for (const { offset, length } of r) {
        for (let i = 0; i < length; i++) if (bytes[offset + i] === job.poison) { poisoned++; break; }
      }
      ok++;
    } else {
      faults++;
    }
    e.leave();
    Atomics.add(control, 1 + job.share.slot, 1);
  }
  parentPort!.postMessage({ ok, faults, poisoned });
}
