// VT-d second-stage I/O page tables (Intel VT-d spec rev 4.1, 3.7 and 9.8),
// owned by the host: map, unmap and walk. 3, 4 or 5 levels of 512 u64
// entries; leaves of 4 KiB (level 1), 2 MiB (level 2, PS) and 1 GiB
// (level 3, PS).
//
// Second-stage entry (9.8, "Format of SL-PML5E ... SL-PTE"):
//
//   63   62  61:52  51:12           11   10  9  8  7   6    5:3  2  1  0
//  +---+----+------+----------------+----+---+--+--+----+----+----+--+--+--+
//  |ign| TM | ign  | address [51:12]|SNP |ign|D |A |PS  |IPAT| EMT|X |W |R |
//  +---+----+------+----------------+----+---+--+--+----+----+----+--+--+--+
//
// An entry is present when R or W is set. Non-leaf entries here carry R|W,
// so the leaf decides the permission; the walker still ANDs every level, as
// the hardware does (3.7.1). The address is a physical address of
// layout.ts: segment in bits 51:32, offset in 31:0.

import {
  DOM_SIZE, DOM_ROOT, DOM_LEVELS, DOM_SIZES, DOM_TABLES, DOM_MAPPED, SZ_2M, SZ_1G,
  PERM_R, PERM_W, F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_TABLE_ADDR, F_OUT_OF_SEGMENT,
  ERR_NOMEM, ERR_EXISTS, ERR_INVAL, ERR_FULL, ERR_NOENT, CTRL_STAT_WALKS,
} from "./layout";
import { domTable, maxDomains, count } from "./state";
import { framesAlloc, framesPut, framesAvailable } from "./frames";
import { physRangeOk } from "./segments";
import { iotlbFlushDomain, iotlbFlushRange } from "./iotlb";

const PTE_PS: u64 = 1 << 7;
const PTE_RW: u64 = PERM_R | PERM_W;
const PTE_ADDR: u64 = 0x000ffffffffff000;

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }
// @ts-ignore: decorator
@inline function shiftOf(level: u32): u32 { return 12 + 9 * (level - 1); }
// @ts-ignore: decorator
@inline function slot(table: u64, iova: u64, level: u32): usize {
  return <usize>table + (<usize>((iova >> shiftOf(level)) & 511) << 3);
}
// @ts-ignore: decorator
@inline function sizeBit(level: u32): u32 { return 1 << (level - 1); }

function validDomain(did: u32): bool {
  return did != 0 && did < maxDomains && load<u32>(dom(did) + DOM_ROOT) != 0;
}

function allocTable(did: u32): u64 {
  const pfn = framesAlloc(1, 1);
  if (pfn < 0) return 0;
  const d = dom(did);
  store<u32>(d + DOM_TABLES, load<u32>(d + DOM_TABLES) + 1);
  return <u64>pfn << 12;
}

function freeTable(did: u32, table: u64): void {
  framesPut(<u32>(table >> 12), 1);
  const d = dom(did);
  store<u32>(d + DOM_TABLES, load<u32>(d + DOM_TABLES) - 1);
}

/** Create an empty table of `levels` levels allowing the leaf sizes `sizes`. Returns the domain id. */
export function ptCreate(levels: u32, sizes: u32): i32 {
  if (levels < 3 || levels > 5 || (sizes & 1) == 0 || sizes > 7) return ERR_INVAL;
  for (let did: u32 = 1; did < maxDomains; did++) {
    const d = dom(did);
    if (load<u32>(d + DOM_ROOT) != 0) continue;
    const root = allocTable(did);
    if (root == 0) return ERR_NOMEM;
    store<u32>(d + DOM_ROOT, <u32>(root >> 12));
    store<u32>(d + DOM_LEVELS, levels);
    store<u32>(d + DOM_SIZES, sizes);
    store<u64>(d + DOM_MAPPED, 0);
    // The generation is kept from the slot's previous owner: its IOTLB
    // entries stay stale after reuse.
    iotlbFlushDomain(did);
    return <i32>did;
  }
  return ERR_FULL;
}

