// Nested HWPTs on VT-d through the binary ioctl face: a guest first-stage
// table (x86-64 format, VT-d 3.6 / 9.7) written into guest RAM, which the
// IOAS maps at its GPAs, allocated with IOMMU_HWPT_DATA_VTD_S1 over a
// NEST_PARENT HWPT, attached, and DMA'd through.
// Sources: hw_pagetable.c (iommufd_hwpt_alloc, iommufd_hwpt_nested_alloc,
// iommufd_hwpt_invalidate), intel/nested.c (intel_iommu_domain_alloc_nested,
// intel_nested_attach_dev, intel_nested_cache_invalidate_user),
// intel/pasid.c (intel_pasid_setup_nested), iommu.c (__iommu_attach_group),
// include/linux/iommu.h (iommu_copy_struct_from_user[_array]), the uAPI
// header's struct iommu_hwpt_vtd_s1 / iommu_hwpt_vtd_s1_invalidate, and
// reference iommufd-uapi.md §2.7, §2.15.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, outcome, dmaFault, expectBytes, Iommufd, VfioDevice, uapi, PAGE, type Host } from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const S1 = uapi.iommu_hwpt_vtd_s1;
const INV = uapi.iommu_hwpt_vtd_s1_invalidate;
// x86-64 paging entry bits (VT-d 9.7; Intel SDM 4.5): P, R/W, U/S, A, D.
const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, D = 1n << 6n;
const GUEST = 4 << 20; // guest RAM, mapped at GPA 0 in the IOAS

let host: Host;
let ictx: Iommufd;
let ioas: number;
let dev: VfioDevice;
let devid: number;
let parent: number;
let ram: number; // VA of guest RAM

const put = (gpa: number, v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  host.mem.write(ram + gpa, b);
};
const get = (gpa: number) => new DataView(host.mem.read(ram + gpa, 8).slice().buffer).getBigUint64(0, true);

/** Guest tables: L4 at GPA 0x1000 -> L3 0x2000 -> L2 0x3000 -> L1 0x4000; L1[5] maps IOVA 0x5000 to GPA 0x10000. */
function buildTables(): void {
  put(0x1000, 0x2000n | P | RW | US);
  put(0x2000, 0x3000n | P | RW | US);
  put(0x3000, 0x4000n | P | RW | US);
  put(0x4000 + 5 * 8, 0x10000n | P | RW | US);
}

/** The driver data in user memory; its VA. */
function s1Data(v: { flags?: bigint; pgtbl_addr?: bigint; addr_width?: number; __reserved?: number } = {}, len = S1.size): number {
  const va = host.mmap(PAGE);
  const b = new Uint8Array(Math.max(len, S1.size));
  S1.encode({ flags: 0n, pgtbl_addr: 0x1000n, addr_width: 48, __reserved: 0, ...v }, b);
  host.mem.write(va, b.subarray(0, len));
  return va;
}

function allocNested(v: Record<string, unknown> = {}): number {
  return ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: S1.size, data_uptr: s1Data(), ...v,
  }).out_hwpt_id;
}

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  dev = new VfioDevice(host, host.addDevice());
  devid = dev.bind(ictx.fd);
  parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
  ram = host.mmap(GUEST);
  ictx.map(ioas, ram, GUEST, 0n);
  buildTables();
});

