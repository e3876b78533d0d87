// The mock IOMMU of CONFIG_IOMMUFD_TEST (drivers/iommu/iommufd/selftest.c):
// the unit behind the devices IOMMU_TEST_OP_MOCK_DOMAIN creates, and behind
// `host.addDevice({ iommu: 'mock' })` on a host created with `iommufdTest`.
//
// What Linux's mock is, and so this one:
// - paging domains with the aperture [MOCK_APERTURE_START, MOCK_APERTURE_LAST]
//   and a smallest page of MOCK_IO_PAGE_SIZE (PAGE_SIZE / 2: 2 KiB with 4
//   KiB pages, 8 / 32 KiB on a 16 / 64 KiB kernel, HostOptions.pageSize),
//   which makes an IOAS with a mock domain aligned to it;
// - no reserved regions; dirty tracking unless the device was created with
//   MOCK_FLAGS_DEVICE_NO_DIRTY; PASIDs (20 bits) for devices created with
//   MOCK_FLAGS_DEVICE_PASID; page requests taken (the selftest injects them
//   with IOMMU_TEST_OP_TRIGGER_IOPF), without ATS;
// - IOMMU_GET_HW_INFO answers IOMMU_HW_INFO_TYPE_SELFTEST with
//   struct iommu_test_hw_info { flags 0, test_reg 0xdeadbeef }.
//
// Underneath, a mock paging domain is a real engine page table in the VT-d
// second-stage format (4 KiB, 2 MiB and 1 GiB leaves), walked by the
// engine's walker: IOMMU_TEST_OP_MD_CHECK_MAP reads it back that way. With
// 4 KiB kernel pages the 2 KiB granule sits on top (MockPagingTable): a
// 4 KiB leaf whose two halves belong to different areas is mapped once and
// kept while either half is in use. Two things the VT-d format cannot
// express are refused with EINVAL at map time, where Linux's 2 KiB mock
// format would take them: a 2 KiB piece whose IOVA and physical address
// differ in bit 11, and the two halves of one 4 KiB IOVA page mapping
// different physical pages (or with different permissions). Automatic IOVAs
// keep the VA's offset in its page, so only fixed IOVAs off by 2 KiB from
// their VA meet the first case. With 16 / 64 KiB pages an 8 / 32 KiB IOPTE
// is whole 4 KiB leaves, and is dirty when any of them is.
//
// The mock's vIOMMU (IOMMU_VIOMMU_TYPE_SELFTEST; selftest.c mock_viommu_*):
// on a nest-parent mock domain; with driver data (struct
// iommu_viommu_selftest) two pages holding in_data, registered for mmap on
// the iommufd; nested domains of IOMMU_HWPT_DATA_SELFTEST with 4 IOTLB
// slots; invalidation of the per-device cache slots by virtual device id;
// HW queues of IOMMU_HW_QUEUE_TYPE_SELFTEST (two, queue 1 depending on
// queue 0, the physical address checked against the parent's table). The
// per-device state (struct mock_dev) lives here too.

import type { Engine } from '../engine/engine.js';
import type { AddressSpace } from '../kernel/mm.js';
import type { PciFunction } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_test_hw_info, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_SELFTEST, IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_PASID,
  MOCK_APERTURE_START, MOCK_APERTURE_LAST, MOCK_PASID_WIDTH,
  iommu_hwpt_selftest, iommu_hwpt_invalidate_selftest, iommu_viommu_selftest, iommu_viommu_invalidate_selftest,
  iommu_hwpt_invalidate, IOMMU_HWPT_DATA_SELFTEST, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, IOMMU_VIOMMU_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, IOMMU_HW_QUEUE_TYPE_SELFTEST, IOMMU_TEST_HW_QUEUE_MAX, IOMMU_TEST_INVALIDATE_FLAG_ALL,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX, MOCK_NESTED_DOMAIN_IOTLB_NUM, MOCK_DEV_CACHE_ID_MAX, MOCK_DEV_CACHE_NUM, IOMMU_TEST_DEV_CACHE_DEFAULT,
} from '../uapi/iommufd.js';
import type { Decoded, StructDef } from '../uapi/struct.js';
import type { HwInfoData, IommuDriver, IommuUnitCaps } from './driver.js';
import {
  MmapPages, copyFullUserArray, type HwQueue, type UserData, type Viommu, type ViommuInitCtx, type ViommuNestedDomain, type ViommuOps,
} from '../iommufd/viommu.js';

