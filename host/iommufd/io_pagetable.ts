// The IOAS's I/O page table bookkeeping (drivers/iommu/iommufd/io_pagetable.c):
// areas (IOVA ranges mapped to slices of IoPages), reserved ranges (apertures,
// device reserved regions), allowed ranges, the domains kept in sync with the
// areas, and the pinning of the pages behind them.
//
// Every operation checks everything before it changes anything, so a failed
// call leaves no trace (DESIGN 4). IOVAs are bigints: an IOAS without a domain
// accepts any IOVA below ULONG_MAX, as Linux does.

import type { Engine } from '../engine/engine.js';
import type { DomainOps } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import type { IoPages } from './pages.js';
import { pageOff, offIn } from '../kernel/phys.js';

export const ULONG_MAX = (1n << 64n) - 1n;
export const PAGE_SIZE = 4096n;
/** Largest alignment the automatic IOVA allocator keeps from the VA (HPAGE_SIZE with THP). */
const HPAGE_SIZE = 2n << 20n;

export const PERM_R = 1;
export const PERM_W = 2;

/** A domain as the IOAS sees it: an engine page table with an aperture. */
export interface Domain {
  readonly did: number;
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  /** Smallest page size of the domain (iommu_domain pgsize_bitmap's lowest bit). */
  readonly pgsizeMin: bigint;
  /** The domain's own map/unmap (a unit whose smallest page is below the engine's leaf); else the engine's. */
  readonly ops?: DomainOps;
}

/**
 * An in-kernel user of the IOAS (struct iommufd_access): told before areas
 * go away so that it drops its pins (ops->unmap); one that pins pages
 * (needs_pin_pages) keeps the IOAS PAGE_SIZE-aligned.
 */
export interface IoptAccess {
  readonly needsPin: boolean;
  unmap(iova: bigint, last: bigint): void;
}

/** A slice of pages: bytes [offset, offset + length) of them. */
export interface PagesSlice { pages: IoPages; offset: number; length: number }

/** The address an automatic IOVA keeps the alignment of (the VA or file offset). */
const addrOf = (e: PagesSlice): bigint => (Number.isSafeInteger(e.pages.base) ? BigInt(e.pages.base + e.offset) : 0n);

/**
 * An IOVA range mapped to a slice of pages. The range is kept as numbers,
 * exact below 2^53 and rounded (Number()) above: rounding is monotonic and
 * 2^53 is a double, so comparing either with a number below 2^53 still
 * answers exactly, which is all the number paths do. The bigint forms are
 * made when first read (an area above 2^53 holds them from the start): a
 * 4 KiB IOAS_MAP + UNMAP reads none, and a BigInt() costs 15-35 ns.
 */
export class Area {
  readonly iovaN: number;
  readonly lastN: number;
  private iovaB: bigint | null;
  private lastB: bigint | null;

  /** @param iova, last numbers only when below 2^53. */
  constructor(iova: bigint | number, last: bigint | number, readonly pages: IoPages,
    /** Byte offset of the area's first IOVA in its pages. */
    readonly offset: number,
    /** last - iova + 1 as a number (a slice of pages is shorter than 2^53). */
    readonly bytes: number,
    readonly perm: number) {
    // Number() only of a bigint: Number() fed numbers and bigints both stays a generic call (the costliest line of a 4 KiB map).
    this.iovaN = typeof iova === 'number' ? iova : Number(iova);
    this.lastN = typeof last === 'number' ? last : Number(last);
    this.iovaB = typeof iova === 'bigint' ? iova : null;
    this.lastB = typeof last === 'bigint' ? last : null;
  }

  get iova(): bigint { return (this.iovaB ??= BigInt(this.iovaN)); }
  get last(): bigint { return (this.lastB ??= BigInt(this.lastN)); }
  /** The first IOVA as the engine's calls take it: a number while exact. */
  get iovaArg(): bigint | number { return this.iovaN <= Number.MAX_SAFE_INTEGER ? this.iovaN : this.iova; }
}

export interface Range { start: bigint; last: bigint; owner?: unknown }

const overlaps = (a: Range, start: bigint, last: bigint) => a.start <= last && a.last >= start;
/** x % align === 0n; no division for the alignment of an IOAS without domains. */
const aligned = (x: bigint, align: bigint) => align === 1n || x % align === 0n;

