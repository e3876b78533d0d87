// The ARM SMMUv3 vIOMMU through the binary ioctl face: VIOMMU_ALLOC over a
// nest-parent stage-2 HWPT, VDEVICE_ALLOC (virtual StreamIDs, tombstones),
// nested HWPTs from a guest's vSTE, VEVENTQ (event records, overflow,
// read rules) and HWPT_INVALIDATE with guest commands.
// Sources: viommu.c (iommufd_viommu_alloc_ioctl, iommufd_vdevice_alloc_ioctl),
// hw_pagetable.c (iommufd_hwpt_alloc, iommufd_viommu_alloc_hwpt_nested,
// iommufd_hwpt_invalidate), eventq.c (iommufd_veventq_alloc, read,
// iommufd_viommu_report_event), arm-smmu-v3-iommufd.c (arm_vsmmu_init,
// arm_smmu_validate_vste, arm_vsmmu_alloc_domain_nested,
// arm_smmu_attach_prepare_vmaster, arm_vsmmu_convert_user_cmd,
// arm_vmaster_report_event), include/linux/iommu.h (the user-copy helpers),
// the SMMUv3 specification (IHI 0070: 5.2 STE, 5.4 CD, 4.4 commands, 7.3
// events) and reference iommufd-uapi.md §2.11, §2.15, §3, §6, §7.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, outcome, dmaFault, expectBytes, Iommufd, VfioDevice, uapi, PAGE, type Host } from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const GUEST = 4 << 20; // guest RAM at IPA 0

// STE word 0 (5.2): V [0], Config [3:1], S1ContextPtr [51:6]; word 1: EATS [29:28].
const V = 1n;
const cfg = (c: number) => BigInt(c) << 1n;
const ABORT = cfg(0), BYPASS = cfg(4), S1 = cfg(5);
// Event types (7.3).
const C_BAD_CD = 0x0a, F_TRANSLATION = 0x10;

let host: Host;
let ictx: Iommufd;
let ioas: number;
let dev: VfioDevice;
let devid: number;
let parent: number;
let viommu: number;
let ram: number;

function armDevice(): { dev: VfioDevice; devid: number } {
  const d = new VfioDevice(host, host.addDevice({ iommu: 'arm-smmuv3' }));
  return { dev: d, devid: d.bind(ictx.fd) };
}

const viommuAlloc = (v: Record<string, number> = {}) =>
  ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devid, hwpt_id: parent, ...v }).out_viommu_id;
const vdeviceAlloc = (v: Record<string, number | bigint> = {}) =>
  ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: viommu, dev_id: devid, virt_id: 0x42n, ...v }).out_vdevice_id;

/** A vSTE in user memory; HWPT_ALLOC on the vIOMMU. */
function nestedAlloc(ste0: bigint, ste1 = 0n, v: Record<string, number | bigint> = {}): number {
  const va = host.mmap(PAGE);
  host.mem.write(va, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [ste0, ste1] }));
  return ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: uapi.iommu_hwpt_arm_smmuv3.size, data_uptr: va, ...v,
  }).out_hwpt_id;
}

function put64(ipa: number, v: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  host.mem.write(ram + ipa, b);
}

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  ({ dev, devid } = armDevice());
  parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
  ram = host.mmap(GUEST);
  ictx.map(ioas, ram, GUEST, 0n);
  viommu = viommuAlloc();
});