/** selftest.c MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2: the smallest IOPTE of a mock domain, 2 KiB under 4 KiB pages. */
export const MOCK_IO_PAGE_SIZE = 2048;
/** The engine's leaf (a VT-d 4 KiB page). */
const PAGE = 4096;

/**
 * A mock paging domain's table: the engine's VT-d second-stage table of
 * domain `did`, with the 2 KiB granule of Linux's mock on top. 4 KiB pages
 * used by only one half of an area are tracked here; every other page is
 * whole in the engine's table.
 */
export class MockPagingTable {
  /** 4 KiB IOVA pages that areas use only a half of: halves in use, the physical page, the permission. */
  private readonly partial = new Map<bigint, { halves: number; pa: number; perm: number }>();
  /**
   * The dirty flags of the mock's 2 KiB IOPTEs (IOVA / 2 KiB) that
   * IOMMU_TEST_OP_DIRTY set, as selftest.c flags its entries. A device write
   * sets the VT-d leaf's D bit instead, at the 4 KiB granule of the table.
   */
  private readonly dirty = new Set<number>();
  /** MOCK_IO_PAGE_SIZE as a bigint. */
  private readonly half: bigint;

  /** `ioPage`: MOCK_IO_PAGE_SIZE, the kernel's PAGE_SIZE / 2 (below 4 KiB only with 4 KiB pages: then the halves above). */
  constructor(private readonly engine: Engine, readonly did: number, readonly ioPage = MOCK_IO_PAGE_SIZE) {
    this.half = BigInt(ioPage);
  }

  /** The low (bit 0) or high (bit 1) 2 KiB half of a 4 KiB IOVA page. */
  private halfBit(iova: bigint): number { return (iova & this.half) === 0n ? 1 : 2; }

  /** The 2 KiB pieces at the edges of [iova, iova + length) and the 4 KiB-aligned middle. */
  private split(iova: bigint, length: bigint): { halves: bigint[]; start: bigint; end: bigint } {
    const half = this.half;
    if (iova % half !== 0n || length % half !== 0n || length <= 0n) throw new SysError('EINVAL');
    let start = iova, end = iova + length;
    const halves: bigint[] = [];
    if (start % BigInt(PAGE) !== 0n) { halves.push(start); start += half; }
    if (end > start && end % BigInt(PAGE) !== 0n) { end -= half; halves.push(end); }
    return { halves, start, end: end < start ? start : end };
  }

  /** map_pages: [iova, iova + length) to [pa, pa + length). All or nothing. */
  map(iova: bigint, pa: number, length: number, perm: number): void {
    if (Number(iova % BigInt(PAGE)) !== pa % PAGE) throw new SysError('EINVAL'); // see the file comment
    const { halves, start, end } = this.split(iova, BigInt(length));
    const paOf = (at: bigint) => pa + Number(at - iova);
    const plan = halves.map((h) => {
      const page = h - (h % BigInt(PAGE));
      const pagePa = paOf(page);
      const e = this.partial.get(page);
      if (e && ((e.halves & this.halfBit(h)) !== 0 || e.pa !== pagePa || e.perm !== perm)) throw new SysError('EINVAL');
      return { h, page, pagePa, e };
    });
    if (end > start) this.engine.ptMap(this.did, start, paOf(start), end - start, perm);
    const done: bigint[] = [];
    try {
      for (const { h, page, pagePa, e } of plan) {
        if (e) { e.halves |= this.halfBit(h); continue; }
        this.engine.ptMap(this.did, page, pagePa, PAGE, perm);
        this.partial.set(page, { halves: this.halfBit(h), pa: pagePa, perm });
        done.push(h);
      }
    } catch (err) {
      for (const h of done) this.dropHalf(h);
      if (end > start) this.engine.ptUnmap(this.did, start, end - start);
      throw err;
    }
  }

