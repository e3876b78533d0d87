// The walk of a host-owned table (any format of pte.ts), and the result of
// the last walk: used by the translation paths, the dirty-tracking code and,
// as stage 2, by the nested walk.

import {
  DOM_SIZE, DOM_ROOT, DOM_LEVELS, DOM_SIZES, DOM_FORMAT, PERM_R, PERM_W, FMT_VTD_SL, FMT_AMD_V1,
  F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_ACCESS, F_TABLE_ADDR, F_OUT_OF_SEGMENT, CTRL_STAT_WALKS,
  PT_HAW_SHIFT, PT_CONCAT_SHIFT, PT_IAS_SHIFT,
} from "./layout";
import { domTable, count } from "./state";
import { physRangeOk } from "./segments";
import {
  useFormat, useTable, granuleShift, present, isLeaf, addrOf, permOf, leafReserved, tableReserved, accessFlagFault, accessedBit, dirtyBit,
  SIZES_MASK, VTD_ADDR, AMD_ADDR_FIELD, AMD_PDE_RSVD, AMD_PTE_RSVD,
} from "./pte";

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }
// @ts-ignore: decorator
@inline function shiftOf(level: u32): u32 { return 12 + 9 * (level - 1); }
// @ts-ignore: decorator
@inline function slot(table: u64, iova: u64, level: u32): usize {
  return <usize>table + (<usize>((iova >> shiftOf(level)) & 511) << 3);
}

// Result of the last walk.
export let walkPa: u64 = 0;
export let walkShift: u32 = 0;
export let walkPerm: u32 = 0;
export let walkLevel: u32 = 0;
/** Address (segment 0) of the leaf entry the last successful walk ended on. */
export let walkEntry: usize = 0;
/**
 * After an F_NOT_PRESENT walk: the shift of the empty entry it stopped at.
 * Every IOVA with the same bits from there up takes the same path to the
 * same entry (translateBatch's hole memo, translate.ts).
 */
export let walkHoleShift: u32 = 0;

/** Is iova above the width of a `levels`-level AMD v1 table (12 + 9 * levels bits; 6 levels cover all 64)? */
// @ts-ignore: decorator
@inline export function aboveWidth(iova: u64, levels: u32): bool {
  return levels < 6 && (iova >> shiftOf(levels + 1)) != 0;
}

/**
 * The input width of a VT-d or ARM stage-2 table of `levels` levels whose
 * sizes word is `word`: ARM stage 2's IAS (layout.ts, the sizes word), or
 * (IAS 0: a 4 KiB-granule table from pt_create) the span of the levels and
 * the root's concatenated tables, 12 + 9 * levels + concat bits.
 */
// @ts-ignore: decorator
@inline export function inputBits(word: u32, levels: u32): u32 {
  const ias = (word >> PT_IAS_SHIFT) & 0x3f;
  return ias != 0 ? ias : shiftOf(levels + 1) + ((word >> PT_CONCAT_SHIFT) & 0xf);
}

/**
 * Walk the table of did for iova. Returns F_NONE with walkPa (the leaf's
 * first byte), walkShift, walkPerm and walkEntry, or a fault with walkLevel.
 * Sets no A/D flag: the translation paths do that through ptTouch.
 * At most `levels` entries are read (a level only goes down), each inside
 * a table page of segment 0.
 */
export function hostWalk(did: u32, iova: u64): u32 {
  const d = dom(did);
  const fmt = load<u32>(d + DOM_FORMAT);
  const levels = load<u32>(d + DOM_LEVELS);
  const word = load<u32>(d + DOM_SIZES);
  useTable(fmt, word);
  count(CTRL_STAT_WALKS);
  walkLevel = levels;
  if (fmt == FMT_AMD_V1) {
    if (aboveWidth(iova, levels)) return F_ADDR_WIDTH;
    return amdWalk(d, iova, levels);
  }
  // A 4 KiB-granule table without concatenation or input size (VT-d, and
  // ARM stage 2 from pt_create): the same walk with the granule's numbers
  // as constants, which the compiler folds into it.
  if ((word >> PT_CONCAT_SHIFT) == 0) return walkLevels(d, fmt, word, levels, iova, 12, 9);
  // The granule, 2^g bytes (Arm ARM D8.2). ARM stage 2's input size IAS
  // (64 - VTCR.T0SZ) bounds the IPA and gives the root its index bits:
  // fewer than a table's (a partial initial table) or up to 4 more, 2..16
  // tables concatenated at the initial lookup level (Arm ARM D8.2,
  // "Concatenated translation tables for the initial stage 2 lookup").
  const g: u32 = granuleShift(word);
  return walkLevels(d, fmt, word, levels, iova, g, inputBits(word, levels) - (g + (g - 3) * (levels - 1)));
}

