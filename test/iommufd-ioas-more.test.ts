/**
 * The rest of the IOAS ioctls on the binary face of /dev/iommu:
 * IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_COPY, IOMMU_IOAS_MAP_FILE,
 * IOMMU_IOAS_CHANGE_PROCESS, IOMMU_OPTION (RLIMIT_MODE, HUGE_PAGES) and
 * IOMMU_VFIO_IOAS, the extensible-struct rules for each of them, page pinning
 * and its RLIMIT_MEMLOCK accounting, and the rule that a failed call leaves no
 * trace (no area, no pinned page, no object).
 *
 * Every expectation names its source: the reference
 * /work/shared/reference/iommufd-uapi.md ("ref §N"), a kernel function
 * (drivers/iommu/iommufd/{main,ioas,io_pagetable,pages,device,vfio_compat}.c,
 * mm/gup.c, mm/shmem.c), or a case of the selftest
 * tools/testing/selftests/iommu/iommufd.c ("selftest <fixture> <case>").
 * Where the implementation and Linux disagree the test is written from Linux
 * and says so ("Linux: ...").
 */
import { describe, it, expect, beforeEach } from 'vitest';
import { PROT_READ, PROT_WRITE, MAP_SHARED } from '../host/index.js';
import {
  newHost, expectErrno, outcome, dmaFault, Iommufd, VfioDevice, boundDevice, pfnAt, callStruct, pattern, memfd,
  PAGE, U64_MAX, uapi, type Host,
} from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const { IOMMU_IOAS_MAP_FIXED_IOVA: FIXED, IOMMU_IOAS_MAP_READABLE: R, IOMMU_IOAS_MAP_WRITEABLE: W } = uapi;
const RW = R | W;
const { IOMMU_OPTION_RLIMIT_MODE: RLIMIT_MODE, IOMMU_OPTION_HUGE_PAGES: HUGE_PAGES, IOMMU_OPTION_OP_SET: OP_SET, IOMMU_OPTION_OP_GET: OP_GET } = uapi;
const { IOMMU_VFIO_IOAS_GET: VFIO_GET, IOMMU_VFIO_IOAS_SET: VFIO_SET, IOMMU_VFIO_IOAS_CLEAR: VFIO_CLEAR } = uapi;
/** ULONG_MAX on the 64-bit ABI. */
const ULONG_MAX = U64_MAX;
const P = 4096n;
/** HPAGE_SIZE with THP (x86-64): the largest alignment iopt_alloc_iova() takes from the address. */
const HPAGE = 2 << 20;
/** VT-d's interrupt window, reserved per attached device (intel_iommu_get_resv_regions, IOAPIC_RANGE_START/END). */
const MSI_START = 0xfee0_0000n;
const MSI_LAST = 0xfeef_ffffn;
/** A 4-level VT-d second stage: aperture [0, 2^48 - 1]; [2^48, ULONG_MAX] is reserved. */
const APERTURE_LAST = (1n << 48n) - 1n;

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

// ---------------------------------------------------------------------------
// helpers

type Range = readonly [bigint | number, bigint | number];

/** A device bound to ictx and attached to `ioas`; the auto HWPT id. */
function attachDevice(ioas: number): { dev: VfioDevice; devid: number; hwpt: number } {
  const { dev, devid } = boundDevice(host, ictx);
  const hwpt = dev.attach(ioas);
  return { dev, devid, hwpt };
}

/** `ranges` as an array of struct iommu_iova_range in fresh user memory; its VA. */
function rangesAt(ranges: readonly Range[]): number {
  const s = uapi.iommu_iova_range.size;
  const va = host.mmap(Math.max(PAGE, ranges.length * s));
  const bytes = new Uint8Array(ranges.length * s);
  ranges.forEach(([start, last], i) => uapi.iommu_iova_range.encode({ start: BigInt(start), last: BigInt(last) }, bytes, i * s));
  if (bytes.length > 0) host.mem.write(va, bytes);
  return va;
}

/** IOMMU_IOAS_ALLOW_IOVAS with `ranges` in user memory. */
function allow(ioas: number, ranges: readonly Range[], values: Record<string, unknown> = {}) {
  return ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: ranges.length, allowed_iovas: rangesAt(ranges), ...values });
}

/** IOMMU_IOAS_COPY; the struct written back. */
function copy(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_IOAS_COPY, values);
}

/** IOMMU_IOAS_MAP_FILE (flags READABLE | WRITEABLE unless given); the struct written back. */
function mapFile(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_IOAS_MAP_FILE, { flags: RW, ...values });
}

/** IOMMU_OPTION; the struct written back. */
function option(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_OPTION, values);
}

const hugeGet = (ioas: number): bigint => option({ option_id: HUGE_PAGES, op: OP_GET, object_id: ioas, val64: 7 }).val64;
const hugeSet = (ioas: number, val64: number | bigint) => option({ option_id: HUGE_PAGES, op: OP_SET, object_id: ioas, val64 });
const rlimitGet = (): bigint => option({ option_id: RLIMIT_MODE, op: OP_GET, val64: 7 }).val64;

/** IOMMU_VFIO_IOAS; the struct written back. */
function vfio(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_VFIO_IOAS, values);
}

/** IOMMU_IOAS_CHANGE_PROCESS. */
function changeProcess(values: Record<string, unknown> = {}) {
  return ictx.ioctl(T.IOMMU_IOAS_CHANGE_PROCESS, values);
}

/** IOAS_UNMAP of everything: the bytes that were mapped. */
const unmapAll = (ioas: number): bigint => ictx.unmap(ioas, 0, U64_MAX);

/**
 * The page frames behind [va, va + pages * PAGE), learnt through a probe IOAS
 * and device that are gone again afterwards (the probe's pins are dropped).
 * Eight pages at a time, to stay below a small RLIMIT_MEMLOCK.
 */
function pfnsOf(va: number, pages: number): number[] {
  const probe = ictx.ioasAlloc();
  const { dev } = attachDevice(probe);
  const pfns: number[] = [];
  for (let at = 0; at < pages; at += 8) {
    const n = Math.min(8, pages - at);
    const iova = ictx.map(probe, va + at * PAGE, n * PAGE);
    for (let i = 0; i < n; i++) pfns.push(pfnAt(dev, iova + BigInt(i * PAGE)));
    ictx.unmap(probe, iova, n * PAGE);
  }
  dev.close();
  ictx.destroy(probe);
  return pfns;
}

const refs = (pfns: readonly number[]): number[] => pfns.map((p) => host.engine.refcount(p));

/** What a failed call must leave as it was: the next object id, the pinned-page charge and the frame references. */
function trace(pfns: readonly number[] = []) {
  return { nextId: ictx.nextId(), lockedPages: host.lockedPages, refs: refs(pfns) };
}

/** A buffer whose first u32 is `size`, the rest zero unless filled. */
function sized(size: number, len: number, fill = 0): Uint8Array {
  const b = new Uint8Array(len).fill(fill);
  new DataView(b.buffer).setUint32(0, size, true);
  return b;
}

