/**
 * The emulated ARM SMMUv3 and AMD-Vi units (host/iommu/arm_smmuv3.ts,
 * host/iommu/amd_vi.ts) through the binary face, next to the VT-d unit:
 * bind, attach, DMA through 4 KiB, 2 MiB and 1 GiB leaves, reserved regions
 * and apertures in IOMMU_IOAS_IOVA_RANGES, the vendor data of
 * IOMMU_GET_HW_INFO, dirty tracking, automatic HWPTs per unit, and the raw
 * page-table entries the engine writes for each unit's domain.
 *
 * Expectations, and every bit position below, are written here from the
 * sources, not from the drivers' field tables:
 *   - Arm IHI 0070 (SMMUv3): 6.3.1 SMMU_IDR0, 6.3.2 SMMU_IDR1, 6.3.4
 *     SMMU_IDR3, 6.3.6 SMMU_IDR5, SMMU_IIDR, SMMU_AIDR;
 *   - Arm ARM D8.3: VMSAv8-64 stage-2 descriptors, 4 KiB granule with
 *     FEAT_LPA2 (bits 1:0 = 0b11 table / page, 0b01 block; MemAttr 5:2;
 *     S2AP 7:6; OA[51:50] in 9:8; AF bit 10; OA[49:12] in 49:12);
 *   - AMD IOMMU spec 48882: 3.4.12 Extended Feature Register (MMIO 0030h),
 *     Extended Feature 2 Register (MMIO 01A0h), 2.2.3 I/O page tables (PR
 *     bit 0, HA bit 5, HD bit 6, Next Level 11:9, address 51:12, FC bit 60,
 *     IR bit 61, IW bit 62);
 *   - Linux: arm_smmu_hw_info (arm-smmu-v3-iommufd.c), arm_smmu_get_resv_regions,
 *     arm_smmu_domain_alloc_paging_flags / arm_smmu_domain_finalise and
 *     arm_smmu_device_hw_probe (arm-smmu-v3.c); amd_iommufd_hw_info
 *     (amd/iommufd.c), amd_iommu_get_resv_regions, amd_iommu_capable and
 *     amd_iommu_domain_alloc_paging_v1 (amd/iommu.c), iommu_init_pci
 *     (amd/init.c); iommufd's device.c (auto-domain search, GET_HW_INFO) and
 *     hw_pagetable.c (DIRTY_TRACKING needs IOMMU_CAP_DIRTY_TRACKING).
 */
import { describe, it, expect, beforeEach } from 'vitest';
import {
  newHost, expectErrno, Iommufd, VfioDevice, uapi, PAGE, U64_MAX, type Host,
} from './support/host.js';
import { DmaFault, type Segment } from '../host/index.js';
import type { IommuKind } from '../host/iommu/driver.js';
import { amdFaultFlags, AMD_FLAG_RZ } from '../host/iommu/fault_records.js';

const T = uapi.IOMMUFD_IOCTL;
const P = BigInt(PAGE);
const MiB = 1n << 20n;
const GiB = 1n << 30n;
const LAST48 = (1n << 48n) - 1n;
const RO = uapi.IOMMU_IOAS_MAP_READABLE;
const RW = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;
const INPUT_TYPE = uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE;
const DIRTY_CAP = BigInt(uapi.IOMMU_HW_CAP_DIRTY_TRACKING);
const ATS_NOT_SUPPORTED = BigInt(uapi.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED);

