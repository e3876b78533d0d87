// vIOMMU, vDEVICE and HW_QUEUE (drivers/iommu/iommufd/viommu.c).
//
// A vIOMMU is the slice of a physical IOMMU a VMM hands its guest: it sits on
// a nest-parent HWPT_PAGING (the guest's stage 2), makes nested HWPTs from
// the guest's own configuration (an SMMUv3 vSTE), takes the guest's
// invalidation commands, maps virtual device ids (vDEVICEs) to devices, and
// forwards events to its vEVENTQs. Only the emulated SMMUv3 has vIOMMU ops
// (Linux: arm_smmu_get_viommu_size / arm_vsmmu_init); VT-d nests through
// HWPT_NESTED on a HWPT_PAGING instead, and AMD not at all.

import type { Engine } from '../engine/engine.js';
import type { AddressSpace } from '../kernel/mm.js';
import type { DmaFault } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_viommu_alloc, iommu_vdevice_alloc, iommu_hw_queue_alloc, iommu_hwpt_invalidate, iommu_viommu_arm_smmuv3_invalidate,
  iommu_vevent_arm_smmuv3, IOMMU_VIOMMU_TYPE_DEFAULT, IOMMU_HW_QUEUE_TYPE_DEFAULT, IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import type { IommuDriver } from '../iommu/driver.js';
import { decodeCommand, dmaEvent, type VsmmuDomain } from '../iommu/arm_vsmmu.js';
import type { IommufdDevice } from './device.js';
import type { HwptPaging, HwptNested } from './hw_pagetable.js';
import { IommufdObject, type ObjectTable } from './object.js';
import type { Veventq } from './eventq.js';

export class Viommu extends IommufdObject {
  readonly type = 'VIOMMU' as const;
  /** vDEVICEs by virt_id (viommu->vdevs). */
  readonly vdevs = new Map<bigint, VDevice>();
  /** Its nested HWPTs, which its invalidations reach. */
  readonly nested = new Set<HwptNested>();
  /** Its vEVENTQs, one per type. */
  readonly veventqs = new Map<number, Veventq>();

  constructor(readonly hwpt: HwptPaging, readonly driver: IommuDriver, readonly vtype: number) {
    super();
    hwpt.users++;
  }

  /** iommufd_viommu_find_dev: the device of a virtual id. */
  findDev(virtId: bigint): IommufdDevice | undefined { return this.vdevs.get(virtId)?.idev; }

  /** iommufd_viommu_report_event: no queue of that type drops the event (EOPNOTSUPP to the reporter, so false). */
  reportEvent(type: number, payload: Uint8Array): boolean {
    const q = this.veventqs.get(type);
    if (!q) return false;
    q.report(payload);
    return true;
  }

  /** arm_vmaster_report_event: a refused DMA of a device with a vDEVICE, as an SMMUv3 event record. */
  reportDmaFault(idev: IommufdDevice, domain: VsmmuDomain, f: DmaFault): void {
    const vdev = idev.vdev;
    if (!vdev || vdev.viommu !== this) return;
    const evt = dmaEvent(domain, Number(vdev.virtId & 0xffff_ffffn), f);
    if (!evt) return;
    const payload = new Uint8Array(iommu_vevent_arm_smmuv3.size);
    iommu_vevent_arm_smmuv3.encode({ evt }, payload);
    this.reportEvent(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, payload);
  }

  destroy(): void { this.hwpt.users--; }
}

export class VDevice extends IommufdObject {
  readonly type = 'VDEVICE' as const;

  constructor(readonly viommu: Viommu, readonly idev: IommufdDevice, readonly virtId: bigint) {
    super();
    viommu.users++;
    viommu.vdevs.set(virtId, this);
    idev.vdev = this;
  }

  /** iommufd_vdevice_abort. */
  destroy(): void {
    this.viommu.vdevs.delete(this.virtId);
    this.viommu.users--;
    this.idev.vdev = null;
  }
}

/** What the vIOMMU handlers need from the iommufd context. */
export interface ViommuCtx {
  readonly objects: ObjectTable;
}

const ULONG_MAX = (1n << 64n) - 1n;

/**
 * IOMMU_VIOMMU_ALLOC (iommufd_viommu_alloc_ioctl): flags and the DEFAULT
 * type EOPNOTSUPP, the device ENOENT, a unit without that vIOMMU type
 * EOPNOTSUPP, the HWPT ENOENT, a HWPT that is not a nest parent EINVAL, one
 * another unit made EINVAL (arm_vsmmu_init). Driver data is not read for
 * the SMMUv3 type.
 */
export function viommuAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_viommu_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  const idev = ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  const driver = idev.pci.driver;
  if (!driver.viommuTypes?.includes(cmd.type)) throw new SysError('EOPNOTSUPP');
  const hwpt = ctx.objects.get<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  if (!hwpt.flags.nestParent) throw new SysError('EINVAL');
  if (hwpt.driver !== driver) throw new SysError('EINVAL');
  cmd.out_viommu_id = ctx.objects.add(new Viommu(hwpt, driver, cmd.type)).id;
}