  /** unmap_pages of a range map() mapped (iommufd unmaps whole areas). */
  unmap(iova: bigint, length: bigint): void {
    const { halves, start, end } = this.split(iova, length);
    if (end > start) this.engine.ptUnmap(this.did, start, end - start);
    for (const h of halves) this.dropHalf(h);
    if (this.dirty.size > 0) {
      const lo = Number(iova / this.half), hi = Number((iova + length) / this.half);
      for (const k of this.dirty) if (k >= lo && k < hi) this.dirty.delete(k);
    }
  }

  /** IOMMU_TEST_OP_DIRTY: flag the 2 KiB IOPTE under iova dirty; false where nothing is mapped. */
  markDirty(iova: bigint): boolean {
    const at = iova - (iova % this.half);
    if (this.iovaToPhys(at) === null) return false;
    this.dirty.add(Number(at / this.half));
    return true;
  }

  /**
   * read_and_clear_dirty: a 2 KiB IOPTE is dirty when flagged, or when the
   * 4 KiB leaf it sits in has D set by a device write (the table cannot
   * tell which half was written, so both are). Bits are OR-ed into `out`
   * at pageSize from iova; with `clear`, flags go, and D bits of the 4 KiB
   * pages the range covers whole.
   */
  readDirty(iova: bigint, length: bigint, pageSize: number, clear: boolean, out: Uint8Array): void {
    // Every IOVA of a mock domain lies in its aperture, below 2^31: plain numbers from here.
    const from = Number(iova), end = from + Number(length);
    const io = this.ioPage;
    const first = from - (from % io);
    const pStart = first - (first % PAGE), pEnd = Math.ceil(end / PAGE) * PAGE;
    const leaf = this.engine.ptReadDirty(this.did, pStart, pEnd - pStart, PAGE, false);
    if (clear) {
      const cStart = Math.ceil(from / PAGE) * PAGE, cEnd = end - (end % PAGE);
      if (cEnd > cStart) this.engine.ptReadDirty(this.did, cStart, cEnd - cStart, PAGE, true);
    }
    for (let p = first; p < end; p += io) {
      const key = p / io;
      const flagged = this.dirty.has(key);
      // The D bits of the 4 KiB leaves the IOPTE spans (the one holding it, for a 2 KiB one).
      let written = false;
      for (let k = (p - pStart) / PAGE | 0, kEnd = Math.ceil((p + io - pStart) / PAGE); k < kEnd && !written; k++) written = (leaf[k >> 3] & (1 << (k & 7))) !== 0;
      if (!flagged && !written) continue;
      if (flagged && clear) this.dirty.delete(key);
      // iommu_dirty_bitmap_record(head, MOCK_IO_PAGE_SIZE): the bits of the part inside the range.
      const lo = Math.max(p, from), hi = Math.min(p + io, end) - 1;
      for (let b = Math.floor((lo - from) / pageSize); b <= Math.floor((hi - from) / pageSize); b++) out[b >> 3] |= 1 << (b & 7);
    }
  }

  /** Tracking turned on (iopt_clear_dirty_data): no flag is left. */
  clearDirty(): void { this.dirty.clear(); }

  private dropHalf(h: bigint): void {
    const page = h - (h % BigInt(PAGE));
    const e = this.partial.get(page);
    if (!e) return;
    e.halves &= ~this.halfBit(h);
    if (e.halves !== 0) return;
    this.partial.delete(page);
    this.engine.ptUnmap(this.did, page, PAGE);
  }

