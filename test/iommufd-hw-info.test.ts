/**
 * IOMMU_GET_HW_INFO on the binary face: Linux's check order and errnos, the
 * user buffer rules (partial copy, zero tail, data_len written back), the
 * VT-d vendor data, and the capability bits and PASID width per device.
 *
 * Sources: drivers/iommu/iommufd/device.c iommufd_get_hw_info() (newest: with
 * IOMMU_HW_INFO_FLAG_INPUT_TYPE and IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED),
 * drivers/iommu/intel/iommu.c intel_iommu_hw_info() / intel_iommu_capable() /
 * intel_iommu_probe_device(), drivers/iommu/iommu.c dev_iommu_get_max_pasids(),
 * the reference /work/shared/reference/iommufd-uapi.md ("ref §2.12"), and the
 * Intel VT-d specification rev 4.x, 11.4.2 (CAP_REG) and 11.4.3 (ECAP_REG).
 *
 * The register checks decode cap_reg and ecap_reg with bit positions written
 * here from the specification, not from host/iommu/intel_vtd.ts's table.
 */
import { describe, it, expect, beforeEach } from 'vitest';
import { PROT_READ } from '../host/index.js';
import {
  newHost, expectErrno, Iommufd, VfioDevice, boundDevice, callStruct, PAGE, uapi, type Host,
} from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const S = uapi.iommu_hw_info;
const {
  IOMMU_HW_INFO_FLAG_INPUT_TYPE: INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT: DEFAULT,
  IOMMU_HW_INFO_TYPE_INTEL_VTD: INTEL_VTD,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3: ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: TEGRA241_CMDQV,
  IOMMU_HW_INFO_TYPE_AMD: AMD,
  IOMMU_HW_INFO_TYPE_RISCV_IOMMU: RISCV_IOMMU,
  IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: ERRATA_772415,
} = uapi;
const DIRTY = BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING);
const PASID_EXEC = BigInt(uapi.IOMMU_HW_CAP_PCI_PASID_EXEC);
const PASID_PRIV = BigInt(uapi.IOMMU_HW_CAP_PCI_PASID_PRIV);
const ATS_NOT_SUPPORTED = BigInt(uapi.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED);

/** sizeof(struct iommu_hw_info_vtd): u32 flags, u32 __reserved, u64 cap_reg, u64 ecap_reg. */
const VTD_LEN = 24;
/** offsetofend(struct iommu_hw_info, __reserved): the ioctl's min_size. */
const MIN_SIZE = 32;
/** A byte the kernel never writes, to see what it left alone. */
const SENTINEL = 0xa5;

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

/** IOMMU_GET_HW_INFO with these fields (size = sizeof unless given); the struct written back. */
function hwInfo(values: Record<string, unknown>) {
  return ictx.ioctl(T.IOMMU_GET_HW_INFO, values);
}

/** A device of the host with these PCI options, opened and bound to ictx. */
function deviceWith(options: { pasidBits?: number; ats?: boolean; pri?: boolean }): number {
  return new VfioDevice(host, host.addDevice(options)).bind(ictx.fd);
}

/** A user buffer of one page filled with SENTINEL. */
function userPage(): number {
  const va = host.mmap(PAGE);
  host.mem.write(va, new Uint8Array(PAGE).fill(SENTINEL));
  return va;
}

/** The VT-d data and written-back struct for a device, through a buffer of exactly VTD_LEN bytes. */
function vtdInfo(devId: number): { out: Record<string, any>; cap: bigint; ecap: bigint; flags: number; reserved: number } {
  const va = userPage();
  const out = hwInfo({ dev_id: devId, data_len: VTD_LEN, data_uptr: va });
  const dv = new DataView(host.mem.read(va, VTD_LEN).buffer);
  return { out, flags: dv.getUint32(0, true), reserved: dv.getUint32(4, true), cap: dv.getBigUint64(8, true), ecap: dv.getBigUint64(16, true) };
}

