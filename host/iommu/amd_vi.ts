// The emulated AMD IOMMU unit, AMD-Vi (drivers/iommu/amd/ is its Linux
// driver).
//
// Its Extended Feature Registers (AMD I/O Virtualization Technology (IOMMU)
// Specification, pub. 48882: 3.4.12 "MMIO Offset 0030h IOMMU Extended
// Feature Register" and "MMIO Offset 01A0h IOMMU Extended Feature 2
// Register") are built from the field table below, one row per field, each
// with the value this unit reports and why. The unit is what the engine
// really does today: host (v1) paging domains in FMT_AMD_V1 (the I/O page
// table of spec 2.2.3, assembly/pte.ts), with hardware access/dirty bits.
// There is no guest (v2 / GCR3) table walker, so no PASID, no nesting and no
// vIOMMU; no command buffer, event log or PPR log; no ATS. Their bits are 0.
// A field that the engine can do but whose register interface (command
// buffer) a later issue emulates is marked `planned`. Reserved bits, and the
// EFR bits 53..62 this table does not name, stay 0.
//
// What later issues must turn on, and what comes with it:
//   - nesting / vIOMMU / PASID: EFR.GTSup (guest translation: GCR3 tables,
//     v2 page tables), EFR.GIoSup, EFR2.GCR3TRPMode (Linux's
//     is_nest_parent_supported() needs all three), EFR.PASmax (Linux
//     max_pasids = 2^(PASmax + 1) - 1, at most 16 bits), EFR.GATS / GLXSup;
//   - page requests: EFR.PPRSup (the PPR log);
//   - ATS: not an EFR bit -- IotlbSup is bit 24 of the IOMMU Capability
//     Header in PCI config space (Linux amd_iommu_iotlb_sup).
//
// Cross-check: the FEATURE_* masks of drivers/iommu/amd/amd_iommu_types.h
// read the same positions.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import { iommu_hw_info_amd, IOMMU_HW_INFO_TYPE_AMD, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HWPT_ALLOC_DIRTY_TRACKING } from '../uapi/iommufd.js';
import type { HwInfoData, IommuDriver, IommuUnitCaps, ReservedRegion } from './driver.js';
import { packRegisters, fieldOf, type RegField } from './regfields.js';

/** One field of EFR (MMIO 0030h) or EFR2 (MMIO 01A0h). */
export type AmdRegField = RegField<'efr' | 'efr2'>;

/** MSI_RANGE_START / MSI_RANGE_END (amd_iommu_types.h): the x86 interrupt window. */
export const AMD_MSI_RANGE_START = 0xfee0_0000n;
export const AMD_MSI_RANGE_END = 0xfeef_ffffn;
/** HT_RANGE_START / HT_RANGE_END: the HyperTransport reserved system range. */
export const AMD_HT_RANGE_START = 0xfd_0000_0000n;
export const AMD_HT_RANGE_END = 0xff_ffff_ffffn;

const EFR = '3.4.12 MMIO 0030h Extended Feature Register';
const EFR2 = 'MMIO 01A0h Extended Feature 2 Register';

