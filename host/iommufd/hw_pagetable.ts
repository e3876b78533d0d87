// HWPT_PAGING (drivers/iommu/iommufd/hw_pagetable.c): a real I/O page table
// in the engine, in the format of the IOMMU that made it, kept in sync with
// its IOAS. An automatic one is made when a device attaches to an IOAS,
// shared by the compatible devices of that IOAS, and freed with the last.

import type { Engine } from '../engine/engine.js';
import type { DomainOps, IommuDriver } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_hwpt_alloc, iommu_hwpt_set_dirty_tracking, iommu_hwpt_get_dirty_bitmap, iommu_hwpt_invalidate,
  iommu_hwpt_vtd_s1, iommu_hwpt_vtd_s1_invalidate, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VTD_INV_FLAGS_LEAF,
  iommu_hwpt_arm_smmuv3, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMU_HWPT_DATA_NONE, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_FAULT_ID_VALID, IOMMU_HWPT_ALLOC_PASID, IOMMU_HWPT_DIRTY_TRACKING_ENABLE, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
} from '../uapi/iommufd.js';
import type { AddressSpace } from '../kernel/mm.js';
import type { Decoded, StructDef } from '../uapi/struct.js';
import { ULONG_MAX, type Domain } from './io_pagetable.js';
import { IommufdObject, type ObjectTable } from './object.js';
import type { Ioas } from './ioas.js';
import type { IommufdDevice } from './device.js';
import type { Fault } from './eventq.js';
import { type Viommu, type ViommuNestedDomain, viommuInvalidate, sameUnit } from './viommu.js';
import { validateVste, VsmmuDomain } from '../iommu/arm_vsmmu.js';

/** How a paging HWPT was asked for (the IOMMU_HWPT_ALLOC flags that shape it). */
export interface PagingFlags {
  /** Made by a device attach to an IOAS, shared and freed with its last device. */
  auto: boolean;
  nestParent: boolean;
  dirtyTracking: boolean;
  /** IOMMU_HWPT_ALLOC_PASID: may be attached to a PASID. */
  pasidCompat: boolean;
}

export class HwptPaging extends IommufdObject implements Domain {
  readonly type = 'HWPT_PAGING' as const;
  readonly did: number;
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  readonly pgsizeMin: bigint;
  readonly ops?: DomainOps;
  /** Devices (and PASIDs) attached. */
  attached = 0;

  constructor(private readonly engine: Engine, readonly ioas: Ioas, readonly driver: IommuDriver, readonly flags: PagingFlags) {
    super();
    this.did = driver.createTable?.(engine) ?? engine.ptCreate(driver.levels, driver.leafSizes | (driver.tableFlags ?? 0), driver.format);
    this.apertureStart = driver.apertureStart ?? 0n;
    this.apertureLast = (1n << BigInt(driver.addressWidth)) - 1n;
    this.pgsizeMin = driver.pgsizeMin;
    this.ops = driver.domainOps?.(engine, this.did);
  }

  private inIoas = false;
  /** The FAULT its I/O page faults go to (IOMMU_HWPT_FAULT_ID_VALID), holding a user of it. */
  fault: Fault | null = null;

  setFault(fault: Fault): void {
    this.fault = fault;
    fault.users++;
  }

  get auto(): boolean { return this.flags.auto; }

  /** Join the IOAS: reserve outside the aperture and fill (iopt_table_add_domain). */
  addToIoas(): void {
    this.ioas.iopt.addDomain(this);
    this.inIoas = true;
    this.ioas.users++;
    this.ioas.hwpts.push(this);
  }

  destroy(): void {
    if (this.inIoas) {
      this.ioas.iopt.removeDomain(this);
      this.ioas.users--;
      this.ioas.hwpts.splice(this.ioas.hwpts.indexOf(this), 1);
    }
    this.engine.ptDestroy(this.did);
    if (this.fault) this.fault.users--;
  }
}

/**
 * HWPT_NESTED: a guest's own stage-1 configuration over a nest-parent
 * HWPT_PAGING, translated by the engine's 2-D walks. Made on the parent
 * (VT-d: a first-stage table at a GPA; holds a user of the parent) or on a
 * vIOMMU (SMMUv3: a vSTE; holds a user of the vIOMMU, not of the parent).
 */