describe('IOMMU_VIOMMU_ALLOC', () => {
  it('a HWPT that is not a nest parent is EINVAL; a nest parent of another unit is EINVAL (arm_vsmmu_init)', () => {
    const plain = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    expectErrno(() => viommuAlloc({ hwpt_id: plain }), 'EINVAL');
    expectErrno(() => viommuAlloc({ hwpt_id: ioas }), 'ENOENT'); // not a HWPT_PAGING
    const vtd = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
    const vtdParent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: vtd.bind(ictx.fd), pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
    expectErrno(() => viommuAlloc({ hwpt_id: vtdParent }), 'EINVAL');
  });

  it('holds its parent HWPT: DESTROY of the parent is EBUSY until the vIOMMU goes; a failed alloc leaves nothing', () => {
    expectErrno(() => ictx.destroy(parent), 'EBUSY');
    const next = ictx.nextId();
    expect(outcome(() => viommuAlloc({ hwpt_id: ioas }))).toBe('ENOENT');
    expect(ictx.nextId()).toBe(next);
    ictx.destroy(viommu);
    ictx.destroy(parent);
  });
});

describe('IOMMU_VDEVICE_ALLOC', () => {
  it('ENOENT for the vIOMMU then the device; a device behind another unit EINVAL', () => {
    expectErrno(() => vdeviceAlloc({ viommu_id: 99 }), 'ENOENT');
    expectErrno(() => vdeviceAlloc({ dev_id: 99 }), 'ENOENT');
    const vtd = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
    expectErrno(() => vdeviceAlloc({ dev_id: vtd.bind(ictx.fd) }), 'EINVAL');
  });

  it('one vDEVICE per device (EEXIST), virt_ids unique per vIOMMU (EEXIST); it holds the vIOMMU', () => {
    const vdev = vdeviceAlloc();
    expectErrno(() => vdeviceAlloc({ virt_id: 0x43n }), 'EEXIST');
    const other = armDevice();
    expectErrno(() => vdeviceAlloc({ dev_id: other.devid }), 'EEXIST'); // virt_id 0x42 taken
    expect(vdeviceAlloc({ dev_id: other.devid, virt_id: 0x43n })).toBeGreaterThan(vdev);
    expectErrno(() => ictx.destroy(viommu), 'EBUSY');
  });

  it('unbinding the device destroys its vDEVICE and leaves a tombstone: DESTROY ENOENT, the id never reused', () => {
    const vdev = vdeviceAlloc();
    dev.close(); // the VFIO cdev fd goes: the device is unbound
    expectErrno(() => ictx.destroy(vdev), 'ENOENT');
    expect(ictx.nextId()).not.toBe(vdev);
    ictx.destroy(viommu); // the vDEVICE no longer holds it
  });
});

