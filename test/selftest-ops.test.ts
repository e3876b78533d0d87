/**
 * IOMMU_TEST_CMD op by op: the errnos and effects of
 * drivers/iommu/iommufd/selftest.c that the ported TEST_Fs do not reach,
 * and the helpers of tools/testing/selftests/iommu/iommufd_utils.h that
 * drive them (_test_cmd_trigger_iopf, the PASID helpers). Where a test
 * follows a selftest it says which; the rest follow selftest.c.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapi, DmaFault } from '../host/index.js';
import { VfioDevice, Iommufd } from '../host/client.js';
import { Selftest, err, PAGE_SIZE, BUFFER_SIZE, MOCK_APERTURE_START, MOCK_PAGE_SIZE } from './support/selftest.js';

let t: Selftest;
let ioasId: number;
beforeEach(async () => {
  t = await Selftest.create();
  ioasId = t.ioasAlloc();
});
afterEach(() => t.teardown());

describe('MOCK_DOMAIN, MOCK_DOMAIN_FLAGS, MOCK_DOMAIN_REPLACE', () => {
  it('ids come in the order the kernel allocates them: SELFTEST object, DEVICE, then the automatic HWPT', () => {
    // iommufd_test_mock_domain: sobj first, then iommufd_device_bind, then the attach's auto domain.
    expect(t.mockDomain(ioasId)).toEqual({ stdevId: 2, idevId: 3, hwptId: 4 });
    // A second device on the same IOAS shares the automatic HWPT.
    expect(t.mockDomain(ioasId)).toEqual({ stdevId: 5, idevId: 6, hwptId: 4 });
  });

  it('unknown device flags are EINVAL (mock_dev_create); a bad pt_id is ENOENT and leaves nothing behind', () => {
    err('EINVAL', () => t.mockDomainFlags(ioasId, 1 << 1));
    err('ENOENT', () => t.mockDomain(99));
    // Nothing was left: the next ids are still 2, 3, 4.
    expect(t.mockDomain(ioasId)).toEqual({ stdevId: 2, idevId: 3, hwptId: 4 });
  });

  it('DESTROY of the DEVICE is EBUSY; DESTROY of the SELFTEST object unbinds it and frees the automatic HWPT', () => {
    const m = t.mockDomain(ioasId);
    err('EBUSY', () => t.destroy(m.idevId));
    err('EBUSY', () => t.destroy(ioasId));
    t.destroy(m.stdevId);
    err('ENOENT', () => t.destroy(m.hwptId));
    t.destroy(ioasId);
  });

  it('MOCK_DOMAIN_REPLACE needs a SELFTEST id (ENOENT)', () => {
    const m = t.mockDomain(ioasId);
    err('ENOENT', () => t.mockDomainReplace(m.idevId, ioasId));
    expect(t.mockDomainReplace(m.stdevId, ioasId)).toBe(m.hwptId);
  });

  it('GET_HW_INFO of a mock device: SELFTEST type, DIRTY_TRACKING unless NO_DIRTY, PASID width with MOCK_FLAGS_DEVICE_PASID', () => {
    const info = (dev: number, fields: Record<string, unknown> = {}) => t.ioctl(uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info, { dev_id: dev, ...fields });
    const a = t.mockDomain(ioasId);
    const b = t.mockDomainFlags(ioasId, uapi.MOCK_FLAGS_DEVICE_NO_DIRTY | uapi.MOCK_FLAGS_DEVICE_PASID);
    expect(info(a.idevId).out_data_type).toBe(uapi.IOMMU_HW_INFO_TYPE_SELFTEST);
    expect(info(a.idevId).out_capabilities & BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING)).not.toBe(0n);
    expect(info(b.idevId).out_capabilities & BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING)).toBe(0n);
    expect(info(a.idevId).out_max_pasid_log2).toBe(0);
    expect(info(b.idevId).out_max_pasid_log2).toBe(uapi.MOCK_PASID_WIDTH);
    // mock_domain_hw_info takes DEFAULT or SELFTEST only.
    expect(info(a.idevId, { flags: uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE, in_data_type: uapi.IOMMU_HW_INFO_TYPE_SELFTEST }).out_data_type).toBe(uapi.IOMMU_HW_INFO_TYPE_SELFTEST);
    err('EOPNOTSUPP', () => info(a.idevId, { flags: uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE, in_data_type: uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD }));
  });
});

describe('ADD_RESERVED', () => {
  it('ENOENT without an IOAS; EADDRINUSE over an area', () => {
    const add = (id: number, start: number, length: number) =>
      t.testCmd('add_reserved', uapi.IOMMU_TEST_OP_ADD_RESERVED, { id, 'add_reserved.start': BigInt(start), 'add_reserved.length': BigInt(length) });
    err('ENOENT', () => add(99, PAGE_SIZE, PAGE_SIZE));
    t.ioasMap(ioasId, t.buffer, PAGE_SIZE, 16 * PAGE_SIZE);
    err('EADDRINUSE', () => add(ioasId, 16 * PAGE_SIZE, 1));
    // Overlapping another reserved range is fine.
    add(ioasId, PAGE_SIZE, 2 * PAGE_SIZE);
    add(ioasId, 2 * PAGE_SIZE, 2 * PAGE_SIZE);
    err('EINVAL', () => t.ioasMap(ioasId, t.buffer, PAGE_SIZE, 3 * PAGE_SIZE));
  });
});

describe('MD_CHECK_MAP (iommufd_test_md_check_pa) reads the mock domain through the engine walker', () => {
  it('a wrong user pointer, an unmapped IOVA or a misaligned argument is EINVAL; a non-mock HWPT is EINVAL; a missing one ENOENT', () => {
    const m = t.mockDomain(ioasId);
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE);
    t.checkMap(m.hwptId, t.buffer, iova, BUFFER_SIZE);
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer + PAGE_SIZE, iova, PAGE_SIZE));
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer, iova + BigInt(BUFFER_SIZE), PAGE_SIZE));
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer, iova + 1n, MOCK_PAGE_SIZE));
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer + 1, iova, MOCK_PAGE_SIZE));
    err('ENOENT', () => t.checkMap(ioasId, t.buffer, iova, PAGE_SIZE));
    err('ENOENT', () => t.checkMap(99, t.buffer, iova, PAGE_SIZE));
    // A VT-d HWPT on the same IOAS is not the mock's.
    const iommufd = new Iommufd(t.host, t.fd);
    const dev = t.host.addDevice({ iommu: 'intel-vtd' });
    const vfio = new VfioDevice(t.host, dev.path);
    vfio.bind(iommufd);
    const vtdHwpt = vfio.attach(ioasId);
    err('EINVAL', () => t.checkMap(vtdHwpt, t.buffer, iova, PAGE_SIZE));
    t.host.close(vfio.fd);
  });

  it('2 KiB areas share a 4 KiB leaf: each half is checked on its own, and goes with its area', () => {
    const m = t.mockDomain(ioasId);
    const base = BigInt(MOCK_APERTURE_START);
    // Two areas, the two halves of one page of the buffer, at the two halves of one IOVA page.
    t.ioasMap(ioasId, t.buffer, MOCK_PAGE_SIZE, base);
    t.ioasMap(ioasId, t.buffer + MOCK_PAGE_SIZE, MOCK_PAGE_SIZE, base + BigInt(MOCK_PAGE_SIZE));
    t.checkMap(m.hwptId, t.buffer, base, PAGE_SIZE);
    t.ioasUnmap(ioasId, base, MOCK_PAGE_SIZE);
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer, base, MOCK_PAGE_SIZE));
    t.checkMap(m.hwptId, t.buffer + MOCK_PAGE_SIZE, base + BigInt(MOCK_PAGE_SIZE), MOCK_PAGE_SIZE);
    t.ioasUnmap(ioasId, base + BigInt(MOCK_PAGE_SIZE), MOCK_PAGE_SIZE);
    err('EINVAL', () => t.checkMap(m.hwptId, t.buffer + MOCK_PAGE_SIZE, base + BigInt(MOCK_PAGE_SIZE), MOCK_PAGE_SIZE));
    // The VT-d table underneath cannot put a page at an IOVA 2 KiB off its offset (see host/iommu/mock.ts).
    err('EINVAL', () => t.ioasMap(ioasId, t.buffer, PAGE_SIZE, base + BigInt(MOCK_PAGE_SIZE)));
  });
});

describe('MD_CHECK_REFS (iommufd_test_md_check_refs)', () => {
  it('counts pins per page: 0, 1 for a domain or an access or both, 2 for two mappings of the same VA; EIO on a mismatch', () => {
    t.checkRefs(t.buffer, BUFFER_SIZE, 0);
    err('EIO', () => t.checkRefs(t.buffer, BUFFER_SIZE, 1));
    err('EINVAL', () => t.checkRefs(t.buffer + 1, PAGE_SIZE, 0));
    err('EINVAL', () => t.checkRefs(t.buffer, PAGE_SIZE + 1, 0));
    // Inside the mock aperture, so that a mock domain can join later.
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE, MOCK_APERTURE_START);
    t.checkRefs(t.buffer, BUFFER_SIZE, 0); // no domain: nothing pinned yet
    const access = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    const id = t.accessPages(access, iova, PAGE_SIZE, t.buffer);
    t.checkRefs(t.buffer, PAGE_SIZE, 1);
    t.checkRefs(t.buffer + PAGE_SIZE, BUFFER_SIZE - PAGE_SIZE, 0);
    const m = t.mockDomain(ioasId);
    t.checkRefs(t.buffer, BUFFER_SIZE, 1);
    // A second IOAS mapping the same VA pins its own pages object: 2.
    const other = t.ioasAlloc();
    t.ioasMap(other, t.buffer, BUFFER_SIZE, MOCK_APERTURE_START);
    const m2 = t.mockDomain(other);
    t.checkRefs(t.buffer, BUFFER_SIZE, 2);
    t.destroy(m2.stdevId);
    t.destroyAccessPages(access, id);
    t.checkRefs(t.buffer, BUFFER_SIZE, 1);
    t.destroy(m.stdevId);
    t.checkRefs(t.buffer, BUFFER_SIZE, 0);
    t.destroyAccess(access);
    // EFAULT where nothing is mapped (get_user_pages_fast).
    const gone = t.mmap(PAGE_SIZE);
    t.host.munmap(gone, PAGE_SIZE);
    err('EFAULT', () => t.checkRefs(gone, PAGE_SIZE, 0));
  });
});

describe('CREATE_ACCESS, ACCESS_PAGES, DESTROY_ACCESS_PAGES, ACCESS_RW, ACCESS_REPLACE_IOAS', () => {
  it('argument errnos in selftest.c order', () => {
    err('EOPNOTSUPP', () => t.createAccess(ioasId, 2));
    err('ENOENT', () => t.createAccess(99, 0));
    const plain = t.createAccess(ioasId, 0);
    const pin = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE);
    // ACCESS_PAGES
    err('ENOMEM', () => t.accessPages(pin, iova, (16 << 20) + 1, 0));
    err('EOPNOTSUPP', () => t.accessPages(pin, iova, PAGE_SIZE, 0, 2));
    err('EBADFD', () => t.accessPages(t.fd, iova, PAGE_SIZE, 0));
    err('EOPNOTSUPP', () => t.accessPages(plain, iova, PAGE_SIZE, 0)); // not a pinning access
    err('EINVAL', () => t.accessPages(pin, iova, 0, 0));
    err('EINVAL', () => t.accessPages(pin, iova + 1n, PAGE_SIZE, 0));
    err('ENOENT', () => t.accessPages(pin, iova + BigInt(BUFFER_SIZE), PAGE_SIZE, 0));
    err('EBADE', () => t.accessPages(pin, iova, PAGE_SIZE, t.buffer + PAGE_SIZE));
    t.checkRefs(t.buffer, BUFFER_SIZE, 0); // the failed calls left no pin
    // ids count from 0 per access; an unknown one is ENOENT
    expect(t.accessPages(pin, iova, PAGE_SIZE, t.buffer)).toBe(0);
    expect(t.accessPages(pin, iova + BigInt(PAGE_SIZE), PAGE_SIZE, 0)).toBe(1);
    err('ENOENT', () => t.destroyAccessPages(pin, 7));
    err('EBADFD', () => t.destroyAccessPages(t.fd, 0));
    // ACCESS_RW
    err('ENOMEM', () => t.accessRw(plain, iova, (16 << 20) + 1, t.buffer, 0));
    err('EOPNOTSUPP', () => t.accessRw(plain, iova, 1, t.buffer, 2));
    err('EINVAL', () => t.accessRw(plain, iova, 0, t.buffer, 0));
    err('ENOENT', () => t.accessRw(plain, iova + BigInt(BUFFER_SIZE) - 1n, 2, t.buffer, 0));
    // A pinning access keeps the IOAS PAGE_SIZE-aligned (an area at a 2 KiB offset is refused).
    err('EINVAL', () => t.ioasMap(ioasId, t.buffer, MOCK_PAGE_SIZE));
    // Closing the access fd drops its pins.
    t.destroyAccess(pin);
    t.checkRefs(t.buffer, BUFFER_SIZE, 0);
    t.destroyAccess(plain);
  });

  it('MOCK_FLAGS_ACCESS_SYZ: the iova is { u32 nth_area; u32 offset } (iommufd_test_syz_conv_iova)', () => {
    const access = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    t.ioasMap(ioasId, t.buffer, PAGE_SIZE, 0x10000);
    t.ioasMap(ioasId, t.buffer + PAGE_SIZE, 2 * PAGE_SIZE, 0x20000);
    t.host.mem.write(t.buffer + PAGE_SIZE + 0x10, new Uint8Array([0x5a]));
    const tmp = t.mmap(PAGE_SIZE);
    // Area 1 (the second, at 0x20000), offset 0x10.
    t.accessRw(access, (0x10n << 32n) | 1n, 1, tmp, uapi.MOCK_FLAGS_ACCESS_SYZ);
    expect(t.host.mem.read(tmp, 1)).toEqual(new Uint8Array([0x5a]));
    // Area 1, offset PAGE_SIZE: its second page.
    const id = t.accessPages(access, (BigInt(PAGE_SIZE) << 32n) | 1n, PAGE_SIZE, t.buffer + 2 * PAGE_SIZE, uapi.MOCK_FLAGS_ACCESS_SYZ);
    t.checkRefs(t.buffer + 2 * PAGE_SIZE, PAGE_SIZE, 1);
    t.destroyAccessPages(access, id);
    t.destroyAccess(access);
  });

  it('an open access fd keeps the iommufd: its objects go when the last of the two closes', () => {
    const access = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE);
    t.accessPages(access, iova, BUFFER_SIZE, t.buffer);
    t.host.close(t.fd);
    const fd = t.host.open('/dev/iommu');
    t.checkRefs(t.buffer, BUFFER_SIZE, 1, fd);
    t.host.close(access);
    t.checkRefs(t.buffer, BUFFER_SIZE, 0, fd);
    t.fd = fd;
  });

  it('the access holds its IOAS (EBUSY) and one object id, which DESTROY cannot take (EBUSY)', () => {
    const access = t.createAccess(ioasId, 0);
    err('EBUSY', () => t.destroy(ioasId));
    // id 2 is the access object; the next IOAS is 3.
    err('EBUSY', () => t.destroy(2));
    expect(t.ioasAlloc()).toBe(3);
    t.destroyAccess(access);
    t.destroy(ioasId);
  });

  it('a write through a read-only area is EPERM, for ACCESS_RW and for a writing ACCESS_PAGES', () => {
    const iova = t.ioasMap(ioasId, t.buffer, PAGE_SIZE, undefined, uapi.IOMMU_IOAS_MAP_READABLE);
    const plain = t.createAccess(ioasId, 0);
    const pin = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    const tmp = t.mmap(PAGE_SIZE);
    t.accessRw(plain, iova, 16, tmp, 0);
    err('EPERM', () => t.accessRw(plain, iova, 16, tmp, uapi.MOCK_ACCESS_RW_WRITE));
    err('EPERM', () => t.accessPages(pin, iova, PAGE_SIZE, 0, uapi.MOCK_FLAGS_ACCESS_WRITE));
    // The walk over contiguous areas meets the read-only area before the gap after it: EPERM, not ENOENT.
    err('EPERM', () => t.accessRw(plain, iova, PAGE_SIZE + 1, tmp, uapi.MOCK_ACCESS_RW_WRITE));
    err('ENOENT', () => t.accessRw(plain, iova, PAGE_SIZE + 1, tmp, 0));
    t.destroyAccess(plain);
    t.destroyAccess(pin);
  });

  it('ACCESS_REPLACE_IOAS: ENOENT for a missing IOAS; the old IOAS loses the pins and the hold', () => {
    const access = t.createAccess(ioasId, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE);
    const id = t.accessPages(access, iova, BUFFER_SIZE, t.buffer);
    t.checkRefs(t.buffer, BUFFER_SIZE, 1);
    err('ENOENT', () => t.accessReplaceIoas(access, 99));
    const other = t.ioasAlloc();
    t.accessReplaceIoas(access, other);
    t.checkRefs(t.buffer, BUFFER_SIZE, 0);
    err('ENOENT', () => t.destroyAccessPages(access, id));
    t.destroy(ioasId);
    err('EBUSY', () => t.destroy(other));
    t.destroyAccess(access);
  });
});

describe('SET_TEMP_MEMORY_LIMIT', () => {
  it('takes any limit of at least one batch element (12 bytes), else EINVAL', () => {
    err('EINVAL', () => t.setTempMemoryLimit(11));
    t.setTempMemoryLimit(12);
    t.setTempMemoryLimit();
  });
});

describe('TRIGGER_IOPF', () => {
  // _test_cmd_trigger_iopf (iommufd_utils.h): trigger on pasid 1, grpid 2,
  // perm READ | WRITE, addr 0xdeadbeaf; read() of the fault fd > 0; write()
  // of a SUCCESS response for the cookie > 0. The selftest runs it on a mock
  // nested HWPT with a fault (selftest-viommu.test.ts does too). Here the
  // fault-capable HWPT is a paging one on the RID: a request without a
  // PASID reaches it; one with a PASID nothing is attached at does not, as
  // only a NESTED domain at the RID takes those (io-pgfault.c
  // find_fault_handler, with the mock's user PASID table).
  it('a page request reaches the FAULT of the attached HWPT; the response is taken', () => {
    const m = t.mockDomain(ioasId);
    const fault = t.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC, uapi.iommu_fault_alloc, {});
    const hwpt = t.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, {
      dev_id: m.idevId, pt_id: ioasId, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: fault.out_fault_id,
    }).out_hwpt_id;
    t.mockDomainReplace(m.stdevId, hwpt);
    err('EBUSY', () => t.destroy(hwpt));
    const trigger = (devId: number, pasid = 0) => t.testCmd('trigger_iopf', uapi.IOMMU_TEST_OP_TRIGGER_IOPF, {
      'trigger_iopf.dev_id': devId, 'trigger_iopf.pasid': pasid, 'trigger_iopf.grpid': 2,
      'trigger_iopf.perm': uapi.IOMMU_PGFAULT_PERM_READ | uapi.IOMMU_PGFAULT_PERM_WRITE, 'trigger_iopf.addr': 0xdeadbeafn,
    });
    err('ENOENT', () => trigger(m.stdevId));
    const rec = new Uint8Array(uapi.iommu_hwpt_pgfault.size);
    trigger(m.idevId, 1); // PASID 1: nothing attached there, and the RID's domain is not NESTED
    expect(t.host.read(fault.out_fault_fd, rec)).toBe(0);
    trigger(m.idevId);
    expect(t.host.read(fault.out_fault_fd, rec)).toBeGreaterThan(0);
    const f = uapi.iommu_hwpt_pgfault.decode(rec);
    expect(f).toMatchObject({
      flags: uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE, dev_id: m.idevId, pasid: 0, grpid: 2,
      perm: uapi.IOMMU_PGFAULT_PERM_READ | uapi.IOMMU_PGFAULT_PERM_WRITE, addr: 0xdeadb000n,
    });
    const resp = uapi.iommu_hwpt_page_response.encode({ cookie: f.cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS });
    expect(t.host.write(fault.out_fault_fd, resp)).toBeGreaterThan(0);
    // Back on the IOAS: no fault queue, nothing is seen.
    t.mockDomainReplace(m.stdevId, ioasId);
    trigger(m.idevId);
    expect(t.host.read(fault.out_fault_fd, rec)).toBe(0);
    t.destroy(hwpt);
    t.host.close(fault.out_fault_fd);
    t.destroy(fault.out_fault_id);
  });
});

describe('TRIGGER_VEVENT, MD_CHECK_IOTLB, DEV_CHECK_CACHE', () => {
  it('TRIGGER_VEVENT: ENOENT, the device having no vDEVICE (no emulated unit makes a vIOMMU)', () => {
    const m = t.mockDomain(ioasId);
    err('ENOENT', () => t.testCmd('trigger_vevent', uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, { 'trigger_vevent.dev_id': 99 }));
    err('ENOENT', () => t.testCmd('trigger_vevent', uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, { 'trigger_vevent.dev_id': m.idevId }));
  });

  it('MD_CHECK_IOTLB: ENOENT for anything but a nested HWPT', () => {
    const m = t.mockDomain(ioasId);
    err('ENOENT', () => t.testCmd('check_iotlb', uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB, { id: m.hwptId, 'check_iotlb.id': 0, 'check_iotlb.iotlb': uapi.IOMMU_TEST_IOTLB_DEFAULT }));
  });

  it('DEV_CHECK_CACHE: the four slots start at IOMMU_TEST_DEV_CACHE_DEFAULT; a mismatch or a slot past 3 is EINVAL', () => {
    const m = t.mockDomain(ioasId);
    const check = (id: number, slot: number, cache: number) => t.testCmd('check_dev_cache', uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE, { id, 'check_dev_cache.id': slot, 'check_dev_cache.cache': cache });
    for (let i = 0; i < uapi.MOCK_DEV_CACHE_NUM; i++) check(m.idevId, i, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT);
    err('EINVAL', () => check(m.idevId, 0, 0));
    err('EINVAL', () => check(m.idevId, 4, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT));
    err('ENOENT', () => check(m.stdevId, 0, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT));
  });
});

describe('PASID_ATTACH, PASID_REPLACE, PASID_DETACH, PASID_CHECK_HWPT', () => {
  const pasidCmd = (member: 'pasid_attach' | 'pasid_replace', op: number, stdev: number, pasid: number, pt: number) =>
    t.testCmd(member, op, { id: stdev, [`${member}.pasid`]: pasid, [`${member}.pt_id`]: pt })[`${member}.pt_id`];
  const attach = (stdev: number, pasid: number, pt: number) => pasidCmd('pasid_attach', uapi.IOMMU_TEST_OP_PASID_ATTACH, stdev, pasid, pt);
  const replace = (stdev: number, pasid: number, pt: number) => pasidCmd('pasid_replace', uapi.IOMMU_TEST_OP_PASID_REPLACE, stdev, pasid, pt);
  const detach = (stdev: number, pasid: number) => t.testCmd('pasid_detach', uapi.IOMMU_TEST_OP_PASID_DETACH, { id: stdev, 'pasid_detach.pasid': pasid });
  const check = (stdev: number, pasid: number, hwpt: number) => t.testCmd('pasid_check', uapi.IOMMU_TEST_OP_PASID_CHECK_HWPT, { id: stdev, 'pasid_check.pasid': pasid, 'pasid_check.hwpt_id': hwpt });

  it('attach, replace, detach on a PASID with the compatibility rules and the PASID 1024 quirk', () => {
    const m = t.mockDomainFlags(ioasId, uapi.MOCK_FLAGS_DEVICE_PASID);
    const pasidHwpt = (flags = uapi.IOMMU_HWPT_ALLOC_PASID) => t.hwptAlloc(m.idevId, ioasId, flags);
    // The RID's automatic domain is not PASID-compatible, so move the RID first.
    const rid = pasidHwpt();
    t.mockDomainReplace(m.stdevId, rid);
    const h1 = pasidHwpt(), h2 = pasidHwpt();
    const plain = pasidHwpt(0);
    check(m.stdevId, 100, 0);
    err('EINVAL', () => attach(m.stdevId, 100, plain)); // not allocated with IOMMU_HWPT_ALLOC_PASID
    err('EINVAL', () => attach(m.stdevId, 100, ioasId)); // an IOAS makes a non-PASID automatic domain
    expect(attach(m.stdevId, 100, h1)).toBe(h1);
    check(m.stdevId, 100, h1);
    err('EINVAL', () => check(m.stdevId, 100, h2));
    err('EINVAL', () => check(m.stdevId, 100, 0));
    err('EBUSY', () => attach(m.stdevId, 100, h2));
    expect(replace(m.stdevId, 100, h2)).toBe(h2);
    check(m.stdevId, 100, h2);
    err('EINVAL', () => replace(m.stdevId, 101, h2)); // nothing attached there
    detach(m.stdevId, 100);
    detach(m.stdevId, 100); // detaching what is not attached is fine
    check(m.stdevId, 100, 0);
    // IOMMU_TEST_PASID_RESERVED: the second set_dev_pasid fails and the old domain stays.
    attach(m.stdevId, uapi.IOMMU_TEST_PASID_RESERVED, h1);
    err('ENOMEM', () => replace(m.stdevId, uapi.IOMMU_TEST_PASID_RESERVED, h2));
    check(m.stdevId, uapi.IOMMU_TEST_PASID_RESERVED, h1);
    detach(m.stdevId, uapi.IOMMU_TEST_PASID_RESERVED);
    // A device without MOCK_FLAGS_DEVICE_PASID takes no PASID.
    const n = t.mockDomain(ioasId);
    err('EINVAL', () => attach(n.stdevId, 100, h1));
    err('ENOENT', () => attach(n.idevId, 100, h1));
  });
});

describe("host.addDevice({ iommu: 'mock' })", () => {
  it('a VFIO function behind the mock unit DMAs through the mock domain (the VT-d format underneath) and faults outside it', () => {
    const iommufd = new Iommufd(t.host, t.fd);
    const dev = t.host.addDevice({ iommu: 'mock' });
    const vfio = new VfioDevice(t.host, dev.path);
    vfio.bind(iommufd);
    const hwpt = vfio.attach(ioasId);
    t.host.mem.write(t.buffer, new Uint8Array([1, 2, 3, 4]));
    // The aperture starts at MOCK_APERTURE_START: automatic IOVAs land in it.
    const iova = t.ioasMap(ioasId, t.buffer, BUFFER_SIZE);
    expect(iova >= BigInt(MOCK_APERTURE_START)).toBe(true);
    t.checkMap(hwpt, t.buffer, iova, BUFFER_SIZE);
    expect(dev.dma.read(iova, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    dev.dma.write(iova + 2n, new Uint8Array([9]));
    expect(t.host.mem.read(t.buffer + 2, 1)).toEqual(new Uint8Array([9]));
    t.ioasUnmap(ioasId, iova, BUFFER_SIZE);
    expect(() => dev.dma.read(iova, 4)).toThrow(DmaFault);
    t.host.close(vfio.fd);
  });
});