/**
 * The levels of a VT-d or ARM stage-2 walk with a 2^g-byte granule (tables
 * of 2^(g - 3) entries, level l resolving the bits from g + (g - 3)(l - 1)
 * up) and a root of 2^rootBits entries.
 */
// @ts-ignore: decorator
@inline function walkLevels(d: usize, fmt: u32, word: u32, levels: u32, iova: u64, g: u32, rootBits: u32): u32 {
  const bits: u32 = g - 3;
  let shift: u32 = g + bits * (levels - 1);
  if ((iova >> (shift + rootBits)) != 0) return F_ADDR_WIDTH;
  const rootMask: u64 = (<u64>1 << rootBits) - 1;
  const idxMask: u64 = (<u64>1 << bits) - 1;
  const tableBytes: u64 = <u64>1 << g;
  const sizes = word & SIZES_MASK;
  // VT-d 9.8: address bits 51:HAW of every entry are reserved (0 = none: 52).
  const outBits = (word >> PT_HAW_SHIFT) & 0xff;
  const outRsvd: u64 = fmt == FMT_VTD_SL && outBits != 0 ? VTD_ADDR & ~((<u64>1 << outBits) - 1) : 0;
  let table = <u64>load<u32>(d + DOM_ROOT) << 12;
  let perm: u32 = PERM_R | PERM_W;
  const memEnd = <u64>memory.size() << 16;
  for (let l = levels; l >= 1; l--, shift -= bits) {
    walkLevel = l;
    const e = <usize>table + (<usize>((iova >> shift) & (l == levels ? rootMask : idxMask)) << 3);
    const pte = load<u64>(e);
    if (!present(pte)) { walkHoleShift = shift; return F_NOT_PRESENT; }
    if ((pte & outRsvd) != 0) return F_RESERVED;
    perm &= permOf(pte, l);
    if (isLeaf(pte, l)) {
      // Sizes the table lacks, address bits below the leaf's size, format
      // rules (VT-d 9.8; Arm ARM D8.3): reserved, not translated.
      if (leafReserved(pte, l, sizes, shift)) return F_RESERVED;
      if (accessFlagFault(pte)) return F_ACCESS;
      const pa = addrOf(pte);
      if (!physRangeOk(pa, <u64>1 << shift)) return F_OUT_OF_SEGMENT;
      if (g == 12) {
        walkPa = pa;
        walkShift = shift;
      } else {
        // A 16 / 64 KiB page or a 32 / 512 MiB block is reported as the
        // slice of it holding iova of the largest IOTLB size class that fits
        // (4 KiB, 2 MiB): a TLB may cache a translation as a smaller page
        // than the leaf (the Arm ARM leaves the TLB entry's size to the
        // implementation; the IOTLB's classes are 4K / 2M / 1G). Every byte
        // of the slice translates as the leaf does, and an invalidation of
        // the leaf's range covers every slice inside it.
        const r: u32 = shift >= 21 ? 21 : 12;
        walkPa = pa + (iova & ((<u64>1 << shift) - 1) & ~((<u64>1 << r) - 1));
        walkShift = r;
      }
      walkPerm = perm;
      walkEntry = e;
      return F_NONE;
    }
    if (tableReserved(pte, l)) return F_RESERVED;
    table = addrOf(pte);
    // Host tables live in segment 0; anything else is corrupt.
    if (table + tableBytes > memEnd) return F_TABLE_ADDR;
  }
  return F_NOT_PRESENT; // unreachable: level 1 always returns
}

/**
 * The AMD v1 walk (AMD IOMMU spec 2.2.3, "I/O Page Tables for Host
 * Translations"; the entry format is in pte.ts). From the root at level
 * `levels` (the DTE's Mode, 1..6), each present entry is:
 *   - Next Level 0: a PTE of this level's page size (not at level 6, whose
 *     entries are PDEs only: the spec's table of page-table level
 *     parameters; Linux generic_pt/fmt/amdv1.h amdv1pt_can_have_leaf);
 *   - Next Level 7: a PTE whose page size is in its address field: the
 *     lowest clear bit at or above bit 12 is bit s - 1 of a 2^s page
 *     (the spec's example page-size encodings; Linux PTE_PAGE_SIZE,
 *     amdv1pt_entry_num_contig_lg2); software replicates it over the
 *     2^(s - level shift) entries the page covers, so s lies between this
 *     level's page size and 256 times it; anything else is reserved here;
 *   - Next Level 1..level-1: a PDE naming the level of the table it points
 *     to. Below level - 1 the levels between are skipped, and the IOVA bits
 *     that would have indexed them must be 0, else an I/O page fault
 *     (2.2.3, level skipping). The engine reports that as F_ADDR_WIDTH at
 *     the skipping PDE's level: bits the tables do not translate are set,
 *     as for an IOVA above the DTE's Mode. QEMU (hw/i386/amd_iommu.c
 *     amdvi_page_walk) indexes the lower table without the check; Linux
 *     (fetch_pte) builds no skipping tables. A Next Level at or above the
 *     entry's own level cannot be walked: F_RESERVED, so every walk ends
 *     within `levels` reads.
 * IR and IW of every entry on the way are ANDed (2.2.3).
 *
 * A page larger than the IOTLB's size classes (4 KiB, 2 MiB, 1 GiB) is
 * reported as the largest class-sized slice of it holding iova: a smaller
 * leaf, but the same translation for every byte of it.
 */