  /** iova_to_phys through the engine's walker; null where nothing is mapped (at 2 KiB granularity). */
  iovaToPhys(iova: bigint): number | null {
    const e = this.partial.get(iova - (iova % BigInt(PAGE)));
    if (e && (e.halves & this.halfBit(iova)) === 0) return null;
    const w = this.engine.ptWalk(this.did, iova);
    // The walk gives the leaf's base; the IOVA's offset in the leaf completes the address.
    return w.ok ? Number(w.pa) + Number(iova % BigInt(w.size)) : null;
  }
}

/** The tables of the mock domains of an engine, by domain id. */
const TABLES = new WeakMap<Engine, Map<number, MockPagingTable>>();

/** A restored MockPagingTable (host/snapshot.ts) made the table of its domain in `engine`. */
export function adoptMockTable(engine: Engine, t: MockPagingTable): void {
  let m = TABLES.get(engine);
  if (!m) TABLES.set(engine, (m = new Map()));
  m.set(t.did, t);
}

/** The MockPagingTable of a mock domain. */
export function mockTable(engine: Engine, did: number): MockPagingTable | undefined {
  return TABLES.get(engine)?.get(did);
}

/** What a mock IOMMU driver adds to the common driver interface. */
export interface MockIommuDriver extends IommuDriver {
  readonly kind: 'mock';
  /** mock_get_viommu_size / mock_viommu_init. */
  viommuInit(ctx: ViommuInitCtx, viommu: Viommu, data: UserData | null): ViommuOps;
  /** The mock device flags this driver instance stands for (MOCK_FLAGS_DEVICE_NO_DIRTY). */
  readonly noDirty: boolean;
  /** Start of a paging domain's aperture (its end is 2^addressWidth - 1). */
  readonly apertureStart: bigint;
  /** The MOCK_IO_PAGE_SIZE-granule table of a new paging domain (engine domain `did`). */
  domainOps(engine: Engine, did: number): MockPagingTable;
}

/**
 * The mock unit as a device created with `dev_flags` sees it. Linux has one
 * mock IOMMU whose capable() answers per device (DIRTY_TRACKING unless
 * NO_DIRTY); here each answer is a driver instance of the one unit.
 */
export function mockIommu(engine: Engine, opts: { noDirty: boolean; pageSize?: number }): MockIommuDriver {
  const ioPage = (opts.pageSize ?? 4096) / 2; // MOCK_IO_PAGE_SIZE = PAGE_SIZE / 2
  const L = engine.layout;
  const caps: IommuUnitCaps = Object.freeze({
    dirtyTracking: !opts.noDirty, // mock_domain_capable(IOMMU_CAP_DIRTY_TRACKING)
    pasidBits: MOCK_PASID_WIDTH,
    ats: false,
    pri: true,
    priNeedsAts: false,
  });
  const width = Math.log2(MOCK_APERTURE_LAST + 1);
  return {
    kind: 'mock',
    noDirty: opts.noDirty,
    format: L.FMT_VTD_SL,
    levels: 4,
    leafSizes: L.SZ_4K | L.SZ_2M | L.SZ_1G,
    addressWidth: width,
    apertureStart: BigInt(MOCK_APERTURE_START),
    pgsizeMin: BigInt(ioPage),
    resvRegions: () => [],
    caps,
    // mock_domain_alloc_paging_flags: NEST_PARENT, DIRTY_TRACKING (EOPNOTSUPP on a NO_DIRTY device), PASID.
    pagingFlags: IOMMU_HWPT_ALLOC_NEST_PARENT | (caps.dirtyTracking ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0) | IOMMU_HWPT_ALLOC_PASID,
    viommuTypes: [IOMMU_VIOMMU_TYPE_SELFTEST],
    viommuInit: mockViommuInit,
    domainOps(eng: Engine, did: number): MockPagingTable {
      let m = TABLES.get(eng);
      if (!m) TABLES.set(eng, (m = new Map()));
      const t = new MockPagingTable(eng, did, ioPage);
      m.set(did, t);
      return t;
    },
    /** mock_domain_hw_info: DEFAULT or SELFTEST, else EOPNOTSUPP. */
    hwInfo(requested: number): HwInfoData {
      if (requested !== IOMMU_HW_INFO_TYPE_DEFAULT && requested !== IOMMU_HW_INFO_TYPE_SELFTEST) throw new SysError('EOPNOTSUPP');
      return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data: iommu_test_hw_info.encode({ flags: 0, test_reg: IOMMU_HW_INFO_SELFTEST_REGVAL }) };
    },
  };
}

