// /dev/iommu (drivers/iommu/iommufd/main.c): one iommufd context per open,
// the ioctl dispatch with Linux's extensible-struct rules, IOMMU_DESTROY, and
// the teardown when the last reference to the file goes.

import type { Engine } from '../engine/engine.js';
import { type AddressSpace, MAP_SHARED, MAP_SHARED_VALIDATE, PROT_EXEC } from '../kernel/mm.js';
import { KFile } from '../kernel/file.js';
import { SysError } from '../uapi/errno.js';
import {
  IOMMUFD_TYPE, IOMMUFD_CMD_BASE, IOMMUFD_CMD_TEST, IOMMUFD_TEST_IOCTL, iommufdIoctlByNr, iommufdIoctlByName, _IOC_NR, _IOC_TYPE,
  iommu_destroy, iommu_option, type IoctlDesc,
  IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, IOMMU_OPTION_OP_SET,
} from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import { ObjectTable } from './object.js';
import {
  ioasAlloc, ioasMap, ioasMapFast, ioasUnmapFast, ioasMapFile, ioasCopy, ioasUnmap, ioasIovaRanges, ioasAllowIovas, ioasOptionHugePages,
  vfioIoas, ioasChangeProcess, type Ioas, type IoasCtx,
} from './ioas.js';
import type { PinAccount } from './pages.js';
import { hwptAlloc, hwptSetDirtyTracking, hwptGetDirtyBitmap, hwptInvalidate } from './hw_pagetable.js';
import { viommuAlloc, vdeviceAlloc, hwQueueAlloc, type ViommuCtx } from './viommu.js';
import type { MemFile } from '../kernel/memfd.js';
import { getHwInfo } from './hw_info.js';
import { faultQueueAlloc, veventqAlloc, FAULT_RING_DEPTH, FAULT_RING_MAX, type FaultCtx, type FaultRingSize } from './eventq.js';
import { iommufdTest, type SelftestCtx, type TestEnv } from './selftest.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Handler = (ctx: IommufdFile, cmd: any, respond: () => void) => void;

/** Every command of the table; IOMMU_TEST_CMD only with CONFIG_IOMMUFD_TEST (`test`). */
const HANDLERS: Readonly<Record<string, Handler>> = {
  IOMMU_DESTROY: (ctx, cmd: Decoded<typeof iommu_destroy>) => ctx.destroy(cmd.id),
  IOMMU_IOAS_ALLOC: ioasAlloc,
  IOMMU_IOAS_ALLOW_IOVAS: ioasAllowIovas,
  IOMMU_IOAS_COPY: ioasCopy,
  IOMMU_IOAS_IOVA_RANGES: ioasIovaRanges,
  IOMMU_IOAS_MAP: ioasMap,
  IOMMU_IOAS_UNMAP: ioasUnmap,
  IOMMU_OPTION: (ctx, cmd: Decoded<typeof iommu_option>) => ctx.option(cmd),
  IOMMU_HWPT_ALLOC: hwptAlloc,
  IOMMU_GET_HW_INFO: getHwInfo,
  IOMMU_HWPT_SET_DIRTY_TRACKING: hwptSetDirtyTracking,
  IOMMU_HWPT_GET_DIRTY_BITMAP: hwptGetDirtyBitmap,
  IOMMU_HWPT_INVALIDATE: hwptInvalidate,
  IOMMU_FAULT_QUEUE_ALLOC: faultQueueAlloc,
  IOMMU_VFIO_IOAS: vfioIoas,
  IOMMU_IOAS_MAP_FILE: ioasMapFile,
  IOMMU_IOAS_CHANGE_PROCESS: ioasChangeProcess,
  IOMMU_VIOMMU_ALLOC: viommuAlloc,
  IOMMU_VDEVICE_ALLOC: vdeviceAlloc,
  IOMMU_VEVENTQ_ALLOC: veventqAlloc,
  IOMMU_HW_QUEUE_ALLOC: hwQueueAlloc,
  IOMMU_TEST_CMD: iommufdTest,
};

/**
 * HANDLERS by command number (the table's rows, the selftest's included):
 * an array load per ioctl instead of a property lookup by name.
 */
