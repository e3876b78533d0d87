// ATS: translation requests answered like PCIe Translation Completions, the
// function's Address Translation Cache, and the invalidations that reach it.
// Sources: the PCIe Base Specification chapter 10 (§10.2.2 Translation
// Request: No Write; §10.2.3 Translation Completion: Translated Address, S
// bit size encoding, R and W, R = W = 0 for "no translation", UR and CA
// completion statuses; §10.3 Invalidate Requests, after which the function
// must not use the invalidated translations); include/uapi/linux/iommufd.h
// (IOMMU_IOAS_UNMAP, IOMMU_HWPT_INVALIDATE with struct
// iommu_hwpt_vtd_s1_invalidate); VT-d (ecap.DT: device-TLB, the
// qi_flush_dev_iotlb that follows an IOTLB flush); reference
// iommufd-uapi.md §2.8, §2.15, §3.1.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, Iommufd, VfioDevice, uapi, PAGE, type Host, type DeviceHandle } from './support/host.js';
import { atsSizeOf, atsField, ATC_ENTRIES } from '../host/kernel/ats.js';

const T = uapi.IOMMUFD_IOCTL;
const IOVA = 0x4000_0000;
const MB2 = 2 << 20;

let host: Host;
let ictx: Iommufd;
let ioas: number;
let handle: DeviceHandle;
let dev: VfioDevice;
let devid: number;
let va: number;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  handle = host.addDevice({ ats: true, pasidBits: 20 });
  dev = new VfioDevice(host, handle);
  devid = dev.bind(ictx.fd);
  dev.attach(ioas);
  va = host.mmap(4 * MB2);
});

/** Physical address of an IOVA as the IOMMU translates it. */
const pa = (iova: number) => handle.dma.translate(iova).pa;

describe('who may send Translation Requests', () => {
  it('a VT-d function with ATS (ecap.DT = 1): supported; without the capability, or behind a unit without ATS: EOPNOTSUPP', () => {
    expect(handle.ats.supported).toBe(true);
    expectErrno(() => host.addDevice().ats.translate(IOVA), 'EOPNOTSUPP');
    expectErrno(() => host.addDevice({ iommu: 'arm-smmuv3', ats: true }).ats.translate(IOVA), 'EOPNOTSUPP'); // IDR0.ATS = 0
    expectErrno(() => host.addDevice({ iommu: 'amd-vi', ats: true }).ats.translate(IOVA), 'EOPNOTSUPP');
  });

  it('a PASID with nothing attached: Unsupported Request (no context for it)', () => {
    expect(handle.ats.translate(IOVA, { pasid: 3 })).toMatchObject({ status: 'UR', r: false, w: false });
    expect(handle.ats.size).toBe(0);
  });
});

