// IOMMU_HWPT_ALLOC for paging HWPTs, manual HWPT lifetime, and PASID attach.
// Expectations from drivers/iommu/iommufd/hw_pagetable.c (iommufd_hwpt_alloc,
// iommufd_hwpt_paging_alloc, iommufd_hwpt_nested_alloc), device.c (attach and
// PASID compatibility), reference iommufd-uapi.md §2.11 and §3.1, and the
// selftest tools/testing/selftests/iommu/iommufd.c where named.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, Iommufd, VfioDevice, boundDevice, uapi, PAGE, type Host } from './support/host.js';
import { DmaFault } from '../host/index.js';

const T = uapi.IOMMUFD_IOCTL;
const NEST_PARENT = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT;
const FAULT_ID_VALID = uapi.IOMMU_HWPT_FAULT_ID_VALID;
const ALLOC_PASID = uapi.IOMMU_HWPT_ALLOC_PASID;

let host: Host;
let ictx: Iommufd;
let ioas: number;
let dev: VfioDevice;
let devid: number;

function hwptAlloc(values: Record<string, unknown>): number {
  return ictx.ioctl(T.IOMMU_HWPT_ALLOC, values).out_hwpt_id;
}

/** The id the next object would get (ids: lowest free first), found by allocating and destroying an IOAS. */
function nextId(): number {
  const id = ictx.ioasAlloc();
  ictx.destroy(id);
  return id;
}

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  ({ dev, devid } = boundDevice(host, ictx));
});

describe('IOMMU_HWPT_ALLOC check order (iommufd_hwpt_alloc)', () => {
  it('__reserved first: EOPNOTSUPP even with a bad device', () => {
    expectErrno(() => hwptAlloc({ __reserved: 1, dev_id: 999, pt_id: ioas }), 'EOPNOTSUPP');
  });

  it('data_type and data_len must agree (EINVAL), before the device lookup', () => {
    expectErrno(() => hwptAlloc({ dev_id: 999, pt_id: ioas, data_len: 24 }), 'EINVAL');
    expectErrno(() => hwptAlloc({ dev_id: 999, pt_id: ioas, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1 }), 'EINVAL');
  });

  it('dev_id must be a DEVICE (ENOENT), before pt_id', () => {
    expectErrno(() => hwptAlloc({ dev_id: 999, pt_id: 998 }), 'ENOENT');
    expectErrno(() => hwptAlloc({ dev_id: ioas, pt_id: ioas }), 'ENOENT');
  });

  it('a pt_id that does not exist is EINVAL, not ENOENT; a DEVICE as pt_id is EINVAL', () => {
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: 998 }), 'EINVAL');
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: devid }), 'EINVAL');
  });

  it('paging: unknown flags, and FAULT_ID_VALID with NEST_PARENT, are EOPNOTSUPP (iommufd_hwpt_paging_alloc)', () => {
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: ioas, flags: 1 << 4 }), 'EOPNOTSUPP');
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: ioas, flags: FAULT_ID_VALID | NEST_PARENT, fault_id: 1 }), 'EOPNOTSUPP');
  });

  it('paging: driver data is refused by the driver (domain_alloc_paging_flags with user_data: EOPNOTSUPP)', () => {
    const va = host.mmap(PAGE);
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: ioas, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: 24, data_uptr: va }), 'EOPNOTSUPP');
  });

  it('FAULT_ID_VALID with a missing fault object is ENOENT and leaves no HWPT behind', () => {
    const before = nextId();
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: ioas, flags: FAULT_ID_VALID, fault_id: 77 }), 'ENOENT');
    expect(nextId()).toBe(before);
    ictx.destroy(ioas); // the IOAS is not held by a leftover HWPT
  });

  it('a nested HWPT on a paging HWPT: bad flags or no data are EOPNOTSUPP (iommufd_hwpt_nested_alloc)', () => {
    const parent = hwptAlloc({ dev_id: devid, pt_id: ioas, flags: NEST_PARENT });
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: parent, flags: NEST_PARENT, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: 24, data_uptr: 0x1000 }), 'EOPNOTSUPP');
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: parent }), 'EOPNOTSUPP');
  });

  it('size rules (reference §1): 23 bytes EINVAL, 24 accepted, a non-zero tail past 48 E2BIG', () => {
    const s = uapi.iommu_hwpt_alloc;
    const call = (size: number, tail = 0) => {
      const b = new Uint8Array(Math.max(size, s.size) + 1);
      s.encode({ size, dev_id: devid, pt_id: ioas }, b);
      b.fill(0, size);
      new DataView(b.buffer).setUint32(0, size, true);
      if (size > s.size) b[s.size] = tail;
      host.ioctl(ictx.fd, uapi.IOMMU_HWPT_ALLOC, b);
      return s.get(b, 'out_hwpt_id');
    };
    expectErrno(() => call(23), 'EINVAL');
    expect(call(24)).toBeGreaterThan(0);
    expectErrno(() => call(49, 0xff), 'E2BIG');
    expect(call(49, 0)).toBeGreaterThan(0);
  });
});