const HANDLER_BY_NR: readonly (Handler | undefined)[] = (() => {
  const out = new Array<Handler | undefined>(256).fill(undefined);
  for (const [name, handler] of Object.entries(HANDLERS)) {
    const desc = name === IOMMUFD_TEST_IOCTL.name ? IOMMUFD_TEST_IOCTL : iommufdIoctlByName(name);
    if (!desc) throw new Error(`iommufd: no uapi row for handler ${name}`);
    out[desc.nr] = handler;
  }
  return out;
})();

/**
 * Fast paths by command number: a command's common case read in place from
 * the caller's struct, its answer written there. One returns false, having
 * done nothing, for a case it leaves to the handler (the decoded struct).
 */
type FastHandler = (ctx: IommufdFile, arg: Uint8Array) => boolean;
const FAST_BY_NR: readonly (FastHandler | undefined)[] = (() => {
  const out = new Array<FastHandler | undefined>(256).fill(undefined);
  out[iommufdIoctlByName('IOMMU_IOAS_MAP')!.nr] = ioasMapFast;
  out[iommufdIoctlByName('IOMMU_IOAS_UNMAP')!.nr] = ioasUnmapFast;
  return out;
})();

let fastPaths = true;
/**
 * Turn the fast paths off (or on again); returns the setting before. For
 * the differential test that drives both paths with the same calls.
 */
export function setIoctlFastPaths(on: boolean): boolean {
  const was = fastPaths;
  fastPaths = on;
  return was;
}

/**
 * Whether a command's handler takes `respond` (declares a third parameter:
 * it copies the struct back before it fails, as IOAS_IOVA_RANGES does before
 * EMSGSIZE). Only those get the closure: most of an ioctl's cost is garbage.
 */
const TAKES_RESPOND: readonly boolean[] = HANDLER_BY_NR.map((h) => h !== undefined && h.length > 2);

/**
 * One kernel buffer per command number, reused: taken for a call and put
 * back when it ends. A call of the same command made while one runs (a
 * handler's own ioctl) finds none and allocates. Small typed arrays are
 * most of an ioctl's garbage.
 */
const KBUFS: (Uint8Array | null)[] = new Array<Uint8Array | null>(256).fill(null);

/**
 * A handler's early copy back (the count before EMSGSIZE): the buffer then
 * holds cmd, and so does `before`. Made in a function of its own so that
 * ioctl() captures nothing (a closure there costs every call a context).
 */
function earlyRespond(desc: IoctlDesc, cmd: Decoded<IoctlDesc['struct']>, before: Decoded<IoctlDesc['struct']>,
  kbuf: Uint8Array, arg: Uint8Array, size: number): () => void {
  return () => { copyStructToUser(desc, cmd, before, kbuf, arg, size); Object.assign(before, cmd); };
}

/** A respond for handlers that never call it (TAKES_RESPOND false). */
const NO_RESPOND = (): void => { throw new Error('iommufd: this handler does not respond early'); };

/** The simulated process's credentials and its locked-memory budget. */
export interface Credentials {
  readonly capSysResource: boolean;
  readonly capIpcLock: boolean;
  readonly account: PinAccount;
}

/** What the iommufd needs from the process's fd table. */
export interface FdTable {
  get(fd: number): KFile | undefined;
  /** Install a new file at the lowest free fd. */
  install(file: KFile): number;
}

export class IommufdFile extends KFile implements IoasCtx, FaultCtx, SelftestCtx, ViommuCtx {
  readonly objects = new ObjectTable();
  /** Regions drivers registered for mmap (ictx->mt_mmap), by fd offset, sorted. */
  private readonly mmapRegions: { offset: number; length: number; pages: MemFile }[] = [];
  vfioIoas: Ioas | null = null;
  /** IOMMU_OPTION_RLIMIT_MODE: 1 charges pins vfio-type1 style (mm->locked_vm). */
  private accountMm = false;

  /**
   * @param test the machine's side of IOMMU_TEST_CMD when the kernel is
   *   built with CONFIG_IOMMUFD_TEST, else null (the command is ENOTTY).
   */
  constructor(readonly engine: Engine, readonly mm: AddressSpace, private readonly creds: Credentials, private readonly fds: FdTable,
    readonly test: TestEnv | null = null, readonly faultRing: FaultRingSize = { depth: FAULT_RING_DEPTH, maxDepth: FAULT_RING_MAX }) {
    super('/dev/iommu');
  }

  get file(): KFile { return this; }
  fdget(fd: number): KFile | undefined { return this.fds.get(fd); }
  installFd(file: KFile): number { return this.fds.install(file); }

