// IOMMU_TEST_CMD (drivers/iommu/iommufd/selftest.c, iommufd_test()): the
// test-only ioctl of a kernel built with CONFIG_IOMMUFD_TEST, which the
// kernel's own selftests (tools/testing/selftests/iommu/) drive. A host
// created with `iommufdTest: true` has it.
//
// Every op works on the real objects: mock devices are PCI functions behind
// the mock IOMMU (host/iommu/mock.ts) bound and attached through the same
// DEVICE code VFIO uses; MD_CHECK_MAP walks the mock domain's engine table;
// MD_CHECK_REFS reads frame pin counts; accesses pin the IOAS's pages
// objects and are told of unmaps through the IOAS (IoptAccess); DIRTY flags
// the mock domain's 2 KiB IOPTEs, which HWPT_GET_DIRTY_BITMAP reads with the
// table's own dirty bits.

import type { Engine } from '../engine/engine.js';
import { mockTable, mockDev, mockDevCreate, MockNestedDomain } from '../iommu/mock.js';
import { KFile } from '../kernel/file.js';
import type { AddressSpace, PhysRun } from '../kernel/mm.js';
import type { PciFunction } from '../kernel/pci.js';
import { SEG_SPAN, type PhysMem } from '../kernel/phys.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_test_cmd, IOMMU_TEST_CMD_OPS,
  IOMMU_TEST_OP_ADD_RESERVED, IOMMU_TEST_OP_MOCK_DOMAIN, IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_MD_CHECK_MAP, IOMMU_TEST_OP_MD_CHECK_REFS, IOMMU_TEST_OP_MD_CHECK_IOTLB, IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, IOMMU_TEST_OP_ACCESS_PAGES, IOMMU_TEST_OP_ACCESS_RW, IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, IOMMU_TEST_OP_DIRTY, IOMMU_TEST_OP_TRIGGER_IOPF, IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_TRIGGER_VEVENT, IOMMU_TEST_OP_PASID_ATTACH, IOMMU_TEST_OP_PASID_REPLACE, IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  MOCK_FLAGS_ACCESS_WRITE, MOCK_FLAGS_ACCESS_SYZ, MOCK_ACCESS_RW_WRITE, MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID,
  MOCK_DEV_CACHE_ID_MAX, IOMMU_TEST_PASID_RESERVED, MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  iommu_viommu_event_selftest, IOMMU_VEVENTQ_TYPE_SELFTEST,
} from '../uapi/iommufd.js';
import type { Decoded, StructDef } from '../uapi/struct.js';
import { IommufdObject, type ObjectTable } from './object.js';
import { IommufdDevice, NO_PASID } from './device.js';
import type { HwptPaging, HwptNested } from './hw_pagetable.js';
import type { Ioas } from './ioas.js';
import { ULONG_MAX, PERM_W, type IoPagetable, type IoptAccess, type PagesSlice } from './io_pagetable.js';
import type { IoPages } from './pages.js';

/** The engine's frame: the unit physical addresses and frame references are looked up in. */
const PAGE = 4096;
/** ACCESS_PAGES and ACCESS_RW refuse more than this (kvzalloc WARN_ON guard): ENOMEM. */
const ACCESS_MAX = 16 * 1024 * 1024;

/** What the machine gives the test command: mock devices and physical memory. */
export interface TestEnv {
  readonly phys: PhysMem;
  /**
   * mock_dev_create: a function behind the mock unit (flags already
   * checked). Unbinding detaches it, which frees its contexts: that is all
   * mock_dev_destroy leaves to do.
   */
  createMockDevice(flags: number): PciFunction;
  /**
   * iommufd_test_memory_limit: the size of the batch buffer Linux pins
   * through (SET_TEMP_MEMORY_LIMIT). Pinning here takes whole runs, so it
   * bounds nothing; it is kept so that the setting reads back.
   */
  memoryLimit: number;
}

/** What the test command needs from the iommufd context. */
export interface SelftestCtx {
  readonly engine: Engine;
  readonly objects: ObjectTable;
  readonly mm: AddressSpace;
  readonly file: KFile;
  installFd(file: KFile): number;
  fdget(fd: number): KFile | undefined;
  readonly test: TestEnv | null;
}