export class IoPagetable {
  /** Sorted by iova, non-overlapping. */
  readonly areas: Area[] = [];
  readonly reserved: Range[] = [];
  /** `reserved` as numbers (rounded as Area's are) for the number paths, [start, last, ...]; made again after a change. */
  private reservedN: number[] | null = null;
  allowed: Range[] = [];
  readonly domains: Domain[] = [];
  readonly accesses = new Set<IoptAccess>();
  hugePages = true;
  /**
   * iovaAlignment for the number paths (alignmentN of it), or -1 until next
   * asked: reset by every change of what it depends on (hugePages, domains,
   * accesses). Working it out is bigint compares and a Set iteration, some
   * 50 ns of a 4 KiB IOAS_MAP. Plain data: a snapshot keeps it as it is.
   */
  private alignN = -1;

  /** `pageSize`: the kernel's PAGE_SIZE, the unit IOVAs are kept aligned to where Linux keeps them. */
  constructor(private readonly engine: Engine, readonly pageSize: bigint = PAGE_SIZE) {}

  /** iova_alignment: 1, raised by HUGE_PAGES=0 and by each domain's smallest page. */
  get iovaAlignment(): bigint {
    let a = this.hugePages ? 1n : this.pageSize;
    for (const d of this.domains) if (d.pgsizeMin > a) a = d.pgsizeMin;
    for (const x of this.accesses) if (x.needsPin && this.pageSize > a) a = this.pageSize;
    return a;
  }

  /** area->page_offset: the offset of byte `offset` of `pages` in its kernel page. */
  private pageOffsetOf(pages: IoPages, offset: number): number {
    if (this.pageSize === PAGE_SIZE || !Number.isSafeInteger(pages.base)) return pageOff(pages.pageOffset + offset);
    return offIn(pages.base + offset, Number(this.pageSize));
  }

  /**
   * Index of the first area ending at or after `start`: a bigint, or a
   * number below 2^53, compared with the areas' numbers (exact, see Area).
   */
  private firstAreaFrom(start: bigint | number): number {
    const byNumber = typeof start === 'number';
    let lo = 0, hi = this.areas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byNumber ? this.areas[mid].lastN < start : this.areas[mid].last < start) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Whether a reserved range meets [start, last], two numbers below 2^53. */
  private reservedMeetsN(start: number, last: number): boolean {
    const r = (this.reservedN ??= this.reserved.flatMap((x) => [Number(x.start), Number(x.last)]));
    for (let i = 0; i < r.length; i += 2) if (r[i] <= last && r[i + 1] >= start) return true;
    return false;
  }

  /** Whether an area intersects [start, last]. */
  private hasAreaIn(start: bigint, last: bigint): boolean {
    const i = this.firstAreaFrom(start);
    return i < this.areas.length && this.areas[i].iova <= last;
  }

  /** Areas intersecting [start, last]. */
  areasIn(start: bigint, last: bigint): Area[] {
    const out: Area[] = [];
    for (let i = this.firstAreaFrom(start); i < this.areas.length && this.areas[i].iova <= last; i++) out.push(this.areas[i]);
    return out;
  }

  /** iopt_check_iova: a fixed IOVA must be aligned, fit, avoid reserved ranges (EINVAL) and areas (EEXIST). */
  checkIova(iova: bigint, length: bigint, align = this.iovaAlignment): void {
    if (!aligned(iova, align)) throw new SysError('EINVAL');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
    for (const r of this.reserved) if (overlaps(r, iova, last)) throw new SysError('EINVAL');
    if (this.hasAreaIn(iova, last)) throw new SysError('EEXIST');
  }

