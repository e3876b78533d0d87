// A worker of the page's shared-memory panel: it attaches to the page's
// engine (one SharedArrayBuffer, the page keeps every control operation) and
// DMAs as the device the page shared, until told to stop; then once more,
// after the page unmapped the buffer, where the DMA must fault.
import * as lib from '../../dist/index.js';

self.onmessage = (e) => {
  const { init, path, iova, length, control } = e.data;
  try {
    const w = lib.attachWorker(init);
    const dma = w.device(path).dma;
    const ctl = new Int32Array(control);
    const buf = new Uint8Array(length);
    let reads = 0, bad = 0;
    while (Atomics.load(ctl, 0) === 0) {
      dma.readInto(iova, buf);
      for (let i = 0; i < length; i += 512) if (buf[i] !== (i >> 9) % 251) { bad++; break; }
      reads++;
      Atomics.add(ctl, 4 + init.share.slot, 1); // the page waits until every worker reads
    }
    Atomics.add(ctl, 1, 1);
    Atomics.notify(ctl, 1);
    Atomics.wait(ctl, 2, 0); // the page unmaps, then wakes us
    let after = '';
    try { dma.read(iova, 16); after = 'no fault'; } catch (err) { after = err instanceof lib.DmaFault ? err.reason : String(err); }
    self.postMessage({ ok: true, reads, bad, after, slot: init.share.slot });
  } catch (err) {
    self.postMessage({ ok: false, error: String(err?.stack ?? err) });
  }
};
