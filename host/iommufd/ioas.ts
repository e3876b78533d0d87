// IOAS (drivers/iommu/iommufd/ioas.c): an I/O address space, and the
// IOMMU_IOAS_* ioctls. Each handler checks in the order Linux does
// (reference: iommufd-uapi.md 2.2-2.10, 2.19) and leaves no trace on failure.

import type { Engine } from '../engine/engine.js';
import type { KFile } from '../kernel/file.js';
import type { AddressSpace } from '../kernel/mm.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_copy, iommu_ioas_unmap,
  iommu_ioas_iova_ranges, iommu_iova_range, iommu_ioas_allow_iovas, iommu_vfio_ioas, iommu_ioas_change_process,
  IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_IOAS_MAP_READABLE,
  IOMMU_VFIO_IOAS_GET, IOMMU_VFIO_IOAS_SET, IOMMU_VFIO_IOAS_CLEAR,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import { u32At, u64Number, putU64 } from '../uapi/le.js';
import { IommufdObject, type ObjectTable } from './object.js';
import { IoPagetable, ULONG_MAX, PERM_R, PERM_W, type PagesSlice, type Range } from './io_pagetable.js';
import { IoPages, type PagesSource, type PinAccount } from './pages.js';
import type { HwptPaging } from './hw_pagetable.js';

export class Ioas extends IommufdObject {
  readonly type = 'IOAS' as const;
  readonly iopt: IoPagetable;
  /** Every HWPT_PAGING of this IOAS, automatic and manual, in creation order. */
  readonly hwpts: HwptPaging[] = [];

  /** `pageSize`: the kernel's PAGE_SIZE (AddressSpace.pageSize). */
  constructor(engine: Engine, pageSize: number) {
    super();
    this.iopt = new IoPagetable(engine, BigInt(pageSize));
  }

  destroy(): void { this.iopt.unmapAll(); }
}

/** What the IOAS handlers need from the iommufd context. */
export interface IoasCtx {
  readonly engine: Engine;
  readonly objects: ObjectTable;
  readonly mm: AddressSpace;
  /** The account new pages are charged to; null when the mapper has CAP_IPC_LOCK. */
  pinAccount(): PinAccount | null;
  fdget(fd: number): KFile | undefined;
  /** The IOAS the VFIO type1 compat ioctls act on (IOMMU_VFIO_IOAS). */
  vfioIoas: Ioas | null;
}

const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
// Constants made once, not per call (BigInt() of a number is a conversion).
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** SIZE_MAX - PAGE_SIZE for each kernel page size (iopt_alloc_pages). */
const LENGTH_MAX = new Map([4096, 16384, 65536].map((p) => [p, ULONG_MAX - BigInt(p)]));

/** IOMMU_IOAS_ALLOC */
export function ioasAlloc(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_alloc>): void {
  if (cmd.flags !== 0) throw new SysError('EOPNOTSUPP');
  cmd.out_ioas_id = ctx.objects.add(new Ioas(ctx.engine, ctx.mm.pageSize)).id;
}

/**
 * The checks MAP, MAP_FILE and COPY share before the IOAS lookup (two or
 * three values: fixed parameters, no rest array on the IOAS_MAP fast path).
 */
function checkMapFlags(flags: number, a: bigint, b: bigint, c = 0n): void {
  if (a >= ULONG_MAX || b >= ULONG_MAX || c >= ULONG_MAX) throw new SysError('EOVERFLOW');
  if ((flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)) === 0) throw new SysError('EINVAL');
}

const permOf = (flags: number) => (flags & IOMMU_IOAS_MAP_READABLE ? PERM_R : 0) | (flags & IOMMU_IOAS_MAP_WRITEABLE ? PERM_W : 0);
const fixedOf = (flags: number, iova: bigint) => (flags & IOMMU_IOAS_MAP_FIXED_IOVA ? iova : null);

/**
 * iopt_alloc_pages: a new pages object over `source`; an overflow of the
 * start is EOVERFLOW, a length of 0 or above SIZE_MAX - PAGE_SIZE EINVAL.
 */
function allocPages(ctx: IoasCtx, source: PagesSource, start: bigint, length: bigint, writable: boolean): IoPages {
  // A user range may not reach ULONG_MAX (uptr + length); a file range may end on it (start + length - 1).
  // Two values below 2^53 cannot: the check is skipped then, as ULONG_MAX - length is a bigint allocation.
  if ((start > MAX_SAFE || length > MAX_SAFE) && start > ULONG_MAX - length + (source.kind === 'file' ? 1n : 0n)) throw new SysError('EOVERFLOW');
  if (length === 0n || length > LENGTH_MAX.get(ctx.mm.pageSize)!) throw new SysError('EINVAL');
  return new IoPages(ctx.mm, source, Number(length), writable, ctx.pinAccount());
}

