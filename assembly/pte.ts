// Page-table entry formats of the host-owned I/O page tables. The radix
// code (radix.ts) is the same for all: 512 u64 entries a table, 4 KiB /
// 2 MiB / 1 GiB leaves; only the entry encoding differs, and it is here.
// Levels count from the leaf: level 1 maps 4 KiB, level 2 2 MiB, level 3
// 1 GiB (ARM calls these levels 3, 2, 1; AMD calls them 1, 2, 3 as here).
//
// Intel VT-d second stage (VT-d spec 9.8):
//
//   63  62  61:52  51:12             11   10  9  8  7   6    5:3  2  1  0
//  +---+---+------+------------------+----+---+--+--+---+----+----+--+--+--+
//  |ign|TM | ign  | address [51:12]  |SNP |ign|D |A |PS |IPAT| EMT|X |W |R |
//  +---+---+------+------------------+----+---+--+--+---+----+----+--+--+--+
//   present: R or W; a leaf: level 1, or PS.
//
// ARM VMSAv8-64 stage 2, 4 KiB granule with 52-bit output (FEAT_LPA2, so
// VTCR_EL2.DS = 1 and the shareability is in VTCR: Arm ARM D8.3):
//
//   63:55  54:53  52   51   50:49  49:12            11  10  9:8       7:6   5:2     1  0
//  +------+------+----+----+------+----------------+---+---+---------+-----+-------+--+--+
//  | ign  |  XN  |Cont|DBM | res0 | OA [49:12]     |nG |AF | OA[51:50]|S2AP |MemAttr|T |V |
//  +------+------+----+----+------+----------------+---+---+---------+-----+-------+--+--+
//   valid: V; bit 1 (T): table or page (1), block (0). Blocks map 2 MiB and
//   1 GiB (ARM levels 2 and 1, our 2 and 3); a page (our level 1, ARM level
//   3) must have T = 1. 5 levels start at ARM level -1 (FEAT_LPA2, 52-bit
//   IPA). S2AP[6] read, [7] write.
//   AF must be set (else an Access flag fault). Tables carry no permission
//   at stage 2. MemAttr 0b1111: Normal, write-back.
//
// AMD I/O page table v1 (AMD IOMMU spec 2.2.3, "I/O Page Tables for Host
// Translations"):
//
//   63  62  61  60  59  58:52  51:12            11:9    8:7  6   5   4:1  0
//  +---+---+---+---+---+------+----------------+-------+----+---+---+----+--+
//  |ign|IW |IR |FC | U | ign  | address [51:12]|NextLvl| ign|HD |HA | ign|PR|
//  +---+---+---+---+---+------+----------------+-------+----+---+---+----+--+
//   present: PR; Next Level 0 = a leaf (a page of this level's size); a
//   table entry names the level of the table it points to (no skipping here).
//   IR/IW gate reads and writes at every level; HA/HD are the accessed and
//   dirty flags (host dirty tracking, EFR HDSup).

import { FMT_VTD_SL, FMT_ARM_S2, PERM_R, PERM_W } from "./layout";

let fmt: u32 = FMT_VTD_SL;

/** Select the format of the table the next operations touch. */
// @ts-ignore: decorator
@inline export function useFormat(f: u32): void { fmt = f; }
// @ts-ignore: decorator
@inline export function format(): u32 { return fmt; }

const VTD_PS: u64 = 1 << 7;
const VTD_ADDR: u64 = 0x000ffffffffff000;
const ARM_T: u64 = 1 << 1;
const ARM_AF: u64 = 1 << 10;
const ARM_S2AP_R: u64 = 1 << 6;
const ARM_S2AP_W: u64 = 1 << 7;
const ARM_NORMAL_WB: u64 = 0b1111 << 2;
const ARM_OA_LO: u64 = 0x0003fffffffff000; // OA[49:12]
const AMD_PR: u64 = 1;
const AMD_IR: u64 = <u64>1 << 61;
const AMD_IW: u64 = <u64>1 << 62;
const AMD_FC: u64 = <u64>1 << 60;
const AMD_ADDR: u64 = 0x000ffffffffff000;

// @ts-ignore: decorator
@inline function armOa(pa: u64): u64 { return (pa & ARM_OA_LO) | (((pa >> 50) & 3) << 8); }

/** Is the entry valid (VT-d: R or W; ARM: V; AMD: PR)? */
// @ts-ignore: decorator
@inline export function present(pte: u64): bool {
  return fmt == FMT_VTD_SL ? (pte & 3) != 0 : (pte & 1) != 0;
}

