// The mock IOMMU of CONFIG_IOMMUFD_TEST (drivers/iommu/iommufd/selftest.c):
// the unit behind the devices IOMMU_TEST_OP_MOCK_DOMAIN creates, and behind
// `host.addDevice({ iommu: 'mock' })` on a host created with `iommufdTest`.
//
// What Linux's mock is, and so this one:
// - paging domains with the aperture [MOCK_APERTURE_START, MOCK_APERTURE_LAST]
//   and a smallest page of MOCK_IO_PAGE_SIZE (2 KiB, half a CPU page), which
//   makes an IOAS with a mock domain 2 KiB-aligned;
// - no reserved regions; dirty tracking unless the device was created with
//   MOCK_FLAGS_DEVICE_NO_DIRTY; PASIDs (20 bits) for devices created with
//   MOCK_FLAGS_DEVICE_PASID; page requests taken (the selftest injects them
//   with IOMMU_TEST_OP_TRIGGER_IOPF), without ATS;
// - IOMMU_GET_HW_INFO answers IOMMU_HW_INFO_TYPE_SELFTEST with
//   struct iommu_test_hw_info { flags 0, test_reg 0xdeadbeef }.
//
// Underneath, a mock paging domain is a real engine page table in the VT-d
// second-stage format (4 KiB, 2 MiB and 1 GiB leaves), walked by the
// engine's walker: IOMMU_TEST_OP_MD_CHECK_MAP reads it back that way. The
// 2 KiB granule sits on top (MockPagingTable): a 4 KiB leaf whose two
// halves belong to different areas is mapped once and kept while either
// half is in use. Two things the VT-d format cannot express are refused
// with EINVAL at map time, where Linux's 2 KiB mock format would take them:
// a 2 KiB piece whose IOVA and physical address differ in bit 11, and the
// two halves of one 4 KiB IOVA page mapping different physical pages (or
// with different permissions). Automatic IOVAs keep the VA's offset in its
// page, so only fixed IOVAs off by 2 KiB from their VA meet the first case.

import type { Engine } from '../engine/engine.js';
import { SysError } from '../uapi/errno.js';
import {
  iommu_test_hw_info, IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_SELFTEST, IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_PASID,
  MOCK_APERTURE_START, MOCK_APERTURE_LAST, MOCK_PASID_WIDTH,
} from '../uapi/iommufd.js';
import type { HwInfoData, IommuDriver, IommuUnitCaps } from './driver.js';

/** selftest.c MOCK_IO_PAGE_SIZE: the smallest IOPTE of a mock domain. */
export const MOCK_IO_PAGE_SIZE = 2048;
const PAGE = 4096;
const HALF = BigInt(MOCK_IO_PAGE_SIZE);

