// vIOMMU, vDEVICE and HW_QUEUE (drivers/iommu/iommufd/viommu.c).
//
// A vIOMMU is the slice of a physical IOMMU a VMM hands its guest: it sits on
// a nest-parent HWPT_PAGING (the guest's stage 2), makes nested HWPTs from
// the guest's own configuration (an SMMUv3 vSTE), takes the guest's
// invalidation commands, maps virtual device ids (vDEVICEs) to devices, and
// forwards events to its vEVENTQs. Two units make vIOMMUs: the emulated
// SMMUv3 (Linux: arm_smmu_get_viommu_size / arm_vsmmu_init, written here
// against the SMMUv3 type directly) and the mock IOMMU of CONFIG_IOMMUFD_TEST
// (IOMMU_VIOMMU_TYPE_SELFTEST), whose driver hands the core a ViommuOps
// (struct iommufd_viommu_ops: nested domains, invalidation, HW queues) from
// its viommuInit. VT-d nests through HWPT_NESTED on a HWPT_PAGING instead,
// and AMD not at all.

import type { Engine } from '../engine/engine.js';
import type { KFile } from '../kernel/file.js';
import { MemFile } from '../kernel/memfd.js';
import type { AddressSpace } from '../kernel/mm.js';
import type { DmaFault } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_viommu_alloc, iommu_vdevice_alloc, iommu_hw_queue_alloc, iommu_hwpt_invalidate, iommu_viommu_arm_smmuv3_invalidate,
  iommu_vevent_arm_smmuv3, IOMMU_VIOMMU_TYPE_DEFAULT, IOMMU_HW_QUEUE_TYPE_DEFAULT, IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
} from '../uapi/iommufd.js';
import type { Decoded, StructDef } from '../uapi/struct.js';
import type { IommuDriver } from '../iommu/driver.js';
import { decodeCommand, dmaEvent, type VsmmuDomain } from '../iommu/arm_vsmmu.js';
import type { IommufdDevice } from './device.js';
import type { HwptPaging, HwptNested } from './hw_pagetable.js';
import { IommufdObject, type ObjectTable } from './object.js';
import type { Veventq } from './eventq.js';
import type { IoptAccess } from './io_pagetable.js';
import type { Ioas } from './ioas.js';
import type { IoPages } from './pages.js';

/** struct iommu_user_data: driver data of an ioctl, in the caller's memory. */
export interface UserData { readonly type: number; readonly uptr: bigint; readonly len: number }

/**
 * A nested domain a vIOMMU's driver made (alloc_domain_nested) that is not
 * an SMMUv3 vSTE: the mock's, with its IOTLB slots.
 */
export interface ViommuNestedDomain {
  /** domain->ops->cache_invalidate_user (HWPT_INVALIDATE on the nested HWPT): entries handled, and why it stopped. */
  cacheInvalidateUser?(mm: AddressSpace, cmd: Decoded<typeof iommu_hwpt_invalidate>): { handled: number; error: SysError | null };
}

/**
 * struct iommufd_viommu_ops of a driver that fills them at viommu_init
 * (the mock's SELFTEST type). The SMMUv3 vIOMMU keeps its own code paths.
 */
export interface ViommuOps {
  /** ops->destroy. */
  destroy?(): void;
  /** ops->alloc_domain_nested (the core already refused unknown flags and empty data). */
  allocDomainNested?(flags: number, data: UserData, mm: AddressSpace): ViommuNestedDomain;
  /** ops->cache_invalidate (HWPT_INVALIDATE on the vIOMMU): entries handled, and why it stopped. */
  cacheInvalidate?(mm: AddressSpace, cmd: Decoded<typeof iommu_hwpt_invalidate>): { handled: number; error: SysError | null };
  /** ops->get_hw_queue_size, as "this type of HW queue exists". */
  hwQueueType?(type: number): boolean;
  /** ops->hw_queue_init_phys: throws the driver's errno. */
  hwQueueInitPhys?(queue: HwQueue, index: number, basePa: number): void;
  /** hw_queue->destroy of a queue hwQueueInitPhys took. */
  hwQueueDestroy?(queue: HwQueue): void;
}