// ---------------------------------------------------------------------------
describe('extensible-struct rules for ALLOW_IOVAS, COPY, MAP_FILE, OPTION, VFIO_IOAS, CHANGE_PROCESS (ref §1)', () => {
  // ref §1 command table: min_size = offsetofend(struct, field).
  const MIN_SIZE: Record<string, number> = {
    IOMMU_IOAS_ALLOW_IOVAS: 24, // offsetofend(iommu_ioas_allow_iovas, allowed_iovas)
    IOMMU_IOAS_COPY: 40, // offsetofend(iommu_ioas_copy, src_iova)
    IOMMU_IOAS_MAP_FILE: 40, // offsetofend(iommu_ioas_map_file, iova)
    IOMMU_OPTION: 24, // offsetofend(iommu_option, val64)
    IOMMU_VFIO_IOAS: 12, // offsetofend(iommu_vfio_ioas, __reserved)
    IOMMU_IOAS_CHANGE_PROCESS: 8, // offsetofend(iommu_ioas_change_process, __reserved)
  };
  const DESCS = Object.keys(MIN_SIZE).map((name) => {
    const d = uapi.IOMMUFD_IOCTLS.find((row) => row.name === name);
    if (!d) throw new Error(`no table row ${name}`);
    return [name, d] as const;
  });

  it.each(DESCS)('%s: min_size and sizeof are those of the uapi header', (name, desc) => {
    expect(desc.minSize).toBe(MIN_SIZE[name]);
    expect(desc.struct.size).toBe(MIN_SIZE[name]); // every one of these ends at its min_size field
  });

  it.each(DESCS)('%s: size = min_size - 1 (and 0) is EINVAL', (_name, desc) => {
    // main.c iommufd_fops_ioctl(): `if (ucmd.user_size < op->min_size) return -EINVAL;`; selftest iommufd cmd_length.
    expectErrno(() => host.ioctl(ictx.fd, desc.request, sized(desc.minSize - 1, desc.struct.size + 8, 0xff)), 'EINVAL');
    expectErrno(() => host.ioctl(ictx.fd, desc.request, sized(0, desc.struct.size + 8)), 'EINVAL');
  });

  it.each(DESCS)('%s: size = sizeof + 1 is E2BIG with a 0xff tail byte, and behaves as sizeof with a zero one', (_name, desc) => {
    // selftest iommufd cmd_length (TEST_LENGTH): extra = UINT8_MAX -> E2BIG; extra = 0 -> the same rc/errno as size = sizeof.
    // include/linux/uaccess.h copy_struct_from_user() -> check_zeroed_user().
    const s = desc.struct.size;
    const tail = (byte: number) => {
      const b = sized(s + 1, s + 1);
      b[s] = byte;
      return b;
    };
    expectErrno(() => host.ioctl(ictx.fd, desc.request, tail(0xff)), 'E2BIG');
    const exact = outcome(() => host.ioctl(ictx.fd, desc.request, sized(s, s + 1)));
    const longer = outcome(() => host.ioctl(ictx.fd, desc.request, tail(0)));
    expect(longer).toBe(exact);
  });

  it('a non-zero tail is E2BIG before any handler check (OPTION with __reserved set, COPY with unknown flags)', () => {
    // main.c: copy_struct_from_user() runs before op->execute().
    const o = new Uint8Array(32);
    uapi.iommu_option.encode({ size: 32, option_id: 99, __reserved: 1 }, o);
    o[31] = 1;
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_OPTION, o), 'E2BIG');
    const c = new Uint8Array(48);
    uapi.iommu_ioas_copy.encode({ size: 48, flags: 1 << 20 }, c);
    c[40] = 1;
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_COPY, c), 'E2BIG');
  });

  it('valid commands with a zero tail work and leave the tail zero', () => {
    // include/linux/uaccess.h copy_struct_from_user(): a zero tail is accepted; iommufd_ucmd_respond() copies
    // min(user_size, sizeof) bytes back. main.c iommufd_option() writes only val64.
    const ioas = ictx.ioasAlloc();
    const zero8 = new Uint8Array(8);
    // OPTION GET of RLIMIT_MODE.
    const o = ictx.ioctl(T.IOMMU_OPTION, { size: 32, option_id: RLIMIT_MODE, op: OP_GET, val64: 9 }, zero8);
    expect(o.val64).toBe(0n);
    // VFIO_IOAS SET then GET.
    ictx.ioctl(T.IOMMU_VFIO_IOAS, { size: 20, ioas_id: ioas, op: VFIO_SET }, zero8);
    expect(ictx.ioctl(T.IOMMU_VFIO_IOAS, { size: 20, ioas_id: 0, op: VFIO_GET }, zero8).ioas_id).toBe(ioas);
    // ALLOW_IOVAS, MAP_FILE, COPY, CHANGE_PROCESS.
    ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { size: 32, ioas_id: ioas, num_iovas: 1, allowed_iovas: rangesAt([[0x10_0000, 0x1f_ffff]]) }, zero8);
    const fd = memfd(host, 4 * PAGE);
    const mf = ictx.ioctl(T.IOMMU_IOAS_MAP_FILE, { size: 48, flags: RW, ioas_id: ioas, fd, start: 0, length: 2 * PAGE }, zero8);
    expect(mf.iova).toBe(0x10_0000n); // inside the allowed range
    const cp = callStruct(host, ictx.fd, uapi.IOMMU_IOAS_COPY, uapi.iommu_ioas_copy,
      { size: 48, flags: RW, dst_ioas_id: ioas, src_ioas_id: ioas, length: PAGE, src_iova: 0x10_0000n }, zero8);
    expect(cp.out.dst_iova).toBe(0x10_2000n);
    expect([...cp.bytes.subarray(40)]).toEqual(new Array(8).fill(0));
    callStruct(host, ictx.fd, uapi.IOMMU_IOAS_CHANGE_PROCESS, uapi.iommu_ioas_change_process, { size: 16 }, zero8);
    expect(unmapAll(ioas)).toBe(3n * P);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_ALLOW_IOVAS (ioas.c iommufd_ioas_allow_iovas, io_pagetable.c iopt_set_allow_iova, ref §2.4)', () => {
  let ioas: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
  });

  it('__reserved != 0 is EOPNOTSUPP, before the ioas lookup', () => {
    // ioas.c: `if (cmd->__reserved) return -EOPNOTSUPP;` first.
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff]], { __reserved: 1 }), 'EOPNOTSUPP');
    expectErrno(() => allow(99, [[0x1000, 0x1fff]], { __reserved: 0x8000_0000 }), 'EOPNOTSUPP');
  });

  it('an unknown ioas, id 0 or an object of another type is ENOENT, before the ranges are read', () => {
    // ioas.c: iommufd_get_ioas() precedes iommufd_ioas_load_iovas(); ref §1 "Lookup by ID".
    expectErrno(() => allow(99, [[0x1000, 0x1fff]]), 'ENOENT');
    expectErrno(() => allow(0, [[0x1000, 0x1fff]]), 'ENOENT');
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: 99, num_iovas: 4, allowed_iovas: 0 }), 'ENOENT');
    const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
    expectErrno(() => allow(devid, [[0x1000, 0x1fff]]), 'ENOENT');
    expectErrno(() => allow(hwpt, [[0x1000, 0x1fff]]), 'ENOENT');
  });

  it('start >= last is EINVAL: a single-byte range and a reversed one', () => {
    // ioas.c iommufd_ioas_load_iovas(): `if (range.start >= range.last) return -EINVAL;` (ref §2.4 "single-byte ranges are refused").
    expectErrno(() => allow(ioas, [[0x1000, 0x1000]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x2000, 0x1fff]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [0x8000, 0x8000]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0, 0]]), 'EINVAL');
    // Two bytes is the smallest range.
    allow(ioas, [[0x1000, 0x1001]]);
  });

  it('ranges overlapping each other are EINVAL; adjacent and unsorted ranges are fine', () => {
    // ioas.c iommufd_ioas_load_iovas(): `if (interval_tree_iter_first(itree, range.start, range.last)) return -EINVAL;`
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [0x1fff, 0x2fff]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [0x1000, 0x1fff]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x1000, 0x8fff], [0x2000, 0x2fff]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x2000, 0x2fff], [0x1000, 0x8fff]]), 'EINVAL');
    allow(ioas, [[0x1000, 0x1fff], [0x2000, 0x2fff]]);
    allow(ioas, [[0x20_0000, 0x2f_ffff], [0x10_0000, 0x1f_ffff]]);
  });

  it('a bad allowed_iovas pointer is EFAULT, also for a later element; an invalid earlier element wins', () => {
    // ioas.c iommufd_ioas_load_iovas(): copy_from_user() per element -> -EFAULT; the elements are read and checked in order.
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 1, allowed_iovas: 0 }), 'EFAULT');
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 1, allowed_iovas: 1n << 62n }), 'EFAULT');
    const two = host.mmap(2 * PAGE);
    host.munmap(two + PAGE, PAGE);
    const last = two + PAGE - 16; // room for exactly one element
    host.mem.write(last, uapi.iommu_iova_range.encode({ start: 0x1000n, last: 0x1fffn }));
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 2, allowed_iovas: last }), 'EFAULT');
    host.mem.write(last, uapi.iommu_iova_range.encode({ start: 0x1000n, last: 0x1000n }));
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 2, allowed_iovas: last }), 'EINVAL');
    // num_iovas 0 never reads the pointer.
    ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 0, allowed_iovas: 0 });
  });

  it('a failed call keeps the old list (EINVAL, EFAULT): automatic IOVAs stay inside it', () => {
    // ioas.c: the new ranges are loaded into a private tree; iopt_set_allow_iova() swaps it in only on success.
    const buf = host.mmap(HPAGE);
    allow(ioas, [[0x4000_0000, 0x4fff_ffff]]);
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [0x3000, 0x3000]]), 'EINVAL');
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [0x1800, 0x2fff]]), 'EINVAL');
    expectErrno(() => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: ioas, num_iovas: 1, allowed_iovas: 0 }), 'EFAULT');
    expect(ictx.map(ioas, buf, PAGE)).toBe(0x4000_0000n);
  });

  it('num_iovas 0 clears the list: automatic IOVAs come from anywhere again', () => {
    // ref §2.4 "num_iovas = 0 clears it"; io_pagetable.c iopt_alloc_iova(): an empty allowed tree means [PAGE_SIZE, ULONG_MAX - PAGE_SIZE].
    const buf = host.mmap(HPAGE);
    allow(ioas, [[0x4000_0000, 0x4fff_ffff]]);
    expect(ictx.map(ioas, buf, PAGE)).toBe(0x4000_0000n);
    allow(ioas, []);
    expect(ictx.map(ioas, buf, PAGE)).toBe(0x1000n);
  });

  it('automatic IOVAs stay inside the allowed range and keep their alignment (selftest iommufd_ioas area_auto_iova, no_domain)', () => {
    // io_pagetable.c iopt_alloc_iova(): only the allowed spans are searched.
    const buf = host.mmap(HPAGE); // HUGEPAGE-aligned, as the selftest's buffer
    const ranges = [[PAGE * 200, PAGE * 600 - 1]] as const;
    allow(ioas, ranges);
    const iovas: bigint[] = [];
    for (let i = 0; i < 10; i++) {
      const length = BigInt(PAGE * (i + 1));
      const iova = ictx.map(ioas, buf, length);
      expect(iova % (length & -length)).toBe(0n);
      expect(iova >= BigInt(ranges[0][0]) && iova + length - 1n <= BigInt(ranges[0][1])).toBe(true);
      iovas.push(iova);
    }
    for (let i = 0; i < 10; i++) expect(ictx.unmap(ioas, iovas[i], PAGE * (i + 1))).toBe(BigInt(PAGE * (i + 1)));
  });

  it('automatic IOVAs stay inside the allowed range with a VT-d device attached (selftest area_auto_iova, mock_domain)', () => {
    const { dev } = attachDevice(ioas);
    const buf = host.mmap(HPAGE);
    host.mem.write(buf, pattern(64, 5));
    const start = 0x4000_0000n + P;
    const last = 0x4000_0000n + P * 600n - 1n;
    allow(ioas, [[start, last]]);
    for (let i = 0; i < 10; i++) {
      const length = BigInt(PAGE * (i + 1));
      const iova = ictx.map(ioas, buf, length);
      expect(iova % (length & -length)).toBe(0n);
      expect(iova >= start && iova + length - 1n <= last).toBe(true);
      expect(dev.dma.read(iova, 64)).toEqual(pattern(64, 5));
    }
  });

  it('a mapping that fits no allowed range is ENOSPC although the rest of the IOVA space is free', () => {
    // io_pagetable.c iopt_alloc_iova(): -ENOSPC when no allowed span has a hole.
    allow(ioas, [[0x10_0000, 0x10_ffff]]);
    const buf = host.mmap(HPAGE);
    expectErrno(() => ictx.map(ioas, buf, 0x2_0000), 'ENOSPC');
    expect(ictx.map(ioas, buf, 0x1_0000)).toBe(0x10_0000n);
    expectErrno(() => ictx.map(ioas, buf, PAGE), 'ENOSPC');
    expect(unmapAll(ioas)).toBe(0x1_0000n);
  });

  it('a fixed IOVA outside the allowed ranges is still accepted, and an allowed range may cover existing areas', () => {
    // io_pagetable.c iopt_check_iova(): only reserved ranges (EINVAL) and areas (EEXIST) are checked;
    // iopt_set_allow_iova() checks the reserved tree only.
    const buf = host.mmap(PAGE);
    ictx.map(ioas, buf, PAGE, 0x10_0000);
    allow(ioas, [[0x10_0000, 0x1f_ffff]]);
    expect(ictx.map(ioas, buf, PAGE, 0x8000_0000)).toBe(0x8000_0000n);
    expect(unmapAll(ioas)).toBe(2n * P);
  });

  it('a range meeting a reserved range (VT-d MSI window, beyond the 48-bit aperture) is EADDRINUSE and the old list is kept', () => {
    // io_pagetable.c iopt_set_allow_iova(): iopt_reserved_iter_first() on any new range -> swap back, -EADDRINUSE;
    // selftest iommufd_ioas area_auto_iova "Allowed region intersects with a reserved region".
    attachDevice(ioas);
    const buf = host.mmap(HPAGE);
    allow(ioas, [[0x4000_0000, 0x4fff_ffff]]);
    const t0 = trace();
    expectErrno(() => allow(ioas, [[MSI_START - P, MSI_START]]), 'EADDRINUSE');
    expectErrno(() => allow(ioas, [[MSI_LAST, MSI_LAST + P]]), 'EADDRINUSE');
    expectErrno(() => allow(ioas, [[MSI_START + P, MSI_START + 2n * P]]), 'EADDRINUSE');
    expectErrno(() => allow(ioas, [[APERTURE_LAST, APERTURE_LAST + 1n]]), 'EADDRINUSE');
    expectErrno(() => allow(ioas, [[0x1000, 0x1fff], [1n << 50n, (1n << 50n) + 0xfffn]]), 'EADDRINUSE');
    expect(trace()).toEqual(t0);
    expect(ictx.map(ioas, buf, PAGE)).toBe(0x4000_0000n);
    // Right up to the reserved ranges is fine.
    allow(ioas, [[0x1000, MSI_START - 1n], [MSI_LAST + 1n, APERTURE_LAST]]);
  });

  it('allowed ranges do not narrow IOMMU_IOAS_IOVA_RANGES', () => {
    // ref §2.3 "Output ranges are the holes in the reserved tree ... Allowed ranges do not narrow this list";
    // ioas.c iommufd_ioas_iova_ranges() walks reserved_itree only.
    allow(ioas, [[0x10_0000, 0x1f_ffff]]);
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: ULONG_MAX }] });
    attachDevice(ioas);
    expect(ictx.iovaRanges(ioas).ranges).toEqual([{ start: 0n, last: MSI_START - 1n }, { start: MSI_LAST + 1n, last: APERTURE_LAST }]);
  });

  it('attaching a device whose reserved region meets an allowed range is EADDRINUSE and leaves no trace (selftest area_allowed)', () => {
    // io_pagetable.c iopt_reserve_iova(): `iopt_allowed_iter_first(iopt, start, last)` -> -EADDRINUSE, for the device's
    // reserved regions (iopt_table_enforce_dev_resv_regions) and the domain's aperture (iopt_table_add_domain).
    const buf = host.mmap(PAGE);
    host.mem.write(buf, pattern(32, 8));
    const iova = ictx.map(ioas, buf, PAGE, 0x10_0000);
    allow(ioas, [[MSI_START - P, MSI_START]]);
    const { dev } = boundDevice(host, ictx);
    const t0 = trace();
    expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
    expect(trace()).toEqual(t0); // no auto HWPT left, nothing pinned
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: ULONG_MAX }] });
    expect(dmaFault(() => dev.dma.read(iova, 4)).reason).toBe('blocked');
    // Beyond the aperture: the same.
    allow(ioas, [[1n << 48n, (1n << 48n) + P]]);
    expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
    expect(trace()).toEqual(t0);
    // Cleared, the attach works.
    allow(ioas, []);
    dev.attach(ioas);
    expect(dev.dma.read(iova, 32)).toEqual(pattern(32, 8));
  });

  it('a one-byte hole at the end of an allowed range is never used (io_pagetable.c __alloc_iova_check_range)', () => {
    // Linux: __alloc_iova_check_range(): `if (aligned_start >= last || last - aligned_start < length - 1) return false;`
    // -- a hole whose (aligned) start is its last byte is skipped even for a 1-byte mapping, so the second 1-byte
    // map below finds no hole: -ENOSPC.
    allow(ioas, [[0x1_0000, 0x1_0001]]);
    expect(ictx.map(ioas, 0, 1)).toBe(0x1_0000n);
    expectErrno(() => ictx.map(ioas, 0, 1), 'ENOSPC');
    expect(unmapAll(ioas)).toBe(1n);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_COPY: check order (ioas.c iommufd_ioas_copy, io_pagetable.c iopt_get_pages / iopt_map_pages, ref §2.7)', () => {
  let a: number; // source
  let b: number; // destination
  let buf: number;
  const base = 0x10_0000n;
  beforeEach(() => {
    a = ictx.ioasAlloc();
    b = ictx.ioasAlloc();
    buf = host.mmap(16 * PAGE);
    ictx.map(a, buf, 8 * PAGE, base);
    ictx.map(a, buf + 8 * PAGE, 8 * PAGE, base + 8n * P);
  });

  const ok = () => ({ flags: RW, src_ioas_id: a, dst_ioas_id: b, src_iova: base, length: PAGE });

  it('1. an unknown flag bit is EOPNOTSUPP, before everything else', () => {
    // ioas.c: `if (cmd->flags & ~(FIXED_IOVA | WRITEABLE | READABLE)) return -EOPNOTSUPP;`
    for (const bit of [1 << 3, 1 << 16, 1 << 31]) {
      expectErrno(() => copy({ ...ok(), flags: RW | bit }), 'EOPNOTSUPP');
    }
    expectErrno(() => copy({ flags: 1 << 4, src_ioas_id: 99, dst_ioas_id: 99, length: ULONG_MAX, src_iova: ULONG_MAX }), 'EOPNOTSUPP');
  });

  it('2. length, src_iova or dst_iova >= ULONG_MAX is EOVERFLOW, before the R/W check and the lookups', () => {
    // ioas.c: `if (cmd->length >= ULONG_MAX || cmd->src_iova >= ULONG_MAX || cmd->dst_iova >= ULONG_MAX) return -EOVERFLOW;`
    expectErrno(() => copy({ ...ok(), length: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => copy({ ...ok(), src_iova: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => copy({ ...ok(), dst_iova: ULONG_MAX, flags: RW | FIXED }), 'EOVERFLOW');
    expectErrno(() => copy({ ...ok(), dst_iova: ULONG_MAX }), 'EOVERFLOW'); // checked even without FIXED_IOVA
    expectErrno(() => copy({ flags: 0, src_ioas_id: 99, dst_ioas_id: 99, length: 0, src_iova: ULONG_MAX }), 'EOVERFLOW');
  });

  it('3. neither READABLE nor WRITEABLE is EINVAL, before the source lookup', () => {
    // ioas.c: `if (!(cmd->flags & (WRITEABLE | READABLE))) return -EINVAL;`
    expectErrno(() => copy({ ...ok(), flags: 0 }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), flags: FIXED, src_ioas_id: 99 }), 'EINVAL');
  });

  it('4. an unknown source IOAS (or another type) is ENOENT, before length 0', () => {
    // ioas.c: iommufd_get_ioas(src_ioas_id) precedes iopt_get_pages().
    expectErrno(() => copy({ ...ok(), src_ioas_id: 99, length: 0 }), 'ENOENT');
    const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
    expectErrno(() => copy({ ...ok(), src_ioas_id: devid }), 'ENOENT');
    expectErrno(() => copy({ ...ok(), src_ioas_id: hwpt }), 'ENOENT');
  });

  it('5. length 0 is EINVAL and src_iova + length - 1 overflowing is EOVERFLOW, before the destination lookup', () => {
    // io_pagetable.c iopt_get_pages(): `if (!length) return -EINVAL; if (check_add_overflow(iova, length - 1, &last_iova)) return -EOVERFLOW;`
    expectErrno(() => copy({ ...ok(), length: 0, dst_ioas_id: 99 }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), src_iova: ULONG_MAX - 0xfffn, length: 0x2000, dst_ioas_id: 99 }), 'EOVERFLOW');
  });

  it('6. a source range not fully covered by contiguous areas is ENOENT, before the destination lookup', () => {
    // io_pagetable.c iopt_get_pages(): `if (!iopt_area_contig_done(&iter)) rc = -ENOENT;`
    expectErrno(() => copy({ ...ok(), src_iova: base - P, length: 2 * PAGE, dst_ioas_id: 99 }), 'ENOENT');
    expectErrno(() => copy({ ...ok(), src_iova: base + 15n * P, length: 2 * PAGE }), 'ENOENT');
    expectErrno(() => copy({ ...ok(), src_iova: 0x8000_0000n }), 'ENOENT');
    // A gap between two areas breaks the contiguity.
    ictx.map(a, buf, PAGE, base + 17n * P);
    expectErrno(() => copy({ ...ok(), src_iova: base + 15n * P, length: 3 * PAGE }), 'ENOENT');
    // Without the gap it works.
    ictx.map(a, buf, PAGE, base + 16n * P);
    expect(copy({ ...ok(), src_iova: base + 15n * P, length: 3 * PAGE }).dst_iova).toBeGreaterThan(0n);
  });

  it('7. an unknown destination IOAS (or another type) is ENOENT', () => {
    // ioas.c: iommufd_get_ioas(dst_ioas_id) after iopt_get_pages().
    expectErrno(() => copy({ ...ok(), dst_ioas_id: 99 }), 'ENOENT');
    expectErrno(() => copy({ ...ok(), dst_ioas_id: 0 }), 'ENOENT');
    const { devid } = boundDevice(host, ictx);
    expectErrno(() => copy({ ...ok(), dst_ioas_id: devid }), 'ENOENT');
  });

  it('8. destination placement: length alignment EINVAL, then fixed EINVAL / EOVERFLOW / EINVAL (reserved) / EEXIST, or automatic ENOSPC', () => {
    // io_pagetable.c iopt_alloc_area_pages(): `(length & (iopt->iova_alignment - 1)) || !length` -> -EINVAL, then
    // iopt_check_iova() (misaligned EINVAL, overflow EOVERFLOW, reserved EINVAL, area EEXIST) or iopt_alloc_iova() (ENOSPC).
    const odd = ictx.ioasAlloc();
    ictx.map(odd, buf, 0x1800, base); // alignment 1: an odd length is fine without a device
    attachDevice(b); // b: alignment 4096, MSI window and aperture reserved
    ictx.map(b, buf, PAGE, 0x40_0000);
    const t0 = trace();
    expectErrno(() => copy({ ...ok(), src_ioas_id: odd, length: 0x800 }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), src_ioas_id: odd, length: 0x800, flags: RW | FIXED, dst_iova: 0x40_0000 }), 'EINVAL'); // before EEXIST
    expectErrno(() => copy({ ...ok(), flags: RW | FIXED, dst_iova: 0x50_0800 }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), flags: RW | FIXED, dst_iova: MSI_START }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), flags: RW | FIXED, dst_iova: APERTURE_LAST + 1n }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), flags: RW | FIXED, dst_iova: 0x40_0000 }), 'EEXIST');
    expectErrno(() => copy({ ...ok(), flags: RW | FIXED, dst_iova: 0x3f_f000, length: 2 * PAGE }), 'EEXIST');
    // A sub-page source offset does not suit the destination's 4096 alignment (iopt_alloc_iova / iopt_insert_area).
    expectErrno(() => copy({ ...ok(), src_iova: base + 0x800n }), 'EINVAL');
    expectErrno(() => copy({ ...ok(), src_iova: base + 0x800n, flags: RW | FIXED, dst_iova: 0x50_0000 }), 'EINVAL');
    // Overflow of the fixed destination (no device on this one, so nothing is reserved there).
    const c = ictx.ioasAlloc();
    expectErrno(() => copy({ ...ok(), dst_ioas_id: c, length: 2 * PAGE, flags: RW | FIXED, dst_iova: ULONG_MAX - 0xfffn }), 'EOVERFLOW');
    // Automatic: no room in the allowed ranges.
    allow(c, [[0x10_0000, 0x10_1fff]]);
    expectErrno(() => copy({ ...ok(), dst_ioas_id: c, length: 4 * PAGE }), 'ENOSPC');
    expect({ ...trace(), nextId: undefined }).toEqual({ ...t0, nextId: undefined }); // c was allocated meanwhile
    // Nothing was mapped anywhere.
    expect(unmapAll(b)).toBe(P);
    expect(unmapAll(c)).toBe(0n);
    expect(unmapAll(a)).toBe(16n * P);
  });

  it('EEXIST (placement) comes before EPERM (a WRITEABLE copy of pages mapped read-only)', () => {
    // io_pagetable.c iopt_alloc_area_pages(): iopt_check_iova() runs before iopt_insert_area() checks pages->writable.
    const ro = ictx.ioasAlloc();
    ictx.map(ro, buf, PAGE, base, R | FIXED);
    ictx.map(b, buf, PAGE, 0x40_0000);
    expectErrno(() => copy({ ...ok(), src_ioas_id: ro, flags: RW | FIXED, dst_iova: 0x40_0000 }), 'EEXIST');
    expectErrno(() => copy({ ...ok(), src_ioas_id: ro, flags: RW | FIXED, dst_iova: 0x50_0000 }), 'EPERM');
  });

  it('a failed copy writes nothing back', () => {
    // ioas.c: `cmd->dst_iova = iova; iommufd_ucmd_respond()` only on success.
    const bytes = uapi.iommu_ioas_copy.encode({ size: 40, flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: PAGE, dst_iova: 0x1234n, src_iova: base + 0x40_0000n });
    const before = bytes.slice();
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_COPY, bytes), 'ENOENT');
    expect(bytes).toEqual(before);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_COPY: sharing the pages (ref §2.7, §9, pages.c)', () => {
  it('copies inside one IOAS and between IOASes (selftest iommufd_ioas copy_area)', () => {
    const a = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const base = 0x100_0000n;
    ictx.map(a, buf, PAGE, base);
    // Inside a single IOAS (the selftest's flags: FIXED_IOVA | WRITEABLE).
    expect(copy({ flags: W | FIXED, dst_ioas_id: a, src_ioas_id: a, length: PAGE, src_iova: base, dst_iova: base + P }).dst_iova).toBe(base + P);
    // Between IOASes, to IOVA 0.
    const b = ictx.ioasAlloc();
    expect(copy({ flags: W | FIXED, dst_ioas_id: b, src_ioas_id: a, length: PAGE, src_iova: base, dst_iova: 0 }).dst_iova).toBe(0n);
    // The copy in `a` overlapping its source is EEXIST.
    expectErrno(() => copy({ flags: RW | FIXED, dst_ioas_id: a, src_ioas_id: a, length: PAGE, src_iova: base, dst_iova: base }), 'EEXIST');
    expect(unmapAll(a)).toBe(2n * P);
    expect(unmapAll(b)).toBe(P);
  });

  for (const variant of ['no_domain', 'mock_domain'] as const) {
    it(`any contiguous sub-range across two adjacent areas copies; anything else is ENOENT (selftest iommufd_ioas copy_sweep, ${variant})`, () => {
      // io_pagetable.c iopt_get_pages(): any sub-range of contiguous areas (ref §2.7 "the code accepts any sub-range").
      const a = ictx.ioasAlloc();
      if (variant === 'mock_domain') attachDevice(a);
      const dst = ictx.ioasAlloc();
      const start = 0x100_0000n;
      const buf = host.mmap(16 * PAGE);
      // Two adjacent areas; without a device the second one has an odd length, as in the selftest.
      const secondLen = variant === 'mock_domain' ? 8 * PAGE : 8 * PAGE - 1;
      ictx.map(a, buf, 8 * PAGE, start);
      ictx.map(a, buf + 8 * PAGE, secondLen, start + 8n * P);
      const last = start + 8n * P + BigInt(secondLen) - 1n;
      const length = 2048n;
      let copied = 0;
      for (let iova = start - P; iova <= last; iova += 511n) {
        const cmd = { flags: FIXED | W, dst_ioas_id: dst, src_ioas_id: a, length, src_iova: iova, dst_iova: start };
        if (iova < start || iova + length - 1n > last) {
          expectErrno(() => copy(cmd), 'ENOENT');
        } else {
          expect(copy(cmd).dst_iova).toBe(start);
          expect(ictx.unmap(dst, start, length)).toBe(length);
          copied++;
        }
      }
      expect(copied).toBeGreaterThan(100);
      ictx.destroy(dst);
    });
  }

  it('the pages are shared and pinned once: refcounts and the charge grow per pin, not per copy; DMA reaches the same memory', () => {
    // ref §9 "Pages are pinned once, however many domains, copies or accesses use them. Copies share the pages object";
    // pages.c iopt_area_fill_domains(): a new area's PFNs come from the pages' storage domain, without a new pin.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const A = attachDevice(a);
    const B = attachDevice(b);
    const buf = host.mmap(8 * PAGE);
    host.mem.write(buf, pattern(8 * PAGE, 21));
    const src = ictx.map(a, buf, 8 * PAGE);
    const pfns = Array.from({ length: 8 }, (_, i) => pfnAt(A.dev, src + BigInt(i * PAGE)));
    expect(refs(pfns)).toEqual(new Array(8).fill(2)); // the VMA's and the pin
    expect(host.lockedPages).toBe(8);
    const d1 = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 8 * PAGE, src_iova: src }).dst_iova;
    const d2 = copy({ flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: 8 * PAGE, src_iova: src, dst_iova: 0x4000_0000 }).dst_iova;
    const d3 = copy({ flags: RW, dst_ioas_id: a, src_ioas_id: a, length: 4 * PAGE, src_iova: src + 2n * P }).dst_iova;
    expect(refs(pfns)).toEqual(new Array(8).fill(2));
    expect(host.lockedPages).toBe(8);
    for (let i = 0; i < 8; i++) {
      expect(pfnAt(B.dev, d1 + BigInt(i * PAGE))).toBe(pfns[i]);
      expect(pfnAt(B.dev, d2 + BigInt(i * PAGE))).toBe(pfns[i]);
    }
    expect(pfnAt(A.dev, d3)).toBe(pfns[2]);
    // DMA through a copy reads and writes the same memory.
    expect(B.dev.dma.read(d1, 8 * PAGE)).toEqual(pattern(8 * PAGE, 21));
    B.dev.dma.write(d2 + 100n, pattern(200, 22));
    expect(A.dev.dma.read(src + 100n, 200)).toEqual(pattern(200, 22));
    expect(host.mem.read(buf + 100, 200)).toEqual(pattern(200, 22));
    expect(A.dev.dma.read(d3 + 100n, 200)).toEqual(pattern(8 * PAGE, 21).subarray(2 * PAGE + 100, 2 * PAGE + 300));
    // Every area must go before the pin does.
    expect(ictx.unmap(b, d1, 8 * PAGE)).toBe(8n * P);
    expect(ictx.unmap(a, src, 8 * PAGE)).toBe(8n * P);
    expect(refs(pfns)).toEqual(new Array(8).fill(2));
    expect(ictx.unmap(a, d3, 4 * PAGE)).toBe(4n * P);
    expect(host.lockedPages).toBe(8);
    expect(ictx.unmap(b, d2, 8 * PAGE)).toBe(8n * P);
    expect(refs(pfns)).toEqual(new Array(8).fill(1));
    expect(host.lockedPages).toBe(0);
  });

  it('a copy survives unmapping its source and destroying the source IOAS', () => {
    // pages.c: the copy holds its own kref on the iopt_pages (iopt_get_pages() kref_get) and its pins.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const buf = host.mmap(4 * PAGE);
    host.mem.write(buf, pattern(4 * PAGE, 31));
    const src = ictx.map(a, buf, 4 * PAGE);
    const dst = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 4 * PAGE, src_iova: src }).dst_iova;
    const pfn = pfnAt(B.dev, dst);
    expect(host.engine.refcount(pfn)).toBe(2);
    expect(ictx.unmap(a, src, 4 * PAGE)).toBe(4n * P);
    ictx.destroy(a);
    host.munmap(buf, 4 * PAGE);
    expect(host.engine.refcount(pfn)).toBe(1); // only the pin is left
    expect(B.dev.dma.read(dst, 4 * PAGE)).toEqual(pattern(4 * PAGE, 31));
    B.dev.dma.write(dst, pattern(16, 32));
    expect(B.dev.dma.read(dst, 16)).toEqual(pattern(16, 32));
    expect(ictx.unmap(b, dst, 4 * PAGE)).toBe(4n * P);
    expect(host.engine.refcount(pfn)).toBe(0);
  });

  it('a WRITEABLE copy of pages mapped read-only is EPERM; a READABLE one works and refuses DMA writes', () => {
    // io_pagetable.c iopt_insert_area(): `if ((iommu_prot & IOMMU_WRITE) && !pages->writable) return -EPERM;` (ref §2.5 item 10).
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const buf = host.mmap(2 * PAGE);
    host.mem.write(buf, pattern(2 * PAGE, 41));
    const src = ictx.map(a, buf, 2 * PAGE, undefined, R);
    const t0 = trace();
    expectErrno(() => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src }), 'EPERM');
    expectErrno(() => copy({ flags: W, dst_ioas_id: b, src_ioas_id: a, length: PAGE, src_iova: src + P }), 'EPERM');
    expect(trace()).toEqual(t0);
    expect(unmapAll(b)).toBe(0n);
    const dst = copy({ flags: R, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src }).dst_iova;
    expect(B.dev.dma.read(dst, 2 * PAGE)).toEqual(pattern(2 * PAGE, 41));
    expect(dmaFault(() => B.dev.dma.write(dst, pattern(4, 1))).reason).toBe('write-denied');
  });

  it('a copy over a writable and a read-only area is EPERM as a whole: the destination keeps nothing', () => {
    // io_pagetable.c iopt_alloc_area_pages(): one iopt_insert_area() per element; iopt_map_pages() fails and
    // iopt_free_pages_list() aborts every area already inserted.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    attachDevice(b);
    const buf = host.mmap(2 * PAGE);
    ictx.map(a, buf, PAGE, 0x10_0000);
    ictx.map(a, buf + PAGE, PAGE, 0x10_1000, R | FIXED);
    const t0 = trace();
    expectErrno(() => copy({ flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: 0x10_0000, dst_iova: 0x20_0000 }), 'EPERM');
    expect(trace()).toEqual(t0);
    expect(unmapAll(b)).toBe(0n);
    // READABLE only: both areas copy, as two areas in the destination.
    copy({ flags: R | FIXED, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: 0x10_0000, dst_iova: 0x20_0000 });
    expectErrno(() => ictx.unmap(b, 0x20_0000, PAGE + 1), 'ENOENT'); // an area crosses the end
    expect(ictx.unmap(b, 0x20_0000, PAGE)).toBe(P);
    expect(ictx.unmap(b, 0x20_1000, PAGE)).toBe(P);
  });

  it('an automatic destination IOVA takes the alignment and sub-page offset of the source address', () => {
    // io_pagetable.c iopt_alloc_area_pages(): `start = elm->start_byte + (uintptr_t)elm->pages->uptr` of the first element,
    // then iopt_alloc_iova(): min(roundup_pow_of_two(length), 1 << __ffs64(start)), capped at HPAGE_SIZE; page_offset kept.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const buf = host.mmap(2 * HPAGE); // 2 MiB-aligned VA
    const src = ictx.map(a, buf, 2 * HPAGE);
    expect(src % BigInt(HPAGE)).toBe(0n);
    // From the start of the buffer: 2 MiB-aligned (first fit from PAGE_SIZE: 0x200000).
    expect(copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: HPAGE, src_iova: src }).dst_iova).toBe(0x20_0000n);
    // From page 1: only 4 KiB alignment is kept, the first hole is [PAGE_SIZE, 2 MiB).
    expect(copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 4 * PAGE, src_iova: src + P }).dst_iova).toBe(0x1000n);
    // A sub-page offset is kept (no device on b: alignment 1).
    const d = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 0x100, src_iova: src + 0x5123n }).dst_iova;
    expect(d % P).toBe(0x123n);
  });

  it('COPY of a sub-range into an IOAS with a device pins only the pages of that sub-range (pages.c)', () => {
    // Linux: pages.c iopt_area_fill_domains() reads PFNs for [iopt_area_index(area), iopt_area_last_index(area)] only
    // (pfn_reader_first(&pfns, pages, iopt_area_index(area), iopt_area_last_index(area))), so a copy of pages 2-3 of an
    // 8-page, never-pinned mapping pins (and charges) 2 pages, not 8 (ref §9: "Pinning happens on domain fill").
    const buf = host.mmap(8 * PAGE);
    const pfns = pfnsOf(buf, 8);
    expect(refs(pfns)).toEqual(new Array(8).fill(1));
    const a = ictx.ioasAlloc(); // no device: nothing pinned
    const src = ictx.map(a, buf, 8 * PAGE);
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const dst = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src + 2n * P }).dst_iova;
    expect(pfnAt(B.dev, dst)).toBe(pfns[2]);
    expect(host.lockedPages).toBe(2);
    expect(refs(pfns)).toEqual([1, 1, 2, 2, 1, 1, 1, 1]);
    expect(ictx.unmap(b, dst, 2 * PAGE)).toBe(2n * P);
    expect(refs(pfns)).toEqual(new Array(8).fill(1));
    expect(host.lockedPages).toBe(0);
  });

  it('unmapping the source of a partial copy unpins (and uncharges) the pages the copy does not use (pages.c)', () => {
    // Linux: pages.c __iopt_area_unfill_domain() unpins only the indexes no other area's domain still holds
    // (interval_tree_for_each_double_span over pages->domains_itree / access_itree; "span.is_used" is skipped), and
    // update_unpinned() uncharges them: after the 8-page source goes, only pages 2-3 (held by the copy) stay pinned.
    const a = ictx.ioasAlloc();
    const A = attachDevice(a);
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const buf = host.mmap(8 * PAGE);
    host.mem.write(buf, pattern(8 * PAGE, 55));
    const src = ictx.map(a, buf, 8 * PAGE);
    const pfns = Array.from({ length: 8 }, (_, i) => pfnAt(A.dev, src + BigInt(i * PAGE)));
    const dst = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src + 2n * P }).dst_iova;
    expect(host.lockedPages).toBe(8);
    expect(refs(pfns)).toEqual(new Array(8).fill(2));
    expect(ictx.unmap(a, src, 8 * PAGE)).toBe(8n * P);
    expect(B.dev.dma.read(dst, 2 * PAGE)).toEqual(pattern(8 * PAGE, 55).subarray(2 * PAGE, 4 * PAGE));
    expect(refs(pfns)).toEqual([1, 1, 2, 2, 1, 1, 1, 1]);
    expect(host.lockedPages).toBe(2);
    expect(ictx.unmap(b, dst, 2 * PAGE)).toBe(2n * P);
    expect(refs(pfns)).toEqual(new Array(8).fill(1));
    expect(host.lockedPages).toBe(0);
  });

  it('COPY of the mapped part of a partly unmapped user range works; the unmapped part is EFAULT (pages.c)', () => {
    // Linux: only the area's own index range is pinned (pfn_reader_user_pin() over [start_index, last_index]),
    // so pages 0-1 copy although pages 2-3 of the same MAP are no longer mapped; pages 2-3 fail with EFAULT
    // (pin_user_pages_fast) and leave nothing.
    const buf = host.mmap(4 * PAGE);
    host.mem.write(buf, pattern(2 * PAGE, 51));
    const a = ictx.ioasAlloc();
    const src = ictx.map(a, buf, 4 * PAGE); // no device: the VA is not checked
    host.munmap(buf + 2 * PAGE, 2 * PAGE);
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const t0 = trace();
    expectErrno(() => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src + 2n * P }), 'EFAULT');
    expect(trace()).toEqual(t0);
    const dst = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src }).dst_iova;
    expect(B.dev.dma.read(dst, 2 * PAGE)).toEqual(pattern(2 * PAGE, 51));
    expect(host.lockedPages).toBe(2);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_MAP_FILE (ioas.c iommufd_ioas_map_file, io_pagetable.c iopt_map_file_pages, pages.c, ref §2.6)', () => {
  let ioas: number;
  let mfd: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
    mfd = memfd(host, 8 * PAGE);
  });

  it('check order: flags EOPNOTSUPP, then EOVERFLOW, then no R/W EINVAL, then ioas ENOENT, then fd EBADF', () => {
    // ioas.c iommufd_ioas_map_file(): flags -> iova/length >= ULONG_MAX -> R/W -> iommufd_get_ioas(); fget() -> -EBADF.
    expectErrno(() => mapFile({ flags: RW | (1 << 3), ioas_id: 99, fd: -1, length: ULONG_MAX, iova: ULONG_MAX }), 'EOPNOTSUPP');
    expectErrno(() => mapFile({ flags: 1 << 31, ioas_id: ioas, fd: mfd, length: PAGE }), 'EOPNOTSUPP');
    expectErrno(() => mapFile({ flags: 0, ioas_id: 99, fd: -1, length: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => mapFile({ flags: RW | FIXED, ioas_id: 99, fd: -1, length: PAGE, iova: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => mapFile({ flags: FIXED, ioas_id: 99, fd: -1, length: PAGE }), 'EINVAL');
    expectErrno(() => mapFile({ ioas_id: 99, fd: -1, length: PAGE }), 'ENOENT');
    expectErrno(() => mapFile({ ioas_id: 0, fd: mfd, length: PAGE }), 'ENOENT');
    const { devid } = boundDevice(host, ictx);
    expectErrno(() => mapFile({ ioas_id: devid, fd: mfd, length: PAGE }), 'ENOENT');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: -1, length: PAGE }), 'EBADF');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: 999, length: PAGE }), 'EBADF');
    const closed = memfd(host, PAGE);
    host.close(closed);
    expectErrno(() => mapFile({ ioas_id: ioas, fd: closed, length: PAGE }), 'EBADF');
    expect(unmapAll(ioas)).toBe(0n);
  });

  it('length 0 is EINVAL; start + length - 1 overflowing is EOVERFLOW', () => {
    // io_pagetable.c iopt_map_file_pages() (v6.19): `if (!length) return -EINVAL; if (check_add_overflow(start, length - 1, &last)) return -EOVERFLOW;`
    // (v6.14 pages.c iopt_alloc_file_pages(): the same overflow check, and iopt_alloc_pages(): length 0 -> -EINVAL).
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, length: 0 }), 'EINVAL');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: ULONG_MAX - 0xfffn, length: 0x2000 }), 'EOVERFLOW');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: ULONG_MAX, length: 2 }), 'EOVERFLOW');
    expect(unmapAll(ioas)).toBe(0n);
  });

  it('start + length - 1 == ULONG_MAX is no overflow: without a device nothing checks the file, the map is accepted', () => {
    // Linux: the overflow test is check_add_overflow(start, length - 1, &last) (io_pagetable.c iopt_map_file_pages(),
    // v6.14 pages.c iopt_alloc_file_pages()), and with no domain nothing is pinned (pages.c iopt_area_fill_domains():
    // `if (xa_empty(&area->iopt->domains)) return 0;`), so [ULONG_MAX - 0xfff, ULONG_MAX] of the file maps.
    const iova = mapFile({ ioas_id: ioas, fd: mfd, start: ULONG_MAX - 0xfffn, length: PAGE }).iova;
    expect(ictx.unmap(ioas, iova, PAGE)).toBe(P);
  });

  it('DMA through a MAP_FILE area reaches the memfd pages: read(2) and a MAP_SHARED mapping see it', () => {
    // pages.c pfn_reader_user_pin() -> pin_memfd_pages() -> memfd_pin_folios(): the file's own page-cache folios.
    const va = host.mmap(8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd);
    host.mem.write(va, pattern(8 * PAGE, 61));
    const { dev } = attachDevice(ioas);
    const iova = mapFile({ ioas_id: ioas, fd: mfd, start: 2 * PAGE, length: 4 * PAGE }).iova;
    expect(dev.dma.read(iova, 4 * PAGE)).toEqual(pattern(8 * PAGE, 61).subarray(2 * PAGE, 6 * PAGE));
    dev.dma.write(iova + 100n, pattern(300, 62));
    const file = new Uint8Array(8 * PAGE);
    expect(host.read(mfd, file)).toBe(8 * PAGE);
    expect(file.subarray(2 * PAGE + 100, 2 * PAGE + 400)).toEqual(pattern(300, 62));
    expect(host.mem.read(va + 2 * PAGE + 100, 300)).toEqual(pattern(300, 62));
    // The page is pinned once: one more reference than the page cache's, dropped by IOAS_UNMAP.
    const pfn = pfnAt(dev, iova);
    const r = host.engine.refcount(pfn);
    expect(ictx.unmap(ioas, iova, 4 * PAGE)).toBe(4n * P);
    expect(host.engine.refcount(pfn)).toBe(r - 1);
  });

  it('a MAP_FILE area without a device is pinned at attach; closing the memfd keeps the area working', () => {
    // pages.c iopt_alloc_file_pages(): pages->file = get_file(file) -- the area holds the file (fput in iopt_release_pages()).
    const va = host.mmap(8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd);
    host.mem.write(va, pattern(8 * PAGE, 71));
    const iova = mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 8 * PAGE }).iova;
    host.close(mfd);
    host.munmap(va, 8 * PAGE);
    const { dev } = attachDevice(ioas); // pins now, after the last fd is gone
    expect(dev.dma.read(iova, 8 * PAGE)).toEqual(pattern(8 * PAGE, 71));
    dev.dma.write(iova, pattern(64, 72));
    // A copy into another IOAS with its own device reaches the same file pages.
    const b = ictx.ioasAlloc();
    const B = attachDevice(b);
    const d = copy({ flags: RW, dst_ioas_id: b, src_ioas_id: ioas, length: PAGE, src_iova: iova }).dst_iova;
    expect(B.dev.dma.read(d, 64)).toEqual(pattern(64, 72));
    expect(host.lockedPages).toBe(8);
    expect(unmapAll(ioas)).toBe(8n * P);
    expect(B.dev.dma.read(d + 64n, 64)).toEqual(pattern(8 * PAGE, 71).subarray(64, 128));
  });

  it('start and length past the end of the file are EINVAL with a device attached (selftest iommufd_mock_domain basic, file)', () => {
    // mm/gup.c memfd_pin_folios() -> memfd_alloc_folio() -> shmem_get_folio_gfp(): an index at or past i_size -> -EINVAL.
    attachDevice(ioas);
    const t0 = trace();
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 8 * PAGE + 1 }), 'EINVAL');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: 8 * PAGE, length: PAGE }), 'EINVAL');
    host.ftruncate(mfd, 0);
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 8 * PAGE }), 'EINVAL');
    expect(trace()).toEqual(t0);
    expect(unmapAll(ioas)).toBe(0n);
  });

  it('a file that is not a memfd (the /dev/iommu fd, a VFIO device fd) is EINVAL with a device attached, and leaves nothing', () => {
    // mm/gup.c memfd_pin_folios(): `if (!shmem_file(memfd) && !is_file_hugepages(memfd)) return -EINVAL;` at pin time.
    const { dev } = attachDevice(ioas);
    const t0 = trace();
    expectErrno(() => mapFile({ ioas_id: ioas, fd: ictx.fd, start: 0, length: PAGE }), 'EINVAL');
    expectErrno(() => mapFile({ ioas_id: ioas, fd: dev.fd, start: 0, length: PAGE }), 'EINVAL');
    expect(trace()).toEqual(t0);
    expect(unmapAll(ioas)).toBe(0n);
  });

  it('without a device the file is not looked at: a non-memfd fd maps, and the pin at attach fails with EINVAL', () => {
    // Linux: pages.c iopt_alloc_file_pages() takes any file (get_file()); nothing is pinned without a domain
    // (iopt_area_fill_domains(): `if (xa_empty(&area->iopt->domains)) return 0;`), so memfd_pin_folios() -- the only
    // place that rejects a non-shmem file (-EINVAL) -- runs at attach: iopt_table_add_domain() -> iopt_fill_domain().
    const iova = mapFile({ ioas_id: ioas, fd: ictx.fd, start: 0, length: PAGE }).iova;
    const { dev } = boundDevice(host, ictx);
    const t0 = trace();
    expectErrno(() => dev.attach(ioas), 'EINVAL');
    expect(trace()).toEqual(t0);
    expect(ictx.unmap(ioas, iova, PAGE)).toBe(P);
    dev.attach(ioas);
  });

  it('without a device a range past the end of the file maps; the pin at attach fails with EINVAL', () => {
    // Linux: no size check at map time (io_pagetable.c iopt_map_file_pages(), pages.c iopt_alloc_file_pages());
    // the pin (mm/gup.c memfd_pin_folios() -> shmem_get_folio_gfp(), index >= i_size) is -EINVAL at attach.
    // A whole page past the end (a sub-page tail would fail iopt_table_add_domain's alignment check first).
    const iova = mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 9 * PAGE }).iova;
    const { dev } = boundDevice(host, ictx);
    const t0 = trace();
    expectErrno(() => dev.attach(ioas), 'EINVAL');
    expect(trace()).toEqual(t0);
    expect(ictx.unmap(ioas, iova, 9 * PAGE)).toBe(9n * P);
  });

  it('a memfd truncated after MAP_FILE (no device yet) fails the pin at attach with EINVAL, and leaves nothing', () => {
    // Linux: mm/gup.c memfd_pin_folios() -> memfd_alloc_folio() -> shmem_read_folio() -> shmem_get_folio_gfp():
    // `if (sgp <= SGP_CACHE && ((loff_t)index << PAGE_SHIFT) >= i_size_read(inode)) return -EINVAL;`
    // (the selftest's "after ftruncate(0) -> EINVAL", at attach instead of at map).
    const iova = mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 4 * PAGE }).iova;
    host.ftruncate(mfd, 0);
    const { dev } = boundDevice(host, ictx);
    const t0 = trace();
    expectErrno(() => dev.attach(ioas), 'EINVAL');
    expect(trace()).toEqual(t0);
    host.ftruncate(mfd, 4 * PAGE);
    dev.attach(ioas);
    expect(dev.dma.read(iova, 16)).toEqual(new Uint8Array(16));
  });

  it('an automatic IOVA keeps the alignment and sub-page offset of the file offset', () => {
    // io_pagetable.c iopt_alloc_area_pages(): IOPT_ADDRESS_FILE -> `start = elm->start_byte + elm->pages->start` (= the file offset).
    const big = memfd(host, 2 * HPAGE);
    expect(mapFile({ ioas_id: ioas, fd: big, start: HPAGE, length: HPAGE }).iova).toBe(0x20_0000n);
    const iova = mapFile({ ioas_id: ioas, fd: big, start: 0x5123, length: 0x100 }).iova;
    expect(iova % P).toBe(0x123n);
    expect(unmapAll(ioas)).toBe(BigInt(HPAGE) + 0x100n);
  });

  it('a fixed MAP_FILE follows the MAP placement rules (EEXIST, reserved EINVAL, sub-page offset EINVAL)', () => {
    // io_pagetable.c iopt_map_common() -> iopt_map_pages(): the same iopt_check_iova() and iopt_insert_area() as MAP.
    attachDevice(ioas);
    mapFile({ flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0, length: PAGE, iova: 0x10_0000 });
    expectErrno(() => mapFile({ flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0, length: PAGE, iova: 0x10_0000 }), 'EEXIST');
    expectErrno(() => mapFile({ flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0, length: PAGE, iova: MSI_START }), 'EINVAL');
    expectErrno(() => mapFile({ flags: RW | FIXED, ioas_id: ioas, fd: mfd, start: 0x800, length: PAGE, iova: 0x20_0000 }), 'EINVAL');
    expect(unmapAll(ioas)).toBe(P);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_CHANGE_PROCESS (ioas.c iommufd_ioas_change_process, ref §2.19)', () => {
  it('__reserved != 0 is EOPNOTSUPP, before the area check', () => {
    // ioas.c: `if (cmd->__reserved) return -EOPNOTSUPP;` first.
    const ioas = ictx.ioasAlloc();
    ictx.map(ioas, host.mmap(PAGE), PAGE);
    expectErrno(() => changeProcess({ __reserved: 1 }), 'EOPNOTSUPP');
    expectErrno(() => changeProcess({ __reserved: 0x8000_0000 }), 'EOPNOTSUPP');
  });

  it('with no IOAS or no area it succeeds', () => {
    changeProcess();
    ictx.ioasAlloc();
    changeProcess();
  });

  it('a MAP (user VA) area in any IOAS is EINVAL; once it is gone, file areas only succeed (selftest change_process basic)', () => {
    // ioas.c: `for_each_ioas_area(...) if (area->pages->type != IOPT_ADDRESS_FILE) { rc = -EINVAL; goto out; }`
    const a = ictx.ioasAlloc();
    const { dev } = attachDevice(a);
    const b = ictx.ioasAlloc(); // no device: its areas count as well
    const mfd = memfd(host, 4 * PAGE);
    const buf = host.mmap(PAGE);
    const f = mapFile({ ioas_id: a, fd: mfd, start: 0, length: 4 * PAGE }).iova;
    mapFile({ ioas_id: b, fd: mfd, start: 0, length: PAGE });
    const u = ictx.map(b, buf, PAGE);
    const locked = host.lockedPages;
    expectErrno(() => changeProcess(), 'EINVAL');
    ictx.unmap(b, u, PAGE);
    const u2 = ictx.map(a, buf, PAGE);
    expectErrno(() => changeProcess(), 'EINVAL');
    ictx.unmap(a, u2, PAGE);
    // A copy of a user area is still a user area.
    const c = ictx.ioasAlloc();
    const src = ictx.map(c, buf, PAGE);
    copy({ flags: RW, dst_ioas_id: a, src_ioas_id: c, length: PAGE, src_iova: src });
    ictx.unmap(c, src, PAGE);
    expectErrno(() => changeProcess(), 'EINVAL');
    expect(unmapAll(a)).toBe(5n * P);
    mapFile({ ioas_id: a, fd: mfd, start: 0, length: 4 * PAGE, flags: RW | FIXED, iova: f });
    // File areas only (and a copy of a file area): the same process takes the charge over, nothing changes.
    copy({ flags: RW, dst_ioas_id: c, src_ioas_id: a, length: 2 * PAGE, src_iova: f });
    changeProcess();
    expect(host.lockedPages).toBe(locked);
    dev.dma.write(f, pattern(32, 81));
    expect(dev.dma.read(f, 32)).toEqual(pattern(32, 81));
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_OPTION (main.c iommufd_option, ioas.c iommufd_option_rlimit_mode / iommufd_ioas_option, ref §2.9)', () => {
  it('__reserved != 0 is EOPNOTSUPP, for every option', () => {
    // main.c iommufd_option(): `if (cmd->__reserved) return -EOPNOTSUPP;` first.
    const ioas = ictx.ioasAlloc();
    expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_GET, __reserved: 1 }), 'EOPNOTSUPP');
    expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_GET, object_id: ioas, __reserved: 0x8000 }), 'EOPNOTSUPP');
    expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_GET, object_id: 99, __reserved: 1 }), 'EOPNOTSUPP');
  });

  it('an unknown option id is EOPNOTSUPP, whatever the object', () => {
    // main.c iommufd_option(): `default: return -EOPNOTSUPP;`
    const ioas = ictx.ioasAlloc();
    for (const option_id of [4, 0x100, 0xffff_ffff]) {
      expectErrno(() => option({ option_id, op: OP_GET }), 'EOPNOTSUPP');
      expectErrno(() => option({ option_id, op: OP_SET, object_id: ioas, val64: 1 }), 'EOPNOTSUPP');
    }
  });

  it('only val64 is written back, and nothing on failure', () => {
    // main.c iommufd_option(): copy_to_user(&ubuffer->val64, &cmd->val64, sizeof(cmd->val64)) only when rc == 0.
    const ioas = ictx.ioasAlloc();
    const s = uapi.iommu_option;
    const get = callStruct(host, ictx.fd, uapi.IOMMU_OPTION, s, { size: 24, option_id: HUGE_PAGES, op: OP_GET, object_id: ioas, val64: 0x1234n });
    expect(get.out).toEqual({ size: 24, option_id: HUGE_PAGES, op: OP_GET, __reserved: 0, object_id: ioas, val64: 1n });
    const bytes = s.encode({ size: 24, option_id: HUGE_PAGES, op: OP_SET, object_id: ioas, val64: 2n });
    const before = bytes.slice();
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_OPTION, bytes), 'EINVAL');
    expect(bytes).toEqual(before);
  });

  describe('RLIMIT_MODE', () => {
    it('GET is 0 by default; SET 1 then GET 1; SET 2 is EINVAL; SET 0 (selftest iommufd global_options)', () => {
      // ioas.c iommufd_option_rlimit_mode(): GET -> account_mode == MM; SET 0 USER, 1 MM, else -EINVAL.
      expect(rlimitGet()).toBe(0n);
      option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 });
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 2 }), 'EINVAL');
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1n << 32n }), 'EINVAL');
      expect(rlimitGet()).toBe(1n);
      option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 0 });
      expect(rlimitGet()).toBe(0n);
    });

    it('object_id != 0 is EOPNOTSUPP, before the op is looked at', () => {
      // ioas.c iommufd_option_rlimit_mode(): `if (cmd->object_id) return -EOPNOTSUPP;` first.
      const ioas = ictx.ioasAlloc();
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_GET, object_id: ioas }), 'EOPNOTSUPP');
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, object_id: 99, val64: 1 }), 'EOPNOTSUPP');
    });

    it('an unknown op is EOPNOTSUPP', () => {
      // ioas.c iommufd_option_rlimit_mode(): neither GET nor SET -> -EOPNOTSUPP.
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: 2, val64: 1 }), 'EOPNOTSUPP');
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: 0xffff }), 'EOPNOTSUPP');
    });

    it('SET with any object in the fd is EBUSY (an IOAS, a bound DEVICE), also for an invalid value', () => {
      // ioas.c: `if (!xa_empty(&ictx->objects)) rc = -EBUSY;` before the value is looked at.
      const ioas = ictx.ioasAlloc();
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 }), 'EBUSY');
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 2 }), 'EBUSY');
      expect(rlimitGet()).toBe(0n); // GET works with objects
      ictx.destroy(ioas);
      const { dev } = boundDevice(host, ictx);
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 }), 'EBUSY');
      dev.close();
      option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 });
      expect(rlimitGet()).toBe(1n);
    });

    it('SET without CAP_SYS_RESOURCE is EPERM, before EBUSY and EINVAL; GET needs no capability', async () => {
      // ioas.c: `if (!capable(CAP_SYS_RESOURCE)) return -EPERM;` first in the SET branch.
      host = await newHost({ credentials: { capSysResource: false } });
      ictx = new Iommufd(host);
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 }), 'EPERM');
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 2 }), 'EPERM');
      ictx.ioasAlloc();
      expectErrno(() => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 0 }), 'EPERM');
      expect(rlimitGet()).toBe(0n);
    });
  });

  describe('HUGE_PAGES', () => {
    let ioas: number;
    beforeEach(() => {
      ioas = ictx.ioasAlloc();
    });

    it('object 0 or an object that is not an IOAS is ENOENT, for GET and SET (selftest iommufd global_options)', () => {
      // ioas.c iommufd_ioas_option(): iommufd_get_ioas(cmd->object_id) -> ENOENT.
      expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_GET, object_id: 0 }), 'ENOENT');
      expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_SET, object_id: 0, val64: 0 }), 'ENOENT');
      const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
      expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_GET, object_id: devid }), 'ENOENT');
      expectErrno(() => option({ option_id: HUGE_PAGES, op: OP_SET, object_id: hwpt, val64: 0 }), 'ENOENT');
    });

    it('GET is 1 by default; SET 0 then GET 0; SET 2 is EINVAL; SET 1 (selftest iommufd_ioas ioas_option_huge_pages)', () => {
      // ioas.c iommufd_ioas_option_huge_pages().
      expect(hugeGet(ioas)).toBe(1n);
      hugeSet(ioas, 0);
      expect(hugeGet(ioas)).toBe(0n);
      expectErrno(() => hugeSet(ioas, 2), 'EINVAL');
      expectErrno(() => hugeSet(ioas, 1n << 63n), 'EINVAL');
      expect(hugeGet(ioas)).toBe(0n);
      hugeSet(ioas, 1);
      expect(hugeGet(ioas)).toBe(1n);
    });

    it('an unknown op is EOPNOTSUPP, after the object lookup', () => {
      // ioas.c: iommufd_get_ioas() comes first, then iommufd_ioas_option_huge_pages() -> -EOPNOTSUPP.
      expectErrno(() => option({ option_id: HUGE_PAGES, op: 2, object_id: ioas }), 'EOPNOTSUPP');
      expectErrno(() => option({ option_id: HUGE_PAGES, op: 2, object_id: 99 }), 'ENOENT');
    });

    it('SET 0 raises out_iova_alignment to PAGE_SIZE; SET 1 lowers it again (no domain)', () => {
      // io_pagetable.c iopt_calculate_iova_alignment(): PAGE_SIZE if disable_large_pages, else 1, then the domains'.
      hugeSet(ioas, 0);
      expect(ictx.iovaRanges(ioas).out_iova_alignment).toBe(4096n);
      const buf = host.mmap(2 * PAGE);
      expectErrno(() => ictx.map(ioas, buf, PAGE + 1), 'EINVAL');
      hugeSet(ioas, 1);
      expect(ictx.iovaRanges(ioas).out_iova_alignment).toBe(1n);
      expect(ictx.map(ioas, buf, PAGE + 1)).toBeGreaterThan(0n);
    });

    it('SET 0 while a device is attached and an area exists is EINVAL; without the area it works; SET 0 again is a no-op', () => {
      // io_pagetable.c iopt_disable_large_pages(): `if (iopt->disable_large_pages) goto out_unlock;` (rc 0), then
      // `if (!xa_empty(&iopt->domains) && !RB_EMPTY_ROOT(&iopt->area_itree.rb_root)) rc = -EINVAL;`
      const { dev } = attachDevice(ioas);
      const buf = host.mmap(HPAGE);
      const iova = ictx.map(ioas, buf, HPAGE);
      expectErrno(() => hugeSet(ioas, 0), 'EINVAL');
      expect(hugeGet(ioas)).toBe(1n);
      expect(dev.dma.translate(iova).size).toBe(HPAGE); // the mapping was not touched
      ictx.unmap(ioas, iova, HPAGE);
      hugeSet(ioas, 0);
      expect(ictx.iovaRanges(ioas).out_iova_alignment).toBe(4096n);
      ictx.map(ioas, buf, HPAGE);
      hugeSet(ioas, 0);
      expect(hugeGet(ioas)).toBe(0n);
      // Enabling always works.
      hugeSet(ioas, 1);
      expect(hugeGet(ioas)).toBe(1n);
    });

    it('with HUGE_PAGES 0 a 2 MiB-aligned 2 MiB buffer gets 4 KiB IOPTEs; by default one 2 MiB leaf', () => {
      // pages.c batch_to_domain(): `if (disable_large_pages) rc = batch_iommu_map_small(...)` (PAGE_SIZE iommu_map() calls);
      // otherwise iommu_map() of the whole contiguous run, which VT-d maps with a 2 MiB super-page.
      const buf = host.mmap(HPAGE);
      const dflt = ictx.ioasAlloc();
      const A = attachDevice(dflt);
      const i1 = ictx.map(dflt, buf, HPAGE);
      expect(i1 % BigInt(HPAGE)).toBe(0n);
      expect(A.dev.dma.translate(i1).size).toBe(HPAGE);
      // Set before the device attaches.
      hugeSet(ioas, 0);
      const B = attachDevice(ioas);
      const i2 = ictx.map(ioas, buf, HPAGE);
      expect(i2 % BigInt(HPAGE)).toBe(0n);
      expect(B.dev.dma.translate(i2).size).toBe(4096);
      expect(B.dev.dma.translate(i2 + BigInt(HPAGE) - 1n).size).toBe(4096);
      expect(B.dev.dma.translate(i2 + 0x1234n).pa).toBe(A.dev.dma.translate(i1 + 0x1234n).pa);
      // Set on an IOAS with an area but no device: the attach maps 4 KiB IOPTEs.
      const c = ictx.ioasAlloc();
      const i3 = ictx.map(c, buf, HPAGE);
      hugeSet(c, 0);
      const C = attachDevice(c);
      expect(C.dev.dma.translate(i3).size).toBe(4096);
      expect(C.dev.dma.translate(i3 + 0x10_0000n).size).toBe(4096);
    });

    it('SET 0 with a misaligned area is EADDRINUSE and nothing changes (selftest iommufd_ioas ioas_align_change)', () => {
      // io_pagetable.c iopt_disable_large_pages() -> iopt_calculate_iova_alignment() -> iopt_check_iova_alignment():
      // iova, length or page_offset not PAGE_SIZE-aligned -> -EADDRINUSE; then `disable_large_pages = false`.
      const buf = host.mmap(4 * PAGE);
      const base = 0x100_0000n;
      // Aligned: the upgrade works, and misalignment is then rejected at map time.
      ictx.map(ioas, buf, PAGE, base);
      hugeSet(ioas, 0);
      expectErrno(() => ictx.map(ioas, buf + 0x800, PAGE, base + P), 'EINVAL');
      hugeSet(ioas, 0);
      hugeSet(ioas, 1);
      // Misaligned by page offset, by IOVA, by length.
      for (const [va, len, iova] of [[buf + 0x800, PAGE, base + P], [buf, PAGE, base + 0x2800n], [buf, 0x800, base + 4n * P]] as const) {
        ictx.map(ioas, va, len, iova);
        const t0 = trace();
        expectErrno(() => hugeSet(ioas, 0), 'EADDRINUSE');
        expect(trace()).toEqual(t0);
        expect(hugeGet(ioas)).toBe(1n);
        expect(ictx.iovaRanges(ioas).out_iova_alignment).toBe(1n);
        expect(ictx.unmap(ioas, iova, len)).toBe(BigInt(len));
      }
      hugeSet(ioas, 0);
      expect(ictx.unmap(ioas, base, PAGE)).toBe(P);
    });
  });
});

