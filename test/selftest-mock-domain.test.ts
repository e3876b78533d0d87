/**
 * Ported from tools/testing/selftests/iommu/iommufd.c,
 * FIXTURE(iommufd_mock_domain) with its variants one_domain, two_domains,
 * one_domain_hugepage and two_domains_hugepage: an IOAS with 1 or 2 mock
 * devices attached (IOMMU_TEST_OP_MOCK_DOMAIN), whose domains
 * IOMMU_TEST_OP_MD_CHECK_MAP reads back through the engine's walker (with
 * the one_domain_file variants of the newer selftest, IOAS_MAP_FILE of a
 * memfd), and
 * FIXTURE(iommufd_dirty_tracking) for the tests that do not read a bitmap
 * at the mock's 2 KiB granule. Each test names its TEST_F; the assertions
 * are the selftest's.
 *
 * Not ported: ro_unshare (a MAP_PRIVATE mapping of /proc/self/exe), and
 * get_dirty_bitmap / get_dirty_bitmap_no_clear, whose bitmaps have a bit per
 * MOCK_PAGE_SIZE (2 KiB) page: HWPT_GET_DIRTY_BITMAP here takes page sizes
 * of 4 KiB and up (the engine keeps dirty bits per 4 KiB leaf at least).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapi } from '../host/index.js';
import { Selftest, err, PAGE_SIZE, MOCK_PAGE_SIZE, HUGEPAGE_SIZE, BUFFER_SIZE, MOCK_APERTURE_START } from './support/selftest.js';

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

describe('FIXTURE(iommufd_dirty_tracking) (variant domain_dirty128k)', () => {
  let t: Selftest;
  let ioasId: number, hwptId: number, stdevId: number, idevId: number;
  const bufferSize = 128 * 1024;
  let buffer: number;

  beforeEach(async () => {
    t = await Selftest.create();
    buffer = t.mmap(bufferSize);
    ioasId = t.ioasAlloc();
    ({ stdevId, hwptId, idevId } = t.mockDomain(ioasId));
  });
  afterEach(() => {
    t.host.munmap(buffer, bufferSize);
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

  // Not a port: IOMMU_TEST_OP_DIRTY (test_mock_dirty_bitmaps' first step) with a
  // 4 KiB bitmap page, read back by HWPT_GET_DIRTY_BITMAP.
  it('IOMMU_TEST_OP_DIRTY marks the IOPTEs of the set bits; GET_DIRTY_BITMAP reads and clears them', () => {
    const ioas = t.ioasAlloc();
    t.ioasMap(ioas, buffer, bufferSize, MOCK_APERTURE_START);
    const hwpt = t.hwptAlloc(idevId, ioas, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    const { stdevId: st } = t.mockDomain(hwpt);
    const nbits = bufferSize / PAGE_SIZE; // 32
    const bitmap = t.mmap(PAGE_SIZE);
    const dirty = (fields: Record<string, number | bigint>) => t.testCmd('dirty', uapi.IOMMU_TEST_OP_DIRTY, {
      id: hwpt, 'dirty.iova': BigInt(MOCK_APERTURE_START), 'dirty.length': BigInt(bufferSize), 'dirty.page_size': BigInt(PAGE_SIZE),
      'dirty.uptr': BigInt(bitmap), ...fields,
    });
    // Tracking not enabled: EINVAL (mock->flags & MOCK_DIRTY_TRACK)
    err('EINVAL', () => dirty({}));
    setDirtyTracking(hwpt, true);
    // Argument checks
    err('EINVAL', () => dirty({ 'dirty.page_size': 0n }));
    err('EINVAL', () => dirty({ 'dirty.length': 0n }));
    err('EINVAL', () => dirty({ 'dirty.uptr': 0n }));
    err('EINVAL', () => dirty({ 'dirty.iova': BigInt(MOCK_APERTURE_START + 1) }));
    err('ENOENT', () => dirty({ id: 0 }));
    // Every other page (test_mock_dirty_bitmaps sets bits i % pteset == 0)
    const set = new Uint8Array(nbits / 8);
    for (let i = 0; i < nbits; i += 2) set[i >> 3] |= 1 << (i & 7);
    t.host.mem.write(bitmap, set);
    expect(dirty({})['dirty.out_nr_dirty']).toBe(BigInt(nbits / 2));
    // HWPT_GET_DIRTY_BITMAP gives them back, and clears them
    const read = () => {
      t.host.mem.write(bitmap, new Uint8Array(8));
      t.ioctl(uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, uapi.iommu_hwpt_get_dirty_bitmap, {
        hwpt_id: hwpt, iova: BigInt(MOCK_APERTURE_START), length: BigInt(bufferSize), page_size: BigInt(PAGE_SIZE), data: BigInt(bitmap),
      });
      return t.host.mem.read(bitmap, nbits / 8);
    };
    expect(read()).toEqual(set);
    expect(read()).toEqual(new Uint8Array(nbits / 8));
    t.destroy(st);
    t.destroy(hwpt);
  });
});
