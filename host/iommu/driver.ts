// What iommufd needs to know of an emulated physical IOMMU, as Linux's IOMMU
// drivers describe themselves to it: the paging domain's format, aperture and
// page sizes, and the reserved regions of a device behind the unit.

export type IommuKind = 'intel-vtd' | 'arm-smmuv3' | 'amd-vi' | 'mock';

export interface ReservedRegion { start: bigint; last: bigint; type: 'msi' | 'direct' | 'reserved' }

/** One emulated IOMMU unit and the domains it builds. */
export interface IommuDriver {
  readonly kind: IommuKind;
  /** Page-table levels and leaf sizes (engine SZ_* bits) of a paging domain. */
  readonly levels: number;
  readonly leafSizes: number;
  /** Input address width of a paging domain: the aperture is [0, 2^width - 1]. */
  readonly addressWidth: number;
  /** Smallest page size of a domain (lowest bit of pgsize_bitmap). */
  readonly pgsizeMin: bigint;
  /** The reserved regions of a device behind this unit (iommu_get_resv_regions). */
  resvRegions(): ReservedRegion[];
}
