// A plain-TypeScript model of ARM VMSAv8-64 stage-2 translation tables with
// a 4, 16 or 64 KiB granule, written from the Arm Architecture Reference
// Manual (DDI 0487 K.a), chapter D8, and from Linux's io-pgtable-arm for the
// choices software makes: the oracle of test/engine-arm-s2-granule.test.ts.
// Independent of assembly/ (radix.ts, walk.ts, pte.ts).
//
// From the Arm ARM:
//   - D8.2 (translation granule): a table holds granule / 8 descriptors; a
//     lookup at level L (0..3) resolves the IPA bits from
//     g + (g - 3)(3 - L) up, g = log2(granule); the last level is 3;
//   - D8.2 (initial lookup level; concatenation): the initial level resolves
//     what is left of the IPA's IAS bits: fewer than a full table's bits (a
//     smaller table) or, at stage 2, up to 4 more, 2..16 tables
//     concatenated, contiguous and aligned to their total size;
//   - D8.3 (descriptors): bit 0 valid; bits 1:0 = 0b11 a table (levels
//     0..2) or a page (level 3), 0b01 a block (levels 1..2 where the granule
//     has one: 4K 1 GiB at level 1 and 2 MiB at level 2; 16K 32 MiB at level
//     2 (64 GiB at level 1 only with DS = 1); 64K 512 MiB at level 2 (4 TiB
//     at level 1 only with FEAT_LPA)); 0b01 at level 3 is invalid;
//     S2AP[1:0] in bits 7:6 (bit 6 read, bit 7 write); AF bit 10 (clear:
//     Access flag fault); the output address: with the 4K granule and
//     DS = 1 (FEAT_LPA2) OA[49:12] in bits 49:12 and OA[51:50] in bits 9:8;
//     with DS = 0 and no FEAT_LPA OA[47:g] in bits 47:g and bits 9:8 are SH;
//   - a table descriptor's next-level address is the same field.
// From Linux (drivers/iommu/io-pgtable-arm.c), how a stage-2 table is shaped:
//   - arm_lpae_alloc_pgtable: levels = ceil((ias - g) / (g - 3)), start
//     level 4 - levels, the start level resolving ias - g - (g - 3)(levels - 1)
//     bits;
//   - arm_lpae_concat_mandatory (Arm ARM R_DXBSH, R_SRKBC): 16K starting at
//     level 0 with a 48-bit input or output, 4K starting at level 0 with a
//     40- or 42-bit output, 16K starting at level 1 with a 40-bit output
//     start one level lower instead, the skipped level's entries becoming
//     concatenated tables (at most ARM_LPAE_S2_MAX_CONCAT_PAGES = 16).
// The engine's own rules, as they are (engine fault codes F_*):
//   - an IPA at or above 2^IAS: F_ADDR_WIDTH, before any read;
//   - invalid descriptor: F_NOT_PRESENT; a block the table does not allow
//     (the engine's `sizes`), a block at level 3 (0b01), or output address
//     bits below the leaf's size set: F_RESERVED; AF clear: F_ACCESS;
//   - a table outside linear memory: F_TABLE_ADDR; a leaf outside its
//     segment: F_OUT_OF_SEGMENT.

import { F_ADDR_WIDTH, F_NOT_PRESENT, F_OUT_OF_SEGMENT, F_RESERVED, F_TABLE_ADDR, type RawMemory } from './vtd_sl_raw.js';

export const F_ACCESS = 9;

/** The shape of a stage-2 table: granule log2, input size, start level (Arm numbering), index bits at the start level. */
export interface ArmS2Shape {
  readonly g: number;
  readonly ias: number;
  readonly startLevel: number;
  readonly rootBits: number;
}

/** The shape Linux gives a stage-2 table of granule 2^g for an ias-bit input and an oas-bit output (null: Linux refuses it). */
export function armS2Shape(g: number, ias: number, oas: number): ArmS2Shape | null {
  const stride = g - 3;
  const vaBits = ias - g;
  const levels = Math.ceil(vaBits / stride);
  let startLevel = 4 - levels;
  let rootBits = vaBits - stride * (levels - 1);
  let mandatory: boolean;
  if (g === 14 && startLevel === 0) mandatory = oas === 48 || ias === 48;
  else if (g === 12 && startLevel === 0) mandatory = oas === 40 || oas === 42;
  else mandatory = g === 14 && startLevel === 1 && oas === 40;
  if (mandatory) {
    if (2 ** rootBits > 16) return null;
    startLevel++;
    rootBits += stride;
  }
  return { g, ias, startLevel, rootBits };
}

/** Leaf sizes (log2) a granule allows at each level without DS / FEAT_LPA (Arm ARM D8.2): level -> shift. */
export function leafShifts(g: number): Map<number, number> {
  const stride = g - 3;
  const m = new Map<number, number>([[3, g], [2, g + stride]]);
  if (g === 12) m.set(1, g + 2 * stride);
  return m;
}

export type ArmS2Walk =
  | { ok: true; pa: bigint; shift: number; level: number; perm: number }
  | { ok: false; fault: number; level: number };

const OA_LPA2_4K = 0x0003_ffff_ffff_f000n; // bits 49:12
const OA_48 = 0x0000_ffff_ffff_f000n; // bits 47:12

/**
 * Walk the table at `root` for `ipa`. `allowed`: the Arm levels at which the
 * table permits leaves (bit L of the mask: level L). Returns the output
 * address of `ipa` itself, the leaf's size and Arm level, and S2AP.
 */
export function armS2WalkRaw(mem: RawMemory, root: bigint, shape: ArmS2Shape, allowed: number, ipa: bigint): ArmS2Walk {
  const { g, ias, startLevel, rootBits } = shape;
  const stride = g - 3;
  if (ipa >> BigInt(ias) !== 0n) return { ok: false, fault: F_ADDR_WIDTH, level: startLevel };
  let table = root;
  for (let level = startLevel; level <= 3; level++) {
    const shift = g + stride * (3 - level);
    const bits = level === startLevel ? rootBits : stride;
    const index = (ipa >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n);
    const d = mem.read64(table + index * 8n);
    if ((d & 1n) === 0n) return { ok: false, fault: F_NOT_PRESENT, level };
    // Bits g-1:12 of a 16K / 64K descriptor are RES0: kept in the address,
    // a leaf with one set fails the alignment rule below.
    const oa = g === 12 ? (d & OA_LPA2_4K) | (((d >> 8n) & 3n) << 50n) : d & OA_48;
    const type = d & 3n;
    const leaf = level === 3 || type === 1n;
    if (!leaf) {
      if (!mem.tableOk(oa)) return { ok: false, fault: F_TABLE_ADDR, level };
      table = oa;
      continue;
    }
    if (level === 3 && type !== 3n) return { ok: false, fault: F_RESERVED, level };
    const leafShift = leafShifts(g).get(level);
    if (leafShift === undefined || ((allowed >> level) & 1) === 0) return { ok: false, fault: F_RESERVED, level };
    if ((oa & ((1n << BigInt(leafShift)) - 1n)) !== 0n) return { ok: false, fault: F_RESERVED, level };
    if (((d >> 10n) & 1n) === 0n) return { ok: false, fault: F_ACCESS, level };
    if (!mem.physOk(oa, 1n << BigInt(leafShift))) return { ok: false, fault: F_OUT_OF_SEGMENT, level };
    const perm = Number((d >> 6n) & 3n);
    return { ok: true, pa: oa + (ipa & ((1n << BigInt(leafShift)) - 1n)), shift: leafShift, level, perm };
  }
  throw new Error('unreachable: level 3 is always a leaf');
}
