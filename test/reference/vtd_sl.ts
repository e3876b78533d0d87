// A plain-TypeScript model of a VT-d second-stage I/O page table (Intel VT-d
// specification rev 4.1, section 3.7 "Second-Stage Translation" and section
// 9.8 "Second-Stage Paging Entries"), kept in its own ArrayBuffer and read
// through a DataView. It is the oracle of the engine's differential tests and
// the "naive TypeScript implementation" of the benchmarks: straightforward,
// honest code, written from the specification and from the project's mapping
// rules, not from the engine's source.
//
// Format (9.8): 512 u64 entries per 4 KiB table, 3, 4 or 5 levels.
//   bit 0 R, bit 1 W (an entry is present when R or W is set), bit 7 PS
//   (a leaf above level 1), bits 51:12 the address of the next table or of
//   the page. Index bits: level 5 = 56:48, 4 = 47:39, 3 = 38:30, 2 = 29:21,
//   1 = 20:12. PS is allowed at level 3 (1 GiB) and level 2 (2 MiB) when the
//   table supports that size, and is reserved elsewhere; the address bits
//   below a large page's size are reserved. Permissions are the AND of the R
//   and W bits of every entry on the walk (3.7.1).
//
// Project rules (assembly/vtd_sl.ts header and the engine's README):
//   - map uses the largest leaf (1 GiB, then 2 MiB, then 4 KiB, among the
//     sizes the table allows) that the IOVA's and the physical address's
//     alignment and the remaining length allow; intermediate entries carry
//     R|W so the leaf decides; a range that is already (partly) mapped is
//     refused (EEXIST) with nothing changed;
//   - unmap splits a large leaf the range only partly covers into 512 leaves
//     of the next size down (the translation of the rest is unchanged) and
//     clears what lies inside; a table the range covers whole is freed;
//   - walk returns the leaf (its first byte's physical address, its size, the
//     permission) or the fault and the level where the walk stopped; an IOVA
//     above the address width faults before any read (level = top level).
//
// Physical addresses are those of assembly/layout.ts: segment in bits 51:32,
// offset in 31:0; the model only stores them (and asks an optional hook
// whether a leaf lies inside its segment). Its own tables live in its
// ArrayBuffer, and a table entry holds the byte offset of the next table there.

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

export const PERM_R = 1;
export const PERM_W = 2;
export const PERM_RW = PERM_R | PERM_W;

/** Leaf sizes as a bit per size class (4 KiB, 2 MiB, 1 GiB). */
export const SZ_4K = 1;
export const SZ_2M = 2;
export const SZ_1G = 4;

/** Fault codes: the same numbers as the engine's F_* (checked by a test). */
export const F_NONE = 0;
export const F_BLOCKED = 1;
export const F_ADDR_WIDTH = 2;
export const F_NOT_PRESENT = 3;
export const F_READ = 4;
export const F_WRITE = 5;
export const F_RESERVED = 6;
export const F_TABLE_ADDR = 7;
export const F_OUT_OF_SEGMENT = 8;

export type RefWalk =
  | { ok: true; pa: bigint; shift: number; perm: number }
  | { ok: false; fault: number; level: number };

/** 0 on success, else the errno name a Linux-style caller would see. */
export type RefStatus = 0 | 'EINVAL' | 'EEXIST' | 'ENOMEM';

export interface RefPageTableOptions {
  /** Is [pa, pa + len) inside one segment? (default: always) */
  physOk?: (pa: bigint, len: bigint) => boolean;
  /** Most table pages this table may hold (default: unlimited). */
  maxTables?: number;
}

/** A leaf as `leaves()` lists it. */
export interface RefLeaf { iova: bigint; pa: bigint; shift: number; perm: number }

const PS = 0x80;
const ENTRY_ADDR_LO = 0xfffff000; // bits 31:12 of the low word
const ENTRY_ADDR_HI = 0x000fffff; // bits 51:32 live in bits 19:0 of the high word

/** log2 of the span one entry of `level` covers. */
export function levelShift(level: number): number {
  return PAGE_SHIFT + 9 * (level - 1);
}

