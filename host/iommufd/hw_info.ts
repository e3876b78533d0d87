// IOMMU_GET_HW_INFO (drivers/iommu/iommufd/device.c, iommufd_get_hw_info):
// what the IOMMU behind a bound device is, for a VMM that builds a vIOMMU
// to match it (QEMU's iommufd_backend_get_device_info).
//
// Linux's order (newest device.c, with IOMMU_HW_INFO_FLAG_INPUT_TYPE and
// IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED):
//   1. flags other than INPUT_TYPE -> EOPNOTSUPP
//   2. any __reserved[i] != 0 -> EOPNOTSUPP
//   3. without INPUT_TYPE, in_data_type is forced to DEFAULT
//   4. dev_id must name a DEVICE -> ENOENT
//   5. ops->hw_info(dev, &len, &type): a type the driver does not have ->
//      EOPNOTSUPP (intel_iommu_hw_info, arm_smmu_hw_info, amd_iommufd_hw_info);
//      no hw_info op -> type NONE, no data
//   6. copy_to_user(data_uptr, data, min(data_len, len)) -> EFAULT
//   7. clear_user() of the rest of the user's data_len -> EFAULT (the copy
//      of step 6 stays)
//   8. data_len = len (may exceed what the caller gave), out_capabilities,
//      out_max_pasid_log2, then the struct is copied back.

import type { AddressSpace } from '../kernel/mm.js';
import { deviceAtsSupported, deviceMaxPasidLog2 } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_hw_info, IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_NONE,
  IOMMU_HW_CAP_DIRTY_TRACKING, IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import type { ObjectTable } from './object.js';
import type { IommufdDevice } from './device.js';

/** What the handler needs from the iommufd context. */
export interface HwInfoCtx {
  readonly objects: ObjectTable;
  readonly mm: AddressSpace;
}

const SUPPORTED_FLAGS = IOMMU_HW_INFO_FLAG_INPUT_TYPE;

/** IOMMU_GET_HW_INFO */
export function getHwInfo(ctx: HwInfoCtx, cmd: Decoded<typeof iommu_hw_info>): void {
  if ((cmd.flags & ~SUPPORTED_FLAGS) !== 0) throw new SysError('EOPNOTSUPP');
  if (cmd.__reserved.some((b) => b !== 0)) throw new SysError('EOPNOTSUPP');
  // "Clear the type field since drivers don't support a random input"
  const requested = cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE ? cmd.in_data_type : IOMMU_HW_INFO_TYPE_DEFAULT;

  const idev = ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  const pci = idev.pci;
  const driver = pci.driver;

  let type: number;
  let data: Uint8Array;
  if (driver.hwInfo) {
    ({ type, data } = driver.hwInfo(requested));
    // A driver with hw_info has a type of its own (WARN_ON_ONCE in Linux).
    if (type === IOMMU_HW_INFO_TYPE_NONE) throw new SysError('EOPNOTSUPP');
  } else {
    type = IOMMU_HW_INFO_TYPE_NONE;
    data = new Uint8Array(0);
  }

  // The user buffer: the kernel's bytes, then zeros up to the caller's data_len.
  const userLen = cmd.data_len;
  const copyLen = Math.min(userLen, data.length);
  if (copyLen > 0) ctx.mm.write(userVa(cmd.data_uptr, copyLen), data.subarray(0, copyLen));
  if (copyLen < userLen) ctx.mm.write(userVa(cmd.data_uptr + BigInt(copyLen), userLen - copyLen), new Uint8Array(userLen - copyLen));

  // The length the kernel has, so that the caller can ask again with room for it.
  cmd.data_len = data.length;
  cmd.in_data_type = type;
  cmd.out_data_type = type;

  let caps = 0n;
  if (driver.caps.dirtyTracking) caps |= BigInt(IOMMU_HW_CAP_DIRTY_TRACKING);
  // "Report when ATS cannot be used for this device"
  if (!deviceAtsSupported(driver.caps, pci.options.ats)) caps |= BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED);
  // ilog2(dev->iommu->max_pasids), non-zero only when both the unit and the
  // function have PASID. PCI_PASID_EXEC / _PRIV would follow the function's
  // PASID Control register (pci_pasid_status): a PciFunction has no Execute
  // or Privileged Mode capability, so neither bit is ever reported.
  cmd.out_max_pasid_log2 = deviceMaxPasidLog2(driver.caps, pci.options.pasidBits);
  cmd.out_capabilities = caps;
}

/** A user pointer as a VA of the simulated process; one it cannot have is a fault. */
function userVa(ptr: bigint, length: number): number {
  if (ptr + BigInt(length) > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  return Number(ptr);
}