/** bits hi:lo of a register. */
function bits(reg: bigint | number, hi: number, lo: number): number {
  return Number((BigInt(reg) >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
}

// One 1 GiB buffer for every host of this file, registered as a segment: a
// 1 GiB-aligned, physically contiguous gigabyte (segment base id << 32), so
// 1 GiB leaves apply. Untouched pages cost nothing.
let bigBuffer: ArrayBuffer | undefined;
const big = (): ArrayBuffer => (bigBuffer ??= new ArrayBuffer(Number(GiB)));

type Fmt = 'arm' | 'amd';

interface Unit {
  kind: IommuKind;
  fmt: Fmt;
  hwInfoType: number;
  /** The reserved regions of a device behind the unit (Linux's get_resv_regions). */
  resv: { start: bigint; last: bigint }[];
  dirty: boolean;
}

const UNITS: Unit[] = [
  {
    kind: 'arm-smmuv3', fmt: 'arm', hwInfoType: uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    // arm_smmu_get_resv_regions: MSI_IOVA_BASE 0x8000000, MSI_IOVA_LENGTH 0x100000, IOMMU_RESV_SW_MSI.
    resv: [{ start: 0x800_0000n, last: 0x80f_ffffn }],
    dirty: false,
  },
  {
    kind: 'amd-vi', fmt: 'amd', hwInfoType: uapi.IOMMU_HW_INFO_TYPE_AMD,
    // amd_iommu_get_resv_regions: MSI_RANGE_START..MSI_RANGE_END (IOMMU_RESV_MSI), then
    // HT_RANGE_START..HT_RANGE_END (IOMMU_RESV_RESERVED) unless EFR2.HTRangeIgnore.
    resv: [{ start: 0xfee0_0000n, last: 0xfeef_ffffn }, { start: 0xfd_0000_0000n, last: 0xff_ffff_ffffn }],
    dirty: true,
  },
];

/** IOVA_RANGES expected for an aperture [0, LAST48] minus these reserved ranges. */
function holes(resv: { start: bigint; last: bigint }[]): { start: bigint; last: bigint }[] {
  const out: { start: bigint; last: bigint }[] = [];
  let at = 0n;
  for (const r of [...resv].sort((a, b) => (a.start < b.start ? -1 : 1))) {
    if (r.start > at) out.push({ start: at, last: r.start - 1n });
    if (r.last + 1n > at) at = r.last + 1n;
  }
  if (at <= LAST48) out.push({ start: at, last: LAST48 });
  return out;
}

// ---- the engine's domains, read from linear memory (assembly/layout.ts) ------

interface DomainRecord { did: number; root: number; levels: number; sizes: number; format: number }

/** Every live domain record (root pfn != 0) of the engine's domain table. */
function domains(host: Host): DomainRecord[] {
  const L = host.engine.layout;
  const dv = new DataView(host.engine.bytes.buffer);
  const ctrl = (off: number) => dv.getUint32(L.CTRL_BASE + off, true);
  const table = ctrl(L.CTRL_DOM_TABLE), count = ctrl(L.CTRL_DOMAINS);
  const out: DomainRecord[] = [];
  for (let did = 1; did < count; did++) {
    const at = table + did * L.DOM_SIZE;
    const root = dv.getUint32(at + L.DOM_ROOT, true);
    if (root === 0) continue;
    out.push({
      did, root,
      levels: dv.getUint32(at + L.DOM_LEVELS, true),
      sizes: dv.getUint32(at + L.DOM_SIZES, true),
      format: dv.getUint32(at + L.DOM_FORMAT, true),
    });
  }
  return out;
}

/**
 * The one live domain in a unit's format. The binary face does not expose a
 * HWPT's engine domain id; in these tests each unit has exactly one domain,
 * so its format finds it in the domain table.
 */
function domainOf(host: Host, fmt: Fmt): DomainRecord {
  const L = host.engine.layout;
  const want = fmt === 'arm' ? L.FMT_ARM_S2 : L.FMT_AMD_V1;
  const found = domains(host).filter((d) => d.format === want);
  expect(found.length, `one ${fmt} domain`).toBe(1);
  return found[0];
}

interface Entry { level: number; pte: bigint }

/**
 * Walk a 4-level table by hand from the root frame to the leaf covering
 * `iova`, decoding each entry with the specification's bits. Levels count
 * from the leaf (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB, 4 = root; ARM calls them
 * 3, 2, 1, 0, AMD 1, 2, 3, 4). Returns every entry met.
 */
function walk(host: Host, fmt: Fmt, dom: DomainRecord, iova: bigint): Entry[] {
  const dv = new DataView(host.engine.bytes.buffer);
  let table = BigInt(dom.root) * P;
  const path: Entry[] = [];
  for (let level = dom.levels; level >= 1; level--) {
    const idx = (iova >> BigInt(12 + 9 * (level - 1))) & 511n;
    const pte = dv.getBigUint64(Number(table + idx * 8n), true);
    path.push({ level, pte });
    if (fmt === 'arm') {
      if (bits(pte, 0, 0) === 0) break; // not valid
      // 0b01 at ARM levels 1 and 2 is a block; at ARM level 3 only 0b11 (page) is valid.
      if (level === 1 || bits(pte, 1, 0) === 0b01) break;
      table = (BigInt(bits(pte, 49, 12)) << 12n) | (BigInt(bits(pte, 9, 8)) << 50n);
    } else {
      if (bits(pte, 0, 0) === 0) break; // PR = 0
      if (bits(pte, 11, 9) === 0) break; // Next Level 0: a page
      table = BigInt(bits(pte, 51, 12)) << 12n;
    }
  }
  return path;
}

/** ARM stage-2 output address of a descriptor: OA[49:12] in 49:12, OA[51:50] in 9:8 (FEAT_LPA2). */
const armOa = (pte: bigint) => (BigInt(bits(pte, 49, 12)) << 12n) | (BigInt(bits(pte, 9, 8)) << 50n);
/** AMD v1 address field 51:12. */
const amdAddr = (pte: bigint) => BigInt(bits(pte, 51, 12)) << 12n;

/** Check a whole walk for a leaf of `leafLevel` mapping `pa` with `write` permission. */
function expectLeaf(fmt: Fmt, path: Entry[], leafLevel: number, pa: bigint, write: boolean): void {
  expect(path.map((e) => e.level)).toEqual([4, 3, 2, 1].filter((l) => l >= leafLevel));
  for (const { level, pte } of path.slice(0, -1)) {
    if (fmt === 'arm') {
      expect(bits(pte, 1, 0), `ARM table descriptor at our level ${level}`).toBe(0b11);
    } else {
      expect(bits(pte, 0, 0), 'AMD PR').toBe(1);
      expect(bits(pte, 11, 9), `AMD Next Level of a table entry at level ${level}`).toBe(level - 1);
      expect(bits(pte, 62, 61), 'AMD IW/IR of a table entry').toBe(0b11);
    }
  }
  const { pte } = path[path.length - 1];
  if (fmt === 'arm') {
    expect(bits(pte, 1, 0), 'ARM leaf type').toBe(leafLevel === 1 ? 0b11 : 0b01);
    expect(bits(pte, 10, 10), 'AF').toBe(1);
    expect(bits(pte, 7, 6), 'S2AP').toBe(write ? 0b11 : 0b01);
    expect(bits(pte, 5, 2), 'MemAttr: Normal, Outer and Inner Write-Back').toBe(0b1111);
    expect(bits(pte, 54, 53), 'XN').toBe(0);
    expect(bits(pte, 52, 52), 'Contiguous').toBe(0);
    expect(armOa(pte)).toBe(pa);
  } else {
    expect(bits(pte, 0, 0), 'PR').toBe(1);
    expect(bits(pte, 11, 9), 'Next Level of a leaf').toBe(0);
    expect(bits(pte, 61, 61), 'IR').toBe(1);
    expect(bits(pte, 62, 62), 'IW').toBe(write ? 1 : 0);
    expect(bits(pte, 60, 60), 'FC').toBe(1);
    expect(amdAddr(pte)).toBe(pa);
  }
}

// ---- fixtures ------------------------------------------------------------------

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

/** A device behind `kind`, opened and bound to ictx. */
function device(kind: IommuKind, opts: { pasidBits?: number; ats?: boolean } = {}): { dev: VfioDevice; devid: number } {
  const handle = host.addDevice({ iommu: kind, ...opts });
  expect(handle.iommu).toBe(kind);
  const dev = new VfioDevice(host, handle);
  return { dev, devid: dev.bind(ictx.fd) };
}

/** The big buffer as a segment mapped into the process: its VA and the segment. */
function bigSegment(): { va: number; seg: Segment } {
  const seg = host.addSegment(big());
  return { va: host.mapSegment(seg), seg };
}

const G1 = 1n * GiB; // a 1 GiB leaf: the whole segment
const M2 = 4n * GiB + 6n * MiB; // a 2 MiB leaf: segment offset 6 MiB
const K4 = 5n * GiB + 0x5000n; // a 4 KiB leaf: segment offset 0x7000
const KRO = 5n * GiB + 0x9000n; // read-only 4 KiB: segment offset 0x9000

/** The three leaf-size mappings (and a read-only page) of the big segment in `ioas`. */
function mapLeaves(ioas: number, va: number): void {
  ictx.map(ioas, va, GiB, G1);
  ictx.map(ioas, va + 6 * (1 << 20), 2n * MiB, M2);
  ictx.map(ioas, va + 0x7000, P, K4);
  ictx.map(ioas, va + 0x9000, P, KRO, RO | uapi.IOMMU_IOAS_MAP_FIXED_IOVA);
}

// ---- tests -----------------------------------------------------------------------

describe.each(UNITS)('$kind', (unit) => {
  it('binds, attaches to an IOAS (an automatic HWPT), and DMAs through 4 KiB, 2 MiB and 1 GiB leaves', () => {
    const { va, seg } = bigSegment();
    const view = new Uint8Array(big());
    const ioas = ictx.ioasAlloc();
    const { dev } = device(unit.kind);
    const hwpt = dev.attach(ioas);
    expect(hwpt).not.toBe(ioas);
    mapLeaves(ioas, va);

    const cases: [iova: bigint, size: number, segOffset: number][] = [
      [G1 + 0x1234_5678n, 1 << 30, 0x1234_5678],
      [M2 + 0x1_2345n, 2 << 20, 6 * (1 << 20) + 0x1_2345],
      [K4 + 0x321n, 4096, 0x7321],
    ];
    for (const [iova, size, off] of cases) {
      const t = dev.dma.translate(iova, { write: true });
      expect(t.size, `leaf size at 0x${iova.toString(16)}`).toBe(size);
      expect(t.pa).toBe(seg.base + off);
      const data = new Uint8Array([0xa5, 0x5a, size & 0xff, off & 0xff]);
      dev.dma.write(iova, data);
      expect(view.subarray(off, off + 4)).toEqual(data);
      expect(host.mem.read(va + off, 4)).toEqual(data);
      expect(dev.dma.read(iova, 4)).toEqual(data);
    }
    // A DMA that crosses from the 1 GiB leaf's last bytes stays in it; one past every mapping faults.
    dev.dma.write(G1 + GiB - 2n, new Uint8Array([1, 2]));
    expect(view.subarray(Number(GiB) - 2)).toEqual(new Uint8Array([1, 2]));
    expect(() => dev.dma.write(G1 + GiB - 1n, new Uint8Array([1, 2]))).toThrow(DmaFault);
    // The read-only page reads and refuses writes.
    expect(dev.dma.translate(KRO).size).toBe(4096);
    let fault: unknown;
    try { dev.dma.write(KRO, new Uint8Array([1])); } catch (e) { fault = e; }
    expect(fault).toBeInstanceOf(DmaFault);
    expect((fault as DmaFault).reason).toBe('write-denied');
  });

  it('writes the page-table entries its specification defines (walked by hand from linear memory)', () => {
    const { va, seg } = bigSegment();
    const ioas = ictx.ioasAlloc();
    const { dev } = device(unit.kind);
    dev.attach(ioas);
    mapLeaves(ioas, va);
    const L = host.engine.layout;
    const dom = domainOf(host, unit.fmt);
    expect(dom.levels).toBe(4);
    expect(dom.sizes).toBe(L.SZ_4K | L.SZ_2M | L.SZ_1G);
    const base = BigInt(seg.base);
    expectLeaf(unit.fmt, walk(host, unit.fmt, dom, G1 + 0x1234_5678n), 3, base, true);
    expectLeaf(unit.fmt, walk(host, unit.fmt, dom, M2 + 0x1_2345n), 2, base + 6n * MiB, true);
    expectLeaf(unit.fmt, walk(host, unit.fmt, dom, K4), 1, base + 0x7000n, true);
    expectLeaf(unit.fmt, walk(host, unit.fmt, dom, KRO), 1, base + 0x9000n, false);
    // An IOVA never mapped ends on an invalid entry.
    const miss = walk(host, unit.fmt, dom, 3n * GiB);
    expect(bits(miss[miss.length - 1].pte, 0, 0)).toBe(0);
    // After an unmap the leaf is gone from the table.
    ictx.unmap(ioas, K4, P);
    const gone = walk(host, unit.fmt, dom, K4);
    expect(bits(gone[gone.length - 1].pte, 0, 0)).toBe(0);
    expect(() => dev.dma.read(K4, 1)).toThrow(DmaFault);
  });

  it('IOVA_RANGES shows the unit\'s reserved regions and its 48-bit aperture', () => {
    const ioas = ictx.ioasAlloc();
    expect(ictx.iovaRanges(ioas).ranges).toEqual([{ start: 0n, last: U64_MAX }]);
    const { dev } = device(unit.kind);
    dev.attach(ioas);
    const r = ictx.iovaRanges(ioas);
    expect(r.ranges).toEqual(holes(unit.resv));
    expect(r.out_iova_alignment).toBe(P); // the domain's smallest page size
    // A mapping into a reserved region is refused (fixed IOVA: EINVAL); one past the aperture too.
    const buf = host.mmap(PAGE);
    for (const rr of unit.resv) expectErrno(() => ictx.map(ioas, buf, P, rr.start), 'EINVAL');
    expectErrno(() => ictx.map(ioas, buf, P, LAST48 + 1n), 'EINVAL');
    // Detach: the device's regions and the domain's aperture leave the IOAS.
    dev.detach();
    expect(ictx.iovaRanges(ioas).ranges).toEqual([{ start: 0n, last: U64_MAX }]);
  });

  it('addDevice builds one unit of the kind: a second device shares the automatic HWPT of the first', () => {
    const ioas = ictx.ioasAlloc();
    const a = device(unit.kind);
    const b = device(unit.kind);
    const ha = a.dev.attach(ioas);
    expect(b.dev.attach(ioas)).toBe(ha);
    expect(domains(host).length).toBe(1);
  });
});

describe('IOMMU_GET_HW_INFO: the SMMUv3 unit (arm_smmu_hw_info)', () => {
  const ARM = uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
  /** sizeof(struct iommu_hw_info_arm_smmuv3): flags, __reserved, idr[6], iidr, aidr. */
  const LEN = 40;

  function info(devid: number, extra: Record<string, unknown> = {}) {
    const va = host.mmap(PAGE);
    host.mem.write(va, new Uint8Array(PAGE).fill(0xa5));
    const out = ictx.ioctl(T.IOMMU_GET_HW_INFO, { dev_id: devid, data_len: LEN, data_uptr: va, ...extra });
    const dv = new DataView(host.mem.read(va, LEN + 8).buffer);
    const u32 = (o: number) => dv.getUint32(o, true);
    return {
      out, flags: u32(0), reserved: u32(4),
      idr: [0, 1, 2, 3, 4, 5].map((i) => u32(8 + 4 * i)), iidr: u32(32), aidr: u32(36), after: dv.getUint32(LEN, true),
    };
  }

  it('returns IDR0..IDR5, IIDR and AIDR describing an SMMUv3.2 with both stages (nesting) and 4, 16 and 64 KiB granules', () => {
    const { devid } = device('arm-smmuv3', { pasidBits: 20 });
    const { out, flags, reserved, idr, iidr, aidr, after } = info(devid);
    expect(out.out_data_type).toBe(ARM);
    expect(out.data_len).toBe(LEN);
    expect(after).toBe(0xa5a5a5a5); // nothing written past the struct
    expect([flags, reserved]).toEqual([0, 0]);
    const [idr0, idr1, idr2, idr3, idr4, idr5] = idr;
    // IDR0 (6.3.1)
    expect(bits(idr0, 0, 0)).toBe(1); // S2P: stage 2
    expect(bits(idr0, 1, 1)).toBe(1); // S1P: stage 1 (S1P && S2P: nesting, arm_smmu_device_hw_probe)
    expect(bits(idr0, 3, 2)).toBe(0b10); // TTF: AArch64
    expect(bits(idr0, 4, 4)).toBe(1); // COHACC
    expect(bits(idr0, 5, 5)).toBe(0); // BTM
    expect(bits(idr0, 7, 6)).toBe(0b00); // HTTU: no hardware A/D update
    expect(bits(idr0, 10, 10)).toBe(0); // ATS
    expect(bits(idr0, 13, 13)).toBe(0); // MSI
    expect(bits(idr0, 16, 16)).toBe(0); // PRI
    expect(bits(idr0, 18, 18)).toBe(1); // VMID16
    expect(bits(idr0, 12, 12)).toBe(1); // ASID16
    expect(bits(idr0, 19, 19)).toBe(1); // CD2L: two-level CD tables
    expect(bits(idr0, 22, 21)).toBe(0b10); // TTENDIAN: little-endian
    expect(bits(idr0, 25, 24)).toBe(0b01); // STALL_MODEL: terminate only
    expect(bits(idr0, 26, 26)).toBe(1); // TERM_MODEL: abort
    expect(bits(idr0, 28, 27)).toBe(0b01); // ST_LEVEL: 2-level
    // IDR1 (6.3.2)
    expect(bits(idr1, 5, 0)).toBe(16); // SIDSIZE
    expect(bits(idr1, 10, 6)).toBe(20); // SSIDSIZE
    expect(bits(idr1, 15, 11)).toBe(0); // PRIQS
    expect(bits(idr1, 25, 21)).toBeGreaterThan(6); // CMDQS > log2(CMDQ_BATCH_ENTRIES), or Linux refuses the SMMU
    expect(bits(idr1, 30, 28)).toBe(0); // REL, QUEUES_PRESET, TABLES_PRESET
    expect(idr2).toBe(0); // BA_VATOS: no VATOS
    // IDR3 (6.3.4)
    expect(bits(idr3, 10, 10)).toBe(1); // RIL
    expect(bits(idr3, 12, 11)).toBe(0b10); // BBML2
    expect(bits(idr3, 8, 8)).toBe(0); // FWB
    expect(idr4).toBe(0); // IMPLEMENTATION DEFINED
    // IDR5 (6.3.6)
    expect(bits(idr5, 2, 0)).toBe(0b101); // OAS: 48 bits
    expect(bits(idr5, 4, 4)).toBe(1); // GRAN4K
    expect(bits(idr5, 6, 5)).toBe(0b11); // GRAN16K, GRAN64K: the engine's stage 2 (pt_create_arm_s2) and stage 1 take them
    expect(bits(idr5, 11, 10)).toBe(0); // VAX: 48-bit VA
    expect(bits(idr5, 31, 16)).toBe(0); // STALL_MAX
    // IIDR: no JEP106 implementer (not Arm's 0x43B, whose MMU-600/700 errata Linux would apply).
    expect(bits(iidr, 11, 0)).not.toBe(0x43b);
    expect(iidr).toBe(0);
    // AIDR: ArchMajorRev 0 (SMMUv3), ArchMinorRev 2.
    expect(bits(aidr, 7, 4)).toBe(0);
    expect(bits(aidr, 3, 0)).toBe(2);
    // out_capabilities: no dirty tracking (HTTU = 0), no ATS; max PASID from SSIDSIZE and the function.
    expect(out.out_capabilities).toBe(ATS_NOT_SUPPORTED);
    expect(out.out_max_pasid_log2).toBe(20);
  });

  it('asked for ARM_SMMUV3 it answers; any other type is EOPNOTSUPP (no impl_ops->hw_info)', () => {
    const { devid } = device('arm-smmuv3');
    expect(info(devid, { flags: INPUT_TYPE, in_data_type: ARM }).out.out_data_type).toBe(ARM);
    for (const t of [uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD, uapi.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV, uapi.IOMMU_HW_INFO_TYPE_AMD, 0xfeedbeef]) {
      expectErrno(() => info(devid, { flags: INPUT_TYPE, in_data_type: t }), 'EOPNOTSUPP');
    }
  });

  it('out_max_pasid_log2 is min(SSIDSIZE, the function\'s PASID width); 0 without the capability', () => {
    expect(info(device('arm-smmuv3', { pasidBits: 8 }).devid).out.out_max_pasid_log2).toBe(8);
    expect(info(device('arm-smmuv3').devid).out.out_max_pasid_log2).toBe(0);
    // ATS is not reported even for a function with the ATS capability: the unit has none (IDR0.ATS = 0).
    expect(info(device('arm-smmuv3', { ats: true }).devid).out.out_capabilities).toBe(ATS_NOT_SUPPORTED);
  });
});

describe('IOMMU_GET_HW_INFO: the AMD-Vi unit (amd_iommufd_hw_info)', () => {
  const AMD = uapi.IOMMU_HW_INFO_TYPE_AMD;
  /** sizeof(struct iommu_hw_info_amd): u64 efr, u64 efr2. */
  const LEN = 16;

  function info(devid: number, extra: Record<string, unknown> = {}) {
    const va = host.mmap(PAGE);
    const out = ictx.ioctl(T.IOMMU_GET_HW_INFO, { dev_id: devid, data_len: LEN, data_uptr: va, ...extra });
    const dv = new DataView(host.mem.read(va, LEN).buffer);
    return { out, efr: dv.getBigUint64(0, true), efr2: dv.getBigUint64(8, true) };
  }

  it('returns EFR and EFR2 describing 4-level v1 host tables with hardware access/dirty bits', () => {
    const { devid } = device('amd-vi', { pasidBits: 20 });
    const { out, efr, efr2 } = info(devid);
    expect(out.out_data_type).toBe(AMD);
    expect(out.data_len).toBe(LEN);
    // EFR (3.4.12, MMIO 0030h)
    expect(bits(efr, 0, 0)).toBe(0); // PreFSup
    expect(bits(efr, 1, 1)).toBe(0); // PPRSup
    expect(bits(efr, 2, 2)).toBe(0); // XTSup
    expect(bits(efr, 3, 3)).toBe(0); // NXSup
    expect(bits(efr, 4, 4)).toBe(0); // GTSup: no guest (v2) translation
    expect(bits(efr, 6, 6)).toBe(1); // IASup
    expect(bits(efr, 7, 7)).toBe(0); // GASup
    expect(bits(efr, 8, 8)).toBe(0); // HESup
    expect(bits(efr, 9, 9)).toBe(0); // PCSup
    expect(bits(efr, 11, 10)).toBe(0b00); // HATS: 4-level host tables
    expect(bits(efr, 13, 12)).toBe(0); // GATS
    expect(bits(efr, 15, 14)).toBe(0); // GLXSup
    expect(bits(efr, 36, 32)).toBe(0); // PASmax
    expect(bits(efr, 48, 48)).toBe(0); // GIoSup
    expect(bits(efr, 49, 49)).toBe(1); // HASup
    expect(bits(efr, 52, 52)).toBe(1); // HDSup
    expect(bits(efr, 63, 63)).toBe(0); // SNPSup
    // EFR2 (MMIO 01A0h)
    expect(bits(efr2, 3, 3)).toBe(0); // GCR3TRPMode
    expect(bits(efr2, 11, 11)).toBe(0); // HTRangeIgnore: the HT range stays reserved
    // Dirty tracking (amd_iommu_hd_support: HDSup), no ATS; no PASID without GTSup, whatever the function has.
    expect(out.out_capabilities).toBe(DIRTY_CAP | ATS_NOT_SUPPORTED);
    expect(out.out_max_pasid_log2).toBe(0);
  });

  it('asked for AMD it answers; any other type is EOPNOTSUPP', () => {
    const { devid } = device('amd-vi');
    expect(info(devid, { flags: INPUT_TYPE, in_data_type: AMD }).out.out_data_type).toBe(AMD);
    for (const t of [uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD, uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, uapi.IOMMU_HW_INFO_TYPE_RISCV_IOMMU, 0xfeedbeef]) {
      expectErrno(() => info(devid, { flags: INPUT_TYPE, in_data_type: t }), 'EOPNOTSUPP');
    }
  });
});

describe('IOMMU_HWPT_ALLOC with DIRTY_TRACKING', () => {
  const BASE = 0x4000_0000n;
  const alloc = (devid: number, ioas: number) =>
    ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING }).out_hwpt_id as number;

  it('is EOPNOTSUPP on the SMMUv3 unit (no IOMMU_CAP_DIRTY_TRACKING: HTTU = 0, stage 2 only)', () => {
    const ioas = ictx.ioasAlloc();
    const { devid } = device('arm-smmuv3');
    expectErrno(() => alloc(devid, ioas), 'EOPNOTSUPP');
    expect(domains(host)).toEqual([]); // nothing left behind
    // Without the flag it is a plain stage-2 domain.
    ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas });
    expect(domainOf(host, 'arm').levels).toBe(4);
  });

  it('is accepted on the VT-d unit', () => {
    const ioas = ictx.ioasAlloc();
    const { dev, devid } = device('intel-vtd');
    const hwpt = alloc(devid, ioas);
    expect(dev.attach(hwpt)).toBe(hwpt);
  });

  it('is accepted on the AMD unit: a DMA write sets HA and HD in the leaf and shows in GET_DIRTY_BITMAP', () => {
    const ioas = ictx.ioasAlloc();
    const { dev, devid } = device('amd-vi');
    const hwpt = alloc(devid, ioas);
    expect(dev.attach(hwpt)).toBe(hwpt);
    const va = host.mmap(16 * PAGE);
    ictx.map(ioas, va, 16n * P, BASE);
    ictx.ioctl(T.IOMMU_HWPT_SET_DIRTY_TRACKING, { hwpt_id: hwpt, flags: uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE });
    const dom = domainOf(host, 'amd');
    const leaf = (iova: bigint) => { const p = walk(host, 'amd', dom, iova); return p[p.length - 1].pte; };
    expect([bits(leaf(BASE + 3n * P), 5, 5), bits(leaf(BASE + 3n * P), 6, 6)]).toEqual([0, 0]);

    dev.dma.write(BASE + 3n * P + 9n, new Uint8Array([7]));
    dev.dma.read(BASE + 5n * P, 1);
    expect(bits(leaf(BASE + 3n * P), 6, 5)).toBe(0b11); // HD and HA on the written page
    expect(bits(leaf(BASE + 5n * P), 6, 5)).toBe(0b01); // HA only on the page read

    const data = host.mmap(PAGE);
    const get = () => {
      ictx.ioctl(T.IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: hwpt, iova: BASE, length: 16n * P, page_size: P, data });
      return new DataView(host.mem.read(data, 8).buffer).getBigUint64(0, true);
    };
    expect(get()).toBe(1n << 3n);
    expect(bits(leaf(BASE + 3n * P), 6, 6)).toBe(0); // read-and-clear cleared HD
    host.mem.write(data, new Uint8Array(8));
    expect(get()).toBe(0n);
  });
});

