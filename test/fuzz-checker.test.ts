/**
 * The fuzzers' invariant checker (test/support/fuzz.ts) catches what it
 * claims to: each test breaks the host on purpose, in this test's memory
 * only (a patched method), and expects checkInvariants or the ioctl
 * fuzzer to report it.
 */
import { expect, test } from 'vitest';
import { newHost, AttachedIoas, PAGE } from './support/host.js';
import { checkInvariants, IoctlFuzzer, InvariantError, allObjectsForTest } from './support/fuzz.js';
import { IoPages } from '../host/iommufd/pages.js';
import { Rng } from './reference/rng.js';
import { uapi } from '../host/index.js';

async function attached() {
  const host = await newHost();
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const dev = io.attach({ iommu: 'intel-vtd' });
  const va = host.mmap(4 * PAGE);
  return { host, ictx, ioas, dev, va };
}

test('a translation left behind by IOAS_UNMAP (page table or IOTLB) is caught', async () => {
  const { host, ictx, ioas, dev, va } = await attached();
  ictx.map(ioas, va, 4 * PAGE, 0x100000n);
  checkInvariants(host); // translates the areas' pages: the IOTLB holds them
  const engine = host.engine as unknown as { ptUnmap: (...a: unknown[]) => void };
  engine.ptUnmap = () => {}; // the unmap forgets the page table and the IOTLB
  ictx.unmap(ioas, 0x100000n, 4n * BigInt(PAGE));
  expect(() => checkInvariants(host)).toThrow(/expected a DMA fault, the device got through/);
  void dev;
});

test('a pin never dropped is caught (frame reference count and RLIMIT_MEMLOCK charge)', async () => {
  const { host, ictx, ioas, va } = await attached();
  ictx.map(ioas, va, 4 * PAGE, 0x100000n);
  const real = IoPages.prototype.unpin;
  IoPages.prototype.unpin = function () { /* leak */ };
  try {
    ictx.unmap(ioas, 0x100000n, 4n * BigInt(PAGE));
    expect(() => checkInvariants(host)).toThrow(InvariantError);
  } finally {
    IoPages.prototype.unpin = real;
  }
});

test('a wrong users count is caught (DESTROY would answer wrongly)', async () => {
  const { host, ioas } = await attached();
  const obj = allObjectsForTest(host).find(({ obj: o }) => o.id === ioas)!.obj;
  obj.users++;
  expect(() => checkInvariants(host)).toThrow(/users = 3, the graph needs 2/);
  obj.users--;
  checkInvariants(host);
});

test('the ioctl fuzzer finds an IOAS_UNMAP that leaves translations behind within a few thousand calls', async () => {
  const host = await newHost();
  const rng = new Rng(1);
  const fz = new IoctlFuzzer(host, rng);
  const engine = host.engine as unknown as { ptUnmap: (...a: unknown[]) => void };
  engine.ptUnmap = () => {};
  let found = -1;
  for (let i = 0; i < 5000 && found < 0; i++) {
    expect(fz.step()).toBeUndefined();
    try { checkInvariants(host, { rng }); } catch (e) { if (e instanceof InvariantError) found = i; else throw e; }
  }
  expect(found).toBeGreaterThanOrEqual(0);
});

test('a DMA through a VT-d nested HWPT that goes where its first-stage table and stage 2 do not send it is caught', async () => {
  const { host, ictx, ioas, dev } = await attached();
  const idev = allObjectsForTest(host).find(({ obj }) => obj.type === 'DEVICE')!.obj;
  const devid: number = idev.id;
  const parent = ictx.ioctl(uapi.IOMMUFD_IOCTL.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
  // Guest memory: 8 pages at GPA 1 MiB; a 4-level table at GPAs +0x1000..+0x4000 mapping IOVA 0x5000 -> GPA +0x6000.
  const G = 0x100000;
  const ram = host.mmap(8 * PAGE);
  ictx.map(ioas, ram, 8 * PAGE, BigInt(G));
  const put = (off: number, v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); host.mem.write(ram + off, b); };
  put(0x1000, BigInt(G + 0x2000) | 7n); put(0x2000, BigInt(G + 0x3000) | 7n); put(0x3000, BigInt(G + 0x4000) | 7n); put(0x4000 + 5 * 8, BigInt(G + 0x6000) | 7n);
  host.mem.write(ram + 0x6000, new Uint8Array([1, 2, 3, 4]));
  const data = host.mmap(PAGE);
  host.mem.write(data, uapi.iommu_hwpt_vtd_s1.encode({ flags: 0n, pgtbl_addr: BigInt(G + 0x1000), addr_width: 48, __reserved: 0 }));
  const nested = ictx.ioctl(uapi.IOMMUFD_IOCTL.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: uapi.iommu_hwpt_vtd_s1.size, data_uptr: BigInt(data),
  }).out_hwpt_id;
  dev.attach(nested);
  checkInvariants(host, { full: true });
  expect(dev.dma.translate(0x5000n).pa % PAGE).toBe(0); // the table's leaf is in use
  // The engine sends the DMA to GPA +0x7000 instead of +0x6000: a page stage 2 maps (the bound holds), not the table's.
  const pci = idev.pci;
  const real = pci.dma.translate.bind(pci.dma);
  pci.dma.translate = (iova: bigint, o: unknown) => { const t = real(iova, o); return iova === 0x5000n ? { ...t, pa: t.pa + PAGE } : t; };
  expect(() => checkInvariants(host, { full: true })).toThrow(/the first-stage table and stage 2 give pa/);
  // Past stage 2: a page no area of the parent's IOAS maps.
  pci.dma.translate = (iova: bigint, o: unknown) => { const t = real(iova, o); return iova === 0x5000n ? { ...t, pa: t.pa + 64 * PAGE } : t; };
  expect(() => checkInvariants(host, { full: true })).toThrow(/first-stage table and stage 2 give|no area of the parent's IOAS maps/);
});