/** bits hi:lo of a register. */
function bits(reg: bigint, hi: number, lo: number): number {
  return Number((reg >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
}

describe('check order (device.c iommufd_get_hw_info)', () => {
  it('a flag other than INPUT_TYPE is EOPNOTSUPP, before __reserved and the device lookup', () => {
    // "if (cmd->flags & ~SUPPORTED_FLAGS) return -EOPNOTSUPP;" is the first check.
    const { devid } = boundDevice(host, ictx);
    for (let bit = 1; bit < 32; bit++) {
      expectErrno(() => hwInfo({ dev_id: devid, flags: (1 << bit) >>> 0 }), 'EOPNOTSUPP');
    }
    expectErrno(() => hwInfo({ dev_id: 999, flags: 2, __reserved: [1, 0, 0] }), 'EOPNOTSUPP');
  });

  it('any non-zero __reserved byte is EOPNOTSUPP, before the device lookup', () => {
    // "if (cmd->__reserved[0] || cmd->__reserved[1] || cmd->__reserved[2]) return -EOPNOTSUPP;"
    const { devid } = boundDevice(host, ictx);
    for (const reserved of [[1, 0, 0], [0, 1, 0], [0, 0, 0x80]]) {
      expectErrno(() => hwInfo({ dev_id: devid, __reserved: reserved }), 'EOPNOTSUPP');
      expectErrno(() => hwInfo({ dev_id: 999, flags: INPUT_TYPE, __reserved: reserved }), 'EOPNOTSUPP');
    }
  });

  it('dev_id must name a DEVICE of this iommufd (ENOENT), before the driver and the user buffer', () => {
    // iommufd_get_device(): a missing id or an object of another type is ENOENT.
    const { devid } = boundDevice(host, ictx);
    const ioas = ictx.ioasAlloc();
    for (const id of [0, ioas, devid + 100, 0xffff_ffff]) {
      expectErrno(() => hwInfo({ dev_id: id }), 'ENOENT');
      // The lookup precedes ops->hw_info (a type it refuses) and copy_to_user (a NULL buffer).
      expectErrno(() => hwInfo({ dev_id: id, flags: INPUT_TYPE, in_data_type: ARM_SMMUV3 }), 'ENOENT');
      expectErrno(() => hwInfo({ dev_id: id, data_len: VTD_LEN, data_uptr: 0 }), 'ENOENT');
    }
    // Ids are per iommufd: the device bound to another one is not in this one.
    const other = new Iommufd(host);
    other.ioasAlloc();
    other.ioasAlloc();
    other.ioasAlloc();
    const foreign = new VfioDevice(host, host.addDevice()).bind(other.fd);
    expect(foreign).toBe(4); // ids 1-3 are other's IOASes; ictx has no object 4
    expect(other.ioctl(T.IOMMU_GET_HW_INFO, { dev_id: foreign }).out_data_type).toBe(INTEL_VTD);
    expectErrno(() => hwInfo({ dev_id: foreign }), 'ENOENT');
    ictx.destroy(ioas);
    expectErrno(() => hwInfo({ dev_id: ioas }), 'ENOENT');
  });

  it('an unbound device is gone (ENOENT)', () => {
    const { dev, devid } = boundDevice(host, ictx);
    expect(hwInfo({ dev_id: devid }).out_data_type).toBe(INTEL_VTD);
    dev.close();
    expectErrno(() => hwInfo({ dev_id: devid }), 'ENOENT');
  });

  it('a type the driver does not have is EOPNOTSUPP, before the user buffer is touched', () => {
    // intel_iommu_hw_info: "if (*type != IOMMU_HW_INFO_TYPE_DEFAULT && *type != IOMMU_HW_INFO_TYPE_INTEL_VTD)
    // return ERR_PTR(-EOPNOTSUPP);" and it runs before copy_to_user.
    const { devid } = boundDevice(host, ictx);
    const va = userPage();
    for (const type of [ARM_SMMUV3, TEGRA241_CMDQV, AMD, RISCV_IOMMU, 0xfeedbeef, 0xffff_ffff]) {
      expectErrno(() => hwInfo({ dev_id: devid, flags: INPUT_TYPE, in_data_type: type, data_len: 64, data_uptr: va }), 'EOPNOTSUPP');
      expectErrno(() => hwInfo({ dev_id: devid, flags: INPUT_TYPE, in_data_type: type, data_len: 64, data_uptr: 0 }), 'EOPNOTSUPP');
    }
    expect(host.mem.read(va, PAGE).every((b) => b === SENTINEL)).toBe(true);
  });

  it('a data buffer the process cannot write is EFAULT (copy_to_user)', () => {
    const { devid } = boundDevice(host, ictx);
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: 0 }), 'EFAULT');
    expectErrno(() => hwInfo({ dev_id: devid, data_len: 1, data_uptr: 0 }), 'EFAULT');
    const gone = host.mmap(PAGE);
    host.munmap(gone, PAGE);
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: gone }), 'EFAULT');
    const ro = host.mmap(PAGE, PROT_READ);
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: ro }), 'EFAULT');
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: 1n << 63n }), 'EFAULT');
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: (1n << 64n) - 8n }), 'EFAULT');
  });

  it('the zero tail is written after the data: a fault in it is EFAULT with the data already copied', () => {
    // copy_to_user(user_ptr, data, copy_len), then clear_user(user_ptr + copy_len, ...): each fails with EFAULT.
    const { devid } = boundDevice(host, ictx);
    const va = host.mmap(2 * PAGE);
    host.munmap(va + PAGE, PAGE);
    host.mem.write(va, new Uint8Array(PAGE).fill(SENTINEL));
    const at = va + PAGE - VTD_LEN; // the 24 data bytes fit; the tail crosses into the hole
    expectErrno(() => hwInfo({ dev_id: devid, data_len: VTD_LEN + 8, data_uptr: at }), 'EFAULT');
    const dv = new DataView(host.mem.read(at, VTD_LEN).buffer);
    expect(dv.getUint32(0, true)).toBe(ERRATA_772415);
    expect(dv.getBigUint64(8, true)).not.toBe(0n);
    // Exactly the data length there is fine.
    expect(hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: at }).data_len).toBe(VTD_LEN);
  });

  it('a failed call writes nothing back into the struct', () => {
    // iommufd_ucmd_respond() runs only on success: data_len, out_data_type and the outputs stay as given.
    const { devid } = boundDevice(host, ictx);
    const cases: Record<string, unknown>[] = [
      { flags: INPUT_TYPE, dev_id: devid, data_len: 7, data_uptr: 0, in_data_type: ARM_SMMUV3, out_max_pasid_log2: 3, out_capabilities: 0xdeadn },
      { flags: 0, dev_id: devid, data_len: 7, data_uptr: 0, in_data_type: 0x1234, out_max_pasid_log2: 3, out_capabilities: 0xdeadn },
      { flags: 0, dev_id: 777, data_len: 7, data_uptr: 0, in_data_type: 0x1234, out_max_pasid_log2: 3, out_capabilities: 0xdeadn },
    ];
    for (const values of cases) {
      const bytes = S.encode({ size: S.size, ...values });
      const before = bytes.slice();
      expect(() => host.ioctl(ictx.fd, T.IOMMU_GET_HW_INFO.request, bytes)).toThrow();
      expect(bytes).toEqual(before);
    }
  });

  it('the extensible-struct rules of the dispatch hold (min_size = offsetofend(__reserved) = 32)', () => {
    // main.c iommufd_ioctl_ops[]: IOCTL_OP(IOMMU_GET_HW_INFO, iommufd_get_hw_info, struct iommu_hw_info, __reserved).
    const { devid } = boundDevice(host, ictx);
    expect(S.size).toBe(40);
    expect(S.offsetofend('__reserved')).toBe(MIN_SIZE);
    expectErrno(() => hwInfo({ size: MIN_SIZE - 1, dev_id: devid }), 'EINVAL');
    expectErrno(() => hwInfo({ size: 0, dev_id: devid }), 'EINVAL');
    // A 32-byte caller (before out_capabilities) is served; the kernel copies back 32 bytes only.
    const small = new Uint8Array(S.size).fill(SENTINEL, MIN_SIZE);
    S.encode({ size: MIN_SIZE, dev_id: devid }, small);
    small.fill(SENTINEL, MIN_SIZE);
    host.ioctl(ictx.fd, T.IOMMU_GET_HW_INFO.request, small);
    expect(S.decode(small).out_data_type).toBe(INTEL_VTD);
    expect([...small.subarray(MIN_SIZE)]).toEqual(new Array(S.size - MIN_SIZE).fill(SENTINEL));
    // A longer struct: zero tail accepted, a non-zero tail is E2BIG.
    const longer = callStruct(host, ictx.fd, T.IOMMU_GET_HW_INFO.request, S, { size: S.size + 8, dev_id: devid }, new Uint8Array(8));
    expect(longer.out.out_data_type).toBe(INTEL_VTD);
    expectErrno(() => callStruct(host, ictx.fd, T.IOMMU_GET_HW_INFO.request, S, { size: S.size + 8, dev_id: devid }, new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1])), 'E2BIG');
  });
});