describe('IOMMU_HWPT_ALLOC of a nested HWPT, in Linux check order', () => {
  it('iommufd_hwpt_nested_alloc: flags other than FAULT_ID_VALID | PASID, or no data, are EOPNOTSUPP', () => {
    expectErrno(() => allocNested({ flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }), 'EOPNOTSUPP');
    expectErrno(() => allocNested({ flags: uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING }), 'EOPNOTSUPP');
    // data_type NONE with data_len 0 passes iommufd_hwpt_alloc, then !user_data->len.
    expectErrno(() => allocNested({ data_type: uapi.IOMMU_HWPT_DATA_NONE, data_len: 0, data_uptr: 0 }), 'EOPNOTSUPP');
  });

  it('a parent that is automatic or not a nest parent is EINVAL, before the data type is looked at', () => {
    const plain = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    expectErrno(() => allocNested({ pt_id: plain, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3 }), 'EINVAL');
    const other = new VfioDevice(host, host.addDevice());
    other.bind(ictx.fd);
    const auto = other.attach(ioas);
    expectErrno(() => allocNested({ pt_id: auto }), 'EINVAL');
  });

  it('a data type other than VTD_S1 is EOPNOTSUPP (intel_iommu_domain_alloc_nested)', () => {
    expectErrno(() => allocNested({ data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: 16 }), 'EOPNOTSUPP');
  });

  it('iommu_copy_struct_from_user: shorter than __reserved\'s end or longer than the struct EINVAL; a bad pointer EFAULT; a short struct zero-extends', () => {
    expectErrno(() => allocNested({ data_len: S1.offsetofend('__reserved') - 1 }), 'EINVAL');
    expectErrno(() => allocNested({ data_len: S1.size + 8, data_uptr: s1Data({}, S1.size + 8) }), 'EINVAL');
    expectErrno(() => allocNested({ data_uptr: 0x10 }), 'EFAULT');
    expect(allocNested()).toBeGreaterThan(parent);
  });

  it('a failed allocation leaves no object behind, and the parent keeps its users count', () => {
    const next = ictx.nextId();
    for (const v of [{ flags: 1 }, { data_len: 8 }, { data_uptr: 0x10 }, { data_type: 99 }]) expect(outcome(() => allocNested(v))).not.toBe('OK');
    expect(ictx.nextId()).toBe(next);
    ictx.destroy(parent); // no nested HWPT holds it
  });

  it('a nested HWPT holds its parent: DESTROY of the parent is EBUSY until the nested one goes', () => {
    const nested = allocNested();
    expectErrno(() => ictx.destroy(parent), 'EBUSY');
    ictx.destroy(nested);
    ictx.destroy(parent);
  });
});

