// Host-owned I/O page tables: map, unmap, walk and hardware dirty tracking,
// for every entry format of pte.ts (VT-d second stage, ARM VMSAv8-64 stage
// 2, AMD v1). 3, 4 or 5 levels of 512 u64 entries (AMD v1: 1 to 6, the
// top one of 6 using 128); leaves of 4 KiB
// (level 1), 2 MiB (level 2) and 1 GiB (level 3) where the table allows them.
// ARM stage 2 also takes a 16 or 64 KiB granule (ptCreateArmS2): 1 to 4
// levels of 2^(g - 3) entries, each table one granule (4 or 16 frames,
// aligned to its size), leaves of the granule and of 32 / 512 MiB blocks,
// and a root of fewer (partial) or more (concatenated) entries than a
// table's. The geometry (granule, bits per level, root index bits, input
// width) is set with the format by every entry point (validDomain).
// Every entry point selects the domain's format first (useTable).
//
// Permissions are ANDed over every level of a walk, as the hardware does
// (VT-d 3.7.1; AMD 2.2.3); the tables made here grant everything above the
// leaf, so the leaf decides. Addresses are physical addresses of layout.ts:
// segment in bits 51:32, offset in 31:0.
//
// Accessed and dirty flags (VT-d second-stage A/D: SSADE in the PASID-table
// entry, ecap.SSADS; Linux: VTDSS_FMT_A/D in generic_pt/fmt/vtdss.h; AMD:
// HA/HD with EFR HDSup): when the domain tracks dirty pages (DOMF_DIRTY), a
// translation that fills the IOTLB sets the accessed flag in the leaf, and
// the dirty flag too for a permitted write. Flags in non-leaf entries are not
// modelled: nothing reads them (Linux never does). Splitting a large leaf
// copies its flags to the smaller leaves, so a split never loses a dirty page.

import {
  DOM_SIZE, DOM_ROOT, DOM_LEVELS, DOM_SIZES, DOM_TABLES, DOM_MAPPED, DOM_FLAGS, DOM_FORMAT, DOMF_DIRTY, FMT_VTD_SL, FMT_ARM_S2, FMT_AMD_V1, FMT_ARM_S1, FMT_NESTED,
  PERM_R, PERM_W, F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_ACCESS, F_TABLE_ADDR, F_OUT_OF_SEGMENT,
  ERR_NOMEM, ERR_EXISTS, ERR_INVAL, ERR_FULL, ERR_NOENT, CTRL_STAT_WALKS, BATCH_OUT, BATCH_BYTES,
  PT_HAW_SHIFT, PT_CONCAT_SHIFT, PT_GRANULE_SHIFT, PT_IAS_SHIFT,
} from "./layout";
import { domTable, maxDomains, count, bOut } from "./state";
import { framesAlloc, framesPut, framesAvailable } from "./frames";
import { physRangeOk } from "./segments";
import { iotlbFlushDomain, iotlbFlushRange } from "./iotlb";
import {
  useTable, format, granuleShift, present, isLeaf, addrOf, mkTable, mkLeaf, permOf, accessedBit, dirtyBit,
  SIZES_MASK,
} from "./pte";
import { hostWalk, setWalkResult, walkEntry, walkPerm, inputBits } from "./walk";
import { nestedArmCreate, nestedArmWalk } from "./nested_arm";
import { nestedCreate, nestedWalk, nestedDestroy, flushChildren, stage2Changed, nPa, nIpa, nShift, nPerm, nLevel, nDirty } from "./nested";


// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }
// The current table's geometry (validDomain sets it with the format): a
// granule of 2^gShift bytes (4 KiB but for ARM stage 2's 16 / 64 KiB),
// gBits index bits per level (tables of 2^gBits entries), the root's index
// bits, and the input width in bits (64: no limit, a 6-level AMD table).
let gShift: u32 = 12;
let gBits: u32 = 9;
let gRootBits: u32 = 9;
let gWidth: u32 = 48;