describe('Translation Completions (PCIe §10.2.3)', () => {
  it('a 4 KiB page: S = 0, the Translated Address is the page\'s physical base, R and W as mapped', () => {
    ictx.map(ioas, va, PAGE, IOVA);
    const c = handle.ats.translate(IOVA + 0x123, { write: true });
    expect(c).toMatchObject({ status: 'SC', iova: BigInt(IOVA), size: PAGE, s: false, r: true, w: true, cached: false });
    expect(c.address).toBe(pa(IOVA));
    expect(c.field).toBe(BigInt(pa(IOVA)));
  });

  it('No Write set (write: false): the completion grants no write even on a writable page', () => {
    ictx.map(ioas, va, PAGE, IOVA);
    expect(handle.ats.translate(IOVA)).toMatchObject({ r: true, w: false });
  });

  it('a read-only page asked for write: R = 1, W = 0', () => {
    ictx.map(ioas, va, PAGE, IOVA, uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA);
    expect(handle.ats.translate(IOVA, { write: true })).toMatchObject({ status: 'SC', r: true, w: false });
  });

  it('a page not mapped: a successful completion with R = W = 0, which is not cached', () => {
    expect(handle.ats.translate(IOVA)).toMatchObject({ status: 'SC', r: false, w: false });
    expect(handle.ats.size).toBe(0);
    expect(handle.ats.translate(IOVA).cached).toBe(false);
  });

  it('a 2 MiB leaf: S = 1 and address bits 12..19 set, 20 clear encode 2 MiB', () => {
    const big = va + ((MB2 - (va % MB2)) % MB2); // a 2 MiB aligned VA: contiguous frames make a 2 MiB IOPTE
    ictx.map(ioas, big, MB2, IOVA);
    expect(handle.dma.translate(IOVA).size).toBe(MB2);
    const c = handle.ats.translate(IOVA + 0x12345);
    expect(c).toMatchObject({ status: 'SC', iova: BigInt(IOVA), size: MB2, s: true });
    expect(c.address % MB2).toBe(0);
    expect(c.address).toBe(pa(IOVA));
    expect(c.field & 0x1f_f000n).toBe(0x0f_f000n);
    expect(atsSizeOf(c.field, c.s)).toBe(MB2);
  });

  it('the S-bit size encoding: bit 12 clear is 8 KiB, 12 set and 13 clear 16 KiB, S = 0 is 4 KiB', () => {
    expect(atsSizeOf(0x1_0000_0000n, false)).toBe(4096);
    expect(atsSizeOf(0x1_0000_0000n, true)).toBe(8192);
    expect(atsSizeOf(0x1_0000_1000n, true)).toBe(16384);
    expect(atsSizeOf(0x1_0000_7000n, true)).toBe(65536);
    for (const size of [8192, 65536, MB2, 1 << 30]) {
      const { field, s } = atsField(4 * size, size);
      expect(s).toBe(true);
      expect(atsSizeOf(field, s)).toBe(size);
      expect(field & ~BigInt(size - 1)).toBe(BigInt(4 * size));
    }
  });
});

describe('the ATC', () => {
  it('a second translation is served from the ATC; a write needs an entry with W', () => {
    ictx.map(ioas, va, PAGE, IOVA);
    handle.ats.translate(IOVA);
    expect(handle.ats.translate(IOVA + 8)).toMatchObject({ cached: true, w: false });
    expect(handle.ats.lookup(IOVA, { write: true })).toBeNull();
    expect(handle.ats.translate(IOVA, { write: true })).toMatchObject({ cached: false, w: true });
    expect(handle.ats.stats()).toMatchObject({ hits: 1, requests: 2 });
    expect(handle.ats.lookup(IOVA, { pasid: 1 })).toBeNull(); // entries are per PASID
  });

  it(`holds at most ${ATC_ENTRIES} entries, the least recently used going first`, () => {
    ictx.map(ioas, va, (ATC_ENTRIES + 1) * PAGE, IOVA);
    for (let i = 0; i <= ATC_ENTRIES; i++) handle.ats.translate(IOVA + i * PAGE);
    expect(handle.ats.size).toBe(ATC_ENTRIES);
    expect(handle.ats.lookup(IOVA)).toBeNull();
    expect(handle.ats.lookup(IOVA + ATC_ENTRIES * PAGE)).not.toBeNull();
  });
});

