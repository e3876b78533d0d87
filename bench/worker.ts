// A translating worker of the shared-memory case (bench/main.ts, "shared.*"):
// attaches to the owner's engine and, phase after phase, translates one
// batch of IOVAs over and over (IOTLB hits, between enter() and leave() as
// every worker translation is) until the owner says stop, then reports its
// batches and the time it ran.
//
// control (Int32Array over a SharedArrayBuffer):
//   [0] phase (the owner bumps it and notifies)   [1] stop   [2] quit
//   [3] workers done with the phase   [4 + slot] 1 if the slot takes part
// times (Float64Array): [2 * slot] batches, [2 * slot + 1] milliseconds
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, type WorkerShare } from '../host/engine/engine.js';

const { module, share, ctx, iovas, control, times } = workerData as {
  module: WebAssembly.Module; share: WorkerShare; ctx: number; iovas: number[]; control: SharedArrayBuffer; times: SharedArrayBuffer;
};
const e = Engine.attach(module, share);
const c = new Int32Array(control);
const t = new Float64Array(times);
const slot = share.slot;
const n = iovas.length;
const bin = e.batchIn;
for (let i = 0; i < n; i++) { bin[2 * i] = iovas[i]!; bin[2 * i + 1] = 0; }

function batch(): void {
  e.enter();
  e.translateBatch(ctx, n, 1);
  e.leave();
}
for (const end = performance.now() + 200; performance.now() < end;) batch(); // warm up
parentPort!.postMessage('ready');

let phase = 0;
for (;;) {
  Atomics.wait(c, 0, phase);
  phase = Atomics.load(c, 0);
  if (Atomics.load(c, 2) !== 0) break;
  if (Atomics.load(c, 4 + slot) === 1) {
    let batches = 0;
    const t0 = performance.now();
    while (Atomics.load(c, 1) === 0) { batch(); batches++; }
    t[2 * slot] = batches;
    t[2 * slot + 1] = performance.now() - t0;
  }
  Atomics.add(c, 3, 1);
  Atomics.notify(c, 3);
}
