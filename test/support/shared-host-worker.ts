// A worker of test/shared-host.test.ts, bundled by esbuild at test time: it
// attaches to the owner's host (attachWorker) and runs the job posted:
//   'copy': read `length` bytes at `from`, write them at `to`, post them;
//   'hammer': read 64 bytes at `iova` until told to stop, counting
//     successes, DmaFaults and reads that saw the poison byte;
//   'pri': read `length` bytes at `from`; on a DmaFault with a page request
//     pending, wait for its response and read again; post the request, the
//     response and the bytes.
import { parentPort, workerData } from 'node:worker_threads';
import { attachWorker, type WorkerInit } from '../../host/worker.js';
import { DmaFault } from '../../host/kernel/pci.js';

const job = workerData as { init: WorkerInit; path: string; kind: 'copy' | 'hammer' | 'pri'; from?: number; to?: number; length?: number;
  pasid?: number; iova?: number; poison?: number; control?: SharedArrayBuffer };
const w = attachWorker(job.init);
const dma = w.device(job.path).dma;

if (job.kind === 'pri') {
  void (async () => {
    let fault: unknown = null;
    try {
      dma.read(job.from!, job.length!);
    } catch (e) {
      fault = e;
    }
    if (!(fault instanceof DmaFault) || !fault.pageRequest) { parentPort!.postMessage({ error: `no pending page request: ${String(fault)}` }); return; }
    const req = fault.pageRequest;
    const code = await req.response;
    const bytes = dma.read(job.from!, job.length!);
    parentPort!.postMessage({ grpid: req.grpid, pages: req.pages.map((p) => p.toString(16)), perm: req.perm, code, bytes });
  })().catch((e: unknown) => { parentPort!.postMessage({ error: String(e instanceof Error ? e.stack : e) }); });
} else if (job.kind === 'copy') {
  const bytes = dma.read(job.from!, job.length!, { pasid: job.pasid ?? 0 });
  dma.write(job.to!, bytes, { pasid: job.pasid ?? 0 });
  let fault = '';
  try { dma.read(0x7000_0000, 16); } catch (e) { fault = e instanceof DmaFault ? e.reason : String(e); }
  parentPort!.postMessage({ bytes, fault });
} else {
  const control = new Int32Array(job.control!);
  let ok = 0, faults = 0, poisoned = 0, other = '';
  const buf = new Uint8Array(64);
  while (Atomics.load(control, 0) === 0) {
    try {
      dma.readInto(job.iova!, buf);
      if (buf.includes(job.poison!)) poisoned++;
      ok++;
    } catch (e) {
      if (e instanceof DmaFault) faults++;
      else { other = String(e); break; }
    }
    Atomics.add(control, 1 + job.init.share.slot, 1);
  }
  parentPort!.postMessage({ ok, faults, poisoned, other });
}
