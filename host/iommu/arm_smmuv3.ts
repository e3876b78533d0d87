// The emulated Arm SMMUv3 unit (drivers/iommu/arm/arm-smmu-v3/ is its Linux
// driver).
//
// Its identification registers (Arm IHI 0070, SMMU architecture v3: 6.3.1
// SMMU_IDR0 ... 6.3.6 SMMU_IDR5, SMMU_IIDR, SMMU_AIDR) are built from the
// field table below, one row per field, each with the value this unit reports
// and why. The unit is what the engine really does today: stage-2 paging
// domains in FMT_ARM_S2 (VMSAv8-64 stage 2, 4, 16 or 64 KiB granule: the
// kernel's page size, as io-pgtable-arm picks it; assembly/pte.ts),
// and stage 1 for guests only, through the ARM_SMMUV3 vIOMMU (arm_vsmmu.ts):
// nested domains from a vSTE and its CD. There is no event queue register
// interface (events reach a VMM through a vEVENTQ), no ATS and no PRI path
// for this unit yet, so their bits are 0. A field whose register
// interface (command queue, stream table) a later issue emulates is marked
// `planned`. Reserved and IMPLEMENTATION DEFINED bits stay 0.
//
// What later issues must turn on, and what comes with it:
//   - dirty tracking: IDR0.HTTU = 0b10 (access + dirty) with a DBM-driven
//     dirty bit in the engine's ARM format (pte.ts dirtyBit() is 0 for
//     FMT_ARM_S2) -- and Linux offers dirty tracking on stage-1 paging
//     domains only, which this unit does not make;
//   - event queue: IDR0.MSI (and the queue registers behind IDR1.EVENTQS);
//   - ATS: IDR0.ATS (with CR0.ATSCHK and CMD_ATC_INV), then PRI: IDR0.PRI and
//     IDR1.PRIQS.
//
// Cross-check: arm_smmu_device_hw_probe() (arm-smmu-v3.c) and the IDR*_
// masks of arm-smmu-v3.h read the same positions.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_hw_info_arm_smmuv3, IOMMU_HW_INFO_TYPE_ARM_SMMUV3, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from '../uapi/iommufd.js';
import { packRegisters, fieldOf, type RegField } from './regfields.js';
import type { HwInfoData, IommuDriver, IommuUnitCaps, ReservedRegion } from './driver.js';

export type SmmuReg = 'idr0' | 'idr1' | 'idr2' | 'idr3' | 'idr4' | 'idr5' | 'iidr' | 'aidr';

/** One field of an SMMU identification register (all 32 bits wide). */
export type SmmuRegField = RegField<SmmuReg>;

/** SubstreamID (PASID) width of this unit (IDR1.SSIDSIZE). */
export const SMMU_SSID_BITS = 20;
/** StreamID width (IDR1.SIDSIZE): a PCI requester id. */
export const SMMU_SID_BITS = 16;
/**
 * Input address width of a stage-2 paging domain. Linux: smmu->ias =
 * max(ias, oas) (40 only with AArch32 TTF), and io-pgtable-arm clamps ias and
 * oas to 48 bits for a 4 KiB granule (arm_lpae_restrict_pgsizes).
 */
export const SMMU_S2_INPUT_BITS = 48;
/** Output address size (IDR5.OAS = 0b101): 48 bits. */
const SMMU_OUTPUT_BITS = 48;
/** MSI_IOVA_BASE / MSI_IOVA_LENGTH of arm-smmu-v3.h: the software-managed MSI window. */
export const SMMU_MSI_IOVA_BASE = 0x800_0000n;
export const SMMU_MSI_IOVA_LENGTH = 0x10_0000n;

const IDR0 = '6.3.1 SMMU_IDR0';
const IDR1 = '6.3.2 SMMU_IDR1';
const IDR3 = '6.3.4 SMMU_IDR3';
const IDR5 = '6.3.6 SMMU_IDR5';
const IIDR = 'SMMU_IIDR';
const AIDR = 'SMMU_AIDR';