describe('attaching a device to a nested HWPT', () => {
  it('intel_pasid_setup_nested: addr_width not 48/57, 57 without CAP.FS5LP, SRE without ECAP.SRS, EAFE without ECAP.EAFS: EINVAL at attach', () => {
    for (const v of [{ addr_width: 39 }, { addr_width: 57 }, { flags: BigInt(uapi.IOMMU_VTD_S1_SRE) }, { flags: BigInt(uapi.IOMMU_VTD_S1_EAFE) }]) {
      const id = allocNested({ data_uptr: s1Data(v) });
      expectErrno(() => dev.attach(id), 'EINVAL');
      ictx.destroy(id); // nothing holds it: the failed attach left no link
    }
    // WPE needs nothing of the unit.
    expect(dev.attach(allocNested({ data_uptr: s1Data({ flags: BigInt(uapi.IOMMU_VTD_S1_WPE) }) }))).toBeGreaterThan(0);
  });

  it('a device behind another kind of IOMMU cannot attach (__iommu_attach_group: EINVAL)', () => {
    const nested = allocNested();
    const arm = new VfioDevice(host, host.addDevice({ iommu: 'arm-smmuv3' }));
    arm.bind(ictx.fd);
    expectErrno(() => arm.attach(nested), 'EINVAL');
  });

  it('DMA walks the guest table through stage 2: data lands in guest RAM, A set on the path and D on a written leaf', () => {
    const nested = allocNested();
    expect(dev.attach(nested)).toBe(nested);
    const data = Uint8Array.from({ length: 256 }, (_, i) => i ^ 0x5a);
    dev.dma.write(0x5100n, data);
    expectBytes(host.mem.read(ram + 0x10100, 256), data, 'guest RAM at GPA 0x10100');
    expectBytes(dev.dma.read(0x5100n, 256), data, 'read back');
    for (const gpa of [0x1000, 0x2000, 0x3000]) expect(get(gpa) & A, `A at GPA 0x${gpa.toString(16)}`).toBe(A);
    expect(get(0x4000 + 40) & (A | D)).toBe(A | D);
    expectErrno(() => ictx.destroy(nested), 'EBUSY'); // attached
  });

  it('faults are told apart: a missing first-stage entry is stage 1, a GPA the IOAS does not map is stage 2', () => {
    dev.attach(allocNested());
    const s1 = dmaFault(() => dev.dma.read(0x6000n, 4));
    expect({ stage: s1.stage, reason: s1.reason, level: s1.level }).toEqual({ stage: 1, reason: 'not-present', level: 1 });
    put(0x4000 + 6 * 8, BigInt(GUEST + 0x10000) | P | RW | US); // L1[6] -> GPA past guest RAM
    const s2 = dmaFault(() => dev.dma.read(0x6000n, 4));
    expect({ stage: s2.stage, reason: s2.reason }).toEqual({ stage: 2, reason: 'not-present' });
  });

  it('IOAS_UNMAP of guest RAM behind a cached translation: the next DMA faults in stage 2', () => {
    dev.attach(allocNested());
    dev.dma.read(0x5000n, 4);
    expect(ictx.unmap(ioas, 0n, BigInt(GUEST))).toBe(BigInt(GUEST));
    expect(dmaFault(() => dev.dma.read(0x5000n, 4)).stage).toBe(2);
  });

  it('replace (ATTACH_IOMMUFD_PT again) moves the device to the parent: IOVA = GPA, the guest table no longer applies; then back', () => {
    const nested = allocNested();
    dev.attach(nested);
    host.mem.write(ram + 0x10000, Uint8Array.of(1, 2, 3, 4));
    host.mem.write(ram + 0x5000, Uint8Array.of(9, 9, 9, 9));
    expectBytes(dev.dma.read(0x5000n, 4), Uint8Array.of(1, 2, 3, 4));
    expect(dev.attach(parent)).toBe(parent);
    expectBytes(dev.dma.read(0x5000n, 4), Uint8Array.of(9, 9, 9, 9));
    ictx.destroy(nested); // no longer attached
    dev.attach(allocNested());
    expectBytes(dev.dma.read(0x5000n, 4), Uint8Array.of(1, 2, 3, 4));
  });
});