/** What viommu_init gets from the core besides the vIOMMU: the caller's memory and the fd's mmap regions. */
export interface ViommuInitCtx {
  readonly engine: Engine;
  readonly mm: AddressSpace;
  /** The iommufd file, which a live mmap keeps open. */
  readonly file: KFile;
  /** _iommufd_alloc_mmap: register a region of the fd; returns its mmap offset. */
  allocMmap(pages: MemFile, length: number): number;
  /** iommufd_remove_mmap. */
  destroyMmap(offset: number): void;
}

/** A unit whose vIOMMUs get driver ops (ops->viommu_init of Linux's mock); its viommuTypes are the types it knows. */
export interface ViommuDriver {
  viommuInit(ctx: ViommuInitCtx, viommu: Viommu, data: UserData | null): ViommuOps;
}

const viommuDriver = (d: IommuDriver): ViommuDriver | null =>
  typeof (d as Partial<ViommuDriver>).viommuInit === 'function' ? (d as unknown as ViommuDriver) : null;

/**
 * viommu->iommu_dev == __iommu_get_iommu_dev(dev): the same physical unit.
 * Linux has one mock IOMMU behind every mock device; here each device flag
 * set (NO_DIRTY) has its own driver instance of it.
 */
export function sameUnit(a: IommuDriver, b: IommuDriver): boolean {
  return a === b || (a.kind === 'mock' && b.kind === 'mock');
}

/**
 * The pages of a region a driver registers for mmap on the iommufd
 * (iommufd_viommu_alloc_mmap): a file of shared pages whose every mapping
 * holds a user of the owning object (DESTROY is EBUSY until munmap) and
 * keeps the iommufd open, as a VMA of /dev/iommu does.
 */
export class MmapPages extends MemFile {
  constructor(engine: Engine, private readonly owner: IommufdObject, private readonly ictx: KFile, length: number, pageSize?: number) {
    super(engine, 'iommufd-mmap', pageSize);
    this.truncate(length);
  }

  /** A mapping taken (iommufd_fops_vma_open / mmap). */
  override get(): this {
    this.owner.users++;
    this.ictx.get();
    return super.get();
  }

  /** A mapping gone (iommufd_fops_vma_close). */
  override put(): void {
    this.owner.users--;
    super.put();
    this.ictx.put();
  }

  /** The owner's own reference, dropped when it is destroyed. */
  drop(): void { super.put(); }
}

export class Viommu extends IommufdObject {
  readonly type = 'VIOMMU' as const;
  /** vDEVICEs by virt_id (viommu->vdevs). */
  readonly vdevs = new Map<bigint, VDevice>();
  /** Its nested HWPTs, which its invalidations reach. */
  readonly nested = new Set<HwptNested>();
  /** Its vEVENTQs, one per type. */
  readonly veventqs = new Map<number, Veventq>();
  /** The driver's ops (viommu->ops) for a type other than ARM_SMMUV3; null for SMMUv3. */
  ops: ViommuOps | null = null;

  constructor(readonly hwpt: HwptPaging, readonly driver: IommuDriver, readonly vtype: number) {
    super();
    hwpt.users++;
  }

  /** Re-route the fault recording of every device with a vDEVICE here (a vEVENTQ or vDEVICE came or went). */
  refreshRoutes(): void { for (const vd of this.vdevs.values()) vd.idev.routeAll(); }

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

  /** iommufd_viommu_destroy: the driver's destroy, then the parent's user. */
  destroy(): void {
    this.ops?.destroy?.();
    this.hwpt.users--;
  }
}

export class VDevice extends IommufdObject {
  readonly type = 'VDEVICE' as const;

  constructor(readonly viommu: Viommu, readonly idev: IommufdDevice, readonly virtId: bigint) {
    super();
    viommu.users++;
    viommu.vdevs.set(virtId, this);
    idev.vdev = this;
    idev.routeAll();
  }

