// The part of `npm run bench -- --quick` that makes sense in a browser tab,
// through the public API only, with the same baselines where a page has
// them: IOTLB-hit translations one call each, DMA reads against a raw copy
// of the same bytes (the engine's linear memory, where the pages are), and
// the 4 KiB IOAS_MAP + IOAS_UNMAP pair. The batched and cold-walk cases and
// the machine's limit loops need the engine's internals and a Node process:
// they stay in bench/.
//
// Times are medians of short runs (each at least `sampleMs`), so that a
// browser's coarse performance.now() (100 us without cross-origin isolation,
// 5 us with it) does not matter.

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * ns per op of body(n): n grown until a run takes sampleMs, a warm-up of
 * warmMs (JIT tiers; the first calls of a path are many times slower),
 * then `reps` runs.
 */
function measure(body, { sampleMs, reps, warmMs }) {
  let n = 1;
  for (const tw = performance.now(); performance.now() - tw < warmMs;) body(n);
  for (;;) {
    const t0 = performance.now();
    body(n);
    const dt = performance.now() - t0;
    if (dt >= sampleMs || n >= 1 << 26) break;
    n = dt <= 0 ? n * 16 : Math.ceil(n * Math.min(16, Math.max(2, (sampleMs * 1.2) / dt)));
  }
  const t = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    body(n);
    t.push(((performance.now() - t0) * 1e6) / n);
  }
  return median(t);
}

/**
 * Run the quick cases on a host of their own. `onCase(c)` is told of each
 * result as it comes: { id, what, value, unit, baseline?, baselineValue?, ratio? }.
 * Yields to the event loop between cases so that a page stays responsive.
 */
export async function runQuickBench(lib, opts = {}) {
  const { createHost, Iommufd, VfioDevice } = lib;
  const sampleMs = opts.sampleMs ?? 20;
  const reps = opts.reps ?? 5;
  const warmMs = opts.warmMs ?? 100;
  const onCase = opts.onCase ?? (() => {});
  const yieldNow = () => new Promise((r) => setTimeout(r, 0));
  const t0 = performance.now();
  const cases = [];
  const report = (c) => { cases.push(c); onCase(c); };

  const host = await createHost({ wasm: opts.wasm, memoryLimit: 64 << 20 });
  const iommufd = new Iommufd(host);
  const ioas = iommufd.ioasAlloc();
  const SIZE = 4 << 20;
  const va = host.mmap(SIZE);
  const IOVA = 0x4000_0000n;
  iommufd.ioasMap({ ioasId: ioas, userVa: va, length: SIZE, iova: IOVA });
  const dev = host.addDevice({ iommu: 'intel-vtd' });
  const vfio = new VfioDevice(host, dev.path);
  vfio.bind(iommufd);
  vfio.attach(ioas);
  const m = { sampleMs, reps, warmMs };

  // 1. IOTLB hits, one call per translation (dev.dma.translate: the public per-call path).
  {
    const PAGES = 256;
    const iovas = Array.from({ length: PAGES }, (_, i) => IOVA + BigInt(i * 4096 + 64));
    let sink = 0;
    const ns = measure((n) => { for (let i = 0; i < n; i++) sink += dev.dma.translate(iovas[i & (PAGES - 1)]).size; }, m);
    if (sink === -1) console.log(sink);
    report({ id: 'iotlb.hit.percall', what: 'IOTLB-hit translation, one call each (dev.dma.translate)', value: ns, unit: 'ns' });
  }
  await yieldNow();

  // 2. DMA reads against a raw copy of the same bytes.
  for (const size of [4096, 64 << 10, 1 << 20]) {
    const buf = new Uint8Array(size);
    const pa = dev.dma.translate(IOVA).pa; // one physically contiguous run (mmap of 4 MiB)
    const ours = measure((n) => { for (let i = 0; i < n; i++) dev.dma.readInto(IOVA, buf); }, m);
    const raw = measure((n) => { const mem = host.engine.bytes; for (let i = 0; i < n; i++) buf.set(mem.subarray(pa, pa + size)); }, m);
    const label = size >= 1 << 20 ? `${size >> 20} MiB` : `${size >> 10} KiB`;
    report({ id: `dma.read.${label.replace(' ', '').toLowerCase()}`, what: `DMA read of ${label}, IOTLB warm`, value: ours, unit: 'ns', baseline: 'raw copy (set)', baselineValue: raw, ratio: raw / ours });
    await yieldNow();
  }

  // 3. IOAS_MAP + IOAS_UNMAP of 4 KiB through the typed face (same handler as ioctl).
  {
    const us = measure((n) => {
      for (let i = 0; i < n; i++) {
        iommufd.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: 0x8000_0000n });
        iommufd.ioasUnmap(ioas, 0x8000_0000n, 4096);
      }
    }, m) / 1000;
    report({ id: 'ioas.map_unmap.4k', what: '4 KiB IOAS_MAP + IOAS_UNMAP pair', value: us, unit: 'us' });
  }

  const stats = host.engine.stats();
  vfio.close();
  iommufd.close();
  return { cases, stats, ms: performance.now() - t0 };
}
