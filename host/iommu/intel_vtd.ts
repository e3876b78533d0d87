// The emulated Intel VT-d unit (drivers/iommu/intel/ is its Linux driver).

import type { Engine } from '../engine/engine.js';
import type { IommuDriver } from './driver.js';

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