describe('devices behind different units on one IOAS', () => {
  it('get one automatic HWPT per unit, each a table in its own format, all translating the IOAS', () => {
    const ioas = ictx.ioasAlloc();
    const kinds: IommuKind[] = ['intel-vtd', 'arm-smmuv3', 'amd-vi'];
    const devs = kinds.map((k) => device(k).dev);
    const hwpts = devs.map((d) => d.attach(ioas));
    expect(new Set(hwpts).size).toBe(3);
    // A second device of each kind reuses its unit's HWPT (the search only takes a HWPT of the same driver).
    for (const [i, k] of kinds.entries()) expect(device(k).dev.attach(ioas)).toBe(hwpts[i]);
    const L = host.engine.layout;
    expect(domains(host).map((d) => d.format).sort()).toEqual([L.FMT_VTD_SL, L.FMT_ARM_S2, L.FMT_AMD_V1].sort());

    // The reserved regions of all three units: VT-d's and AMD's interrupt window, ARM's SW_MSI, AMD's HT range.
    expect(ictx.iovaRanges(ioas).ranges).toEqual(holes([
      { start: 0x800_0000n, last: 0x80f_ffffn },
      { start: 0xfee0_0000n, last: 0xfeef_ffffn },
      { start: 0xfd_0000_0000n, last: 0xff_ffff_ffffn },
    ]));

    const va = host.mmap(4 << 20);
    const iova = ictx.map(ioas, va, 4n * MiB); // automatic IOVA: avoids every unit's reserved ranges
    const pas = devs.map((d) => d.dma.translate(iova + 0x1000n).pa);
    expect(new Set(pas).size).toBe(1);
    devs[1].dma.write(iova + 0x1000n, new Uint8Array([0x42]));
    expect(devs[2].dma.read(iova + 0x1000n, 1)).toEqual(new Uint8Array([0x42]));
    expect(devs[0].dma.read(iova + 0x1000n, 1)).toEqual(new Uint8Array([0x42]));
  });

  it('each unit\'s automatic HWPT goes with its own last device', () => {
    const ioas = ictx.ioasAlloc();
    const arm = device('arm-smmuv3').dev;
    const amd = device('amd-vi').dev;
    const h1 = arm.attach(ioas);
    const h2 = amd.attach(ioas);
    expect(h2).not.toBe(h1);
    arm.detach();
    // The ARM HWPT went with its last device; the AMD one stays.
    expect(domains(host).map((d) => d.format)).toEqual([host.engine.layout.FMT_AMD_V1]);
  });
});