/** The field table of this unit. */
export function amdRegisterFields(): readonly AmdRegField[] {
  return [
    // ---- EFR (MMIO 0030h) ---------------------------------------------------
    { reg: 'efr', name: 'PreFSup', lsb: 0, width: 1, value: 0, spec: EFR, why: 'no PREFETCH_IOMMU_PAGES: the IOTLB fills on use only' },
    { reg: 'efr', name: 'PPRSup', lsb: 1, width: 1, value: 0, spec: EFR, why: 'no peripheral page request log for this unit yet' },
    { reg: 'efr', name: 'XTSup', lsb: 2, width: 1, value: 0, spec: EFR, why: 'no interrupt remapping, so no x2APIC mode' },
    { reg: 'efr', name: 'NXSup', lsb: 3, width: 1, value: 0, spec: EFR, why: 'no execute permission: DMA never fetches instructions here' },
    { reg: 'efr', name: 'GTSup', lsb: 4, width: 1, value: 0, spec: EFR,
      why: 'no guest translation: the engine has no GCR3 / v2 table walker (so no PASID and no nest parent in Linux)' },
    { reg: 'efr', name: 'IASup', lsb: 6, width: 1, value: 1, spec: EFR,
      why: 'the engine drops every cached translation at once (global IOTLB invalidation), as INVALIDATE_IOMMU_ALL asks',
      planned: 'INVALIDATE_IOMMU_ALL in the command buffer of the register-file issue' },
    { reg: 'efr', name: 'GASup', lsb: 7, width: 1, value: 0, spec: EFR, why: 'no guest virtual APIC (no interrupt remapping)' },
    { reg: 'efr', name: 'HESup', lsb: 8, width: 1, value: 0, spec: EFR, why: 'no hardware error registers' },
    { reg: 'efr', name: 'PCSup', lsb: 9, width: 1, value: 0, spec: EFR, why: 'no performance counters' },
    { reg: 'efr', name: 'HATS', lsb: 10, width: 2, value: 0b00, spec: EFR,
      why: 'host address translation size: 4 levels (Linux amd_iommu_hpt_level = HATS + 4), a 48-bit IOVA; 0b11 would disable host translation' },
    { reg: 'efr', name: 'GATS', lsb: 12, width: 2, value: 0b00, spec: EFR, why: 'no guest translation (GTSup = 0)' },
    { reg: 'efr', name: 'GLXSup', lsb: 14, width: 2, value: 0b00, spec: EFR, why: 'no GCR3 tables (GTSup = 0)' },
    { reg: 'efr', name: 'SmiFSup', lsb: 16, width: 2, value: 0b00, spec: EFR, why: 'no SMI filter' },
    { reg: 'efr', name: 'SmiFRC', lsb: 18, width: 3, value: 0, spec: EFR, why: 'no SMI filter registers' },
    { reg: 'efr', name: 'GAMSup', lsb: 21, width: 3, value: 0, spec: EFR, why: 'no guest APIC modes' },
    { reg: 'efr', name: 'DualPprLogSup', lsb: 24, width: 2, value: 0, spec: EFR, why: 'no PPR log' },
    { reg: 'efr', name: 'DualEventLogSup', lsb: 28, width: 2, value: 0, spec: EFR, why: 'one event log (not emulated yet)' },
    { reg: 'efr', name: 'PASmax', lsb: 32, width: 5, value: 0, spec: EFR,
      why: 'PASIDs go through GCR3 tables, which the engine cannot walk: Linux reads PASmax only when GTSup, so max_pasids stays 0' },
    { reg: 'efr', name: 'USSup', lsb: 37, width: 1, value: 0, spec: EFR, why: 'user/supervisor pages are a guest-table feature' },
    { reg: 'efr', name: 'DevTblSegSup', lsb: 38, width: 2, value: 0, spec: EFR, why: 'one device table segment' },
    { reg: 'efr', name: 'PprOvrflwEarlySup', lsb: 40, width: 1, value: 0, spec: EFR, why: 'no PPR log' },
    { reg: 'efr', name: 'PPRAutoRspSup', lsb: 41, width: 1, value: 0, spec: EFR, why: 'no PPR log' },
    { reg: 'efr', name: 'MarcSup', lsb: 42, width: 2, value: 0, spec: EFR, why: 'no memory access routing and control' },
    { reg: 'efr', name: 'BlkStopMrkSup', lsb: 44, width: 1, value: 0, spec: EFR, why: 'no block-stop-marker messages' },
    { reg: 'efr', name: 'PerfOptSup', lsb: 45, width: 1, value: 0, spec: EFR, why: 'no performance optimisation control' },
    { reg: 'efr', name: 'MsiCapMmioSup', lsb: 46, width: 1, value: 0, spec: EFR, why: 'no MSI capability registers in MMIO' },
    { reg: 'efr', name: 'GIoSup', lsb: 48, width: 1, value: 0, spec: EFR, why: 'no guest I/O protection (GTSup = 0)' },
    { reg: 'efr', name: 'HASup', lsb: 49, width: 1, value: 1, spec: `${EFR}; 2.2.3`,
      why: 'host access bit: with DTE.HAD on (a domain tracking dirty pages), a translation sets HA (bit 5) in the leaf' },
    { reg: 'efr', name: 'EPHSup', lsb: 50, width: 1, value: 0, spec: EFR, why: 'no enhanced PPR handling' },
    { reg: 'efr', name: 'AttrFWSup', lsb: 51, width: 1, value: 0, spec: EFR, why: 'memory attributes are not forwarded' },
    { reg: 'efr', name: 'HDSup', lsb: 52, width: 1, value: 1, spec: `${EFR}; 2.2.3`,
      why: 'host dirty bit: a DMA write through a domain tracking dirty pages sets HD (bit 6) in the leaf (IOMMU_HW_CAP_DIRTY_TRACKING)' },
    { reg: 'efr', name: 'SNPSup', lsb: 63, width: 1, value: 0, spec: EFR, why: 'no SEV-SNP' },

    // ---- EFR2 (MMIO 01A0h) --------------------------------------------------
    { reg: 'efr2', name: 'SEVSNPIOSup', lsb: 1, width: 1, value: 0, spec: EFR2, why: 'no SEV-SNP I/O' },
    { reg: 'efr2', name: 'GCR3TRPMode', lsb: 3, width: 1, value: 0, spec: EFR2, why: 'no GCR3 tables (GTSup = 0)' },
    { reg: 'efr2', name: 'SNPAVICSup', lsb: 5, width: 3, value: 0, spec: EFR2, why: 'no SEV-SNP, no AVIC' },
    { reg: 'efr2', name: 'NumIntRemapSup', lsb: 8, width: 2, value: 0, spec: EFR2, why: 'no interrupt remapping' },
    { reg: 'efr2', name: 'HTRangeIgnore', lsb: 11, width: 1, value: 0, spec: EFR2,
      why: 'the unit models the x86 platform where 0xFD_0000_0000-0xFF_FFFF_FFFF is HyperTransport system space that DMA must not reach, as 0xFEE0_0000 is the interrupt window: both are reserved regions, kept out of every IOAS, so the engine never maps them (Linux: reserved unless HTRangeIgnore)' },
  ];
}

