// Page-table entry formats of the host-owned I/O page tables. The radix
// code (radix.ts) is the same for all: 512 u64 entries a table, 4 KiB /
// 2 MiB / 1 GiB leaves (ARM stage 2 also with a 16 or 64 KiB granule, below);
// only the entry encoding differs, and it is here.
// Levels count from the leaf: level 1 maps 4 KiB, level 2 2 MiB, level 3
// 1 GiB (ARM calls these levels 3, 2, 1; AMD calls them 1, 2, 3 as here).
//
// Intel VT-d second stage (VT-d spec 9.8, "Second-Stage Paging Entries"):
//
//   63  62  61:52  51:HAW HAW-1:12          11   10  9  8  7   6    5:3  2  1  0
//  +---+---+------+-----+------------------+----+---+--+--+---+----+----+--+--+--+
//  |ign|TM | ign  |rsvd | address          |SNP |ign|D |A |PS |IPAT| EMT|X |W |R |
//  +---+---+------+-----+------------------+----+---+--+--+---+----+----+--+--+--+
//   present: R or W; a leaf: level 1, or PS. Reserved (F_RESERVED), as the
//   spec's entry tables and QEMU's VTD_SPTE_*_RSVD_MASK have them:
//   - address bits 51:HAW in every entry (HAW: the domain's output width,
//     pt_create's sizes bits 15:8, 0 = 52: nothing above bit 51);
//   - PS at levels 4 and 5, and where the table has no leaf of that size;
//   - the address bits below a large leaf's size (20:12 for 2 MiB, 29:12 for
//     1 GiB);
//   - in a non-leaf entry: bit 11 and bit 62 (SNP and TM mean something in
//     leaves only; QEMU VTD_SPTE_PAGE_L2..L4_RSVD_MASK hold 0x800 and, with
//     VTD_SL_IGN_COM = 0xbff0000000000000, bit 62).
//   Ignored: bits 6:3 of a non-leaf entry (EMT / IPAT mean nothing there),
//   bit 10, 61:52, 63; in a leaf SNP (bit 11: scalable mode, ECAP.SC) and TM
//   (bit 62) are allowed and not modelled.
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
//   at stage 2. MemAttr 0b1111: Normal, write-back. Cont (52) is a hint the
//   walk does not use: every entry translates alone, which is also the
//   translation of a misprogrammed contiguous set (an implementation may
//   ignore the hint); in a table descriptor bit 52 is ignored. The root may
//   be 2..16 concatenated tables (radix.ts ptCreate, walk.ts hostWalk).
//
// ARM VMSAv8-64 stage 2 with a 16 KiB or 64 KiB granule (radix.ts
// ptCreateArmS2; Arm ARM D8.3, the descriptor formats per granule): a
// table is one granule of 2^(g - 3) entries (2048 or 8192), level 1 maps
// the granule, level 2 a block of 32 MiB (16K) or 512 MiB (64K). Output
// addresses are 48 bits: no FEAT_LPA2 (VTCR.DS = 0, which a 16K 64 GiB
// block or a 52-bit OA would need) and no FEAT_LPA (the 64K granule's
// OA[51:48] in bits 15:12, and its 4 TiB block). Every physical address
// here is below 2^40 (256 segments of 4 GiB), so 48 bits name them all.
// Without DS, bits 9:8 are SH (written 0b11, Inner Shareable, as Linux
// writes coherent stage-2 entries: ARM_LPAE_PTE_SH_IS) and OA is bits
// 47:g, the bits below g RES0 (a leaf with one set is F_RESERVED: the
// "address bits below the leaf's size" rule); the other fields are as for
// 4 KiB.
//
//   63:55  54:53  52   51   50:48  47:g             g-1:12 11  10  9:8  7:6   5:2     1  0
//  +------+------+----+----+------+----------------+------+---+---+----+-----+-------+--+--+
//  | ign  |  XN  |Cont|DBM | res0 | OA [47:g]      | res0 |nG |AF | SH |S2AP |MemAttr|T |V |
//  +------+------+----+----+------+----------------+------+---+---+----+-----+-------+--+--+
//
// AMD I/O page table v1 (AMD IOMMU spec 2.2.3, "I/O Page Tables for Host
// Translations"), 1 to 6 levels (the DTE's Mode):
//
//   63  62  61  60  59  58:52  51:12            11:9    8:7  6   5   4:1  0
//  +---+---+---+---+---+------+----------------+-------+----+---+---+----+--+
//  |ign|IW |IR |FC | U | ign  | address [51:12]|NextLvl| ign|HD |HA | ign|PR|
//  +---+---+---+---+---+------+----------------+-------+----+---+---+----+--+
//   present: PR. Next Level 0: a PTE of this level's page size; 7: a PTE
//   whose size is encoded in the address bits; 1..6: a PDE naming the level
//   of the table it points to, which may skip levels (walk.ts amdWalk has
//   the rules). The tables made here never skip and use Next Level 0 only.
//   IR/IW gate reads and writes at every level; HA/HD are the accessed and
//   dirty flags (host dirty tracking, EFR HDSup). Reserved: bits 58:52 of a
//   PTE, 60:52 of a PDE (U and FC are PTE fields); set, they fault
//   F_RESERVED, which the host reports as IO_PAGE_FAULT with RZ = 1
//   (fault_records.ts). The diagram above is the PTE's.

