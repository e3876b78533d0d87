/**
 * The binary face of /dev/iommu: dispatch, the extensible-struct rules, and
 * IOMMU_DESTROY, IOAS_ALLOC, IOAS_MAP, IOAS_UNMAP and IOAS_IOVA_RANGES with
 * their errnos in Linux's check order.
 *
 * Every expectation names its source: the reference
 * (/work/shared/reference/iommufd-uapi.md, "ref §N"), a kernel function
 * (drivers/iommu/iommufd/{main,ioas,io_pagetable,pages,device}.c), or a case of
 * the selftest tools/testing/selftests/iommu/iommufd.c ("selftest <case>").
 * Where two checks fail at once, the errno proves which comes first.
 */
import { describe, it, expect, beforeEach } from 'vitest';
import { PROT_READ } from '../host/index.js';
import {
  newHost, expectErrno, outcome, Iommufd, VfioDevice, boundDevice, callStruct, pattern,
  PAGE, U64_MAX, uapi, type Host,
} from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const { IOMMU_IOAS_MAP_FIXED_IOVA: FIXED, IOMMU_IOAS_MAP_READABLE: R, IOMMU_IOAS_MAP_WRITEABLE: W } = uapi;
const RW = R | W;
/** ULONG_MAX on the 64-bit ABI. */
const ULONG_MAX = U64_MAX;
/** VT-d's interrupt window, reserved per attached device (intel_iommu_get_resv_regions, IOAPIC_RANGE_START/END). */
const MSI_START = 0xfee0_0000n;
const MSI_LAST = 0xfeef_ffffn;
/** A 4-level VT-d second stage: aperture [0, 2^48 - 1]. */
const APERTURE_LAST = (1n << 48n) - 1n;

/** The iommufd commands implemented so far (others answer ENOTTY for now). */
const IMPLEMENTED = ['IOMMU_DESTROY', 'IOMMU_IOAS_ALLOC', 'IOMMU_IOAS_IOVA_RANGES', 'IOMMU_IOAS_MAP', 'IOMMU_IOAS_UNMAP'].map((name) => {
  const d = uapi.IOMMUFD_IOCTLS.find((row) => row.name === name);
  if (!d) throw new Error(`no table row ${name}`);
  return d;
});

/** A buffer of `len` bytes whose first u32 is `size`, the rest zero unless filled. */
function sized(size: number, len: number, fill = 0): Uint8Array {
  const b = new Uint8Array(len).fill(fill);
  new DataView(b.buffer).setUint32(0, size, true);
  return b;
}

/** ffs(x) - 1: the index of the lowest set bit. */
function lowBit(x: bigint): bigint {
  return x & -x;
}

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

/** Map with an explicit struct, returning the written-back struct. */
function mapCmd(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_IOAS_MAP, values);
}

/** A device bound to ictx and attached to ioas; the auto HWPT id. */
function attachDevice(ioas: number): { dev: VfioDevice; devid: number; hwpt: number } {
  const { dev, devid } = boundDevice(host, ictx);
  const hwpt = dev.attach(ioas);
  return { dev, devid, hwpt };
}

