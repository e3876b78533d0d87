/**
 * Ported from tools/testing/selftests/iommu/iommufd.c, FIXTURE(iommufd_viommu)
 * with its variants no_viommu and mock_viommu: a mock device on an IOAS, a
 * NEST_PARENT mock HWPT, a vIOMMU of IOMMU_VIOMMU_TYPE_SELFTEST on it and a
 * nested HWPT (IOMMU_HWPT_DATA_SELFTEST) made on the vIOMMU. Each test names
 * its TEST_F; the assertions are the selftest's, through the helpers of
 * iommufd_utils.h written below as the C ones are (test_cmd_xxx succeeds or
 * fails the test, test_err_xxx is EXPECT_ERRNO). The describe block after
 * the fixture checks what the selftest leaves out (check order, failed calls
 * leaving nothing behind), each naming the kernel function it follows.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapi } from '../host/index.js';
import { MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ, PROT_WRITE } from '../host/kernel/mm.js';
import { POLLIN } from '../host/kernel/file.js';
import { SysError } from '../host/uapi/errno.js';
import { Selftest, err, PAGE_SIZE, MOCK_APERTURE_START, UINT64_MAX } from './support/selftest.js';

const HDR = uapi.iommufd_vevent_header.size;
const EVT = uapi.iommu_viommu_event_selftest.size;

/** The iommufd_utils.h helpers of the vIOMMU tests, over a Selftest. */
class ViommuSelftest extends Selftest {
  static async make(): Promise<ViommuSelftest> {
    const base = await Selftest.create();
    return Object.setPrototypeOf(base, ViommuSelftest.prototype) as ViommuSelftest;
  }

  /** Driver data put in user memory: its address (0 for none). */
  userData(bytes: Uint8Array | null): bigint {
    if (!bytes) return 0n;
    const va = this.mmap(PAGE_SIZE);
    this.host.mem.write(va, bytes);
    return BigInt(va);
  }

  /** _test_cmd_viommu_alloc: the vIOMMU id; with data, the struct as the kernel wrote it back. */
  viommuAlloc(devId: number, hwptId: number, type: number, data: Uint8Array | null = null, len = data?.length ?? 0):
    { id: number; out: Uint8Array | null } {
    const uptr = this.userData(data);
    const id = this.ioctl(uapi.IOMMU_VIOMMU_ALLOC, uapi.iommu_viommu_alloc, {
      dev_id: devId, hwpt_id: hwptId, type, data_len: len, data_uptr: uptr,
    }).out_viommu_id;
    return { id, out: data ? this.host.mem.read(Number(uptr), data.length) : null };
  }