// ---------------------------------------------------------------------------
describe('page pinning charged to RLIMIT_MEMLOCK (pages.c incr_user_locked_vm, ref §9)', () => {
  const LIMIT = 16; // pages
  beforeEach(async () => {
    host = await newHost({ credentials: { rlimitMemlock: LIMIT * PAGE } });
    ictx = new Iommufd(host);
  });

  it('attaching a device to an IOAS holding 32 pages is ENOMEM and leaves nothing pinned; at the limit it works', () => {
    // pages.c pfn_reader_user_update_pinned() -> incr_user_locked_vm(): `if (new_pages > lock_limit) return -ENOMEM;`
    // the error unwind of iopt_fill_domain() unpins the areas already filled.
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(32 * PAGE);
    const pfns = pfnsOf(buf, 32);
    const a1 = ictx.map(ioas, buf, 16 * PAGE);
    ictx.map(ioas, buf + 16 * PAGE, 16 * PAGE);
    const { dev } = boundDevice(host, ictx);
    const t0 = trace(pfns);
    expect(t0.lockedPages).toBe(0);
    expectErrno(() => dev.attach(ioas), 'ENOMEM');
    expect(trace(pfns)).toEqual(t0);
    expect(refs(pfns)).toEqual(new Array(32).fill(1));
    expect(dmaFault(() => dev.dma.read(a1, 4)).reason).toBe('blocked');
    // 16 pages is exactly the limit.
    ictx.unmap(ioas, a1, 16 * PAGE);
    dev.attach(ioas);
    expect(host.lockedPages).toBe(16);
  });

  it('a MAP (and a MAP_FILE) beyond the limit with a device attached is ENOMEM and maps nothing', () => {
    // pages.c iopt_area_fill_domains() -> pfn_reader_update_pinned() -> -ENOMEM; the new area is aborted.
    const ioas = ictx.ioasAlloc();
    attachDevice(ioas);
    const buf = host.mmap(32 * PAGE);
    const t0 = trace();
    expectErrno(() => ictx.map(ioas, buf, 17 * PAGE), 'ENOMEM');
    const mfd = memfd(host, 32 * PAGE);
    expectErrno(() => mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 32 * PAGE }), 'ENOMEM');
    expect(trace()).toEqual(t0);
    expect(unmapAll(ioas)).toBe(0n);
    ictx.map(ioas, buf, 10 * PAGE);
    expectErrno(() => ictx.map(ioas, buf, 7 * PAGE), 'ENOMEM');
    mapFile({ ioas_id: ioas, fd: mfd, start: 0, length: 6 * PAGE });
    expect(host.lockedPages).toBe(16);
  });

  it('the limit is per user: pins in two IOASes and two iommufd fds add up', () => {
    // pages.c incr_user_locked_vm(): pages->source_user->locked_vm, one counter per user.
    const a = ictx.ioasAlloc();
    attachDevice(a);
    ictx.map(a, host.mmap(10 * PAGE), 10 * PAGE);
    const b = ictx.ioasAlloc();
    attachDevice(b);
    expectErrno(() => ictx.map(b, host.mmap(10 * PAGE), 10 * PAGE), 'ENOMEM');
    const other = new Iommufd(host);
    const c = other.ioasAlloc();
    const { dev } = boundDevice(host, other);
    dev.attach(c);
    expectErrno(() => other.map(c, host.mmap(7 * PAGE), 7 * PAGE), 'ENOMEM');
    other.map(c, host.mmap(6 * PAGE), 6 * PAGE);
    expect(host.lockedPages).toBe(16);
  });

  it('COPY shares the charge: the pages are charged once', () => {
    // ref §9 "Copies share the pages object"; pages.c: npinned is per iopt_pages.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    attachDevice(a);
    attachDevice(b);
    const src = ictx.map(a, host.mmap(12 * PAGE), 12 * PAGE);
    expect(host.lockedPages).toBe(12);
    copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 12 * PAGE, src_iova: src });
    copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 12 * PAGE, src_iova: src });
    copy({ flags: RW, dst_ioas_id: a, src_ioas_id: a, length: 4 * PAGE, src_iova: src });
    expect(host.lockedPages).toBe(12);
    expect(unmapAll(a)).toBe(16n * P);
    expect(host.lockedPages).toBe(12);
    expect(unmapAll(b)).toBe(24n * P);
    expect(host.lockedPages).toBe(0);
  });

  it('COPY of 2 of 8 never-pinned pages into an IOAS with a device charges 2 pages (pages.c)', () => {
    // Linux: pages.c iopt_area_fill_domains() pins [iopt_area_index(area), iopt_area_last_index(area)] and
    // pfn_reader_update_pinned() charges npinned - last_npinned = 2.
    const a = ictx.ioasAlloc();
    const src = ictx.map(a, host.mmap(8 * PAGE), 8 * PAGE);
    const b = ictx.ioasAlloc();
    attachDevice(b);
    copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 2 * PAGE, src_iova: src + 6n * P });
    expect(host.lockedPages).toBe(2);
  });

  it('closing every fd drops every charge', () => {
    // main.c iommufd_fops_release() destroys every object; pages.c unpins and decr_user_locked_vm().
    const a = ictx.ioasAlloc();
    const { dev } = attachDevice(a);
    ictx.map(a, host.mmap(8 * PAGE), 8 * PAGE);
    mapFile({ ioas_id: a, fd: memfd(host, 4 * PAGE), start: 0, length: 4 * PAGE });
    expect(host.lockedPages).toBe(12);
    ictx.close();
    expect(host.lockedPages).toBe(12); // the device fd still holds the iommufd
    dev.close();
    expect(host.lockedPages).toBe(0);
  });

  it('with CAP_IPC_LOCK nothing is charged (IOPT_PAGES_ACCOUNT_NONE)', async () => {
    // pages.c iopt_alloc_pages(): `if (capable(CAP_IPC_LOCK)) pages->account_mode = IOPT_PAGES_ACCOUNT_NONE;`
    host = await newHost({ credentials: { rlimitMemlock: LIMIT * PAGE, capIpcLock: true } });
    ictx = new Iommufd(host);
    const ioas = ictx.ioasAlloc();
    ictx.map(ioas, host.mmap(32 * PAGE), 32 * PAGE);
    const { dev } = attachDevice(ioas);
    ictx.map(ioas, host.mmap(32 * PAGE), 32 * PAGE);
    expect(host.lockedPages).toBe(0);
    dev.close();
  });

  it('RLIMIT_MODE 1 (mm->locked_vm, vfio style) enforces the same RLIMIT_MEMLOCK', () => {
    // pages.c update_mm_locked_vm() -> __account_locked_vm(): -ENOMEM past RLIMIT_MEMLOCK.
    option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 });
    const ioas = ictx.ioasAlloc();
    attachDevice(ioas);
    expectErrno(() => ictx.map(ioas, host.mmap(17 * PAGE), 17 * PAGE), 'ENOMEM');
    ictx.map(ioas, host.mmap(16 * PAGE), 16 * PAGE);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_VFIO_IOAS (vfio_compat.c iommufd_vfio_ioas, ref §2.10)', () => {
  it('__reserved != 0 is EOPNOTSUPP, for every op', () => {
    // vfio_compat.c: `if (cmd->__reserved) return -EOPNOTSUPP;` before the op switch.
    const ioas = ictx.ioasAlloc();
    for (const op of [VFIO_GET, VFIO_SET, VFIO_CLEAR, 7]) {
      expectErrno(() => vfio({ ioas_id: ioas, op, __reserved: 1 }), 'EOPNOTSUPP');
    }
  });

  it('GET with no compat IOAS is ENODEV and writes nothing back', () => {
    // vfio_compat.c get_compat_ioas(): ERR_PTR(-ENODEV).
    const bytes = uapi.iommu_vfio_ioas.encode({ size: 12, ioas_id: 0x55, op: VFIO_GET });
    const before = bytes.slice();
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_VFIO_IOAS, bytes), 'ENODEV');
    expect(bytes).toEqual(before);
    ictx.ioasAlloc(); // an IOAS alone is not the compat IOAS
    expectErrno(() => vfio({ op: VFIO_GET }), 'ENODEV');
  });

  it('SET then GET returns it; SET to another moves it', () => {
    // vfio_compat.c: SET stores ictx->vfio_ioas; GET writes its id (iommufd_ucmd_respond).
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    vfio({ ioas_id: a, op: VFIO_SET });
    expect(vfio({ ioas_id: 0, op: VFIO_GET }).ioas_id).toBe(a);
    vfio({ ioas_id: b, op: VFIO_SET });
    expect(vfio({ ioas_id: 0, op: VFIO_GET }).ioas_id).toBe(b);
  });

  it('SET to something that is not an IOAS is ENOENT and keeps the current one', () => {
    // vfio_compat.c: iommufd_get_ioas(ucmd->ictx, cmd->ioas_id) -> ENOENT.
    const a = ictx.ioasAlloc();
    vfio({ ioas_id: a, op: VFIO_SET });
    const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
    for (const id of [0, 99, devid, hwpt]) expectErrno(() => vfio({ ioas_id: id, op: VFIO_SET }), 'ENOENT');
    expect(vfio({ op: VFIO_GET }).ioas_id).toBe(a);
  });

  it('CLEAR always succeeds and does not destroy the IOAS', () => {
    // vfio_compat.c: IOMMU_VFIO_IOAS_CLEAR: ictx->vfio_ioas = NULL; return 0.
    vfio({ op: VFIO_CLEAR });
    const a = ictx.ioasAlloc();
    vfio({ ioas_id: a, op: VFIO_SET });
    vfio({ ioas_id: 12345, op: VFIO_CLEAR });
    expectErrno(() => vfio({ op: VFIO_GET }), 'ENODEV');
    expect(ictx.map(a, host.mmap(PAGE), PAGE)).toBeGreaterThan(0n);
    ictx.destroy(a);
  });

  it('an unknown op is EOPNOTSUPP', () => {
    // vfio_compat.c: `default: return -EOPNOTSUPP;`
    const a = ictx.ioasAlloc();
    for (const op of [3, 0xffff]) expectErrno(() => vfio({ ioas_id: a, op }), 'EOPNOTSUPP');
    expectErrno(() => vfio({ op: VFIO_GET }), 'ENODEV');
  });

  it('destroying the compat IOAS clears it; a DESTROY that fails (EBUSY) keeps it', () => {
    // main.c iommufd_destroy() / iommufd_object_remove(): `if (ictx->vfio_ioas && &ictx->vfio_ioas->obj == obj) ictx->vfio_ioas = NULL;`
    const a = ictx.ioasAlloc();
    vfio({ ioas_id: a, op: VFIO_SET });
    const { dev } = attachDevice(a);
    expectErrno(() => ictx.destroy(a), 'EBUSY');
    expect(vfio({ op: VFIO_GET }).ioas_id).toBe(a);
    dev.detach();
    ictx.destroy(a);
    expectErrno(() => vfio({ op: VFIO_GET }), 'ENODEV');
    // The id comes back for a new IOAS, which is not the compat one.
    expect(ictx.ioasAlloc()).toBe(a);
    expectErrno(() => vfio({ op: VFIO_GET }), 'ENODEV');
  });
});