// @ts-ignore: decorator
@inline function shiftOf(level: u32): u32 { return gShift + gBits * (level - 1); }
// @ts-ignore: decorator
@inline function sizeBit(level: u32): u32 { return 1 << (level - 1); }
/** Index bits of the table at `level` (the root's at level == levels). */
// @ts-ignore: decorator
@inline function bitsAt(level: u32, levels: u32): u32 { return level == levels ? gRootBits : gBits; }
/** The entry for iova in the table at `level`. */
// @ts-ignore: decorator
@inline function slotIn(table: u64, iova: u64, level: u32, levels: u32): usize {
  const mask: u64 = (<u64>1 << bitsAt(level, levels)) - 1;
  return <usize>table + (<usize>((iova >> shiftOf(level)) & mask) << 3);
}
/** Is x past the table's input width? */
// @ts-ignore: decorator
@inline function outside(x: u64): bool { return gWidth < 64 && (x >> gWidth) != 0; }
/** log2 of the frames a table of 2^entryBits entries takes: at least one granule (a partial root fills it). */
// @ts-ignore: decorator
@inline function framesLog2(entryBits: u32): u32 { return max(entryBits + 3, gShift) - 12; }

/** Set the geometry of a host table of format f, sizes word `word`, `levels` levels. */
function useGeometry(f: u32, word: u32, levels: u32): void {
  gShift = granuleShift(word);
  gBits = gShift - 3;
  gWidth = f == FMT_AMD_V1 ? min<u32>(64, 12 + 9 * levels) : inputBits(word, levels);
  gRootBits = gWidth - shiftOf(levels);
}

/** Does did name a table? If so its format (and a host table's geometry) becomes the current one. */
function validDomain(did: u32): bool {
  if (did == 0 || did >= maxDomains || load<u32>(dom(did) + DOM_ROOT) == 0) return false;
  const d = dom(did);
  const f = load<u32>(d + DOM_FORMAT);
  const word = load<u32>(d + DOM_SIZES);
  useTable(f, word);
  if (f < FMT_NESTED) useGeometry(f, word, load<u32>(d + DOM_LEVELS));
  return true;
}

/** A zeroed table of 2^entryBits entries (a granule; a concatenated root 2..16 of them, aligned to their size), or 0. */
function allocTable(did: u32, entryBits: u32): u64 {
  const n: u32 = 1 << framesLog2(entryBits);
  const pfn = framesAlloc(n, n);
  if (pfn < 0) return 0;
  const d = dom(did);
  store<u32>(d + DOM_TABLES, load<u32>(d + DOM_TABLES) + n);
  return <u64>pfn << 12;
}

function freeTable(did: u32, table: u64, entryBits: u32): void {
  const n: u32 = 1 << framesLog2(entryBits);
  framesPut(<u32>(table >> 12), n);
  const d = dom(did);
  store<u32>(d + DOM_TABLES, load<u32>(d + DOM_TABLES) - n);
}

/**
 * Create an empty table of format `fmt`, `levels` levels, allowing the leaf
 * sizes in bits 2:0 of `sizes` (SZ_*). Returns the domain id.
 * Levels: VT-d 3..5 (VT-d 3.7: 39-, 48- and 57-bit AGAW), ARM stage 2 3..5
 * (4 KiB granule: start level 1, 0 or -1), AMD v1 1..6 (the DTE's Mode,
 * AMD IOMMU spec 2.2.2; 6 levels translate all 64 bits). Every leaf size
 * allowed must fit the levels (a 1 GiB leaf needs 3).
 * Bits 15:8 of `sizes`, VT-d only: the host address width HAW (32..52;
 * 0 = 52): entry address bits 51:HAW are reserved (VT-d 9.8) and a map past
 * 2^HAW is EINVAL. It is kept in bits 15:8 of the domain's sizes word.
 * Bits 19:16 of `sizes`, ARM stage 2 with 3 or 4 levels only: log2 of the
 * tables concatenated at the initial lookup level (0..4: 1 to 16 tables,
 * the root then 2^n contiguous pages aligned to their size; Arm ARM D8.2,
 * "Concatenated translation tables for the initial stage 2 lookup"; KVM
 * concatenates up to 16 at start level 1 or 0): the input is 12 + 9 *
 * levels + n bits wide (40..43 bits from level 1, 49..52 from level 0,
 * which FEAT_LPA2 needs past 48). Kept in bits 19:16 of the sizes word.
 * A table made here has the 4 KiB granule and IAS 0 in its sizes word
 * (the levels' and concatenation's whole span); ptCreateArmS2 makes the
 * others.
 */