  /** _test_cmd_hwpt_alloc (nested, iopf): the HWPT id. */
  hwptAllocNested(devId: number, ptId: number, flags: number, dataType: number, data: Uint8Array | null, len = data?.length ?? 0, faultId = 0): number {
    return this.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, {
      dev_id: devId, pt_id: ptId, flags, data_type: dataType, data_len: len, data_uptr: this.userData(data), fault_id: faultId,
    }).out_hwpt_id;
  }

  /** _test_cmd_vdevice_alloc */
  vdeviceAlloc(viommuId: number, devId: number, virtId: number | bigint): number {
    return this.ioctl(uapi.IOMMU_VDEVICE_ALLOC, uapi.iommu_vdevice_alloc, { viommu_id: viommuId, dev_id: devId, virt_id: BigInt(virtId) }).out_vdevice_id;
  }

  /** _test_cmd_veventq_alloc: depth 2. */
  veventqAlloc(viommuId: number, type: number): { id: number; fd: number } {
    const r = this.ioctl(uapi.IOMMU_VEVENTQ_ALLOC, uapi.iommu_veventq_alloc, { viommu_id: viommuId, type, veventq_depth: 2 });
    return { id: r.out_veventq_id, fd: r.out_veventq_fd };
  }

  /** _test_cmd_trigger_vevents: n TRIGGER_VEVENTs. */
  triggerVevents(devId: number, n: number): void {
    while (n--) this.testCmd('trigger_vevent', uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, { 'trigger_vevent.dev_id': devId });
  }

  /**
   * _test_cmd_read_vevents: poll, one read of n records' room (EFAULT if
   * it returns nothing), then per record: LOST_EVENTS or a gap in the
   * sequence EOVERFLOW (prev_seq updated first), the first record's payload
   * not virt_id EINVAL (the helper reads record 0's payload every time).
   */
  readVevents(fd: number, n: number, virtId: number, seq: { prev: number }): void {
    expect(this.host.poll(fd, POLLIN) & POLLIN).toBe(POLLIN);
    const buf = new Uint8Array(n * (HDR + EVT));
    const bytes = this.host.read(fd, buf);
    if (bytes <= 0) throw new SysError('EFAULT', 'read_vevents: nothing read');
    for (let i = 0; i < n; i++) {
      const hdr = uapi.iommufd_vevent_header.decode(buf, i * (HDR + EVT));
      if ((hdr.flags & uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS) || hdr.sequence - seq.prev > 1) {
        seq.prev = hdr.sequence;
        throw new SysError('EOVERFLOW', 'read_vevents: lost events or a sequence gap');
      }
      seq.prev = hdr.sequence;
      if (uapi.iommu_viommu_event_selftest.decode(buf, HDR).virt_id !== virtId) {
        throw new SysError('EINVAL', 'read_vevents: virt_id');
      }
    }
  }

  /** _test_cmd_viommu_invalidate: entry_num is written back, on failure too. */
  viommuInvalidate(viommuId: number, reqs: Uint8Array | null, dataType: number, entryLen: number, num: { n: number }): void {
    const bytes = uapi.iommu_hwpt_invalidate.encode({
      size: uapi.iommu_hwpt_invalidate.size, hwpt_id: viommuId, data_uptr: this.userData(reqs), data_type: dataType, entry_len: entryLen, entry_num: num.n,
    });
    try {
      this.host.ioctl(this.fd, uapi.IOMMU_HWPT_INVALIDATE, bytes);
    } finally {
      num.n = uapi.iommu_hwpt_invalidate.decode(bytes).entry_num;
    }
  }

  /** test_cmd_dev_check_cache */
  devCheckCache(devId: number, slot: number, cache: number): void {
    this.testCmd('check_dev_cache', uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE, { id: devId, 'check_dev_cache.id': slot, 'check_dev_cache.cache': cache });
  }

  /** test_cmd_dev_check_cache_all */
  devCheckCacheAll(devId: number, cache: number): void {
    for (let i = 0; i < uapi.MOCK_DEV_CACHE_NUM; i++) this.devCheckCache(devId, i, cache);
  }

  /** test_cmd_hwpt_check_iotlb */
  hwptCheckIotlb(hwptId: number, slot: number, iotlb: number): void {
    this.testCmd('check_iotlb', uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB, { id: hwptId, 'check_iotlb.id': slot, 'check_iotlb.iotlb': iotlb });
  }

  /** _test_cmd_hw_queue_alloc */
  hwQueueAlloc(viommuId: number, type: number, index: number, iova: number | bigint, length: number | bigint): number {
    return this.ioctl(uapi.IOMMU_HW_QUEUE_ALLOC, uapi.iommu_hw_queue_alloc, {
      viommu_id: viommuId, type, index, nesting_parent_iova: BigInt(iova), length: BigInt(length),
    }).out_hw_queue_id;
  }

  /** test_ioctl_fault_alloc */
  faultAlloc(): { id: number; fd: number } {
    const r = this.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC, uapi.iommu_fault_alloc, {});
    return { id: r.out_fault_id, fd: r.out_fault_fd };
  }

  /** _test_cmd_trigger_iopf(dev, 0x1, fault_fd): a request, one record read, a SUCCESS response written. */
  triggerIopf(devId: number, faultFd: number): void {
    this.testCmd('trigger_iopf', uapi.IOMMU_TEST_OP_TRIGGER_IOPF, {
      'trigger_iopf.dev_id': devId, 'trigger_iopf.pasid': 1, 'trigger_iopf.grpid': 2,
      'trigger_iopf.perm': uapi.IOMMU_PGFAULT_PERM_READ | uapi.IOMMU_PGFAULT_PERM_WRITE, 'trigger_iopf.addr': 0xdeadbeafn,
    });
    const rec = new Uint8Array(uapi.iommu_hwpt_pgfault.size);
    expect(this.host.read(faultFd, rec)).toBeGreaterThan(0);
    const f = uapi.iommu_hwpt_pgfault.decode(rec);
    expect(f.dev_id).toBe(devId);
    const resp = uapi.iommu_hwpt_page_response.encode({ cookie: f.cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS });
    expect(this.host.write(faultFd, resp)).toBeGreaterThan(0);
  }

  /** test_err_mmap: mmap(NULL, len, RW, MAP_SHARED, fd, off) */
  iommufdMmap(length: number, offset: number | bigint, prot = PROT_READ | PROT_WRITE, flags = MAP_SHARED): number {
    return this.host.mmap(length, prot, flags, this.fd, Number(offset));
  }
}