/** IOMMUFD_OBJ_SELFTEST of TYPE_IDEV: a mock device, bound; destroying it detaches and unbinds the device. */
export class SelftestObj extends IommufdObject {
  readonly type = 'SELFTEST' as const;
  idev: IommufdDevice | null = null;

  constructor(private readonly objects: ObjectTable, readonly pci: PciFunction) {
    super();
  }

  destroy(): void {
    if (!this.idev) return;
    this.idev.users--; // the binding driver's reference
    this.objects.remove(this.idev); // iommufd_device_unbind: detaches everything
    this.idev = null;
  }
}

/** One ACCESS_PAGES pin (struct selftest_access_item). */
interface AccessItem { iova: bigint; length: bigint; pins: { pages: IoPages; first: number; last: number }[] }

/**
 * IOMMUFD_OBJ_ACCESS with the selftest's driver around it (struct
 * selftest_access): items pinned by ACCESS_PAGES, dropped by the unmap
 * callback when the IOAS unmaps under them.
 */
export class Access extends IommufdObject implements IoptAccess {
  readonly type = 'ACCESS' as const;
  ioas: Ioas | null = null;
  readonly items = new Map<number, AccessItem>();
  nextId = 0;

  constructor(readonly needsPin: boolean) {
    super();
    this.users++; // the driver's reference (iommufd_access_create); DESTROY from userspace is EBUSY
  }

  /** iommufd_test_access_unmap: every item meeting [iova, last] is unpinned and forgotten. */
  unmap(iova: bigint, last: bigint): void {
    for (const [id, item] of this.items) {
      if (iova > item.iova + item.length - 1n || last < item.iova) continue;
      this.items.delete(id);
      unpinItem(item);
    }
  }

  /** iommufd_access_attach / the second half of iommufd_access_replace. */
  attach(ioas: Ioas): void {
    ioas.iopt.addAccess(this); // EADDRINUSE
    ioas.users++;
    this.ioas = ioas;
  }

  detach(): void {
    if (!this.ioas) return;
    this.ioas.iopt.removeAccess(this);
    this.ioas.users--;
    this.ioas = null;
  }

  destroy(): void { this.detach(); }
}

function unpinItem(item: AccessItem): void {
  for (const p of item.pins) p.pages.unpin(p.first, p.last);
}

/** The "[iommufd_test_staccess]" file: closing it unpins everything and destroys the access. */
export class AccessFile extends KFile {
  /** @param objects the object table of the iommufd the access was created in (access->ictx). */
  constructor(readonly access: Access, readonly objects: ObjectTable, private readonly ictx: KFile) {
    super('anon_inode:[iommufd_test_staccess]');
    ictx.get(); // iommufd_access_create holds the iommufd context
  }

  protected override release(): void {
    this.access.unmap(0n, ULONG_MAX);
    this.access.users--;
    this.objects.remove(this.access);
    this.ictx.put();
  }
}