/** The field table of this unit. */
export function smmuRegisterFields(): readonly SmmuRegField[] {
  return [
    // ---- SMMU_IDR0 (6.3.1) ------------------------------------------------
    { reg: 'idr0', name: 'S2P', lsb: 0, width: 1, value: 1, spec: IDR0,
      why: 'stage-2 translation: every paging domain of this unit is an FMT_ARM_S2 table (VMSAv8-64 stage 2, of the kernel page size\'s granule)' },
    { reg: 'idr0', name: 'S1P', lsb: 1, width: 1, value: 1, spec: IDR0,
      why: 'stage 1 for guests: a vSTE\'s CD and its VMSAv8-64 stage-1 table, walked through stage 2 (S1P && S2P = Linux ARM_SMMU_FEAT_NESTING, so NEST_PARENT and the ARM_SMMUV3 vIOMMU)' },
    { reg: 'idr0', name: 'TTF', lsb: 2, width: 2, value: 0b10, spec: IDR0,
      why: 'AArch64 translation tables only (no AArch32 LPAE)' },
    { reg: 'idr0', name: 'COHACC', lsb: 4, width: 1, value: 1, spec: IDR0,
      why: 'table walks and DMA read and write the one linear memory: coherent with the CPU, no cache maintenance' },
    { reg: 'idr0', name: 'BTM', lsb: 5, width: 1, value: 0, spec: IDR0,
      why: 'no broadcast TLB maintenance: nothing snoops CPU TLBIs; the host invalidates the IOTLB itself' },
    { reg: 'idr0', name: 'HTTU', lsb: 6, width: 2, value: 0b00, spec: IDR0,
      why: 'no hardware access/dirty update for FMT_ARM_S2: the engine has no dirty bit in that format (pte.ts dirtyBit() = 0) and leaves AF as the map set it' },
    { reg: 'idr0', name: 'DORMHINT', lsb: 8, width: 1, value: 0, spec: IDR0, why: 'no dormant hint (SMMU_STATUSR)' },
    { reg: 'idr0', name: 'HYP', lsb: 9, width: 1, value: 0, spec: IDR0, why: 'no EL2 stage-1 contexts (no stage 1)' },
    { reg: 'idr0', name: 'ATS', lsb: 10, width: 1, value: 0, spec: IDR0,
      why: 'no ATS path for this unit yet (translation requests, CMD_ATC_INV): functions behind it get IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED' },
    { reg: 'idr0', name: 'NS1ATS', lsb: 11, width: 1, value: 0, spec: IDR0, why: 'needs ATS and stage 1' },
    { reg: 'idr0', name: 'ASID16', lsb: 12, width: 1, value: 1, spec: IDR0, why: 'CD.ASID is kept whole (16 bits) and TLBI by ASID compares all of it' },
    { reg: 'idr0', name: 'MSI', lsb: 13, width: 1, value: 0, spec: IDR0,
      why: 'no event, PRI or GERROR interrupts to signal: the event queue is not emulated yet' },
    { reg: 'idr0', name: 'SEV', lsb: 14, width: 1, value: 0, spec: IDR0, why: 'no WFE wake-up events' },
    { reg: 'idr0', name: 'ATOS', lsb: 15, width: 1, value: 0, spec: IDR0, why: 'no address translation operations registers' },
    { reg: 'idr0', name: 'PRI', lsb: 16, width: 1, value: 0, spec: IDR0, why: 'no PRI queue (and PRI needs ATS)' },
    { reg: 'idr0', name: 'VMW', lsb: 17, width: 1, value: 0, spec: IDR0, why: 'no VMID wildcard matching: no invalidation commands yet' },
    { reg: 'idr0', name: 'VMID16', lsb: 18, width: 1, value: 1, spec: IDR0,
      why: 'the VMID of a stage-2 domain is its engine domain id, and the IOTLB tags entries with 16 bits of it (TLBE word 2: did | generation << 16)' },
    { reg: 'idr0', name: 'CD2L', lsb: 19, width: 1, value: 1, spec: IDR0, why: 'two-level CD tables: the L1 descriptor of SubstreamID 0 is followed (arm_vsmmu.ts)' },
    { reg: 'idr0', name: 'VATOS', lsb: 20, width: 1, value: 0, spec: IDR0, why: 'no VATOS page' },
    { reg: 'idr0', name: 'TTENDIAN', lsb: 21, width: 2, value: 0b10, spec: IDR0,
      why: 'little-endian tables only: the walker reads u64 entries with little-endian loads' },
    { reg: 'idr0', name: 'STALL_MODEL', lsb: 24, width: 2, value: 0b01, spec: IDR0,
      why: 'terminate only: a refused DMA ends at once (DmaFault); nothing stalls or resumes' },
    { reg: 'idr0', name: 'TERM_MODEL', lsb: 26, width: 1, value: 1, spec: IDR0,
      why: 'a terminated transaction is always aborted, never RAZ/WI: no byte of a refused DMA moves' },
    { reg: 'idr0', name: 'ST_LEVEL', lsb: 27, width: 2, value: 0b01, spec: IDR0,
      why: '2-level stream tables, as a 16-bit SID space calls for (Linux picks 2-level when SIDSIZE > STRTAB_SPLIT)',
      planned: 'the stream table of the register-file issue (today the engine context table stands for it)' },

    // ---- SMMU_IDR1 (6.3.2) ------------------------------------------------
    { reg: 'idr1', name: 'SIDSIZE', lsb: 0, width: 6, value: SMMU_SID_BITS, spec: IDR1,
      why: 'StreamID = PCI requester id (bus, device, function): 16 bits' },
    { reg: 'idr1', name: 'SSIDSIZE', lsb: 6, width: 5, value: SMMU_SSID_BITS, spec: IDR1,
      why: '20-bit SubstreamIDs, the PCIe PASID width: engine contexts are per (device, PASID); Linux sets max_pasids = 1 << SSIDSIZE' },
    { reg: 'idr1', name: 'PRIQS', lsb: 11, width: 5, value: 0, spec: IDR1, why: 'no PRI queue' },
    { reg: 'idr1', name: 'EVENTQS', lsb: 16, width: 5, value: 19, spec: IDR1,
      why: 'the architectural maximum (2^19 entries), as QEMU reports: the queue lives in guest memory',
      planned: 'the event queue (and IDR0.MSI) of the event-queue issue' },
    { reg: 'idr1', name: 'CMDQS', lsb: 21, width: 5, value: 19, spec: IDR1,
      why: 'the architectural maximum (2^19 entries); Linux refuses CMDQS <= log2(CMDQ_BATCH_ENTRIES)',
      planned: 'the command queue of the register-file issue' },
    { reg: 'idr1', name: 'ATTR_PERMS_OVR', lsb: 26, width: 1, value: 0, spec: IDR1, why: 'no incoming permission overrides (STE.PRIVCFG/INSTCFG ignored)' },
    { reg: 'idr1', name: 'ATTR_TYPES_OVR', lsb: 27, width: 1, value: 0, spec: IDR1, why: 'memory types are not modelled' },
    { reg: 'idr1', name: 'REL', lsb: 28, width: 1, value: 0, spec: IDR1, why: 'base addresses are absolute' },
    { reg: 'idr1', name: 'QUEUES_PRESET', lsb: 29, width: 1, value: 0, spec: IDR1, why: 'software places the queues (Linux refuses presets)' },
    { reg: 'idr1', name: 'TABLES_PRESET', lsb: 30, width: 1, value: 0, spec: IDR1, why: 'software places the stream table (Linux refuses presets)' },
    { reg: 'idr1', name: 'ECMDQ', lsb: 31, width: 1, value: 0, spec: IDR1, why: 'no enhanced command queues' },

    // ---- SMMU_IDR2 (6.3.3): BA_VATOS [9:0] = 0, no VATOS page (no rows). ---
    // ---- SMMU_IDR3 (6.3.4) ------------------------------------------------
    { reg: 'idr3', name: 'HAD', lsb: 2, width: 1, value: 0, spec: IDR3, why: 'hierarchical attribute disables are a stage-1 feature' },
    { reg: 'idr3', name: 'PBHA', lsb: 3, width: 1, value: 0, spec: IDR3, why: 'no page-based hardware attributes' },
    { reg: 'idr3', name: 'XNX', lsb: 4, width: 1, value: 0, spec: IDR3, why: 'stage-2 execute-never is not interpreted (DMA has no instruction fetch here)' },
    { reg: 'idr3', name: 'PPS', lsb: 5, width: 1, value: 0, spec: IDR3, why: 'no PRI' },
    { reg: 'idr3', name: 'MPAM', lsb: 7, width: 1, value: 0, spec: IDR3, why: 'no MPAM' },
    { reg: 'idr3', name: 'FWB', lsb: 8, width: 1, value: 0, spec: IDR3, why: 'memory attributes are not modelled, so nothing to force' },
    { reg: 'idr3', name: 'STT', lsb: 9, width: 1, value: 0, spec: IDR3, why: 'no small translation tables' },
    { reg: 'idr3', name: 'RIL', lsb: 10, width: 1, value: 1, spec: IDR3,
      why: 'the engine invalidates an IOVA range of a domain exactly (iotlb_flush_range), as range TLBI asks',
      planned: 'TLBI commands with range and TTL, with the command queue' },
    { reg: 'idr3', name: 'BBML', lsb: 11, width: 2, value: 0b10, spec: IDR3,
      why: 'level 2: changing a block to a table (the engine splits leaves in place on unmap) never raises a TLB conflict, the IOTLB invalidates the range first' },
    { reg: 'idr3', name: 'E0PD', lsb: 13, width: 1, value: 0, spec: IDR3, why: 'stage-1 feature' },
    { reg: 'idr3', name: 'PTWNNC', lsb: 14, width: 1, value: 0, spec: IDR3, why: 'walks are coherent (COHACC)' },
    { reg: 'idr3', name: 'DPT', lsb: 15, width: 1, value: 0, spec: IDR3, why: 'no device permission table' },

    // ---- SMMU_IDR4: IMPLEMENTATION DEFINED, 0 (no rows). --------------------
    // ---- SMMU_IDR5 (6.3.6) ------------------------------------------------
    { reg: 'idr5', name: 'OAS', lsb: 0, width: 3, value: 0b101, spec: IDR5,
      why: '48 bits. A physical address is segment << 32 | offset with SEG_MAX = 256 segments, so every PA is below 2^40; the FMT_ARM_S2 entry can carry OA[51:48] (LPA2 layout), but 52 bits with only the 4 KiB granule needs IDR5.DS, which this table does not set. Linux clamps a 4 KiB-granule table to 48 bits anyway' },
    { reg: 'idr5', name: 'GRAN4K', lsb: 4, width: 1, value: 1, spec: IDR5,
      why: '4 KiB granule: 4K pages, 2M and 1G blocks (Linux pgsize_bitmap SZ_4K | SZ_2M | SZ_1G)' },
    { reg: 'idr5', name: 'GRAN16K', lsb: 5, width: 1, value: 1, spec: IDR5,
      why: '16 KiB granule: 16K pages and 32M blocks at stage 2 (engine pt_create_arm_s2; no 64G blocks without DS) and at stage 1 (nested_arm.ts); Linux adds SZ_16K | SZ_32M to pgsize_bitmap' },
    { reg: 'idr5', name: 'GRAN64K', lsb: 6, width: 1, value: 1, spec: IDR5,
      why: '64 KiB granule: 64K pages and 512M blocks at stage 2 (no 4T blocks without FEAT_LPA, which OAS 48 does not give) and at stage 1; Linux adds SZ_64K | SZ_512M. A domain uses the granule of the kernel\'s PAGE_SIZE (arm_lpae_restrict_pgsizes)' },
    { reg: 'idr5', name: 'VAX', lsb: 10, width: 2, value: 0b00, spec: IDR5, why: '48-bit VAs (stage 1 only; 52-bit VAs need the 64 KiB granule)' },
    { reg: 'idr5', name: 'STALL_MAX', lsb: 16, width: 16, value: 0, spec: IDR5, why: 'no stalls (STALL_MODEL terminate only)' },

    // ---- SMMU_IIDR ----------------------------------------------------------
    { reg: 'iidr', name: 'Implementer', lsb: 0, width: 12, value: 0, spec: IIDR,
      why: 'no JEP106 code: this is nobody\'s silicon. Above all not Arm\'s 0x43B, whose MMU-600/MMU-700 product ids make Linux (arm_smmu_device_iidr_probe) apply errata: clear SEV, BTM or NESTING' },
    { reg: 'iidr', name: 'Revision', lsb: 12, width: 4, value: 0, spec: IIDR, why: 'first revision' },
    { reg: 'iidr', name: 'Variant', lsb: 16, width: 4, value: 0, spec: IIDR, why: 'first variant' },
    { reg: 'iidr', name: 'ProductID', lsb: 20, width: 12, value: 0, spec: IIDR, why: 'no product id without an implementer' },

    // ---- SMMU_AIDR ----------------------------------------------------------
    { reg: 'aidr', name: 'ArchMinorRev', lsb: 0, width: 4, value: 2, spec: AIDR,
      why: 'SMMUv3.2: the revision of the range invalidation (IDR3.RIL) and BBML this unit reports' },
    { reg: 'aidr', name: 'ArchMajorRev', lsb: 4, width: 4, value: 0, spec: AIDR, why: '0 = SMMUv3' },
  ];
}