/** The low (bit 0) or high (bit 1) 2 KiB half of a 4 KiB IOVA page. */
const halfBit = (iova: bigint) => ((iova & HALF) === 0n ? 1 : 2);

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

  constructor(private readonly engine: Engine, readonly did: number) {}

  /** The 2 KiB pieces at the edges of [iova, iova + length) and the 4 KiB-aligned middle. */
  private split(iova: bigint, length: bigint): { halves: bigint[]; start: bigint; end: bigint } {
    if (iova % HALF !== 0n || length % HALF !== 0n || length <= 0n) throw new SysError('EINVAL');
    let start = iova, end = iova + length;
    const halves: bigint[] = [];
    if (start % BigInt(PAGE) !== 0n) { halves.push(start); start += HALF; }
    if (end > start && end % BigInt(PAGE) !== 0n) { end -= HALF; halves.push(end); }
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
      if (e && ((e.halves & halfBit(h)) !== 0 || e.pa !== pagePa || e.perm !== perm)) throw new SysError('EINVAL');
      return { h, page, pagePa, e };
    });
    if (end > start) this.engine.ptMap(this.did, start, paOf(start), end - start, perm);
    const done: bigint[] = [];
    try {
      for (const { h, page, pagePa, e } of plan) {
        if (e) { e.halves |= halfBit(h); continue; }
        this.engine.ptMap(this.did, page, pagePa, PAGE, perm);
        this.partial.set(page, { halves: halfBit(h), pa: pagePa, perm });
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
      const lo = Number(iova / HALF), hi = Number((iova + length) / HALF);
      for (const k of this.dirty) if (k >= lo && k < hi) this.dirty.delete(k);
    }
  }

  /** IOMMU_TEST_OP_DIRTY: flag the 2 KiB IOPTE under iova dirty; false where nothing is mapped. */
  markDirty(iova: bigint): boolean {
    const at = iova - (iova % HALF);
    if (this.iovaToPhys(at) === null) return false;
    this.dirty.add(Number(at / HALF));
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
    const first = from - (from % MOCK_IO_PAGE_SIZE);
    const pStart = first - (first % PAGE), pEnd = Math.ceil(end / PAGE) * PAGE;
    const leaf = this.engine.ptReadDirty(this.did, pStart, pEnd - pStart, PAGE, false);
    if (clear) {
      const cStart = Math.ceil(from / PAGE) * PAGE, cEnd = end - (end % PAGE);
      if (cEnd > cStart) this.engine.ptReadDirty(this.did, cStart, cEnd - cStart, PAGE, true);
    }
    for (let p = first; p < end; p += MOCK_IO_PAGE_SIZE) {
      const k = (p - pStart) / PAGE | 0;
      const key = p / MOCK_IO_PAGE_SIZE;
      const flagged = this.dirty.has(key);
      if (!flagged && (leaf[k >> 3] & (1 << (k & 7))) === 0) continue;
      if (flagged && clear) this.dirty.delete(key);
      // iommu_dirty_bitmap_record(head, MOCK_IO_PAGE_SIZE): the bits of the part inside the range.
      const lo = Math.max(p, from), hi = Math.min(p + MOCK_IO_PAGE_SIZE, end) - 1;
      for (let b = Math.floor((lo - from) / pageSize); b <= Math.floor((hi - from) / pageSize); b++) out[b >> 3] |= 1 << (b & 7);
    }
  }

  /** Tracking turned on (iopt_clear_dirty_data): no flag is left. */
  clearDirty(): void { this.dirty.clear(); }

  private dropHalf(h: bigint): void {
    const page = h - (h % BigInt(PAGE));
    const e = this.partial.get(page);
    if (!e) return;
    e.halves &= ~halfBit(h);
    if (e.halves !== 0) return;
    this.partial.delete(page);
    this.engine.ptUnmap(this.did, page, PAGE);
  }

  /** iova_to_phys through the engine's walker; null where nothing is mapped (at 2 KiB granularity). */
  iovaToPhys(iova: bigint): number | null {
    const e = this.partial.get(iova - (iova % BigInt(PAGE)));
    if (e && (e.halves & halfBit(iova)) === 0) return null;
    const w = this.engine.ptWalk(this.did, iova);
    // The walk gives the leaf's base; the IOVA's offset in the leaf completes the address.
    return w.ok ? Number(w.pa) + Number(iova % BigInt(w.size)) : null;
  }
}

/** The tables of the mock domains of an engine, by domain id. */
const TABLES = new WeakMap<Engine, Map<number, MockPagingTable>>();

/** The MockPagingTable of a mock domain. */
export function mockTable(engine: Engine, did: number): MockPagingTable | undefined {
  return TABLES.get(engine)?.get(did);
}

/** What a mock IOMMU driver adds to the common driver interface. */
export interface MockIommuDriver extends IommuDriver {
  readonly kind: 'mock';
  /** The mock device flags this driver instance stands for (MOCK_FLAGS_DEVICE_NO_DIRTY). */
  readonly noDirty: boolean;
  /** Start of a paging domain's aperture (its end is 2^addressWidth - 1). */
  readonly apertureStart: bigint;
  /** The 2 KiB-granule table of a new paging domain (engine domain `did`). */
  domainOps(engine: Engine, did: number): MockPagingTable;
}

/**
 * The mock unit as a device created with `dev_flags` sees it. Linux has one
 * mock IOMMU whose capable() answers per device (DIRTY_TRACKING unless
 * NO_DIRTY); here each answer is a driver instance of the one unit.
 */
export function mockIommu(engine: Engine, opts: { noDirty: boolean }): MockIommuDriver {
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
    pgsizeMin: BigInt(MOCK_IO_PAGE_SIZE),
    resvRegions: () => [],
    caps,
    // mock_domain_alloc_paging_flags: NEST_PARENT, DIRTY_TRACKING (EOPNOTSUPP on a NO_DIRTY device), PASID.
    pagingFlags: IOMMU_HWPT_ALLOC_NEST_PARENT | (caps.dirtyTracking ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0) | IOMMU_HWPT_ALLOC_PASID,
    domainOps(eng: Engine, did: number): MockPagingTable {
      let m = TABLES.get(eng);
      if (!m) TABLES.set(eng, (m = new Map()));
      const t = new MockPagingTable(eng, did);
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