// ---------------------------------------------------------------------------
describe('dispatch (main.c iommufd_fops_ioctl)', () => {
  it('an unknown nr below IOMMUFD_CMD_BASE goes to the VFIO compat layer and answers ENOTTY', () => {
    // selftest cmd_fail: ioctl(fd, _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1), &cmd) -> ENOTTY;
    // vfio_compat.c iommufd_vfio_ioctl(): default -> -ENOIOCTLCMD (userspace: ENOTTY).
    const cmd = uapi.iommu_destroy.encode({ size: 8, id: 0 });
    expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', 0x7f), cmd), 'ENOTTY');
    expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', 0x00), cmd), 'ENOTTY');
    expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', 0x40), cmd), 'ENOTTY');
  });

  it('the compat path never reads the argument: a 3-byte arg with nr < 0x80 is still ENOTTY', () => {
    // main.c: `if (nr < IOMMUFD_CMD_BASE || ...) return iommufd_vfio_ioctl(...)` comes before get_user(size).
    expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', 0x7f), new Uint8Array(3)), 'ENOTTY');
  });

  it('an nr past the end of the ioctl table answers ENOTTY', () => {
    // main.c: `(nr - IOMMUFD_CMD_BASE) >= ARRAY_SIZE(iommufd_ioctl_ops)` -> compat -> ENOTTY.
    // 0xa0 is IOMMU_TEST_CMD, which exists only with CONFIG_IOMMUFD_TEST.
    const last = uapi.IOMMUFD_IOCTLS[uapi.IOMMUFD_IOCTLS.length - 1].nr;
    for (const nr of [last + 1, 0x9f, 0xa0, 0xff]) {
      expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', nr), sized(8, 64)), 'ENOTTY');
      expectErrno(() => host.ioctl(ictx.fd, uapi._IO(';', nr), new Uint8Array(3)), 'ENOTTY');
    }
  });

  it('a table nr with a different request code (type byte or direction/size bits) answers ENOTTY', () => {
    // main.c: `if (op->ioctl_num != cmd) return -ENOIOCTLCMD;` (after get_user).
    const cmd = uapi.iommu_ioas_alloc.encode({ size: 12 });
    expectErrno(() => host.ioctl(ictx.fd, uapi._IO('X', 0x81), cmd), 'ENOTTY');
    const iowr = ((3 << 30) | (12 << 16) | (0x3b << 8) | 0x81) >>> 0; // _IOWR(';', 0x81, 12 bytes)
    expectErrno(() => host.ioctl(ictx.fd, iowr, cmd), 'ENOTTY');
    // Nothing was allocated by either call: the next IOAS is id 1.
    expect(ictx.ioasAlloc()).toBe(1);
  });

  it.each(IMPLEMENTED.map((d) => [d.name, d] as const))('%s: an argument shorter than the size word is EFAULT', (_name, desc) => {
    // main.c: get_user(ucmd.user_size, ...) faults -> EFAULT; selftest cmd_fail: ioctl(fd, IOMMU_DESTROY, NULL) -> EFAULT.
    expectErrno(() => host.ioctl(ictx.fd, desc.request, new Uint8Array(3)), 'EFAULT');
    expectErrno(() => host.ioctl(ictx.fd, desc.request, new Uint8Array(0)), 'EFAULT');
  });

  it('every row of the table reads the size word first: a 3-byte arg is EFAULT for each of them', () => {
    // main.c: get_user(ucmd.user_size, ...) runs before the table slot is even looked at.
    for (const desc of uapi.IOMMUFD_IOCTLS) {
      expect({ name: desc.name, errno: outcome(() => host.ioctl(ictx.fd, desc.request, new Uint8Array(3))) }).toEqual({ name: desc.name, errno: 'EFAULT' });
    }
  });

  it.each(IMPLEMENTED.map((d) => [d.name, d] as const))('%s: size < min_size is EINVAL (for 0 and min_size - 1)', (_name, desc) => {
    // main.c: `if (ucmd.user_size < op->min_size) return -EINVAL;`; selftest cmd_length (min_size - 1).
    // uapi row: minSize = offsetofend(struct, minField).
    expectErrno(() => host.ioctl(ictx.fd, desc.request, sized(desc.minSize - 1, desc.struct.size + 8)), 'EINVAL');
    expectErrno(() => host.ioctl(ictx.fd, desc.request, sized(0, desc.struct.size + 8)), 'EINVAL');
  });

  it('min_size is checked before the struct is copied: a 4-byte buffer with a short size is EINVAL, not EFAULT', () => {
    // main.c: the min_size check precedes copy_struct_from_user().
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_MAP, sized(T.IOMMU_IOAS_MAP.minSize - 1, 4)), 'EINVAL');
  });

  it.each(IMPLEMENTED.map((d) => [d.name, d] as const))('%s: size = sizeof + 1 is E2BIG with a 0xff extra byte, and like sizeof with a zero one', (_name, desc) => {
    // selftest cmd_length (TEST_LENGTH): extra = UINT8_MAX -> E2BIG; size = sizeof -> rc;
    // size = sizeof + 1 with extra = 0 -> the same rc/errno. include/linux/uaccess.h copy_struct_from_user().
    const s = desc.struct.size;
    const withExtra = (extra: number) => {
      const b = sized(s + 1, s + 1);
      b[s] = extra;
      return b;
    };
    expectErrno(() => host.ioctl(ictx.fd, desc.request, withExtra(0xff)), 'E2BIG');
    const exact = outcome(() => host.ioctl(ictx.fd, desc.request, sized(s, s + 1, 0)));
    const longer = outcome(() => host.ioctl(ictx.fd, desc.request, withExtra(0)));
    expect(longer).toBe(exact);
  });

  it('cmd_ex_fail: a longer IOMMU_DESTROY with a zero tail behaves as the short one; a non-zero tail is E2BIG', () => {
    // selftest cmd_ex_fail.
    const b = sized(16, 16);
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_DESTROY, b), 'ENOENT');
    b[8] = 1; // future = 1
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_DESTROY, b), 'E2BIG');
    new DataView(b.buffer).setUint32(0, 8, true);
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_DESTROY, b), 'ENOENT');
    new DataView(b.buffer).setUint32(0, 7, true);
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_DESTROY, b), 'EINVAL');
  });

  it('E2BIG comes before the handler: IOAS_ALLOC with flags != 0 and a non-zero tail is E2BIG', () => {
    // main.c: copy_struct_from_user() runs before op->execute().
    const s = uapi.iommu_ioas_alloc.size;
    const b = new Uint8Array(s + 4);
    uapi.iommu_ioas_alloc.encode({ size: s + 4, flags: 1 }, b);
    b[s + 3] = 1;
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_ALLOC, b), 'E2BIG');
  });

  it('a size larger than the buffer the caller owns faults (EFAULT)', () => {
    // main.c: copy_struct_from_user() of user_size bytes; reading past the caller's memory faults.
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_MAP, sized(40, 20)), 'EFAULT');
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_ALLOC, sized(20, 12)), 'EFAULT');
  });

  it('the minimal struct (size = min_size) is accepted: IOAS_ALLOC with 12 bytes, IOAS_MAP with 40', () => {
    // ref §1 command table: IOAS_ALLOC min_size = offsetofend(out_ioas_id) = 12, IOAS_MAP offsetofend(iova) = 40.
    expect(T.IOMMU_IOAS_ALLOC.minSize).toBe(12);
    expect(T.IOMMU_IOAS_MAP.minSize).toBe(40);
    const a = uapi.iommu_ioas_alloc.encode({ size: 12 });
    expect(host.ioctl(ictx.fd, uapi.IOMMU_IOAS_ALLOC, a)).toBe(0);
    expect(uapi.iommu_ioas_alloc.get(a, 'out_ioas_id')).toBe(1);
    const m = uapi.iommu_ioas_map.encode({ size: 40, flags: RW | FIXED, ioas_id: 1, user_va: 1n << 31n, length: PAGE, iova: 0x10000 });
    expect(host.ioctl(ictx.fd, uapi.IOMMU_IOAS_MAP, m)).toBe(0);
  });

  it('bytes past `size` are neither read nor written', () => {
    // main.c: copy_struct_from_user(..., user_size) reads user_size bytes;
    // iommufd_ucmd_respond() copies min(user_size, sizeof) bytes back.
    const s = uapi.iommu_ioas_alloc.size;
    const b = new Uint8Array(s + 8).fill(0xa5);
    uapi.iommu_ioas_alloc.encode({ size: s, flags: 0, out_ioas_id: 0 }, b);
    expect(host.ioctl(ictx.fd, uapi.IOMMU_IOAS_ALLOC, b)).toBe(0);
    expect(uapi.iommu_ioas_alloc.get(b, 'out_ioas_id')).toBe(1);
    expect([...b.subarray(s)]).toEqual(new Array(8).fill(0xa5));
  });

  it('a longer struct with a zero tail gets sizeof bytes back and its tail left zero', () => {
    // iommufd_ucmd_respond(): copy_to_user(ubuffer, cmd, min(user_size, sizeof(*cmd))).
    const s = uapi.iommu_ioas_alloc.size;
    const b = new Uint8Array(s + 16).fill(0x77);
    uapi.iommu_ioas_alloc.encode({ size: s + 8 }, b);
    b.fill(0, s, s + 8);
    expect(host.ioctl(ictx.fd, uapi.IOMMU_IOAS_ALLOC, b)).toBe(0);
    expect(uapi.iommu_ioas_alloc.decode(b)).toEqual({ size: s + 8, flags: 0, out_ioas_id: 1 });
    expect([...b.subarray(s, s + 8)]).toEqual(new Array(8).fill(0));
    expect([...b.subarray(s + 8)]).toEqual(new Array(8).fill(0x77));
  });

  it('a shorter struct reads zeros past its size even right after a full one left bytes there', () => {
    // copy_struct_from_user() zero-fills the kernel struct past user_size on
    // every call; the kernel buffer is reused between calls here, so the
    // tail of the previous call must not show through. VEVENTQ_ALLOC's
    // __reserved lies past min_size and is checked first (EOPNOTSUPP).
    const S = uapi.iommu_veventq_alloc;
    expect(T.IOMMU_VEVENTQ_ALLOC.minSize).toBeLessThan(S.size);
    const full = S.encode({ size: S.size, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, __reserved: 1 });
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_VEVENTQ_ALLOC, full), 'EOPNOTSUPP');
    const short = S.encode({ size: T.IOMMU_VEVENTQ_ALLOC.minSize, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 }).subarray(0, T.IOMMU_VEVENTQ_ALLOC.minSize);
    // __reserved reads as 0: the next check (veventq_depth 0) answers.
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_VEVENTQ_ALLOC, short), 'EINVAL');
  });

  it('a failed call copies nothing back', () => {
    // ioas.c iommufd_ioas_map(): cmd->iova is written and iommufd_ucmd_respond() called only when rc == 0.
    const ioas = ictx.ioasAlloc();
    ictx.map(ioas, 1n << 31n, PAGE, 0x10000);
    const b = uapi.iommu_ioas_map.encode({ size: 40, flags: RW, ioas_id: ioas, user_va: 1n << 31n, length: 1n << 63n, iova: 0x1234 });
    const before = b.slice();
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_MAP, b), 'EOVERFLOW');
    expect(b).toEqual(before);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_ALLOC (ioas.c iommufd_ioas_alloc_ioctl)', () => {
  it('hands out ids from 1, lowest free first, reusing destroyed ids', () => {
    // ref §1 "Object IDs": xarray with XA_FLAGS_ALLOC1, the lowest free id, reused after a destroy.
    expect([ictx.ioasAlloc(), ictx.ioasAlloc(), ictx.ioasAlloc()]).toEqual([1, 2, 3]);
    ictx.destroy(2);
    expect(ictx.ioasAlloc()).toBe(2);
    ictx.destroy(1);
    ictx.destroy(3);
    expect(ictx.ioasAlloc()).toBe(1);
    expect(ictx.ioasAlloc()).toBe(3);
    expect(ictx.ioasAlloc()).toBe(4);
  });

  it('flags != 0 is EOPNOTSUPP and consumes no id', () => {
    // ioas.c: `if (cmd->flags) return -EOPNOTSUPP;` (before iommufd_ioas_alloc()).
    for (const flags of [1, 2, 0x8000_0000]) expectErrno(() => ictx.ioasAlloc(flags), 'EOPNOTSUPP');
    expect(ictx.ioasAlloc()).toBe(1);
  });

  it('each /dev/iommu open has its own id space', () => {
    // main.c iommufd_fops_open(): one ictx (and one objects xarray) per open.
    const other = new Iommufd(host);
    expect(ictx.ioasAlloc()).toBe(1);
    expect(other.ioasAlloc()).toBe(1);
    expectErrno(() => other.destroy(2), 'ENOENT');
  });

  it('a new IOAS has no mappings and the full IOVA range with alignment 1', () => {
    // ref §2.2: a new IOAS has no areas, no reserved or allowed ranges, iova_alignment = 1.
    const ioas = ictx.ioasAlloc();
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(0n);
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: U64_MAX }] });
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_DESTROY (main.c iommufd_destroy)', () => {
  it('ENOENT for id 0, an unknown id, and an id already destroyed', () => {
    // selftest cmd_fail: _test_ioctl_destroy(fd, 0) -> ENOENT; ref §2.1.
    expectErrno(() => ictx.destroy(0), 'ENOENT');
    expectErrno(() => ictx.destroy(7), 'ENOENT');
    const ioas = ictx.ioasAlloc();
    ictx.destroy(ioas);
    expectErrno(() => ictx.destroy(ioas), 'ENOENT');
  });

  it('destroys an IOAS with areas and no device (selftest ioas_area_destroy, no_domain)', () => {
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(4 * PAGE);
    ictx.map(ioas, buf, PAGE, 0x100000);
    ictx.map(ioas, buf, 4 * PAGE);
    ictx.destroy(ioas);
    expectErrno(() => ictx.unmap(ioas, 0, U64_MAX), 'ENOENT');
  });

  it('EBUSY for an IOAS with an HWPT (a device attached), and for that HWPT and the DEVICE', () => {
    // selftest ioas_destroy / ioas_area_destroy (mock_domain): "IOAS cannot be freed while a device has a HWPT using it";
    // ref §2.1: a DEVICE (the binding driver holds a ref), a HWPT with attached devices -> EBUSY.
    const ioas = ictx.ioasAlloc();
    const { dev, devid, hwpt } = attachDevice(ioas);
    expectErrno(() => ictx.destroy(ioas), 'EBUSY');
    expectErrno(() => ictx.destroy(hwpt), 'EBUSY');
    expectErrno(() => ictx.destroy(devid), 'EBUSY');
    // Nothing was destroyed: the IOAS still maps, the device still translates.
    const buf = host.mmap(PAGE);
    const iova = ictx.map(ioas, buf, PAGE);
    host.mem.write(buf, pattern(16));
    expect(dev.dma.read(iova, 16)).toEqual(pattern(16));
  });

  it('the IOAS can be destroyed once its device detached', () => {
    // ref §3.1 "Detach": the auto HWPT loses its last user and is destroyed, dropping its IOAS reference.
    const ioas = ictx.ioasAlloc();
    const { dev } = attachDevice(ioas);
    dev.detach();
    ictx.destroy(ioas);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_MAP: check order (ioas.c iommufd_ioas_map, io_pagetable.c, ref §2.5)', () => {
  let ioas: number;
  let buf: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
    buf = host.mmap(16 * PAGE);
  });

  it('1. an unknown flag bit or __reserved != 0 is EOPNOTSUPP', () => {
    // ioas.c: `(cmd->flags & ~(FIXED_IOVA | WRITEABLE | READABLE)) || cmd->__reserved` -> -EOPNOTSUPP.
    for (const bit of [1 << 3, 1 << 16, 1 << 31]) {
      expectErrno(() => mapCmd({ flags: RW | bit, ioas_id: ioas, user_va: buf, length: PAGE }), 'EOPNOTSUPP');
    }
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, __reserved: 1, user_va: buf, length: PAGE }), 'EOPNOTSUPP');
  });

  it('1 before 2, 3, 4: unknown flag AND iova = ULONG_MAX AND bad ioas is EOPNOTSUPP', () => {
    expectErrno(() => mapCmd({ flags: 1 << 3, ioas_id: 99, user_va: buf, length: ULONG_MAX, iova: ULONG_MAX }), 'EOPNOTSUPP');
    expectErrno(() => mapCmd({ flags: 0, __reserved: 7, ioas_id: 99, user_va: buf, length: 0, iova: ULONG_MAX }), 'EOPNOTSUPP');
  });

  it('2. iova >= ULONG_MAX or length >= ULONG_MAX is EOVERFLOW, before the R/W check and the ioas lookup', () => {
    // ioas.c: `if (cmd->iova >= ULONG_MAX || cmd->length >= ULONG_MAX) return -EOVERFLOW;`
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: PAGE, iova: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: buf, length: ULONG_MAX }), 'EOVERFLOW');
    expectErrno(() => mapCmd({ flags: FIXED, ioas_id: 99, user_va: buf, length: 0, iova: ULONG_MAX }), 'EOVERFLOW');
  });

  it('3. neither READABLE nor WRITEABLE is EINVAL, before the ioas lookup', () => {
    // ioas.c: `if (!(cmd->flags & (WRITEABLE | READABLE))) return -EINVAL;` precedes iommufd_get_ioas().
    expectErrno(() => mapCmd({ flags: 0, ioas_id: ioas, user_va: buf, length: PAGE }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: FIXED, ioas_id: 99, user_va: buf, length: PAGE, iova: 0x10000 }), 'EINVAL');
  });

  it('4. an unknown ioas, id 0, or an id of another type is ENOENT, before length == 0', () => {
    // ioas.c iommufd_get_ioas() -> iommufd_get_object(..., IOMMUFD_OBJ_IOAS): absent or wrong type -> ENOENT (ref §1 "Lookup by ID").
    expectErrno(() => mapCmd({ flags: RW, ioas_id: 99, user_va: buf, length: 0 }), 'ENOENT');
    expectErrno(() => mapCmd({ flags: RW, ioas_id: 0, user_va: buf, length: PAGE }), 'ENOENT');
    const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
    expectErrno(() => mapCmd({ flags: RW, ioas_id: devid, user_va: buf, length: PAGE }), 'ENOENT');
    expectErrno(() => mapCmd({ flags: RW, ioas_id: hwpt, user_va: buf, length: PAGE }), 'ENOENT');
  });

  it('5. length == 0 is EINVAL (fixed and automatic)', () => {
    // pages.c iopt_alloc_pages(): `if (length > SIZE_MAX - PAGE_SIZE || length == 0) return ERR_PTR(-EINVAL);`
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: buf, length: 0 }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: 0, iova: 0x10000 }), 'EINVAL');
  });

  it('5. user_va + length overflowing is EOVERFLOW, before the alignment checks', () => {
    // pages.c iopt_alloc_user_pages(): check_add_overflow(uptr, length, &end) -> -EOVERFLOW; it runs before
    // iopt_alloc_area_pages() checks `length & (iova_alignment - 1)`.
    const va = ULONG_MAX - 0xfffn; // 2^64 - 4096
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: va, length: 0x2000 }), 'EOVERFLOW');
    attachDevice(ioas); // iova_alignment becomes 4096
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: va, length: 0x1800, iova: 0x10800 }), 'EOVERFLOW');
  });

  it('5. a length above SIZE_MAX - PAGE_SIZE is EINVAL (no overflow with user_va 0)', () => {
    // pages.c iopt_alloc_pages(): `length > SIZE_MAX - PAGE_SIZE` -> -EINVAL ("protect the DIV_ROUND_UP below from overflow").
    // user_va = 0 and iova = 0 keep check_add_overflow() and iopt_check_iova() quiet.
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: 0, length: ULONG_MAX - 1n, iova: 0 }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: 0, length: ULONG_MAX - 0xfffn, iova: 0 }), 'EINVAL');
    // Nothing was mapped.
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(0n);
  });

  it('6. a length that is not a multiple of iova_alignment is EINVAL, before the fixed-IOVA checks', () => {
    // io_pagetable.c iopt_alloc_area_pages(): `(length & (iopt->iova_alignment - 1)) || !length` -> -EINVAL,
    // then iopt_check_iova(). With a VT-d domain iova_alignment is 4096.
    attachDevice(ioas);
    ictx.map(ioas, buf, PAGE, 0x100000);
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: 0x800, iova: 0x100000 }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: 0x1800, iova: MSI_START }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: buf, length: PAGE + 1 }), 'EINVAL');
  });

  it('7. fixed: a misaligned iova is EINVAL, before the overlap check', () => {
    // io_pagetable.c iopt_check_iova(): `iova & (iopt->iova_alignment - 1)` -> -EINVAL first.
    attachDevice(ioas);
    ictx.map(ioas, buf, 2 * PAGE, 0x100000);
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: PAGE, iova: 0x100800 }), 'EINVAL');
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: PAGE, iova: 0x200800 }), 'EINVAL');
  });

  it('7. fixed: iova + length - 1 overflowing is EOVERFLOW', () => {
    // io_pagetable.c iopt_check_iova(): check_add_overflow(iova, length - 1, &last) -> -EOVERFLOW.
    expectErrno(() => mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: 0x2000, iova: ULONG_MAX - 0xfffn }), 'EOVERFLOW');
    // The last byte exactly at ULONG_MAX - 1 fits (no domain: no reserved range).
    expect(ictx.map(ioas, buf, PAGE, ULONG_MAX - 0x1000n)).toBe(ULONG_MAX - 0x1000n);
  });

  it('7. fixed: a range touching a reserved range is EINVAL, checked before an overlapping area (EEXIST)', () => {
    // io_pagetable.c iopt_check_iova(): iopt_reserved_iter_first() -> -EINVAL, then iopt_area_iter_first() -> -EEXIST.
    attachDevice(ioas);
    ictx.map(ioas, buf, 16 * PAGE, MSI_START - 16n * 4096n);
    // [MSI_START - 64K, MSI_START + 64K) touches both the area and the MSI window.
    expectErrno(() => ictx.map(ioas, buf, 32 * PAGE, MSI_START - 16n * 4096n), 'EINVAL');
    expectErrno(() => ictx.map(ioas, buf, PAGE, MSI_START), 'EINVAL');
    expectErrno(() => ictx.map(ioas, buf, PAGE, MSI_LAST - 0xfffn), 'EINVAL');
    // The aperture of the 48-bit domain: [2^48, ULONG_MAX] is reserved.
    expectErrno(() => ictx.map(ioas, buf, PAGE, APERTURE_LAST + 1n), 'EINVAL');
    expectErrno(() => ictx.map(ioas, buf, 2 * PAGE, APERTURE_LAST - 0xfffn), 'EINVAL');
    // Right below and right above the window is fine.
    expect(ictx.map(ioas, buf, PAGE, MSI_LAST + 1n)).toBe(MSI_LAST + 1n);
    expect(ictx.map(ioas, buf, PAGE, APERTURE_LAST - 0xfffn)).toBe(APERTURE_LAST - 0xfffn);
  });

  it('7. fixed: overlapping an existing area is EEXIST (selftest area "Over map fails")', () => {
    const base = 0x100000n;
    ictx.map(ioas, buf, 2 * PAGE, base + 16n * 4096n);
    for (const [len, page] of [[2, 16], [1, 16], [1, 17], [2, 15], [3, 15]] as const) {
      expectErrno(() => ictx.map(ioas, buf, len * PAGE, base + BigInt(page) * 4096n), 'EEXIST');
    }
    // Adjacent on both sides is fine.
    ictx.map(ioas, buf, PAGE, base + 15n * 4096n);
    ictx.map(ioas, buf, PAGE, base + 18n * 4096n);
  });

  it('8. automatic: length >= ULONG_MAX / 2 is EOVERFLOW', () => {
    // io_pagetable.c iopt_alloc_iova(): `if (length == 0 || length >= ULONG_MAX / 2) return -EOVERFLOW;`
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: 0, length: 1n << 63n }), 'EOVERFLOW');
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: 0, length: ULONG_MAX / 2n }), 'EOVERFLOW');
  });

  it('8. automatic: an alignment below iova_alignment is EINVAL', () => {
    // io_pagetable.c iopt_alloc_iova(): iova_alignment = min(roundup_pow_of_two(length), 1 << __ffs64(addr));
    // `if (iova_alignment < iopt->iova_alignment) return -EINVAL;` -- a VA at offset 0x800 gives 2048 < 4096.
    attachDevice(ioas);
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: buf + 0x800, length: PAGE }), 'EINVAL');
  });

  it('8. automatic: no hole large enough is ENOSPC', () => {
    // io_pagetable.c iopt_alloc_iova() -> -ENOSPC. With a 48-bit aperture there is no 2^48-byte hole.
    attachDevice(ioas);
    expectErrno(() => mapCmd({ flags: RW, ioas_id: ioas, user_va: PAGE, length: 1n << 48n }), 'ENOSPC');
  });

  it('9. the VA page offset must be a multiple of iova_alignment (EINVAL), checked after the overlap check', () => {
    // io_pagetable.c iopt_insert_area(): `area->page_offset & (iopt->iova_alignment - 1)` -> -EINVAL;
    // it runs after iopt_check_iova() (EEXIST), inside iopt_alloc_area_pages().
    attachDevice(ioas);
    ictx.map(ioas, buf, PAGE, 0x100000);
    expectErrno(() => ictx.map(ioas, buf + 0x800, PAGE, 0x100000), 'EEXIST');
    expectErrno(() => ictx.map(ioas, buf + 0x800, PAGE, 0x200000), 'EINVAL');
  });

  it('without a domain, a sub-page VA offset and an odd length are fine (iova_alignment 1)', () => {
    // ref §2.3: out_iova_alignment = 1 with no domains; selftest ioas_iova_alloc (no_domain): lengths 1..2*PAGE_SIZE-1 all map.
    for (let length = 1; length < 2 * PAGE; length += 97) {
      const iova = ictx.map(ioas, buf, length);
      expect(ictx.unmap(ioas, iova, length)).toBe(BigInt(length));
    }
    const iova = ictx.map(ioas, buf + 0x123, 0x100, 0x5123);
    expect(iova).toBe(0x5123n);
  });

  it('with a VT-d domain, every length not a multiple of 4096 is EINVAL (selftest ioas_iova_alloc, mock_domain)', () => {
    attachDevice(ioas);
    for (let length = 1; length <= 2 * PAGE; length += 255) {
      if (length % PAGE) {
        expectErrno(() => ictx.map(ioas, buf, length), 'EINVAL');
      } else {
        const iova = ictx.map(ioas, buf, length);
        ictx.unmap(ioas, iova, length);
      }
    }
    const iova = ictx.map(ioas, buf, 2 * PAGE);
    expect(ictx.unmap(ioas, iova, 2 * PAGE)).toBe(2n * 4096n);
  });

  it('11. with a domain, an unmapped VA is EFAULT and leaves nothing mapped or pinned', () => {
    // ref §2.5 item 11: pinning happens when a domain exists; a bad VA -> EFAULT.
    // selftest mock_domain basic: "EFAULT half way through mapping", "EFAULT on first page".
    const { dev } = attachDevice(ioas);
    const b = host.mmap(8 * PAGE);
    host.munmap(b + 4 * PAGE, 4 * PAGE);
    // Learn the frame behind the first page through a mapping of its own.
    const probe = ictx.map(ioas, b, PAGE, 0x200000);
    const pfn = Math.floor(dev.dma.translate(probe).pa / PAGE);
    expect(host.engine.refcount(pfn)).toBe(2);
    expectErrno(() => ictx.map(ioas, b, 8 * PAGE, 0x100000), 'EFAULT');
    expectErrno(() => ictx.map(ioas, b, 8 * PAGE), 'EFAULT');
    expectErrno(() => ictx.map(ioas, 0xdead_0000, PAGE, 0x100000), 'EFAULT');
    expectErrno(() => ictx.map(ioas, 1n << 31n, PAGE, 0x100000), 'EFAULT');
    // No pin was left behind and no area: the same IOVA maps again, and DMA there is not present.
    expect(host.engine.refcount(pfn)).toBe(2);
    expect(() => dev.dma.read(0x100000, 4)).toThrow(/not-present/);
    expect(ictx.map(ioas, b, 4 * PAGE, 0x100000)).toBe(0x100000n);
  });

  it('11. with a domain, WRITEABLE over a read-only VMA is EFAULT; READABLE alone maps it', () => {
    // ref §2.5 item 10: "A writable user MAP over a read-only VMA fails when pinned -> EFAULT" (pin_user_pages FOLL_WRITE).
    attachDevice(ioas);
    const ro = host.mmap(PAGE, PROT_READ);
    expectErrno(() => ictx.map(ioas, ro, PAGE, 0x100000, RW | FIXED), 'EFAULT');
    expectErrno(() => ictx.map(ioas, ro, PAGE, 0x100000, W | FIXED), 'EFAULT');
    expect(ictx.map(ioas, ro, PAGE, 0x100000, R | FIXED)).toBe(0x100000n);
  });

  it('without a domain, a bogus user VA is accepted (nothing is pinned)', () => {
    // selftest area_auto_iova (no_domain): test_ioctl_ioas_map((void *)(1UL << 31), length, &iova);
    // ref §2.5 "Behaviour with no domain attached": the VA is not checked.
    const a = ictx.map(ioas, 1n << 31n, 4 * PAGE);
    const b = ictx.map(ioas, 0xdead_0000, PAGE, 0x100000);
    expect(b).toBe(0x100000n);
    const ro = host.mmap(PAGE, PROT_READ);
    ictx.map(ioas, ro, PAGE, 0x200000, RW | FIXED);
    expect(ictx.unmap(ioas, a, 4 * PAGE)).toBe(4n * 4096n);
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(2n * 4096n);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_MAP: the IOVA written back (ref §2.5, §4)', () => {
  let ioas: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
  });

  it('a fixed IOVA is written back unchanged, the other fields too', () => {
    // ioas.c iommufd_ioas_map(): cmd->iova = iova; iommufd_ucmd_respond(ucmd, sizeof(*cmd)).
    const buf = host.mmap(PAGE);
    const out = mapCmd({ flags: RW | FIXED, ioas_id: ioas, user_va: buf, length: PAGE, iova: 0x4_0000_0000n });
    expect(out).toEqual({ size: 40, flags: RW | FIXED, ioas_id: ioas, __reserved: 0, user_va: BigInt(buf), length: 4096n, iova: 0x4_0000_0000n });
  });

  it('an automatic IOVA ignores the input iova, is never 0, and is aligned to the lowest set bit of the length', () => {
    // io_pagetable.c iopt_alloc_iova(): "Does not return a 0 IOVA even if it is valid"; the span starts at PAGE_SIZE.
    // selftest area_auto_iova: EXPECT_EQ(0, iovas[i] % (1UL << (ffs(length) - 1))) for length = PAGE_SIZE * (i + 1).
    const iovas: bigint[] = [];
    for (let i = 0; i < 10; i++) {
      const length = BigInt(PAGE * (i + 1));
      const out = mapCmd({ flags: RW, ioas_id: ioas, user_va: 1n << 31n, length, iova: 0x1234_5000 });
      expect(out.iova).not.toBe(0n);
      expect(out.iova % lowBit(length)).toBe(0n);
      iovas.push(out.iova);
    }
    // Every one of them unmaps with its own length: they do not overlap.
    for (let i = 0; i < 10; i++) expect(ictx.unmap(ioas, iovas[i], PAGE * (i + 1))).toBe(BigInt(PAGE * (i + 1)));
    // user_va 0 and length 1: alignment 1, still not IOVA 0.
    expect(ictx.map(ioas, 0, 1)).toBeGreaterThanOrEqual(4096n);
  });

  it('an automatic IOVA keeps the sub-page offset of the VA', () => {
    // io_pagetable.c __alloc_iova_check_range(): aligned_start |= page_offset (page_offset = addr % PAGE_SIZE).
    const iova = ictx.map(ioas, 0x8000_0123n, 0x100);
    expect(iova % 4096n).toBe(0x123n);
  });

  it('an automatic IOVA takes the VA alignment, capped at HPAGE_SIZE (2 MiB with THP)', () => {
    // io_pagetable.c iopt_alloc_iova(): min(roundup_pow_of_two(length), 1 << __ffs64(addr)), then
    // `if (iova_alignment >= max_alignment) iova_alignment = max_alignment;` (HPAGE_SIZE with CONFIG_TRANSPARENT_HUGEPAGE).
    // First fit from PAGE_SIZE: ALIGN(0x1000, 2M) = 0x200000.
    expect(ictx.map(ioas, 1n << 31n, 16 << 20)).toBe(0x200000n);
    // A VA aligned to only 64 KiB gives a 64 KiB alignment: the first fit is ALIGN(PAGE_SIZE, 64K) = 0x10000,
    // in the hole [PAGE_SIZE, 2M) left below the first mapping.
    const iova = ictx.map(ioas, 0x1_0001_0000n, 1 << 20);
    expect(iova % 0x10000n).toBe(0n);
    expect(iova).toBe(0x10000n);
  });

  it('automatic IOVAs avoid the MSI window and the space past the aperture of an attached VT-d device', () => {
    // io_pagetable.c iopt_alloc_iova(): holes of reserved_itree U area_itree only; ref §4 "Auto allocation";
    // selftest area_auto_iova "Avoids a reserved region". MSI window: intel_iommu_get_resv_regions().
    const { dev } = attachDevice(ioas);
    const len = 16 << 20;
    const buf = host.mmap(len);
    host.mem.write(buf, pattern(64, 3));
    const iovas: bigint[] = [];
    let iova = 0n;
    // Fill the IOVA space up to the window with 16 MiB mappings of the same buffer.
    while (iova < MSI_START) {
      iova = ictx.map(ioas, buf, len);
      iovas.push(iova);
    }
    for (const v of iovas) {
      const last = v + BigInt(len) - 1n;
      expect(last < MSI_START || v > MSI_LAST, `0x${v.toString(16)} overlaps the MSI window`).toBe(true);
      expect(last <= APERTURE_LAST).toBe(true);
      expect(v % (2n << 20n)).toBe(0n);
    }
    // The last one went past the window, and the device reads the buffer through it.
    expect(iova).toBeGreaterThan(MSI_LAST);
    expect(dev.dma.read(iova, 64)).toEqual(pattern(64, 3));
    // A mapping that would only fit across the window does not go there.
    expectErrno(() => ictx.map(ioas, buf, PAGE, MSI_START), 'EINVAL');
  });

  it('a failed automatic map leaves the iova field as the caller wrote it', () => {
    // ioas.c iommufd_ioas_map(): `if (rc) goto out_put;` -- no copy back.
    attachDevice(ioas);
    const b = uapi.iommu_ioas_map.encode({ size: 40, flags: RW, ioas_id: ioas, user_va: 0xdead_0000, length: PAGE, iova: 0x5555 });
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_MAP, b), 'EFAULT');
    expect(uapi.iommu_ioas_map.get(b, 'iova')).toBe(0x5555n);
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_UNMAP (ioas.c iommufd_ioas_unmap, io_pagetable.c iopt_unmap_iova)', () => {
  let ioas: number;
  let buf: number;
  const base = 0x100000n;
  const P = 4096n;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
    buf = host.mmap(16 * PAGE);
  });

  it('unmapping where nothing is mapped is ENOENT (selftest area "Unmap fails if nothing is mapped")', () => {
    for (let i = 0n; i < 10n; i++) expectErrno(() => ictx.unmap(ioas, i * P, P), 'ENOENT');
  });

  it('unmaps each area and writes back its length (selftest area "Unmap works")', () => {
    for (let i = 0n; i < 10n; i++) ictx.map(ioas, buf, PAGE, base + i * P);
    for (let i = 0n; i < 10n; i++) expect(ictx.unmap(ioas, base + i * P, P)).toBe(P);
  });

  it('splitting an area is ENOENT (selftest area "Split fails")', () => {
    // io_pagetable.c iopt_unmap_iova_range(): `if (area_first < start || area_last > last) rc = -ENOENT`.
    ictx.map(ioas, buf, 2 * PAGE, base + 16n * P);
    expectErrno(() => ictx.unmap(ioas, base + 16n * P, P), 'ENOENT');
    expectErrno(() => ictx.unmap(ioas, base + 17n * P, P), 'ENOENT');
    expect(ictx.unmap(ioas, base + 16n * P, 2n * P)).toBe(2n * P);
  });

  it('a range covering several areas and holes unmaps them all and writes the total (selftest unmap_fully_contained_areas)', () => {
    const b = base + 4n * P;
    for (let i = 0n; i < 4n; i++) ictx.map(ioas, buf, 8 * PAGE, b + i * 16n * P);
    // Not fully contained: ENOENT.
    expectErrno(() => ictx.unmap(ioas, b - 4n * P, 8n * P), 'ENOENT');
    expectErrno(() => ictx.unmap(ioas, b + 3n * 16n * P + 8n * P - 4n * P, 8n * P), 'ENOENT');
    // Fully contained: 32 pages.
    expect(ictx.unmap(ioas, b - 4n * P, 3n * 16n * P + 8n * P + 4n * P)).toBe(32n * P);
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(0n);
  });

  it('a range with a crossing area is ENOENT and unmaps nothing (project rule: no half-changed state)', () => {
    // Linux (io_pagetable.c iopt_unmap_iova_range(), ref §2.8) takes areas lowest first and unmaps the ones
    // fully inside before it meets the crossing one, then returns -ENOENT: a half-done unmap. DESIGN.md §4
    // ("a failed call leaves no trace") is stricter: the errno is Linux's, the state is untouched. The README
    // lists this difference.
    ictx.map(ioas, buf, PAGE, base);             // A: fully inside
    ictx.map(ioas, buf, 2 * PAGE, base + 4n * P); // B: crosses the end of the range
    const cmd = uapi.iommu_ioas_unmap.encode({ size: 24, ioas_id: ioas, iova: base, length: 5n * P });
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_UNMAP, cmd), 'ENOENT');
    expect(uapi.iommu_ioas_unmap.get(cmd, 'length')).toBe(5n * P); // not written back, as in Linux
    // A and B are both still mapped.
    expectErrno(() => ictx.map(ioas, buf, PAGE, base), 'EEXIST');
    expectErrno(() => ictx.map(ioas, buf, PAGE, base + 5n * P), 'EEXIST');
    expect(ictx.unmap(ioas, base, P)).toBe(P);
    expect(ictx.unmap(ioas, base + 4n * P, 2n * P)).toBe(2n * P);
  });

  it('a crossing area at the low end fails before anything is unmapped', () => {
    // io_pagetable.c iopt_unmap_iova_range(): the first area found crosses `start` -> -ENOENT at once.
    ictx.map(ioas, buf, 2 * PAGE, base);
    ictx.map(ioas, buf, PAGE, base + 4n * P);
    expectErrno(() => ictx.unmap(ioas, base + P, 8n * P), 'ENOENT');
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(3n * P);
  });

  it('unmap-all (iova 0, length U64_MAX) succeeds on an empty IOAS with length 0', () => {
    // io_pagetable.c iopt_unmap_all(): "If the IOVAs are empty then unmap all succeeds"; selftest area.
    const out = ictx.ioctl(T.IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 0, length: U64_MAX });
    expect(out.length).toBe(0n);
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(0n);
  });

  it('unmap-all removes every area and writes the total', () => {
    ictx.map(ioas, buf, PAGE, base);
    ictx.map(ioas, buf, 3 * PAGE);
    ictx.map(ioas, 1n << 31n, 5 * PAGE, 0xffff_0000_0000n);
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(9n * P);
    expect(ictx.unmap(ioas, 0, U64_MAX)).toBe(0n);
  });

  it('unmap-all of an unknown IOAS is ENOENT', () => {
    // ioas.c: iommufd_get_ioas() precedes the unmap-all test.
    expectErrno(() => ictx.unmap(99, 0, U64_MAX), 'ENOENT');
  });

  it('iova >= ULONG_MAX or length >= ULONG_MAX (other than unmap-all) is EOVERFLOW', () => {
    // ioas.c: `if (cmd->iova >= ULONG_MAX || cmd->length >= ULONG_MAX) rc = -EOVERFLOW;`
    expectErrno(() => ictx.unmap(ioas, ULONG_MAX, 1), 'EOVERFLOW');
    expectErrno(() => ictx.unmap(ioas, 1, U64_MAX), 'EOVERFLOW');
    expectErrno(() => ictx.unmap(ioas, P, U64_MAX), 'EOVERFLOW');
  });

  it('iova + length - 1 overflowing is EOVERFLOW', () => {
    // io_pagetable.c iopt_unmap_iova(): check_add_overflow(iova, length - 1, &iova_last) -> -EOVERFLOW.
    expectErrno(() => ictx.unmap(ioas, ULONG_MAX - 0xfffn, 0x2000), 'EOVERFLOW');
  });

  it('length 0 is EINVAL; the ioas lookup and the ULONG_MAX checks come first', () => {
    // io_pagetable.c iopt_unmap_iova(): `if (!length) return -EINVAL;` after ioas.c's lookup and EOVERFLOW checks.
    expectErrno(() => ictx.unmap(ioas, base, 0), 'EINVAL');
    expectErrno(() => ictx.unmap(99, base, 0), 'ENOENT');
    expectErrno(() => ictx.unmap(ioas, ULONG_MAX, 0), 'EOVERFLOW');
  });

  it('an id of another type is ENOENT', () => {
    // ioas.c iommufd_get_ioas(): wrong type -> ENOENT.
    const { devid, hwpt } = attachDevice(ictx.ioasAlloc());
    expectErrno(() => ictx.unmap(devid, 0, U64_MAX), 'ENOENT');
    expectErrno(() => ictx.unmap(hwpt, base, P), 'ENOENT');
  });
});