  /**
   * Pins are charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK
   * (IOPT_PAGES_ACCOUNT_NONE). Both account modes charge the one simulated
   * user and process, so they share a budget here.
   */
  pinAccount(): PinAccount | null { return this.creds.capIpcLock ? null : this.creds.account; }

  /** IOMMU_DESTROY; destroying the VFIO compat IOAS also clears it. */
  destroy(id: number): void {
    const obj = this.objects.find(id);
    this.objects.destroyUser(id);
    if (obj === this.vfioIoas) this.vfioIoas = null;
  }

  /** IOMMU_OPTION (main.c iommufd_option, ioas.c iommufd_option_rlimit_mode). */
  option(cmd: Decoded<typeof iommu_option>): void {
    if (cmd.__reserved !== 0) throw new SysError('EOPNOTSUPP');
    const op = cmd.op === IOMMU_OPTION_OP_GET ? 'get' : cmd.op === IOMMU_OPTION_OP_SET ? 'set' : 'other';
    if (cmd.option_id === IOMMU_OPTION_HUGE_PAGES) {
      cmd.val64 = ioasOptionHugePages(this, cmd.object_id, op, cmd.val64);
      return;
    }
    if (cmd.option_id !== IOMMU_OPTION_RLIMIT_MODE || cmd.object_id !== 0) throw new SysError('EOPNOTSUPP');
    if (op === 'get') { cmd.val64 = this.accountMm ? 1n : 0n; return; }
    if (op !== 'set') throw new SysError('EOPNOTSUPP');
    if (!this.creds.capSysResource) throw new SysError('EPERM');
    if (this.objects.size > 0) throw new SysError('EBUSY');
    if (cmd.val64 > 1n) throw new SysError('EINVAL');
    this.accountMm = cmd.val64 === 1n;
  }

  /**
   * iommufd_fops_ioctl: the table row by number, the size word, min_size
   * (EINVAL), the zero-tail rule (E2BIG), the handler, then the copy back of
   * min(size, sizeof) bytes.
   */
  override ioctl(request: number, arg: Uint8Array): number {
    const nr = _IOC_NR(request);
    // Numbers outside the table go to the VFIO type1 compat layer, which
    // answers ENOTTY (-ENOIOCTLCMD) for what it does not know.
    const desc = nr === IOMMUFD_CMD_TEST && this.test ? IOMMUFD_TEST_IOCTL : nr >= IOMMUFD_CMD_BASE ? iommufdIoctlByNr(nr) : undefined;
    if (!desc) throw new SysError('ENOTTY');
    if (arg.length < 4) throw new SysError('EFAULT');
    const size = (arg[0] | (arg[1] << 8) | (arg[2] << 16) | (arg[3] << 24)) >>> 0;
    const handler = HANDLER_BY_NR[nr];
    if (!handler || desc.request !== request || _IOC_TYPE(request) !== IOMMUFD_TYPE) throw new SysError('ENOTTY');
    if (size < desc.minSize) throw new SysError('EINVAL');
    // A fast path takes a struct of the kernel's size in place: no copy in
    // (there is no tail to check or to zero-extend), and its answer, the
    // fields it changed, is the copy back (the others would be written with
    // the bytes they hold). Anything it leaves goes the usual way.
    const fast = fastPaths ? FAST_BY_NR[nr] : undefined;
    if (fast !== undefined && size === desc.struct.size && arg.length >= size && fast(this, arg)) return 0;
    const kbuf = copyStructFromUser(desc, arg, size, KBUFS[nr]);
    KBUFS[nr] = null;
    try {
      const cmd = desc.struct.decode(kbuf);
      // The values as copied in: the copy back re-encodes only what the handler changed.
      const before = desc.struct.snapshot(cmd);
      handler(this, cmd, TAKES_RESPOND[nr] ? earlyRespond(desc, cmd, before, kbuf, arg, size) : NO_RESPOND);
      copyStructToUser(desc, cmd, before, kbuf, arg, size);
    } finally {
      KBUFS[nr] = kbuf;
    }
    return 0;
  }