describe('manual HWPT_PAGING', () => {
  it('is filled from the IOAS without a device, stays in sync, and serves a device attached to it by id', () => {
    const va = host.mmap(4 * PAGE);
    host.mem.write(va, new Uint8Array([1, 2, 3]));
    ictx.map(ioas, va, PAGE, 0x10000);
    const hwpt = hwptAlloc({ dev_id: devid, pt_id: ioas });
    host.mem.write(va + PAGE, new Uint8Array([4, 5, 6]));
    ictx.map(ioas, va + PAGE, PAGE, 0x20000); // after the alloc: kept in sync
    expect(dev.attach(hwpt)).toBe(hwpt);
    expect([...dev.dma.read(0x10000, 3)]).toEqual([1, 2, 3]);
    expect([...dev.dma.read(0x20000, 3)]).toEqual([4, 5, 6]);
  });

  it('holds its IOAS (DESTROY IOAS: EBUSY) and is never picked by an automatic attach', () => {
    const hwpt = hwptAlloc({ dev_id: devid, pt_id: ioas });
    expectErrno(() => ictx.destroy(ioas), 'EBUSY');
    const auto = dev.attach(ioas);
    expect(auto).not.toBe(hwpt);
    dev.detach();
    ictx.destroy(hwpt);
    ictx.destroy(ioas);
  });

  it('DESTROY is EBUSY while a device is attached; a manual HWPT survives its last detach', () => {
    const hwpt = hwptAlloc({ dev_id: devid, pt_id: ioas });
    dev.attach(hwpt);
    expectErrno(() => ictx.destroy(hwpt), 'EBUSY');
    dev.detach();
    expect(hwptAlloc({ dev_id: devid, pt_id: ioas })).toBe(hwpt + 1); // hwpt still holds its id
    ictx.destroy(hwpt);
  });

  it('fails without a trace when an area lies outside the aperture (iopt_table_add_domain: EADDRINUSE)', () => {
    const va = host.mmap(PAGE);
    ictx.map(ioas, va, PAGE, 1n << 50n); // no domain yet: any IOVA
    const before = nextId();
    expectErrno(() => hwptAlloc({ dev_id: devid, pt_id: ioas }), 'EADDRINUSE');
    expect(nextId()).toBe(before);
    expect(ictx.iovaRanges(ioas).ranges).toEqual([{ start: 0n, last: (1n << 64n) - 1n }]); // no reservation left
    expect(ictx.unmap(ioas, 0, (1n << 64n) - 1n)).toBe(BigInt(PAGE));
    ictx.destroy(ioas);
  });

  it('pins once for several HWPTs of one IOAS (pages are pinned per IOAS, not per domain)', () => {
    const va = host.mmap(PAGE);
    ictx.map(ioas, va, PAGE, 0x10000);
    const h1 = hwptAlloc({ dev_id: devid, pt_id: ioas });
    dev.attach(h1);
    const pfn = Math.floor(dev.dma.translate(0x10000).pa / PAGE);
    const refs = host.engine.refcount(pfn);
    const h2 = hwptAlloc({ dev_id: devid, pt_id: ioas });
    expect(host.engine.refcount(pfn)).toBe(refs);
    ictx.destroy(h2);
    expect(host.engine.refcount(pfn)).toBe(refs);
  });
});

