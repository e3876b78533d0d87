/**
 * Ported from tools/testing/selftests/iommu/iommufd.c,
 * FIXTURE(iommufd_mock_domain) with its variants one_domain, two_domains,
 * one_domain_hugepage and two_domains_hugepage: an IOAS with 1 or 2 mock
 * devices attached (IOMMU_TEST_OP_MOCK_DOMAIN), whose domains
 * IOMMU_TEST_OP_MD_CHECK_MAP reads back through the engine's walker (with
 * the one_domain_file variants of the newer selftest, IOAS_MAP_FILE of a
 * memfd), and
 * FIXTURE(iommufd_dirty_tracking) with its five buffer sizes (128 KiB to
 * 256 MiB), whose bitmaps have a bit per 2 KiB mock IOPTE. Each test names
 * its TEST_F; the assertions are the selftest's.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapi } from '../host/index.js';
import { Selftest, err, PAGE_SIZE, MOCK_PAGE_SIZE, HUGEPAGE_SIZE, BUFFER_SIZE, MOCK_APERTURE_START } from './support/selftest.js';
import { MAP_PRIVATE, PROT_READ, PROT_WRITE } from '../host/kernel/mm.js';
import { Iommufd, VfioDevice } from '../host/client.js';

interface Variant { name: string; mockDomains: number; hugepages: boolean; file: boolean }
const VARIANTS: Variant[] = [
  { name: 'one_domain', mockDomains: 1, hugepages: false, file: false },
  { name: 'two_domains', mockDomains: 2, hugepages: false, file: false },
  { name: 'one_domain_hugepage', mockDomains: 1, hugepages: true, file: false },
  { name: 'two_domains_hugepage', mockDomains: 2, hugepages: true, file: false },
  // The IOMMU_IOAS_MAP_FILE variants (memfd_mmap, test_ioctl_ioas_map_file).
  { name: 'one_domain_file', mockDomains: 1, hugepages: false, file: true },
  { name: 'one_domain_file_hugepage', mockDomains: 1, hugepages: true, file: true },
];

describe.each(VARIANTS)('FIXTURE_VARIANT(iommufd_mock_domain, $name)', (variant) => {
  let t: Selftest;
  let ioasId: number;
  let hwptIds: number[], stdevIds: number[], idevIds: number[];
  let mmapBufSize: number;

  beforeEach(async () => {
    t = await Selftest.create();
    ioasId = t.ioasAlloc();
    hwptIds = [0, 0]; stdevIds = [0, 0]; idevIds = [0, 0];
    for (let i = 0; i !== variant.mockDomains; i++) {
      ({ stdevId: stdevIds[i], hwptId: hwptIds[i], idevId: idevIds[i] } = t.mockDomain(ioasId));
    }
    // MAP_HUGETLB | MAP_POPULATE: this host's anonymous mappings of 2 MiB or more are 2 MiB-aligned, contiguous and populated.
    mmapBufSize = variant.hugepages ? HUGEPAGE_SIZE * 2 : PAGE_SIZE * 8;
  });
  afterEach(() => t.teardown());

  /** check_mock_iova: the user pages made it to every mock domain. */
  const checkMockIova = (va: number, iova: bigint, length: number) => {
    t.checkMap(hwptIds[0], va, iova, length);
    if (hwptIds[1]) t.checkMap(hwptIds[1], va, iova, length);
  };

  it('TEST_F(iommufd_mock_domain, basic) (test_basic_file)', () => {
    if (!variant.file) return;
    const bufSize = mmapBufSize;
    // Simple one page map
    const iova = t.ioasMapFile(ioasId, t.mfd, 0, PAGE_SIZE);
    checkMockIova(t.mfdBuffer, iova, PAGE_SIZE);
    const { mfd } = t.memfdMmap(bufSize);
    err('EINVAL', () => t.ioasMapFile(ioasId, mfd, 0, bufSize + 1));
    t.host.ftruncate(mfd, 0);
    err('EINVAL', () => t.ioasMapFile(ioasId, mfd, 0, bufSize));
    t.host.close(mfd);
  });

  it('TEST_F(iommufd_mock_domain, basic) (test_basic_mmap)', () => {
    if (variant.file) return;
    const bufSize = mmapBufSize;
    // Simple one page map
    const iova = t.ioasMap(ioasId, t.buffer, PAGE_SIZE);
    checkMockIova(t.buffer, iova, PAGE_SIZE);
    const buf = t.mmap(bufSize);
    // EFAULT half way through mapping
    t.host.munmap(buf + bufSize / 2, bufSize / 2);
    err('EFAULT', () => t.ioasMap(ioasId, buf, bufSize));
    // EFAULT on first page
    t.host.munmap(buf, bufSize / 2);
    err('EFAULT', () => t.ioasMap(ioasId, buf, bufSize));
  });

  // The selftest maps /proc/self/exe MAP_PRIVATE; a memfd is this host's file.
  it('TEST_F(iommufd_mock_domain, ro_unshare)', () => {
    const mfd = t.host.memfdCreate('exe');
    t.host.ftruncate(mfd, PAGE_SIZE);
    const buf = t.host.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd);
    t.host.close(mfd);
    // There have been lots of changes to the "unshare" mechanism in get_user_pages(), make sure it works right.
    // The write to the page after we map it for reading should not change the assigned PFN.
    const iova = t.ioasMap(ioasId, buf, PAGE_SIZE, undefined, uapi.IOMMU_IOAS_MAP_READABLE);
    checkMockIova(buf, iova, PAGE_SIZE);
    t.host.mem.write(buf, new Uint8Array(PAGE_SIZE).fill(1));
    checkMockIova(buf, iova, PAGE_SIZE);
    t.host.munmap(buf, PAGE_SIZE);
  });

  it('TEST_F(iommufd_mock_domain, all_aligns)', () => {
    const testStep = variant.hugepages ? mmapBufSize / 16 : MOCK_PAGE_SIZE;
    const bufSize = mmapBufSize;
    const file = variant.file ? t.memfdMmap(bufSize) : null;
    const buf = file ? file.va : t.mmap(bufSize);
    t.checkRefs(buf, bufSize, 0);
    // Map every combination of page size and alignment within a big region, less for hugepage case as it takes so long to finish.
    for (let start = 0; start < bufSize; start += testStep) {
      for (let end = variant.hugepages ? bufSize : start + MOCK_PAGE_SIZE; end < bufSize; end += MOCK_PAGE_SIZE) {
        const length = end - start;
        const iova = file ? t.ioasMapFile(ioasId, file.mfd, start, length) : t.ioasMap(ioasId, buf + start, length);
        checkMockIova(buf + start, iova, length);
        const first = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
        t.checkRefs(buf + first, Math.floor(end / PAGE_SIZE) * PAGE_SIZE - first, 1);
        t.ioasUnmap(ioasId, iova, length);
      }
    }
    t.checkRefs(buf, bufSize, 0);
    t.host.munmap(buf, bufSize);
    if (file) t.host.close(file.mfd);
  });

  it('TEST_F(iommufd_mock_domain, all_aligns_copy)', () => {
    const testStep = variant.hugepages ? mmapBufSize / 16 : MOCK_PAGE_SIZE;
    const bufSize = mmapBufSize;
    const file = variant.file ? t.memfdMmap(bufSize) : null;
    const buf = file ? file.va : t.mmap(bufSize);
    t.checkRefs(buf, bufSize, 0);
    for (let start = 0; start < bufSize; start += testStep) {
      for (let end = variant.hugepages ? bufSize : start + MOCK_PAGE_SIZE; end < bufSize; end += MOCK_PAGE_SIZE) {
        const length = end - start;
        const iova = file ? t.ioasMapFile(ioasId, file.mfd, start, length) : t.ioasMap(ioasId, buf + start, length);
        // Add and destroy a domain while the area exists
        const oldId = hwptIds[1];
        const mock = t.mockDomain(ioasId);
        hwptIds[1] = mock.hwptId;
        checkMockIova(buf + start, iova, length);
        const first = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
        t.checkRefs(buf + first, Math.floor(end / PAGE_SIZE) * PAGE_SIZE - first, 1);
        t.destroy(mock.stdevId);
        hwptIds[1] = oldId;
        t.ioasUnmap(ioasId, iova, length);
      }
    }
    t.checkRefs(buf, bufSize, 0);
    t.host.munmap(buf, bufSize);
    if (file) t.host.close(file.mfd);
  });

  it('TEST_F(iommufd_mock_domain, user_copy)', () => {
    const copy = (srcIoasId: number, srcIova: bigint) => t.ioctl(uapi.IOMMU_IOAS_COPY, uapi.iommu_ioas_copy, {
      // The newer selftest's flags: IOAS_COPY needs READABLE or WRITEABLE.
      flags: uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE,
      dst_ioas_id: ioasId, dst_iova: BigInt(MOCK_APERTURE_START), length: BigInt(BUFFER_SIZE), src_ioas_id: srcIoasId, src_iova: srcIova,
    });
    const buf = variant.file ? t.mfdBuffer : t.buffer;
    const mapSrc = (ioas: number) => (variant.file ? t.ioasMapFile(ioas, t.mfd, 0, BUFFER_SIZE) : t.ioasMap(ioas, buf, BUFFER_SIZE));
    // Pin the pages in an IOAS with no domains then copy to an IOAS with domains
    const otherIoas = t.ioasAlloc();
    let srcIova = mapSrc(otherIoas);
    const access = t.createAccess(otherIoas, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    t.accessPages(access, srcIova, BUFFER_SIZE, buf);
    copy(otherIoas, srcIova);
    checkMockIova(buf, BigInt(MOCK_APERTURE_START), BUFFER_SIZE);
    // Now replace the ioas with a new one
    const newIoas = t.ioasAlloc();
    srcIova = mapSrc(newIoas);
    t.accessReplaceIoas(access, newIoas);
    // Destroy the old ioas and cleanup copied mapping
    t.ioasUnmap(ioasId, MOCK_APERTURE_START, BUFFER_SIZE);
    t.destroy(otherIoas);
    // Then run the same test again with the new ioas
    const id = t.accessPages(access, srcIova, BUFFER_SIZE, buf);
    copy(newIoas, srcIova);
    checkMockIova(buf, BigInt(MOCK_APERTURE_START), BUFFER_SIZE);
    t.destroyAccessPages(access, id);
    t.destroyAccess(access);
    t.destroy(newIoas);
  });

  it('TEST_F(iommufd_mock_domain, replace)', () => {
    const other = t.ioasAlloc();
    t.mockDomainReplace(stdevIds[0], other);
    // Replacing the IOAS causes the prior HWPT to be deallocated, thus we should get enoent when we try to use it.
    if (variant.mockDomains === 1) err('ENOENT', () => t.mockDomainReplace(stdevIds[0], hwptIds[0]));
    t.mockDomainReplace(stdevIds[0], other);
    if (variant.mockDomains >= 2) {
      t.mockDomainReplace(stdevIds[0], hwptIds[1]);
      t.mockDomainReplace(stdevIds[0], hwptIds[1]);
      t.mockDomainReplace(stdevIds[0], hwptIds[0]);
    }
    t.mockDomainReplace(stdevIds[0], ioasId);
    t.destroy(other);
  });

  it('TEST_F(iommufd_mock_domain, alloc_hwpt)', () => {
    for (let i = 0; i !== variant.mockDomains; i++) {
      err('EOPNOTSUPP', () => t.hwptAlloc(idevIds[i], ioasId, ~uapi.IOMMU_HWPT_ALLOC_NEST_PARENT >>> 0));
      const h0 = t.hwptAlloc(idevIds[i], ioasId, 0);
      const h1 = t.hwptAlloc(idevIds[i], ioasId, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
      // Do a hw_pagetable rotation test
      t.mockDomainReplace(stdevIds[i], h0);
      err('EBUSY', () => t.destroy(h0));
      t.mockDomainReplace(stdevIds[i], h1);
      err('EBUSY', () => t.destroy(h1));
      t.mockDomainReplace(stdevIds[i], ioasId);
      t.destroy(h1);
      const { stdevId } = t.mockDomain(h0);
      t.destroy(stdevId);
      t.destroy(h0);
    }
  });
});