describe('invalidations reach the ATC before they return (PCIe §10.3)', () => {
  it('IOAS_UNMAP drops the entries it covers, and only those', () => {
    for (let i = 0; i < 4; i++) ictx.map(ioas, va + i * PAGE, PAGE, IOVA + i * PAGE); // areas: an unmap takes whole ones
    for (let i = 0; i < 4; i++) handle.ats.translate(IOVA + i * PAGE);
    ictx.unmap(ioas, IOVA + PAGE, 2 * PAGE);
    expect(handle.ats.lookup(IOVA)).not.toBeNull();
    expect(handle.ats.lookup(IOVA + PAGE)).toBeNull();
    expect(handle.ats.lookup(IOVA + 2 * PAGE)).toBeNull();
    expect(handle.ats.lookup(IOVA + 3 * PAGE)).not.toBeNull();
    expect(handle.ats.stats().dropped).toBe(2);
    expect(handle.ats.translate(IOVA + PAGE)).toMatchObject({ r: false, w: false }); // the IOMMU agrees
  });

  it('a remap after the unmap translates to the new page', () => {
    ictx.map(ioas, va, PAGE, IOVA);
    const old = handle.ats.translate(IOVA).address;
    ictx.unmap(ioas, IOVA, PAGE);
    ictx.map(ioas, va + 8 * PAGE, PAGE, IOVA);
    const now = handle.ats.translate(IOVA);
    expect(now.cached).toBe(false);
    expect(now.address).not.toBe(old);
    expect(now.address).toBe(pa(IOVA));
  });

  it('an unmap in another IOAS sends this function no Invalidate Request', () => {
    const other = new VfioDevice(host, host.addDevice({ ats: true }));
    other.bind(ictx.fd);
    const ioas2 = ictx.ioasAlloc();
    other.attach(ioas2);
    ictx.map(ioas, va, PAGE, IOVA);
    ictx.map(ioas2, va, PAGE, IOVA);
    handle.ats.translate(IOVA);
    other.handle.ats.translate(IOVA);
    ictx.unmap(ioas2, IOVA, PAGE);
    expect(other.handle.ats.size).toBe(0);
    expect(handle.ats.size).toBe(1);
    expect(handle.ats.stats().invalidations).toBe(0);
  });

  it('replace and detach drop the PASID\'s entries (the context changes)', () => {
    ictx.map(ioas, va, PAGE, IOVA);
    handle.ats.translate(IOVA);
    const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    dev.attach(hwpt); // VFIO attach of an attached device: iommufd_device_replace
    expect(handle.ats.size).toBe(0);
    expect(handle.ats.translate(IOVA)).toMatchObject({ status: 'SC', r: true }); // the new domain maps it too
    expect(handle.ats.size).toBe(1);
    dev.detach();
    expect(handle.ats.size).toBe(0);
    expect(handle.ats.translate(IOVA).status).toBe('UR');
  });
});

// A VT-d nested HWPT (see iommufd-nested.test.ts): guest first-stage tables in guest RAM at GPA 0.
describe('nested translations: HWPT_INVALIDATE and a stage-2 unmap reach the ATC', () => {
  const P = 1n, RW = 2n, US = 4n;
  const GUEST = 4 << 20;
  let ram: number;
  let parent: number;
  let nested: number;
  const put = (gpa: number, v: bigint) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    host.mem.write(ram + gpa, b);
  };
  beforeEach(() => {
    dev.detach();
    parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
    ram = host.mmap(GUEST);
    ictx.map(ioas, ram, GUEST, 0n);
    put(0x1000, 0x2000n | P | RW | US);
    put(0x2000, 0x3000n | P | RW | US);
    put(0x3000, 0x4000n | P | RW | US);
    put(0x4000 + 5 * 8, 0x10000n | P | RW | US); // IOVA 0x5000 -> GPA 0x10000
    const data = host.mmap(PAGE);
    host.mem.write(data, uapi.iommu_hwpt_vtd_s1.encode({ flags: 0n, pgtbl_addr: 0x1000n, addr_width: 48, __reserved: 0 }));
    nested = ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
      dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: uapi.iommu_hwpt_vtd_s1.size, data_uptr: data,
    }).out_hwpt_id;
    dev.attach(nested);
  });

  it('a guest table change is invisible until HWPT_INVALIDATE, which drops the ATC entry before it returns', () => {
    const before = handle.ats.translate(0x5000);
    expect(before.address).toBe(pa(0x5000));
    put(0x4000 + 5 * 8, 0x11000n | P | RW | US); // retarget without telling the IOMMU
    expect(handle.ats.translate(0x5000)).toMatchObject({ cached: true, address: before.address });
    const inv = uapi.iommu_hwpt_vtd_s1_invalidate;
    const entries = host.mmap(PAGE);
    host.mem.write(entries, inv.encode({ addr: 0x5000n, npages: 1n, flags: 0, __reserved: 0 }));
    ictx.ioctl(T.IOMMU_HWPT_INVALIDATE, { hwpt_id: nested, data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entry_len: inv.size, data_uptr: entries, entry_num: 1 });
    expect(handle.ats.lookup(0x5000)).toBeNull();
    const after = handle.ats.translate(0x5000);
    expect(after.address).toBe(before.address + 0x1000); // GPA 0x11000: the next page of the same contiguous guest RAM
  });

  it('IOAS_UNMAP of the parent (stage 2) drops the nested domain\'s entries', () => {
    handle.ats.translate(0x5000);
    ictx.unmap(ioas, 0, GUEST);
    expect(handle.ats.size).toBe(0);
  });
});
