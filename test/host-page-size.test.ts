// A host kernel built with 16 KiB or 64 KiB pages (createHost({ pageSize })),
// as arm64 kernels are (CONFIG_ARM64_16K_PAGES / 64K_PAGES), and what
// follows from it in Linux:
//
// - mm: mmap lengths round up to PAGE_SIZE; VAs, munmap and file offsets are
//   PAGE_SIZE-aligned; a memfd's last page covers its size rounded up.
// - io-pgtable-arm (arm_lpae_restrict_pgsizes): the stage-2 granule is
//   PAGE_SIZE when the SMMU has it (IDR5.GRAN16K / GRAN64K), so an SMMUv3
//   paging domain has pgsize_bitmap 16K | 32M or 64K | 512M.
// - iommufd (io_pagetable.c): iopt_table_add_domain raises iova_alignment to
//   the domain's smallest page and refuses (EINVAL) one larger than
//   PAGE_SIZE ("A iommu_domain must always be able to accept PAGE_SIZE");
//   iopt_check_iova_alignment refuses (EADDRINUSE) to raise it over areas
//   that do not suit it; iopt_check_iova / iopt_alloc_area_pages /
//   iopt_insert_area refuse (EINVAL) an IOVA, a length or a page offset not
//   aligned to iova_alignment. Without a domain iova_alignment is 1.

import { describe, expect, it } from 'vitest';
import { MAP_SHARED, PROT_READ, PROT_WRITE, type Host } from '../host/index.js';
import { armS2Shape, armS2WalkRaw } from './reference/arm_s2.js';
import { ctrlWord, engineMemory, makeEngine } from './support/engine.js';
import { err, MOCK_APERTURE_START, Selftest } from './support/selftest.js';
import { MockPagingTable } from '../host/iommu/mock.js';
import { VirtioGuest, S, DMA_RAM } from './support/virtio-driver.js';
import { virtioIommuAbi as A, GuestRam, VirtioIommu, type GuestMemory } from '../host/index.js';
import { AttachedIoas, dmaFault, expectBytes, expectErrno, Iommufd, memfd, newHost, outcome, pattern, uapi } from './support/host.js';

const RW = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = RW | uapi.IOMMU_IOAS_MAP_FIXED_IOVA;

/** The engine's FMT_ARM_S2 domains: id, levels and sizes word (assembly/layout.ts DOM_*). */
function armDomains(host: Host): { did: number; root: number; levels: number; word: number }[] {
  const e = host.engine, L = e.layout;
  const table = ctrlWord(e, L.CTRL_DOM_TABLE);
  const dv = new DataView(e.bytes.buffer);
  const out = [];
  for (let did = 1; did < 64; did++) {
    const rec = table + did * L.DOM_SIZE;
    const root = dv.getUint32(rec + L.DOM_ROOT, true);
    if (root === 0 || root === 0xffff_ffff || dv.getUint32(rec + L.DOM_FORMAT, true) !== L.FMT_ARM_S2) continue;
    out.push({ did, root: root * 4096, levels: dv.getUint32(rec + L.DOM_LEVELS, true), word: dv.getUint32(rec + L.DOM_SIZES, true) });
  }
  return out;
}