/** The size-class bit of a leaf at `level` (1 -> SZ_4K, 2 -> SZ_2M, 3 -> SZ_1G). */
function sizeBit(level: number): number {
  return 1 << (level - 1);
}

export class RefPageTable {
  readonly levels: number;
  readonly sizes: number;
  /** Bytes mapped by leaves. */
  mapped = 0n;
  /** Table pages held, the root included. */
  tables = 0;
  /** Byte offset of the root table in `buffer`. */
  readonly root: number;

  private buffer: ArrayBuffer;
  private view: DataView;
  private nextPage = 1; // page 0 is never a table: offset 0 then means "none"
  private readonly freePages: number[] = [];
  private readonly physOk: (pa: bigint, len: bigint) => boolean;
  private readonly maxTables: number;

  constructor(levels: number, sizes: number, opts: RefPageTableOptions = {}) {
    if (levels !== 3 && levels !== 4 && levels !== 5) throw new RangeError(`levels must be 3, 4 or 5, got ${levels}`);
    if ((sizes & SZ_4K) === 0 || sizes > 7 || sizes < 0) throw new RangeError(`bad leaf sizes ${sizes}`);
    this.levels = levels;
    this.sizes = sizes;
    this.physOk = opts.physOk ?? (() => true);
    this.maxTables = opts.maxTables ?? Infinity;
    this.buffer = new ArrayBuffer(16 * PAGE_SIZE);
    this.view = new DataView(this.buffer);
    const root = this.allocTable();
    if (root === 0) throw new RangeError('maxTables leaves no room for the root');
    this.root = root;
  }

  /** IOVAs below 2^widthBits are translatable. */
  get widthBits(): number {
    return levelShift(this.levels + 1);
  }

  // ---- table pages ----------------------------------------------------------

  private allocTable(): number {
    if (this.tables >= this.maxTables) return 0;
    let page = this.freePages.pop();
    if (page === undefined) {
      page = this.nextPage++;
      if ((page + 1) * PAGE_SIZE > this.buffer.byteLength) {
        const bigger = new ArrayBuffer(this.buffer.byteLength * 2);
        new Uint8Array(bigger).set(new Uint8Array(this.buffer));
        this.buffer = bigger;
        this.view = new DataView(bigger);
      }
    }
    const offset = page * PAGE_SIZE;
    new Uint8Array(this.buffer, offset, PAGE_SIZE).fill(0);
    this.tables++;
    return offset;
  }

  private freeTable(offset: number): void {
    this.freePages.push(offset / PAGE_SIZE);
    this.tables--;
  }

  // ---- entries --------------------------------------------------------------

  private lo(table: number, i: number): number {
    return this.view.getUint32(table + i * 8, true);
  }

  private hi(table: number, i: number): number {
    return this.view.getUint32(table + i * 8 + 4, true);
  }

  private set(table: number, i: number, lo: number, hi: number): void {
    this.view.setUint32(table + i * 8, lo >>> 0, true);
    this.view.setUint32(table + i * 8 + 4, hi >>> 0, true);
  }

  private present(table: number, i: number): boolean {
    return (this.lo(table, i) & PERM_RW) !== 0;
  }

  private isLeaf(table: number, i: number, level: number): boolean {
    return level === 1 || (this.lo(table, i) & PS) !== 0;
  }

  /** The address field (bits 51:12) of an entry. */
  private addr(table: number, i: number): bigint {
    return (BigInt(this.hi(table, i) & ENTRY_ADDR_HI) << 32n) | BigInt((this.lo(table, i) & ENTRY_ADDR_LO) >>> 0);
  }

  private child(table: number, i: number): number {
    return Number(this.addr(table, i));
  }

  private setLeaf(table: number, i: number, level: number, pa: bigint, perm: number): void {
    const lo = Number(pa & 0xfffff000n) | perm | (level > 1 ? PS : 0);
    this.set(table, i, lo, Number((pa >> 32n) & 0xfffffn));
  }

  private setTable(table: number, i: number, child: number): void {
    this.set(table, i, child | PERM_RW, 0);
  }

  private indexOf(iova: bigint, level: number): number {
    return Number((iova >> BigInt(levelShift(level))) & 511n);
  }

  // ---- map --------------------------------------------------------------------

