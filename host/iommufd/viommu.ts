// vIOMMU, vDEVICE and HW_QUEUE (drivers/iommu/iommufd/viommu.c).
//
// A vIOMMU needs its physical unit's driver to provide vIOMMU ops
// (ops->get_viommu_size / viommu_init): the ARM SMMUv3 driver does so for a
// unit with nesting, Intel and AMD do not. None of the emulated units nests
// yet (their registers say so: SMMU_IDR0.S1P = 0, VT-d nesting planned, AMD
// GTSup = 0), so VIOMMU_ALLOC ends where Linux ends on such hardware, and
// no VIOMMU object can exist for the other calls to find. Each handler
// checks its arguments in Linux's order up to that point.

import { SysError } from '../uapi/errno.js';
import {
  iommu_viommu_alloc, iommu_vdevice_alloc, iommu_hw_queue_alloc,
  IOMMU_VIOMMU_TYPE_DEFAULT, IOMMU_HW_QUEUE_TYPE_DEFAULT,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import type { IommufdDevice } from './device.js';
import type { ObjectTable } from './object.js';

/** What the vIOMMU handlers need from the iommufd context. */
export interface ViommuCtx {
  readonly objects: ObjectTable;
}

const ULONG_MAX = (1n << 64n) - 1n;

/** IOMMU_VIOMMU_ALLOC (iommufd_viommu_alloc_ioctl). */
export function viommuAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_viommu_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  // No emulated unit has vIOMMU ops (get_viommu_size) yet.
  throw new SysError('EOPNOTSUPP');
}

/** IOMMU_VDEVICE_ALLOC (iommufd_vdevice_alloc_ioctl): virt_id indexes an xarray, then the vIOMMU. */
export function vdeviceAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_vdevice_alloc>): void {
  if (cmd.virt_id > ULONG_MAX) throw new SysError('EINVAL');
  ctx.objects.get(cmd.viommu_id, 'VIOMMU'); // ENOENT: no vIOMMU can exist yet
}

/** IOMMU_HW_QUEUE_ALLOC (iommufd_hw_queue_alloc_ioctl). */
export function hwQueueAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_hw_queue_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  if (cmd.length === 0n) throw new SysError('EINVAL');
  if (cmd.nesting_parent_iova + cmd.length - 1n > ULONG_MAX) throw new SysError('EOVERFLOW');
  ctx.objects.get(cmd.viommu_id, 'VIOMMU'); // ENOENT: no vIOMMU can exist yet
}