/** Free every table page of a subtree whose root table sits at `level`. */
function freeSubtree(did: u32, table: u64, level: u32): void {
  if (level > 1) {
    for (let i: u32 = 0; i < 512; i++) {
      const pte = load<u64>(<usize>table + (<usize>i << 3));
      if ((pte & PTE_RW) != 0 && (pte & PTE_PS) == 0) freeSubtree(did, pte & PTE_ADDR, level - 1);
    }
  }
  freeTable(did, table);
}

export function ptDestroy(did: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  const d = dom(did);
  freeSubtree(did, <u64>load<u32>(d + DOM_ROOT) << 12, load<u32>(d + DOM_LEVELS));
  iotlbFlushDomain(did);
  store<u32>(d + DOM_ROOT, 0);
  store<u64>(d + DOM_MAPPED, 0);
  return 0;
}

// @ts-ignore: decorator
@inline function aligned(x: u64, shift: u32): bool { return (x & ((<u64>1 << shift) - 1)) == 0; }

/** The largest leaf level usable at (iova, pa) with `left` bytes to go. */
function leafLevel(sizes: u32, iova: u64, pa: u64, left: u64): u32 {
  if ((sizes & SZ_1G) != 0 && aligned(iova | pa, 30) && left >= (<u64>1 << 30)) return 3;
  if ((sizes & SZ_2M) != 0 && aligned(iova | pa, 21) && left >= (<u64>1 << 21)) return 2;
  return 1;
}

/**
 * Map [iova, iova + len) to [pa, pa + len) with permission perm (PERM_R|W),
 * using the largest leaves that alignment allows. Every address must be
 * 4 KiB aligned; the range must be unmapped. On failure nothing stays mapped.
 */
export function ptMap(did: u32, iova: u64, pa: u64, len: u64, perm: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const sizes = load<u32>(d + DOM_SIZES);
  const end = iova + len;
  if (len == 0 || !aligned(iova | pa | len, 12) || (perm & ~PTE_RW) != 0 || perm == 0 ||
      end < iova || (end - 1) >> shiftOf(levels + 1) != 0 || !physRangeOk(pa, len)) return ERR_INVAL;
  const root = <u64>load<u32>(d + DOM_ROOT) << 12;
  const start = iova;
  let err: i32 = 0;
  while (iova < end && err == 0) {
    const lvl = leafLevel(sizes, iova, pa, end - iova);
    let table = root;
    for (let l = levels; l > lvl; l--) {
      const e = slot(table, iova, l);
      let pte = load<u64>(e);
      if ((pte & PTE_RW) == 0) {
        const t = allocTable(did);
        if (t == 0) { err = ERR_NOMEM; break; }
        pte = t | PTE_RW;
        store<u64>(e, pte);
      } else if ((pte & PTE_PS) != 0) { err = ERR_EXISTS; break; }
      table = pte & PTE_ADDR;
    }
    if (err != 0) break;
    // Fill consecutive entries of this table while the leaf size holds.
    const sz = <u64>1 << shiftOf(lvl);
    const leafBits = <u64>perm | (lvl > 1 ? PTE_PS : 0);
    let e = slot(table, iova, lvl);
    const tableEnd = <usize>table + 4096;
    while (true) {
      const old = load<u64>(e);
      if ((old & PTE_RW) != 0) {
        // A table left empty by earlier unmaps may give way to a large leaf.
        if (lvl == 1 || (old & PTE_PS) != 0 || mappedIn(old & PTE_ADDR, lvl - 1) != 0) { err = ERR_EXISTS; break; }
        freeSubtree(did, old & PTE_ADDR, lvl - 1);
      }
      store<u64>(e, pa | leafBits);
      iova += sz; pa += sz; e += 8;
      if (e == tableEnd || iova >= end || end - iova < sz) break;
      if (lvl < 3 && leafLevel(sizes, iova, pa, end - iova) > lvl) break;
    }
  }
  if (err != 0) {
    if (iova > start) {
      store<u64>(d + DOM_MAPPED, load<u64>(d + DOM_MAPPED) + (iova - start));
      clearRange(did, root, levels, start, iova - 1);
    }
    return err;
  }
  store<u64>(d + DOM_MAPPED, load<u64>(d + DOM_MAPPED) + len);
  return 0;
}