describe('the user buffer (copy min(data_len, kernel length), zero the rest, data_len = kernel length)', () => {
  it('a buffer of exactly the VT-d struct gets the struct; data_len stays 24', () => {
    const { devid } = boundDevice(host, ictx);
    const va = userPage();
    const out = hwInfo({ dev_id: devid, data_len: VTD_LEN, data_uptr: va });
    expect(out.data_len).toBe(VTD_LEN);
    expect(out.out_data_type).toBe(INTEL_VTD);
    const data = host.mem.read(va, VTD_LEN);
    expect(uapi.iommu_hw_info_vtd.decode(data).flags).toBe(ERRATA_772415);
    // Nothing past data_len is written.
    expect(host.mem.read(va + VTD_LEN, PAGE - VTD_LEN).every((b) => b === SENTINEL)).toBe(true);
  });

  it('a shorter buffer gets the first data_len bytes, and data_len comes back as the full 24', () => {
    // "We return the length the kernel supports so userspace may know what the kernel capability is.
    // It could be larger than the input buffer."
    const { devid } = boundDevice(host, ictx);
    const full = host.mem.read(vtdInfoVa(devid), VTD_LEN);
    for (const len of [1, 4, 8, 12, 23]) {
      const va = userPage();
      const out = hwInfo({ dev_id: devid, data_len: len, data_uptr: va });
      expect(out.data_len).toBe(VTD_LEN);
      expect(out.out_data_type).toBe(INTEL_VTD);
      expect(host.mem.read(va, len)).toEqual(full.subarray(0, len));
      expect(host.mem.read(va + len, PAGE - len).every((b) => b === SENTINEL)).toBe(true);
    }
  });

  it('a longer buffer gets the struct then zeros up to data_len, nothing past it', () => {
    // "Zero the trailing bytes if the user buffer is bigger than the data size kernel actually has."
    const { devid } = boundDevice(host, ictx);
    const full = host.mem.read(vtdInfoVa(devid), VTD_LEN);
    for (const len of [VTD_LEN + 1, 40, 64, PAGE]) {
      const va = userPage();
      const out = hwInfo({ dev_id: devid, data_len: len, data_uptr: va });
      expect(out.data_len).toBe(VTD_LEN);
      expect(host.mem.read(va, VTD_LEN)).toEqual(full);
      expect(host.mem.read(va + VTD_LEN, len - VTD_LEN).every((b) => b === 0)).toBe(true);
      if (len < PAGE) expect(host.mem.read(va + len, PAGE - len).every((b) => b === SENTINEL)).toBe(true);
    }
  });

  it('a buffer across two pages is written whole', () => {
    const { devid } = boundDevice(host, ictx);
    const va = host.mmap(2 * PAGE);
    host.mem.write(va, new Uint8Array(2 * PAGE).fill(SENTINEL));
    const at = va + PAGE - 10;
    hwInfo({ dev_id: devid, data_len: 48, data_uptr: at });
    const got = host.mem.read(at, 48);
    expect(got.subarray(0, VTD_LEN)).toEqual(host.mem.read(vtdInfoVa(devid), VTD_LEN));
    expect(got.subarray(VTD_LEN).every((b) => b === 0)).toBe(true);
    expect(host.mem.read(at + 48, 4).every((b) => b === SENTINEL)).toBe(true);
  });

  it('data_len 0 with a NULL pointer only asks for the length and the type', () => {
    // selftest: test_cmd_get_hw_info(self->device_id, IOMMU_HW_INFO_TYPE_DEFAULT, NULL, 0).
    const { devid } = boundDevice(host, ictx);
    const out = hwInfo({ dev_id: devid, data_len: 0, data_uptr: 0 });
    expect(out.data_len).toBe(VTD_LEN);
    expect(out.out_data_type).toBe(INTEL_VTD);
    // With data_len 0 nothing is copied, so any pointer will do.
    expect(hwInfo({ dev_id: devid, data_len: 0, data_uptr: 0xdead_0000 }).data_len).toBe(VTD_LEN);
    expect(hwInfo({ dev_id: devid, data_len: 0, data_uptr: (1n << 64n) - 1n }).data_len).toBe(VTD_LEN);
  });

  it('the written-back struct keeps the inputs and sets the outputs', () => {
    const { devid } = boundDevice(host, ictx);
    const va = userPage();
    const out = hwInfo({ flags: INPUT_TYPE, dev_id: devid, data_len: 64, data_uptr: va, in_data_type: INTEL_VTD,
      out_max_pasid_log2: 0x55, out_capabilities: 0xffff_ffff_ffffn });
    expect(out).toMatchObject({ size: S.size, flags: INPUT_TYPE, dev_id: devid, data_len: VTD_LEN, data_uptr: BigInt(va), out_data_type: INTEL_VTD });
    expect(out.__reserved).toEqual([0, 0, 0]);
    expect(out.out_max_pasid_log2).toBe(0); // output fields are computed, not kept
    expect(out.out_capabilities).toBe(DIRTY | ATS_NOT_SUPPORTED);
  });
});