export function ptCreate(levels: u32, sizes: u32, fmt: u32): i32 {
  const leafSizes = sizes & SIZES_MASK;
  const outBits = (sizes >> PT_HAW_SHIFT) & 0xff;
  const concat = (sizes >> PT_CONCAT_SHIFT) & 0xf;
  if (fmt > FMT_AMD_V1 || (leafSizes & 1) == 0 || (sizes & ~(SIZES_MASK | (0xff << PT_HAW_SHIFT) | (0xf << PT_CONCAT_SHIFT))) != 0) return ERR_INVAL;
  if (concat != 0 && (fmt != FMT_ARM_S2 || concat > 4 || (levels != 3 && levels != 4))) return ERR_INVAL;
  if (fmt == FMT_AMD_V1 ? levels < 1 || levels > 6 : levels < 3 || levels > 5) return ERR_INVAL;
  if (leafSizes >> levels != 0) return ERR_INVAL; // a leaf above the root
  if (outBits != 0 && (fmt != FMT_VTD_SL || outBits < 32 || outBits > 52)) return ERR_INVAL;
  return createTable(levels, sizes, fmt);
}

/**
 * An ARM VMSAv8-64 stage-2 table with a granule of 2^granuleShift bytes
 * (12, 14, 16) for an input (IPA) size of `ias` bits, the start level and
 * the concatenation chosen as Linux's io-pgtable-arm does for a stage-2
 * domain (arm_lpae_alloc_pgtable, arm_64_lpae_alloc_pgtable_s2), by the
 * rules of the Arm ARM (DDI 0487 K.a, D8.2):
 *   - levels = ceil((ias - g) / (g - 3)); the initial level resolves the
 *     rest, ias - g - (g - 3)(levels - 1) bits: a partial table when that
 *     is fewer than a table's g - 3;
 *   - concatenation where the architecture makes it mandatory
 *     (arm_lpae_concat_mandatory): R_DXBSH, a 16K granule with a 48-bit
 *     input starts at level 1, not 0; R_SRKBC, the valid initial levels
 *     per output size: 4K starting at level 0 with a 40- or 42-bit output
 *     starts at level 1, 16K starting at level 0 with a 48-bit output at
 *     level 1, 16K starting at level 1 with a 40-bit output at level 2. The
 *     level skipped becomes 2^bits tables concatenated at the next, at most
 *     16 (ARM_LPAE_S2_MAX_CONCAT_PAGES; more is EINVAL, as Linux fails).
 * `oas`: the output size (VTCR.PS: 40, 42, 44 or 48; below 40 could not
 * name every engine physical address, which reach 2^40). `ias`: 25..48
 * (VTCR.T0SZ 16..39 with neither FEAT_LPA nor FEAT_TTST). `sizes`: leaf
 * levels, bit 0 (the granule's page) required, bit 1 the 2 MiB / 32 MiB /
 * 512 MiB block, bit 2 the 1 GiB block (4K only: 16K's 64 GiB needs
 * VTCR.DS, 64K's 4 TiB FEAT_LPA). Returns the domain id, or ERR_INVAL.
 */
export function ptCreateArmS2(granuleShift: u32, ias: u32, oas: u32, sizes: u32): i32 {
  const g = granuleShift;
  if (g != 12 && g != 14 && g != 16) return ERR_INVAL;
  if (ias < 25 || ias > 48 || (oas != 40 && oas != 42 && oas != 44 && oas != 48)) return ERR_INVAL;
  if ((sizes & 1) == 0 || (sizes & ~(g == 12 ? SIZES_MASK : 3)) != 0) return ERR_INVAL;
  const bits = g - 3;
  const va = ias - g;
  let levels = (va + bits - 1) / bits;
  let rootBits = va - bits * (levels - 1);
  const start = 4 - levels;
  const mandatory = g == 14 && start == 0 ? oas == 48 || ias == 48
    : g == 12 && start == 0 ? oas == 40 || oas == 42
    : g == 14 && start == 1 && oas == 40;
  if (mandatory) {
    if (rootBits > 4) return ERR_INVAL; // more than 16 tables to concatenate
    levels--;
    rootBits += bits;
  }
  if (sizes >> levels != 0) return ERR_INVAL; // a leaf above the root
  const concat = rootBits > bits ? rootBits - bits : 0;
  return createTable(levels, sizes | (concat << PT_CONCAT_SHIFT) | (((g - 12) >> 1) << PT_GRANULE_SHIFT) | (ias << PT_IAS_SHIFT), FMT_ARM_S2);
}