// ---------------------------------------------------------------------------
describe('a failed call leaves no trace (DESIGN.md §4; the error paths of ioas.c, io_pagetable.c, pages.c, main.c)', () => {
  it('after each failing ALLOW_IOVAS, COPY, MAP_FILE, OPTION, VFIO_IOAS, CHANGE_PROCESS and attach: same objects, areas, pins, ranges and options', () => {
    // Every failure below returns before anything is committed in Linux: ioas.c copies the allowed list into a
    // private tree, iopt_map_pages() aborts its areas and unpins (iopt_free_pages_list, iopt_area_unfill_partial_domain),
    // iommufd_option_rlimit_mode() / iopt_disable_large_pages() change nothing on error, and a failed attach destroys
    // its automatic HWPT (iommufd_object_abort_and_destroy) and its reserved ranges (__iopt_remove_reserved_iova).
    const a = ictx.ioasAlloc(); // device, user area (pinned) and file area
    const A = attachDevice(a);
    const b = ictx.ioasAlloc(); // device, a copy of part of a's user area
    attachDevice(b);
    const c = ictx.ioasAlloc(); // no device: a writable and a read-only user area, a small allowed range
    const d = ictx.ioasAlloc(); // no device: an allowed range over the VT-d MSI window
    const buf = host.mmap(8 * PAGE);
    const mfd = memfd(host, 4 * PAGE);
    const ua = ictx.map(a, buf, 8 * PAGE, 0x10_0000);
    const fa = mapFile({ ioas_id: a, fd: mfd, start: 0, length: 4 * PAGE }).iova;
    copy({ flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: 4 * PAGE, src_iova: ua, dst_iova: 0x20_0000 });
    ictx.map(c, buf, 4 * PAGE, 0x10_0000);
    const ro = ictx.map(c, buf, 2 * PAGE, 0x20_0000, R | FIXED);
    allow(c, [[0x4000_0000, 0x4000_1fff]]);
    allow(d, [[MSI_START - P, MSI_START]]);
    vfio({ ioas_id: a, op: VFIO_SET });
    const pfns = Array.from({ length: 8 }, (_, i) => pfnAt(A.dev, ua + BigInt(i * PAGE)));
    const idle = boundDevice(host, ictx).dev;
    const ioases = [a, b, c, d];
    const snapshot = () => ({
      ...trace(pfns),
      ranges: ioases.map((id) => ictx.iovaRanges(id)),
      huge: ioases.map(hugeGet),
      compat: vfio({ op: VFIO_GET }).ioas_id,
      rlimit: rlimitGet(),
    });
    const s0 = snapshot();
    expect(s0.lockedPages).toBe(12);

    const failures: [string, () => unknown, Parameters<typeof expectErrno>[1]][] = [
      // ALLOW_IOVAS
      ['allow __reserved', () => allow(c, [[0x5000_0000, 0x5fff_ffff]], { __reserved: 1 }), 'EOPNOTSUPP'],
      ['allow bad ioas', () => allow(99, [[0x5000_0000, 0x5fff_ffff]]), 'ENOENT'],
      ['allow single byte', () => allow(c, [[0x5000_0000, 0x5fff_ffff], [0x7000_0000, 0x7000_0000]]), 'EINVAL'],
      ['allow overlap', () => allow(c, [[0x5000_0000, 0x5fff_ffff], [0x5fff_0000, 0x6fff_ffff]]), 'EINVAL'],
      ['allow fault', () => ictx.ioctl(T.IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: c, num_iovas: 2, allowed_iovas: 0 }), 'EFAULT'],
      ['allow over MSI', () => allow(a, [[0x5000_0000, 0x5fff_ffff], [MSI_START, MSI_LAST]]), 'EADDRINUSE'],
      // COPY
      ['copy flags', () => copy({ flags: RW | (1 << 5), dst_ioas_id: b, src_ioas_id: a, length: PAGE, src_iova: ua }), 'EOPNOTSUPP'],
      ['copy overflow', () => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: ULONG_MAX, src_iova: ua }), 'EOVERFLOW'],
      ['copy no R/W', () => copy({ flags: FIXED, dst_ioas_id: b, src_ioas_id: a, length: PAGE, src_iova: ua }), 'EINVAL'],
      ['copy bad src', () => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: 99, length: PAGE, src_iova: ua }), 'ENOENT'],
      ['copy length 0', () => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 0, src_iova: ua }), 'EINVAL'],
      ['copy not covered', () => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: a, length: 9 * PAGE, src_iova: ua }), 'ENOENT'],
      ['copy bad dst', () => copy({ flags: RW, dst_ioas_id: 99, src_ioas_id: a, length: PAGE, src_iova: ua }), 'ENOENT'],
      ['copy EEXIST', () => copy({ flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: 8 * PAGE, src_iova: ua, dst_iova: 0x1f_c000 }), 'EEXIST'],
      ['copy into MSI', () => copy({ flags: RW | FIXED, dst_ioas_id: b, src_ioas_id: a, length: PAGE, src_iova: ua, dst_iova: MSI_START }), 'EINVAL'],
      ['copy ENOSPC', () => copy({ flags: RW, dst_ioas_id: c, src_ioas_id: a, length: 4 * PAGE, src_iova: ua }), 'ENOSPC'],
      ['copy EPERM', () => copy({ flags: RW, dst_ioas_id: b, src_ioas_id: c, length: 2 * PAGE, src_iova: ro }), 'EPERM'],
      // MAP_FILE
      ['map_file flags', () => mapFile({ flags: RW | (1 << 9), ioas_id: a, fd: mfd, length: PAGE }), 'EOPNOTSUPP'],
      ['map_file overflow', () => mapFile({ ioas_id: a, fd: mfd, length: ULONG_MAX }), 'EOVERFLOW'],
      ['map_file no R/W', () => mapFile({ flags: 0, ioas_id: a, fd: mfd, length: PAGE }), 'EINVAL'],
      ['map_file bad ioas', () => mapFile({ ioas_id: 99, fd: mfd, length: PAGE }), 'ENOENT'],
      ['map_file bad fd', () => mapFile({ ioas_id: a, fd: 999, length: PAGE }), 'EBADF'],
      ['map_file past EOF', () => mapFile({ ioas_id: a, fd: mfd, start: 0, length: 4 * PAGE + 1 }), 'EINVAL'],
      ['map_file not a memfd', () => mapFile({ ioas_id: a, fd: ictx.fd, start: 0, length: PAGE }), 'EINVAL'],
      ['map_file EEXIST', () => mapFile({ flags: RW | FIXED, ioas_id: a, fd: mfd, start: 0, length: PAGE, iova: ua }), 'EEXIST'],
      // OPTION
      ['option __reserved', () => option({ option_id: HUGE_PAGES, op: OP_SET, object_id: c, val64: 0, __reserved: 1 }), 'EOPNOTSUPP'],
      ['option unknown', () => option({ option_id: 0x77, op: OP_SET, object_id: c, val64: 0 }), 'EOPNOTSUPP'],
      ['rlimit busy', () => option({ option_id: RLIMIT_MODE, op: OP_SET, val64: 1 }), 'EBUSY'],
      ['huge 2', () => hugeSet(c, 2), 'EINVAL'],
      ['huge 0 with device and area', () => hugeSet(a, 0), 'EINVAL'],
      ['huge object 0', () => hugeSet(0, 0), 'ENOENT'],
      // VFIO_IOAS
      ['vfio __reserved', () => vfio({ ioas_id: b, op: VFIO_SET, __reserved: 1 }), 'EOPNOTSUPP'],
      ['vfio set non-IOAS', () => vfio({ ioas_id: A.hwpt, op: VFIO_SET }), 'ENOENT'],
      ['vfio unknown op', () => vfio({ ioas_id: b, op: 9 }), 'EOPNOTSUPP'],
      // CHANGE_PROCESS
      ['change_process __reserved', () => changeProcess({ __reserved: 1 }), 'EOPNOTSUPP'],
      ['change_process with user areas', () => changeProcess(), 'EINVAL'],
      // attach
      ['attach over an allowed range', () => idle.attach(d), 'EADDRINUSE'],
    ];
    for (const [name, fn, code] of failures) {
      expectErrno(fn, code);
      expect(snapshot(), `state changed by "${name}"`).toEqual(s0);
    }
    // The areas are the ones mapped above, no more, no less.
    expect(unmapAll(b)).toBe(4n * P);
    expect(unmapAll(a)).toBe(12n * P);
    expect(unmapAll(c)).toBe(6n * P);
    expect(unmapAll(d)).toBe(0n);
    expect(host.lockedPages).toBe(0);
    expect(refs(pfns)).toEqual(new Array(8).fill(1));
    expect(fa).toBeGreaterThan(0n);
  });
});