describe('the requested type (IOMMU_HW_INFO_FLAG_INPUT_TYPE)', () => {
  it('without INPUT_TYPE, in_data_type is ignored and the unit reports INTEL_VTD', () => {
    // "if (!(cmd->flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE)) cmd->in_data_type = IOMMU_HW_INFO_TYPE_DEFAULT;"
    const { devid } = boundDevice(host, ictx);
    for (const type of [DEFAULT, INTEL_VTD, ARM_SMMUV3, AMD, 0xfeedbeef]) {
      expect(hwInfo({ dev_id: devid, in_data_type: type }).out_data_type).toBe(INTEL_VTD);
    }
  });

  it('INPUT_TYPE with DEFAULT or INTEL_VTD gives the VT-d data', () => {
    const { devid } = boundDevice(host, ictx);
    const ref = host.mem.read(vtdInfoVa(devid), VTD_LEN);
    for (const type of [DEFAULT, INTEL_VTD]) {
      const va = userPage();
      const out = hwInfo({ flags: INPUT_TYPE, dev_id: devid, in_data_type: type, data_len: VTD_LEN, data_uptr: va });
      expect(out.out_data_type).toBe(INTEL_VTD);
      expect(out.data_len).toBe(VTD_LEN);
      expect(host.mem.read(va, VTD_LEN)).toEqual(ref);
    }
  });

  it('INPUT_TYPE with ARM_SMMUV3 is EOPNOTSUPP', () => {
    const { devid } = boundDevice(host, ictx);
    expectErrno(() => hwInfo({ flags: INPUT_TYPE, dev_id: devid, in_data_type: ARM_SMMUV3 }), 'EOPNOTSUPP');
    expectErrno(() => hwInfo({ flags: INPUT_TYPE, dev_id: devid, in_data_type: ARM_SMMUV3, data_len: 0, data_uptr: 0 }), 'EOPNOTSUPP');
  });
});