describe('nested HWPTs from a vSTE (IOMMU_HWPT_DATA_ARM_SMMUV3)', () => {
  it('iommufd_viommu_alloc_hwpt_nested, then the driver: flags EOPNOTSUPP, PASID EOPNOTSUPP, no data EOPNOTSUPP', () => {
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }), 'EOPNOTSUPP');
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { flags: uapi.IOMMU_HWPT_ALLOC_PASID }), 'EOPNOTSUPP');
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { data_type: uapi.IOMMU_HWPT_DATA_NONE, data_len: 0 }), 'EOPNOTSUPP');
  });

  it('a device behind another unit is EINVAL, before the flags', () => {
    const vtd = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { dev_id: vtd.bind(ictx.fd), flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }), 'EINVAL');
  });

  it('iommu_copy_struct_from_user: another data type, a length other than 16, EINVAL; a bad pointer EFAULT', () => {
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { data_type: uapi.IOMMU_HWPT_DATA_VTD_S1 }), 'EINVAL');
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { data_len: 8 }), 'EINVAL');
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { data_len: 24 }), 'EINVAL');
    expectErrno(() => nestedAlloc(V | BYPASS, 0n, { data_uptr: 0x10 }), 'EFAULT');
  });

  it('arm_smmu_validate_vste: a field a guest may not set, a Config other than abort/bypass/S1, or EATS 2 is EIO; a non-valid STE is fine', () => {
    expectErrno(() => nestedAlloc(V | BYPASS | (1n << 52n)), 'EIO'); // STE word 0 bit 52: not S1ContextPtr
    expectErrno(() => nestedAlloc(V | BYPASS, 1n << 8n), 'EIO'); // word 1 bit 8 (DRE/CONT area)
    expectErrno(() => nestedAlloc(V | cfg(6)), 'EIO'); // stage-2 translate: the host's
    expectErrno(() => nestedAlloc(V | S1, 2n << 28n), 'EIO'); // EATS = S1CHK
    expect(nestedAlloc(0n, (1n << 63n))).toBeGreaterThan(0); // V = 0: everything else ignored
  });

  it('a nested HWPT holds the vIOMMU, not the parent', () => {
    const h = nestedAlloc(V | BYPASS);
    expectErrno(() => ictx.destroy(viommu), 'EBUSY');
    ictx.destroy(h);
    ictx.destroy(viommu);
  });

  it('abort and non-valid vSTEs terminate every transaction; bypass is stage 2 alone (IOVA = IPA)', () => {
    host.mem.write(ram + 0x3000, Uint8Array.of(7, 7));
    dev.attach(nestedAlloc(V | ABORT));
    expect(dmaFault(() => dev.dma.read(0x3000n, 2)).reason).toBe('blocked');
    dev.attach(nestedAlloc(0n));
    expect(dmaFault(() => dev.dma.read(0x3000n, 2)).reason).toBe('blocked');
    dev.attach(nestedAlloc(V | BYPASS));
    expectBytes(dev.dma.read(0x3000n, 2), Uint8Array.of(7, 7));
  });

  it('attaching a stage-1 vSTE needs the device\'s vDEVICE on that vIOMMU (ENOENT); abort and bypass do not', () => {
    const s1 = nestedAlloc(V | S1 | 0x10000n);
    expectErrno(() => dev.attach(s1), 'ENOENT');
    vdeviceAlloc();
    expect(dev.attach(s1)).toBe(s1);
  });
});