/** A new table: the first free domain slot, its root allocated (checked arguments). */
function createTable(levels: u32, word: u32, fmt: u32): i32 {
  for (let did: u32 = 1; did < maxDomains; did++) {
    const d = dom(did);
    if (load<u32>(d + DOM_ROOT) != 0) continue;
    useGeometry(fmt, word, levels);
    const root = allocTable(did, gRootBits);
    if (root == 0) return ERR_NOMEM;
    store<u32>(d + DOM_ROOT, <u32>(root >> 12));
    store<u32>(d + DOM_LEVELS, levels);
    store<u32>(d + DOM_SIZES, word);
    store<u32>(d + DOM_FORMAT, fmt);
    store<u64>(d + DOM_MAPPED, 0);
    store<u32>(d + DOM_FLAGS, 0);
    // The generation is kept from the slot's previous owner: its IOTLB
    // entries stay stale after reuse.
    iotlbFlushDomain(did);
    return <i32>did;
  }
  return ERR_FULL;
}

/** Free every table page of a subtree whose root table (of 2^entryBits entries) sits at `level`. */
function freeSubtree(did: u32, table: u64, level: u32, entryBits: u32): void {
  if (level > 1) {
    const n: u32 = 1 << entryBits;
    for (let i: u32 = 0; i < n; i++) {
      const pte = load<u64>(<usize>table + (<usize>i << 3));
      if (present(pte) && !isLeaf(pte, level)) freeSubtree(did, addrOf(pte), level - 1, gBits);
    }
  }
  freeTable(did, table, entryBits);
}

export function ptDestroy(did: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  if (format() >= FMT_NESTED) { nestedDestroy(did); return 0; }
  const d = dom(did);
  freeSubtree(did, <u64>load<u32>(d + DOM_ROOT) << 12, load<u32>(d + DOM_LEVELS), gRootBits);
  iotlbFlushDomain(did);
  store<u32>(d + DOM_ROOT, 0);
  store<u64>(d + DOM_MAPPED, 0);
  store<u32>(d + DOM_FLAGS, 0);
  return 0;
}

// @ts-ignore: decorator
@inline function aligned(x: u64, shift: u32): bool { return (x & ((<u64>1 << shift) - 1)) == 0; }

/** The largest leaf level usable at (iova, pa) with `left` bytes to go. */
function leafLevel(sizes: u32, iova: u64, pa: u64, left: u64): u32 {
  for (let l: u32 = 3; l >= 2; l--) {
    const sh = shiftOf(l);
    if ((sizes & sizeBit(l)) != 0 && aligned(iova | pa, sh) && left >= (<u64>1 << sh)) return l;
  }
  return 1;
}

/**
 * Map [iova, iova + len) to [pa, pa + len) with permission perm (PERM_R|W),
 * using the largest leaves that alignment allows. Every address must be
 * aligned to the granule (4 KiB; an ARM stage-2 table's 16 or 64 KiB);
 * the range must be unmapped. On failure nothing stays mapped.
 */