  /** iommufd_vdevice_abort. */
  destroy(): void {
    this.viommu.vdevs.delete(this.virtId);
    this.viommu.users--;
    this.idev.vdev = null;
    this.idev.routeAll();
  }
}

/** What the vIOMMU handlers need from the iommufd context. */
export interface ViommuCtx extends ViommuInitCtx {
  readonly objects: ObjectTable;
}

const ULONG_MAX = (1n << 64n) - 1n;

/**
 * IOMMU_VIOMMU_ALLOC (iommufd_viommu_alloc_ioctl): flags and the DEFAULT
 * type EOPNOTSUPP, the device ENOENT, a unit without that vIOMMU type
 * EOPNOTSUPP, the HWPT ENOENT, a HWPT that is not a nest parent EINVAL, one
 * another unit made EINVAL (arm_vsmmu_init), then the driver's viommu_init
 * with the driver data (none when data_len is 0). Driver data is not read
 * for the SMMUv3 type. A failed init leaves no object behind.
 */
export function viommuAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_viommu_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  const idev = ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  const driver = idev.pci.driver;
  if (!driver.viommuTypes?.includes(cmd.type)) throw new SysError('EOPNOTSUPP');
  const hwpt = ctx.objects.get<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  if (!hwpt.flags.nestParent) throw new SysError('EINVAL');
  if (!sameUnit(hwpt.driver, driver)) throw new SysError('EINVAL');
  const viommu = ctx.objects.add(new Viommu(hwpt, driver, cmd.type));
  const vd = viommuDriver(driver);
  if (vd) {
    try {
      viommu.ops = vd.viommuInit(ctx, viommu, cmd.data_len ? { type: cmd.type, uptr: cmd.data_uptr, len: cmd.data_len } : null);
    } catch (e) {
      ctx.objects.remove(viommu);
      throw e;
    }
  }
  cmd.out_viommu_id = viommu.id;
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
  if (!sameUnit(idev.pci.driver, viommu.driver)) throw new SysError('EINVAL');
  if (idev.vdev) throw new SysError('EEXIST');
  if (viommu.vdevs.has(cmd.virt_id)) throw new SysError('EEXIST');
  cmd.out_vdevice_id = ctx.objects.add(new VDevice(viommu, idev, cmd.virt_id)).id;
}

/**
 * The internal access of a HW queue (iommufd_access_create_internal): an
 * ACCESS object with an id of its own, never handed out, that pins the
 * queue's pages in the parent's IOAS and locks their areas: IOAS_UNMAP of
 * them is EBUSY while the queue lives (iopt_unmap_iova_range on
 * area->num_locks). It keeps the IOAS PAGE_SIZE-aligned, as a pinning
 * access does.
 */
export class HwQueueAccess extends IommufdObject implements IoptAccess {
  readonly type = 'ACCESS' as const;
  readonly needsPin = true;
  private pins: { pages: IoPages; first: number; last: number }[] = [];
  private locked: { iova: bigint; last: bigint } | null = null;
  ioas: Ioas | null = null;

  constructor() {
    super();
    this.users++; // the calling driver's reference: DESTROY from userspace is EBUSY
  }

  /**
   * iommufd_access_attach_internal: join the IOAS (EADDRINUSE for areas
   * not aligned to PAGE_SIZE). The access is put first in the IOAS's list,
   * so that an unmap it refuses reaches no other access.
   */
  attach(ioas: Ioas): void {
    const iopt = ioas.iopt;
    iopt.addAccess(this);
    for (const a of [...iopt.accesses]) {
      if (a === this) continue;
      iopt.accesses.delete(a);
      iopt.accesses.add(a);
    }
    ioas.users++;
    this.ioas = ioas;
  }

