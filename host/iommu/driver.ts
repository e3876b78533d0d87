// What iommufd needs to know of an emulated physical IOMMU, as Linux's IOMMU
// drivers describe themselves to it: the paging domain's format, aperture and
// page sizes, the reserved regions of a device behind the unit, and what
// IOMMU_GET_HW_INFO reports (ops->hw_info, ops->capable, max_pasids).

import type { Engine } from '../engine/engine.js';

export type IommuKind = 'intel-vtd' | 'arm-smmuv3' | 'amd-vi' | 'mock';

/** iommu_resv_type: an MSI doorbell window (hardware or software-managed), a direct-mapped or a plain reserved range. */
export interface ReservedRegion { start: bigint; last: bigint; type: 'msi' | 'sw_msi' | 'direct' | 'reserved' }

/**
 * The vendor part of IOMMU_GET_HW_INFO (ops->hw_info): an
 * `enum iommu_hw_info_type` value and the bytes of that type's struct
 * (iommu_hw_info_vtd, iommu_hw_info_arm_smmuv3, iommu_hw_info_amd, ...),
 * encoded with the uapi table.
 */
export interface HwInfoData {
  readonly type: number;
  readonly data: Uint8Array;
}

/**
 * What the unit itself can do, as far as iommufd reports it. The device's
 * answer combines these with its PCI function's capabilities
 * (deviceMaxPasidLog2, deviceAtsSupported).
 */
export interface IommuUnitCaps {
  /**
   * device_iommu_capable(dev, IOMMU_CAP_DIRTY_TRACKING): the unit's paging
   * domains keep dirty bits (VT-d: ssads_supported = SMTS && SSADS; SMMUv3:
   * HTTU dirty; AMD: EFR HDSup).
   */
  readonly dirtyTracking: boolean;
  /**
   * log2 of iommu_device.max_pasids, the PASID width the unit accepts; 0
   * when it takes no PASID (VT-d: 2 << ecap.PSS when SMTS && PASID, so
   * PSS + 1 bits; SMMUv3: 1 << IDR1.SSIDSIZE; AMD: only with EFR GTSup,
   * 2^(PASmax + 1) - 1 PASIDs, so PASmax bits).
   */
  readonly pasidBits: number;
  /**
   * The unit answers ATS translation requests and device-TLB invalidation
   * (VT-d ecap.DT, SMMUv3 IDR0.ATS, AMD EFR/IVHD ATS). With a function that
   * has the PCIe ATS capability this is IOMMU_CAP_PCI_ATS_SUPPORTED.
   */
  readonly ats: boolean;
  /**
   * The unit takes page requests (VT-d ecap.PRS, SMMUv3 IDR0.PRI, AMD EFR
   * PPRSup): only then can a function's I/O page faults be enabled, which
   * attaching it to a fault-capable HWPT does.
   */
  readonly pri: boolean;
  /** I/O page faults also need ATS enabled on the function (intel_iommu_enable_iopf). */
  readonly priNeedsAts: boolean;
}

/**
 * Nesting: nested domains (a guest first-stage table over a nest-parent
 * paging domain) and the driver data they take.
 */
export interface NestedSupport {
  /** The IOMMU_HWPT_DATA_* type of its nested domains' driver data. */
  readonly dataType: number;
  /** Attach-time checks of that data (VT-d: intel_pasid_setup_nested); throws EINVAL. */
  checkAttach(data: { flags: bigint; addrWidth: number }): void;
}

/**
 * A paging domain's own map and unmap, for a unit whose smallest page is
 * below the engine's 4 KiB leaf (the mock IOMMU's 2 KiB): iommufd maps
 * through them instead of the engine's table directly.
 */
export interface DomainOps {
  map(iova: bigint, pa: number, length: number, perm: number): void;
  unmap(iova: bigint, length: bigint): void;
  /**
   * read_and_clear_dirty, when the domain keeps dirty state finer than the
   * engine's leaves (the mock's 2 KiB IOPTEs): OR the bits of
   * [iova, iova + length) at pageSize into `out` from bit 0.
   */
  readDirty?(iova: bigint, length: bigint, pageSize: number, clear: boolean, out: Uint8Array): void;
  /** Dirty tracking turned on: forget that state (the engine clears its own dirty bits). */
  clearDirty?(): void;
}

