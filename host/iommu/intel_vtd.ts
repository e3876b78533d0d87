// The emulated Intel VT-d unit (drivers/iommu/intel/ is its Linux driver).
//
// Its Capability and Extended Capability registers (VT-d specification rev
// 4.x/5.x, 11.4.2 CAP_REG and 11.4.3 ECAP_REG) are built from the field
// table below, one row per field the specification defines, each with the
// value this unit reports and why. A field that a later issue will emulate
// (first-stage and nested translation, page requests) is marked `planned`:
// it is set because the project supports it on VT-d, and the row names what
// must come with it. Reserved bits stay 0.
//
// Cross-check: the cap_*() / ecap_*() decoders of drivers/iommu/intel/iommu.h
// read the same positions.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_hw_info_vtd, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_INTEL_VTD, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17,
  IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_VTD_S1, IOMMU_VTD_S1_SRE, IOMMU_VTD_S1_EAFE,
} from '../uapi/iommufd.js';
import type { HwInfoData, IommuDriver, IommuUnitCaps } from './driver.js';
import { packRegisters, fieldOf, type RegField } from './regfields.js';

/** One field of CAP_REG or ECAP_REG. */
export type VtdRegField = RegField<'cap' | 'ecap'>;

/** Where this unit's register file puts the IOTLB registers (ECAP.IRO x 16): IVA_REG at 0x500, IOTLB_REG at 0x508. */
export const VTD_IOTLB_REG_OFFSET = 0x500;
/** Where this unit's register file puts its fault-recording registers (CAP.FRO x 16): FRCD_REG0 at 0x600. */
export const VTD_FRCD_REG_OFFSET = 0x600;
/** Fault-recording registers of this unit (CAP.NFR + 1). */
export const VTD_FAULT_RECORDING_REGS = 1;
/** PASID width of this unit's requests-with-PASID (ECAP.PSS + 1). */
export const VTD_PASID_BITS = 20;
/** Input address width of its second-stage tables by default (CAP.MGAW + 1; SAGAW: 4 levels). */
export const VTD_ADDRESS_WIDTH = 48;

/**
 * How a VT-d unit is built (HostOptions.vtd): QEMU's intel-iommu `aw-bits`
 * and the platform's host address width.
 */
export interface VtdOptions {
  /**
   * The adjusted guest address width of its second-stage tables: 39, 48
   * (default) or 57 bits, reported as SAGAW bit 1, 2 or 3 (3-, 4- or
   * 5-level tables; VT-d 3.7, 11.4.2) with MGAW = width - 1. The engine
   * table of a paging domain has that many levels and its aperture ends at
   * 2^width - 1.
   */
  addressWidth?: 39 | 48 | 57;
  /**
   * The host address width HAW (the DMAR ACPI table's Host Address Width
   * field + 1, VT-d 8.1), 32..52, default 52 (the whole physical address:
   * segment in bits 51:32). Address bits 51:HAW of a second-stage entry are
   * reserved (9.8): the walk faults on them (F_RESERVED) and a map of a
   * physical address at or past 2^HAW is refused (EINVAL).
   */
  hostAddressWidth?: number;
}

/** SAGAW bit n: a (n + 2)-level table of 30 + 9 * n input bits (VT-d 11.4.2). */
const SAGAW_BIT: Readonly<Record<number, number>> = { 39: 1, 48: 2, 57: 3 };

/** The options with their defaults, checked (RangeError otherwise). */
export function vtdOptions(o: VtdOptions = {}): Required<VtdOptions> {
  const addressWidth = o.addressWidth ?? VTD_ADDRESS_WIDTH;
  const hostAddressWidth = o.hostAddressWidth ?? 52;
  if (SAGAW_BIT[addressWidth] === undefined) throw new RangeError('VT-d addressWidth must be 39, 48 or 57');
  if (!Number.isInteger(hostAddressWidth) || hostAddressWidth < 32 || hostAddressWidth > 52) throw new RangeError('VT-d hostAddressWidth must be 32..52');
  return { addressWidth, hostAddressWidth };
}

const CAP = '11.4.2';
const ECAP = '11.4.3';

/**
 * ND (CAP[2:0]) for a domain table of `domains` entries: the count is
 * 2^(4 + 2 * ND), at most ND = 6 (16-bit domain ids). The largest encoding
 * that the engine's table holds.
 */
export function vtdNd(domains: number): number {
  let nd = 0;
  while (nd < 6 && 2 ** (4 + 2 * (nd + 1)) <= domains) nd++;
  return nd;
}