import { FMT_VTD_SL, FMT_ARM_S2, PERM_R, PERM_W, PT_GRANULE_SHIFT } from "./layout";

let fmt: u32 = FMT_VTD_SL;
/** ARM stage 2: the mask of bits 9:8 that are OA[51:50] (3: 4 KiB granule, LPA2 layout; 0: 16/64 KiB, where they are SH). */
let armHi: u64 = 3;

/** Select the format of the table the next operations touch. */
// @ts-ignore: decorator
@inline export function useFormat(f: u32): void { fmt = f; }

/** Select the format and, for ARM stage 2, the granule's entry layout, from the domain's sizes word. */
// @ts-ignore: decorator
@inline export function useTable(f: u32, word: u32): void {
  fmt = f;
  armHi = granuleShift(word) == 12 ? 3 : 0; // the 4 KiB granule for every other format
}

/** g of the table's 2^g-byte granule, from the sizes word's code, (g - 12) / 2 (12 for every format but ARM stage 2's 16 and 64 KiB). */
// @ts-ignore: decorator
@inline export function granuleShift(word: u32): u32 { return 12 + (((word >> PT_GRANULE_SHIFT) & 3) << 1); }
// @ts-ignore: decorator
@inline export function format(): u32 { return fmt; }

const VTD_PS: u64 = 1 << 7;
export const VTD_ADDR: u64 = 0x000ffffffffff000;
/** VT-d: bits reserved in a non-leaf entry whatever the width: 11 (SNP) and 62 (TM). */
const VTD_TABLE_RSVD: u64 = (<u64>1 << 11) | (<u64>1 << 62);
/** The domain's sizes word (DOM_SIZES, diagram in layout.ts): leaf sizes in bits 2:0; the other fields at PT_*_SHIFT. */
export const SIZES_MASK: u32 = 7;
/** SH[1:0] = 0b11, Inner Shareable, in bits 9:8 of a descriptor without the LPA2 layout. */
const ARM_SH_IS: u64 = 3 << 8;
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
export const AMD_ADDR_FIELD: u64 = AMD_ADDR;
/** AMD: reserved bits of a PDE (Next Level 1..6), 60:52, and of a PTE (Next Level 0 or 7), 58:52 (2.2.3). */
export const AMD_PDE_RSVD: u64 = 0x1ff0000000000000;
export const AMD_PTE_RSVD: u64 = 0x07f0000000000000;

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
  const nl = (pte >> 9) & 7;
  return nl == 0 || nl == 7;
}

/** The output or next-table address of a present entry. */
// @ts-ignore: decorator
@inline export function addrOf(pte: u64): u64 {
  if (fmt == FMT_VTD_SL) return pte & VTD_ADDR;
  if (fmt == FMT_ARM_S2) return (pte & ARM_OA_LO) | (((pte >> 8) & armHi) << 50);
  return pte & AMD_ADDR;
}

/** An entry at `level` pointing to the table at `t` (whose level is level - 1). */
// @ts-ignore: decorator
@inline export function mkTable(t: u64, level: u32): u64 {
  if (fmt == FMT_VTD_SL) return t | PERM_R | PERM_W;
  if (fmt == FMT_ARM_S2) return armOa(t) | ARM_T | 1; // bits 11:2 of a table descriptor are ignored: no SH
  return t | (<u64>(level - 1) << 9) | AMD_IR | AMD_IW | AMD_PR;
}

/** A leaf at `level` mapping `pa` with permission `perm` (PERM_R | PERM_W). */
// @ts-ignore: decorator
@inline export function mkLeaf(pa: u64, perm: u32, level: u32): u64 {
  if (fmt == FMT_VTD_SL) return pa | perm | (level > 1 ? VTD_PS : 0);
  if (fmt == FMT_ARM_S2) {
    // SH: 0 with the LPA2 layout (its shareability is in VTCR), else Inner Shareable.
    return armOa(pa) | (armHi == 0 ? ARM_SH_IS : 0) | (level == 1 ? ARM_T : 0) | 1 | ARM_AF | ARM_NORMAL_WB |
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

/** Is a present non-leaf entry at `level` malformed (VT-d: bits 11 or 62; AMD: Next Level must be level - 1 in radix.ts's tables)? */
// @ts-ignore: decorator
@inline export function tableReserved(pte: u64, level: u32): bool {
  if (fmt == FMT_VTD_SL) return (pte & VTD_TABLE_RSVD) != 0;
  return fmt == FMT_ARM_S2 ? false : <u32>((pte >> 9) & 7) != level - 1;
}