/** Table pages needed to rewrite a leaf of `level` as leaves one size down (and below, where a size is not allowed). */
function splitCost(sizes: u32, level: u32): u32 {
  const sub = level - 1;
  return sub > 1 && (sizes & sizeBit(sub)) == 0 ? 1 + 512 * splitCost(sizes, sub) : 1;
}

/** Fill the new table at `level` with leaves covering pa.., each as large as the table allows. */
function fillLeaves(did: u32, table: u64, level: u32, pa: u64, bits: u64, sizes: u32): void {
  const step = <u64>1 << shiftOf(level);
  for (let i: usize = 0; i < 512; i++, pa += step) {
    const e = <usize>table + (i << 3);
    if (level == 1 || (sizes & sizeBit(level)) != 0) {
      store<u64>(e, pa | bits | (level > 1 ? PTE_PS : 0));
    } else {
      const t = allocTable(did); // cannot fail: split() checked the cost first
      fillLeaves(did, t, level - 1, pa, bits, sizes);
      store<u64>(e, t | PTE_RW);
    }
  }
}

/**
 * Replace the large leaf at `e` (level `level`) by a table of leaves of the
 * next allowed sizes down, same permissions: the translation does not change.
 * All or nothing: false (nothing changed) if the memory is not there.
 */
function split(did: u32, e: usize, level: u32): bool {
  const sizes = load<u32>(dom(did) + DOM_SIZES);
  if (framesAvailable() < splitCost(sizes, level)) return false;
  const pte = load<u64>(e);
  const t = allocTable(did);
  if (t == 0) return false;
  fillLeaves(did, t, level - 1, pte & PTE_ADDR, pte & ~PTE_ADDR & ~PTE_PS, sizes);
  store<u64>(e, t | PTE_RW);
  return true;
}

/** Split every large leaf that `boundary` cuts (boundary is not its first byte). */
function splitAt(did: u32, root: u64, levels: u32, boundary: u64): bool {
  let table = root;
  for (let l = levels; l >= 2; l--) {
    const e = slot(table, boundary, l);
    const pte = load<u64>(e);
    if ((pte & PTE_RW) == 0) return true;
    if ((pte & PTE_PS) != 0) {
      if (aligned(boundary, shiftOf(l))) return true;
      if (!split(did, e, l)) return false;
    }
    table = load<u64>(e) & PTE_ADDR;
  }
  return true;
}

/** Clear [first, last] under the table at `level` whose first IOVA is `base`. Leaves here lie inside the range. */
function clearTable(did: u32, table: u64, level: u32, base: u64, first: u64, last: u64): u64 {
  const shift = shiftOf(level);
  const span = <u64>1 << shift;
  const i0 = <u32>((first - base) >> shift);
  const i1 = <u32>((last - base) >> shift);
  let cleared: u64 = 0;
  for (let i = i0; i <= i1; i++) {
    const e = <usize>table + (<usize>i << 3);
    const pte = load<u64>(e);
    if ((pte & PTE_RW) == 0) continue;
    const lo = base + (<u64>i << shift);
    const hi = lo + span - 1;
    if (level == 1 || (pte & PTE_PS) != 0) {
      store<u64>(e, 0);
      cleared += span;
    } else if (lo >= first && hi <= last) {
      cleared += mappedIn(pte & PTE_ADDR, level - 1);
      freeSubtree(did, pte & PTE_ADDR, level - 1);
      store<u64>(e, 0);
    } else {
      cleared += clearTable(did, pte & PTE_ADDR, level - 1, lo, max(first, lo), min(last, hi));
    }
  }
  return cleared;
}

