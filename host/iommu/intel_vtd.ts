// The emulated physical IOMMUs a device can sit behind, as Linux's IOMMU
// drivers (drivers/iommu/intel/...) describe them to iommufd: the paging
// domain format, its aperture and page sizes, and the reserved regions.

import type { Engine } from '../engine/engine.js';

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

/**
 * Intel VT-d with a 4-level (48-bit) second-stage format and 2 MiB and
 * 1 GiB super-pages (VT-d spec 3.7, cap SAGAW bit 2 and SLLPS = 0b11). The
 * interrupt range 0xfee00000-0xfeefffff is reserved as IOMMU_RESV_MSI, as
 * intel_iommu_get_resv_regions() does (IOAPIC_RANGE_START / _END).
 */
export function intelVtd(engine: Engine): IommuDriver {
  const L = engine.layout;
  return {
    kind: 'intel-vtd',
    levels: 4,
    leafSizes: L.SZ_4K | L.SZ_2M | L.SZ_1G,
    addressWidth: 48,
    pgsizeMin: 4096n,
    resvRegions: () => [{ start: 0xfee0_0000n, last: 0xfeef_ffffn, type: 'msi' }],
  };
}