interface DirtyVariant { name: string; bufferSize: number }
const DIRTY_VARIANTS: DirtyVariant[] = [
  { name: 'domain_dirty128k', bufferSize: 128 * 1024 }, // one u32 index bitmap
  { name: 'domain_dirty256k', bufferSize: 256 * 1024 }, // one u64 index bitmap
  { name: 'domain_dirty640k', bufferSize: 640 * 1024 }, // two u64 index and trailing end bitmap
  { name: 'domain_dirty128M', bufferSize: 128 * 1024 * 1024 }, // 4K bitmap (128M IOVA range)
  { name: 'domain_dirty256M', bufferSize: 256 * 1024 * 1024 }, // 8K bitmap (256M IOVA range)
];

describe.each(DIRTY_VARIANTS)('FIXTURE_VARIANT(iommufd_dirty_tracking, $name)', (variant) => {
  let t: Selftest;
  let ioasId: number, hwptId: number, stdevId: number, idevId: number;
  const bufferSize = variant.bufferSize;
  const pageSize = MOCK_PAGE_SIZE;
  const bitmapSize = bufferSize / pageSize / 8;
  let buffer: number, bitmap: number;

  beforeEach(async () => {
    t = await Selftest.create(Math.max(64 << 20, 2 * bufferSize + (32 << 20)));
    // posix_memalign(HUGEPAGE_SIZE) + mmap(MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    buffer = t.mmap(bufferSize);
    // Provision with an extra (MOCK_PAGE_SIZE) for the unaligned case
    bitmap = t.mmap(bitmapSize + MOCK_PAGE_SIZE);
    ioasId = t.ioasAlloc();
    ({ stdevId, hwptId, idevId } = t.mockDomain(ioasId));
  });
  afterEach(() => {
    t.host.munmap(buffer, bufferSize);
    t.host.munmap(bitmap, bitmapSize + MOCK_PAGE_SIZE);
    t.teardown();
  });

  it('TEST_F(iommufd_dirty_tracking, enforce_dirty)', () => {
    void stdevId; void hwptId;
    // Regular case
    const devFlags = uapi.MOCK_FLAGS_DEVICE_NO_DIRTY;
    const hwpt = t.hwptAlloc(idevId, ioasId, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    const { stdevId: st } = t.mockDomain(hwpt);
    err('EINVAL', () => t.mockDomainFlags(hwpt, devFlags));
    t.destroy(st);
    t.destroy(hwpt);
    // IOMMU device does not support dirty tracking
    const ioas2 = t.ioasAlloc();
    const nd = t.mockDomainFlags(ioas2, devFlags);
    err('EOPNOTSUPP', () => t.hwptAlloc(nd.idevId, ioas2, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING));
    t.destroy(nd.stdevId);
  });

  const setDirtyTracking = (hwpt: number, enable: boolean) => t.ioctl(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, uapi.iommu_hwpt_set_dirty_tracking, {
    hwpt_id: hwpt, flags: enable ? uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
  });

  it('TEST_F(iommufd_dirty_tracking, set_dirty_tracking)', () => {
    const hwpt = t.hwptAlloc(idevId, ioasId, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    const { stdevId: st } = t.mockDomain(hwpt);
    setDirtyTracking(hwpt, true);
    setDirtyTracking(hwpt, false);
    t.destroy(st);
    t.destroy(hwpt);
  });

  it('TEST_F(iommufd_dirty_tracking, device_dirty_capability)', () => {
    const hwpt = t.hwptAlloc(idevId, ioasId, 0);
    const { stdevId: st } = t.mockDomain(hwpt);
    // test_cmd_get_hw_capabilities
    const caps = t.ioctl(uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info, { dev_id: idevId }).out_capabilities;
    expect(caps & BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING)).toBe(BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING));
    t.destroy(st);
    t.destroy(hwpt);
  });

  const getDirtyBitmap = (hwpt: number, length: number, iova: number, ps: number, bm: number, flags: number) =>
    t.ioctl(uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, uapi.iommu_hwpt_get_dirty_bitmap, {
      hwpt_id: hwpt, flags, iova: BigInt(iova), length: BigInt(length), page_size: BigInt(ps), data: BigInt(bm),
    });
  const setDirty = (hwpt: number, length: number, iova: number, ps: number, bm: number) =>
    t.testCmd('dirty', uapi.IOMMU_TEST_OP_DIRTY, {
      id: hwpt, 'dirty.iova': BigInt(iova), 'dirty.length': BigInt(length), 'dirty.page_size': BigInt(ps), 'dirty.uptr': BigInt(bm),
    })['dirty.out_nr_dirty'];
  /** A bitmap of the user's at bm: bit i. */
  const testBit = (bytes: Uint8Array, i: number) => (bytes[i >> 3] & (1 << (i & 7))) !== 0;

  /**
   * _test_mock_dirty_bitmaps (iommufd_utils.h): mark every pteset-th bit
   * dirty with IOMMU_TEST_OP_DIRTY (nbits / pteset of them found mapped),
   * read them back with HWPT_GET_DIRTY_BITMAP (the npte bits of each marked
   * IOPTE set, the rest clear), then read again (all clear, or the same
   * with NO_CLEAR).
   */
  function testMockDirtyBitmaps(hwpt: number, length: number, iova: number, ps: number, ptePageSize: number, bm: number, size: number, flags: number): void {
    const npte = ptePageSize / ps, pteset = 2 * npte;
    const nbits = size * 8;
    const nr = Math.floor(nbits / pteset) || 1;
    const set = new Uint8Array(size);
    for (let i = 0; i < nbits; i += pteset) set[i >> 3] |= 1 << (i & 7);
    t.host.mem.write(bm, set);
    expect(setDirty(hwpt, length, iova, ps, bm)).toBe(BigInt(nr));
    // Expect all even bits as dirty in the user bitmap
    t.host.mem.write(bm, new Uint8Array(size));
    getDirtyBitmap(hwpt, length, iova, ps, bm, flags);
    let got = t.host.mem.read(bm, size);
    for (let i = 0; i < nbits; i += pteset) {
      for (let j = 0; j < pteset; j++) if (testBit(got, i + j) !== j < npte) expect.fail(`bit ${i + j} after the first read`);
    }
    t.host.mem.write(bm, new Uint8Array(size));
    getDirtyBitmap(hwpt, length, iova, ps, bm, flags);
    // It as read already -- expect all zeroes
    got = t.host.mem.read(bm, size);
    const noClear = (flags & uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0;
    for (let i = 0; i < nbits; i += pteset) {
      for (let j = 0; j < pteset; j++) if (testBit(got, i + j) !== (j < npte && noClear)) expect.fail(`bit ${i + j} after the second read`);
    }
  }

  for (const [name, flags] of [['get_dirty_bitmap', 0], ['get_dirty_bitmap_no_clear', uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR]] as const) {
    it(`TEST_F(iommufd_dirty_tracking, ${name})`, () => {
      const ioas = t.ioasAlloc();
      t.ioasMap(ioas, buffer, bufferSize, MOCK_APERTURE_START);
      const hwpt = t.hwptAlloc(idevId, ioas, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
      const { stdevId: st } = t.mockDomain(hwpt);
      setDirtyTracking(hwpt, true);
      // pte_page_size: MOCK_PAGE_SIZE, the default mock format's IOPTE
      testMockDirtyBitmaps(hwpt, bufferSize, MOCK_APERTURE_START, pageSize, MOCK_PAGE_SIZE, bitmap, bitmapSize, flags);
      // PAGE_SIZE unaligned bitmap
      testMockDirtyBitmaps(hwpt, bufferSize, MOCK_APERTURE_START, pageSize, MOCK_PAGE_SIZE, bitmap + MOCK_PAGE_SIZE, bitmapSize, flags);
      t.destroy(st);
      t.destroy(hwpt);
    });
  }

  // Not ports: the DIRTY op's errnos, and a device write through a mock domain.
  it.runIf(variant.name === 'domain_dirty128k')('IOMMU_TEST_OP_DIRTY: EINVAL without tracking or with bad arguments, ENOENT without a HWPT', () => {
    const ioas = t.ioasAlloc();
    t.ioasMap(ioas, buffer, bufferSize, MOCK_APERTURE_START);
    const hwpt = t.hwptAlloc(idevId, ioas, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    const { stdevId: st } = t.mockDomain(hwpt);
    const dirty = (fields: Record<string, number | bigint>) => t.testCmd('dirty', uapi.IOMMU_TEST_OP_DIRTY, {
      id: hwpt, 'dirty.iova': BigInt(MOCK_APERTURE_START), 'dirty.length': BigInt(bufferSize), 'dirty.page_size': BigInt(PAGE_SIZE),
      'dirty.uptr': BigInt(bitmap), ...fields,
    });
    // Tracking not enabled: EINVAL (mock->flags & MOCK_DIRTY_TRACK)
    err('EINVAL', () => dirty({}));
    setDirtyTracking(hwpt, true);
    err('EINVAL', () => dirty({ 'dirty.page_size': 0n }));
    err('EINVAL', () => dirty({ 'dirty.length': 0n }));
    err('EINVAL', () => dirty({ 'dirty.uptr': 0n }));
    err('EINVAL', () => dirty({ 'dirty.iova': BigInt(MOCK_APERTURE_START + 1) }));
    err('ENOENT', () => dirty({ id: 0 }));
    // The fixture's automatic domain has no dirty tracking: EINVAL.
    err('EINVAL', () => dirty({ id: hwptId }));
    void stdevId;
    t.destroy(st);
    t.destroy(hwpt);
  });

  it.runIf(variant.name === 'domain_dirty128k')('a device write through a mock domain dirties its 4 KiB leaf: both 2 KiB IOPTEs read dirty', () => {
    const ioas = t.ioasAlloc();
    t.ioasMap(ioas, buffer, bufferSize, MOCK_APERTURE_START);
    const hwpt = t.hwptAlloc(idevId, ioas, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    const iommufd = new Iommufd(t.host, t.fd);
    const dev = t.host.addDevice({ iommu: 'mock' });
    const vfio = new VfioDevice(t.host, dev.path);
    vfio.bind(iommufd);
    vfio.attach(hwpt);
    setDirtyTracking(hwpt, true);
    dev.dma.write(MOCK_APERTURE_START + 3 * PAGE_SIZE + 100, new Uint8Array([1]));
    t.host.mem.write(bitmap, new Uint8Array(bitmapSize));
    getDirtyBitmap(hwpt, bufferSize, MOCK_APERTURE_START, MOCK_PAGE_SIZE, bitmap, 0);
    const got = t.host.mem.read(bitmap, bitmapSize);
    const expected = new Uint8Array(bitmapSize);
    expected[0] = 0b1100_0000; // 2 KiB IOPTEs 6 and 7: the 4th 4 KiB page
    expect(got).toEqual(expected);
    t.host.close(vfio.fd);
    t.destroy(hwpt);
  });
});