describe('addDevice', () => {
  it('accepts intel-vtd, arm-smmuv3 and amd-vi; the mock IOMMU and unknown kinds are ENODEV', () => {
    for (const k of ['intel-vtd', 'arm-smmuv3', 'amd-vi'] as IommuKind[]) expect(host.addDevice({ iommu: k }).iommu).toBe(k);
    expect(host.addDevice().iommu).toBe('intel-vtd');
    expectErrno(() => host.addDevice({ iommu: 'mock' }), 'ENODEV');
    expectErrno(() => host.addDevice({ iommu: 'riscv' as IommuKind }), 'ENODEV');
  });
});

describe('IOMMU_HWPT_ALLOC flags each unit takes (domain_alloc_paging_flags)', () => {
  // intel_iommu_domain_alloc_paging_flags: NEST_PARENT (ecap.NEST), DIRTY_TRACKING (SSADS), PASID (SMTS && PASID);
  // arm_smmu_domain_alloc_paging_flags: NEST_PARENT with FEAT_NESTING; PASID refused here (paging domains are stage 2, README);
  // amd_iommu_domain_alloc_paging_flags without GT: DIRTY_TRACKING (HD) only.
  const cases: [IommuKind, number, 'OK' | 'EOPNOTSUPP'][] = [
    ['intel-vtd', uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, 'OK'],
    ['intel-vtd', uapi.IOMMU_HWPT_ALLOC_PASID, 'OK'],
    ['arm-smmuv3', uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, 'OK'],
    ['arm-smmuv3', uapi.IOMMU_HWPT_ALLOC_PASID, 'EOPNOTSUPP'],
    ['amd-vi', uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, 'EOPNOTSUPP'],
    ['amd-vi', uapi.IOMMU_HWPT_ALLOC_PASID, 'EOPNOTSUPP'],
  ];
  for (const [kind, flags, want] of cases) {
    it(`${kind}: flags 0x${flags.toString(16)} -> ${want}`, async () => {
      const h = await newHost();
      const ictx = new Iommufd(h);
      const ioas = ictx.ioasAlloc();
      const dev = new VfioDevice(h, h.addDevice({ iommu: kind }));
      const devid = dev.bind(ictx.fd);
      const alloc = () => ictx.ioctl(uapi.IOMMUFD_IOCTL.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags });
      if (want === 'OK') expect(alloc().out_hwpt_id).toBeGreaterThan(0);
      else expectErrno(alloc, want);
    });
  }
});