/** EFR and EFR2 from a field table. */
export function amdRegisters(fields: readonly AmdRegField[]): { efr: bigint; efr2: bigint } {
  return packRegisters('AMD', ['efr', 'efr2'], 64, fields);
}

/** A field's value read back from a register value. */
export function amdField(fields: readonly AmdRegField[], reg: 'efr' | 'efr2', name: string, value: bigint): number {
  return fieldOf('AMD', fields, reg, name, value);
}

/**
 * AMD-Vi with 4-level v1 host page tables (48-bit IOVA, EFR.HATS = 0),
 * 4 KiB / 2 MiB / 1 GiB leaves and hardware dirty tracking (EFR.HDSup).
 */
export function amdVi(engine: Engine): IommuDriver {
  const L = engine.layout;
  const fields = amdRegisterFields();
  const { efr, efr2 } = amdRegisters(fields);
  const get = (reg: 'efr' | 'efr2', name: string) => amdField(fields, reg, name, reg === 'efr' ? efr : efr2);
  const hats = get('efr', 'HATS');
  // As Linux reads them (init.c, iommu.c, amd_iommu.h):
  // amd_iommu_hatdis = HATS == 0b11; amd_iommu_hpt_level = HATS + 4;
  // IOMMU_CAP_DIRTY_TRACKING = amd_iommu_hd_support() = !hatdis && HDSup;
  // max_pasids = 2^(PASmax + 1) - 1 only when GTSup (else 0), so its ilog2
  // is PASmax; ATS (amd_iommu_iotlb_sup) is the PCI capability header's
  // IotlbSup, which this unit does not set.
  if (hats === 0b11) throw new RangeError('AMD EFR.HATS = 0b11 disables host translation');
  const levels = hats + 4;
  const caps: IommuUnitCaps = Object.freeze({
    dirtyTracking: get('efr', 'HDSup') === 1,
    pasidBits: get('efr', 'GTSup') === 1 ? get('efr', 'PASmax') : 0,
    ats: false,
    pri: get('efr', 'PPRSup') === 1,
    priNeedsAts: false,
  });
  const htIgnored = get('efr2', 'HTRangeIgnore') === 1;
  return {
    kind: 'amd-vi',
    format: L.FMT_AMD_V1,
    levels,
    // The v1 format can also encode other power-of-two sizes (Next Level 7
    // with the size in the address bits); the engine writes 4K, 2M and 1G only.
    leafSizes: L.SZ_4K | L.SZ_2M | L.SZ_1G,
    // amd_iommu_domain_alloc_paging_v1 (generic page table): hw_max_vasz_lg2 =
    // min(64, (amd_iommu_hpt_level - 1) * 9 + 21) = 48 for 4 levels.
    addressWidth: Math.min(64, (levels - 1) * 9 + 21),
    pgsizeMin: 4096n,
    /**
     * amd_iommu_get_resv_regions(): the IVRS unity-map and exclusion ranges
     * of the device (none on this platform), MSI_RANGE_START..MSI_RANGE_END
     * as IOMMU_RESV_MSI, then, unless amd_iommu_ht_range_ignore() (EFR2
     * HTRangeIgnore), HT_RANGE_START..HT_RANGE_END as IOMMU_RESV_RESERVED.
     */
    resvRegions(): ReservedRegion[] {
      const r: ReservedRegion[] = [{ start: AMD_MSI_RANGE_START, last: AMD_MSI_RANGE_END, type: 'msi' }];
      if (!htIgnored) r.push({ start: AMD_HT_RANGE_START, last: AMD_HT_RANGE_END, type: 'reserved' });
      return r;
    },
    caps,
    // amd_iommu_domain_alloc_paging_flags: DIRTY_TRACKING with HD; PASID and
    // NEST_PARENT need the v2 / guest tables (GTSup), which this unit lacks.
    pagingFlags: caps.dirtyTracking ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0,
    /**
     * amd_iommufd_hw_info (drivers/iommu/amd/iommufd.c, behind
     * CONFIG_AMD_IOMMU_IOMMUFD): newest kernels only -- commit 7d8b06ecc45b
     * "iommu/amd: Add support for hw_info for iommu capability query", after
     * v6.18, with IOMMU_HW_INFO_TYPE_AMD and struct iommu_hw_info_amd. Before
     * it the AMD driver had no hw_info op and iommufd reported type NONE.
     * DEFAULT or AMD, else EOPNOTSUPP; the raw amd_iommu_efr and
     * amd_iommu_efr2, unmasked.
     */
    hwInfo(requested: number): HwInfoData {
      if (requested !== IOMMU_HW_INFO_TYPE_DEFAULT && requested !== IOMMU_HW_INFO_TYPE_AMD) throw new SysError('EOPNOTSUPP');
      return { type: IOMMU_HW_INFO_TYPE_AMD, data: iommu_hw_info_amd.encode({ efr, efr2 }) };
    },
  };
}