  /**
   * _iommufd_alloc_mmap: the lowest free range of the fd's mmap offsets, from
   * PAGE_SIZE up (mtree_alloc_range), for `length` bytes of `pages`.
   */
  allocMmap(pages: MemFile, length: number): number {
    let offset = this.mm.pageSize;
    for (const r of this.mmapRegions) {
      if (r.offset - offset >= length) break;
      offset = Math.max(offset, r.offset + r.length);
    }
    this.mmapRegions.push({ offset, length, pages });
    this.mmapRegions.sort((a, b) => a.offset - b.offset);
    return offset;
  }

  /** iommufd_remove_mmap: mappings already made stay until munmap. */
  destroyMmap(offset: number): void {
    const i = this.mmapRegions.findIndex((r) => r.offset === offset);
    if (i >= 0) this.mmapRegions.splice(i, 1);
  }

  /**
   * iommufd_fops_mmap (Linux 6.17+): only MAP_SHARED (EINVAL), never
   * PROT_EXEC (EPERM), a page-aligned length (EINVAL), and exactly a region a
   * vIOMMU registered: the offset is looked up among the regions (ENXIO when
   * in none), then offset and length must be the region's own (ENXIO). The
   * mapping is of the region's pages; it holds the owner and this file.
   */
  mmap(length: number, prot: number, flags: number, offset: number): number {
    if ((flags & MAP_SHARED_VALIDATE) !== MAP_SHARED && (flags & MAP_SHARED_VALIDATE) !== MAP_SHARED_VALIDATE) throw new SysError('EINVAL');
    if (prot & PROT_EXEC) throw new SysError('EPERM');
    if (length <= 0 || length % this.mm.pageSize !== 0) throw new SysError('EINVAL');
    const r = this.mmapRegions.find((x) => offset >= x.offset && offset < x.offset + x.length);
    if (!r || r.offset !== offset || r.length !== length) throw new SysError('ENXIO');
    return this.mm.mmap(length, prot, MAP_SHARED, r.pages, 0);
  }

  /** Last reference gone: destroy objects whose only user is the table until none is left. */
  protected override release(): void {
    while (this.objects.size > 0) {
      let progress = false;
      for (const obj of [...this.objects.values()]) {
        if (obj.users === 1) { this.objects.remove(obj); progress = true; }
      }
      if (!progress) throw new Error(`iommufd teardown: objects still in use: ${[...this.objects.values()].map((o) => `${o.type} ${o.id} (users ${o.users})`).join(', ')}`); // a refcount bug
    }
  }
}

/**
 * copy_struct_from_user: a shorter struct is zero-extended; a longer one is
 * accepted only if its tail is zero (E2BIG); bytes the caller did not
 * provide are a fault (EFAULT).
 */
function copyStructFromUser(desc: IoctlDesc, arg: Uint8Array, size: number, spare: Uint8Array | null): Uint8Array {
  if (arg.length < size) throw new SysError('EFAULT');
  const ksize = desc.struct.size;
  for (let i = ksize; i < size; i++) if (arg[i] !== 0) throw new SysError('E2BIG');
  const n = Math.min(size, ksize);
  // A reused buffer (of this struct's size) is zeroed past what the copy fills; a fresh one is zero.
  const reuse = spare !== null && spare.length === ksize;
  const kbuf = reuse ? spare : new Uint8Array(ksize);
  if (reuse && n < ksize) kbuf.fill(0, n);
  copyBytes(kbuf, arg, n);
  return kbuf;
}

/**
 * The copy back (iommufd_ucmd_respond): the kernel's buffer as the handler
 * left it, min(size, sizeof) bytes of it. The buffer still holds the bytes
 * copied in; the fields the handler changed are written over them.
 */
function copyStructToUser(desc: IoctlDesc, cmd: Decoded<IoctlDesc['struct']>, before: Decoded<IoctlDesc['struct']>,
  kbuf: Uint8Array, arg: Uint8Array, size: number): void {
  desc.struct.encodeChanged(cmd, before, kbuf);
  copyBytes(arg, kbuf, Math.min(size, desc.struct.size));
}

/**
 * to[0, n) = from[0, n). Never through `subarray`: a view of a fresh
 * on-heap typed array makes V8 move it off the heap (~300 ns). When all of
 * `from` goes (a struct of the kernel's size, the usual case) one `set`;
 * else byte by byte (about twice as slow as `set` for 40 bytes).
 */
function copyBytes(to: Uint8Array, from: Uint8Array, n: number): void {
  if (from.length === n) { to.set(from); return; }
  for (let i = 0; i < n; i++) to[i] = from[i];
}