/** The register values, IDR0..IDR5 then IIDR and AIDR. */
export interface SmmuRegisters {
  readonly idr: readonly number[];
  readonly iidr: number;
  readonly aidr: number;
}

const REGS: readonly SmmuReg[] = ['idr0', 'idr1', 'idr2', 'idr3', 'idr4', 'idr5', 'iidr', 'aidr'];

/** The 32-bit registers from a field table. */
export function smmuRegisters(fields: readonly SmmuRegField[]): SmmuRegisters {
  const r = packRegisters('SMMU', REGS, 32, fields);
  return { idr: REGS.slice(0, 6).map((n) => Number(r[n])), iidr: Number(r.iidr), aidr: Number(r.aidr) };
}

/** A field's value read back from the registers. */
export function smmuField(fields: readonly SmmuRegField[], regs: SmmuRegisters, reg: SmmuReg, name: string): number {
  const i = REGS.indexOf(reg);
  const v = i < 6 ? regs.idr[i] : i === 6 ? regs.iidr : regs.aidr;
  return fieldOf('SMMU', fields, reg, name, BigInt(v));
}

/**
 * Arm SMMUv3, stage 2 only: FMT_ARM_S2 tables for a 48-bit input range, of
 * the granule of the kernel's `pageSize` (io-pgtable-arm's
 * arm_lpae_restrict_pgsizes takes PAGE_SIZE when the unit has it, and every
 * granule is in IDR5): 4 KiB (4 levels, 4K pages, 2M and 1G blocks), 16 KiB
 * (2 tables concatenated at level 1, R_DXBSH: 16K pages, 32M blocks) or 64
 * KiB (3 levels from a 64-entry level-1 table: 64K pages, 512M blocks);
 * and the software MSI window of arm_smmu_get_resv_regions() reserved.
 */