/** A page holding this device's VT-d data (a buffer of exactly 24 bytes). */
function vtdInfoVa(devId: number): number {
  const va = userPage();
  hwInfo({ dev_id: devId, data_len: VTD_LEN, data_uptr: va });
  return va;
}

describe('struct iommu_hw_info_vtd (intel_iommu_hw_info)', () => {
  it('is 24 bytes: flags @0 = ERRATA_772415_SPR17, __reserved @4 = 0, cap_reg @8, ecap_reg @16', () => {
    // include/uapi/linux/iommufd.h struct iommu_hw_info_vtd; intel_iommu_hw_info sets
    // vtd->flags = IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 on every unit, then cap_reg and ecap_reg.
    expect(uapi.iommu_hw_info_vtd.size).toBe(VTD_LEN);
    expect(ERRATA_772415).toBe(1);
    const { devid } = boundDevice(host, ictx);
    const v = vtdInfo(devid);
    expect(v.flags).toBe(ERRATA_772415);
    expect(v.reserved).toBe(0);
    expect(v.cap).not.toBe(0n);
    expect(v.ecap).not.toBe(0n);
    // The struct codec reads the same bytes.
    const raw = host.mem.read(vtdInfoVa(devid), VTD_LEN);
    expect(uapi.iommu_hw_info_vtd.decode(raw)).toMatchObject({ flags: v.flags, cap_reg: v.cap, ecap_reg: v.ecap });
  });

  it('every device behind the unit reports the same registers, whatever its PCI options', () => {
    const ids = [deviceWith({}), deviceWith({ pasidBits: 20, ats: true, pri: true }), deviceWith({ pasidBits: 5 })];
    const regs = ids.map((id) => vtdInfo(id)).map(({ cap, ecap }) => [cap, ecap]);
    expect(regs[1]).toEqual(regs[0]);
    expect(regs[2]).toEqual(regs[0]);
  });

  it('CAP_REG (spec 11.4.2) describes a 4-level, 48-bit second stage with 2M and 1G leaves', () => {
    const { devid } = boundDevice(host, ictx);
    const { cap } = vtdInfo(devid);
    // ND 2:0 -- number of domain ids 2^(4 + 2 * ND); the engine's table holds 4096 (EngineOptions.domains).
    expect(bits(cap, 2, 0)).toBe(4);
    expect(2 ** (4 + 2 * bits(cap, 2, 0))).toBe(4096);
    expect(bits(cap, 3, 3)).toBe(0); // AFL: no advanced fault logging
    expect(bits(cap, 4, 4)).toBe(0); // RWBF: no write-buffer flushing needed
    expect(bits(cap, 5, 5)).toBe(0); // PLMR
    expect(bits(cap, 6, 6)).toBe(0); // PHMR
    expect(bits(cap, 7, 7)).toBe(0); // CM: invalid entries are not cached
    // SAGAW 12:8 -- bit 1 = 39-bit (3-level), bit 2 = 48-bit (4-level), bit 3 = 57-bit (5-level).
    expect(bits(cap, 12, 8)).toBe(0b00100);
    // MGAW 21:16 -- maximum guest address width N + 1.
    expect(bits(cap, 21, 16) + 1).toBe(48);
    expect(bits(cap, 22, 22)).toBe(1); // ZLR
    // SSLPS 37:34 -- bit 0: 2 MiB (21-bit offset), bit 1: 1 GiB (30-bit), bit 2: 512 GiB, bit 3: 1 TiB.
    expect(bits(cap, 37, 34)).toBe(0b0011);
    expect(bits(cap, 39, 39)).toBe(1); // PSI: page-selective invalidation
    // MAMV 53:48 -- valid with PSI; the specification recommends at least 9 (2 MiB).
    expect(bits(cap, 53, 48)).toBeGreaterThanOrEqual(9);
    expect(bits(cap, 53, 48)).toBe(36);
    expect(bits(cap, 54, 54)).toBe(1); // DWD
    expect(bits(cap, 55, 55)).toBe(1); // DRD
    expect(bits(cap, 56, 56)).toBe(1); // FS1GP: 1 GiB first-stage pages (with ECAP.FSTS)
    expect(bits(cap, 59, 59)).toBe(0); // PI: needs IR
    expect(bits(cap, 60, 60)).toBe(0); // FS5LP
    expect(bits(cap, 61, 61)).toBe(0); // ECMDS
    expect(bits(cap, 62, 62)).toBe(0); // ESIRTPS
    expect(bits(cap, 63, 63)).toBe(0); // ESRTPS
    // Reserved: 15:13, 23 (was ISOCH), 38, 58:57.
    expect(bits(cap, 15, 13)).toBe(0);
    expect(bits(cap, 23, 23)).toBe(0);
    expect(bits(cap, 38, 38)).toBe(0);
    expect(bits(cap, 58, 57)).toBe(0);
  });

  it('CAP_REG.FRO/NFR and ECAP_REG.IRO place one fault-recording register and the IOTLB registers apart in the 4 KiB register page', () => {
    const { devid } = boundDevice(host, ictx);
    const { cap, ecap } = vtdInfo(devid);
    const fro = bits(cap, 33, 24) * 16; // FRO 33:24, in 16-byte units
    const nfr = bits(cap, 47, 40) + 1; // NFR 47:40, N + 1 registers of 16 bytes
    const iro = bits(ecap, 17, 8) * 16; // IRO 17:8: IVA_REG at +0, IOTLB_REG at +8
    expect({ fro, nfr, iro }).toEqual({ fro: 0x600, nfr: 1, iro: 0x500 });
    expect(fro + 16 * nfr <= iro || iro + 16 <= fro).toBe(true);
    expect(Math.max(fro + 16 * nfr, iro + 16)).toBeLessThanOrEqual(PAGE);
    // Clear of the architectural registers (up to 0xec), MTRRs (0x100-0x21f), perfmon (0x300-) and ECMD (0x400-0x437).
    for (const off of [fro, iro]) expect(off).toBeGreaterThanOrEqual(0x440);
  });

  it('ECAP_REG (spec 11.4.3) describes a scalable-mode unit with 20-bit PASIDs, second-stage A/D and nesting', () => {
    const { devid } = boundDevice(host, ictx);
    const { ecap } = vtdInfo(devid);
    expect(bits(ecap, 0, 0)).toBe(1); // C: coherent table walks
    expect(bits(ecap, 1, 1)).toBe(1); // QI
    expect(bits(ecap, 2, 2)).toBe(1); // DT: device-TLB (ATS)
    expect(bits(ecap, 3, 3)).toBe(0); // IR
    expect(bits(ecap, 4, 4)).toBe(0); // EIM
    expect(bits(ecap, 6, 6)).toBe(0); // PT
    expect(bits(ecap, 7, 7)).toBe(1); // SC: snoop control
    expect(bits(ecap, 23, 20)).toBe(0); // MHMV
    expect(bits(ecap, 25, 25)).toBe(0); // MTS
    expect(bits(ecap, 26, 26)).toBe(1); // NEST
    expect(bits(ecap, 29, 29)).toBe(1); // PRS
    expect(bits(ecap, 30, 30)).toBe(0); // ERS
    expect(bits(ecap, 31, 31)).toBe(0); // SRS
    expect(bits(ecap, 33, 33)).toBe(0); // NWFS
    expect(bits(ecap, 34, 34)).toBe(0); // EAFS
    expect(bits(ecap, 39, 35) + 1).toBe(20); // PSS: N + 1 PASID bits
    expect(bits(ecap, 40, 40)).toBe(1); // PASID
    expect(bits(ecap, 41, 41)).toBe(0); // DIT
    expect(bits(ecap, 42, 42)).toBe(0); // PDS
    expect(bits(ecap, 43, 43)).toBe(1); // SMTS
    expect(bits(ecap, 44, 44)).toBe(0); // VCS
    expect(bits(ecap, 45, 45)).toBe(1); // SSADS (was SLADS)
    expect(bits(ecap, 46, 46)).toBe(1); // SSTS (was SLTS)
    expect(bits(ecap, 47, 47)).toBe(1); // FSTS (was FLTS)
    expect(bits(ecap, 48, 48)).toBe(1); // SMPWC
    expect(bits(ecap, 49, 49)).toBe(0); // RPS
    expect(bits(ecap, 51, 51)).toBe(0); // PMS
    expect(bits(ecap, 52, 52)).toBe(0); // ADMS
    expect(bits(ecap, 53, 53)).toBe(0); // RPRIVS
    // Reserved (or deprecated and reported 0): 5, 19:18, 24, 28:27, 32, 50, 63:54.
    for (const [hi, lo] of [[5, 5], [19, 18], [24, 24], [28, 27], [32, 32], [50, 50], [63, 54]]) expect(bits(ecap, hi, lo)).toBe(0);
  });

  it('the registers agree with the unit the uapi shows: MGAW is the IOAS aperture, the MSI window is reserved', () => {
    const { dev, devid } = boundDevice(host, ictx);
    const { cap } = vtdInfo(devid);
    const ioas = ictx.ioasAlloc();
    dev.attach(ioas);
    const { ranges } = ictx.iovaRanges(ioas);
    const last = (1n << BigInt(bits(cap, 21, 16) + 1)) - 1n;
    expect(ranges).toEqual([
      { start: 0n, last: 0xfedf_ffffn },
      { start: 0xfef0_0000n, last },
    ]);
  });
});