/**
 * IOMMU_VDEVICE_ALLOC (iommufd_vdevice_alloc_ioctl): virt_id indexes an
 * xarray (EINVAL above ULONG_MAX), the vIOMMU and the device (ENOENT), a
 * device behind another unit EINVAL, a device that has a vDEVICE already
 * EEXIST, a virt_id taken in this vIOMMU EEXIST.
 */
export function vdeviceAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_vdevice_alloc>): void {
  if (cmd.virt_id > ULONG_MAX) throw new SysError('EINVAL');
  const viommu = ctx.objects.get<Viommu>(cmd.viommu_id, 'VIOMMU');
  const idev = ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  if (idev.pci.driver !== viommu.driver) throw new SysError('EINVAL');
  if (idev.vdev) throw new SysError('EEXIST');
  if (viommu.vdevs.has(cmd.virt_id)) throw new SysError('EEXIST');
  cmd.out_vdevice_id = ctx.objects.add(new VDevice(viommu, idev, cmd.virt_id)).id;
}

/**
 * IOMMU_HW_QUEUE_ALLOC (iommufd_hw_queue_alloc_ioctl): a queue the guest
 * hands to the hardware to read directly (Tegra241 CMDQV, the mock). The
 * emulated SMMUv3 has no such queue (its commands come through
 * HWPT_INVALIDATE), so after the argument checks and the vIOMMU lookup the
 * answer is EOPNOTSUPP (no get_hw_queue_size), as on SMMUv3 hardware
 * without CMDQV.
 */
export function hwQueueAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_hw_queue_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  if (cmd.length === 0n) throw new SysError('EINVAL');
  if (cmd.nesting_parent_iova + cmd.length - 1n > ULONG_MAX) throw new SysError('EOVERFLOW');
  ctx.objects.get<Viommu>(cmd.viommu_id, 'VIOMMU');
  throw new SysError('EOPNOTSUPP');
}

/**
 * IOMMU_HWPT_INVALIDATE on an SMMUv3 vIOMMU (arm_vsmmu_cache_invalidate):
 * the whole array is copied first (iommu_copy_struct_from_full_user_array:
 * another data type or no entry EINVAL; an entry shorter than a command is
 * zero-extended, a longer one needs a zero tail, else E2BIG; a bad pointer
 * EFAULT), then the commands run in order until one is refused (EIO: an
 * opcode a guest may not pass through, or a StreamID no vDEVICE has). The
 * TLBIs act on this vIOMMU's nested domains only (the VMID is forced to its
 * own); CFGI_CD re-reads the CD of the stream's nested domain. Returns the
 * commands handled, and why it stopped.
 */
export function viommuInvalidate(
  ctx: { readonly engine: Engine; readonly mm: AddressSpace }, viommu: Viommu, cmd: Decoded<typeof iommu_hwpt_invalidate>,
): { handled: number; error: SysError | null } {
  if (viommu.vtype !== IOMMU_VIOMMU_TYPE_ARM_SMMUV3) return { handled: 0, error: new SysError('EOPNOTSUPP') };
  if (cmd.data_type !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 || cmd.entry_num === 0) return { handled: 0, error: new SysError('EINVAL') };
  const s = iommu_viommu_arm_smmuv3_invalidate;
  const cmds: bigint[][] = [];
  try {
    if (cmd.data_uptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
    const raw = ctx.mm.read(Number(cmd.data_uptr), cmd.entry_num * cmd.entry_len);
    for (let i = 0; i < cmd.entry_num; i++) {
      const entry = raw.subarray(i * cmd.entry_len, (i + 1) * cmd.entry_len);
      if (entry.subarray(s.size).some((b) => b !== 0)) throw new SysError('E2BIG');
      const k = new Uint8Array(s.size);
      k.set(entry.subarray(0, s.size));
      cmds.push(s.decode(k).cmd);
    }
  } catch (e) {
    if (!(e instanceof SysError)) throw e;
    return { handled: 0, error: e };
  }
  const engine = ctx.engine;
  for (let i = 0; i < cmds.length; i++) {
    let c;
    try {
      c = decodeCommand(cmds[i][0], cmds[i][1]);
      if (c.op === 'cfgi-cd' || c.op === 'atc-inv') {
        const idev = viommu.findDev(BigInt(c.vsid));
        if (!idev) throw new SysError('EIO'); // arm_vsmmu_vsid_to_sid
        if (c.op === 'cfgi-cd') {
          const hwpt = idev.hwpt();
          if (hwpt?.type === 'HWPT_NESTED' && hwpt.viommu === viommu) hwpt.reconfigure();
        }
        // ATC_INV: the functions here keep no address translation cache, so there is nothing to drop.
        continue;
      }
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      return { handled: i, error: e };
    }
    for (const h of viommu.nested) {
      const d = h.vsmmu;
      if (!d?.cd) continue; // no stage-1 translations cached for it
      if (c.op === 'tlbi-all') engine.flushDomain(d.did);
      else if (c.op === 'tlbi-asid' && c.asid === d.cd.asid) engine.flushDomain(d.did);
      else if (c.op === 'tlbi-va' && (c.asid === null || c.asid === d.cd.asid)) engine.flushRange(d.did, c.addr, c.length);
    }
  }
  return { handled: cmds.length, error: null };
}