/** IOMMU_IOAS_MAP: map user memory at a fixed or an allocated IOVA. */
export function ioasMap(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_map>): void {
  if ((cmd.flags & ~MAP_FLAGS) !== 0 || cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  checkMapFlags(cmd.flags, cmd.iova, cmd.length);
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  // A VA the process cannot have (not a safe integer here, above TASK_SIZE in
  // Linux) is kept as NaN: accepted while nothing pins it, EFAULT when pinned.
  const va = cmd.user_va <= MAX_SAFE ? Number(cmd.user_va) : NaN;
  const pages = allocPages(ctx, { kind: 'user', va }, cmd.user_va, cmd.length, (cmd.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0);
  cmd.iova = ioas.iopt.map([{ pages, offset: 0, length: pages.length }], cmd.length, fixedOf(cmd.flags, cmd.iova), permOf(cmd.flags));
}

// Field offsets of the fast paths below, from the uapi table.
const MAP_AT = {
  flags: iommu_ioas_map.offsetOf('flags'), ioasId: iommu_ioas_map.offsetOf('ioas_id'), reserved: iommu_ioas_map.offsetOf('__reserved'),
  userVa: iommu_ioas_map.offsetOf('user_va'), length: iommu_ioas_map.offsetOf('length'), iova: iommu_ioas_map.offsetOf('iova'),
};
const UNMAP_AT = { ioasId: iommu_ioas_unmap.offsetOf('ioas_id'), iova: iommu_ioas_unmap.offsetOf('iova'), length: iommu_ioas_unmap.offsetOf('length') };

/**
 * IOMMU_IOAS_MAP's common case read in place from the caller's struct, in
 * numbers: a fixed IOVA, every u64 below 2^53, every check passing. No
 * decoded struct and no BigInt: those were most of a 4 KiB map's cost.
 * false, with nothing done, for anything else: ioasMap() then runs from
 * the decoded struct and gives the errno. The checks before the IOAS
 * lookup are ioasMap's (so the lookup's ENOENT comes at its place); after
 * it, IoPagetable.mapFixedN makes map()'s. The IOVA is not written back: a
 * fixed one is returned as it came.
 */
export function ioasMapFast(ctx: IoasCtx, k: Uint8Array): boolean {
  const flags = u32At(k, MAP_AT.flags);
  if ((flags & ~MAP_FLAGS) !== 0 || u32At(k, MAP_AT.reserved) !== 0 || (flags & IOMMU_IOAS_MAP_FIXED_IOVA) === 0 ||
    (flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)) === 0) return false;
  const va = u64Number(k, MAP_AT.userVa), length = u64Number(k, MAP_AT.length), iova = u64Number(k, MAP_AT.iova);
  // allocPages's checks too: a start that overflows needs more than 2^53; a length of 0 is EINVAL.
  if (va < 0 || length <= 0 || iova < 0) return false;
  const ioas = ctx.objects.get<Ioas>(u32At(k, MAP_AT.ioasId), 'IOAS');
  const writable = (flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0;
  const pages = new IoPages(ctx.mm, { kind: 'user', va }, length, writable, ctx.pinAccount());
  return ioas.iopt.mapFixedN(pages, length, iova, permOf(flags));
}

/**
 * IOMMU_IOAS_UNMAP's common case in place, in numbers (see ioasMapFast):
 * iova and length below 2^53 and an unmap that succeeds; the bytes
 * unmapped are written over `length`. false, with nothing done, otherwise
 * (unmap all, EOVERFLOW, ENOENT, ...): ioasUnmap() then answers.
 */
export function ioasUnmapFast(ctx: IoasCtx, k: Uint8Array): boolean {
  const ioas = ctx.objects.get<Ioas>(u32At(k, UNMAP_AT.ioasId), 'IOAS');
  const iova = u64Number(k, UNMAP_AT.iova), length = u64Number(k, UNMAP_AT.length);
  if (iova < 0 || length < 0) return false;
  const done = ioas.iopt.unmapN(iova, length);
  if (done < 0) return false;
  // Written only when it differs (the superset rule): the same value has the same bytes.
  if (done !== length) putU64(k, UNMAP_AT.length, done);
  return true;
}

/**
 * IOMMU_IOAS_MAP_FILE: map [start, start + length) of a file. The file is
 * only looked at when its pages are pinned (memfd_pin_folios): then a file
 * that is not a memfd, or a page past its end, is EINVAL.
 */
export function ioasMapFile(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_map_file>): void {
  if ((cmd.flags & ~MAP_FLAGS) !== 0) throw new SysError('EOPNOTSUPP');
  checkMapFlags(cmd.flags, cmd.iova, cmd.length);
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  const file = ctx.fdget(cmd.fd);
  if (!file) throw new SysError('EBADF');
  const start = cmd.start <= MAX_SAFE ? Number(cmd.start) : NaN;
  const pages = allocPages(ctx, { kind: 'file', file, start }, cmd.start, cmd.length, (cmd.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0);
  cmd.iova = ioas.iopt.map([{ pages, offset: 0, length: pages.length }], cmd.length, fixedOf(cmd.flags, cmd.iova), permOf(cmd.flags));
}

/**
 * IOMMU_IOAS_COPY: map the pages behind any contiguous sub-range of one IOAS
 * into another (or the same), sharing them: they are pinned once.
 */
export function ioasCopy(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_copy>): void {
  if ((cmd.flags & ~MAP_FLAGS) !== 0) throw new SysError('EOPNOTSUPP');
  checkMapFlags(cmd.flags, cmd.length, cmd.src_iova, cmd.dst_iova);
  const src = ctx.objects.get<Ioas>(cmd.src_ioas_id, 'IOAS');
  const slices: PagesSlice[] = src.iopt.getPages(cmd.src_iova, cmd.length);
  const dst = ctx.objects.get<Ioas>(cmd.dst_ioas_id, 'IOAS');
  cmd.dst_iova = dst.iopt.map(slices, cmd.length, fixedOf(cmd.flags, cmd.dst_iova), permOf(cmd.flags));
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

/** A user VA from a u64 field, or EFAULT. */
function userPtr(p: bigint): number {
  if (p > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  return Number(p);
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
  // One copy_to_user per range, as ioas.c does: a fault keeps what was copied.
  const entry = new Uint8Array(iommu_iova_range.size);
  for (let i = 0; i < Math.min(room, ranges.length); i++) {
    const at = userPtr(cmd.allowed_iovas + BigInt(i * iommu_iova_range.size));
    ctx.mm.write(at, iommu_iova_range.encode({ start: ranges[i].start, last: ranges[i].last }, entry));
  }
  cmd.num_iovas = ranges.length;
  cmd.out_iova_alignment = ioas.iopt.iovaAlignment;
  if (ranges.length > room) {
    respond();
    throw new SysError('EMSGSIZE');
  }
}

/**
 * IOMMU_IOAS_ALLOW_IOVAS (iommufd_ioas_load_iovas + iopt_set_allow_iova):
 * each range needs start < last and must not overlap the ones before it
 * (EINVAL); one meeting a reserved range is EADDRINUSE. The list is replaced
 * whole, or not at all.
 */
export function ioasAllowIovas(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_allow_iovas>): void {
  if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  const ioas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
  const ranges: Range[] = [];
  for (let i = 0; i < cmd.num_iovas; i++) {
    const raw = ctx.mm.read(userPtr(cmd.allowed_iovas + BigInt(i * iommu_iova_range.size)), iommu_iova_range.size);
    const r = iommu_iova_range.decode(raw);
    if (r.start >= r.last) throw new SysError('EINVAL');
    if (ranges.some((x) => x.start <= r.last && x.last >= r.start)) throw new SysError('EINVAL');
    ranges.push({ start: r.start, last: r.last });
  }
  ioas.iopt.setAllowed(ranges);
}

/** IOMMU_OPTION_HUGE_PAGES on one IOAS (iommufd_ioas_option). */
export function ioasOptionHugePages(ctx: IoasCtx, objectId: number, op: 'get' | 'set' | 'other', val: bigint): bigint {
  const ioas = ctx.objects.get<Ioas>(objectId, 'IOAS');
  if (op === 'get') return ioas.iopt.hugePages ? 1n : 0n;
  if (op !== 'set') throw new SysError('EOPNOTSUPP');
  if (val !== 0n && val !== 1n) throw new SysError('EINVAL');
  ioas.iopt.setHugePages(val === 1n);
  return val;
}

/** IOMMU_VFIO_IOAS: get, set or clear the IOAS of the VFIO type1 compat ioctls. */
export function vfioIoas(ctx: IoasCtx, cmd: Decoded<typeof iommu_vfio_ioas>): void {
  if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET:
      if (!ctx.vfioIoas) throw new SysError('ENODEV');
      cmd.ioas_id = ctx.vfioIoas.id;
      return;
    case IOMMU_VFIO_IOAS_SET:
      ctx.vfioIoas = ctx.objects.get<Ioas>(cmd.ioas_id, 'IOAS');
      return;
    case IOMMU_VFIO_IOAS_CLEAR:
      ctx.vfioIoas = null;
      return;
    default:
      throw new SysError('EOPNOTSUPP');
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS: every area of every IOAS must be file-backed
 * (EINVAL otherwise); then the pin charge moves to the calling process. This
 * host simulates one process, so the charge stays where it is: the call
 * checks and succeeds, as Linux does when called from the same process.
 */
export function ioasChangeProcess(ctx: IoasCtx, cmd: Decoded<typeof iommu_ioas_change_process>): void {
  if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
  for (const obj of ctx.objects.values()) {
    if (obj.type === 'IOAS' && (obj as Ioas).iopt.areas.some((a) => !a.pages.isFile)) throw new SysError('EINVAL');
  }
}
