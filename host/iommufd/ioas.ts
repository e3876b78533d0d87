// IOAS (drivers/iommu/iommufd/ioas.c): an I/O address space, and the
// IOMMU_IOAS_* ioctls. Each handler checks in the order Linux does
// (reference: iommufd-uapi.md 2.2-2.8) and leaves no trace on failure.

import type { Engine } from '../engine/engine.js';
import type { AddressSpace } from '../kernel/mm.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_unmap, iommu_ioas_iova_ranges, iommu_iova_range,
  IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_IOAS_MAP_READABLE,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import { IommufdObject, type ObjectTable } from './object.js';
import { IoPagetable, IoPages, ULONG_MAX, PERM_R, PERM_W } from './io_pagetable.js';
import type { HwptPaging } from './hw_pagetable.js';

export class Ioas extends IommufdObject {
  readonly type = 'IOAS' as const;
  readonly iopt: IoPagetable;
  /** Every HWPT_PAGING of this IOAS, automatic and manual, in creation order. */
  readonly hwpts: HwptPaging[] = [];

  constructor(engine: Engine) {
    super();
    this.iopt = new IoPagetable(engine);
  }

  destroy(): void { this.iopt.unmapAll(); }
}

/** What the IOAS handlers need from the iommufd context. */
export interface IoasCtx {
  readonly engine: Engine;
  readonly objects: ObjectTable;
  readonly mm: AddressSpace;
}

/** IOMMU_IOAS_ALLOC */
export function ioasAlloc(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_alloc>): void {
  if (cmd.flags !== 0) throw new SysError('EOPNOTSUPP');
  cmd.out_ioas_id = ctx.objects.add(new Ioas(ctx.engine)).id;
}

const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

/** IOMMU_IOAS_MAP: map user memory at a fixed or an allocated IOVA. */
export function ioasMap(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_map>): void {
  if ((cmd.flags & ~MAP_FLAGS) !== 0 || cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) throw new SysError('EOVERFLOW');
  if ((cmd.flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)) === 0) throw new SysError('EINVAL');
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  cmd.iova = mapPages(ioas.iopt, ctx.mm, cmd.user_va, cmd.length, cmd.iova, cmd.flags);
}

/** iopt_map_user_pages: place and insert the area; returns its IOVA. */
function mapPages(iopt: IoPagetable, mm: AddressSpace, va: bigint, length: bigint, iova: bigint, flags: number): bigint {
  // pages.c iopt_alloc_user_pages(): the overflow of uptr + length first, then
  // iopt_alloc_pages(): a length of 0 or above SIZE_MAX - PAGE_SIZE.
  if (va + length > ULONG_MAX) throw new SysError('EOVERFLOW');
  if (length === 0n || length > ULONG_MAX - 4096n) throw new SysError('EINVAL');
  const align = iopt.iovaAlignment;
  if (length % align !== 0n) throw new SysError('EINVAL');
  if (flags & IOMMU_IOAS_MAP_FIXED_IOVA) iopt.checkIova(iova, length);
  else iova = iopt.allocIova(length, va);
  if ((va % 4096n) % align !== 0n) throw new SysError('EINVAL');
  // A VA the process cannot have (not a safe integer here, above TASK_SIZE in
  // Linux) is kept as NaN: accepted while nothing pins it, EFAULT when pinned.
  const userVa = va <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(va) : NaN;
  const pages = new IoPages(mm, userVa, Number(length), (flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0);
  const perm = (flags & IOMMU_IOAS_MAP_READABLE ? PERM_R : 0) | (flags & IOMMU_IOAS_MAP_WRITEABLE ? PERM_W : 0);
  iopt.insertArea({ iova, last: iova + length - 1n, pages, offset: 0, perm });
  return iova;
}

/** IOMMU_IOAS_UNMAP: whole areas only (superset rule), or everything. */
export function ioasUnmap(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_unmap>): void {
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  if (cmd.iova === 0n && cmd.length === ULONG_MAX) {
    cmd.length = ioas.iopt.unmapAll();
    return;
  }
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) throw new SysError('EOVERFLOW');
  cmd.length = ioas.iopt.unmap(cmd.iova, cmd.length);
}

/**
 * IOMMU_IOAS_IOVA_RANGES: the usable ranges into allowed_iovas (user memory).
 * Too many for num_iovas: the struct with the total still goes out, then EMSGSIZE.
 */
export function ioasIovaRanges(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_iova_ranges>, respond: () => void): void {
  if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  const ranges = ioas.iopt.iovaRanges();
  const room = cmd.num_iovas;
  const n = Math.min(room, ranges.length);
  // One copy_to_user per range, as ioas.c does: a fault keeps what was copied.
  const entry = new Uint8Array(iommu_iova_range.size);
  for (let i = 0; i < n; i++) {
    const at = cmd.allowed_iovas + BigInt(i * iommu_iova_range.size);
    if (at > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
    ctx.mm.write(Number(at), iommu_iova_range.encode({ start: ranges[i].start, last: ranges[i].last }, entry));
  }
  cmd.num_iovas = ranges.length;
  cmd.out_iova_alignment = ioas.iopt.iovaAlignment;
  if (ranges.length > room) {
    respond();
    throw new SysError('EMSGSIZE');
  }
}