describe('createHost({ pageSize })', () => {
  it('takes 4096 (the default), 16384 and 65536 only', async () => {
    expect((await newHost()).pageSize).toBe(4096);
    for (const pageSize of [8192, 32768, 2048, 0]) await expect(newHost({ pageSize })).rejects.toThrow(RangeError);
  });

  for (const P of [16384, 65536]) {
    it(`${P / 1024} KiB pages: mmap and munmap work in whole pages, memfd pages cover the size rounded up`, async () => {
      const host = await newHost({ pageSize: P });
      const va = host.mmap(1);
      expect(va % P).toBe(0);
      host.mem.write(va + P - 1, new Uint8Array([7])); // the page is mapped whole
      expectErrno(() => host.mem.write(va + P, new Uint8Array([1])), 'EFAULT');
      expectErrno(() => host.munmap(va + 4096, 4096), 'EINVAL');
      expectErrno(() => host.mmap(P, PROT_READ, MAP_SHARED, memfd(host, 2 * P), 4096), 'EINVAL'); // an offset not page aligned
      const fd = memfd(host, 5000);
      const m = host.mmap(P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      host.mem.write(m + P - 8, new Uint8Array([1, 2, 3])); // inside the file's last page, past its size
      const past = host.mmap(P, PROT_READ, MAP_SHARED, fd, P); // a page wholly past the end: SIGBUS on access
      expectErrno(() => host.mem.read(past, 1), 'EFAULT');
      host.munmap(va, 1);
      expectErrno(() => host.mem.read(va, 1), 'EFAULT');
    });
  }
});

describe('iommufd on a 16 KiB-page kernel (io_pagetable.c alignment rules)', () => {
  it('an IOAS without a domain takes a 4 KiB IOAS_MAP (iova_alignment 1)', async () => {
    const host = await newHost({ pageSize: 16384 });
    const s = new AttachedIoas(host);
    const va = host.mmap(16384);
    s.map(va + 4096, 4096, 0x1_1000n);
    expect(s.ictx.iovaRanges(s.ioas).out_iova_alignment).toBe(1n);
  });

  it('with an SMMUv3 domain (16K granule) attached, a 4 KiB map is EINVAL where Linux says, and 16 KiB maps translate', async () => {
    const host = await newHost({ pageSize: 16384 });
    const s = new AttachedIoas(host);
    const dev = s.attach({ iommu: 'arm-smmuv3' });
    expect(s.ictx.iovaRanges(s.ioas).out_iova_alignment).toBe(16384n);
    const va = host.mmap(4 * 16384);
    const fixed = (iova: bigint, at: number, length: number) => outcome(() => s.ictx.map(s.ioas, at, length, iova, FIXED));
    expect(fixed(0x10_0000n, va, 4096)).toBe('EINVAL'); // length (iopt_alloc_area_pages)
    expect(fixed(0x10_1000n, va, 16384)).toBe('EINVAL'); // IOVA (iopt_check_iova)
    expect(fixed(0x10_0000n, va + 4096, 16384)).toBe('EINVAL'); // page offset 4 KiB (iopt_insert_area)
    expect(outcome(() => s.ictx.map(s.ioas, va, 4096, undefined, RW))).toBe('EINVAL'); // an allocated IOVA: the length still
    const data = pattern(3 * 16384, 5);
    host.mem.write(va, data);
    s.map(va, 3 * 16384, 0x10_0000n);
    expectBytes(dev.dma.read(0x10_0000n + 0x1234n, 0x8000), data.subarray(0x1234, 0x1234 + 0x8000));
    dev.dma.write(0x10_4000n + 0x10n, new Uint8Array([0xaa, 0xbb]));
    expectBytes(host.mem.read(va + 0x4010, 2), new Uint8Array([0xaa, 0xbb]));
    // The domain's engine table: a 16K granule, 2 tables concatenated at level 1 (R_DXBSH).
    const [d] = armDomains(host);
    expect(d).toBeDefined();
    expect((d.word >>> host.engine.layout.PT_GRANULE_SHIFT) & 3).toBe(1);
    const mem = engineMemory(host.engine, new Map());
    expect(armS2WalkRaw(mem, BigInt(d.root), armS2Shape(14, 48, 48)!, 0b1100, 0x10_4010n)).toMatchObject({ ok: true, shift: 14, level: 3 });
    // An unmap that cuts the area is ENOENT (iopt_unmap_iova_range), as at any page size; whole areas go and fault.
    expect(outcome(() => s.unmap(0x10_0000n, 4096n))).toBe('ENOENT');
    expect(s.unmap(0x10_0000n, 3n * 16384n)).toBe(3n * 16384n);
    s.map(va + 16384, 16384, 0x10_4000n);
    expect(s.unmap(0x10_4000n, 16384n)).toBe(16384n);
    expect(dmaFault(() => dev.dma.read(0x10_4000n, 1)).reason).toBe('not-present');
  });

  it('attaching the 16K domain over an area not aligned to 16 KiB is EADDRINUSE (iopt_check_iova_alignment); a VT-d domain (4K) attaches', async () => {
    const host = await newHost({ pageSize: 16384 });
    const s = new AttachedIoas(host);
    const va = host.mmap(16384);
    s.map(va, 4096, 0x2_0000n);
    const smmu = s.bind({ iommu: 'arm-smmuv3' });
    expect(outcome(() => smmu.attach(s.ioas))).toBe('EADDRINUSE');
    const vtd = s.attach({ iommu: 'intel-vtd' });
    expect(s.ictx.iovaRanges(s.ioas).out_iova_alignment).toBe(4096n);
    host.mem.write(va, new Uint8Array([9, 8, 7]));
    expectBytes(vtd.dma.read(0x2_0000n, 3), new Uint8Array([9, 8, 7]));
  });
});

describe('a 64 KiB-page kernel: the SMMUv3 domain is a 64K-granule stage 2, end to end', () => {
  it('maps, DMAs both ways, walks as the Arm ARM says, unmaps', async () => {
    const host = await newHost({ pageSize: 65536 });
    const s = new AttachedIoas(host);
    const dev = s.attach({ iommu: 'arm-smmuv3' });
    expect(s.ictx.iovaRanges(s.ioas).out_iova_alignment).toBe(65536n);
    const len = 4 * 65536;
    const va = host.mmap(len);
    const data = pattern(len, 9);
    host.mem.write(va, data);
    s.map(va, len, 0x40_0000n);
    expect(outcome(() => s.ictx.map(s.ioas, va, 16384, 0x80_0000n, FIXED))).toBe('EINVAL');
    expectBytes(dev.dma.read(0x40_0000n + 0xfff0n, 0x20), data.subarray(0xfff0, 0x10010));
    dev.dma.write(0x40_0000n + 3n * 65536n, pattern(65536, 2));
    expectBytes(host.mem.read(va + 3 * 65536, 65536), pattern(65536, 2));
    const [d] = armDomains(host);
    expect((d.word >>> host.engine.layout.PT_GRANULE_SHIFT) & 3).toBe(2);
    expect(d.levels).toBe(3); // 48-bit IPA: levels 1..3, a 64-entry level-1 table
    const mem = engineMemory(host.engine, new Map());
    const w = armS2WalkRaw(mem, BigInt(d.root), armS2Shape(16, 48, 48)!, 0b1100, 0x40_0000n + 0x12345n);
    expect(w).toMatchObject({ ok: true, shift: 16, level: 3, perm: 3 });
    expect(dev.dma.translate(0x40_0000n + 0x12345n).pa).toBe(Number((w as { pa: bigint }).pa));
    expect(s.unmap(0x40_0000n, BigInt(len))).toBe(BigInt(len));
    expect(dmaFault(() => dev.dma.read(0x40_0000n, 1)).reason).toBe('not-present');
  });

  it('a snapshot keeps the page size: the restored host maps in 64 KiB pages and its SMMUv3 domain still translates', async () => {
    const { createHost } = await import('../host/index.js');
    const host = await newHost({ pageSize: 65536 });
    const s = new AttachedIoas(host);
    const dev = s.attach({ iommu: 'arm-smmuv3' });
    const va = host.mmap(65536);
    host.mem.write(va, new Uint8Array([1, 2, 3, 4]));
    s.map(va, 65536, 0x40_0000n);
    const back = await createHost({ restore: host.snapshot() });
    expect(back.pageSize).toBe(65536);
    expect(back.mmap(1) % 65536).toBe(0);
    expectBytes(back.device(dev.handle.path).dma.read(0x40_0000n, 4), new Uint8Array([1, 2, 3, 4]));
    const restored = new Iommufd(back, s.ictx.fd);
    expect(outcome(() => restored.map(s.ioas, va, 4096, 0x80_0000n, FIXED))).toBe('EINVAL');
    expect(restored.map(s.ioas, va, 65536, 0x80_0000n, FIXED)).toBe(0x80_0000n);
    expectBytes(back.device(dev.handle.path).dma.read(0x80_0000n + 2n, 2), new Uint8Array([3, 4]));
  });
});

describe('the mock IOMMU on a 16 KiB kernel: MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2 (selftest.c)', () => {
  it('a mock domain makes the IOAS 8 KiB-aligned; 8 KiB maps check out (MD_CHECK_MAP), 4 KiB ones are EINVAL', async () => {
    const t = new Selftest(await newHost({ pageSize: 16384, iommufdTest: true }));
    const ioas = t.ioasAlloc();
    const { hwptId } = t.mockDomain(ioas);
    expect(new Iommufd(t.host, t.fd).iovaRanges(ioas).out_iova_alignment).toBe(8192n);
    const va = t.host.mmap(4 * 16384);
    const iova = BigInt(MOCK_APERTURE_START) + 0x1_0000n;
    expect(t.ioasMap(ioas, va + 8192, 8192, iova)).toBe(iova);
    t.checkMap(hwptId, va + 8192, iova, 8192);
    expect(t.ioasMap(ioas, va + 16384, 3 * 8192, iova + 0x2000n)).toBe(iova + 0x2000n);
    t.checkMap(hwptId, va + 16384, iova + 0x2000n, 3 * 8192);
    err('EINVAL', () => t.checkMap(hwptId, va + 8192, iova, 4096)); // MD_CHECK_MAP steps in MOCK_IO_PAGE_SIZE
    err('EINVAL', () => t.ioasMap(ioas, va, 4096, iova + 0x10_0000n));
    err('EINVAL', () => t.ioasMap(ioas, va + 4096, 8192, iova + 0x10_0000n)); // page offset 4 KiB
    err('EINVAL', () => t.checkRefs(va, 8192, 1)); // MD_CHECK_REFS goes by PAGE_SIZE
    t.checkRefs(va + 16384, 16384, 1);
  });

  it('the mock table reads an 8 KiB IOPTE dirty when a device wrote either 4 KiB leaf under it', () => {
    const e = makeEngine({ memoryLimit: 64 << 20 });
    const did = e.ptCreate(4, 7);
    const table = new MockPagingTable(e, did, 8192);
    const pfn = e.allocFrames(4, 4);
    table.map(0x10_0000n, pfn * 4096, 16384, 3);
    e.ptSetDirtyTracking(did, true);
    e.ctxSet(1, did, 0);
    expect(e.translate(1, 0x10_1000, 0, 2)).toBe(0); // a write to the second 4 KiB leaf of the first IOPTE
    const out = new Uint8Array(1);
    table.readDirty(0x10_0000n, 16384n, 8192, true, out);
    expect(out[0]).toBe(0b01);
    out[0] = 0;
    table.readDirty(0x10_0000n, 16384n, 8192, false, out);
    expect(out[0]).toBe(0); // cleared
  });
});

// Pins and RLIMIT_MEMLOCK in kernel pages (drivers/iommu/iommufd/pages.c):
// an iopt_pages starts at ALIGN_DOWN(uptr, PAGE_SIZE) and its indexes are
// PAGE_SIZE pages (iopt_alloc_pages); an area's pages are start_byte /
// PAGE_SIZE .. (start_byte + length - 1) / PAGE_SIZE (io_pagetable.c
// iopt_insert_area); npinned goes up by the pages pinned and
// incr_user_locked_vm charges them to user->locked_vm against
// RLIMIT_MEMLOCK >> PAGE_SHIFT, -ENOMEM past it. Each iopt_pages is charged
// for its own pins.
describe('pins and RLIMIT_MEMLOCK count kernel pages (pages.c)', () => {
  const P = 16384;

  it('a 4 KiB area in a 16 KiB page, mapped by a 4K-granule (VT-d) domain, pins and charges the whole page', async () => {
    const host = await newHost({ pageSize: P });
    const s = new AttachedIoas(host);
    const va = host.mmap(2 * P);
    s.map(va + 4096, 4096, 0x2_1000n); // 16 KiB-aligned page, 4 KiB inside it
    s.attach({ iommu: 'intel-vtd' });
    expect(host.lockedPages).toBe(1);
    s.map(va + P, 3 * 4096, 0x3_0000n); // another IOAS_MAP: its own iopt_pages, its own page
    expect(host.lockedPages).toBe(2);
    s.map(va + P + 12288, 4096, 0x4_3000n); // the same physical page again, through a third iopt_pages: charged again
    expect(host.lockedPages).toBe(3);
    expect(s.unmap(0x3_0000n, 3n * 4096n)).toBe(3n * 4096n);
    expect(s.unmap(0x4_3000n, 4096n)).toBe(4096n);
    expect(host.lockedPages).toBe(1);
  });

  for (const size of [16384, 65536]) {
    it(`${size / 1024} KiB pages: the RLIMIT_MEMLOCK limit is rlimit >> PAGE_SHIFT pages; one page past it is ENOMEM and leaves no trace`, async () => {
      // Two pages and a half of bytes: the limit rounds down to 2 pages.
      const host = await newHost({ pageSize: size, credentials: { rlimitMemlock: 2 * size + size / 2 } });
      const s = new AttachedIoas(host);
      s.attach({ iommu: 'intel-vtd' });
      const va = host.mmap(4 * size);
      s.map(va, 4096, 0x10_0000n); // one 4 KiB slice: one page
      s.map(va + size + 4096, 4096, 0x20_0000n); // another page
      expect(host.lockedPages).toBe(2);
      expect(outcome(() => s.ictx.map(s.ioas, va + 2 * size, 4096, 0x30_0000n, FIXED))).toBe('ENOMEM');
      expect(outcome(() => s.ictx.map(s.ioas, va + 2 * size, 4096, undefined, RW))).toBe('ENOMEM');
      expect(host.lockedPages).toBe(2);
      expect(s.ictx.iovaRanges(s.ioas).out_iova_alignment).toBe(4096n);
      s.unmap(0x20_0000n, 4096n);
      s.map(va + 3 * size - 4096, 4096, 0x30_0000n); // room for one page again
      expect(host.lockedPages).toBe(2);
    });
  }

  it('an area straddling two 16 KiB pages pins both: 8 KiB from 12 KiB into a page is pages 0..1', async () => {
    const host = await newHost({ pageSize: P, credentials: { rlimitMemlock: P } });
    const s = new AttachedIoas(host);
    s.attach({ iommu: 'intel-vtd' });
    const va = host.mmap(2 * P);
    expect(outcome(() => s.ictx.map(s.ioas, va + 12288, 8192, 0x1_0000n, FIXED))).toBe('ENOMEM'); // 2 pages > 1
    s.map(va + 12288, 4096, 0x1_0000n);
    expect(host.lockedPages).toBe(1);
  });
});

describe('IOMMU_TEST_CMD on a 16 KiB kernel: ACCESS_PAGES, ACCESS_RW and MD_CHECK_REFS go by PAGE_SIZE (selftest.c)', () => {
  const P = 16384;

  it('an access pinning 4 KiB of an area pins (and charges) its whole page; MD_CHECK_REFS sees it over the range', async () => {
    const t = new Selftest(await newHost({ pageSize: P, iommufdTest: true }));
    const ioas = t.ioasAlloc();
    const va = t.host.mmap(3 * P);
    const iova = 0x40_0000n;
    expect(t.ioasMap(ioas, va, 3 * P, iova)).toBe(iova);
    const access = t.createAccess(ioas, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    t.checkRefs(va, 3 * P, 0);
    // iommufd_test_access_pages: iommufd_access_pin_pages of 4 KiB at a page-aligned IOVA, then
    // iommufd_test_check_pages walks the user's PAGE_SIZE pages from uptr (EBADE on a mismatch).
    const id = t.accessPages(access, iova + BigInt(P), 4096, va + P);
    expect(t.host.lockedPages).toBe(1);
    t.checkRefs(va + P, P, 1); // the whole page: every frame of it holds the pin
    t.checkRefs(va, P, 0);
    t.checkRefs(va + 2 * P, P, 0);
    err('EIO', () => t.checkRefs(va, 3 * P, 0));
    err('EBADE', () => t.accessPages(access, iova + BigInt(P), 4096, va));
    err('EINVAL', () => t.accessPages(access, iova + 4096n, 4096, va + 4096)); // an IOVA not PAGE_SIZE-aligned
    // Two pages from the middle of the first: pages 0 and 1, the second already held.
    const id2 = t.accessPages(access, iova, P + 4096, va);
    expect(t.host.lockedPages).toBe(2);
    t.checkRefs(va, P, 1);
    t.checkRefs(va + P, P, 1); // held by both items, pinned once (pfn_reader reads it from the pinned_pfns xarray)
    t.destroyAccessPages(access, id);
    t.destroyAccessPages(access, id2);
    expect(t.host.lockedPages).toBe(0);
    t.checkRefs(va, 3 * P, 0);
    // ACCESS_RW pins for the copy and unpins after: byte granular, nothing left charged.
    const src = t.host.mmap(P);
    t.host.mem.write(src, new Uint8Array([5, 6, 7]));
    t.accessRw(access, iova + BigInt(P) + 0x3ffen, 3, src, uapi.MOCK_ACCESS_RW_WRITE);
    expectBytes(t.host.mem.read(va + P + 0x3ffe, 3), new Uint8Array([5, 6, 7]));
    expect(t.host.lockedPages).toBe(0);
    t.checkRefs(va, 3 * P, 0);
  });

  it('a mock domain over an 8 KiB area in the second half of a page holds the whole page (MD_CHECK_REFS from its start)', async () => {
    const t = new Selftest(await newHost({ pageSize: P, iommufdTest: true }));
    const ioas = t.ioasAlloc();
    t.mockDomain(ioas);
    const va = t.host.mmap(2 * P);
    const iova = BigInt(MOCK_APERTURE_START) + 0x2000n;
    expect(t.ioasMap(ioas, va + 8192, 8192, iova)).toBe(iova);
    t.checkRefs(va, P, 1);
    t.checkRefs(va + P, P, 0);
    expect(t.host.lockedPages).toBe(1);
    expect(t.ioasUnmap(ioas, iova, 8192)).toBe(8192n);
    t.checkRefs(va, 2 * P, 0);
    expect(t.host.lockedPages).toBe(0);
  });
});

// The virtio-iommu model's page_size_mask, as QEMU's hw/virtio/virtio-iommu.c
// sets it: the `granule` property (4k / 8k / 16k / 64k / host; default host
// since QEMU 9.0, hw_compat_8_2 keeping 4k for older machines) gives
// -(granule), 'host' being qemu_real_host_page_mask(); each host device then
// narrows it (virtio_iommu_set_page_size_mask: cur & new, an empty result
// refused; after granule_frozen a device without the granule is refused),
// `new` being the iommufd container's pgsizes, IOMMU_IOAS_IOVA_RANGES'
// out_iova_alignment (hw/vfio/iommufd.c iommufd_cdev_get_info_iova_range).
describe('virtio-iommu page_size_mask under the host page size (QEMU granule, virtio_iommu_set_page_size_mask)', () => {
  const U64 = (1n << 64n) - 1n;
  const mask = (size: number) => U64 & -BigInt(size);
  async function guest(pageSize: number, iommu: 'intel-vtd' | 'arm-smmuv3', opts: ConstructorParameters<typeof VirtioGuest>[1] = {}) {
    const host = await newHost({ pageSize });
    const g = new VirtioGuest(host, opts);
    const ep = g.addEndpoint(1, host.addDevice({ iommu }));
    g.init(opts);
    return { host, g, ep };
  }
  const probeMask = (g: VirtioGuest) => {
    const p = g.probe(1).props.find((x) => x.type === A.VIRTIO_IOMMU_PROBE_T_PAGE_SIZE_MASK)!;
    return A.virtio_iommu_probe_page_size_mask.decode(p.value).mask;
  };

  for (const P of [4096, 16384, 65536]) {
    it(`granule=host (the default) on a ${P / 1024} KiB host: config and PROBE offer ${P / 1024} KiB and up`, async () => {
      for (const iommu of ['intel-vtd', 'arm-smmuv3'] as const) {
        const { g } = await guest(P, iommu);
        expect(g.configRead64('page_size_mask')).toBe(mask(P));
        expect(probeMask(g)).toBe(mask(P));
      }
    });
  }

  it('granule=4k on a 16 KiB host: kept with a 4K-granule (VT-d) host IOMMU, narrowed to 16 KiB by a 16K SMMUv3 stage 2', async () => {
    const vtd = await guest(16384, 'intel-vtd', { granule: '4k' });
    expect(vtd.g.configRead64('page_size_mask')).toBe(mask(4096));
    const smmu = await guest(16384, 'arm-smmuv3', { granule: '4k' });
    expect(smmu.g.configRead64('page_size_mask')).toBe(mask(16384));
    expect(probeMask(smmu.g)).toBe(mask(16384));
    // A MAP below the granule the guest was given is refused ([VIRTIO] 5.13.6.6.2: S_RANGE); 16 KiB maps.
    expect(smmu.g.attach(1, 1)).toBe(S.OK);
    expect(smmu.g.map(1, 0x10_0000, 0x10_0fff, DMA_RAM.gpa, A.VIRTIO_IOMMU_MAP_F_READ)).toBe(S.RANGE);
    expect(smmu.g.map(1, 0x10_0000, 0x10_3fff, DMA_RAM.gpa, A.VIRTIO_IOMMU_MAP_F_READ)).toBe(S.OK);
    expect(smmu.ep.dma.read(0x10_0000, 4)).toEqual(smmu.host.mem.read(smmu.g.ram.hostAddress(DMA_RAM.gpa)!.va, 4));
  });

  it('8k and 64k granules give -(8K) and -(64K); a mask the endpoint cannot share is refused; granule and pageSizeMask are exclusive', async () => {
    expect((await guest(4096, 'intel-vtd', { granule: '8k' })).g.configRead64('page_size_mask')).toBe(mask(8192));
    expect((await guest(16384, 'arm-smmuv3', { granule: '64k' })).g.configRead64('page_size_mask')).toBe(mask(65536));
    const host = await newHost({ pageSize: 16384 });
    const memory = GuestRam.onHost(host, [{ gpa: 0, size: 0x10000 }]);
    const irq = { set: () => {} };
    // Only 4 KiB pages, behind a host IOMMU whose smallest page is 16 KiB: "incompatible with currently supported mask".
    const dev = new VirtioIommu({ host, memory, irq, pageSizeMask: 0x1000n });
    expect(() => dev.addEndpoint(1, host.addDevice({ iommu: 'arm-smmuv3' }))).toThrow(RangeError);
    dev.addEndpoint(2, host.addDevice({ iommu: 'intel-vtd' })); // a 4K-granule host IOMMU shares 4 KiB
    expect(() => new VirtioIommu({ host, memory, irq, granule: '4k', pageSizeMask: 0x1000n })).toThrow(RangeError);
    expect(() => new VirtioIommu({ host, memory, irq, granule: '32k' as '4k' })).toThrow(RangeError);
  });

  // Bypass (boot-bypass, QEMU's default) maps guest RAM at IOVA = GPA with
  // IOAS_MAP, which takes only pieces aligned to the IOAS's
  // out_iova_alignment (io_pagetable.c iopt_check_iova / iopt_alloc_area:
  // EINVAL otherwise). A RAM region whose end is not on a 16 KiB page is
  // mapped but for its last partial page; cut at 4 KiB, the one piece was
  // refused whole and the region's DMA faulted.
  it('bypass identity maps on a 16 KiB host are cut to the IOAS alignment: a region ending inside a page keeps the rest', async () => {
    const host = await newHost({ pageSize: 16384 });
    const size = 0x11000; // 4 KiB past a 16 KiB multiple
    const va = host.mmap(size); // rounded up to whole 16 KiB pages by mmap
    const memory: GuestMemory = {
      read: (gpa, dst) => { if (gpa < 0 || gpa + dst.length > size) return false; dst.set(host.mem.read(va + gpa, dst.length)); return true; },
      write: (gpa, src) => { if (gpa < 0 || gpa + src.length > size) return false; host.mem.write(va + gpa, src); return true; },
      hostAddress: (gpa) => (gpa >= 0 && gpa < size ? { va: va + gpa, length: size - gpa } : null),
      regions: () => [{ gpa: 0, size }],
    };
    host.mem.write(va + 0xc000, new Uint8Array([1, 2, 3, 4]));
    const dev = new VirtioIommu({ host, memory, irq: { set: () => {} } });
    // An SMMUv3 under a 16 KiB kernel: 16 KiB stage-2 pages, so the IOAS takes 16 KiB pieces (a VT-d domain's 4 KiB would take the region whole).
    const ep = dev.addEndpoint(1, host.addDevice({ iommu: 'arm-smmuv3' }));
    expect(dev.bypass).toBe(true);
    expect(ep.dma.read(0xc000, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(dmaFault(() => ep.dma.read(0x10000, 4)).iova, 'the partial last page stays out').toBe(0x10000n);
  });

  it('once the guest has read the config (QEMU: granule_frozen at machine-init-done), an endpoint without the granule is refused and the mask stays', async () => {
    const { host, g } = await guest(16384, 'intel-vtd', { granule: '4k' });
    expect(g.configRead64('page_size_mask')).toBe(mask(4096));
    expect(() => g.addEndpoint(2, host.addDevice({ iommu: 'arm-smmuv3' }))).toThrow(/frozen granule/);
    g.addEndpoint(3, host.addDevice({ iommu: 'intel-vtd' }));
    expect(g.configRead64('page_size_mask')).toBe(mask(4096));
  });
});
