// Shared-memory mode through the host (host/worker.ts): a host created
// with { shared: true }, functions shared with worker_threads workers that
// DMA through their own engine instances, while the owner keeps the
// control operations (IOAS_MAP / IOAS_UNMAP, attach). Expectations: a
// worker's DMA lands where the owner's would (the IOAS mapping); an
// IOAS_UNMAP that returned leaves no worker a way to the old pages (issue
// 7: "once unmap returns, no worker can reach the old page"); a function
// detached is blocked for its workers too.

import { describe, it, expect, beforeAll } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { createHost, Iommufd, VfioDevice, DmaFault, uapi, type Host } from '../host/index.js';
import { engineModule } from './support/engine.js';

let workerUrl: URL;
beforeAll(() => {
  const out = buildSync({
    entryPoints: [fileURLToPath(new URL('./support/shared-host-worker.ts', import.meta.url))],
    bundle: true, write: false, format: 'esm', platform: 'node', target: 'node20',
  });
  workerUrl = new URL(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0]!.text).toString('base64')}`);
});

function run<T>(data: object): Promise<T> {
  const worker = new Worker(workerUrl, { workerData: data });
  return new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

async function sharedHost(): Promise<{ host: Host; ictx: Iommufd; ioas: number; vfio: VfioDevice; path: string }> {
  const host = await createHost({ shared: true, wasm: engineModule('shared'), memoryLimit: 64 << 20 });
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const { path } = host.addDevice();
  const vfio = new VfioDevice(host, path);
  vfio.bind(ictx.fd);
  vfio.attach(ioas);
  return { host, ictx, ioas, vfio, path };
}

describe('a worker\'s refused DMA feeds PRI (assembly/pri.ts under the ring lock)', () => {
  it('the engine queues the worker\'s page request group and wakes the owner (waitReadable, doorbell); the owner reads it, maps, answers SUCCESS; the worker\'s pending request resolves and its retry reads the bytes', async () => {
    const host = await createHost({ shared: true, wasm: engineModule('shared'), memoryLimit: 64 << 20 });
    const ictx = new Iommufd(host);
    const ioas = ictx.ioasAlloc();
    const f = ictx.calls.faultQueueAlloc({});
    const { path } = host.addDevice({ pri: true, ats: true });
    const vfio = new VfioDevice(host, path);
    const devid = vfio.bind(ictx.fd);
    const hwpt = ictx.calls.hwptAlloc({ dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: f.out_fault_id }).out_hwpt_id;
    vfio.attach(hwpt);
    const va = host.mmap(2 * 4096);
    host.mem.write(va, Uint8Array.from({ length: 2 * 4096 }, (_, i) => (i * 3) & 0xff));
    const bell = host.doorbell(f.out_fault_fd);
    const done = run<{ grpid: number; pages: string[]; perm: number; code: number; bytes: Uint8Array; error?: string }>({
      init: host.shareWorker([path]), path, kind: 'pri', from: 0x20_0000 + 4000, length: 200,
    });
    // The owner waits for its fault fd to be readable: the engine notifies the FAULT ring's queued word
    // when a worker queues a group, and the FAULT signals it (the owner is not called from the worker).
    // If the worker is done first, it has an error to tell; the test's timeout bounds the wait.
    const early = await Promise.race([host.waitReadable(f.out_fault_fd).then(() => null), done]);
    expect(early).toBeNull();
    expect(Atomics.load(bell.word, 0)).toBe(1); // the doorbell rang once for the worker's group
    const REC = uapi.iommu_hwpt_pgfault.size;
    const buf = new Uint8Array(4 * REC);
    const n = host.read(f.out_fault_fd, buf);
    const recs = Array.from({ length: n / REC }, (_, i) => uapi.iommu_hwpt_pgfault.decode(buf, i * REC));
    expect(recs.map((r) => [r.addr, r.flags, r.dev_id])).toEqual([[0x20_0000n, 0, devid], [0x20_1000n, uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE, devid]]);
    ictx.ioasMap({ ioasId: ioas, userVa: va, length: 2 * 4096, iova: 0x20_0000n });
    host.write(f.out_fault_fd, uapi.iommu_hwpt_page_response.encode({ cookie: recs[0]!.cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS }));
    const r = await done;
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ grpid: recs[0]!.grpid, pages: ['200000', '201000'], perm: uapi.IOMMU_PGFAULT_PERM_READ, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS });
    expect([...r.bytes]).toEqual([...host.mem.read(va + 4000, 200)]);
  });
});

describe('shared-memory mode through the host', () => {
  it('needs a host over a shared memory', async () => {
    const host = await createHost({ wasm: engineModule('release'), memoryLimit: 16 << 20 });
    const { path } = host.addDevice();
    expect(() => host.shareWorker([path])).toThrow(/shared: true/);
  });

  it('a worker DMAs through the IOAS mapping: reads what the process wrote, writes where the process reads, faults off the map', async () => {
    const { host, ictx, ioas, path } = await sharedHost();
    const va = host.mmap(2 * 4096);
    host.mem.write(va, Uint8Array.from({ length: 256 }, (_, i) => i));
    ictx.ioasMap({ ioasId: ioas, userVa: va, length: 2 * 4096, iova: 0x10_0000n });
    const r = await run<{ bytes: Uint8Array; fault: string }>({ init: host.shareWorker([path]), path, kind: 'copy', from: 0x10_0000, to: 0x10_1000, length: 256 });
    expect([...r.bytes]).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect([...host.mem.read(va + 4096, 256)]).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(r.fault).toBe('not-present');
  });

  it('once IOAS_UNMAP returns no worker reaches the old pages, though the process rewrites them at once; detach blocks workers too', async () => {
    const { host, ictx, ioas, vfio, path } = await sharedHost();
    const va = host.mmap(4096);
    const IOVA = 0x20_0000n, POISON = 0xbb;
    const control = new SharedArrayBuffer(64);
    const ctl = new Int32Array(control);
    ictx.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: IOVA });
    const jobs = [0, 1].map(() => run<{ ok: number; faults: number; poisoned: number; other: string }>({
      init: host.shareWorker([path]), path, kind: 'hammer', iova: Number(IOVA), poison: POISON, control,
    }));
    const reads = (slot: number) => Atomics.load(ctl, 1 + slot);
    while (reads(0) === 0 || reads(1) === 0) await new Promise((r) => setTimeout(r, 1));
    for (let round = 0; round < 100; round++) {
      host.mem.write(va, new Uint8Array(4096).fill(0xaa));
      if (round > 0) ictx.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: IOVA });
      const before = [reads(0), reads(1)];
      while (reads(0) < before[0]! + 2 || reads(1) < before[1]! + 2) { /* both read the live mapping */ }
      ictx.ioasUnmap(ioas, IOVA, 4096);
      host.mem.write(va, new Uint8Array(4096).fill(POISON)); // no worker may read this
    }
    host.mem.write(va, new Uint8Array(4096).fill(0xaa));
    ictx.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: IOVA });
    vfio.detach();
    const before = [reads(0), reads(1)];
    while (reads(0) < before[0]! + 2 || reads(1) < before[1]! + 2) { /* the detached function's DMAs */ }
    Atomics.store(ctl, 0, 1);
    for (const r of await Promise.all(jobs)) {
      expect(r.other).toBe('');
      expect(r.poisoned).toBe(0);
      expect(r.ok).toBeGreaterThanOrEqual(200);
      expect(r.faults).toBeGreaterThan(0);
    }
  }, 60_000);

  it('a shared function keeps its context when its vSTE\'s CD goes bad: the blocked DMA is still an event (C_BAD_CD, SMMUv3 7.3), made by the host, not the engine', async () => {
    const host = await createHost({ shared: true, wasm: engineModule('shared'), memoryLimit: 64 << 20 });
    const io = host.iommufd(host.open('/dev/iommu'));
    const ioas = io.ioasAlloc({}).out_ioas_id;
    const arm = host.addDevice({ iommu: 'arm-smmuv3' });
    const vfio = new VfioDevice(host, arm.path);
    const devid = vfio.bind(io.fd);
    const ram = host.mmap(1 << 20);
    io.ioasMap({ flags: uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE, ioas_id: ioas, user_va: ram, length: 1 << 20, iova: 0 });
    const parent = io.hwptAlloc({ dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
    const viommu = io.viommuAlloc({ type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devid, hwpt_id: parent }).out_viommu_id;
    io.vdeviceAlloc({ viommu_id: viommu, dev_id: devid, virt_id: 0x42n });
    const q = io.veventqAlloc({ viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 8 }).out_veventq_fd;
    const put64 = (ipa: number, v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); host.mem.write(ram + ipa, b); };
    // A valid CD (SMMUv3 5.4: T0SZ 16, 4 KiB, V, IPS 48, AA64) at IPA 0x1000 whose tables map IOVA 0x5000.
    put64(0x1000, 16n | (1n << 31n) | (0b101n << 32n) | (1n << 41n));
    put64(0x1008, 0x2000n);
    put64(0x2000, 0x3003n); put64(0x3000, 0x4003n); put64(0x4000, 0x5003n);
    put64(0x5000 + 5 * 8, 0x8000n | 3n | (1n << 10n) | (1n << 6n));
    const ste = host.mmap(4096);
    host.mem.write(ste, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [1n | (5n << 1n) | 0x1000n, 0n] }));
    vfio.attach(io.hwptAlloc({ dev_id: devid, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: 16, data_uptr: ste }).out_hwpt_id);
    expect(arm.dma.read(0x5000n, 1)).toHaveLength(1);
    host.shareWorker([arm.path]); // from now on the function's contexts are never freed
    put64(0x1000, 0n); // the guest breaks the CD, then says CFGI_CD
    const cmd = host.mmap(4096);
    host.mem.write(cmd, uapi.iommu_viommu_arm_smmuv3_invalidate.encode({ cmd: [0x05n | (0x42n << 32n), 0n] }));
    io.hwptInvalidate({ hwpt_id: viommu, data_uptr: cmd, data_type: uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entry_len: 16, entry_num: 1 });
    expect(() => arm.dma.read(0x5000n, 1)).toThrow(DmaFault);
    const H = uapi.iommufd_vevent_header.size, R = uapi.iommu_vevent_arm_smmuv3.size;
    const buf = new Uint8Array(8 * (H + R));
    expect(host.read(q, buf)).toBe(H + R);
    expect(Number(uapi.iommu_vevent_arm_smmuv3.decode(buf, H).evt[0] & 0xffn)).toBe(0x0a);
  });
});