describe('AMD-Vi: a reserved bit in an I/O page-table entry (AMD 2.2.3; 2.5.3 IO_PAGE_FAULT RZ)', () => {
  it('a PTE with bit 52 set refuses the DMA as reserved, which the event log reports with RZ = 1', () => {
    const { va } = bigSegment();
    const ioas = ictx.ioasAlloc();
    const { dev } = device('amd-vi');
    dev.attach(ioas);
    mapLeaves(ioas, va);
    expect(dev.dma.read(K4, 1).length).toBe(1);
    const dom = domainOf(host, 'amd');
    // The leaf entry's address, found by hand (walk's last entry is the leaf): re-walk to locate it.
    const dv = new DataView(host.engine.bytes.buffer);
    let table = BigInt(dom.root) * P;
    let at = 0;
    for (let level = dom.levels; level >= 1; level--) {
      at = Number(table + ((K4 >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n);
      const pte = dv.getBigUint64(at, true);
      if (bits(pte, 11, 9) === 0) break;
      table = BigInt(bits(pte, 51, 12)) << 12n;
    }
    dv.setBigUint64(at, dv.getBigUint64(at, true) | (1n << 52n), true);
    host.engine.flushAll(); // as software invalidates after changing an entry
    let fault: unknown;
    try { dev.dma.read(K4, 1); } catch (e) { fault = e; }
    expect(fault).toBeInstanceOf(DmaFault);
    expect((fault as DmaFault).reason).toBe('reserved');
    expect(amdFaultFlags(fault as DmaFault) & AMD_FLAG_RZ).toBe(AMD_FLAG_RZ);
  });
});