describe('IOMMU_HWPT_INVALIDATE with VT-d stage-1 entries', () => {
  let nested: number;
  beforeEach(() => {
    nested = allocNested();
    dev.attach(nested);
  });

  /** Entries in user memory, each `entryLen` bytes; the VA. */
  function entries(list: { addr: bigint; npages: bigint; flags?: number; __reserved?: number }[], entryLen = INV.size): number {
    const va = host.mmap(PAGE);
    const b = new Uint8Array(list.length * entryLen + INV.size);
    list.forEach((e, i) => INV.encode({ flags: 0, __reserved: 0, ...e }, b, i * entryLen));
    host.mem.write(va, b);
    return va;
  }
  const invalidate = (v: Record<string, unknown>) => ictx.call(T.IOMMU_HWPT_INVALIDATE, {
    hwpt_id: nested, data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entry_len: INV.size, ...v,
  });
  /** Retarget L1[5] (IOVA 0x5000) to GPA 0x11000, without telling the IOMMU. */
  function remap(): void {
    host.mem.write(ram + 0x10000, Uint8Array.of(1));
    host.mem.write(ram + 0x11000, Uint8Array.of(2));
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1); // cached
    put(0x4000 + 5 * 8, 0x11000n | P | RW | US);
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1); // still cached: the IOTLB holds the old translation until invalidated
  }

  it('an entry for the page drops the cached translation; entry_num says how many were handled', () => {
    remap();
    const { out } = invalidate({ data_uptr: entries([{ addr: 0x5000n, npages: 1n }]), entry_num: 1 });
    expect(out.entry_num).toBe(1);
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(2);
  });

  it('npages = U64_MAX with addr 0 invalidates everything; with another addr it is EINVAL', () => {
    remap();
    const all = (1n << 64n) - 1n;
    let r: { out: Record<string, number> } | undefined;
    expectErrno(() => { r = invalidate({ data_uptr: entries([{ addr: 0x1000n, npages: all }]), entry_num: 1 }); }, 'EINVAL');
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1);
    r = invalidate({ data_uptr: entries([{ addr: 0n, npages: all }]), entry_num: 1 });
    expect(r.out.entry_num).toBe(1);
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(2);
  });

  it('a bad entry stops the array: entry_num is written back with the entries before it (on failure too)', () => {
    const bytes = (list: Parameters<typeof entries>[0]) => ({ data_uptr: entries(list), entry_num: list.length });
    const cases: [Parameters<typeof entries>[0], string, number][] = [
      [[{ addr: 0n, npages: 1n }, { addr: 0n, npages: 1n, flags: 2 }], 'EOPNOTSUPP', 1], // flags other than LEAF
      [[{ addr: 0n, npages: 1n, flags: uapi.IOMMU_VTD_INV_FLAGS_LEAF }, { addr: 0n, npages: 1n, __reserved: 1 }], 'EOPNOTSUPP', 1],
      [[{ addr: 0n, npages: 1n }, { addr: 0n, npages: 1n }, { addr: 0x1234n, npages: 1n }], 'EINVAL', 2], // unaligned addr
    ];
    for (const [list, code, done] of cases) {
      const req = { hwpt_id: nested, data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entry_len: INV.size, size: T.IOMMU_HWPT_INVALIDATE.struct.size, ...bytes(list) };
      const buf = new Uint8Array(T.IOMMU_HWPT_INVALIDATE.struct.size);
      T.IOMMU_HWPT_INVALIDATE.struct.encode(req, buf);
      expectErrno(() => host.ioctl(ictx.fd, T.IOMMU_HWPT_INVALIDATE.request, buf), code as 'EINVAL');
      expect(T.IOMMU_HWPT_INVALIDATE.struct.decode(buf).entry_num, `${code} after ${done}`).toBe(done);
    }
  });

  it('entry_len shorter than __reserved\'s end or longer than the struct, and another data type, are EINVAL with entry_num 0', () => {
    for (const v of [{ entry_len: INV.offsetofend('__reserved') - 8 }, { entry_len: INV.size + 8 }, { data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 + 1 }]) {
      const buf = new Uint8Array(T.IOMMU_HWPT_INVALIDATE.struct.size);
      T.IOMMU_HWPT_INVALIDATE.struct.encode({
        size: buf.length, hwpt_id: nested, data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entry_len: INV.size,
        data_uptr: entries([{ addr: 0n, npages: 1n }], INV.size + 8), entry_num: 1, ...v,
      }, buf);
      expectErrno(() => host.ioctl(ictx.fd, T.IOMMU_HWPT_INVALIDATE.request, buf), 'EINVAL');
      expect(T.IOMMU_HWPT_INVALIDATE.struct.decode(buf).entry_num).toBe(0);
    }
  });

  it('entries are read at entry_len strides: the second of two entries takes effect', () => {
    remap();
    const { out } = invalidate({ data_uptr: entries([{ addr: 0x9000n, npages: 1n }, { addr: 0x5000n, npages: 1n }]), entry_num: 2 });
    expect(out.entry_num).toBe(2);
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(2);
  });

  it('a paging HWPT is EINVAL (only nested HWPTs and vIOMMUs take invalidations)', () => {
    expectErrno(() => invalidate({ hwpt_id: parent, data_uptr: entries([{ addr: 0n, npages: 1n }]), entry_num: 1 }), 'EINVAL');
  });
});