export class HwptNested extends IommufdObject {
  readonly type = 'HWPT_NESTED' as const;
  readonly auto = false;
  attached = 0;
  fault: Fault | null = null;
  /** VT-d: the driver data as given (flags, address width, checked again at attach; the first-stage table's GPA). */
  readonly s1: { flags: bigint; addrWidth: number; root: bigint } | null;
  /** SMMUv3: the domain of the vSTE. */
  readonly vsmmu: VsmmuDomain | null;
  /**
   * Another vIOMMU driver's nested domain (the mock's: IOTLB slots, no page
   * table of its own, so the engine terminates DMA through it).
   */
  readonly domain: ViommuNestedDomain | null;
  private readonly vtdDid: number;

  constructor(
    private readonly engine: Engine,
    readonly parent: HwptPaging,
    config: { vtd: { flags: bigint; addrWidth: number; root: bigint } } | { vsmmu: VsmmuDomain; viommu: Viommu } | { domain: ViommuNestedDomain; viommu: Viommu },
    readonly flags: { pasidCompat: boolean },
  ) {
    super();
    if ('vtd' in config) {
      const { flags: f, addrWidth, root } = config.vtd;
      this.s1 = { flags: f, addrWidth, root };
      this.vsmmu = null;
      this.domain = null;
      this.viommu = null;
      // The first-stage pointer's low 12 bits are not part of it (VT-d 9.6 FSPTPTR).
      this.vtdDid = engine.ptCreateNested(parent.did, root & ~0xfffn, addrWidth === 57 ? 5 : 4);
      parent.users++;
    } else {
      this.s1 = null;
      this.vsmmu = 'vsmmu' in config ? config.vsmmu : null;
      this.domain = 'domain' in config ? config.domain : null;
      this.viommu = config.viommu;
      this.vtdDid = 0;
      this.viommu.users++;
      this.viommu.nested.add(this);
    }
  }

  readonly viommu: Viommu | null;

  /** The engine domain attached contexts point at (0: transactions are terminated). */
  get did(): number { return this.vsmmu ? this.vsmmu.did : this.vtdDid; }
  get driver(): IommuDriver { return this.parent.driver; }
  /** The IOAS behind its stage 2, where attaching reserves the device's regions. */
  get ioas(): Ioas { return this.parent.ioas; }

  /** SMMUv3 CFGI_CD: fetch the configuration again and point the attached streams at the result. */
  reconfigure(): void {
    if (!this.vsmmu || !this.viommu) return;
    this.vsmmu.configure();
    for (const vdev of this.viommu.vdevs.values()) vdev.idev.refreshContexts(this);
  }

  setFault(fault: Fault): void {
    this.fault = fault;
    fault.users++;
  }

  destroy(): void {
    if (this.viommu) {
      this.vsmmu?.destroy();
      this.viommu.nested.delete(this);
      this.viommu.users--;
    } else {
      this.engine.ptDestroy(this.vtdDid);
      this.parent.users--;
    }
    if (this.fault) this.fault.users--;
  }
}

/** A HWPT a device attaches to. */
export type Hwpt = HwptPaging | HwptNested;

const PAGING_FLAGS = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID;

/** What the HWPT ioctls need from the iommufd context. */
export interface HwptCtx {
  readonly engine: Engine;
  readonly objects: ObjectTable;
  /** The caller's memory, for driver data, invalidation entries and bitmaps. */
  readonly mm: AddressSpace;
}

/**
 * IOMMU_HWPT_ALLOC (hw_pagetable.c iommufd_hwpt_alloc). On an IOAS: a manual
 * HWPT_PAGING, filled from the IOAS at once, needing no device attached.
 * On a nest-parent HWPT_PAGING: a HWPT_NESTED, when the device's unit nests
 * (VT-d). On a vIOMMU: a HWPT_NESTED from the guest's vSTE (SMMUv3).
 */
export function hwptAlloc(ctx: HwptCtx, cmd: Decoded<typeof iommu_hwpt_alloc>): void {
  if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  if ((cmd.data_type === IOMMU_HWPT_DATA_NONE) !== (cmd.data_len === 0)) throw new SysError('EINVAL');
  const idev = ctx.objects.get<IommufdDevice>(cmd.dev_id, 'DEVICE');
  const pt = ctx.objects.find(cmd.pt_id);
  if (!pt) throw new SysError('EINVAL'); // iommufd_hwpt_alloc turns a failed lookup into EINVAL
  let hwpt: IommufdObject;
  if (pt.type === 'IOAS') {
    hwpt = allocPaging(ctx, pt as Ioas, idev, cmd.flags, cmd.data_len !== 0);
  } else if (pt.type === 'HWPT_PAGING') {
    hwpt = allocNested(ctx, pt as HwptPaging, idev, cmd);
  } else if (pt.type === 'VIOMMU') {
    hwpt = allocOnViommu(ctx, pt as Viommu, idev, cmd);
  } else {
    throw new SysError('EINVAL');
  }
  if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) {
    let fault: Fault;
    try {
      fault = ctx.objects.get<Fault>(cmd.fault_id, 'FAULT');
    } catch (e) {
      ctx.objects.remove(hwpt);
      throw e;
    }
    (hwpt as Hwpt).setFault(fault);
  }
  cmd.out_hwpt_id = hwpt.id;
}