// ---------------------------------------------------------------------------
// struct mock_dev

/** The state selftest.c keeps in struct mock_dev. */
export interface MockDev {
  readonly flags: number;
  /** mdev->cache[]: cleared by vIOMMU invalidations, read by IOMMU_TEST_OP_DEV_CHECK_CACHE. */
  readonly cache: number[];
  /** The IOMMU_TEST_PASID_RESERVED quirk of mock_set_dev_pasid. */
  pasid1024Armed: boolean;
  /**
   * mdev->viommu and mdev->vdev_id: the vIOMMU of the nested domain the
   * device's RID was last attached to and the device's virtual id there
   * (set by mock_domain_nop_attach; IOMMU_TEST_OP_TRIGGER_VEVENT reports it).
   */
  viommu: Viommu | null;
  vdevId: bigint;
}

const MOCK_DEVS = new WeakMap<PciFunction, MockDev>();

/** mock_dev_create's state for a new mock device. */
export function mockDevCreate(pci: PciFunction, flags: number): MockDev {
  const mdev: MockDev = {
    flags, cache: new Array<number>(MOCK_DEV_CACHE_NUM).fill(IOMMU_TEST_DEV_CACHE_DEFAULT), pasid1024Armed: false, viommu: null, vdevId: 0n,
  };
  MOCK_DEVS.set(pci, mdev);
  return mdev;
}

/** A restored function's struct mock_dev (host/snapshot.ts). */
export function setMockDev(pci: PciFunction, mdev: MockDev): void { MOCK_DEVS.set(pci, mdev); }

/** The struct mock_dev of a function the selftest made (undefined for any other). */
export function mockDev(pci: PciFunction): MockDev | undefined { return MOCK_DEVS.get(pci); }

// ---------------------------------------------------------------------------
// The mock vIOMMU

/**
 * iommu_copy_struct_from_user: driver data of `len` bytes, at least up to
 * min_len and at most the struct (else EINVAL), zero-extended; a bad
 * pointer EFAULT.
 */
