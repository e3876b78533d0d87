// A plain-TypeScript IOTLB over the reference page-table walker: the oracle
// of the engine's IOTLB tests and the "naive" baseline of the benchmarks.
//
// One `Map` entry per (domain, PASID, 4 KiB page number of the IOVA); the
// entry remembers the whole leaf it came from (first IOVA, size, physical
// address, permission), so a hit anywhere in a page translates like the walk
// did. Invalidation, as VT-d's IOTLB invalidation granularities (spec 6.5.2.3):
//   - global: everything;
//   - domain-selective: every entry of the domain, any PASID;
//   - page-selective (domain + range): every entry of the domain whose LEAF
//     touches the range, whatever part of the leaf the entry was made for
//     (a partly unmapped large page must not survive in any form).
// The map holds at most `capacity` entries; the oldest goes first (a Map
// iterates in insertion order).

import {
  RefPageTable, type RefPageTableOptions, type RefStatus, F_BLOCKED, F_NOT_PRESENT, F_READ, F_WRITE, PERM_W, PAGE_SHIFT,
} from './vtd_sl.js';

export type RefTranslation =
  | { ok: true; pa: bigint; shift: number; perm: number }
  | { ok: false; fault: number; level: number };

interface Entry {
  did: number;
  pasid: number;
  leafIova: bigint;
  leafPa: bigint;
  shift: number;
  perm: number;
}

function keyOf(did: number, pasid: number, iova: bigint): bigint {
  return (BigInt(did) << 96n) | (BigInt(pasid) << 64n) | (iova >> BigInt(PAGE_SHIFT));
}

export class RefIotlb {
  hits = 0;
  misses = 0;
  private readonly entries = new Map<bigint, Entry>();

  /** `domain(did)` finds the page table of a domain (undefined: none). */
  constructor(
    private readonly domain: (did: number) => RefPageTable | undefined,
    readonly capacity = 4096,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * Translate `iova` of (did, pasid) for `access` (PERM_R | PERM_W). Domain 0
   * is the blocked domain. A permission fault reports level 0 (the walk
   * itself succeeded; the leaf stays cached).
   */
  translate(did: number, pasid: number, iova: bigint, access: number): RefTranslation {
    if (did === 0) return { ok: false, fault: F_BLOCKED, level: 0 };
    const key = keyOf(did, pasid, iova);
    let e = this.entries.get(key);
    if (e !== undefined) {
      this.hits++;
    } else {
      this.misses++;
      const table = this.domain(did);
      if (table === undefined) return { ok: false, fault: F_NOT_PRESENT, level: 0 };
      const w = table.walk(iova);
      if (!w.ok) return w;
      const size = 1n << BigInt(w.shift);
      e = { did, pasid, leafIova: iova & ~(size - 1n), leafPa: w.pa, shift: w.shift, perm: w.perm };
      if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(key, e);
    }
    const missing = access & ~e.perm;
    if (missing !== 0) return { ok: false, fault: missing & PERM_W ? F_WRITE : F_READ, level: 0 };
    return { ok: true, pa: e.leafPa + (iova - e.leafIova), shift: e.shift, perm: e.perm };
  }

  flushAll(): void {
    this.entries.clear();
  }

  flushDomain(did: number): void {
    for (const [k, e] of this.entries) if (e.did === did) this.entries.delete(k);
  }

  /** Drop every entry of `did` whose leaf touches [iova, iova + len). */
  flushRange(did: number, iova: bigint, len: bigint): void {
    if (len <= 0n) return;
    const last = iova + len - 1n;
    for (const [k, e] of this.entries) {
      if (e.did !== did) continue;
      const leafLast = e.leafIova + (1n << BigInt(e.shift)) - 1n;
      if (e.leafIova <= last && leafLast >= iova) this.entries.delete(k);
    }
  }

  /** Entries of a domain (any PASID). */
  count(did: number): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.did === did) n++;
    return n;
  }
}

/**
 * Domains plus their IOTLB, with the engine's contract: unmap and destroy
 * invalidate before they return.
 */
export class RefIommu {
  readonly domains = new Map<number, RefPageTable>();
  readonly iotlb: RefIotlb;

  constructor(iotlbCapacity = 4096) {
    this.iotlb = new RefIotlb((did) => this.domains.get(did), iotlbCapacity);
  }

  create(did: number, levels: number, sizes: number, opts?: RefPageTableOptions): RefPageTable {
    if (did === 0 || this.domains.has(did)) throw new RangeError(`domain ${did} is taken`);
    const t = new RefPageTable(levels, sizes, opts);
    this.domains.set(did, t);
    return t;
  }

  destroy(did: number): void {
    this.domains.delete(did);
    this.iotlb.flushDomain(did);
  }

  table(did: number): RefPageTable {
    const t = this.domains.get(did);
    if (t === undefined) throw new RangeError(`no domain ${did}`);
    return t;
  }

  map(did: number, iova: bigint, pa: bigint, len: bigint, perm: number): RefStatus {
    return this.table(did).map(iova, pa, len, perm);
  }

  unmap(did: number, iova: bigint, len: bigint): RefStatus {
    const r = this.table(did).unmap(iova, len);
    if (r === 0) this.iotlb.flushRange(did, iova, len);
    return r;
  }

  translate(did: number, pasid: number, iova: bigint, access: number): RefTranslation {
    return this.iotlb.translate(did, pasid, iova, access);
  }
}