  /**
   * Map [iova, iova + len) to [pa, pa + len) with `perm`. EINVAL for a
   * misaligned or empty range, a bad permission, an IOVA above the address
   * width or a physical range outside its segment; EEXIST if any of it is
   * mapped; ENOMEM when maxTables is reached. A failure changes no mapping
   * (empty tables made on the way may stay, as the engine's do).
   */
  map(iova: bigint, pa: bigint, len: bigint, perm: number): RefStatus {
    const mask = BigInt(PAGE_SIZE - 1);
    if (len <= 0n || iova < 0n || pa < 0n || (iova & mask) !== 0n || (pa & mask) !== 0n || (len & mask) !== 0n) return 'EINVAL';
    if (perm !== PERM_R && perm !== PERM_W && perm !== PERM_RW) return 'EINVAL';
    const end = iova + len;
    if (end > 1n << BigInt(this.widthBits)) return 'EINVAL';
    if (pa + len > 1n << 52n || !this.physOk(pa, len)) return 'EINVAL';

    // Leaf by leaf in IOVA order; on a conflict or when out of tables, take
    // back what this call mapped (an unmap of exactly those leaves: the
    // tables it covers whole are freed, the others stay, as after any unmap;
    // so the table pages, and the level of a not-present fault, are what a
    // map-then-unmap would leave).
    let at = iova;
    let to = pa;
    while (at < end) {
      const level = this.leafLevel(at, to, end - at);
      const size = 1n << BigInt(levelShift(level));
      let status: RefStatus = 0;
      if (this.anyMapped(this.root, this.levels, 0n, at, at + size - 1n)) status = 'EEXIST';
      else if (!this.install(at, to, level, perm)) status = 'ENOMEM';
      if (status !== 0) {
        if (at > iova) this.unmap(iova, at - iova);
        return status;
      }
      at += size;
      to += size;
    }
    return 0;
  }

  /** The largest allowed leaf whose size both addresses are aligned to and that fits in `left`. */
  private leafLevel(iova: bigint, pa: bigint, left: bigint): number {
    for (const level of [3, 2]) {
      if ((this.sizes & sizeBit(level)) === 0) continue;
      const size = 1n << BigInt(levelShift(level));
      if (iova % size === 0n && pa % size === 0n && left >= size) return level;
    }
    return 1;
  }

  /** Does any leaf under `table` (covering from `base`) intersect [first, last]? */
  private anyMapped(table: number, level: number, base: bigint, first: bigint, last: bigint): boolean {
    const shift = BigInt(levelShift(level));
    const span = 1n << shift;
    const i0 = Number((first - base) >> shift);
    const i1 = Number((last - base) >> shift);
    for (let i = i0; i <= i1; i++) {
      if (!this.present(table, i)) continue;
      if (this.isLeaf(table, i, level)) return true;
      const lo = base + BigInt(i) * span;
      const hi = lo + span - 1n;
      if (this.anyMapped(this.child(table, i), level - 1, lo, first > lo ? first : lo, last < hi ? last : hi)) return true;
    }
    return false;
  }