/**
 * The field table of this unit. `domains` is the engine's domain table size
 * (EngineOptions.domains, 4096 unless told): it sets ND.
 */
export function vtdRegisterFields(domains: number, options: VtdOptions = {}): readonly VtdRegField[] {
  const nd = vtdNd(domains);
  const aw = vtdOptions(options).addressWidth;
  return [
    // ---- CAP_REG (11.4.2) ------------------------------------------------
    { reg: 'cap', name: 'ND', lsb: 0, width: 3, value: nd, spec: CAP,
      why: `domain ids the engine's domain table holds: 2^(4+2*${nd}) = ${2 ** (4 + 2 * nd)} of its ${domains} (id 0 is the blocked domain)` },
    { reg: 'cap', name: 'AFL', lsb: 3, width: 1, value: 0, spec: CAP,
      why: 'no advanced (memory-resident) fault log: faults go to the fault-recording register' },
    { reg: 'cap', name: 'RWBF', lsb: 4, width: 1, value: 0, spec: CAP,
      why: 'no write buffer: a page-table write is visible to the next walk (one linear memory)' },
    { reg: 'cap', name: 'PLMR', lsb: 5, width: 1, value: 0, spec: CAP, why: 'no protected low-memory region' },
    { reg: 'cap', name: 'PHMR', lsb: 6, width: 1, value: 0, spec: CAP, why: 'no protected high-memory region' },
    { reg: 'cap', name: 'CM', lsb: 7, width: 1, value: 0, spec: CAP,
      why: 'the IOTLB caches present leaves only (a walk that faults fills nothing), so no invalidation is needed after a map' },
    { reg: 'cap', name: 'SAGAW', lsb: 8, width: 5, value: 1 << SAGAW_BIT[aw]!, spec: `${CAP}; 3.7`,
      why: `bit ${SAGAW_BIT[aw]} only: ${aw}-bit AGAW, ${SAGAW_BIT[aw]! + 2}-level second-stage tables (driver.levels, read back from this field)` },
    { reg: 'cap', name: 'MGAW', lsb: 16, width: 6, value: aw - 1, spec: `${CAP}; 3.7`,
      why: `N + 1 = ${aw} bits: the paging domain aperture is [0, 2^${aw} - 1]` },
    { reg: 'cap', name: 'ZLR', lsb: 22, width: 1, value: 1, spec: CAP,
      why: 'a zero-length DMA is not translated and never faults (Dma.transfer returns before the walk)' },
    { reg: 'cap', name: 'FRO', lsb: 24, width: 10, value: VTD_FRCD_REG_OFFSET / 16, spec: CAP,
      why: 'fault-recording register at 0x600 (x 16 bytes), clear of the perfmon (0x300) and ECMD (0x400) blocks',
      planned: 'the register file of this unit (primary fault logging) is emulated by a later issue at this offset' },
    { reg: 'cap', name: 'SSLPS', lsb: 34, width: 4, value: 0b0011, spec: `${CAP}; 3.7, 9.8`,
      why: '2 MiB (bit 0) and 1 GiB (bit 1) second-stage leaves; no 512 GiB / 256 TiB leaves' },
    { reg: 'cap', name: 'PSI', lsb: 39, width: 1, value: 1, spec: CAP,
      why: 'the engine invalidates an IOVA range of a domain exactly (iotlb_flush_range)' },
    { reg: 'cap', name: 'NFR', lsb: 40, width: 8, value: VTD_FAULT_RECORDING_REGS - 1, spec: CAP,
      why: 'N + 1 = 1 fault-recording register, the minimum',
      planned: 'with FRO: one FRCD_REG at 0x600' },
    { reg: 'cap', name: 'MAMV', lsb: 48, width: 6, value: aw - 12, spec: CAP,
      why: `a range invalidation may cover 2^${aw - 12} pages, the whole ${aw}-bit aperture: the engine takes any range` },
    { reg: 'cap', name: 'DWD', lsb: 54, width: 1, value: 1, spec: CAP,
      why: 'every DMA completes before the call returns, so an invalidation leaves no write queued' },
    { reg: 'cap', name: 'DRD', lsb: 55, width: 1, value: 1, spec: CAP,
      why: 'likewise for reads' },
    { reg: 'cap', name: 'FS1GP', lsb: 56, width: 1, value: 1, spec: CAP,
      why: '1 GiB first-stage pages, as the second stage has them',
      planned: 'the first-stage walker (nested HWPTs) must accept 1 GiB leaves' },
    { reg: 'cap', name: 'PI', lsb: 59, width: 1, value: 0, spec: CAP, why: 'no posted interrupts (no interrupt remapping)' },
    { reg: 'cap', name: 'FS5LP', lsb: 60, width: 1, value: 0, spec: CAP, why: '4-level first stage only' },
    { reg: 'cap', name: 'ECMDS', lsb: 61, width: 1, value: 0, spec: CAP, why: 'no enhanced command interface' },
    { reg: 'cap', name: 'ESIRTPS', lsb: 62, width: 1, value: 0, spec: CAP, why: 'no interrupt remapping table' },
    { reg: 'cap', name: 'ESRTPS', lsb: 63, width: 1, value: 0, spec: CAP,
      why: 'no claim about root-table pointer caching: software invalidates after SRTP' },

    // ---- ECAP_REG (11.4.3) -----------------------------------------------
    { reg: 'ecap', name: 'C', lsb: 0, width: 1, value: 1, spec: ECAP,
      why: 'table walks read linear memory directly: coherent with the CPU, no clflush' },
    { reg: 'ecap', name: 'QI', lsb: 1, width: 1, value: 1, spec: ECAP,
      why: 'PASID-granular invalidations (P_IOTLB, PASID-cache) exist only as queued descriptors, and this unit is PASID-capable' },
    { reg: 'ecap', name: 'DT', lsb: 2, width: 1, value: 1, spec: ECAP,
      why: 'the unit answers translation requests (Dma.translate: through the IOTLB, leaf size and permission back); a function without ATS gets IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED',
      planned: 'device-TLB invalidation of ATS-enabled functions' },
    { reg: 'ecap', name: 'IR', lsb: 3, width: 1, value: 0, spec: ECAP,
      why: 'no interrupt remapping: the interrupt window is a reserved region (IOMMU_RESV_MSI) that no DMA reaches' },
    { reg: 'ecap', name: 'EIM', lsb: 4, width: 1, value: 0, spec: ECAP, why: 'needs IR' },
    { reg: 'ecap', name: 'PT', lsb: 6, width: 1, value: 0, spec: ECAP,
      why: 'a context points at a domain or blocks: the engine has no pass-through (identity) translation' },
    { reg: 'ecap', name: 'SC', lsb: 7, width: 1, value: 1, spec: `${ECAP}; 9.8`,
      why: 'every DMA is a coherent copy and the walker accepts SNP (bit 11) in leaves: snoop is always enforced (IOMMU_CAP_ENFORCE_CACHE_COHERENCY)' },
    { reg: 'ecap', name: 'IRO', lsb: 8, width: 10, value: VTD_IOTLB_REG_OFFSET / 16, spec: ECAP,
      why: 'IOTLB registers at 0x500 (x 16 bytes): IVA_REG 0x500, IOTLB_REG 0x508',
      planned: 'the register file of this unit is emulated by a later issue at this offset' },
    { reg: 'ecap', name: 'MHMV', lsb: 20, width: 4, value: 0, spec: ECAP, why: 'no interrupt entry cache (no IR)' },
    { reg: 'ecap', name: 'MTS', lsb: 25, width: 1, value: 0, spec: ECAP, why: 'memory types (EMT, PAT) are not emulated' },
    { reg: 'ecap', name: 'NEST', lsb: 26, width: 1, value: 1, spec: `${ECAP}; 9.6`,
      why: 'nested (first stage over second stage) translation: IOMMU_HWPT_ALLOC_NEST_PARENT and VT-d nested HWPTs',
      planned: 'the 2-D walk of DESIGN 2 (nested HWPT, PGTT = 011b)' },
    { reg: 'ecap', name: 'PRS', lsb: 29, width: 1, value: 1, spec: ECAP,
      why: 'page requests of PRI-capable functions, the recoverable faults of IOMMU_FAULT_QUEUE_ALLOC',
      planned: 'the page-request path into FAULT objects (DESIGN 2)' },
    { reg: 'ecap', name: 'ERS', lsb: 30, width: 1, value: 0, spec: ECAP, why: 'no execute-requested requests-with-PASID' },
    { reg: 'ecap', name: 'SRS', lsb: 31, width: 1, value: 0, spec: ECAP, why: 'no supervisor (privileged) requests-with-PASID' },
    { reg: 'ecap', name: 'NWFS', lsb: 33, width: 1, value: 0, spec: ECAP, why: 'the No-Write flag of translation requests is not honoured' },
    { reg: 'ecap', name: 'EAFS', lsb: 34, width: 1, value: 0, spec: ECAP, why: 'no extended-accessed flag in first-stage entries' },
    { reg: 'ecap', name: 'PSS', lsb: 35, width: 5, value: VTD_PASID_BITS - 1, spec: ECAP,
      why: 'N + 1 = 20-bit PASIDs, the PCIe maximum: engine contexts are per (device, PASID)' },
    { reg: 'ecap', name: 'PASID', lsb: 40, width: 1, value: 1, spec: ECAP,
      why: 'requests-with-PASID are translated (a context per PASID)' },
    { reg: 'ecap', name: 'DIT', lsb: 41, width: 1, value: 0, spec: ECAP, why: 'no device-TLB invalidation throttling' },
    { reg: 'ecap', name: 'PDS', lsb: 42, width: 1, value: 0, spec: ECAP, why: 'no page-request drain flag' },
    { reg: 'ecap', name: 'SMTS', lsb: 43, width: 1, value: 1, spec: ECAP,
      why: 'scalable mode: PASID-granular translation, which PASID, dirty tracking (ssads_supported) and nesting need' },
    { reg: 'ecap', name: 'VCS', lsb: 44, width: 1, value: 0, spec: ECAP, why: 'no virtual command interface' },
    { reg: 'ecap', name: 'SSADS', lsb: 45, width: 1, value: 1, spec: `${ECAP}; 9.8`,
      why: 'second-stage A/D bits: dirty tracking of paging domains (IOMMU_HW_CAP_DIRTY_TRACKING)' },
    { reg: 'ecap', name: 'SSTS', lsb: 46, width: 1, value: 1, spec: `${ECAP}; 9.6`,
      why: 'second-stage translation in scalable mode (PGTT = 010b): every paging domain of this unit' },
    { reg: 'ecap', name: 'FSTS', lsb: 47, width: 1, value: 1, spec: `${ECAP}; 9.6`,
      why: 'first-stage translation (PGTT = 001b), the guest-owned stage of a VT-d nested HWPT',
      planned: 'the first-stage walker of nested HWPTs (IOMMU_HWPT_DATA_VTD_S1)' },
    { reg: 'ecap', name: 'SMPWC', lsb: 48, width: 1, value: 1, spec: ECAP,
      why: 'scalable-mode table walks are coherent, as in legacy mode (C)' },
    { reg: 'ecap', name: 'RPS', lsb: 49, width: 1, value: 0, spec: ECAP,
      why: 'RID_PASID is always 0 (IOMMU_NO_PASID)' },
    { reg: 'ecap', name: 'PMS', lsb: 51, width: 1, value: 0, spec: ECAP, why: 'no performance-monitoring registers' },
    { reg: 'ecap', name: 'ADMS', lsb: 52, width: 1, value: 0, spec: ECAP, why: 'no abort-DMA mode' },
    { reg: 'ecap', name: 'RPRIVS', lsb: 53, width: 1, value: 0, spec: ECAP, why: 'no RID_PRIV in scalable-mode context entries' },
  ];
}