describe('IOMMU_VEVENTQ_ALLOC and event records', () => {
  let q: { id: number; fd: number };
  const qAlloc = (depth = 4, type = uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3) => {
    const out = ictx.ioctl(T.IOMMU_VEVENTQ_ALLOC, { viommu_id: viommu, type, veventq_depth: depth });
    return { id: out.out_veventq_id, fd: out.out_veventq_fd };
  };
  const H = uapi.iommufd_vevent_header.size;
  const R = uapi.iommu_vevent_arm_smmuv3.size;
  /** Records read from the queue: header, then the event words if any. */
  function drain(room = 16 * (H + R)): { flags: number; sequence: number; evt?: bigint[] }[] {
    const buf = new Uint8Array(room);
    const n = host.read(q.fd, buf);
    const out = [];
    for (let at = 0; at < n;) {
      const h = uapi.iommufd_vevent_header.decode(buf, at);
      at += H;
      if (h.flags & uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS) { out.push({ flags: h.flags, sequence: h.sequence }); continue; }
      out.push({ flags: h.flags, sequence: h.sequence, evt: uapi.iommu_vevent_arm_smmuv3.decode(buf, at).evt });
      at += R;
    }
    return out;
  }
  /** A stream whose vSTE points at a CD that is not valid: each DMA records C_BAD_CD. */
  function badCdStream(): void {
    vdeviceAlloc({ virt_id: 0x42n });
    put64(0x10000, 0n); // CD word 0: V = 0
    dev.attach(nestedAlloc(V | S1 | 0x10000n));
  }

  beforeEach(() => { q = qAlloc(); });

  it('one queue per type per vIOMMU (EEXIST); another type is fine; the queue holds the vIOMMU until its fd closes and it is destroyed', () => {
    expectErrno(() => qAlloc(), 'EEXIST');
    expect(qAlloc(4, uapi.IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV).id).toBeGreaterThan(q.id);
    expectErrno(() => ictx.destroy(q.id), 'EBUSY'); // its fd holds it
    host.close(q.fd);
    ictx.destroy(q.id);
  });

  it('a refused DMA of a stream with a vDEVICE is an event record with the virtual StreamID (C_BAD_CD for a non-valid CD)', () => {
    badCdStream();
    expect(dmaFault(() => dev.dma.write(0x1234n, Uint8Array.of(1))).reason).toBe('blocked');
    const [r] = drain();
    expect(r.flags).toBe(0);
    expect(r.sequence).toBe(0);
    const [w0, w1, w2] = r.evt!;
    expect(Number(w0 & 0xffn)).toBe(C_BAD_CD);
    expect(Number(w0 >> 32n)).toBe(0x42); // StreamID field: the vSID (arm_vmaster_report_event)
    expect((w1 >> 35n) & 1n).toBe(0n); // RnW = 0: a write
    expect(w2).toBe(0x1234n); // InputAddr
  });

  it('a CD pointer stage 2 does not map: F_TRANSLATION, S2 = 1, CLASS = CD, IPA of the fetch', () => {
    vdeviceAlloc();
    dev.attach(nestedAlloc(V | S1 | BigInt(GUEST + 0x1000))); // past guest RAM
    dmaFault(() => dev.dma.read(0x2000n, 4));
    const [{ evt }] = drain();
    expect(Number(evt![0] & 0xffn)).toBe(F_TRANSLATION);
    expect((evt![1] >> 39n) & 1n).toBe(1n); // S2
    expect((evt![1] >> 40n) & 3n).toBe(0n); // CLASS = CD
    expect((evt![1] >> 35n) & 1n).toBe(1n); // RnW = 1: a read
    expect(evt![3]).toBe(BigInt(GUEST + 0x1000)); // IPA [51:12]
  });

  it('overflow: past the depth events are dropped and one LOST_EVENTS header at the tail takes their sequence numbers', () => {
    badCdStream();
    for (let i = 0; i < 7; i++) dmaFault(() => dev.dma.read(BigInt(i * PAGE), 4));
    const recs = drain();
    expect(recs.map((r) => [r.flags, r.sequence])).toEqual([[0, 0], [0, 1], [0, 2], [0, 3], [uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 6]]);
    dmaFault(() => dev.dma.read(0n, 4));
    expect(drain().map((r) => r.sequence)).toEqual([7]); // the gap 4..6 shows three were lost
  });

  it('read: shorter than a header EINVAL; a record that does not fit stays queued (EINVAL if it is the first); an empty queue reads 0', () => {
    badCdStream();
    expect(host.read(q.fd, new Uint8Array(64))).toBe(0);
    expectErrno(() => host.read(q.fd, new Uint8Array(H - 1)), 'EINVAL');
    dmaFault(() => dev.dma.read(0n, 4));
    dmaFault(() => dev.dma.read(0n, 4));
    expectErrno(() => host.read(q.fd, new Uint8Array(H)), 'EINVAL');
    expect(host.read(q.fd, new Uint8Array(H + R + 5))).toBe(H + R);
    expect(drain().map((r) => r.sequence)).toEqual([1]);
  });

  it('no queue of the type: events are dropped; a device without a vDEVICE reports nothing', () => {
    host.close(q.fd);
    ictx.destroy(q.id);
    badCdStream();
    dmaFault(() => dev.dma.read(0n, 4)); // nothing to deliver to, and nothing breaks
    q = qAlloc();
    expect(drain()).toEqual([]);
  });
});