const selftestData = (iotlb = uapi.IOMMU_TEST_IOTLB_DEFAULT) => uapi.iommu_hwpt_selftest.encode({ iotlb });
const viommuInv = (reqs: { flags?: number; vdev_id?: number; cache_id?: number }[]) => {
  const s = uapi.iommu_viommu_invalidate_selftest;
  const out = new Uint8Array(s.size * reqs.length);
  reqs.forEach((r, i) => s.encode({ flags: 0, vdev_id: 0, cache_id: 0, ...r }, out, i * s.size));
  return out;
};
const INV = uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;
const INV_LEN = uapi.iommu_viommu_invalidate_selftest.size;
const DEFAULT = uapi.IOMMU_TEST_DEV_CACHE_DEFAULT;

describe.each([{ name: 'no_viommu', viommu: 0 }, { name: 'mock_viommu', viommu: 1 }])('FIXTURE_VARIANT(iommufd_viommu, $name)', (variant) => {
  let t: ViommuSelftest;
  let ioasId: number, stdevId: number, hwptId: number, nestedHwptId: number, deviceId: number, viommuId: number;

  beforeEach(async () => {
    t = await ViommuSelftest.make();
    ioasId = t.ioasAlloc();
    t.setTempMemoryLimit();
    stdevId = hwptId = nestedHwptId = deviceId = viommuId = 0;
    if (variant.viommu) {
      ({ stdevId, idevId: deviceId } = t.mockDomain(ioasId));
      // Allocate a nesting parent hwpt
      hwptId = t.hwptAlloc(deviceId, ioasId, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
      // Allocate a vIOMMU taking refcount of the parent hwpt
      viommuId = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST).id;
      // Allocate a regular nested hwpt
      nestedHwptId = t.hwptAllocNested(deviceId, viommuId, 0, uapi.IOMMU_HWPT_DATA_SELFTEST, selftestData());
    }
  });
  afterEach(() => t.teardown());

  it('TEST_F(iommufd_viommu, viommu_auto_destroy)', () => {});

  it('TEST_F(iommufd_viommu, viommu_negative_tests)', () => {
    if (deviceId) {
      // Negative test -- invalid hwpt (hwpt_id=0)
      err('ENOENT', () => t.viommuAlloc(deviceId, 0, uapi.IOMMU_VIOMMU_TYPE_SELFTEST));
      // Negative test -- not a nesting parent hwpt
      const hwpt = t.hwptAlloc(deviceId, ioasId, 0);
      err('EINVAL', () => t.viommuAlloc(deviceId, hwpt, uapi.IOMMU_VIOMMU_TYPE_SELFTEST));
      t.destroy(hwpt);
      // Negative test -- unsupported viommu type
      err('EOPNOTSUPP', () => t.viommuAlloc(deviceId, hwptId, 0xdead));
      err('EBUSY', () => t.destroy(hwptId));
      err('EBUSY', () => t.destroy(viommuId));
    } else {
      err('ENOENT', () => t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST));
    }
  });

  it('TEST_F(iommufd_viommu, viommu_alloc_nested_iopf)', () => {
    if (!deviceId) return; // SKIP: Skipping test for variant no_viommu
    const data = selftestData();
    const fault = t.faultAlloc();
    err('ENOENT', () => t.hwptAllocNested(deviceId, viommuId, uapi.IOMMU_HWPT_FAULT_ID_VALID, uapi.IOMMU_HWPT_DATA_SELFTEST, data, data.length, 0xffff_ffff));
    err('EOPNOTSUPP', () => t.hwptAllocNested(deviceId, viommuId, uapi.IOMMU_HWPT_FAULT_ID_VALID | (1 << 31) >>> 0, uapi.IOMMU_HWPT_DATA_SELFTEST, data, data.length, fault.id));
    const iopfHwptId = t.hwptAllocNested(deviceId, viommuId, uapi.IOMMU_HWPT_FAULT_ID_VALID, uapi.IOMMU_HWPT_DATA_SELFTEST, data, data.length, fault.id);

    // Must allocate vdevice before attaching to a nested hwpt
    err('ENOENT', () => t.mockDomainReplace(stdevId, iopfHwptId));
    t.vdeviceAlloc(viommuId, deviceId, 0x99);
    t.mockDomainReplace(stdevId, iopfHwptId);
    err('EBUSY', () => t.destroy(iopfHwptId));
    t.triggerIopf(deviceId, fault.fd);

    t.mockDomainReplace(stdevId, ioasId);
    t.destroy(iopfHwptId);
    t.host.close(fault.fd);
    t.destroy(fault.id);
  });

  it('TEST_F(iommufd_viommu, viommu_alloc_with_data)', () => {
    if (!deviceId) return; // SKIP: Skipping test for variant no_viommu
    const s = uapi.iommu_viommu_selftest;
    const { id, out } = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, s.encode({ in_data: 0xbeef }));
    viommuId = id;
    const data = s.decode(out!);
    expect(data.out_data).toBe(data.in_data);
    const len = Number(data.out_mmap_length), off = data.out_mmap_offset;

    // Negative mmap tests -- offset and length cannot be changed
    err('ENXIO', () => t.iommufdMmap(len, off + BigInt(PAGE_SIZE)));
    err('ENXIO', () => t.iommufdMmap(len, off + BigInt(PAGE_SIZE * 2)));
    err('ENXIO', () => t.iommufdMmap(len / 2, off));
    err('ENXIO', () => t.iommufdMmap(len * 2, off));

    // Now do a correct mmap for a loopback test
    const test = t.iommufdMmap(len, off);
    expect(new DataView(t.host.mem.read(test, 4).buffer).getUint32(0, true)).toBe(data.in_data);

    // The owner of the mmap region should be blocked
    err('EBUSY', () => t.destroy(viommuId));
    t.host.munmap(test, len);
  });

  it('TEST_F(iommufd_viommu, vdevice_alloc)', () => {
    if (deviceId) {
      const seq = { prev: -1 };
      // Must allocate vdevice before attaching to a nested hwpt
      err('ENOENT', () => t.mockDomainReplace(stdevId, nestedHwptId));

      // Allocate a vEVENTQ with veventq_depth=2
      const veventq = t.veventqAlloc(viommuId, uapi.IOMMU_VEVENTQ_TYPE_SELFTEST);
      err('EEXIST', () => t.veventqAlloc(viommuId, uapi.IOMMU_VEVENTQ_TYPE_SELFTEST));
      // Set vdev_id to 0x99, unset it, and set to 0x88
      let vdevId = t.vdeviceAlloc(viommuId, deviceId, 0x99);
      t.mockDomainReplace(stdevId, nestedHwptId);
      t.triggerVevents(deviceId, 1);
      t.readVevents(veventq.fd, 1, 0x99, seq);
      err('EEXIST', () => t.vdeviceAlloc(viommuId, deviceId, 0x99));
      t.mockDomainReplace(stdevId, ioasId);
      t.destroy(vdevId);

      // Try again with 0x88
      vdevId = t.vdeviceAlloc(viommuId, deviceId, 0x88);
      t.mockDomainReplace(stdevId, nestedHwptId);
      // Trigger an overflow with three events
      t.triggerVevents(deviceId, 3);
      err('EOVERFLOW', () => t.readVevents(veventq.fd, 3, 0x88, seq));
      // Overflow must be gone after the previous reads
      t.triggerVevents(deviceId, 1);
      t.readVevents(veventq.fd, 1, 0x88, seq);
      t.host.close(veventq.fd);
      t.mockDomainReplace(stdevId, ioasId);
      t.destroy(vdevId);
      t.destroy(veventq.id);
    } else {
      err('ENOENT', () => t.vdeviceAlloc(viommuId, deviceId, 0x99));
    }
  });

  it('TEST_F(iommufd_viommu, vdevice_cache)', () => {
    if (!deviceId) return; // SKIP: Skipping test for variant no_viommu
    const num = { n: 0 };
    const vdevId = t.vdeviceAlloc(viommuId, deviceId, 0x99);
    t.devCheckCacheAll(deviceId, DEFAULT);

    // Check data_type by passing zero-length array
    num.n = 0;
    t.viommuInvalidate(viommuId, viommuInv([{}, {}]), INV, INV_LEN, num);
    expect(num.n).toBe(0);

    // Negative test: Invalid data_type
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{}, {}]), uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID, INV_LEN, num));
    expect(num.n).toBe(0);

    // Negative test: structure size sanity
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{}, {}]), INV, INV_LEN + 1, num));
    expect(num.n).toBe(0);
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{}, {}]), INV, 1, num));
    expect(num.n).toBe(0);

    // Negative test: invalid flag is passed
    num.n = 1;
    err('EOPNOTSUPP', () => t.viommuInvalidate(viommuId, viommuInv([{ flags: 0xffffffff, vdev_id: 0x99 }, {}]), INV, INV_LEN, num));
    expect(num.n).toBe(0);

    // Negative test: invalid data_uptr when array is not empty
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, null, INV, INV_LEN, num));
    expect(num.n).toBe(0);

    // Negative test: invalid entry_len when array is not empty
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99 }, {}]), INV, 0, num));
    expect(num.n).toBe(0);

    // Negative test: invalid cache_id
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, cache_id: uapi.MOCK_DEV_CACHE_ID_MAX + 1 }, {}]), INV, INV_LEN, num));
    expect(num.n).toBe(0);

    // Negative test: invalid vdev_id
    num.n = 1;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x9 }, {}]), INV, INV_LEN, num));
    expect(num.n).toBe(0);

    // Invalidate the 1st cache entry but fail the 2nd request due to invalid flags configuration in the 2nd request.
    num.n = 2;
    err('EOPNOTSUPP', () => t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, cache_id: 0 }, { flags: 0xffffffff, vdev_id: 0x99, cache_id: 1 }]), INV, INV_LEN, num));
    expect(num.n).toBe(1);
    t.devCheckCache(deviceId, 0, 0);
    t.devCheckCache(deviceId, 1, DEFAULT);
    t.devCheckCache(deviceId, 2, DEFAULT);
    t.devCheckCache(deviceId, 3, DEFAULT);

    // Invalidate the 1st cache entry but fail the 2nd request due to invalid cache_id configuration in the 2nd request.
    num.n = 2;
    err('EINVAL', () => t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, cache_id: 0 }, { vdev_id: 0x99, cache_id: uapi.MOCK_DEV_CACHE_ID_MAX + 1 }]), INV, INV_LEN, num));
    expect(num.n).toBe(1);
    t.devCheckCache(deviceId, 0, 0);
    t.devCheckCache(deviceId, 1, DEFAULT);
    t.devCheckCache(deviceId, 2, DEFAULT);
    t.devCheckCache(deviceId, 3, DEFAULT);

    // Invalidate the 2nd cache entry and verify
    num.n = 1;
    t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, cache_id: 1 }, {}]), INV, INV_LEN, num);
    expect(num.n).toBe(1);
    t.devCheckCache(deviceId, 0, 0);
    t.devCheckCache(deviceId, 1, 0);
    t.devCheckCache(deviceId, 2, DEFAULT);
    t.devCheckCache(deviceId, 3, DEFAULT);

    // Invalidate the 3rd and 4th cache entries and verify
    num.n = 2;
    t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, cache_id: 2 }, { vdev_id: 0x99, cache_id: 3 }]), INV, INV_LEN, num);
    expect(num.n).toBe(2);
    t.devCheckCacheAll(deviceId, 0);

    // Invalidate all cache entries for nested_dev_id[1] and verify
    num.n = 1;
    t.viommuInvalidate(viommuId, viommuInv([{ vdev_id: 0x99, flags: uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL, cache_id: 3 }, { vdev_id: 0x99, cache_id: 3 }]), INV, INV_LEN, num);
    expect(num.n).toBe(1);
    t.devCheckCacheAll(deviceId, 0);
    t.destroy(vdevId);
  });

  it('TEST_F(iommufd_viommu, hw_queue)', () => {
    if (!viommuId) return; // SKIP: Skipping test for variant no_viommu
    let iova: bigint = BigInt(MOCK_APERTURE_START);
    const Q = uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST;

    // Fail IOMMU_HW_QUEUE_TYPE_DEFAULT
    err('EOPNOTSUPP', () => t.hwQueueAlloc(viommuId, uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, PAGE_SIZE));
    // Fail queue addr and length
    err('EINVAL', () => t.hwQueueAlloc(viommuId, Q, 0, iova, 0));
    err('EOVERFLOW', () => t.hwQueueAlloc(viommuId, Q, 0, UINT64_MAX, PAGE_SIZE));
    // Fail missing iova
    err('ENOENT', () => t.hwQueueAlloc(viommuId, Q, 0, iova, PAGE_SIZE));

    // Map iova
    iova = t.ioasMap(ioasId, t.buffer, PAGE_SIZE);
    const iova2 = t.ioasMap(ioasId, t.buffer + PAGE_SIZE, PAGE_SIZE);

    // Fail index=1 and =MAX; must start from index=0
    err('EIO', () => t.hwQueueAlloc(viommuId, Q, 1, iova, PAGE_SIZE));
    err('EINVAL', () => t.hwQueueAlloc(viommuId, Q, uapi.IOMMU_TEST_HW_QUEUE_MAX, iova, PAGE_SIZE));

    // Allocate index=0, declare ownership of the iova
    const q0 = t.hwQueueAlloc(viommuId, Q, 0, iova, PAGE_SIZE);
    // Fail duplicated index
    err('EEXIST', () => t.hwQueueAlloc(viommuId, Q, 0, iova, PAGE_SIZE));
    // Fail unmap, due to iova ownership
    err('EBUSY', () => t.ioasUnmap(ioasId, iova, PAGE_SIZE));
    // The 2nd page is not pinned, so it can be unmmap
    t.ioasUnmap(ioasId, iova2, PAGE_SIZE);

    // Allocate index=1, with an unaligned case
    const q1 = t.hwQueueAlloc(viommuId, Q, 1, iova + BigInt(PAGE_SIZE / 2), PAGE_SIZE / 2);
    // Fail to destroy, due to dependency
    err('EBUSY', () => t.destroy(q0));

    // Destroy in descending order
    t.destroy(q1);
    t.destroy(q0);
    // Now it can unmap the first page
    t.ioasUnmap(ioasId, iova, PAGE_SIZE);
  });

  it('TEST_F(iommufd_viommu, vdevice_tombstone)', () => {
    if (!deviceId) return; // SKIP: Skipping test for variant no_viommu
    const vdevId = t.vdeviceAlloc(viommuId, deviceId, 0x99);
    t.destroy(stdevId);
    err('ENOENT', () => t.destroy(vdevId));
  });
});