/** CAP_REG and ECAP_REG from a field table. */
export function vtdRegisters(fields: readonly VtdRegField[]): { cap: bigint; ecap: bigint } {
  return packRegisters('VT-d', ['cap', 'ecap'], 64, fields);
}

/** A field's value read back from a register value. */
export function vtdField(fields: readonly VtdRegField[], reg: 'cap' | 'ecap', name: string, value: bigint): number {
  return fieldOf('VT-d', fields, reg, name, value);
}

/** The engine's domain table size (control block word CTRL_DOMAINS). */
function engineDomains(engine: Engine): number {
  const L = engine.layout;
  const at = L.CTRL_BASE + L.CTRL_DOMAINS;
  const b = engine.bytes;
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
}

/**
 * Intel VT-d with a 3-, 4- (default) or 5-level second-stage format
 * (VtdOptions.addressWidth) and 2 MiB and 1 GiB super-pages (VT-d spec
 * 3.7, cap SAGAW and SSLPS = 0b11). The interrupt range
 * 0xfee00000-0xfeefffff is reserved as IOMMU_RESV_MSI, as
 * intel_iommu_get_resv_regions() does (IOAPIC_RANGE_START / _END).
 */
export function intelVtd(engine: Engine, options: VtdOptions = {}): IommuDriver {
  const L = engine.layout;
  const opts = vtdOptions(options);
  const fields = vtdRegisterFields(engineDomains(engine), opts);
  const { cap, ecap } = vtdRegisters(fields);
  const get = (reg: 'cap' | 'ecap', name: string) => vtdField(fields, reg, name, reg === 'cap' ? cap : ecap);
  // As Linux reads them: iommu->agaw is the largest SAGAW bit (up to 57
  // bits, iommu_calculate_agaw), the table has agaw + 2 levels, and the
  // domain's width is that AGAW's, capped by MGAW + 1 (intel_iommu's
  // paging_domain_alloc: addr_width > cap_mgaw -> cap_mgaw).
  const sagaw = get('cap', 'SAGAW');
  const agaw = 31 - Math.clz32(sagaw & 0b01110);
  if (agaw < 1) throw new RangeError('VT-d SAGAW names no 3- to 5-level table');
  const levels = agaw + 2;
  const addressWidth = Math.min(30 + 9 * agaw, get('cap', 'MGAW') + 1);
  // As Linux reads them: sm_supported = SMTS (intel_iommu_sm on);
  // pasid_supported = sm && PASID, max_pasids = 2 << PSS (dmar.c alloc_iommu);
  // ssads_supported = sm && SSADS (IOMMU_CAP_DIRTY_TRACKING); the unit's
  // half of info->ats_supported = ecap_dev_iotlb_support (DT).
  const sm = get('ecap', 'SMTS') === 1;
  const caps: IommuUnitCaps = Object.freeze({
    dirtyTracking: sm && get('ecap', 'SSADS') === 1,
    pasidBits: sm && get('ecap', 'PASID') === 1 ? get('ecap', 'PSS') + 1 : 0,
    ats: get('ecap', 'DT') === 1,
    pri: get('ecap', 'PRS') === 1,
    priNeedsAts: true,
  });
  return {
    kind: 'intel-vtd',
    format: L.FMT_VTD_SL,
    levels,
    leafSizes: L.SZ_4K | L.SZ_2M | L.SZ_1G,
    // The engine checks address bits 51:HAW of every entry (VT-d 9.8).
    tableFlags: opts.hostAddressWidth << L.PT_HAW_SHIFT,
    addressWidth,
    pgsizeMin: 4096n,
    resvRegions: () => [{ start: 0xfee0_0000n, last: 0xfeef_ffffn, type: 'msi' }],
    caps,
    // intel_iommu_domain_alloc_paging_flags: NEST_PARENT needs ecap.NEST,
    // DIRTY_TRACKING second-stage A/D, PASID scalable mode with PASID.
    pagingFlags: (get('ecap', 'NEST') === 1 ? IOMMU_HWPT_ALLOC_NEST_PARENT : 0) |
      (caps.dirtyTracking ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0) | (caps.pasidBits > 0 ? IOMMU_HWPT_ALLOC_PASID : 0),
    // Nesting (ecap.NEST): first-stage tables in the x86-64 format over a
    // nest-parent second-stage domain. intel_pasid_setup_nested refuses at
    // attach: an address width other than 48 or 57, 57 without CAP.FS5LP,
    // SRE without ECAP.SRS, EAFE without ECAP.EAFS.
    nested: get('ecap', 'NEST') === 1 ? {
      dataType: IOMMU_HWPT_DATA_VTD_S1,
      checkAttach({ flags, addrWidth }) {
        if (addrWidth !== 48 && addrWidth !== 57) throw new SysError('EINVAL');
        if (addrWidth === 57 && get('cap', 'FS5LP') !== 1) throw new SysError('EINVAL');
        if ((flags & BigInt(IOMMU_VTD_S1_SRE)) !== 0n && get('ecap', 'SRS') !== 1) throw new SysError('EINVAL');
        if ((flags & BigInt(IOMMU_VTD_S1_EAFE)) !== 0n && get('ecap', 'EAFS') !== 1) throw new SysError('EINVAL');
      },
    } : undefined,
    /**
     * intel_iommu_hw_info (drivers/iommu/intel/iommu.c): DEFAULT or
     * INTEL_VTD, else EOPNOTSUPP; flags, cap_reg and ecap_reg. Linux sets
     * IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 on every unit, whatever the CPU,
     * and refuses read-only mappings in nest-parent domains to match; so
     * does this unit (the nesting issue must keep that rule).
     */
    hwInfo(requested: number): HwInfoData {
      if (requested !== IOMMU_HW_INFO_TYPE_DEFAULT && requested !== IOMMU_HW_INFO_TYPE_INTEL_VTD) throw new SysError('EOPNOTSUPP');
      const data = iommu_hw_info_vtd.encode({ flags: IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, cap_reg: cap, ecap_reg: ecap });
      return { type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data };
    },
  };
}