function copyFromUser<S extends StructDef<any, any>>(mm: AddressSpace, s: S, data: UserData, type: number, minLen: number): Decoded<S> { // eslint-disable-line @typescript-eslint/no-explicit-any
  if (data.type !== type) throw new SysError('EINVAL');
  if (data.len < minLen || data.len > s.size) throw new SysError('EINVAL');
  if (data.uptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
  const k = new Uint8Array(s.size);
  k.set(mm.read(Number(data.uptr), data.len));
  return s.decode(k) as Decoded<S>;
}

/** struct mock_iommu_domain_nested: a nested domain with IOTLB slots, made on a vIOMMU or a parent. */
export class MockNestedDomain implements ViommuNestedDomain {
  readonly iotlb: number[];

  constructor(readonly viommu: Viommu | null, iotlb: number) {
    this.iotlb = new Array<number>(MOCK_NESTED_DOMAIN_IOTLB_NUM).fill(iotlb);
  }

  /**
   * mock_domain_cache_invalidate_user: another data type EINVAL (with no
   * entry too); entries in order (iommu_copy_struct_from_user_array: shorter
   * than iotlb_id's end or longer than the struct EINVAL, a bad pointer
   * EFAULT), flags other than FLAG_ALL EOPNOTSUPP, iotlb_id > 3 EINVAL;
   * FLAG_ALL clears every slot, else the one slot.
   */
  cacheInvalidateUser(mm: AddressSpace, cmd: Decoded<typeof iommu_hwpt_invalidate>): { handled: number; error: SysError | null } {
    if (cmd.data_type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) return { handled: 0, error: new SysError('EINVAL') };
    const s = iommu_hwpt_invalidate_selftest;
    for (let i = 0; i < cmd.entry_num; i++) {
      try {
        const inv = copyFromUser(mm, s, { type: cmd.data_type, uptr: cmd.data_uptr + BigInt(i * cmd.entry_len), len: cmd.entry_len },
          IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, s.offsetofend('iotlb_id'));
        if (inv.flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) throw new SysError('EOPNOTSUPP');
        if (inv.iotlb_id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) throw new SysError('EINVAL');
        if (inv.flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) this.iotlb.fill(0);
        else this.iotlb[inv.iotlb_id] = 0;
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        return { handled: i, error: e };
      }
    }
    return { handled: cmd.entry_num, error: null };
  }
}

/** __mock_domain_alloc_nested: SELFTEST data only (EOPNOTSUPP), 4 to 8 bytes of it (EINVAL), readable (EFAULT). */
function mockAllocNested(viommu: Viommu | null, data: UserData, mm: AddressSpace): MockNestedDomain {
  if (data.type !== IOMMU_HWPT_DATA_SELFTEST) throw new SysError('EOPNOTSUPP');
  const cfg = copyFromUser(mm, iommu_hwpt_selftest, data, IOMMU_HWPT_DATA_SELFTEST, iommu_hwpt_selftest.offsetofend('iotlb'));
  return new MockNestedDomain(viommu, cfg.iotlb);
}

/** struct mock_hw_queue */
interface MockHwQueue { readonly core: HwQueue; readonly index: number; readonly prev: MockHwQueue | null }

/**
 * mock_viommu_init: with driver data, the struct copied
 * (iommu_copy_struct_from_user up to out_data), two pages allocated with
 * in_data in the first u32 and registered for mmap on the iommufd, and
 * out_data = in_data, out_mmap_offset, out_mmap_length = 2 pages written
 * back (iommu_copy_struct_to_user: EFAULT, and the region is gone again).
 */
function mockViommuInit(ctx: ViommuInitCtx, viommu: Viommu, user: UserData | null): ViommuOps {
  const s = iommu_viommu_selftest;
  let mmap: { pages: MmapPages; offset: number } | null = null;
  if (user) {
    const data = copyFromUser(ctx.mm, s, user, IOMMU_VIOMMU_TYPE_SELFTEST, s.offsetofend('out_data'));
    const length = 2 * ctx.mm.pageSize; // __get_free_pages(, 1): two pages
    const pages = new MmapPages(ctx.engine, viommu, ctx.file, length, ctx.mm.pageSize);
    pages.write(new Uint8Array(new Uint32Array([data.in_data]).buffer));
    const offset = ctx.allocMmap(pages, length);
    try {
      const out = s.encode({ ...data, out_data: data.in_data, out_mmap_offset: BigInt(offset), out_mmap_length: BigInt(length) });
      ctx.mm.write(Number(user.uptr), out.subarray(0, user.len));
    } catch (e) {
      ctx.destroyMmap(offset);
      pages.drop();
      throw e;
    }
    mmap = { pages, offset };
  }
  return new MockViommuOps(ctx, viommu, mmap);
}

/** struct mock_viommu: its mmap region and HW queues, and the ops over them. */
export class MockViommuOps implements ViommuOps {
  /** mock_viommu->hw_queue[] */
  private readonly queues: (MockHwQueue | null)[] = new Array<MockHwQueue | null>(IOMMU_TEST_HW_QUEUE_MAX).fill(null);

  constructor(private readonly ctx: ViommuInitCtx, private readonly viommu: Viommu, private mmap: { pages: MmapPages; offset: number } | null) {}

  /** mock_viommu_destroy: the mmap region and its pages go. */
  destroy(): void {
    if (!this.mmap) return;
    this.ctx.destroyMmap(this.mmap.offset);
    this.mmap.pages.drop();
    this.mmap = null;
  }

  /** mock_viommu_alloc_domain_nested: flags other than PASID EOPNOTSUPP. */
  allocDomainNested(flags: number, data: UserData, mm: AddressSpace): MockNestedDomain {
    if (flags & ~IOMMU_HWPT_ALLOC_PASID) throw new SysError('EOPNOTSUPP');
    return mockAllocNested(this.viommu, data, mm);
  }

  /**
   * mock_viommu_cache_invalidate: no entry of the right type is fine; the
   * array copied whole (iommu_copy_struct_from_full_user_array); then per
   * entry flags other than FLAG_ALL EOPNOTSUPP, cache_id > 3 EINVAL, a
   * vdev_id no vDEVICE of this vIOMMU has EINVAL; FLAG_ALL clears the
   * device's 4 cache slots, else the one.
   */
  cacheInvalidate(mm: AddressSpace, cmd: Decoded<typeof iommu_hwpt_invalidate>): { handled: number; error: SysError | null } {
    if (cmd.entry_num === 0 && cmd.data_type === IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) return { handled: 0, error: null };
    let cmds: Decoded<typeof iommu_viommu_invalidate_selftest>[];
    try {
      cmds = copyFullUserArray(mm, iommu_viommu_invalidate_selftest, cmd, IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      return { handled: 0, error: e };
    }
    for (let i = 0; i < cmds.length; i++) {
      const cur = cmds[i];
      if (cur.flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) return { handled: i, error: new SysError('EOPNOTSUPP') };
      if (cur.cache_id > MOCK_DEV_CACHE_ID_MAX) return { handled: i, error: new SysError('EINVAL') };
      const idev = this.viommu.findDev(BigInt(cur.vdev_id));
      const mdev = idev ? mockDev(idev.pci) : undefined;
      if (!mdev) return { handled: i, error: new SysError('EINVAL') };
      if (cur.flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) mdev.cache.fill(0);
      else mdev.cache[cur.cache_id] = 0;
    }
    return { handled: cmds.length, error: null };
  }

  /** mock_viommu_get_hw_queue_size */
  hwQueueType(type: number): boolean { return type === IOMMU_HW_QUEUE_TYPE_SELFTEST; }

  /**
   * mock_hw_queue_init_phys: index >= IOMMU_TEST_HW_QUEUE_MAX EINVAL, a
   * slot in use EEXIST, queue N without queue N - 1 EIO, a physical
   * address other than the parent domain's translation of the queue's
   * IOVA EFAULT; queue N then holds queue N - 1 (iommufd_hw_queue_depend).
   */
  hwQueueInitPhys(core: HwQueue, index: number, basePa: number): void {
    if (index >= IOMMU_TEST_HW_QUEUE_MAX) throw new SysError('EINVAL');
    if (this.queues[index]) throw new SysError('EEXIST');
    let prev: MockHwQueue | null = null;
    if (index) {
      prev = this.queues[index - 1];
      if (!prev) throw new SysError('EIO');
    }
    const table = mockTable(this.ctx.engine, this.viommu.hwpt.did);
    if (!table || table.iovaToPhys(core.baseAddr) !== basePa) throw new SysError('EFAULT');
    if (prev) prev.core.users++;
    this.queues[index] = { core, index, prev };
  }

  /** mock_hw_queue_destroy: the slot freed, the dependency dropped (iommufd_hw_queue_undepend). */
  hwQueueDestroy(core: HwQueue): void {
    const i = this.queues.findIndex((q) => q?.core === core);
    if (i < 0) return;
    const q = this.queues[i]!;
    this.queues[i] = null;
    if (q.prev) q.prev.core.users--;
  }
}
