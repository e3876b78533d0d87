// The IOAS's I/O page table bookkeeping (drivers/iommu/iommufd/io_pagetable.c):
// areas (IOVA ranges mapped to user memory), reserved ranges (apertures,
// device reserved regions), allowed ranges, the domains kept in sync with the
// areas, and the pinning of the user pages behind them.
//
// Every operation checks everything before it changes anything, so a failed
// call leaves no trace (DESIGN 4). IOVAs are bigints: an IOAS without a domain
// accepts any IOVA below ULONG_MAX, as Linux does.

import type { Engine } from '../engine/engine.js';
import type { AddressSpace, PhysRun } from '../kernel/mm.js';
import { SysError } from '../uapi/errno.js';

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
}

/**
 * The user pages behind one or more areas (iopt_pages): pinned once, however
 * many domains map them.
 */
export class IoPages {
  private runs: PhysRun[] | null = null;
  private pinUsers = 0;

  constructor(private readonly mm: AddressSpace, readonly va: number, readonly length: number, readonly writable: boolean) {}

  /** Page-aligned span of the user memory. */
  private get first(): number { return Math.floor(this.va / 4096) * 4096; }

  /** Byte offset of the first byte in its page. */
  get pageOffset(): number { return Number.isSafeInteger(this.va) ? this.va % 4096 : 0; }

  /** Pin (once) and return the physical runs covering the pages. EFAULT / ENOMEM. */
  pin(): PhysRun[] {
    if (this.runs === null) {
      if (!Number.isSafeInteger(this.va + this.length)) throw new SysError('EFAULT');
      const end = Math.ceil((this.va + this.length) / 4096) * 4096;
      this.runs = this.mm.pin(this.first, end - this.first, this.writable);
    }
    this.pinUsers++;
    return this.runs;
  }

  unpin(): void {
    if (--this.pinUsers === 0 && this.runs) {
      this.mm.unpin(this.runs);
      this.runs = null;
    }
  }

  get pinned(): boolean { return this.runs !== null; }

  /** Physical runs of bytes [offset, offset + length) of the pages (pinned). */
  physRuns(offset: number, length: number): PhysRun[] {
    const out: PhysRun[] = [];
    let skip = this.va - this.first + offset;
    let left = length;
    for (const r of this.runs!) {
      if (left === 0) break;
      if (skip >= r.length) { skip -= r.length; continue; }
      const n = Math.min(r.length - skip, left);
      out.push({ pa: r.pa + skip, length: n });
      left -= n;
      skip = 0;
    }
    return out;
  }
}

export interface Area {
  iova: bigint;
  last: bigint;
  pages: IoPages;
  /** Byte offset of the area's first IOVA in its pages. */
  offset: number;
  perm: number;
}

interface Range { start: bigint; last: bigint; owner?: unknown }

const overlaps = (a: Range, start: bigint, last: bigint) => a.start <= last && a.last >= start;

export class IoPagetable {
  /** Sorted by iova, non-overlapping. */
  readonly areas: Area[] = [];
  readonly reserved: Range[] = [];
  allowed: Range[] = [];
  readonly domains: Domain[] = [];
  hugePages = true;

  constructor(private readonly engine: Engine) {}

  /** iova_alignment: 1, raised by HUGE_PAGES=0 and by each domain's smallest page. */
  get iovaAlignment(): bigint {
    let a = this.hugePages ? 1n : PAGE_SIZE;
    for (const d of this.domains) if (d.pgsizeMin > a) a = d.pgsizeMin;
    return a;
  }

  private firstAreaFrom(start: bigint): number {
    let lo = 0, hi = this.areas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.areas[mid].last < start) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Areas intersecting [start, last]. */
  areasIn(start: bigint, last: bigint): Area[] {
    const out: Area[] = [];
    for (let i = this.firstAreaFrom(start); i < this.areas.length && this.areas[i].iova <= last; i++) out.push(this.areas[i]);
    return out;
  }

  /** iopt_check_iova: a fixed IOVA must be aligned, fit, avoid reserved ranges (EINVAL) and areas (EEXIST). */
  checkIova(iova: bigint, length: bigint): void {
    if (iova % this.iovaAlignment !== 0n) throw new SysError('EINVAL');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
    if (this.reserved.some((r) => overlaps(r, iova, last))) throw new SysError('EINVAL');
    if (this.areasIn(iova, last).length > 0) throw new SysError('EEXIST');
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
    const pageOff = addr % PAGE_SIZE;
    const spans = this.allowed.length > 0 ? [...this.allowed].sort((a, b) => (a.start < b.start ? -1 : 1)) : [{ start: 0n, last: ULONG_MAX }];
    const used = [...this.reserved, ...this.areas.map((a) => ({ start: a.iova, last: a.last }))].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (const span of spans) {
      const lo = max(span.start, PAGE_SIZE), hi = min(span.last, ULONG_MAX - PAGE_SIZE);
      let holeStart = lo;
      for (const u of [...used, { start: hi + 1n, last: hi + 1n }]) {
        if (u.last < holeStart) continue;
        const holeLast = min(u.start - 1n, hi);
        if (holeLast >= holeStart) {
          const iova = alignUp(holeStart, align) | pageOff;
          if (iova >= holeStart && iova + length - 1n <= holeLast) return iova;
        }
        if (u.last >= hi) break;
        holeStart = max(holeStart, u.last + 1n);
      }
    }
    throw new SysError('ENOSPC');
  }