// ---------------------------------------------------------------------------
describe('IOMMU_IOAS_IOVA_RANGES (ioas.c iommufd_ioas_iova_ranges)', () => {
  let ioas: number;
  const R16 = uapi.iommu_iova_range.size;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
  });

  function rangesCmd(values: Record<string, unknown>) {
    return callStruct(host, ictx.fd, uapi.IOMMU_IOAS_IOVA_RANGES, uapi.iommu_ioas_iova_ranges, { size: 32, ioas_id: ioas, ...values });
  }

  it('no domain: one range [0, 2^64 - 1], alignment 1 (selftest iova_ranges, no_domain)', () => {
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: U64_MAX }] });
  });

  it('a VT-d device attached: [0, 0xfedfffff] and [0xfef00000, 2^48 - 1], alignment 4096', () => {
    // ref §4: holes of the reserved tree (aperture [2^48, ULONG_MAX] and the device's MSI region);
    // ref §2.3: alignment = the domain's smallest page size.
    const { dev } = attachDevice(ioas);
    expect(ictx.iovaRanges(ioas)).toEqual({
      num_iovas: 2,
      out_iova_alignment: 4096n,
      ranges: [{ start: 0n, last: MSI_START - 1n }, { start: MSI_LAST + 1n, last: APERTURE_LAST }],
    });
    // Detach: the domain's and the device's reserved ranges go with it.
    dev.detach();
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: U64_MAX }] });
  });

  it('num_iovas 0 is EMSGSIZE with the count and alignment copied out and the array untouched (selftest iova_ranges "Buffer too small")', () => {
    // ioas.c: iommufd_ucmd_respond() then `if (cmd->num_iovas > max_iovas) rc = -EMSGSIZE;`
    const va = host.mmap(PAGE);
    const bytes = uapi.iommu_ioas_iova_ranges.encode({ size: 32, ioas_id: ioas, num_iovas: 0, allowed_iovas: va });
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_IOVA_RANGES, bytes), 'EMSGSIZE');
    const out = uapi.iommu_ioas_iova_ranges.decode(bytes);
    expect(bytes.length).toBe(32);
    expect(out.num_iovas).toBe(1);
    expect(out.out_iova_alignment).toBe(1n);
    expect([...host.mem.read(va, 2 * R16)]).toEqual(new Array(2 * R16).fill(0));
  });

  it('too little room with a device: EMSGSIZE, num_iovas = 2, the first range written and no more', () => {
    // ioas.c: ranges past max_iovas are counted, not copied.
    attachDevice(ioas);
    const va = host.mmap(PAGE);
    host.mem.write(va, new Uint8Array(2 * R16).fill(0xee));
    const b = uapi.iommu_ioas_iova_ranges.encode({ size: 32, ioas_id: ioas, num_iovas: 1, allowed_iovas: va });
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_IOVA_RANGES, b), 'EMSGSIZE');
    const out = uapi.iommu_ioas_iova_ranges.decode(b);
    expect(out.num_iovas).toBe(2);
    expect(out.out_iova_alignment).toBe(4096n);
    const raw = host.mem.read(va, 2 * R16);
    expect(uapi.iommu_iova_range.decode(raw, 0)).toEqual({ start: 0n, last: MSI_START - 1n });
    expect([...raw.subarray(R16)]).toEqual(new Array(R16).fill(0xee));
  });

  it('enough room: 0, num_iovas set to the count', () => {
    attachDevice(ioas);
    const va = host.mmap(PAGE);
    const { ret, out } = rangesCmd({ num_iovas: 5, allowed_iovas: va });
    expect(ret).toBe(0);
    expect(out.num_iovas).toBe(2);
    expect(uapi.iommu_iova_range.decode(host.mem.read(va, R16), 0)).toEqual({ start: 0n, last: MSI_START - 1n });
    expect(uapi.iommu_iova_range.decode(host.mem.read(va + R16, R16), 0)).toEqual({ start: MSI_LAST + 1n, last: APERTURE_LAST });
  });

  it('__reserved != 0 is EOPNOTSUPP, before the ioas lookup', () => {
    // ioas.c: `if (cmd->__reserved) return -EOPNOTSUPP;` first.
    const va = host.mmap(PAGE);
    expectErrno(() => rangesCmd({ __reserved: 1, num_iovas: 1, allowed_iovas: va }), 'EOPNOTSUPP');
    expectErrno(() => rangesCmd({ ioas_id: 99, __reserved: 1, num_iovas: 1, allowed_iovas: va }), 'EOPNOTSUPP');
  });

  it('an unknown ioas or one of another type is ENOENT', () => {
    const va = host.mmap(PAGE);
    expectErrno(() => rangesCmd({ ioas_id: 99, num_iovas: 1, allowed_iovas: va }), 'ENOENT');
    const { devid } = attachDevice(ictx.ioasAlloc());
    expectErrno(() => rangesCmd({ ioas_id: devid, num_iovas: 1, allowed_iovas: va }), 'ENOENT');
  });

  it('a bad allowed_iovas pointer is EFAULT when a range is to be written, and nothing is copied back', () => {
    // ioas.c: copy_to_user(&ranges[i], ...) fails -> -EFAULT (goto out_put, no respond).
    const ro = host.mmap(PAGE, PROT_READ);
    const unmapped = host.mmap(PAGE);
    host.munmap(unmapped, PAGE);
    for (const ptr of [0, ro, unmapped, 1n << 62n]) {
      const b = uapi.iommu_ioas_iova_ranges.encode({ size: 32, ioas_id: ioas, num_iovas: 4, allowed_iovas: ptr });
      const before = b.slice();
      expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_IOVA_RANGES, b), 'EFAULT');
      expect(b).toEqual(before);
    }
  });

  it('ranges are copied out one by one: a fault on the second leaves the first written (EFAULT)', () => {
    // ioas.c iommufd_ioas_iova_ranges(): copy_to_user(&ranges[cmd->num_iovas], &elm, sizeof(elm)) per hole,
    // `rc = -EFAULT; goto out_put;` on the first failure -- the elements before it are already in user memory.
    attachDevice(ioas);
    const two = host.mmap(2 * PAGE);
    host.munmap(two + PAGE, PAGE);
    const ptr = two + PAGE - R16; // room for exactly one element
    host.mem.write(ptr, new Uint8Array(R16).fill(0xee));
    const b = uapi.iommu_ioas_iova_ranges.encode({ size: 32, ioas_id: ioas, num_iovas: 2, allowed_iovas: ptr });
    const before = b.slice();
    expectErrno(() => host.ioctl(ictx.fd, uapi.IOMMU_IOAS_IOVA_RANGES, b), 'EFAULT');
    expect(b).toEqual(before); // the struct itself is not copied back
    expect(uapi.iommu_iova_range.decode(host.mem.read(ptr, R16), 0)).toEqual({ start: 0n, last: MSI_START - 1n });
  });

  it('with num_iovas 0 the pointer is never touched: EMSGSIZE even if it is bad', () => {
    // ioas.c: copy_to_user() only for `cmd->num_iovas < max_iovas`.
    expectErrno(() => rangesCmd({ num_iovas: 0, allowed_iovas: 0 }), 'EMSGSIZE');
  });
});