/**
 * iommufd_hwpt_nested_alloc and the driver's domain_alloc_nested (VT-d:
 * intel_iommu_domain_alloc_nested): flags, data and nesting support
 * (EOPNOTSUPP), a parent that is a manual nest parent of the same driver
 * (EINVAL), the data type (EOPNOTSUPP), then the data itself
 * (iommu_copy_struct_from_user: shorter than its __reserved end EINVAL, a
 * longer than the struct EINVAL, a bad pointer EFAULT).
 */
function allocNested(ctx: HwptCtx, parent: HwptPaging, idev: IommufdDevice, cmd: Decoded<typeof iommu_hwpt_alloc>): HwptNested {
  const driver = idev.pci.driver;
  if ((cmd.flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID)) !== 0 || cmd.data_len === 0 || !driver.nested) throw new SysError('EOPNOTSUPP');
  if (parent.auto || !parent.flags.nestParent || parent.driver !== driver) throw new SysError('EINVAL');
  if (cmd.data_type !== driver.nested.dataType) throw new SysError('EOPNOTSUPP');
  const vtd = iommuCopyStructFromUser(ctx.mm, iommu_hwpt_vtd_s1, cmd.data_uptr, cmd.data_len, iommu_hwpt_vtd_s1.offsetofend('__reserved'));
  return ctx.objects.add(new HwptNested(ctx.engine, parent, { vtd: { flags: vtd.flags, addrWidth: vtd.addr_width, root: vtd.pgtbl_addr } }, {
    pasidCompat: (cmd.flags & IOMMU_HWPT_ALLOC_PASID) !== 0,
  }));
}

/**
 * iommufd_viommu_alloc_hwpt_nested: a device behind another unit EINVAL;
 * flags other than FAULT_ID_VALID | PASID, or no data, EOPNOTSUPP; then the
 * driver's alloc_domain_nested with FAULT_ID_VALID taken out (the mock's:
 * mock_viommu_alloc_domain_nested), or the SMMUv3 driver
 * (arm_vsmmu_alloc_domain_nested): PASID EOPNOTSUPP, the vSTE copied
 * (iommu_copy_struct_from_user: another type or a length other than 16
 * EINVAL, a bad pointer EFAULT) and validated (EIO).
 */
function allocOnViommu(ctx: HwptCtx, viommu: Viommu, idev: IommufdDevice, cmd: Decoded<typeof iommu_hwpt_alloc>): HwptNested {
  if (!sameUnit(viommu.driver, idev.pci.driver)) throw new SysError('EINVAL');
  if ((cmd.flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID)) !== 0 || cmd.data_len === 0) throw new SysError('EOPNOTSUPP');
  const pasidCompat = (cmd.flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
  if (viommu.vtype !== IOMMU_VIOMMU_TYPE_ARM_SMMUV3) {
    const ops = viommu.ops;
    if (!ops?.allocDomainNested) throw new SysError('EOPNOTSUPP');
    const domain = ops.allocDomainNested(cmd.flags & ~IOMMU_HWPT_FAULT_ID_VALID, { type: cmd.data_type, uptr: cmd.data_uptr, len: cmd.data_len }, ctx.mm);
    return ctx.objects.add(new HwptNested(ctx.engine, viommu.hwpt, { domain, viommu }, { pasidCompat }));
  }
  if (pasidCompat) throw new SysError('EOPNOTSUPP');
  if (cmd.data_type !== IOMMU_HWPT_DATA_ARM_SMMUV3) throw new SysError('EINVAL');
  const s = iommu_hwpt_arm_smmuv3;
  const { ste } = iommuCopyStructFromUser(ctx.mm, s, cmd.data_uptr, cmd.data_len, s.size);
  const vste = validateVste(ste[0], ste[1]);
  const domain = new VsmmuDomain({ engine: ctx.engine, phys: ctx.mm.phys, s2: viommu.hwpt.did }, vste);
  return ctx.objects.add(new HwptNested(ctx.engine, viommu.hwpt, { vsmmu: domain, viommu }, { pasidCompat: false }));
}