/** One emulated IOMMU unit and the domains it builds. */
export interface IommuDriver {
  readonly kind: IommuKind;
  /** Entry format of a paging domain's table (engine FMT_*: VT-d second stage, ARM stage 2, AMD v1). */
  readonly format: number;
  /** Page-table levels and leaf sizes (engine SZ_* bits) of a paging domain. */
  readonly levels: number;
  readonly leafSizes: number;
  /**
   * Other bits of the engine's pt_create sizes word (layout.ts
   * PT_HAW_SHIFT, PT_CONCAT_SHIFT): VT-d's host address width.
   */
  readonly tableFlags?: number;
  /** Input address width of a paging domain: the aperture is [apertureStart, 2^width - 1]. */
  readonly addressWidth: number;
  /** Start of a paging domain's aperture, when not 0 (the mock's MOCK_APERTURE_START). */
  readonly apertureStart?: bigint;
  /**
   * Make a paging domain's engine table, when pt_create(levels, leafSizes |
   * tableFlags, format) does not describe it (the SMMUv3's 16 / 64 KiB
   * granule tables: Engine.ptCreateArmS2). Returns the domain id.
   */
  createTable?(engine: Engine): number;
  /** The map/unmap of a new paging domain (engine domain `did`), when the engine's own do not fit. */
  domainOps?(engine: Engine, did: number): DomainOps;
  /** Smallest page size of a domain (lowest bit of pgsize_bitmap). */
  readonly pgsizeMin: bigint;
  /** The reserved regions of a device behind this unit (iommu_get_resv_regions). */
  resvRegions(): ReservedRegion[];
  /** What the unit can do (ops->capable and iommu_device.max_pasids). */
  readonly caps: IommuUnitCaps;
  /**
   * The IOMMU_HWPT_ALLOC flags its domain_alloc_paging_flags accepts
   * (NEST_PARENT, DIRTY_TRACKING, PASID); others are EOPNOTSUPP.
   */
  readonly pagingFlags: number;
  /** domain_alloc_nested, when the unit nests. */
  readonly nested?: NestedSupport;
  /** The IOMMU_VIOMMU_TYPE_* it can make (get_viommu_size non-zero); none without vIOMMU ops. */
  readonly viommuTypes?: readonly number[];
  /**
   * ops->hw_info: the vendor data for a requested type. `requested` is
   * IOMMU_HW_INFO_TYPE_DEFAULT (0) or the type the caller asked for with
   * IOMMU_HW_INFO_FLAG_INPUT_TYPE; a driver answers DEFAULT and its own type
   * and throws EOPNOTSUPP for any other. Optional, as in Linux: without it
   * iommufd reports IOMMU_HW_INFO_TYPE_NONE and no data.
   */
  hwInfo?(requested: number): HwInfoData;
}

/**
 * dev->iommu->max_pasids as a width, ilog2 of what dev_iommu_get_max_pasids()
 * (drivers/iommu/iommu.c) stores at probe: min(pci_max_pasids(), the unit's
 * max_pasids). pci_max_pasids() is 1 << the PASID capability's Max PASID
 * Width, and a function without the capability has none (0).
 */
export function deviceMaxPasidLog2(unit: IommuUnitCaps, functionPasidBits: number): number {
  if (functionPasidBits <= 0 || unit.pasidBits <= 0) return 0;
  return Math.min(functionPasidBits, unit.pasidBits);
}

/**
 * device_iommu_capable(dev, IOMMU_CAP_PCI_ATS_SUPPORTED): the unit serves
 * ATS and the function has the ATS capability (VT-d: info->ats_supported =
 * ecap_dev_iotlb_support && pci_ats_supported && dmar_ats_supported, set in
 * intel_iommu_probe_device; AMD: amd_iommu_iotlb_sup && the device's ATS).
 */
export function deviceAtsSupported(unit: IommuUnitCaps, functionAts: boolean): boolean {
  return unit.ats && functionAts;
}

/**
 * Enabling a function's I/O page faults (iommufd_fault_iopf_enable and the
 * driver's enable_iopf): the unit must take page requests and the function
 * have PRI (and ATS where the driver wants it); ENODEV otherwise, as
 * intel_iommu_enable_iopf answers.
 */
export function iopfCapable(unit: IommuUnitCaps, functionPri: boolean, functionAts: boolean): boolean {
  return unit.pri && functionPri && (!unit.priNeedsAts || deviceAtsSupported(unit, functionAts));
}