/** Does a present entry at `level` map a page or block rather than point to a table? */
// @ts-ignore: decorator
@inline export function isLeaf(pte: u64, level: u32): bool {
  if (level == 1) return true;
  if (fmt == FMT_VTD_SL) return (pte & VTD_PS) != 0;
  if (fmt == FMT_ARM_S2) return (pte & ARM_T) == 0;
  return ((pte >> 9) & 7) == 0;
}

/** The output or next-table address of a present entry. */
// @ts-ignore: decorator
@inline export function addrOf(pte: u64): u64 {
  if (fmt == FMT_VTD_SL) return pte & VTD_ADDR;
  if (fmt == FMT_ARM_S2) return (pte & ARM_OA_LO) | (((pte >> 8) & 3) << 50);
  return pte & AMD_ADDR;
}

/** An entry at `level` pointing to the table at `t` (whose level is level - 1). */
// @ts-ignore: decorator
@inline export function mkTable(t: u64, level: u32): u64 {
  if (fmt == FMT_VTD_SL) return t | PERM_R | PERM_W;
  if (fmt == FMT_ARM_S2) return armOa(t) | ARM_T | 1;
  return t | (<u64>(level - 1) << 9) | AMD_IR | AMD_IW | AMD_PR;
}

/** A leaf at `level` mapping `pa` with permission `perm` (PERM_R | PERM_W). */
// @ts-ignore: decorator
@inline export function mkLeaf(pa: u64, perm: u32, level: u32): u64 {
  if (fmt == FMT_VTD_SL) return pa | perm | (level > 1 ? VTD_PS : 0);
  if (fmt == FMT_ARM_S2) {
    return armOa(pa) | (level == 1 ? ARM_T : 0) | 1 | ARM_AF | ARM_NORMAL_WB |
      ((perm & PERM_R) != 0 ? ARM_S2AP_R : 0) | ((perm & PERM_W) != 0 ? ARM_S2AP_W : 0);
  }
  return pa | AMD_PR | AMD_FC | ((perm & PERM_R) != 0 ? AMD_IR : 0) | ((perm & PERM_W) != 0 ? AMD_IW : 0);
}

/** The access an entry grants (tables too: VT-d and AMD AND every level; ARM stage-2 tables grant all). */
// @ts-ignore: decorator
@inline export function permOf(pte: u64, level: u32): u32 {
  if (fmt == FMT_VTD_SL) return <u32>pte & (PERM_R | PERM_W);
  if (fmt == FMT_ARM_S2) {
    if (!isLeaf(pte, level)) return PERM_R | PERM_W;
    return ((pte & ARM_S2AP_R) != 0 ? PERM_R : 0) | ((pte & ARM_S2AP_W) != 0 ? PERM_W : 0);
  }
  return ((pte & AMD_IR) != 0 ? PERM_R : 0) | ((pte & AMD_IW) != 0 ? PERM_W : 0);
}

/** The accessed flag a leaf carries (VT-d A, ARM AF, AMD HA). */
// @ts-ignore: decorator
@inline export function accessedBit(): u64 {
  return fmt == FMT_VTD_SL ? 1 << 8 : fmt == FMT_ARM_S2 ? ARM_AF : 1 << 5;
}

/** The dirty flag the unit sets on a write (VT-d D, AMD HD), or 0 when the format has none here. */
// @ts-ignore: decorator
@inline export function dirtyBit(): u64 {
  return fmt == FMT_VTD_SL ? 1 << 9 : fmt == FMT_ARM_S2 ? 0 : 1 << 6;
}

/**
 * Is a present leaf at `level` malformed for a table allowing `sizes`?
 * A leaf size the table does not allow, a block where the format has none,
 * address bits below the leaf's size, or an ARM block where a page must be.
 */
// @ts-ignore: decorator
@inline export function leafReserved(pte: u64, level: u32, sizes: u32, shift: u32): bool {
  if (level > 3 || (sizes & (1 << (level - 1))) == 0) return true;
  if ((addrOf(pte) & ((<u64>1 << shift) - 1)) != 0) return true;
  // ARM: a level-3 (our level 1) descriptor must say "page" (bits 1:0 = 0b11).
  if (fmt == FMT_ARM_S2) return level == 1 && (pte & ARM_T) == 0;
  return false;
}

/** ARM: a leaf whose access flag is clear takes an Access flag fault (Arm ARM D8.5, no hardware AF update here). */
// @ts-ignore: decorator
@inline export function accessFlagFault(pte: u64): bool {
  return fmt == FMT_ARM_S2 && (pte & ARM_AF) == 0;
}

/** Is a present non-leaf entry at `level` malformed (AMD: Next Level must be level - 1 here)? */
// @ts-ignore: decorator
@inline export function tableReserved(pte: u64, level: u32): bool {
  return fmt == FMT_VTD_SL || fmt == FMT_ARM_S2 ? false : <u32>((pte >> 9) & 7) != level - 1;
}