export function ptMap(did: u32, iova: u64, pa: u64, len: u64, perm: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  if (format() >= FMT_NESTED) return ERR_INVAL; // a nested domain's table is the guest's
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const word = load<u32>(d + DOM_SIZES);
  const sizes = word & SIZES_MASK;
  const outBits = (word >> PT_HAW_SHIFT) & 0xff;
  const end = iova + len;
  if (len == 0 || !aligned(iova | pa | len, gShift) || (perm & ~(PERM_R | PERM_W)) != 0 || perm == 0 ||
      end < iova || outside(end - 1) || !physRangeOk(pa, len)) return ERR_INVAL;
  if (outBits != 0 && ((pa + len - 1) >> outBits) != 0) return ERR_INVAL; // past the host address width
  const root = <u64>load<u32>(d + DOM_ROOT) << 12;
  const start = iova;
  let err: i32 = 0;
  while (iova < end && err == 0) {
    const lvl = leafLevel(sizes, iova, pa, end - iova);
    let table = root;
    for (let l = levels; l > lvl; l--) {
      const e = slotIn(table, iova, l, levels);
      let pte = load<u64>(e);
      if (!present(pte)) {
        const t = allocTable(did, gBits);
        if (t == 0) { err = ERR_NOMEM; break; }
        pte = mkTable(t, l);
        store<u64>(e, pte);
      } else if (isLeaf(pte, l)) { err = ERR_EXISTS; break; }
      table = addrOf(pte);
    }
    if (err != 0) break;
    // Fill consecutive entries of this table while the leaf size holds.
    const sz = <u64>1 << shiftOf(lvl);

    let e = slotIn(table, iova, lvl, levels);
    const tableEnd = <usize>table + (<usize>8 << bitsAt(lvl, levels));
    while (true) {
      const old = load<u64>(e);
      if (present(old)) {
        // A table left empty by earlier unmaps may give way to a large leaf.
        if (isLeaf(old, lvl) || mappedIn(addrOf(old), lvl - 1) != 0) { err = ERR_EXISTS; break; }
        freeSubtree(did, addrOf(old), lvl - 1, gBits);
      }
      store<u64>(e, mkLeaf(pa, perm, lvl));
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
  return sub > 1 && (sizes & sizeBit(sub)) == 0 ? 1 + (1 << gBits) * splitCost(sizes, sub) : 1;
}

/**
 * Fill the new table at `level` with leaves covering pa.., each as large as
 * the table allows, with permission `perm` and the accessed/dirty `flags`.
 */
function fillLeaves(did: u32, table: u64, level: u32, pa: u64, perm: u32, flags: u64, sizes: u32): void {
  const step = <u64>1 << shiftOf(level);
  const n: usize = <usize>1 << gBits;
  for (let i: usize = 0; i < n; i++, pa += step) {
    const e = <usize>table + (i << 3);
    if (level == 1 || (sizes & sizeBit(level)) != 0) {
      store<u64>(e, mkLeaf(pa, perm, level) | flags);
    } else {
      const t = allocTable(did, gBits); // cannot fail: split() checked the cost first (4 KiB tables: a 16 / 64 KiB granule's blocks split into pages at once)
      fillLeaves(did, t, level - 1, pa, perm, flags, sizes);
      store<u64>(e, mkTable(t, level));
    }
  }
}

/**
 * Replace the large leaf at `e` (level `level`) by a table of leaves of the
 * next allowed sizes down, same permissions: the translation does not change.
 * All or nothing: false (nothing changed) if the memory is not there.
 */
function split(did: u32, e: usize, level: u32): bool {
  const sizes = load<u32>(dom(did) + DOM_SIZES) & SIZES_MASK;
  if (framesAvailable() < splitCost(sizes, level) << (gShift - 12)) return false;
  const pte = load<u64>(e);
  const t = allocTable(did, gBits);
  if (t == 0) return false;
  fillLeaves(did, t, level - 1, addrOf(pte), permOf(pte, level), pte & (accessedBit() | dirtyBit()), sizes);
  store<u64>(e, mkTable(t, level));
  return true;
}

/** Split every large leaf that `boundary` cuts (boundary is not its first byte). */
function splitAt(did: u32, root: u64, levels: u32, boundary: u64): bool {
  let table = root;
  if (outside(boundary)) return true; // the end of the address space: nothing cut
  for (let l = levels; l >= 2; l--) {
    const e = slotIn(table, boundary, l, levels);
    const pte = load<u64>(e);
    if (!present(pte)) return true;
    if (isLeaf(pte, l)) {
      if (aligned(boundary, shiftOf(l))) return true;
      if (!split(did, e, l)) return false;
    }
    table = addrOf(load<u64>(e));
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
    if (!present(pte)) continue;
    const lo = base + (<u64>i << shift);
    const hi = lo + span - 1;
    if (isLeaf(pte, level)) {
      store<u64>(e, 0);
      cleared += span;
    } else if (lo >= first && hi <= last) {
      cleared += mappedIn(addrOf(pte), level - 1);
      freeSubtree(did, addrOf(pte), level - 1, gBits);
      store<u64>(e, 0);
    } else {
      cleared += clearTable(did, addrOf(pte), level - 1, lo, max(first, lo), min(last, hi));
    }
  }
  return cleared;
}

/** Bytes mapped by the leaves of a subtree. */
function mappedIn(table: u64, level: u32): u64 {
  let n: u64 = 0;
  const entries: u32 = 1 << gBits;
  for (let i: u32 = 0; i < entries; i++) {
    const pte = load<u64>(<usize>table + (<usize>i << 3));
    if (!present(pte)) continue;
    n += isLeaf(pte, level) ? <u64>1 << shiftOf(level) : mappedIn(addrOf(pte), level - 1);
  }
  return n;
}

function clearRange(did: u32, root: u64, levels: u32, first: u64, last: u64): void {
  const cleared = clearTable(did, root, levels, 0, first, last);
  const d = dom(did);
  store<u64>(d + DOM_MAPPED, load<u64>(d + DOM_MAPPED) - cleared);
  iotlbFlushRange(did, first, last - first + 1);
  // Combined entries of nested domains on this one may use the old pages.
  stage2Changed(did, first, last, true);
}

/**
 * Unmap [iova, iova + len). Large leaves the range cuts are split first, so
 * what lies outside stays mapped; if a split runs out of memory nothing is
 * unmapped (splits never change a translation). The IOTLB is invalidated
 * before this returns.
 */
export function ptUnmap(did: u32, iova: u64, len: u64): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  if (format() >= FMT_NESTED) return ERR_INVAL; // a nested domain's table is the guest's
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const last = iova + len - 1;
  if (len == 0 || !aligned(iova | len, gShift) || last < iova || outside(last)) return ERR_INVAL;
  const root = <u64>load<u32>(d + DOM_ROOT) << 12;
  if (!splitAt(did, root, levels, iova) || !splitAt(did, root, levels, last + 1)) return ERR_NOMEM;
  clearRange(did, root, levels, iova, last);
  return 0;
}

/**
 * Walk domain did for iova: a host-owned table (walk.ts), or a nested
 * domain's 2-D walk (nested.ts) which also sets the first-stage A/D flags
 * for `access` (0: an inspection that sets none). F_NONE with walkPa,
 * walkShift and walkPerm, or a fault with walkLevel.
 */
export function ptWalk(did: u32, iova: u64, access: u32 = 0): u32 {
  const f = load<u32>(dom(did) + DOM_FORMAT);
  if (f < FMT_NESTED) { walkIpaTag = 0; return hostWalk(did, iova); }
  const st = f == FMT_ARM_S1 ? nestedArmWalk(did, iova, access) : nestedWalk(did, iova, access);
  setWalkResult(nPa, nShift, nPerm, nLevel);
  walkIpaTag = nIpa | 1;
  return st;
}

/** The IOTLB IPA tag (layout.ts) of the last successful ptWalk: its combined leaf's IPA | 1, or 0 for a host table. */
export let walkIpaTag: u64 = 0;

/** Is did a domain in use (a host table or a nested domain)? */
export function ptExists(did: u32): bool { return validDomain(did); }

/** A nested domain over the host table `parent` (nested.ts); ERR_INVAL if parent is not a host table. */
export function ptCreateNested(parent: u32, root: u64, levels: u32, flags: u32): i32 {
  if (!validDomain(parent) || format() >= FMT_NESTED) return ERR_INVAL;
  return nestedCreate(parent, root, levels, flags);
}

/** An Arm stage-1 nested domain over the host table `parent` (nested_arm.ts). */
export function ptCreateNestedArm(parent: u32, ttb: u64, cfg: u32): i32 {
  if (!validDomain(parent) || format() >= FMT_NESTED) return ERR_INVAL;
  return nestedArmCreate(parent, ttb, cfg);
}

export function ptMapped(did: u32): u64 { return validDomain(did) ? load<u64>(dom(did) + DOM_MAPPED) : 0; }
export function ptTables(did: u32): u32 { return validDomain(did) ? load<u32>(dom(did) + DOM_TABLES) : 0; }

// ---- Dirty tracking (second-stage A/D) ------------------------------------

/**
 * After a successful ptWalk for `access`, on the way to filling the IOTLB:
 * when the domain tracks dirty pages, set A in the leaf, and D too for a
 * permitted write. Returns PERM_W when an IOTLB entry of this leaf may serve
 * writes without a D update (tracking off, or D set in the leaf), else 0.
 * Tracking off costs one load and one branch.
 */
// @ts-ignore: decorator
@inline export function ptTouch(did: u32, access: u32): u32 {
  if ((load<u32>(dom(did) + DOM_FLAGS) & DOMF_DIRTY) == 0) return PERM_W;
  return touchLeaf(did, access);
}

function touchLeaf(did: u32, access: u32): u32 {
  // A nested walk has set the A/D flags of both stages itself. (Its own
  // format, not format(): the walk's stage-2 part selected the parent's.)
  if (load<u32>(dom(did) + DOM_FORMAT) >= FMT_NESTED) return nDirty ? PERM_W : 0;
  let pte = load<u64>(walkEntry);
  // A permitted access only: a faulting request sets no flag.
  if (access != 0 && (access & ~walkPerm) == 0) {
    const set = accessedBit() | ((access & PERM_W) != 0 ? dirtyBit() : 0);
    if ((pte & set) != set) pte = atomic.or<u64>(walkEntry, set) | set; // other instances may set flags too
  }
  return (pte & dirtyBit()) != 0 ? PERM_W : 0;
}

/** Clear D in every leaf under the table (of 2^entryBits entries) at `level`. Returns true if any was set. */
function clearDirtyAll(table: u64, level: u32, entryBits: u32): bool {
  let any = false;
  const n: usize = <usize>1 << entryBits;
  for (let i: usize = 0; i < n; i++) {
    const e = <usize>table + (i << 3);
    const pte = load<u64>(e);
    if (!present(pte)) continue;
    if (isLeaf(pte, level)) {
      if ((pte & dirtyBit()) != 0) { store<u64>(e, pte & ~dirtyBit()); any = true; }
    } else if (clearDirtyAll(addrOf(pte), level - 1, gBits)) {
      any = true;
    }
  }
  return any;
}

/**
 * Turn hardware dirty tracking of a domain on (1) or off (0). Enabling
 * clears every D bit of the table first, as iommufd does before it turns
 * tracking on (iopt_set_dirty_tracking). Either way the domain's IOTLB
 * entries go (generation bump): entries filled with tracking off serve
 * writes without touching D, and D may just have been cleared.
 */
export function ptSetDirtyTracking(did: u32, enable: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  // A format without a hardware dirty flag here (ARM stage 2: DBM) cannot
  // track, nor can a nested domain (its first-stage A/D are the guest's).
  if (enable > 1 || dirtyBit() == 0 || format() >= FMT_NESTED) return ERR_INVAL;
  const d = dom(did);
  if (enable != 0) clearDirtyAll(<u64>load<u32>(d + DOM_ROOT) << 12, load<u32>(d + DOM_LEVELS), gRootBits);
  const flags = load<u32>(d + DOM_FLAGS);
  store<u32>(d + DOM_FLAGS, enable != 0 ? flags | DOMF_DIRTY : flags & ~DOMF_DIRTY);
  iotlbFlushDomain(did);
  flushChildren(did); // their combined entries cached this domain's D state too
  return 0;
}

/** 1 if the domain tracks dirty pages, 0 if not, ERR_NOENT. */
export function ptDirtyTracking(did: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  return (load<u32>(dom(did) + DOM_FLAGS) & DOMF_DIRTY) != 0 ? 1 : 0;
}

/** Bits of bitmap one pt_read_dirty call can write into BATCH_OUT. */
const DIRTY_BITS_MAX: u64 = <u64>BATCH_BYTES << 3;

// State of one ptReadDirty walk (no closures on the engine's side).
let rdBase: u64 = 0;      // first IOVA of the call (bit 0)
let rdEnd: u64 = 0;       // end of this call's piece (exclusive); may move down
let rdReqEnd: u64 = 0;    // end of the caller's remaining range (exclusive)
let rdShift: u32 = 0;     // log2 of the bitmap's page size
let rdClear: bool = false;
let rdStop: bool = false;
let rdClrFirst: u64 = 0;  // span of the leaves whose D was cleared
let rdClrEnd: u64 = 0;

/** Set bits [p0, p1) of the bitmap in BATCH_OUT (u64 words, bit n of word n >> 6). */
function setBits(p0: u32, p1: u32): void {
  while (p0 < p1) {
    const b = p0 & 63;
    const n = min<u32>(64 - b, p1 - p0);
    const mask = n == 64 ? <u64>-1 : ((<u64>1 << n) - 1) << b;
    const w = bOut + (<usize>(p0 >> 6) << 3);
    store<u64>(w, load<u64>(w) | mask);
    p0 += n;
  }
}

function readDirtyLeaf(e: usize, pte: u64, ls: u64, le: u64): void {
  // A leaf that runs past the end of this piece, when the caller's range
  // goes on, ends the piece at the leaf's first byte (page aligned: a leaf
  // that crosses a page boundary is larger than a page, so aligned to one),
  // so that the next call sees the leaf whole and may clear it. A leaf that
  // starts at rdBase always fits (2^18 pages of >= 4 KiB cover 1 GiB); one
  // that starts before rdBase is cut by the caller's own range anyway.
  if (le > rdEnd && rdEnd < rdReqEnd && ls > rdBase) { rdEnd = ls; rdStop = true; return; }
  if ((pte & dirtyBit()) == 0) return;
  const a = max(ls, rdBase);
  const b = min(le, rdEnd);
  const pageMask = (<u64>1 << rdShift) - 1;
  setBits(<u32>((a - rdBase) >> rdShift), <u32>((b - rdBase + pageMask) >> rdShift));
  // D is cleared only on leaves wholly inside the range: one the range cuts
  // keeps its D, so the pages outside stay reported (Linux clears the whole
  // leaf and loses them; reporting a page twice is safe, losing one is not).
  if (rdClear && ls >= rdBase && le <= rdEnd) {
    store<u64>(e, pte & ~dirtyBit());
    if (rdClrEnd == 0) rdClrFirst = ls;
    rdClrEnd = le;
  }
}

function readDirtyTable(table: u64, level: u32, base: u64, entriesLog2: u32): void {
  const shift = shiftOf(level);
  const lo = max(rdBase, base);
  // The table's end; 0 when it reaches 2^64 (a 6-level AMD table's top).
  const tableEnd = shift + entriesLog2 >= 64 ? 0 : base + (<u64>1 << (shift + entriesLog2));
  const hi = (tableEnd == 0 || rdEnd < tableEnd ? rdEnd : tableEnd) - 1;
  const i1 = <u32>((hi - base) >> shift);
  for (let i = <u32>((lo - base) >> shift); i <= i1; i++) {
    const e = <usize>table + (<usize>i << 3);
    const pte = load<u64>(e);
    if (!present(pte)) continue;
    const ls = base + (<u64>i << shift);
    if (isLeaf(pte, level)) readDirtyLeaf(e, pte, ls, ls + (<u64>1 << shift));
    else readDirtyTable(addrOf(pte), level - 1, ls, gBits);
    if (rdStop) return;
  }
}

/**
 * Read (and clear, if `clear` is 1) the D bits of the leaves over
 * [iova, iova + len) into a bitmap in BATCH_OUT: bit n (u64 words, bit n & 63
 * of word n >> 6, as Linux's iommufd bitmap) is page n of 2^pageShift bytes
 * from iova. A dirty leaf sets every bit it touches; holes read as clean.
 * One call covers at most 2^18 pages (32 KiB of bitmap), less when a leaf
 * straddles that end (the piece then stops at the leaf). Returns the pages
 * covered (>= 1; bits past them in the last word are zero), or ERR_NOENT,
 * ERR_INVAL (page shift not 12..63, clear not 0/1, len 0, iova or len not
 * page aligned, range past the table's address width). The IOTLB entries of
 * the leaves cleared are dropped before this returns.
 */
export function ptReadDirty(did: u32, iova: u64, len: u64, pageShift: u32, clear: u32): i32 {
  if (!validDomain(did)) return ERR_NOENT;
  if (format() >= FMT_NESTED) return ERR_INVAL;
  if (pageShift < 12 || pageShift > 63 || clear > 1 || len == 0) return ERR_INVAL;
  const d = dom(did);
  const levels = load<u32>(d + DOM_LEVELS);
  const last = iova + len - 1;
  // A range ending at 2^64 (6-level AMD) would wrap the piece's end: refused.
  if (!aligned(iova | len, pageShift) || last < iova || last == <u64>-1 || outside(last)) return ERR_INVAL;
  const pages = len >> pageShift;
  const n = pages < DIRTY_BITS_MAX ? pages : DIRTY_BITS_MAX;
  rdBase = iova;
  rdReqEnd = last + 1;
  rdEnd = iova + (n << pageShift);
  rdShift = pageShift;
  rdClear = clear != 0;
  rdStop = false;
  rdClrFirst = 0;
  rdClrEnd = 0;
  memory.fill(bOut, 0, <usize>((n + 63) >> 6) << 3);
  readDirtyTable(<u64>load<u32>(d + DOM_ROOT) << 12, levels, 0, gRootBits);
  if (rdClrEnd != 0) {
    iotlbFlushRange(did, rdClrFirst, rdClrEnd - rdClrFirst);
    // Combined entries with an output in the range cached its D state.
    stage2Changed(did, rdClrFirst, rdClrEnd - 1, false);
  }
  return <i32>((rdEnd - rdBase) >> pageShift);
}