  /**
   * iommufd_access_pin_pages with the areas locked: [iova, iova + length)
   * covered by areas (ENOENT); returns the physical address of each page.
   */
  pin(iova: bigint, length: bigint): number[] {
    if (!this.ioas) throw new SysError('ENOENT');
    const slices = this.ioas.iopt.getPages(iova, length);
    const pins: { pages: IoPages; first: number; last: number }[] = [];
    const pas: number[] = [];
    const page = Number(this.ioas.iopt.pageSize);
    try {
      for (const s of slices) {
        const [first, last] = s.pages.indexRange(s.offset, s.length);
        s.pages.pin(first, last);
        pins.push({ pages: s.pages, first, last });
        for (const r of s.pages.physRuns(s.offset, s.length)) {
          for (let a = r.pa - (r.pa % page); a < r.pa + r.length; a += page) pas.push(a);
        }
      }
    } catch (e) {
      for (const p of pins) p.pages.unpin(p.first, p.last);
      throw e;
    }
    this.pins = pins;
    this.locked = { iova, last: iova + length - 1n };
    return pas;
  }

  unpin(): void {
    for (const p of this.pins) p.pages.unpin(p.first, p.last);
    this.pins = [];
    this.locked = null;
  }

  /** An unmap meeting the locked areas is refused before anything is unmapped. */
  unmap(iova: bigint, last: bigint): void {
    if (this.locked && iova <= this.locked.last && last >= this.locked.iova) throw new SysError('EBUSY');
  }

  /** iommufd_access_detach_internal + iommufd_access_destroy_internal. */
  destroy(): void {
    this.unpin();
    if (!this.ioas) return;
    this.ioas.iopt.removeAccess(this);
    this.ioas.users--;
    this.ioas = null;
  }
}

/**
 * HW_QUEUE (struct iommufd_hw_queue): a queue in guest memory that the
 * hardware reads by physical address, pinned from the vIOMMU's parent IOAS.
 * Holds a user of its vIOMMU; a driver may make it hold another queue
 * (iommufd_hw_queue_depend).
 */
export class HwQueue extends IommufdObject {
  readonly type = 'HW_QUEUE' as const;
  access: HwQueueAccess | null = null;
  /** The driver's hw_queue_init_phys took it: its destroy runs with this one's. */
  initialized = false;

  constructor(private readonly objects: ObjectTable, readonly viommu: Viommu, readonly qtype: number,
    readonly baseAddr: bigint, readonly length: bigint) {
    super();
    viommu.users++;
  }

  /** iommufd_hw_queue_destroy: the driver's destroy, the access unpinned and gone, the vIOMMU's user. */
  destroy(): void {
    if (this.initialized) this.viommu.ops?.hwQueueDestroy?.(this);
    this.initialized = false;
    if (this.access) {
      const a = this.access;
      this.access = null;
      a.users--; // the driver's reference
      this.objects.remove(a);
    }
    this.viommu.users--;
  }
}

/**
 * iommufd_hw_queue_alloc_phys: pin [PAGE_ALIGN_DOWN(iova), ...) of the
 * vIOMMU's parent IOAS through an internal access (page arithmetic overflow
 * ERANGE, not covered ENOENT), the pages physically contiguous (EFAULT);
 * returns the access and the physical address of the iova.
 */
function hwQueueAllocPhys(ctx: ViommuCtx, cmd: Decoded<typeof iommu_hw_queue_alloc>, viommu: Viommu): { access: HwQueueAccess; basePa: number } {
  const page = viommu.hwpt.ioas.iopt.pageSize; // the kernel's PAGE_SIZE
  const alignedIova = cmd.nesting_parent_iova - (cmd.nesting_parent_iova % page);
  const offset = cmd.nesting_parent_iova - alignedIova;
  let length = offset + cmd.length;
  if (length > ULONG_MAX) throw new SysError('ERANGE');
  length += page - 1n;
  if (length > ULONG_MAX) throw new SysError('ERANGE');
  length -= length % page;
  const access = ctx.objects.add(new HwQueueAccess());
  try {
    access.attach(viommu.hwpt.ioas);
    const pas = access.pin(alignedIova, length);
    for (let i = 1; i < pas.length; i++) {
      if (pas[i] !== pas[i - 1] + Number(page)) throw new SysError('EFAULT');
    }
    return { access, basePa: pas[0] + Number(offset) };
  } catch (e) {
    access.users--;
    ctx.objects.remove(access);
    throw e;
  }
}