  /**
   * Insert an area at a checked IOVA and map it into every domain. Pins the
   * pages when a domain exists; on failure nothing stays mapped or pinned.
   */
  insertArea(area: Area): void {
    const len = area.last - area.iova + 1n;
    if (this.domains.length > 0) {
      area.pages.pin();
      let done = 0;
      try {
        for (const d of this.domains) { this.mapInto(d, area); done++; }
      } catch (e) {
        for (let i = 0; i <= done && i < this.domains.length; i++) this.engine.ptUnmap(this.domains[i].did, area.iova, len);
        area.pages.unpin();
        throw e;
      }
    }
    this.areas.splice(this.firstAreaFrom(area.iova), 0, area);
  }

  private mapInto(d: Domain, area: Area): void {
    let iova = area.iova;
    for (const r of area.pages.physRuns(area.offset, Number(area.last - area.iova + 1n))) {
      this.engine.ptMap(d.did, iova, r.pa, r.length, area.perm);
      iova += BigInt(r.length);
    }
  }

  /**
   * iopt_unmap_iova: every area touching [iova, last] must lie inside it,
   * else ENOENT; nothing unmapped at all is ENOENT too. Returns bytes unmapped.
   */
  unmap(iova: bigint, length: bigint): bigint {
    if (length === 0n) throw new SysError('EINVAL');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new SysError('EOVERFLOW');
    const hit = this.areasIn(iova, last);
    if (hit.some((a) => a.iova < iova || a.last > last)) throw new SysError('ENOENT');
    if (hit.length === 0) throw new SysError('ENOENT');
    return this.removeAreas(hit);
  }

  /** iopt_unmap_all: succeeds even when empty. */
  unmapAll(): bigint { return this.removeAreas([...this.areas]); }

  private removeAreas(list: Area[]): bigint {
    let total = 0n;
    for (const a of list) {
      const len = a.last - a.iova + 1n;
      // The engine invalidates the IOTLB before ptUnmap returns: from here on
      // no DMA reaches these pages through this IOAS.
      for (const d of this.domains) this.engine.ptUnmap(d.did, a.iova, len);
      if (this.domains.length > 0) a.pages.unpin();
      this.areas.splice(this.areas.indexOf(a), 1);
      total += len;
    }
    return total;
  }

  /** iopt_reserve_iova: EADDRINUSE if it meets an area or an allowed range. */
  reserve(start: bigint, last: bigint, owner: unknown): void {
    if (this.areasIn(start, last).length > 0 || this.allowed.some((r) => overlaps(r, start, last))) throw new SysError('EADDRINUSE');
    this.reserved.push({ start, last, owner });
  }

  unreserve(owner: unknown): void {
    for (let i = this.reserved.length - 1; i >= 0; i--) if (this.reserved[i].owner === owner) this.reserved.splice(i, 1);
  }

  /**
   * iopt_table_add_domain: reserve what lies outside the aperture, check the
   * alignment, pin and fill the domain with every area. All or nothing.
   */
  addDomain(d: Domain): void {
    if (d.pgsizeMin > PAGE_SIZE) throw new SysError('EINVAL');
    const align = max(this.iovaAlignment, d.pgsizeMin);
    if (this.areas.some((a) => a.iova % align !== 0n || (a.last + 1n) % align !== 0n || BigInt((a.pages.pageOffset + a.offset) % 4096) % align !== 0n)) {
      throw new SysError('EADDRINUSE');
    }
    try {
      if (d.apertureStart > 0n) this.reserve(0n, d.apertureStart - 1n, d);
      if (d.apertureLast < ULONG_MAX) this.reserve(d.apertureLast + 1n, ULONG_MAX, d);
    } catch (e) {
      this.unreserve(d);
      throw e;
    }
    const filled: Area[] = [];
    try {
      for (const a of this.areas) {
        a.pages.pin();
        filled.push(a);
        this.mapInto(d, a);
      }
    } catch (e) {
      for (const a of filled) { this.engine.ptUnmap(d.did, a.iova, a.last - a.iova + 1n); a.pages.unpin(); }
      this.unreserve(d);
      throw e;
    }
    this.domains.push(d);
  }

  /** iopt_table_remove_domain: unmap everything from it and unpin what no domain needs. */
  removeDomain(d: Domain): void {
    const i = this.domains.indexOf(d);
    if (i < 0) return;
    for (const a of this.areas) {
      this.engine.ptUnmap(d.did, a.iova, a.last - a.iova + 1n);
      a.pages.unpin();
    }
    this.domains.splice(i, 1);
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

const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);
const alignUp = (x: bigint, a: bigint) => ((x + a - 1n) / a) * a;

function roundupPow2(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}