/** iommufd_hwpt_paging_alloc for a manual HWPT; the object is gone again on failure. */
function allocPaging(ctx: HwptCtx, ioas: Ioas, idev: IommufdDevice, flags: number, userData: boolean): HwptPaging {
  const driver = idev.pci.driver;
  if ((flags & ~PAGING_FLAGS) !== 0) throw new SysError('EOPNOTSUPP');
  if ((flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) && !driver.caps.dirtyTracking) throw new SysError('EOPNOTSUPP');
  if ((flags & IOMMU_HWPT_FAULT_ID_VALID) && (flags & IOMMU_HWPT_ALLOC_NEST_PARENT)) throw new SysError('EOPNOTSUPP');
  // The driver's domain_alloc_paging_flags: no driver data for a paging
  // domain (intel, arm-smmu-v3, amd), and only the flags the unit supports.
  if (userData) throw new SysError('EOPNOTSUPP');
  if ((flags & ~(driver.pagingFlags | IOMMU_HWPT_FAULT_ID_VALID)) !== 0) throw new SysError('EOPNOTSUPP');
  const hwpt = ctx.objects.add(new HwptPaging(ctx.engine, ioas, driver, {
    auto: false,
    nestParent: (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0,
    dirtyTracking: (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0,
    pasidCompat: (flags & IOMMU_HWPT_ALLOC_PASID) !== 0,
  }));
  try {
    hwpt.addToIoas();
  } catch (e) {
    ctx.objects.remove(hwpt);
    throw e;
  }
  return hwpt;
}

/**
 * IOMMU_HWPT_SET_DIRTY_TRACKING (iopt_set_dirty_tracking): only a HWPT
 * allocated with DIRTY_TRACKING has dirty ops (EOPNOTSUPP); enabling clears
 * every dirty bit first, for a clean snapshot.
 */
export function hwptSetDirtyTracking(ctx: HwptCtx, cmd: Decoded<typeof iommu_hwpt_set_dirty_tracking>): void {
  if ((cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0) throw new SysError('EOPNOTSUPP');
  const hwpt = ctx.objects.get<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  if (!hwpt.flags.dirtyTracking) throw new SysError('EOPNOTSUPP');
  ctx.engine.ptSetDirtyTracking(hwpt.did, (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0);
  if (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) hwpt.ops?.clearDirty?.();
}

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP (iopt_read_and_clear_dirty_data): the range
 * checks of iommufd_check_iova_range, then the dirty bits of the domain's
 * page table OR-ed into the user's bitmap (u64 words, bit n = page n from
 * iova), cleared unless NO_CLEAR. The range must be covered by contiguous
 * areas (EINVAL); a domain not tracking refuses a bitmap (EINVAL, as the
 * Intel driver and the mock do).
 */
export function hwptGetDirtyBitmap(ctx: HwptCtx, cmd: Decoded<typeof iommu_hwpt_get_dirty_bitmap>): void {
  if ((cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0 || cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  const hwpt = ctx.objects.get<HwptPaging>(cmd.hwpt_id, 'HWPT_PAGING');
  const iopt = hwpt.ioas.iopt;
  // iommufd_check_iova_range, in u64 arithmetic: check_add_overflow(iova, length - 1).
  const last = cmd.iova + ((cmd.length - 1n) & ULONG_MAX);
  if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
  const end = (last + 1n) & ULONG_MAX;
  const align = iopt.iovaAlignment;
  if (cmd.iova % align !== 0n || end % align !== 0n) throw new SysError('EINVAL');
  if (cmd.page_size === 0n) throw new SysError('EINVAL');
  if (cmd.iova % cmd.page_size !== 0n || end % cmd.page_size !== 0n) throw new SysError('EINVAL');
  if (!hwpt.flags.dirtyTracking) throw new SysError('EOPNOTSUPP');
  iopt.getPages(cmd.iova, last - cmd.iova + 1n, 'EINVAL'); // contiguous areas must cover the range
  if (!ctx.engine.ptDirtyTracking(hwpt.did)) throw new SysError('EINVAL');
  const bits = (last - cmd.iova + 1n) / cmd.page_size;
  const bytes = Number((bits + 63n) / 64n) * 8;
  if (cmd.data > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  const va = Number(cmd.data);
  const bitmap = ctx.mm.read(va, bytes); // EFAULT before anything is cleared
  ctx.mm.write(va, bitmap); // and writable
  const clear = (cmd.flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) === 0;
  if (hwpt.ops?.readDirty) hwpt.ops.readDirty(cmd.iova, last - cmd.iova + 1n, Number(cmd.page_size), clear, bitmap);
  else ctx.engine.ptReadDirtyInto(hwpt.did, cmd.iova, last - cmd.iova + 1n, Number(cmd.page_size), clear, bitmap);
  ctx.mm.write(va, bitmap);
}

/** Linux's cap on entry_num (hw_pagetable.c IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX). */
const INVALIDATE_ENTRY_NUM_MAX = 1 << 19;

/**
 * IOMMU_HWPT_INVALIDATE (iommufd_hwpt_invalidate): entry_num is written back
 * with the entries handled, on failure too. A HWPT_NESTED takes its
 * domain's entries (VT-d stage 1: intel_nested_cache_invalidate_user; the
 * mock's: mock_domain_cache_invalidate_user; an SMMUv3 one has none:
 * EOPNOTSUPP); a VIOMMU its driver's (SMMUv3 commands, the mock's per-device
 * cache entries); any other object, a paging HWPT included, is EINVAL.
 */
export function hwptInvalidate(ctx: HwptCtx, cmd: Decoded<typeof iommu_hwpt_invalidate>, respond: () => void): void {
  let done = 0;
  let err: SysError | null = null;
  try {
    if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
    if (cmd.entry_num !== 0 && (cmd.data_uptr === 0n || cmd.entry_len === 0 || cmd.entry_len > 4096 || cmd.entry_num > INVALIDATE_ENTRY_NUM_MAX)) throw new SysError('EINVAL');
    const obj = ctx.objects.find(cmd.hwpt_id);
    if (!obj) throw new SysError('ENOENT');
    // A paging HWPT is EINVAL; an SMMUv3 nested one has no cache_invalidate_user: EOPNOTSUPP.
    const nested = obj.type === 'HWPT_NESTED' ? obj as HwptNested : null;
    const user = nested?.domain?.cacheInvalidateUser;
    if (obj.type !== 'VIOMMU' && !nested?.s1 && !user) throw new SysError(nested ? 'EOPNOTSUPP' : 'EINVAL');
    const r = obj.type === 'VIOMMU' ? viommuInvalidate(ctx, obj as Viommu, cmd)
      : user ? user.call(nested!.domain, ctx.mm, cmd) : vtdInvalidate(ctx, nested!, cmd);
    done = r.handled;
    if (r.error) throw r.error;
  } catch (e) {
    if (!(e instanceof SysError)) throw e;
    err = e;
  }
  cmd.entry_num = done;
  respond();
  if (err) throw err;
}

/** intel_nested_cache_invalidate_user: entries in order until one is refused; the entries handled, and why it stopped. */
function vtdInvalidate(ctx: HwptCtx, hwpt: HwptNested, cmd: Decoded<typeof iommu_hwpt_invalidate>): { handled: number; error: SysError | null } {
  if (cmd.data_type !== IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) return { handled: 0, error: new SysError('EINVAL') };
  const s = iommu_hwpt_vtd_s1_invalidate;
  for (let i = 0; i < cmd.entry_num; i++) {
    try {
      const entry = iommuCopyStructFromUser(ctx.mm, s, cmd.data_uptr + BigInt(i * cmd.entry_len), cmd.entry_len, s.offsetofend('__reserved'));
      if ((entry.flags & ~IOMMU_VTD_INV_FLAGS_LEAF) !== 0 || entry.__reserved !== 0) throw new SysError('EOPNOTSUPP');
      if (entry.addr % 4096n !== 0n || (entry.npages === ULONG_MAX && entry.addr !== 0n)) throw new SysError('EINVAL');
      if (entry.npages === ULONG_MAX) ctx.engine.flushDomain(hwpt.did);
      else if (entry.npages !== 0n) ctx.engine.flushRange(hwpt.did, entry.addr, min64(entry.npages * 4096n, ULONG_MAX - entry.addr + 1n));
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      return { handled: i, error: e };
    }
  }
  return { handled: cmd.entry_num, error: null };
}

const min64 = (a: bigint, b: bigint) => (a < b ? a : b);

/**
 * iommu_copy_struct_from_user (include/linux/iommu.h): driver data of `len`
 * bytes, at least up to its first version's end and at most the struct
 * (else EINVAL), zero-extended (copy_struct_from_user); a bad pointer EFAULT.
 */
function iommuCopyStructFromUser<S extends StructDef<any, any>>(mm: AddressSpace, s: S, uptr: bigint, len: number, minLen: number): Decoded<S> {
  if (len < minLen || len > s.size) throw new SysError('EINVAL');
  if (uptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  const kbuf = new Uint8Array(s.size);
  kbuf.set(mm.read(Number(uptr), len));
  return s.decode(kbuf) as Decoded<S>;
}