describe('PASID attach (device.c, iommu_attach_device_pasid)', () => {
  async function pasidDevice(): Promise<{ d: VfioDevice; id: number }> {
    const d = new VfioDevice(host, host.addDevice({ pasidBits: 20 }));
    return { d, id: d.bind(ictx.fd) };
  }
  const attachPasid = (d: VfioDevice, pt: number, pasid: number) => d.attach(pt, { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid });
  const detachPasid = (d: VfioDevice, pasid: number) => d.detach({ flags: uapi.VFIO_DEVICE_DETACH_PASID, pasid });

  it('a device without the PASID capability cannot attach a PASID (EINVAL)', () => {
    const compat = hwptAlloc({ dev_id: devid, pt_id: ioas, flags: ALLOC_PASID });
    expectErrno(() => attachPasid(dev, compat, 1), 'EINVAL');
  });

  it('a PASID needs a HWPT allocated with IOMMU_HWPT_ALLOC_PASID; an IOAS (auto domain) is EINVAL', async () => {
    const { d, id } = await pasidDevice();
    const plain = hwptAlloc({ dev_id: id, pt_id: ioas });
    expectErrno(() => attachPasid(d, plain, 1), 'EINVAL');
    expectErrno(() => attachPasid(d, ioas, 1), 'EINVAL');
  });

  it('a PASID past the device width is EINVAL', async () => {
    const { d, id } = await pasidDevice();
    const compat = hwptAlloc({ dev_id: id, pt_id: ioas, flags: ALLOC_PASID });
    expectErrno(() => attachPasid(d, compat, 1 << 20), 'EINVAL');
  });

  it('DMA with a PASID goes through that PASID\'s HWPT; other PASIDs stay blocked; detach blocks it again', async () => {
    const { d, id } = await pasidDevice();
    const va = host.mmap(PAGE);
    host.mem.write(va, new Uint8Array([42]));
    ictx.map(ioas, va, PAGE, 0x30000);
    const compat = hwptAlloc({ dev_id: id, pt_id: ioas, flags: ALLOC_PASID });
    expect(attachPasid(d, compat, 5)).toBe(compat);
    expect([...d.dma.read(0x30000, 1, { pasid: 5 })]).toEqual([42]);
    expect(() => d.dma.read(0x30000, 1, { pasid: 6 })).toThrow(DmaFault);
    expect(() => d.dma.read(0x30000, 1)).toThrow(/blocked/); // the RID is not attached
    expectErrno(() => ictx.destroy(compat), 'EBUSY');
    detachPasid(d, 5);
    expect(() => d.dma.read(0x30000, 1, { pasid: 5 })).toThrow(/blocked/);
    ictx.destroy(compat);
  });

  it('the RID on a non-PASID-compatible HWPT forbids PASID attach, and a PASID attached forbids such a RID attach', async () => {
    const { d, id } = await pasidDevice();
    const plain = hwptAlloc({ dev_id: id, pt_id: ioas });
    const compat = hwptAlloc({ dev_id: id, pt_id: ioas, flags: ALLOC_PASID });
    d.attach(plain);
    expectErrno(() => attachPasid(d, compat, 1), 'EINVAL');
    d.detach();
    attachPasid(d, compat, 1);
    expectErrno(() => d.attach(plain), 'EINVAL');
    expect(d.attach(compat)).toBe(compat); // a compatible RID HWPT is fine
  });
});