/** Bytes mapped by the leaves of a subtree. */
function mappedIn(table: u64, level: u32): u64 {
  let n: u64 = 0;
  for (let i: u32 = 0; i < 512; i++) {
    const pte = load<u64>(<usize>table + (<usize>i << 3));
    if ((pte & PTE_RW) == 0) continue;
    n += level == 1 || (pte & PTE_PS) != 0 ? <u64>1 << shiftOf(level) : mappedIn(pte & PTE_ADDR, level - 1);
  }
  return n;
}

function clearRange(did: u32, root: u64, levels: u32, first: u64, last: u64): void {
  const cleared = clearTable(did, root, levels, 0, first, last);
  const d = dom(did);
  store<u64>(d + DOM_MAPPED, load<u64>(d + DOM_MAPPED) - cleared);
  iotlbFlushRange(did, first, last - first + 1);
}

/**
 * Unmap [iova, iova + len). Large leaves the range cuts are split first, so
 * what lies outside stays mapped; if a split runs out of memory nothing is
 * unmapped (splits never change a translation). The IOTLB is invalidated
 * before this returns.
 */
export function ptUnmap(did: u32, iova: u64, len: u64): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const last = iova + len - 1;
  if (len == 0 || !aligned(iova | len, 12) || last < iova || last >> shiftOf(levels + 1) != 0) return ERR_INVAL;
  const root = <u64>load<u32>(d + DOM_ROOT) << 12;
  if (!splitAt(did, root, levels, iova) || !splitAt(did, root, levels, last + 1)) return ERR_NOMEM;
  clearRange(did, root, levels, iova, last);
  return 0;
}

// Result of the last walk.
export let walkPa: u64 = 0;
export let walkShift: u32 = 0;
export let walkPerm: u32 = 0;
export let walkLevel: u32 = 0;

/**
 * Walk the table of did for iova. Returns F_NONE with walkPa (the leaf's
 * first byte), walkShift and walkPerm, or a fault with walkLevel.
 */
export function ptWalk(did: u32, iova: u64): u32 {
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const sizes = load<u32>(d + DOM_SIZES);
  count(CTRL_STAT_WALKS);
  walkLevel = levels;
  if (iova >> shiftOf(levels + 1) != 0) return F_ADDR_WIDTH;
  let table = <u64>load<u32>(d + DOM_ROOT) << 12;
  let perm: u32 = PERM_R | PERM_W;
  const memEnd = <u64>memory.size() << 16;
  for (let l = levels; l >= 1; l--) {
    walkLevel = l;
    const pte = load<u64>(slot(table, iova, l));
    const p = <u32>pte & (PERM_R | PERM_W);
    if (p == 0) return F_NOT_PRESENT;
    perm &= p;
    if (l == 1 || (pte & PTE_PS) != 0) {
      // PS is reserved in the top levels and for sizes the unit lacks (9.8).
      if (l > 3 || (sizes & sizeBit(l)) == 0) return F_RESERVED;
      const shift = shiftOf(l);
      // A large leaf's address bits below its size are reserved (9.8).
      if ((pte & PTE_ADDR & ((<u64>1 << shift) - 1)) != 0) return F_RESERVED;
      const pa = pte & PTE_ADDR;
      if (!physRangeOk(pa, <u64>1 << shift)) return F_OUT_OF_SEGMENT;
      walkPa = pa;
      walkShift = shift;
      walkPerm = perm;
      return F_NONE;
    }
    table = pte & PTE_ADDR;
    // Host tables live in segment 0; anything else is corrupt.
    if (table + 4096 > memEnd) return F_TABLE_ADDR;
  }
  return F_NOT_PRESENT; // unreachable: level 1 always returns
}

export function ptMapped(did: u32): u64 { return validDomain(did) ? load<u64>(dom(did) + DOM_MAPPED) : 0; }
export function ptTables(did: u32): u32 { return validDomain(did) ? load<u32>(dom(did) + DOM_TABLES) : 0; }