describe('out_capabilities and out_max_pasid_log2 per device', () => {
  // out_capabilities: DIRTY_TRACKING = device_iommu_capable(IOMMU_CAP_DIRTY_TRACKING) = ssads_supported
  // (SMTS && SSADS); PCI_ATS_NOT_SUPPORTED = !device_iommu_capable(IOMMU_CAP_PCI_ATS_SUPPORTED), i.e. not
  // (ECAP.DT && the function's ATS capability); PCI_PASID_EXEC/PRIV from the function's PASID Control
  // register, which an emulated function never sets. out_max_pasid_log2 = ilog2(dev->iommu->max_pasids),
  // max_pasids = min(pci_max_pasids() = 1 << Max PASID Width, the unit's 2 << ECAP.PSS).
  const cases: { opts: { pasidBits?: number; ats?: boolean; pri?: boolean }; caps: bigint; pasid: number }[] = [
    { opts: {}, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 0 },
    { opts: { ats: false, pasidBits: 0 }, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 0 },
    { opts: { ats: true }, caps: DIRTY, pasid: 0 },
    { opts: { pasidBits: 20 }, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 20 },
    { opts: { pasidBits: 8 }, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 8 },
    { opts: { pasidBits: 1 }, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 1 },
    { opts: { pasidBits: 20, ats: true }, caps: DIRTY, pasid: 20 },
    { opts: { pasidBits: 16, ats: true, pri: true }, caps: DIRTY, pasid: 16 },
    { opts: { pri: true }, caps: DIRTY | ATS_NOT_SUPPORTED, pasid: 0 },
  ];
  for (const { opts, caps, pasid } of cases) {
    it(`a function with ${JSON.stringify(opts)}: capabilities 0x${caps.toString(16)}, max PASID width ${pasid}`, () => {
      const id = deviceWith(opts);
      const out = hwInfo({ dev_id: id });
      expect(out.out_capabilities).toBe(caps);
      expect(out.out_max_pasid_log2).toBe(pasid);
      expect(out.out_capabilities & (PASID_EXEC | PASID_PRIV)).toBe(0n);
      expect(out.out_data_type).toBe(INTEL_VTD);
    });
  }

  it('the bits follow the registers as Linux reads them', () => {
    // Decoded from the spec positions: the report is what intel_iommu_capable and max_pasids say.
    const plain = deviceWith({});
    const full = deviceWith({ pasidBits: 20, ats: true });
    const { ecap } = vtdInfo(plain);
    const smts = bits(ecap, 43, 43) === 1;
    const unitPasidBits = smts && bits(ecap, 40, 40) === 1 ? bits(ecap, 39, 35) + 1 : 0;
    const dirty = smts && bits(ecap, 45, 45) === 1;
    const dt = bits(ecap, 2, 2) === 1;
    const a = hwInfo({ dev_id: plain });
    const b = hwInfo({ dev_id: full });
    expect((a.out_capabilities & DIRTY) !== 0n).toBe(dirty);
    expect((b.out_capabilities & DIRTY) !== 0n).toBe(dirty);
    expect((a.out_capabilities & ATS_NOT_SUPPORTED) !== 0n).toBe(true);
    expect((b.out_capabilities & ATS_NOT_SUPPORTED) !== 0n).toBe(!dt);
    expect(b.out_max_pasid_log2).toBe(Math.min(20, unitPasidBits));
    expect(a.out_max_pasid_log2).toBe(0);
  });

  it('is the same through any requested type the driver accepts and any buffer size', () => {
    const id = deviceWith({ pasidBits: 12 });
    const va = userPage();
    for (const values of [{}, { flags: INPUT_TYPE, in_data_type: INTEL_VTD }, { data_len: 3, data_uptr: va }, { data_len: 100, data_uptr: va }]) {
      const out = hwInfo({ dev_id: id, ...values });
      expect(out.out_capabilities).toBe(DIRTY | ATS_NOT_SUPPORTED);
      expect(out.out_max_pasid_log2).toBe(12);
    }
  });
});