describe('the mock vIOMMU beyond the selftest', () => {
  let t: ViommuSelftest;
  let ioasId: number, stdevId: number, deviceId: number, hwptId: number, viommuId: number, nestedHwptId: number;

  beforeEach(async () => {
    t = await ViommuSelftest.make();
    ioasId = t.ioasAlloc();
    ({ stdevId, idevId: deviceId } = t.mockDomain(ioasId));
    hwptId = t.hwptAlloc(deviceId, ioasId, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
    viommuId = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST).id;
    nestedHwptId = t.hwptAllocNested(deviceId, viommuId, 0, uapi.IOMMU_HWPT_DATA_SELFTEST, selftestData());
  });
  afterEach(() => t.teardown());

  const trigger = () => t.testCmd('trigger_vevent', uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, { 'trigger_vevent.dev_id': deviceId });

  it('mock_viommu_init: driver data shorter than out_data or longer than the struct EINVAL, a bad pointer EFAULT; nothing is left', () => {
    const s = uapi.iommu_viommu_selftest;
    const data = s.encode({ in_data: 7 });
    err('EINVAL', () => t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, data, s.offsetofend('out_data') - 1));
    err('EINVAL', () => t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, new Uint8Array(s.size + 1)));
    err('EFAULT', () => t.ioctl(uapi.IOMMU_VIOMMU_ALLOC, uapi.iommu_viommu_alloc, {
      dev_id: deviceId, hwpt_id: hwptId, type: uapi.IOMMU_VIOMMU_TYPE_SELFTEST, data_len: s.size, data_uptr: 8n,
    }));
    // No object, no mmap region: the next vIOMMU takes the next id and the first offset.
    const { id, out } = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, data, s.offsetofend('out_data'));
    expect(id).toBe(nestedHwptId + 1);
    // Only out_data fits in 8 bytes: the offset and length are not written.
    expect(s.decode(out!)).toMatchObject({ in_data: 7, out_data: 7, out_mmap_offset: 0n, out_mmap_length: 0n });
    const full = s.decode(t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, data).out!);
    expect(full.out_mmap_offset).toBe(BigInt(3 * PAGE_SIZE)); // the 8-byte one took [PAGE_SIZE, 3 * PAGE_SIZE)
    expect(full.out_mmap_length).toBe(BigInt(2 * PAGE_SIZE));
  });

  it('iommufd_fops_mmap: MAP_SHARED only, no PROT_EXEC; the region goes with its vIOMMU; a live mapping keeps the iommufd', () => {
    const s = uapi.iommu_viommu_selftest;
    const { id, out } = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, s.encode({ in_data: 0x1234 }));
    const d = s.decode(out!);
    const len = Number(d.out_mmap_length);
    err('EINVAL', () => t.iommufdMmap(len, d.out_mmap_offset, PROT_READ, MAP_PRIVATE));
    err('EPERM', () => t.iommufdMmap(len, d.out_mmap_offset, PROT_READ | PROT_EXEC));
    // Two mappings of one region see the same pages and each holds the vIOMMU.
    const a = t.iommufdMmap(len, d.out_mmap_offset);
    const b = t.iommufdMmap(len, d.out_mmap_offset);
    t.host.mem.write(a + 4, new Uint8Array([9]));
    expect(t.host.mem.read(b + 4, 1)[0]).toBe(9);
    t.host.munmap(a, len);
    err('EBUSY', () => t.destroy(id));
    t.host.munmap(b, len);
    t.destroy(id);
    err('ENXIO', () => t.iommufdMmap(len, d.out_mmap_offset));
    // Closing /dev/iommu with a mapping alive: the file stays until munmap.
    const { out: out2 } = t.viommuAlloc(deviceId, hwptId, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, s.encode({ in_data: 0x55 }));
    const d2 = s.decode(out2!);
    const c = t.iommufdMmap(len, d2.out_mmap_offset);
    t.host.close(t.fd);
    expect(new DataView(t.host.mem.read(c, 4).buffer).getUint32(0, true)).toBe(0x55);
    t.host.munmap(c, len);
    t.fd = t.host.open('/dev/iommu'); // for the teardown
  });

  it('iommufd_test_trigger_vevent: EOPNOTSUPP without a SELFTEST vEVENTQ, ENOENT with virt_id 0 or after moving off the nested HWPT', () => {
    err('ENOENT', trigger); // attached to its IOAS's domain
    const vdev = t.vdeviceAlloc(viommuId, deviceId, 0x42);
    t.mockDomainReplace(stdevId, nestedHwptId);
    err('EOPNOTSUPP', trigger);
    const other = t.veventqAlloc(viommuId, 0x1234);
    err('EOPNOTSUPP', trigger); // a queue of another type
    const q = t.veventqAlloc(viommuId, uapi.IOMMU_VEVENTQ_TYPE_SELFTEST);
    trigger();
    const buf = new Uint8Array(HDR + EVT);
    expect(t.host.read(q.fd, buf)).toBe(HDR + EVT);
    expect(uapi.iommufd_vevent_header.decode(buf)).toEqual({ flags: 0, sequence: 0 });
    expect(uapi.iommu_viommu_event_selftest.decode(buf, HDR).virt_id).toBe(0x42);
    // A replace with the nested HWPT already attached calls no driver: the recorded virt_id stays.
    expect(t.mockDomainReplace(stdevId, nestedHwptId)).toBe(nestedHwptId);
    trigger();
    expect(t.host.read(q.fd, buf)).toBe(HDR + EVT);
    expect(uapi.iommufd_vevent_header.decode(buf)).toEqual({ flags: 0, sequence: 1 });
    t.mockDomainReplace(stdevId, ioasId);
    err('ENOENT', trigger);
    t.destroy(vdev);
    // virt_id 0 counts as none (!mdev->vdev_id).
    const vdev0 = t.vdeviceAlloc(viommuId, deviceId, 0);
    t.mockDomainReplace(stdevId, nestedHwptId);
    err('ENOENT', trigger);
    t.mockDomainReplace(stdevId, ioasId);
    t.destroy(vdev0);
    for (const x of [q, other]) { t.host.close(x.fd); t.destroy(x.id); }
  });

  it('mock_viommu_alloc_domain_nested: another data type EOPNOTSUPP, 4 to 8 bytes (EINVAL), EFAULT; the IOTLB slots; HWPT_INVALIDATE on it', () => {
    err('EOPNOTSUPP', () => t.hwptAllocNested(deviceId, viommuId, 0, uapi.IOMMU_HWPT_DATA_SELFTEST + 1, selftestData()));
    err('EINVAL', () => t.hwptAllocNested(deviceId, viommuId, 0, uapi.IOMMU_HWPT_DATA_SELFTEST, selftestData(), 3));
    err('EINVAL', () => t.hwptAllocNested(deviceId, viommuId, 0, uapi.IOMMU_HWPT_DATA_SELFTEST, new Uint8Array(9)));
    err('EFAULT', () => t.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, {
      dev_id: deviceId, pt_id: viommuId, data_type: uapi.IOMMU_HWPT_DATA_SELFTEST, data_len: 8, data_uptr: 8n,
    }));
    // NEST_PARENT is not a flag of a nested domain: the core takes it (EOPNOTSUPP); PASID is fine.
    err('EOPNOTSUPP', () => t.hwptAllocNested(deviceId, viommuId, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, uapi.IOMMU_HWPT_DATA_SELFTEST, selftestData()));
    const h = t.hwptAllocNested(deviceId, viommuId, uapi.IOMMU_HWPT_ALLOC_PASID, uapi.IOMMU_HWPT_DATA_SELFTEST, selftestData(), 4);
    expect(h).toBe(nestedHwptId + 1); // the failures left no id taken
    for (let i = 0; i < 4; i++) t.hwptCheckIotlb(nestedHwptId, i, uapi.IOMMU_TEST_IOTLB_DEFAULT);
    err('EINVAL', () => t.hwptCheckIotlb(nestedHwptId, 4, uapi.IOMMU_TEST_IOTLB_DEFAULT));
    err('EINVAL', () => t.hwptCheckIotlb(nestedHwptId, 0, 0));
    err('ENOENT', () => t.hwptCheckIotlb(hwptId, 0, uapi.IOMMU_TEST_IOTLB_DEFAULT));
    // HWPT_INVALIDATE on the nested HWPT (mock_domain_cache_invalidate_user).
    const inv = (reqs: { flags?: number; iotlb_id?: number }[], type: number = uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, len: number = uapi.iommu_hwpt_invalidate_selftest.size) => {
      const s = uapi.iommu_hwpt_invalidate_selftest;
      const bytes = new Uint8Array(Math.max(1, reqs.length) * s.size);
      reqs.forEach((r, i) => s.encode({ flags: 0, iotlb_id: 0, ...r }, bytes, i * s.size));
      const cmd = uapi.iommu_hwpt_invalidate.encode({
        size: uapi.iommu_hwpt_invalidate.size, hwpt_id: nestedHwptId, data_uptr: t.userData(bytes), data_type: type, entry_len: len, entry_num: reqs.length,
      });
      try { t.host.ioctl(t.fd, uapi.IOMMU_HWPT_INVALIDATE, cmd); } finally { n = uapi.iommu_hwpt_invalidate.decode(cmd).entry_num; }
    };
    let n = -1;
    err('EINVAL', () => inv([], uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID));
    inv([]);
    err('EINVAL', () => inv([{}], uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 9));
    err('EOPNOTSUPP', () => inv([{ iotlb_id: 1 }, { flags: 2 }]));
    expect(n).toBe(1);
    t.hwptCheckIotlb(nestedHwptId, 1, 0);
    t.hwptCheckIotlb(nestedHwptId, 0, uapi.IOMMU_TEST_IOTLB_DEFAULT);
    err('EINVAL', () => inv([{ iotlb_id: 4 }]));
    expect(n).toBe(0);
    inv([{ flags: uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL, iotlb_id: 0 }]);
    for (let i = 0; i < 4; i++) t.hwptCheckIotlb(nestedHwptId, i, 0);
    t.hwptCheckIotlb(h, 0, uapi.IOMMU_TEST_IOTLB_DEFAULT); // the other nested HWPT keeps its slots
    err('EBUSY', () => t.destroy(viommuId)); // its nested HWPTs hold it
  });

  it('iommufd_hw_queue_alloc_ioctl: ids, the internal access, and no trace of a failed call', () => {
    const Q = uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST;
    const buf = t.mmap(4 * PAGE_SIZE);
    const iova = t.ioasMap(ioasId, buf, 2 * PAGE_SIZE);
    // Another queue type: EOPNOTSUPP before anything is pinned.
    err('EOPNOTSUPP', () => t.hwQueueAlloc(viommuId, Q + 1, 0, iova, PAGE_SIZE));
    err('ENOENT', () => t.hwQueueAlloc(hwptId, Q, 0, iova, PAGE_SIZE));
    // Failed after the pin (EIO): the lock is gone again and no id is taken.
    err('EIO', () => t.hwQueueAlloc(viommuId, Q, 1, iova, PAGE_SIZE));
    const q0 = t.hwQueueAlloc(viommuId, Q, 0, iova, 2 * PAGE_SIZE);
    expect(q0).toBe(nestedHwptId + 1);
    // The internal access took the next id: DESTROY of it is EBUSY (its driver holds it).
    err('EBUSY', () => t.destroy(q0 + 1));
    // A queue over a gap: ENOENT.
    err('ENOENT', () => t.hwQueueAlloc(viommuId, Q, 1, iova + BigInt(PAGE_SIZE), 2 * PAGE_SIZE));
    err('EBUSY', () => t.destroy(viommuId));
    err('EBUSY', () => t.ioasUnmap(ioasId, 0, UINT64_MAX));
    // A pinning access keeps the IOAS PAGE_SIZE-aligned: a 2 KiB map is refused while the queue lives.
    const half = () => t.ioasMap(ioasId, buf + 2 * PAGE_SIZE + PAGE_SIZE / 2, PAGE_SIZE / 2, iova + BigInt(4 * PAGE_SIZE + PAGE_SIZE / 2));
    err('EINVAL', half);
    t.destroy(q0);
    t.ioasUnmap(ioasId, half(), PAGE_SIZE / 2); // the mock domains' 2 KiB alignment again
    err('ENOENT', () => t.destroy(q0 + 1));
    t.ioasUnmap(ioasId, iova, 2 * PAGE_SIZE);
  });

  it('iommufd_hw_queue_alloc_phys: pages not physically contiguous EFAULT', () => {
    const Q = uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST;
    // One page mapped twice, side by side in IOVA: not physically contiguous.
    const a = t.mmap(PAGE_SIZE);
    const iova = BigInt(MOCK_APERTURE_START) + 0x100000n;
    t.ioasMap(ioasId, a, PAGE_SIZE, iova);
    t.ioasMap(ioasId, a, PAGE_SIZE, iova + BigInt(PAGE_SIZE));
    err('EFAULT', () => t.hwQueueAlloc(viommuId, Q, 0, iova, 2 * PAGE_SIZE));
    t.ioasUnmap(ioasId, iova, PAGE_SIZE); // no lock left behind
    t.hwQueueAlloc(viommuId, Q, 0, iova + BigInt(PAGE_SIZE), PAGE_SIZE);
  });
});