describe('IOMMU_HWPT_INVALIDATE on the vIOMMU (SMMUv3 commands)', () => {
  const S = uapi.iommu_viommu_arm_smmuv3_invalidate;
  /** Commands in user memory; the call's errno (or OK) and the entry_num written back. */
  function invalidate(cmds: bigint[][], v: Record<string, number | bigint> = {}, entryLen = S.size): { code: string; entryNum: number } {
    const va = host.mmap(PAGE);
    const b = new Uint8Array(Math.max(1, cmds.length) * entryLen);
    cmds.forEach((c, i) => {
      const e = new Uint8Array(Math.max(entryLen, S.size));
      S.encode({ cmd: [c[0], c[1]] }, e);
      if (c[2] !== undefined) e[entryLen - 1] = Number(c[2]); // a non-zero tail byte
      b.set(e.subarray(0, entryLen), i * entryLen);
    });
    host.mem.write(va, b);
    const s = uapi.iommu_hwpt_invalidate;
    const arg = s.encode({ size: s.size, hwpt_id: viommu, data_uptr: va, data_type: uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entry_len: entryLen, entry_num: cmds.length, ...v });
    const code = outcome(() => host.ioctl(ictx.fd, uapi.IOMMU_HWPT_INVALIDATE, arg));
    return { code, entryNum: s.get(arg, 'entry_num') };
  }
  const TLBI_NH_ALL = [0x10n, 0n], TLBI_NSNH_ALL = [0x30n, 0n], TLBI_NH_ASID = [0x11n | (5n << 48n), 0n];
  const TLBI_NH_VA = [0x12n | (5n << 48n), 0x1000n], CFGI_STE = [0x03n, 0n];
  const cfgiCd = (vsid: number) => [0x05n | (BigInt(vsid) << 32n), 0n];

  it('the TLBI commands a guest may issue are taken; entry_num says all were', () => {
    expect(invalidate([TLBI_NH_ALL, TLBI_NSNH_ALL, TLBI_NH_ASID, TLBI_NH_VA, [0x13n, 0x2000n]])).toEqual({ code: 'OK', entryNum: 5 });
  });

  it('a command a guest may not pass through (CFGI_STE, CMD_SYNC, TLBI_S2_IPA) is EIO; entry_num counts those before it', () => {
    expect(invalidate([TLBI_NH_ALL, TLBI_NH_ALL, CFGI_STE])).toEqual({ code: 'EIO', entryNum: 2 });
    expect(invalidate([[0x46n, 0n]])).toEqual({ code: 'EIO', entryNum: 0 });
    expect(invalidate([TLBI_NH_ALL, [0x2an, 0n]])).toEqual({ code: 'EIO', entryNum: 1 });
  });

  it('CFGI_CD and ATC_INV name a vSID: one no vDEVICE has is EIO (arm_vsmmu_vsid_to_sid)', () => {
    expect(invalidate([cfgiCd(0x42)])).toEqual({ code: 'EIO', entryNum: 0 });
    vdeviceAlloc({ virt_id: 0x42n });
    expect(invalidate([cfgiCd(0x42), [0x40n | (0x42n << 32n), 0n]])).toEqual({ code: 'OK', entryNum: 2 });
  });

  it('iommu_copy_struct_from_full_user_array: another type or no entry EINVAL; a longer entry needs a zero tail (E2BIG); copied before any runs', () => {
    expect(invalidate([TLBI_NH_ALL], { data_type: uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 })).toEqual({ code: 'EINVAL', entryNum: 0 });
    expect(invalidate([])).toEqual({ code: 'EINVAL', entryNum: 0 });
    expect(invalidate([TLBI_NH_ALL, [0x10n, 0n, 1n]], {}, 24)).toEqual({ code: 'E2BIG', entryNum: 0 });
    expect(invalidate([TLBI_NH_ALL, TLBI_NH_ALL], {}, 24)).toEqual({ code: 'OK', entryNum: 2 });
    expect(invalidate([TLBI_NH_ALL], { data_uptr: 0x10n })).toEqual({ code: 'EFAULT', entryNum: 0 });
  });

  it('a nested HWPT of the vIOMMU takes no invalidation itself (no cache_invalidate_user): EOPNOTSUPP', () => {
    const h = nestedAlloc(V | BYPASS);
    expect(invalidate([TLBI_NH_ALL], { hwpt_id: h })).toEqual({ code: 'EOPNOTSUPP', entryNum: 0 });
  });
});