  /**
   * iopt_alloc_iova: the lowest hole of (reserved ∪ areas) inside the allowed
   * ranges (or [PAGE_SIZE, ULONG_MAX - PAGE_SIZE]) that fits `length` at an
   * alignment taken from the length and from `addr` (the VA), so that large
   * leaves stay possible; IOVA 0 is never returned.
   */
  allocIova(length: bigint, addr: bigint): bigint {
    if (length === 0n || length >= ULONG_MAX / 2n) throw new SysError('EOVERFLOW');
    let align = roundupPow2(length);
    if (addr !== 0n) align = min(align, addr & -addr);
    align = min(align, HPAGE_SIZE);
    if (align < this.iovaAlignment) throw new SysError('EINVAL');
    const pageOff = addr % this.pageSize;
    const spans = this.allowed.length > 0 ? [...this.allowed].sort((a, b) => (a.start < b.start ? -1 : 1)) : [{ start: 0n, last: ULONG_MAX }];
    const used = [...this.reserved, ...this.areas.map((a) => ({ start: a.iova, last: a.last }))].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const span of spans) {
      const lo = max(span.start, this.pageSize), hi = min(span.last, ULONG_MAX - this.pageSize);
      let holeStart = lo;
      for (const u of [...used, { start: hi + 1n, last: hi + 1n }]) {
        if (u.last < holeStart) continue;
        const holeLast = min(u.start - 1n, hi);
        if (holeLast >= holeStart) {
          // __alloc_iova_check_range: the aligned start must lie below the hole's last byte.
          const iova = alignUp(holeStart, align) | pageOff;
          if (iova >= holeStart && iova < holeLast && holeLast - iova >= length - 1n) return iova;
        }
        if (u.last >= hi) break;
        holeStart = max(holeStart, u.last + 1n);
      }
    }
    throw new SysError('ENOSPC');
  }

  /**
   * iopt_map_pages: place `elems` (slices of pages, in IOVA order) at a fixed
   * IOVA or an allocated one, check each slice, map them into every domain
   * (pinning), then insert the areas. Returns the IOVA. All or nothing.
   */
  map(elems: PagesSlice[], length: bigint, fixedIova: bigint | null, perm: number): bigint {
    const align = this.iovaAlignment;
    if (length === 0n || !aligned(length, align)) throw new SysError('EINVAL');
    const iova = fixedIova === null ? this.allocIova(length, addrOf(elems[0])) : (this.checkIova(fixedIova, length, align), fixedIova);
    // Lists sized up front: `[]` then push() allocates room for 17 (most of a 4 KiB map's garbage was such room).
    const areas: Area[] = new Array<Area>(elems.length);
    let at = iova;
    for (let i = 0; i < elems.length; i++) {
      const e = elems[i];
      // iopt_insert_area: a writable area needs writable pages; the slice's page offset must suit the alignment
      // (an offset of 0, the usual one, suits any: no BigInt() of it then).
      if ((perm & PERM_W) && !e.pages.writable) throw new SysError('EPERM');
      const inPage = this.pageOffsetOf(e.pages, e.offset);
      if (align !== 1n && inPage !== 0 && BigInt(inPage) % align !== 0n) throw new SysError('EINVAL');
      // The slices add up to `length`: the last one ends at iova + length (no BigInt() of its length).
      const next = i === elems.length - 1 ? iova + length : at + BigInt(e.length);
      areas[i] = new Area(at, next - 1n, e.pages, e.offset, e.length, perm);
      at = next;
    }
    let filled = 0; // areas[0, filled) are in every domain
    try {
      for (; filled < areas.length; filled++) this.fillDomains(areas[filled]);
    } catch (e) {
      for (let i = 0; i < filled; i++) this.unfillDomains(areas[i]);
      throw e;
    }
    for (const a of areas) { a.pages.get(); insertAt(this.areas, this.firstAreaFrom(a.iova), a); }
    return iova;
  }

  /**
   * map() of one slice of pages (all of them) at a fixed IOVA, in numbers
   * below 2^53 (IOAS_MAP's common case: no BigInt). false, with nothing
   * done, where a check of map() would fail or a value leaves that range:
   * map() then gives the errno. Past the checks (pinning, the domains) it
   * fails as map() does, from the same code.
   */
  mapFixedN(pages: IoPages, length: number, iova: number, perm: number): boolean {
    const align = this.alignN >= 0 ? this.alignN : (this.alignN = alignmentN(this.iovaAlignment));
    // The end, not the last byte, is compared: a sum past 2^53 rounds, and can round down to 2^53 (then last = 2^53 - 1 looks safe).
    if (align === 0 || length === 0 || iova + length > Number.MAX_SAFE_INTEGER || !alignedN(length, align) || !alignedN(iova, align)) return false;
    const last = iova + length - 1;
    if (this.reservedMeetsN(iova, last)) return false;
    const at = this.firstAreaFrom(iova);
    if (at < this.areas.length && this.areas[at].iovaN <= last) return false;
    if (((perm & PERM_W) && !pages.writable) || !alignedN(this.pageOffsetOf(pages, 0), align)) return false;
    const area = new Area(iova, last, pages, 0, length, perm);
    this.fillDomains(area);
    pages.get();
    insertAt(this.areas, at, area);
    return true;
  }

  /** Pin an area's pages and map it into every domain; undone if any domain fails. */
  private fillDomains(area: Area): void {
    if (this.domains.length === 0) return;
    area.pages.pinBytes(area.offset, area.bytes);
    let done = 0;
    try {
      for (const d of this.domains) { this.mapInto(d, area); done++; }
    } catch (e) {
      for (let i = 0; i <= done && i < this.domains.length; i++) this.ptUnmapArea(this.domains[i], area);
      area.pages.unpinBytes(area.offset, area.bytes);
      throw e;
    }
  }

  private unfillDomains(area: Area): void {
    if (this.domains.length === 0) return;
    for (const d of this.domains) this.ptUnmapArea(d, area);
    area.pages.unpinBytes(area.offset, area.bytes);
  }

  /**
   * iopt_get_pages: the slices of pages behind [iova, iova + length), which
   * contiguous areas must cover, else ENOENT (any sub-range will do).
   */
  getPages(iova: bigint, length: bigint, uncovered: 'ENOENT' | 'EINVAL' = 'ENOENT'): PagesSlice[] {
    if (length === 0n) throw new SysError('EINVAL');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
    const out: PagesSlice[] = [];
    let cur = iova;
    for (const a of this.areasIn(iova, last)) {
      if (a.iova > cur) break;
      const end = a.last < last ? a.last : last;
      out.push({ pages: a.pages, offset: a.offset + Number(cur - a.iova), length: Number(end - cur + 1n) });
      cur = end + 1n;
      if (end === last) return out;
    }
    throw new SysError(uncovered);
  }

  /**
   * iopt_set_allow_iova: replace the allowed ranges; EADDRINUSE (old list
   * kept) if one meets a reserved range.
   */
  setAllowed(ranges: Range[]): void {
    if (ranges.some((r) => this.reserved.some((x) => overlaps(x, r.start, r.last)))) throw new SysError('EADDRINUSE');
    this.allowed = ranges;
  }

  /**
   * IOMMU_OPTION_HUGE_PAGES: enabling always works; disabling is refused
   * (EINVAL) while domains already map areas, and (EADDRINUSE) when an area
   * is not aligned to the PAGE_SIZE alignment it brings.
   */
  setHugePages(on: boolean): void {
    this.alignN = -1;
    if (on || !this.hugePages) { this.hugePages = on; return; }
    if (this.domains.length > 0 && this.areas.length > 0) throw new SysError('EINVAL');
    this.checkAlignment(max(this.iovaAlignment, this.pageSize));
    this.hugePages = false;
  }

  /** iopt_check_iova_alignment: every area must suit a raised alignment. */
  private checkAlignment(align: bigint): void {
    if (this.areas.some((a) => a.iova % align !== 0n || (a.last + 1n) % align !== 0n || BigInt(this.pageOffsetOf(a.pages, a.offset)) % align !== 0n)) {
      throw new SysError('EADDRINUSE');
    }
  }

  private mapInto(d: Domain, area: Area): void {
    // An area in one pinned run (a small one) as one range: no list of runs.
    // Its IOVA a number while exact: no BigInt per engine call.
    const pa = this.hugePages ? area.pages.contiguousPa(area.offset, area.bytes) : -1;
    if (pa >= 0) this.ptMap(d, area.iovaArg, pa, area.bytes, area.perm);
    else this.mapRuns(d, area);
  }

  /** mapInto() run by run, or page by page with HUGE_PAGES=0 (apart, to keep mapInto small enough to inline). */
  private mapRuns(d: Domain, area: Area): void {
    const safe = area.lastN <= Number.MAX_SAFE_INTEGER;
    let iova = safe ? 0n : area.iova, at = area.iovaN;
    const runs = area.pages.physRuns(area.offset, area.bytes);
    for (let i = 0; i < runs.length; i++) {
      const r = runs[i];
      if (this.hugePages) {
        this.ptMap(d, safe ? at : iova, r.pa, r.length, area.perm);
      } else {
        // HUGE_PAGES=0: PAGE_SIZE IOPTEs only, so that any page can be cut out later (VFIO type1).
        const step = Number(this.pageSize);
        for (let off = 0; off < r.length; off += step) this.ptMap(d, safe ? at + off : iova + BigInt(off), r.pa + off, Math.min(step, r.length - off), area.perm);
      }
      if (i + 1 < runs.length) { if (safe) at += r.length; else iova += BigInt(r.length); }
    }
  }

  private ptMap(d: Domain, iova: bigint | number, pa: number, length: number, perm: number): void {
    if (d.ops) d.ops.map(BigInt(iova), pa, length, perm);
    else this.engine.ptMap(d.did, iova, pa, length, perm);
  }

  /** Unmap a whole area from a domain; the engine takes its IOVA and length as the numbers they are kept as. */
  private ptUnmapArea(d: Domain, a: Area): void {
    if (d.ops) d.ops.unmap(a.iova, a.last - a.iova + 1n);
    else this.engine.ptUnmap(d.did, a.iovaArg, a.bytes);
  }

  /** iopt_add_access: a pinning access needs every area PAGE_SIZE-aligned (EADDRINUSE). */
  addAccess(a: IoptAccess): void {
    if (a.needsPin) this.checkAlignment(max(this.iovaAlignment, this.pageSize));
    this.accesses.add(a);
    this.alignN = -1;
  }

  removeAccess(a: IoptAccess): void { this.accesses.delete(a); this.alignN = -1; }

  /**
   * iopt_unmap_iova: every area touching [iova, last] must lie inside it,
   * else ENOENT; nothing unmapped at all is ENOENT too. Returns bytes unmapped.
   */
  unmap(iova: bigint, length: bigint): bigint {
    if (length === 0n) throw new SysError('EINVAL');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
    // The areas touching [iova, last] are areas[from, to): an index range, no list.
    const from = this.firstAreaFrom(iova);
    let to = from;
    for (; to < this.areas.length && this.areas[to].iova <= last; to++) {
      if (this.areas[to].iova < iova || this.areas[to].last > last) throw new SysError('ENOENT');
    }
    if (to === from) throw new SysError('ENOENT');
    this.notifyUnmap(iova, last);
    return BigInt(this.removeAreas(from, to));
  }

  /**
   * unmap() in numbers below 2^53 (IOAS_UNMAP's common case): the bytes
   * unmapped, or -1 with nothing done where unmap() would fail or a value
   * leaves that range (unmap() then gives the errno).
   */
  unmapN(iova: number, length: number): number {
    if (length === 0 || iova + length > Number.MAX_SAFE_INTEGER) return -1; // the end, as in mapFixedN
    const last = iova + length - 1;
    const from = this.firstAreaFrom(iova);
    let to = from;
    for (; to < this.areas.length && this.areas[to].iovaN <= last; to++) {
      if (this.areas[to].iovaN < iova || this.areas[to].lastN > last) return -1;
    }
    if (to === from) return -1;
    if (this.accesses.size > 0) this.notifyUnmap(BigInt(iova), BigInt(last));
    // A number here (the areas lie below 2^53); Number() of a number | bigint would stay a generic call.
    return this.removeAreas(from, to) as number;
  }

  /**
   * iommufd_access_notify_unmap: accesses drop their pins of [iova, last]
   * first (or refuse, EBUSY); they leave the area list as it is, so an
   * index range of it taken before still holds.
   */
  private notifyUnmap(iova: bigint, last: bigint): void {
    for (const x of this.accesses) x.unmap(iova, last);
  }

  /** iopt_unmap_all: succeeds even when empty. */
  unmapAll(): bigint {
    this.notifyUnmap(0n, ULONG_MAX);
    return BigInt(this.removeAreas(0, this.areas.length));
  }

  /**
   * Remove areas[from, to): those done leave the list even if one fails.
   * Returns their bytes: a number while the sum is below 2^53 (always, for
   * areas inside a range below 2^53), else an exact bigint.
   */
  private removeAreas(from: number, to: number): number | bigint {
    let total = 0, carried = 0n;
    let i = from;
    try {
      for (; i < to; i++) {
        const a = this.areas[i];
        // The engine invalidates the IOTLB before ptUnmap returns: from here on
        // no DMA reaches these pages through this IOAS.
        this.unfillDomains(a);
        a.pages.put();
        if (total + a.bytes > Number.MAX_SAFE_INTEGER) { carried += BigInt(total); total = 0; }
        total += a.bytes;
      }
    } finally {
      removeRange(this.areas, from, i - from);
    }
    return carried === 0n ? total : carried + BigInt(total);
  }

  /** iopt_reserve_iova: EADDRINUSE if it meets an area or an allowed range. */
  reserve(start: bigint, last: bigint, owner: unknown): void {
    if (this.areasIn(start, last).length > 0 || this.allowed.some((r) => overlaps(r, start, last))) throw new SysError('EADDRINUSE');
    this.reserved.push({ start, last, owner });
    this.reservedN = null;
  }

  unreserve(owner: unknown): void {
    for (let i = this.reserved.length - 1; i >= 0; i--) if (this.reserved[i].owner === owner) this.reserved.splice(i, 1);
    this.reservedN = null;
  }

  /**
   * iopt_table_add_domain: reserve what lies outside the aperture, check the
   * alignment, pin and fill the domain with every area. All or nothing.
   */
  addDomain(d: Domain): void {
    // "A iommu_domain must always be able to accept PAGE_SIZE" (iopt_table_add_domain).
    if (d.pgsizeMin > this.pageSize) throw new SysError('EINVAL');
    const align = max(this.iovaAlignment, d.pgsizeMin);
    if (align !== this.iovaAlignment) this.checkAlignment(align);
    try {
      if (d.apertureStart > 0n) this.reserve(0n, d.apertureStart - 1n, d);
      if (d.apertureLast < ULONG_MAX) this.reserve(d.apertureLast + 1n, ULONG_MAX, d);
    } catch (e) {
      this.unreserve(d);
      throw e;
    }
    // An area's pages are pinned once while the IOAS has any domain (as
    // fillDomains and unfillDomains count them): only the first domain pins.
    const pin = this.domains.length === 0;
    const filled: Area[] = [];
    try {
      for (const a of this.areas) {
        if (pin) a.pages.pinBytes(a.offset, a.bytes);
        filled.push(a);
        this.mapInto(d, a);
      }
    } catch (e) {
      for (const a of filled) { this.ptUnmapArea(d, a); if (pin) a.pages.unpinBytes(a.offset, a.bytes); }
      this.unreserve(d);
      throw e;
    }
    this.domains.push(d);
    this.alignN = -1;
  }

  /** iopt_table_remove_domain: unmap everything from it; the last domain unpins the areas' pages. */
  removeDomain(d: Domain): void {
    const i = this.domains.indexOf(d);
    if (i < 0) return;
    const last = this.domains.length === 1;
    for (const a of this.areas) {
      this.ptUnmapArea(d, a);
      if (last) a.pages.unpinBytes(a.offset, a.bytes);
    }
    this.domains.splice(i, 1);
    this.alignN = -1;
    this.unreserve(d);
  }

  /** The holes of the reserved ranges over [0, ULONG_MAX] (IOMMU_IOAS_IOVA_RANGES). */
  iovaRanges(): Range[] {
    const sorted = [...this.reserved].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const out: Range[] = [];
    let next = 0n;
    for (const r of sorted) {
      if (r.start > next) out.push({ start: next, last: r.start - 1n });
      if (r.last + 1n > next) next = r.last + 1n;
      if (next > ULONG_MAX) return out;
    }
    out.push({ start: next, last: ULONG_MAX });
    return out;
  }
}