export function armSmmuV3(engine: Engine, pageSize = 4096): IommuDriver {
  const L = engine.layout;
  const fields = smmuRegisterFields();
  const regs = smmuRegisters(fields);
  const get = (reg: SmmuReg, name: string) => smmuField(fields, regs, reg, name);
  // As arm_smmu_device_hw_probe() and arm_smmu_capable() read them:
  // IOMMU_CAP_DIRTY_TRACKING = arm_smmu_dbm_capable() = FEAT_HD && FEAT_COHERENCY,
  // FEAT_HD from IDR0.HTTU == 0b10 (ACCESS_DIRTY); max_pasids = 1 << IDR1.SSIDSIZE;
  // the unit's half of arm_smmu_ats_supported() = FEAT_ATS from IDR0.ATS.
  const caps: IommuUnitCaps = Object.freeze({
    dirtyTracking: get('idr0', 'HTTU') === 0b10 && get('idr0', 'COHACC') === 1,
    pasidBits: get('idr1', 'SSIDSIZE'),
    ats: get('idr0', 'ATS') === 1,
    pri: get('idr0', 'PRI') === 1,
    priNeedsAts: false,
  });
  const msi: ReservedRegion = { start: SMMU_MSI_IOVA_BASE, last: SMMU_MSI_IOVA_BASE + SMMU_MSI_IOVA_LENGTH - 1n, type: 'sw_msi' };
  return {
    kind: 'arm-smmuv3',
    format: L.FMT_ARM_S2,
    // 48-bit IPA, 4 KiB granule: 4 levels (ARM levels 0..3), no concatenation.
    levels: 4,
    leafSizes: L.SZ_4K | L.SZ_2M | L.SZ_1G,
    // 16 / 64 KiB: the engine shapes the table from the IPA and output
    // sizes (start level, concatenation) as arm_64_lpae_alloc_pgtable_s2;
    // the granule's page and its level-2 block.
    createTable: pageSize === 4096 ? undefined
      : (e: Engine) => e.ptCreateArmS2(pageSize, SMMU_S2_INPUT_BITS, SMMU_OUTPUT_BITS, L.SZ_4K | L.SZ_2M),
    addressWidth: SMMU_S2_INPUT_BITS,
    pgsizeMin: BigInt(pageSize),
    /**
     * arm_smmu_get_resv_regions(): MSI_IOVA_BASE, MSI_IOVA_LENGTH as
     * IOMMU_RESV_SW_MSI, then iommu_dma_get_resv_regions() (IORT RMRs, ITS
     * doorbells, DT reserved-memory), of which this platform has none.
     */
    resvRegions: () => [{ ...msi }],
    caps,
    // arm_smmu_domain_alloc_paging_flags: NEST_PARENT (FEAT_NESTING); not
    // DIRTY_TRACKING (no HTTU). Linux would make a flagless paging domain
    // stage 1 and take PASID; here every paging domain is a stage-2 table,
    // so PASID is refused (EOPNOTSUPP).
    pagingFlags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    // arm_smmu_get_viommu_size: FEAT_NESTING, and CANWBS (COHACC, a coherent master) or S2FWB.
    viommuTypes: [IOMMU_VIOMMU_TYPE_ARM_SMMUV3],
    /**
     * arm_smmu_hw_info (arm-smmu-v3-iommufd.c): DEFAULT or ARM_SMMUV3 gives
     * the raw IDR0..IDR5, IIDR and AIDR, unmasked (the uapi header lists the
     * fields a VMM may use); flags and __reserved are 0. Another type goes to
     * impl_ops->hw_info (Tegra241 CMDQV), which this unit has not: EOPNOTSUPP.
     */
    hwInfo(requested: number): HwInfoData {
      if (requested !== IOMMU_HW_INFO_TYPE_DEFAULT && requested !== IOMMU_HW_INFO_TYPE_ARM_SMMUV3) throw new SysError('EOPNOTSUPP');
      const data = iommu_hw_info_arm_smmuv3.encode({ flags: 0, idr: regs.idr, iidr: regs.iidr, aidr: regs.aidr });
      return { type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3, data };
    },
  };
}