/** A user pointer of the simulated process (EFAULT for one it cannot have). */
function userPtr(p: bigint, length = 0n): number {
  if (p + length > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  return Number(p);
}

/** get_user_pages_fast of one page, then put_page: the physical address of the page at va. */
function userPage(mm: AddressSpace, va: number, page = PAGE): number {
  const runs = mm.pin(va, page, false);
  mm.unpin(runs);
  return runs[0].pa;
}

/** The physical address of each kernel page (`page` bytes) a pinned slice covers, in order. */
function slicePages(s: { pages: IoPages; offset: number; length: number }, page: number): number[] {
  const out: number[] = [];
  for (const r of s.pages.physRuns(s.offset, s.length)) {
    for (let a = r.pa - (r.pa % page); a < r.pa + r.length; a += page) out.push(a);
  }
  return out;
}

/** The access fd (iommufd_access_get): EBADFD for anything else. */
function accessFileOf(ctx: SelftestCtx, fd: number): AccessFile {
  const f = ctx.fdget(fd);
  if (!(f instanceof AccessFile)) throw new SysError('EBADFD');
  return f;
}

/** The access behind an access fd. */
function accessOf(ctx: SelftestCtx, fd: number): Access {
  return accessFileOf(ctx, fd).access;
}

/** get_md_pagetable: a HWPT_PAGING (ENOENT) of the mock (EINVAL). */
function mockHwpt(ctx: SelftestCtx, id: number): HwptPaging {
  const hwpt = ctx.objects.get<HwptPaging>(id, 'HWPT_PAGING');
  if (hwpt.driver.kind !== 'mock') throw new SysError('EINVAL');
  return hwpt;
}

function selftestObj(ctx: SelftestCtx, id: number): SelftestObj {
  return ctx.objects.get<SelftestObj>(id, 'SELFTEST');
}

type OpStruct = StructDef<any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One op: the union member it reads the command through, and its handler. */
interface Op<S extends OpStruct> { readonly struct: S; run(ctx: SelftestCtx, env: TestEnv, c: Decoded<S>): void }
const op = <S extends OpStruct>(struct: S, run: (ctx: SelftestCtx, env: TestEnv, c: Decoded<S>) => void): Op<S> => ({ struct, run });

const O = IOMMU_TEST_CMD_OPS;

const OPS: Readonly<Record<number, Op<OpStruct>>> = {
  /** iommufd_test_add_reserved: a reserved range only the IOAS's destruction removes. */
  [IOMMU_TEST_OP_ADD_RESERVED]: op(O.add_reserved, (ctx, _env, c) => {
    const ioas = ctx.objects.get<Ioas>(c.id, 'IOAS');
    const start = c['add_reserved.start'], last = start + c['add_reserved.length'] - 1n;
    ioas.iopt.reserve(start, last & ULONG_MAX, null);
  }),
  [IOMMU_TEST_OP_MOCK_DOMAIN]: op(O.mock_domain, (ctx, env, c) => {
    const out = mockDomain(ctx, env, c.id, 0);
    c['mock_domain.out_stdev_id'] = out.stdev;
    c['mock_domain.out_hwpt_id'] = out.hwpt;
    c['mock_domain.out_idev_id'] = out.idev;
  }),
  [IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS]: op(O.mock_domain_flags, (ctx, env, c) => {
    const out = mockDomain(ctx, env, c.id, c['mock_domain_flags.dev_flags']);
    c['mock_domain_flags.out_stdev_id'] = out.stdev;
    c['mock_domain_flags.out_hwpt_id'] = out.hwpt;
    c['mock_domain_flags.out_idev_id'] = out.idev;
  }),
  /** iommufd_test_mock_domain_replace: iommufd_device_replace on the mock device's RID. */
  [IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE]: op(O.mock_domain_replace, (ctx, _env, c) => {
    const sobj = selftestObj(ctx, c.id);
    const ptId = c['mock_domain_replace.pt_id'];
    c['mock_domain_replace.pt_id'] = mockAttachDev(ctx, sobj.idev!, ptId, () => sobj.idev!.replace(ptId));
  }),
  /**
   * iommufd_test_md_check_pa: every 2 KiB of [iova, iova + length) of the
   * mock domain translates, through the engine's walk of its table, to the
   * physical address of the user's byte at uptr. EINVAL on a mismatch.
   */
  [IOMMU_TEST_OP_MD_CHECK_MAP]: op(O.check_map, (ctx, _env, c) => {
    const iova = c['check_map.iova'], length = c['check_map.length'], uptr = c['check_map.uptr'];
    const io = ctx.mm.pageSize / 2; // MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2
    const step = BigInt(io);
    if (iova % step !== 0n || length % step !== 0n || uptr % step !== 0n || uptr + length > ULONG_MAX) throw new SysError('EINVAL');
    const hwpt = mockHwpt(ctx, c.id);
    const table = mockTable(ctx.engine, hwpt.did);
    if (!table) throw new SysError('EINVAL');
    let va = userPtr(uptr, length);
    for (let at = iova, left = length; left > 0n; left -= step, at += step, va += io) {
      const pa = userPage(ctx.mm, va - (va % PAGE));
      const got = table.iovaToPhys(at);
      if (got === null || got !== pa + (va % PAGE)) throw new SysError('EINVAL');
    }
  }),
  /**
   * iommufd_test_md_check_refs: each user page's FOLL_PIN count is `refs`
   * (EIO otherwise). A page's pins are its frame references beyond the one
   * its mapping (anonymous memory) or file (memfd) holds; pages of an
   * embedder's segment are pinned per segment, like compound pages, which
   * Linux skips too. It steps PAGE_SIZE, one get_user_pages_fast page at
   * a time; a 16 / 64 KiB page is pinned whole (pages.ts), so its first
   * 4 KiB frame's count is the page's.
   */
  [IOMMU_TEST_OP_MD_CHECK_REFS]: op(O.check_refs, (ctx, _env, c) => {
    const length = c['check_refs.length'], uptr = c['check_refs.uptr'];
    const page = ctx.mm.pageSize;
    if (length % BigInt(page) !== 0n || uptr % BigInt(page) !== 0n || uptr + length > ULONG_MAX) throw new SysError('EINVAL');
    const va0 = userPtr(uptr, length);
    for (let off = 0; off < Number(length); off += page) {
      const runs: PhysRun[] = ctx.mm.pin(va0 + off, page, false);
      try {
        const pa = runs[0].pa;
        if (pa >= SEG_SPAN) continue;
        // Minus the owner's reference and the one pin() just took.
        if (ctx.engine.refcount(pa / PAGE) - 2 !== c['check_refs.refs']) throw new SysError('EIO');
      } finally {
        ctx.mm.unpin(runs);
      }
    }
  }),
  /**
   * iommufd_test_md_check_iotlb: a HWPT_NESTED (ENOENT) of the mock
   * (get_md_pagetable_nested: EINVAL for a VT-d or SMMUv3 one), the slot
   * at most 3 and holding `iotlb` (EINVAL).
   */
  [IOMMU_TEST_OP_MD_CHECK_IOTLB]: op(O.check_iotlb, (ctx, _env, c) => {
    const hwpt = ctx.objects.get<HwptNested>(c.id, 'HWPT_NESTED');
    if (!(hwpt.domain instanceof MockNestedDomain)) throw new SysError('EINVAL');
    const slot = c['check_iotlb.id'];
    if (slot > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || hwpt.domain.iotlb[slot] !== c['check_iotlb.iotlb']) throw new SysError('EINVAL');
  }),
  /** iommufd_test_create_access: an access on the IOAS, returned as a new fd. */
  [IOMMU_TEST_OP_CREATE_ACCESS]: op(O.create_access, (ctx, _env, c) => {
    const flags = c['create_access.flags'];
    if (flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) throw new SysError('EOPNOTSUPP');
    const access = ctx.objects.add(new Access((flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0));
    try {
      access.attach(ctx.objects.get<Ioas>(c.id, 'IOAS'));
    } catch (e) {
      access.users--;
      ctx.objects.remove(access);
      throw e;
    }
    c['create_access.out_access_fd'] = ctx.installFd(new AccessFile(access, ctx.objects, ctx.file));
  }),
  /**
   * iommufd_access_replace: the old IOAS's pins go through the unmap
   * callback. The IOAS is looked up in the access's own iommufd
   * (iommufd_access_change_ioas_id: iommufd_get_ioas(access->ictx, id)),
   * whichever iommufd the command came through.
   */
  [IOMMU_TEST_OP_ACCESS_REPLACE_IOAS]: op(O.access_replace_ioas, (ctx, _env, c) => {
    const file = accessFileOf(ctx, c.id);
    const access = file.access;
    if (!access.ioas) throw new SysError('ENOENT');
    const ioas = file.objects.get<Ioas>(c['access_replace_ioas.ioas_id'], 'IOAS');
    if (ioas === access.ioas) return;
    const old = access.ioas;
    ioas.iopt.addAccess(access); // EADDRINUSE, before anything changes
    ioas.iopt.removeAccess(access);
    access.unmap(0n, ULONG_MAX);
    old.iopt.removeAccess(access);
    old.users--;
    access.ioas = null;
    access.attach(ioas);
  }),
  /** iommufd_test_access_pages + iommufd_access_pin_pages. */
  [IOMMU_TEST_OP_ACCESS_PAGES]: op(O.access_pages, (ctx, _env, c) => {
    const length = c['access_pages.length'], flags = c['access_pages.flags'];
    if (length > BigInt(ACCESS_MAX)) throw new SysError('ENOMEM');
    if (flags & ~(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ)) throw new SysError('EOPNOTSUPP');
    const access = accessOf(ctx, c.id);
    if (!access.needsPin) throw new SysError('EOPNOTSUPP');
    const iova = flags & MOCK_FLAGS_ACCESS_SYZ ? syzIova(access, c['access_pages.iova']) : c['access_pages.iova'];
    const item = pinPages(access, iova, length, (flags & MOCK_FLAGS_ACCESS_WRITE) !== 0, BigInt(ctx.mm.pageSize));
    try {
      const uptr = c['access_pages.uptr'];
      // iommufd_test_check_pages: the pinned pages are the user's pages at uptr (EBADE).
      // It walks PAGE_SIZE pages from uptr - (iova - ALIGN_DOWN(iova, PAGE_SIZE)).
      if (uptr !== 0n) {
        const page = ctx.mm.pageSize;
        let va = userPtr(uptr) - Number(iova % BigInt(page));
        for (const s of item.slices) {
          for (const pa of slicePages(s, page)) {
            if (userPage(ctx.mm, va, page) !== pa) throw new SysError('EBADE');
            va += page;
          }
        }
      }
    } catch (e) {
      unpinItem(item);
      throw e;
    }
    const id = access.nextId++;
    access.items.set(id, { iova, length, pins: item.pins });
    c['access_pages.out_access_pages_id'] = id;
  }),
  /** iommufd_test_access_rw + iommufd_access_rw: byte copies through the IOAS. */
  [IOMMU_TEST_OP_ACCESS_RW]: op(O.access_rw, (ctx, env, c) => {
    const length = c['access_rw.length'], flags = c['access_rw.flags'];
    if (length > BigInt(ACCESS_MAX)) throw new SysError('ENOMEM');
    if (flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ)) throw new SysError('EOPNOTSUPP');
    const access = accessOf(ctx, c.id);
    const write = (flags & MOCK_ACCESS_RW_WRITE) !== 0;
    const n = Number(length);
    const ubuf = userPtr(c['access_rw.uptr'], length);
    const tmp = write ? ctx.mm.read(ubuf, n) : new Uint8Array(n);
    const iova = flags & MOCK_FLAGS_ACCESS_SYZ ? syzIova(access, c['access_rw.iova']) : c['access_rw.iova'];
    accessRw(access, env, iova, tmp, write);
    if (!write) ctx.mm.write(ubuf, tmp);
  }),
  /** iommufd_test_access_item_destroy: ENOENT for an id the access does not hold (any more). */
  [IOMMU_TEST_OP_DESTROY_ACCESS_PAGES]: op(O.destroy_access_pages, (ctx, _env, c) => {
    const access = accessOf(ctx, c.id);
    const id = c['destroy_access_pages.access_pages_id'];
    const item = access.items.get(id);
    if (!item) throw new SysError('ENOENT');
    access.items.delete(id);
    unpinItem(item);
  }),
  /** Linux: the pfn batch size, at least one element (sizeof(unsigned long) + sizeof(u32)). */
  [IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT]: op(O.memory_limit, (_ctx, env, c) => {
    if (c['memory_limit.limit'] < 8 + 4) throw new SysError('EINVAL');
    env.memoryLimit = c['memory_limit.limit'];
  }),
  /**
   * iommufd_test_dirty: for each set bit of the user's bitmap, the mock
   * IOPTE under iova + i * page_size is flagged dirty (as selftest.c flags
   * its xarray entry); out_nr_dirty counts the bits that found a mapping.
   * Tracking must be on (EINVAL).
   */
  [IOMMU_TEST_OP_DIRTY]: op(O.dirty, (ctx, _env, c) => {
    const iova = c['dirty.iova'], length = c['dirty.length'], ps = c['dirty.page_size'], uptr = c['dirty.uptr'];
    if (ps === 0n || length === 0n || iova % ps !== 0n || length % ps !== 0n || uptr === 0n) throw new SysError('EINVAL');
    const hwpt = mockHwpt(ctx, c.id);
    const table = mockTable(ctx.engine, hwpt.did);
    if (!table || !ctx.engine.ptDirtyTracking(hwpt.did)) throw new SysError('EINVAL');
    const max = length / ps;
    const bitmap = ctx.mm.read(userPtr(uptr, max / 8n), Number(max / 8n));
    let count = 0;
    for (let i = 0; i < bitmap.length * 8; i++) {
      if ((bitmap[i >> 3] & (1 << (i & 7))) !== 0 && table.markDirty(iova + BigInt(i) * ps)) count++;
    }
    c['dirty.out_nr_dirty'] = BigInt(count);
  }),
  /**
   * iommufd_test_trigger_iopf: one page request (LAST_PAGE, PASID_VALID
   * with a PASID) reported as iommu_report_device_fault finds its handler
   * (io-pgfault.c find_fault_handler): the domain attached at that PASID;
   * failing that, the mock having a user PASID table, the NESTED domain
   * attached at the RID (a paging one does not take it); a request without
   * a PASID, the RID's domain. Without a fault-capable domain there nothing
   * is seen (the core answers it).
   */
  [IOMMU_TEST_OP_TRIGGER_IOPF]: op(O.trigger_iopf, (ctx, _env, c) => {
    const idev = ctx.objects.get<IommufdDevice>(c['trigger_iopf.dev_id'], 'DEVICE');
    const pasid = c['trigger_iopf.pasid'];
    const pci = idev.pci;
    const ridNested = idev.hwpt(NO_PASID)?.type === 'HWPT_NESTED';
    const sink = pci.pageRequestSink(pasid) ?? (pasid !== NO_PASID && ridNested ? pci.pageRequestSink(NO_PASID) : undefined);
    sink?.(pasid, pasid !== NO_PASID, [{ addr: c['trigger_iopf.addr'], perm: c['trigger_iopf.perm'], grpid: c['trigger_iopf.grpid'], last: true }], () => {});
  }),
  /** iommufd_test_dev_check_cache: the mock device's cache slot holds `cache`. */
  [IOMMU_TEST_OP_DEV_CHECK_CACHE]: op(O.check_dev_cache, (ctx, _env, c) => {
    const idev = ctx.objects.get<IommufdDevice>(c.id, 'DEVICE');
    const mdev = mockDev(idev.pci);
    const slot = c['check_dev_cache.id'];
    if (!mdev || slot > MOCK_DEV_CACHE_ID_MAX || mdev.cache[slot] !== c['check_dev_cache.cache']) throw new SysError('EINVAL');
  }),
  /**
   * iommufd_test_trigger_vevent: the DEVICE (ENOENT); its RID must last
   * have been attached to a nested domain of a vIOMMU with a non-zero
   * virtual id (ENOENT), which is reported as { virt_id } to that vIOMMU's
   * IOMMU_VEVENTQ_TYPE_SELFTEST queue: none is EOPNOTSUPP; a full queue
   * loses it silently.
   */
  [IOMMU_TEST_OP_TRIGGER_VEVENT]: op(O.trigger_vevent, (ctx, _env, c) => {
    const idev = ctx.objects.get<IommufdDevice>(c['trigger_vevent.dev_id'], 'DEVICE');
    const mdev = mockDev(idev.pci);
    if (!mdev?.viommu || mdev.vdevId === 0n) throw new SysError('ENOENT');
    const payload = iommu_viommu_event_selftest.encode({ virt_id: Number(mdev.vdevId & 0xffff_ffffn) });
    if (!mdev.viommu.reportEvent(IOMMU_VEVENTQ_TYPE_SELFTEST, payload)) throw new SysError('EOPNOTSUPP');
  }),
  [IOMMU_TEST_OP_PASID_ATTACH]: op(O.pasid_attach, (ctx, _env, c) => {
    const sobj = selftestObj(ctx, c.id);
    const pasid = c['pasid_attach.pasid'];
    c['pasid_attach.pt_id'] = setDevPasid(sobj, pasid, () => sobj.idev!.attach(c['pasid_attach.pt_id'], pasid));
  }),
  [IOMMU_TEST_OP_PASID_REPLACE]: op(O.pasid_replace, (ctx, _env, c) => {
    const sobj = selftestObj(ctx, c.id);
    const pasid = c['pasid_replace.pasid'];
    c['pasid_replace.pt_id'] = setDevPasid(sobj, pasid, () => sobj.idev!.replace(c['pasid_replace.pt_id'], pasid));
  }),
  [IOMMU_TEST_OP_PASID_DETACH]: op(O.pasid_detach, (ctx, _env, c) => {
    const sobj = selftestObj(ctx, c.id);
    const pasid = c['pasid_detach.pasid'];
    sobj.idev!.detach(pasid);
    if (pasid === IOMMU_TEST_PASID_RESERVED) mockDev(sobj.pci)!.pasid1024Armed = false;
  }),
  /** iommufd_test_pasid_check_hwpt: what is attached at the PASID is hwpt_id's domain (0: nothing). */
  [IOMMU_TEST_OP_PASID_CHECK_HWPT]: op(O.pasid_check, (ctx, _env, c) => {
    const sobj = selftestObj(ctx, c.id);
    const attached = sobj.idev!.hwpt(c['pasid_check.pasid']);
    const want = c['pasid_check.hwpt_id'];
    if (want === 0) {
      if (attached) throw new SysError('EINVAL');
      return;
    }
    const hwpt = ctx.objects.get(want, 'HWPT_PAGING', 'HWPT_NESTED');
    if (attached !== hwpt) throw new SysError('EINVAL');
  }),
};

/**
 * mock_set_dev_pasid's IOMMU_TEST_PASID_RESERVED quirk: the first
 * non-blocking set of PASID 1024 succeeds and arms it, the next one fails
 * (ENOMEM) and disarms it; so a replace on it fails and keeps the old domain.
 */
function setDevPasid(sobj: SelftestObj, pasid: number, attach: () => number): number {
  const mdev = mockDev(sobj.pci)!;
  if (pasid === IOMMU_TEST_PASID_RESERVED && mdev.pasid1024Armed) {
    mdev.pasid1024Armed = false;
    throw new SysError('ENOMEM');
  }
  const id = attach();
  if (pasid === IOMMU_TEST_PASID_RESERVED) mdev.pasid1024Armed = true;
  return id;
}

/**
 * The mock's attach_dev for the RID (mock_domain_nop_attach), around an
 * attach or replace through the DEVICE code (which checks the vDEVICE a
 * vIOMMU's nested domain needs, device.ts driverAttach): on success the
 * device records the vIOMMU and its virtual id (any other domain clears
 * them), for IOMMU_TEST_OP_TRIGGER_VEVENT.
 */
function mockAttachDev(ctx: SelftestCtx, idev: IommufdDevice, ptId: number, attach: () => number): number {
  const obj = ctx.objects.find(ptId);
  const nested = obj?.type === 'HWPT_NESTED' && (obj as HwptNested).domain instanceof MockNestedDomain ? obj as HwptNested : null;
  const viommu = nested?.viommu ?? null;
  const id = attach();
  const mdev = mockDev(idev.pci);
  if (mdev) {
    const vdev = viommu ? idev.vdev : null;
    mdev.viommu = vdev ? viommu : null;
    mdev.vdevId = vdev ? vdev.virtId : 0n;
  }
  return id;
}

/**
 * iommufd_test_mock_domain: a SELFTEST object (its id first), a mock
 * device, bound (a DEVICE) and attached to pt_id (an IOAS: an automatic
 * HWPT). Any failure undoes everything.
 */
function mockDomain(ctx: SelftestCtx, env: TestEnv, ptId: number, devFlags: number): { stdev: number; hwpt: number; idev: number } {
  if (devFlags & ~(MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID)) throw new SysError('EINVAL'); // mock_dev_create
  const pci = env.createMockDevice(devFlags);
  mockDevCreate(pci, devFlags);
  const sobj = ctx.objects.add(new SelftestObj(ctx.objects, pci));
  try {
    const idev = ctx.objects.add(new IommufdDevice(ctx.engine, ctx.objects, pci));
    sobj.idev = idev;
    const hwpt = mockAttachDev(ctx, idev, ptId, () => idev.attach(ptId));
    return { stdev: sobj.id, hwpt, idev: sobj.idev.id };
  } catch (e) {
    ctx.objects.remove(sobj);
    throw e;
  }
}

/** MOCK_FLAGS_ACCESS_SYZ: iova is { u32 nth_area; u32 offset } (iommufd_test_syz_conv_iova); 0 if no such area. */
function syzIova(access: Access, raw: bigint): bigint {
  const nth = Number(raw & 0xffff_ffffn), offset = raw >> 32n;
  const area = access.ioas?.iopt.areas[nth];
  return area ? area.iova + offset : 0n;
}

/**
 * The walk over contiguous areas of iommufd_access_pin_pages and
 * iommufd_access_rw: a read-only area met before the first gap is EPERM
 * (a gap is ENOENT, from getPages).
 */
function checkWritable(iopt: IoPagetable, iova: bigint, last: bigint): void {
  let next = iova;
  for (const a of iopt.areasIn(iova, last)) {
    if (a.iova > next) return;
    if ((a.perm & PERM_W) === 0) throw new SysError('EPERM');
    next = a.last + 1n;
  }
}

/**
 * iommufd_access_pin_pages: [iova, iova + length) must be covered by areas
 * (ENOENT), writable if asked (EPERM); the pages behind it are pinned (the
 * pages object's pin counts: a page the domains already pinned is not pinned
 * twice). All or nothing.
 */
function pinPages(access: Access, iova: bigint, length: bigint, write: boolean, pageSize: bigint): { iova: bigint; length: bigint; pins: AccessItem['pins']; slices: PagesSlice[] } {
  if (length === 0n) throw new SysError('EINVAL');
  const last = iova + length - 1n;
  if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
  if (iova % pageSize !== 0n) throw new SysError('EINVAL');
  if (!access.ioas) throw new SysError('ENOENT');
  const iopt = access.ioas.iopt;
  if (write) checkWritable(iopt, iova, last);
  const slices = iopt.getPages(iova, length);
  const pins: AccessItem['pins'] = [];
  try {
    for (const s of slices) {
      const [first, lastPage] = s.pages.indexRange(s.offset, s.length);
      s.pages.pin(first, lastPage);
      pins.push({ pages: s.pages, first, last: lastPage });
    }
  } catch (e) {
    for (const p of pins) p.pages.unpin(p.first, p.last);
    throw e;
  }
  return { iova, length, pins, slices };
}

/**
 * iommufd_access_rw: copy between `buf` and the IOAS at iova, byte
 * granular, across contiguous areas (ENOENT where not mapped, EPERM for a
 * write to a read-only area). The pages are pinned for the copy and
 * unpinned after, which reads pages the domains hold even where the VA is
 * gone. MOCK_ACCESS_RW_SLOW_PATH picks Linux's other internal path, with
 * the same result: it is accepted and changes nothing here.
 */
function accessRw(access: Access, env: TestEnv, iova: bigint, buf: Uint8Array, write: boolean): void {
  const length = BigInt(buf.length);
  if (length === 0n) throw new SysError('EINVAL');
  const last = iova + length - 1n;
  if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
  if (!access.ioas) throw new SysError('ENOENT');
  const iopt = access.ioas.iopt;
  if (write) checkWritable(iopt, iova, last);
  const slices = iopt.getPages(iova, length);
  let at = 0;
  for (const s of slices) {
    const [first, lastPage] = s.pages.indexRange(s.offset, s.length);
    s.pages.pin(first, lastPage);
    try {
      for (const r of s.pages.physRuns(s.offset, s.length)) {
        const part = buf.subarray(at, at + r.length);
        if (write) env.phys.write(r.pa, part);
        else env.phys.read(r.pa, part);
        at += r.length;
      }
    } finally {
      s.pages.unpin(first, lastPage);
    }
  }
}

/**
 * IOMMU_TEST_CMD (iommufd_test): the op's union member decoded from the
 * command, the op run, the member encoded back. An unknown op (the dma-buf
 * ops included: no dma-buf exists in this host) is EOPNOTSUPP.
 */
export function iommufdTest(ctx: SelftestCtx, cmd: Decoded<typeof iommu_test_cmd>): void {
  const env = ctx.test;
  if (!env) throw new SysError('ENOTTY'); // not reached: the dispatcher only routes it with CONFIG_IOMMUFD_TEST
  const o = OPS[cmd.op];
  if (!o) throw new SysError('EOPNOTSUPP');
  const bytes = iommu_test_cmd.encode(cmd);
  const c = o.struct.decode(bytes);
  o.run(ctx, env, c);
  Object.assign(cmd, iommu_test_cmd.decode(o.struct.encode(c)));
}