// splice(i, 0, x) and splice(from, n) without splice's fixed cost (it
// builds the array of removed elements): a large part of a 4 KiB IOAS_MAP's
// bookkeeping went there. Both are O(length), as splice is.
function insertAt<T>(list: T[], i: number, x: T): void {
  list.push(x);
  for (let j = list.length - 1; j > i; j--) list[j] = list[j - 1];
  list[i] = x;
}
function removeRange<T>(list: T[], from: number, n: number): void {
  if (n === 0) return;
  for (let j = from; j + n < list.length; j++) list[j] = list[j + n];
  for (let k = 0; k < n; k++) list.pop();
}

/** An IOVA alignment (a power of two) as a number, or 0 above 2^52; the last one is kept (Number() of a bigint costs ~30 ns). */
let alignB = 1n, alignNum = 1;
function alignmentN(align: bigint): number {
  if (align !== alignB) { alignB = align; alignNum = align <= 1n << 52n && (align & (align - 1n)) === 0n ? Number(align) : 0; }
  return alignNum;
}
/** x % align === 0 for a power of two `align` and x below 2^53, without a double's % (fmod above 2^31). */
const alignedN = (x: number, align: number) => offIn(x, align) === 0;

const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);
const alignUp = (x: bigint, a: bigint) => ((x + a - 1n) / a) * a;

function roundupPow2(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}
