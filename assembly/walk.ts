// The walk of a host-owned table (any format of pte.ts), and the result of
// the last walk: used by the translation paths, the dirty-tracking code and,
// as stage 2, by the nested walk.

import {
  DOM_SIZE, DOM_ROOT, DOM_LEVELS, DOM_SIZES, DOM_FORMAT, PERM_R, PERM_W,
  F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_ACCESS, F_TABLE_ADDR, F_OUT_OF_SEGMENT, CTRL_STAT_WALKS,
} from "./layout";
import { domTable, count } from "./state";
import { physRangeOk } from "./segments";
import { useFormat, present, isLeaf, addrOf, permOf, leafReserved, tableReserved, accessFlagFault, accessedBit, dirtyBit } from "./pte";

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
 * Walk the table of did for iova. Returns F_NONE with walkPa (the leaf's
 * first byte), walkShift, walkPerm and walkEntry, or a fault with walkLevel.
 * Sets no A/D flag: the translation paths do that through ptTouch.
 */
export function hostWalk(did: u32, iova: u64): u32 {
  const d = dom(did);
  useFormat(load<u32>(d + DOM_FORMAT));
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
    const e = slot(table, iova, l);
    const pte = load<u64>(e);
    if (!present(pte)) return F_NOT_PRESENT;
    perm &= permOf(pte, l);
    if (isLeaf(pte, l)) {
      const shift = shiftOf(l);
      // Sizes the table lacks, address bits below the leaf's size, format
      // rules (VT-d 9.8; Arm ARM D8.3; AMD 2.2.3): reserved, not translated.
      if (leafReserved(pte, l, sizes, shift)) return F_RESERVED;
      if (accessFlagFault(pte)) return F_ACCESS;
      const pa = addrOf(pte);
      if (!physRangeOk(pa, <u64>1 << shift)) return F_OUT_OF_SEGMENT;
      walkPa = pa;
      walkShift = shift;
      walkPerm = perm;
      walkEntry = e;
      return F_NONE;
    }
    if (tableReserved(pte, l)) return F_RESERVED;
    table = addrOf(pte);
    // Host tables live in segment 0; anything else is corrupt.
    if (table + 4096 > memEnd) return F_TABLE_ADDR;
  }
  return F_NOT_PRESENT; // unreachable: level 1 always returns
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
