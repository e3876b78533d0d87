// The vIOMMU family's argument checks, in Linux's order, and units without
// vIOMMU support (VT-d nests through HWPT_NESTED, AMD not at all): each call
// fails where Linux's fails on such hardware. The SMMUv3 vIOMMU itself is
// test/iommufd-vsmmu.test.ts.
// Sources: viommu.c (iommufd_viommu_alloc_ioctl, iommufd_vdevice_alloc_ioctl,
// iommufd_hw_queue_alloc_ioctl), eventq.c (iommufd_veventq_alloc),
// hw_pagetable.c (iommufd_hwpt_invalidate), reference iommufd-uapi.md §2.15,
// §6, §7.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, Iommufd, boundDevice, uapi, type Host } from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
let host: Host;
let ictx: Iommufd;
let ioas: number;
let devid: number;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  ({ devid } = boundDevice(host, ictx));
});

describe('IOMMU_VIOMMU_ALLOC', () => {
  it('flags or the DEFAULT type: EOPNOTSUPP, before the device lookup', () => {
    expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { flags: 1, type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: 99 }), 'EOPNOTSUPP');
    expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_DEFAULT, dev_id: 99 }), 'EOPNOTSUPP');
  });

  it('a missing device is ENOENT; a unit without vIOMMU ops is EOPNOTSUPP, before the HWPT is looked at', () => {
    expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: 99 }), 'ENOENT');
    for (const iommu of ['intel-vtd', 'amd-vi'] as const) {
      const id = boundDeviceOn(host.addDevice({ iommu }).path);
      expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: id, hwpt_id: 999 }), 'EOPNOTSUPP');
    }
    // The SMMUv3 knows ARM_SMMUV3 only (get_viommu_size 0 for TEGRA241 without CMDQV), then looks the HWPT up.
    const arm = boundDeviceOn(host.addDevice({ iommu: 'arm-smmuv3' }).path);
    expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, dev_id: arm, hwpt_id: 999 }), 'EOPNOTSUPP');
    expectErrno(() => ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: arm, hwpt_id: 999 }), 'ENOENT');
  });

  function boundDeviceOn(path: string): number {
    const b = uapi.vfio_device_bind_iommufd.encode({ argsz: uapi.vfio_device_bind_iommufd.size, iommufd: ictx.fd });
    host.ioctl(host.open(path), uapi.VFIO_DEVICE_BIND_IOMMUFD, b);
    return uapi.vfio_device_bind_iommufd.get(b, 'out_devid');
  }
});

describe('IOMMU_VDEVICE_ALLOC, IOMMU_VEVENTQ_ALLOC, IOMMU_HW_QUEUE_ALLOC', () => {
  it('VDEVICE: the vIOMMU is looked up first: ENOENT (also for a non-vIOMMU id)', () => {
    expectErrno(() => ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: 99, dev_id: devid, virt_id: 1n }), 'ENOENT');
    expectErrno(() => ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: ioas, dev_id: devid, virt_id: 1n }), 'ENOENT');
  });

  it('VEVENTQ: flags, __reserved or DEFAULT type EOPNOTSUPP; depth 0 or past 1 << 19 EINVAL; then ENOENT', () => {
    const q = (v: Record<string, number>) => ictx.ioctl(T.IOMMU_VEVENTQ_ALLOC, { viommu_id: 99, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 8, ...v });
    expectErrno(() => q({ flags: 1 }), 'EOPNOTSUPP');
    expectErrno(() => q({ __reserved: 1 }), 'EOPNOTSUPP');
    expectErrno(() => q({ type: uapi.IOMMU_VEVENTQ_TYPE_DEFAULT }), 'EOPNOTSUPP');
    expectErrno(() => q({ veventq_depth: 0 }), 'EINVAL');
    expectErrno(() => q({ veventq_depth: (1 << 19) + 1 }), 'EINVAL');
    expectErrno(() => q({ veventq_depth: 1 << 19 }), 'ENOENT');
  });

  it('HW_QUEUE: flags or DEFAULT type EOPNOTSUPP; length 0 EINVAL; an overflowing range EOVERFLOW; then ENOENT', () => {
    const q = (v: Record<string, number | bigint>) => ictx.ioctl(T.IOMMU_HW_QUEUE_ALLOC, { viommu_id: 99, type: uapi.IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, length: 4096n, ...v });
    expectErrno(() => q({ flags: 1 }), 'EOPNOTSUPP');
    expectErrno(() => q({ type: uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT }), 'EOPNOTSUPP');
    expectErrno(() => q({ length: 0n }), 'EINVAL');
    expectErrno(() => q({ nesting_parent_iova: (1n << 64n) - 4096n, length: 8192n }), 'EOVERFLOW');
    expectErrno(() => q({}), 'ENOENT');
  });
});

describe('IOMMU_HWPT_INVALIDATE', () => {
  const inval = (v: Record<string, number | bigint>) => {
    const s = uapi.iommu_hwpt_invalidate;
    const b = s.encode({ size: s.size, hwpt_id: ioas, data_uptr: 0x1000n, entry_len: 24, entry_num: 3, ...v });
    let code = 'OK';
    try { host.ioctl(ictx.fd, uapi.IOMMU_HWPT_INVALIDATE, b); } catch (e) { code = (e as { code: string }).code; }
    return { code, entryNum: s.get(b, 'entry_num') };
  };

  it('entry_num is written back (0) on every failure', () => {
    expect(inval({ __reserved: 1 })).toEqual({ code: 'EOPNOTSUPP', entryNum: 0 });
  });

  it('with entries: a NULL pointer, entry_len 0 or past a page, or more than 1 << 19 entries are EINVAL', () => {
    expect(inval({ data_uptr: 0n }).code).toBe('EINVAL');
    expect(inval({ entry_len: 0 }).code).toBe('EINVAL');
    expect(inval({ entry_len: 4097 }).code).toBe('EINVAL');
    expect(inval({ entry_num: (1 << 19) + 1 }).code).toBe('EINVAL');
  });

  it('an unknown id is ENOENT; a paging HWPT or an IOAS is EINVAL (newest kernels)', () => {
    expect(inval({ hwpt_id: 99 })).toEqual({ code: 'ENOENT', entryNum: 0 });
    expect(inval({ hwpt_id: ioas, entry_num: 0 })).toEqual({ code: 'EINVAL', entryNum: 0 });
    const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    expect(inval({ hwpt_id: hwpt })).toEqual({ code: 'EINVAL', entryNum: 0 });
  });
});