describe('stage-1 translation through the guest CD (VMSAv8-64 stage 1 over stage 2)', () => {
  // Stage-1 descriptors (Arm ARM D8.3, 4 KiB granule): table / page = 0b11, block = 0b01 in bits [1:0];
  // AF bit 10; AP[2:1] bits [7:6] (AP[1] = EL0 access, needed by unprivileged transactions; AP[2] = read-only).
  const TABLE = 3n, PAGE_D = 3n, AF = 1n << 10n, AP_EL0 = 1n << 6n, AP_RO = 1n << 7n;
  // CD word 0 (5.4): T0SZ [5:0], TG0 [7:6] (0 = 4 KiB), V [31], IPS [34:32] (0b101 = 48 bits), AA64 [41], ASID [63:48].
  const cdWord0 = (asid: number) => 16n | (1n << 31n) | (0b101n << 32n) | (1n << 41n) | (BigInt(asid) << 48n);
  const CD = 0x10000, L0 = 0x20000, L1 = 0x21000, L2 = 0x22000, L3 = 0x23000;
  let q: number;

  /** IOVA 0x5000 -> IPA 0x30000; the CD at IPA 0x10000 with ASID 5, TTB0 = L0. */
  beforeEach(() => {
    put64(CD, cdWord0(5));
    put64(CD + 8, BigInt(L0));
    put64(L0, BigInt(L1) | TABLE);
    put64(L1, BigInt(L2) | TABLE);
    put64(L2, BigInt(L3) | TABLE);
    put64(L3 + 5 * 8, 0x30000n | PAGE_D | AF | AP_EL0);
    vdeviceAlloc({ virt_id: 0x42n });
    q = ictx.ioctl(T.IOMMU_VEVENTQ_ALLOC, { viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 1024 }).out_veventq_fd;
    dev.attach(nestedAlloc(V | S1 | BigInt(CD)));
  });

  /** Event types read from the queue. */
  function events(): bigint[][] {
    const H = uapi.iommufd_vevent_header.size, R = uapi.iommu_vevent_arm_smmuv3.size;
    const buf = new Uint8Array(16 * (H + R));
    const n = host.read(q, buf);
    const out = [];
    for (let at = 0; at < n; at += H + R) out.push(uapi.iommu_vevent_arm_smmuv3.decode(buf, at + H).evt);
    return out;
  }

  it('DMA goes IOVA -> IPA -> PA: the bytes land in guest RAM at the IPA', () => {
    dev.dma.write(0x5010n, Uint8Array.of(9, 8, 7));
    expectBytes(host.mem.read(ram + 0x30010, 3), Uint8Array.of(9, 8, 7));
  });

  it('a missing stage-1 entry is F_TRANSLATION (S2 = 0) with the input address; a read-only page refuses a write with F_PERMISSION', () => {
    dmaFault(() => dev.dma.read(0x6000n, 4));
    put64(L3 + 7 * 8, 0x31000n | PAGE_D | AF | AP_EL0 | AP_RO);
    expect(dev.dma.read(0x7000n, 1)).toHaveLength(1);
    dmaFault(() => dev.dma.write(0x7000n, Uint8Array.of(1)));
    const [a, b] = events();
    expect([Number(a[0] & 0xffn), (a[1] >> 39n) & 1n, a[2]]).toEqual([F_TRANSLATION, 0n, 0x6000n]);
    expect(Number(b[0] & 0xffn)).toBe(0x13); // F_PERMISSION
  });

  it('the engine records the stream\'s refused translations in the queue\'s ring: 500 faults read back in order, the JS-made event among them in its place', () => {
    for (let i = 0; i < 500; i++) dmaFault(() => dev.dma.read(BigInt(0x40_0000 + i * PAGE), 4));
    // A C_BAD_CD the host makes (the CD made invalid, re-read): same ring, next sequence.
    put64(CD, 0n);
    const va = host.mmap(PAGE);
    host.mem.write(va, uapi.iommu_viommu_arm_smmuv3_invalidate.encode({ cmd: [0x05n | (0x42n << 32n), 0n] }));
    ictx.ioctl(T.IOMMU_HWPT_INVALIDATE, { hwpt_id: viommu, data_uptr: va, data_type: uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entry_len: 16, entry_num: 1 });
    dmaFault(() => dev.dma.read(0x5000n, 4));
    const H = uapi.iommufd_vevent_header.size, R = uapi.iommu_vevent_arm_smmuv3.size;
    const buf = new Uint8Array(600 * (H + R));
    const n = host.read(q, buf);
    expect(n).toBe(501 * (H + R));
    const recs = Array.from({ length: 501 }, (_, i) => ({
      seq: uapi.iommufd_vevent_header.decode(buf, i * (H + R)).sequence,
      evt: uapi.iommu_vevent_arm_smmuv3.decode(buf, i * (H + R) + H).evt,
    }));
    expect(recs.every((r, i) => r.seq === i)).toBe(true);
    expect(recs.slice(0, 500).every((r, i) => Number(r.evt[0] & 0xffn) === F_TRANSLATION && r.evt[0] >> 32n === 0x42n && r.evt[2] === BigInt(0x40_0000 + i * PAGE))).toBe(true);
    expect(Number(recs[500]!.evt[0] & 0xffn)).toBe(C_BAD_CD);
  });

  it('a stage-1 table at an IPA stage 2 does not map: F_TRANSLATION with S2 = 1', () => {
    put64(L2 + 8, BigInt(GUEST + 0x5000) | TABLE); // L2[1] -> a table past guest RAM
    dmaFault(() => dev.dma.read(0x20_0000n, 4));
    const [e] = events();
    expect([Number(e[0] & 0xffn), (e[1] >> 39n) & 1n]).toEqual([F_TRANSLATION, 1n]);
  });

  it('cached translations stay until the guest invalidates: TLBI_NH_VA by the CD\'s ASID drops them, another ASID does not', () => {
    host.mem.write(ram + 0x30000, Uint8Array.of(1));
    host.mem.write(ram + 0x31000, Uint8Array.of(2));
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1);
    put64(L3 + 5 * 8, 0x31000n | PAGE_D | AF | AP_EL0);
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1);
    const inval = (c0: bigint, c1: bigint) => {
      const va = host.mmap(PAGE);
      host.mem.write(va, uapi.iommu_viommu_arm_smmuv3_invalidate.encode({ cmd: [c0, c1] }));
      ictx.ioctl(T.IOMMU_HWPT_INVALIDATE, { hwpt_id: viommu, data_uptr: va, data_type: uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entry_len: 16, entry_num: 1 });
    };
    inval(0x12n | (6n << 48n), 0x5000n); // NH_VA, ASID 6
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(1);
    inval(0x12n | (5n << 48n), 0x5000n); // NH_VA, ASID 5
    expect(dev.dma.read(0x5000n, 1)[0]).toBe(2);
  });

  it('CFGI_CD makes the SMMU fetch the CD again: a CD made invalid takes effect only then', () => {
    expect(dev.dma.read(0x5000n, 1)).toHaveLength(1);
    put64(CD, 0n);
    const va = host.mmap(PAGE);
    host.mem.write(va, uapi.iommu_viommu_arm_smmuv3_invalidate.encode({ cmd: [0x05n | (0x42n << 32n), 0n] }));
    ictx.ioctl(T.IOMMU_HWPT_INVALIDATE, { hwpt_id: viommu, data_uptr: va, data_type: uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entry_len: 16, entry_num: 1 });
    dmaFault(() => dev.dma.read(0x5000n, 1));
    expect(Number(events()[0][0] & 0xffn)).toBe(C_BAD_CD);
  });
});