function amdWalk(d: usize, iova: u64, levels: u32): u32 {
  let table = <u64>load<u32>(d + DOM_ROOT) << 12;
  let perm: u32 = PERM_R | PERM_W;
  const memEnd = <u64>memory.size() << 16;
  let l = levels;
  while (true) {
    walkLevel = l;
    // Level 6 indexes with bits 63:57 only: entries 0..127.
    const e = slot(table, iova, l);
    const pte = load<u64>(e);
    if ((pte & 1) == 0) { walkHoleShift = shiftOf(l); return F_NOT_PRESENT; }
    perm &= permOf(pte, l);
    const nl = <u32>(pte >> 9) & 7;
    // Reserved bits (AMD 2.2.3, the PDE and PTE field tables): 60:52 of a
    // PDE, 58:52 of a PTE (59 is U, 60 FC); hardware reports them as an
    // IO_PAGE_FAULT with RZ set ("reserved bit not zero").
    if ((pte & (nl == 0 || nl == 7 ? AMD_PTE_RSVD : AMD_PDE_RSVD)) != 0) return F_RESERVED;
    if (nl == 0 || nl == 7) {
      if (l == 6) return F_RESERVED;
      const base = shiftOf(l);
      let s = base;
      if (nl == 7) {
        // 1 + the index of the lowest clear bit of the address field.
        const clear = ~(pte | 0xfff) & AMD_ADDR_FIELD;
        if (clear == 0) return F_RESERVED;
        s = <u32>ctz(clear) + 1;
        if (s < base || s > base + 8) return F_RESERVED;
      } else if ((pte & AMD_ADDR_FIELD & ((<u64>1 << s) - 1)) != 0) {
        return F_RESERVED; // address bits below a default-size page
      }
      const page = pte & AMD_ADDR_FIELD & ~((<u64>1 << s) - 1);
      if (!physRangeOk(page, <u64>1 << s)) return F_OUT_OF_SEGMENT;
      const r: u32 = s >= 30 ? 30 : s >= 21 ? 21 : 12;
      walkPa = page + (iova & ((<u64>1 << s) - 1) & ~((<u64>1 << r) - 1));
      walkShift = r;
      walkPerm = perm;
      walkEntry = e;
      return F_NONE;
    }
    if (nl >= l) return F_RESERVED;
    if (nl < l - 1) {
      // The skipped levels' index bits: from bit shiftOf(nl + 1) to below shiftOf(l).
      const skipped = (iova >> shiftOf(nl + 1)) & ((<u64>1 << (9 * (l - 1 - nl))) - 1);
      if (skipped != 0) return F_ADDR_WIDTH;
    }
    table = pte & AMD_ADDR_FIELD;
    if (table + 4096 > memEnd) return F_TABLE_ADDR;
    l = nl;
  }
  return F_NOT_PRESENT; // unreachable
}

/** The result of a walk found in a cache (nested.ts's stage-2 walk cache). */
export function setWalkLeaf(pa: u64, shift: u32, perm: u32, entry: usize): void {
  walkPa = pa; walkShift = shift; walkPerm = perm; walkEntry = entry;
}

/**
 * Set A, and D for a write, in the leaf entry `entry` of the host table of
 * did (a permitted access). Returns whether the leaf is dirty. The nested
 * walks use it on their stage-2 leaves when the parent tracks dirty pages,
 * as VT-d does for every write the walk or the DMA makes (3.6.2, SSADE).
 */
export function hostMarkLeaf(did: u32, entry: usize, access: u32): bool {
  useFormat(load<u32>(dom(did) + DOM_FORMAT));
  const set = accessedBit() | ((access & PERM_W) != 0 ? dirtyBit() : 0);
  let pte = load<u64>(entry);
  if ((pte & set) != set) pte = atomic.or<u64>(entry, set) | set; // other instances may set flags too
  return (pte & dirtyBit()) != 0;
}

/** Set the walk's result (a nested walk hands on its combined leaf). */
export function setWalkResult(pa: u64, shift: u32, perm: u32, level: u32): void {
  walkPa = pa; walkShift = shift; walkPerm = perm; walkLevel = level;
}