  /** Write one leaf at `level`, creating the tables above it. false when out of tables. */
  private install(iova: bigint, pa: bigint, level: number, perm: number): boolean {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const i = this.indexOf(iova, l);
      if (!this.present(table, i)) {
        const t = this.allocTable();
        if (t === 0) return false;
        this.setTable(table, i, t);
      }
      table = this.child(table, i);
    }
    const i = this.indexOf(iova, level);
    if (this.present(table, i)) {
      // Only an empty table can be here (map checked the range is free):
      // the large leaf replaces it.
      this.freeSubtree(this.child(table, i), level - 1);
    }
    this.setLeaf(table, i, level, pa, perm);
    this.mapped += 1n << BigInt(levelShift(level));
    return true;
  }

  private freeSubtree(table: number, level: number): void {
    if (level > 1) {
      for (let i = 0; i < 512; i++) {
        if (this.present(table, i) && !this.isLeaf(table, i, level)) this.freeSubtree(this.child(table, i), level - 1);
      }
    }
    this.freeTable(table);
  }

  private bytesIn(table: number, level: number): bigint {
    let n = 0n;
    for (let i = 0; i < 512; i++) {
      if (!this.present(table, i)) continue;
      n += this.isLeaf(table, i, level) ? 1n << BigInt(levelShift(level)) : this.bytesIn(this.child(table, i), level - 1);
    }
    return n;
  }

  // ---- unmap ----------------------------------------------------------------

  /**
   * Unmap [iova, iova + len): whatever is mapped there goes, large leaves
   * the range cuts are split first. Unmapping nothing is not an error.
   * EINVAL for a misaligned or empty range or one above the address width;
   * ENOMEM if a split needs a table and none is left (nothing is unmapped:
   * every split is done before anything is cleared).
   */
  unmap(iova: bigint, len: bigint): RefStatus {
    const mask = BigInt(PAGE_SIZE - 1);
    if (len <= 0n || iova < 0n || (iova & mask) !== 0n || (len & mask) !== 0n) return 'EINVAL';
    const last = iova + len - 1n;
    if (last >= 1n << BigInt(this.widthBits)) return 'EINVAL';
    // Split the large leaves that contain a boundary of the range, at most
    // one per level per boundary, before clearing anything.
    if (!this.splitAround(iova) || !this.splitAround(last + 1n)) return 'ENOMEM';
    this.clear(this.root, this.levels, 0n, iova, last);
    return 0;
  }

  /** Split every large leaf that contains `boundary` other than at its first byte. */
  private splitAround(boundary: bigint): boolean {
    if (boundary >= 1n << BigInt(this.widthBits)) return true;
    let table = this.root;
    for (let level = this.levels; level > 1; level--) {
      const i = this.indexOf(boundary, level);
      if (!this.present(table, i)) return true;
      if (this.isLeaf(table, i, level)) {
        if (boundary % (1n << BigInt(levelShift(level))) === 0n) return true;
        if (!this.split(table, i, level)) return false;
      }
      table = this.child(table, i);
    }
    return true;
  }

  /**
   * Replace the large leaf (table, i) of `level` by a table of 512 leaves of
   * the next size down with the same permission. If the table does not allow
   * that size, each of those is itself a table of smaller leaves.
   */
  private split(table: number, i: number, level: number): boolean {
    const pa = this.addr(table, i);
    const perm = this.lo(table, i) & PERM_RW;
    const t = this.fill(level - 1, pa, perm); // frees what it took if it fails
    if (t === 0) return false;
    this.setTable(table, i, t);
    return true;
  }

  /** A new table of `level` whose 512 entries map [pa, pa + 512 * size) with `perm`. 0 when out of tables. */
  private fill(level: number, pa: bigint, perm: number): number {
    const t = this.allocTable();
    if (t === 0) return 0;
    const size = 1n << BigInt(levelShift(level));
    for (let i = 0; i < 512; i++) {
      const at = pa + BigInt(i) * size;
      if (level === 1 || (this.sizes & sizeBit(level)) !== 0) {
        this.setLeaf(t, i, level, at, perm);
      } else {
        const sub = this.fill(level - 1, at, perm);
        if (sub === 0) {
          this.freeSubtree(t, level);
          return 0;
        }
        this.setTable(t, i, sub);
      }
    }
    return t;
  }

  /** Clear [first, last] under `table` (covering from `base`); large leaves met here lie inside. */
  private clear(table: number, level: number, base: bigint, first: bigint, last: bigint): void {
    const shift = BigInt(levelShift(level));
    const span = 1n << shift;
    const i0 = Number((first - base) >> shift);
    const i1 = Number((last - base) >> shift);
    for (let i = i0; i <= i1; i++) {
      if (!this.present(table, i)) continue;
      const lo = base + BigInt(i) * span;
      const hi = lo + span - 1n;
      const inside = lo >= first && hi <= last;
      if (this.isLeaf(table, i, level)) {
        if (!inside) throw new Error(`reference: leaf at ${lo.toString(16)} level ${level} straddles the range after splitting`);
        this.set(table, i, 0, 0);
        this.mapped -= span;
      } else if (inside) {
        const child = this.child(table, i);
        this.mapped -= this.bytesIn(child, level - 1);
        this.freeSubtree(child, level - 1);
        this.set(table, i, 0, 0);
      } else {
        this.clear(this.child(table, i), level - 1, lo, first > lo ? first : lo, last < hi ? last : hi);
      }
    }
  }

  // ---- walk -------------------------------------------------------------------

  /** Walk `iova` (3.7.1): the leaf or the fault with the level where the walk stopped. */
  walk(iova: bigint): RefWalk {
    if (iova < 0n || iova >> BigInt(this.widthBits) !== 0n) return { ok: false, fault: F_ADDR_WIDTH, level: this.levels };
    // Index arithmetic on the two 32-bit halves: no bigint per level.
    const ilo = Number(iova & 0xffffffffn);
    const ihi = Number(iova >> 32n);
    let table = this.root;
    let perm = PERM_RW;
    for (let level = this.levels; level >= 1; level--) {
      const shift = levelShift(level);
      const index = shift >= 32 ? (ihi >>> (shift - 32)) & 511 : ((ilo >>> shift) | (shift > 23 ? ihi << (32 - shift) : 0)) & 511;
      const off = table + index * 8;
      const lo = this.view.getUint32(off, true);
      const hi = this.view.getUint32(off + 4, true);
      const p = lo & PERM_RW;
      if (p === 0) return { ok: false, fault: F_NOT_PRESENT, level };
      perm &= p;
      if (level === 1 || (lo & PS) !== 0) {
        // PS is reserved above level 3 and for sizes the table lacks (9.8).
        if (level > 3 || (this.sizes & sizeBit(level)) === 0) return { ok: false, fault: F_RESERVED, level };
        // Address bits below a large page's size are reserved (9.8).
        const lowMask = ((1 << (shift - PAGE_SHIFT)) - 1) << PAGE_SHIFT;
        if ((lo & ENTRY_ADDR_LO & lowMask) !== 0) return { ok: false, fault: F_RESERVED, level };
        const pa = (BigInt(hi & ENTRY_ADDR_HI) << 32n) | BigInt((lo & ENTRY_ADDR_LO) >>> 0);
        if (!this.physOk(pa, 1n << BigInt(shift))) return { ok: false, fault: F_OUT_OF_SEGMENT, level };
        return { ok: true, pa, shift, perm };
      }
      const next = (lo & ENTRY_ADDR_LO) >>> 0;
      // Our tables live in our buffer; a pointer elsewhere is corrupt.
      if ((hi & ENTRY_ADDR_HI) !== 0 || next === 0 || next + PAGE_SIZE > this.buffer.byteLength) {
        return { ok: false, fault: F_TABLE_ADDR, level };
      }
      table = next;
    }
    throw new Error('unreachable: level 1 always ends the walk');
  }

  // ---- inspection (tests) -----------------------------------------------------

  /** Every leaf, in IOVA order. */
  leaves(): RefLeaf[] {
    const out: RefLeaf[] = [];
    const visit = (table: number, level: number, base: bigint): void => {
      const shift = levelShift(level);
      for (let i = 0; i < 512; i++) {
        if (!this.present(table, i)) continue;
        const iova = base + (BigInt(i) << BigInt(shift));
        if (this.isLeaf(table, i, level)) out.push({ iova, pa: this.addr(table, i), shift, perm: this.lo(table, i) & PERM_RW });
        else visit(this.child(table, i), level - 1, iova);
      }
    };
    visit(this.root, this.levels, 0n);
    return out;
  }

  /**
   * Rewrite the entry of `level` on the walk of `iova` (the tables above must
   * exist) as `f(old value)`: lets a test corrupt the model the way it
   * corrupts the engine. Returns false if the path stops above `level`.
   */
  rewriteEntry(iova: bigint, level: number, f: (old: bigint) => bigint): boolean {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const i = this.indexOf(iova, l);
      if (!this.present(table, i) || this.isLeaf(table, i, l)) return false;
      table = this.child(table, i);
    }
    const i = this.indexOf(iova, level);
    const old = (BigInt(this.hi(table, i)) << 32n) | BigInt(this.lo(table, i));
    const value = f(old) & 0xffff_ffff_ffff_ffffn;
    this.set(table, i, Number(value & 0xffffffffn), Number(value >> 32n));
    return true;
  }
}