/**
 * IOMMU_HW_QUEUE_ALLOC (iommufd_hw_queue_alloc_ioctl): a queue the guest
 * hands to the hardware to read directly (Tegra241 CMDQV, the mock). flags
 * and the DEFAULT type EOPNOTSUPP, length 0 EINVAL, iova + length - 1
 * overflowing EOVERFLOW, the vIOMMU ENOENT, a vIOMMU without HW queue ops
 * or not knowing the type EOPNOTSUPP; then the queue object (its id first),
 * the pages pinned and locked through an internal access (the next id),
 * and the driver's hw_queue_init_phys. The emulated SMMUv3 has no such
 * queue (its commands come through HWPT_INVALIDATE): EOPNOTSUPP, as on
 * SMMUv3 hardware without CMDQV. A failure leaves no object, pin or lock.
 */
export function hwQueueAlloc(ctx: ViommuCtx, cmd: Decoded<typeof iommu_hw_queue_alloc>): void {
  if (cmd.flags !== 0 || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) throw new SysError('EOPNOTSUPP');
  if (cmd.length === 0n) throw new SysError('EINVAL');
  if (cmd.nesting_parent_iova + cmd.length - 1n > ULONG_MAX) throw new SysError('EOVERFLOW');
  const viommu = ctx.objects.get<Viommu>(cmd.viommu_id, 'VIOMMU');
  const ops = viommu.ops;
  if (!ops?.hwQueueType || !ops.hwQueueInitPhys) throw new SysError('EOPNOTSUPP');
  if (!ops.hwQueueType(cmd.type)) throw new SysError('EOPNOTSUPP');
  const queue = ctx.objects.add(new HwQueue(ctx.objects, viommu, cmd.type, cmd.nesting_parent_iova, cmd.length));
  try {
    const { access, basePa } = hwQueueAllocPhys(ctx, cmd, viommu);
    queue.access = access;
    ops.hwQueueInitPhys(queue, cmd.index, basePa);
    queue.initialized = true;
  } catch (e) {
    ctx.objects.remove(queue);
    throw e;
  }
  cmd.out_hw_queue_id = queue.id;
}

/**
 * iommu_copy_struct_from_full_user_array: the whole array of a vIOMMU
 * invalidation in kernel entries. Another data type or no entry EINVAL; an
 * entry shorter than the kernel's is zero-extended, a longer one needs a
 * zero tail (E2BIG); a bad pointer EFAULT.
 */
export function copyFullUserArray<S extends StructDef<any, any>>( // eslint-disable-line @typescript-eslint/no-explicit-any
  mm: AddressSpace, s: S, cmd: Decoded<typeof iommu_hwpt_invalidate>, dataType: number,
): Decoded<S>[] {
  if (cmd.data_type !== dataType || cmd.entry_num === 0) throw new SysError('EINVAL');
  if (cmd.data_uptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  const raw = mm.read(Number(cmd.data_uptr), cmd.entry_num * cmd.entry_len);
  const out: Decoded<S>[] = [];
  for (let i = 0; i < cmd.entry_num; i++) {
    const entry = raw.subarray(i * cmd.entry_len, (i + 1) * cmd.entry_len);
    if (entry.subarray(s.size).some((b) => b !== 0)) throw new SysError('E2BIG');
    const k = new Uint8Array(s.size);
    k.set(entry.subarray(0, s.size));
    out.push(s.decode(k) as Decoded<S>);
  }
  return out;
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
  if (viommu.vtype !== IOMMU_VIOMMU_TYPE_ARM_SMMUV3) {
    // iommufd_hwpt_invalidate: a vIOMMU whose driver has no cache_invalidate op.
    if (!viommu.ops?.cacheInvalidate) return { handled: 0, error: new SysError('EOPNOTSUPP') };
    return viommu.ops.cacheInvalidate(ctx.mm, cmd);
  }
  let cmds: bigint[][];
  try {
    cmds = copyFullUserArray(ctx.mm, iommu_viommu_arm_smmuv3_invalidate, cmd, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3).map((e) => e.cmd);
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
